//! Installs the eBPF toolchain pieces a fresh machine lacks. Each step checks first, so a
//! second run does nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::build::{cmd, workspace_root};

/// The bpf-linker release that matches the aya 0.14 line.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure_toolchain() -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn output(c: &mut Command) -> anyhow::Result<String> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the eBPF programs need a nightly toolchain (`rustup toolchain install nightly`)")?;
    if has_component(&installed, "rust-src") {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for the nightly toolchain");
    cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Whether `rustup component list --installed` output names `component`, e.g. `rust-src`
/// (listed without a target) or `rust-std-x86_64-unknown-linux-gnu`.
fn has_component(installed: &str, component: &str) -> bool {
    installed.lines().any(|l| {
        l.trim()
            .strip_prefix(component)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    })
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// bpf-linker links against LLVM; rather than a system LLVM we use the libLLVM that ships in
/// the nightly sysroot (the same LLVM rustc uses to emit the bitcode bpf-linker reads).
fn ensure_bpf_linker() -> anyhow::Result<()> {
    if let Some(v) = bpf_linker_version() {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!("xtask: found {v}, want bpf-linker {BPF_LINKER_VERSION}; reinstalling");
    }
    let sysroot = PathBuf::from(output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    let libdir = sysroot.join("lib");
    let (major, libllvm) = std::fs::read_dir(&libdir)
        .with_context(|| format!("listing `{}`", libdir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find_map(|n| Some((llvm_major(&n)?, n)))
        .with_context(|| {
            format!(
                "no libLLVM.so.<version> in the nightly sysroot `{}`",
                libdir.display()
            )
        })?;
    let prefix = workspace_root().join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating `{}`", prefix_lib.display()))?;
    for name in [libllvm.as_str(), "libLLVM.so"] {
        link(&libdir.join(&libllvm), &prefix_lib.join(name))?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {libllvm} (about a minute)");
    cmd(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))
    .context("installing bpf-linker")?;
    if bpf_linker_version().is_none() {
        bail!("bpf-linker was installed but is not on PATH (is ~/.cargo/bin in PATH?)");
    }
    Ok(())
}

/// The LLVM major version of a libLLVM file name, which selects bpf-linker's `llvm-<major>`
/// feature: `libLLVM.so.22.1-rust-1.97.0-nightly` → 22 (`libLLVM-19-rust-1.84.0-nightly.so` and
/// plain `libLLVM.so` name no version this way: None).
fn llvm_major(file: &str) -> Option<u32> {
    let version = file.strip_prefix("libLLVM.so.")?;
    version.split(['.', '-']).next()?.parse().ok()
}

fn link(target: &Path, at: &Path) -> anyhow::Result<()> {
    if std::fs::read_link(at).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at)
        .with_context(|| format!("linking `{}` to `{}`", at.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rustup component list --toolchain nightly --installed`.
    const INSTALLED: &str = "\
cargo-x86_64-unknown-linux-gnu
clippy-x86_64-unknown-linux-gnu
rust-docs-x86_64-unknown-linux-gnu
rust-src
rust-std-x86_64-unknown-linux-gnu
rustc-x86_64-unknown-linux-gnu
rustfmt-x86_64-unknown-linux-gnu
";

    #[test]
    fn components() {
        assert!(has_component(INSTALLED, "rust-src"));
        assert!(has_component(INSTALLED, "rust-std"));
        assert!(has_component(INSTALLED, "clippy"));
        assert!(!has_component(INSTALLED, "llvm-tools"));
        assert!(!has_component(INSTALLED, "rust-analyzer"));
        assert!(!has_component(
            &INSTALLED.replace("rust-src\n", ""),
            "rust-src"
        ));
    }

    #[test]
    fn libllvm_versions() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.20.1-rust-1.89.0-nightly"), Some(20));
        assert_eq!(llvm_major("libLLVM.so.19"), Some(19));
        // The other names in a nightly sysroot's lib/.
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so"), None);
        assert_eq!(llvm_major("librustc_driver-0123abcd.so"), None);
    }
}
