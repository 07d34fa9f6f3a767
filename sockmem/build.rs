//! Builds the eBPF programs (crate sockmem-ebpf: nightly, `-Z build-std=core`, target
//! `bpfel-unknown-none`, linked by bpf-linker) and embeds the object, through aya-build as
//! aya-template does: once `cargo xtask setup` has installed the toolchain, a plain `cargo build`
//! builds everything, and cargo rebuilds the object only when sockmem-ebpf or sockmem-common
//! change (they are build dependencies, see Cargo.toml).
//!
//! There is no fallback object: without the toolchain this is a build error that says how to get
//! it, also under `cargo check` and `cargo clippy` (a build script cannot tell them from
//! `cargo build`, so any leniency there would let `cargo build` make a binary without programs).
use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "sockmem-ebpf";
const SETUP: &str = "run `cargo xtask setup` (or `cargo xtask build`, which runs it first)";

fn main() {
    // The message alone (no backtrace even under RUST_BACKTRACE): it says what to do.
    if let Err(e) = build() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    check_toolchain()?;
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest_dir
        .parent()
        .context("sockmem sits one level below the workspace root")?
        .join(EBPF_PACKAGE);
    let root_dir = root_dir
        .to_str()
        .context("the workspace path is not UTF-8")?;
    let package = Package {
        name: EBPF_PACKAGE,
        root_dir,
        ..Default::default()
    };
    // aya-build turns every line the nested cargo prints into a `cargo:warning`, which cargo
    // repeats on each later build: keep only real diagnostics (errors, compiler warnings).
    env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf([package], Toolchain::Nightly)
        .with_context(|| format!("building the eBPF programs ({EBPF_PACKAGE})"))?;
    // aya-build copies each binary of the package into OUT_DIR under the binary's name.
    let obj = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?).join(EBPF_PACKAGE);
    if !obj.is_file() {
        // AYA_BUILD_SKIP=1 makes aya-build return without building.
        bail!(
            "no eBPF object at `{}` (is AYA_BUILD_SKIP set?); sockmem cannot be built without it",
            obj.display()
        );
    }
    println!("cargo:rustc-env=SOCKMEM_EBPF_OBJ={}", obj.display());
    Ok(())
}

/// Fails early, with what to run, where aya-build's nested cargo would fail with a linker or
/// sysroot error buried in its output.
fn check_toolchain() -> anyhow::Result<()> {
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        bail!("the eBPF programs need rustup's nightly toolchain: {SETUP}");
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!("the eBPF programs need nightly's rust-src component: {SETUP}");
    }
    // Also catches a bpf-linker that lost the libLLVM it was built against.
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        bail!("the eBPF programs need a working bpf-linker on PATH: {SETUP}");
    }
    Ok(())
}
