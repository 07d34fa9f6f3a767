//! Building the two halves, running, testing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::setup;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits one level below the workspace root")
        .to_path_buf()
}

/// Runs a command, failing with its name and status if it does not succeed.
pub fn cmd(c: &mut Command) -> anyhow::Result<()> {
    let status = c.status().with_context(|| format!("running {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Installs the eBPF toolchain if needed, then builds sockmem, whose build script builds and
/// embeds the eBPF object (cargo skips both when nothing changed); returns the binary's path.
pub fn build_all(release: bool) -> anyhow::Result<PathBuf> {
    setup::ensure_toolchain()?;
    let mut c = Command::new("cargo");
    c.current_dir(workspace_root())
        .args(["build", "--package", "sockmem"]);
    if release {
        c.arg("--release");
    }
    cmd(&mut c).context("building sockmem")?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("sockmem"))
}

pub fn run(release: bool, args: &[String]) -> anyhow::Result<()> {
    let bin = build_all(release)?;
    let is_root = unsafe_geteuid() == 0;
    let mut c = if is_root {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    let status = c
        .args(args)
        .status()
        .with_context(|| format!("running {c:?}"))?;
    // Pass sockmem's own exit code through (2 for usage errors, 1 for failures).
    std::process::exit(status.code().unwrap_or(1));
}

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    // The cargo commands below build the eBPF object through sockmem's build script.
    setup::ensure_toolchain()?;
    let root = workspace_root();
    cmd(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))
    .context("formatting differs: run `cargo fmt --all`")?;
    cmd(Command::new("cargo")
        .current_dir(&root)
        // Default members only: the eBPF crate gets its own run below, for its real target.
        .args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    .context("clippy")?;
    cmd(Command::new("cargo")
        .current_dir(&root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args([
            "+nightly",
            "clippy",
            "--package",
            "sockmem-ebpf",
            "--release",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
    .context("clippy on the eBPF crate")?;
    if unsafe_geteuid() != 0 {
        bail!("the tests load eBPF programs into the kernel: run `cargo xtask test` as root");
    }
    // The real peers and witnesses the tests start: Prometheus (serve.rs) and tmux (top.rs).
    crate::packages::ensure(
        &[
            ("prometheus", "prometheus"),
            ("promtool", "prometheus"),
            ("tmux", "tmux"),
        ],
        "test",
    )?;
    cmd(Command::new("cargo")
        .current_dir(&root)
        .arg("test")
        .args(with_one_test_thread(extra)))
    .context("tests")
}

/// `cargo test` arguments that run one test at a time: the timing tests (Little's law, sampling
/// windows) disturb each other on a 2-core machine.
fn with_one_test_thread(extra: &[String]) -> Vec<String> {
    let mut args = extra.to_vec();
    if !args.iter().any(|a| a == "--") {
        args.push("--".into());
    }
    if !args.iter().any(|a| a.starts_with("--test-threads")) {
        args.push("--test-threads=1".into());
    }
    args
}

fn unsafe_geteuid() -> u32 {
    // Reading the effective uid from /proc avoids a libc dependency for one call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| euid_from_status(&s))
        .unwrap_or(u32::MAX)
}

/// The effective uid in /proc/<pid>/status: `Uid:` lists real, effective, saved, filesystem.
fn euid_from_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn one_test_thread_unless_asked_otherwise() {
        assert_eq!(with_one_test_thread(&[]), ["--", "--test-threads=1"]);
        assert_eq!(
            with_one_test_thread(&strings(&["--test", "trace", "--", "--nocapture"])),
            ["--test", "trace", "--", "--nocapture", "--test-threads=1"]
        );
        assert_eq!(
            with_one_test_thread(&strings(&["--", "--test-threads=2"])),
            ["--", "--test-threads=2"]
        );
    }

    #[test]
    fn effective_uid() {
        let status = "Name:\tcargo\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\n\
                      Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(euid_from_status(status), Some(0));
        assert_eq!(
            euid_from_status("Uid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(euid_from_status("Name:\tcargo\n"), None);
        assert_eq!(euid_from_status("Uid:\t1000\n"), None);
    }
}
