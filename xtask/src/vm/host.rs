//! Host packages the VM needs, installed with apt when missing.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};

use crate::build::cmd;

/// Debian packages: qemu (TCG), a static busybox for the initramfs, depmod/modprobe (kmod, also
/// used inside the guest from the host's root), and the decompressors for kernel payloads and
/// modules.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
];

pub const QEMU: &str = "qemu-system-x86_64";
pub const BUSYBOX: &str = "/bin/busybox";
/// Minimal firmware that jumps straight to the kernel: seconds faster than SeaBIOS under TCG.
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

pub fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    apt_get(&["install", "-y", "--no-install-recommends"], &missing)
        .context("installing the packages the VM needs (as root, on Debian)")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && status_installed(&String::from_utf8_lossy(&o.stdout)))
}

/// dpkg's abbreviated status (`${db:Status-Abbrev}`): desired action, then package state;
/// `ii ` is installed, `rc ` removed with its configuration left, `un ` unknown.
fn status_installed(abbrev: &str) -> bool {
    abbrev.starts_with("ii")
}

static UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get update`, at most once per xtask run.
pub fn apt_update() -> anyhow::Result<()> {
    if UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    cmd(Command::new("apt-get").args(["update", "-q"]))
}

/// `apt-get <args> <packages>`; on failure refreshes the package lists once and retries (a
/// fresh machine may have none, or stale ones that name files the mirror no longer has).
pub fn apt_get(args: &[&str], packages: &[&str]) -> anyhow::Result<()> {
    apt_get_in(None, args, packages)
}

/// [`apt_get`] in directory `dir` (where `apt-get download` writes).
pub fn apt_get_in(dir: Option<&Path>, args: &[&str], packages: &[&str]) -> anyhow::Result<()> {
    let run = || {
        let mut c = Command::new("apt-get");
        if let Some(dir) = dir {
            c.current_dir(dir);
        }
        cmd(c
            .env("DEBIAN_FRONTEND", "noninteractive")
            // apt-get download writes into the current directory as root, not as _apt.
            .args(["-q", "-o", "APT::Sandbox::User=root"])
            .args(args)
            .args(packages))
    };
    if run().is_ok() {
        return Ok(());
    }
    apt_update()?;
    run()
}

/// Names of the packages `apt-cache search --names-only <regex>` finds, refreshing the package
/// lists once when it finds none.
pub fn apt_search(regex: &str) -> anyhow::Result<Vec<String>> {
    let search = || -> anyhow::Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", regex])
            .output()
            .context("running apt-cache (is this Debian?)")?;
        if !out.status.success() {
            bail!(
                "apt-cache search {regex} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(search_names(&String::from_utf8_lossy(&out.stdout)))
    };
    let found = search()?;
    if !found.is_empty() || UPDATED.load(Ordering::SeqCst) {
        return Ok(found);
    }
    apt_update()?;
    search()
}

/// The package names in `apt-cache search` output: `name - description` per line.
fn search_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_cache_search_output() {
        let output = "\
linux-image-6.1.0-47-amd64-dbg - Debug symbols for linux-image-6.1.0-47-amd64
linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-amd64 - Linux 6.1 for 64-bit PCs (signed)

";
        assert_eq!(
            search_names(output),
            [
                "linux-image-6.1.0-47-amd64-dbg",
                "linux-image-6.1.0-47-amd64-unsigned",
                "linux-image-6.1.0-56-amd64",
            ]
        );
        assert!(search_names("").is_empty());
    }

    #[test]
    fn dpkg_status() {
        assert!(status_installed("ii "));
        assert!(!status_installed("rc "));
        assert!(!status_installed("un "));
        assert!(!status_installed(""));
    }
}
