//! The Debian packages the tests and the bench run as real peers and witnesses: found on PATH,
//! installed with apt when missing, so a fresh machine needs nothing but the README's commands.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

/// A program on PATH or in the sbin directories (root's PATH may lack them).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `apt-get install -y`, after `apt-get update` if the first attempt fails.
pub fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    let install = || {
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
            .args(pkgs)
            .stdout(Stdio::null())
            .output()
    };
    let out = install().context("running apt-get (is this Debian or Ubuntu?)")?;
    if out.status.success() {
        return Ok(());
    }
    eprintln!("xtask: `apt-get install` failed; running `apt-get update` and trying again");
    let _ = Command::new("apt-get")
        .args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"])
        .stdout(Stdio::null())
        .status();
    let out = install().context("running apt-get")?;
    if !out.status.success() {
        bail!(
            "`apt-get install -y {}` failed: {}",
            pkgs.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs the packages of the `(program, package)` pairs whose program is missing; returns
/// the packages it installed. `who` prefixes the progress line ("bench", "test").
pub fn ensure(programs: &[(&str, &str)], who: &str) -> anyhow::Result<Vec<String>> {
    let mut missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| find(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!("{who}: installing {}", missing.join(", "));
    apt_install(&missing).with_context(|| format!("installing {}", missing.join(", ")))?;
    for (program, package) in programs {
        if find(program).is_none() {
            bail!("`{program}` is still missing after `apt-get install -y {package}`");
        }
    }
    Ok(missing.into_iter().map(String::from).collect())
}
