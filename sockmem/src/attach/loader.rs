//! Loads the embedded eBPF object with its configuration (field offsets and filters).

use std::io;

use anyhow::{bail, Context as _};
use aya::{Ebpf, EbpfLoader};
use sockmem_common::{config::MODE_TRACE, names, Config, Filter, Per};

use crate::kernel::{btf::Btf, offsets};

/// The programs, built by build.rs (a build without them fails).
pub(crate) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SOCKMEM_EBPF_OBJ"));

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): say so up front
/// instead of letting the first syscall fail with a bare EPERM.
pub fn check_privileges() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    match missing_capabilities(caps) {
        None => Ok(()),
        Some(missing) => bail!(
            "loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON \
             (this process lacks {missing}); run with sudo, or `cargo xtask run` which does"
        ),
    }
}

/// What an effective capability set lacks for loading tracing programs, in words.
fn missing_capabilities(caps: u64) -> Option<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    match (has(CAP_BPF), has(CAP_PERFMON)) {
        (true, true) => None,
        (true, false) => Some("CAP_PERFMON"),
        (false, true) => Some("CAP_BPF"),
        (false, false) => Some("both"),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so they load too.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // Failure is fine on newer kernels, which do not use this limit for BPF.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

pub fn kernel_release() -> String {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return format!("unknown ({})", io::Error::last_os_error());
    }
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// The system calls that send on a socket, numbered for the architecture sockmem runs on.
pub const SEND_SYSCALLS: [libc::c_long; 6] = [
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
    libc::SYS_pwritev2,
];

/// The configuration global for this kernel and these filters.
pub fn config(btf: &Btf, filter: Filter) -> anyhow::Result<Config> {
    let offsets = offsets::resolve(btf).context("resolving kernel struct offsets from BTF")?;
    Ok(Config {
        offsets,
        filter,
        ready: 1,
        mode: MODE_TRACE,
        n_send_syscalls: SEND_SYSCALLS.len() as u32,
        send_syscalls: SEND_SYSCALLS.map(|n| n as u32),
        per: Per::Total as u32,
    })
}

/// aya-log's level global in the object (`aya_log_common::Level` as `u8`; 0 = off).
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
const LOG_LEVEL_OFF: u8 = 0;
const LOG_LEVEL_DEBUG: u8 = 4;

/// Loads the object (maps created, programs not yet loaded into the kernel). The programs'
/// diagnostic lines (aya-log) are written only with `debug`.
pub fn load(config: &Config, ring_size: u32, debug: bool) -> anyhow::Result<Ebpf> {
    load_with(EbpfLoader::new(), config, ring_size, debug)
}

/// [`load`] with a loader made beforehand: `EbpfLoader::new` parses the kernel's BTF (tens of
/// ms), which `session::start` has done beside its own work.
pub fn load_with<'a>(
    mut loader: EbpfLoader<'a>,
    config: &'a Config,
    ring_size: u32,
    debug: bool,
) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    loader
        .override_global(names::CONFIG, config, true)
        .override_global(
            AYA_LOG_LEVEL,
            if debug {
                &LOG_LEVEL_DEBUG
            } else {
                &LOG_LEVEL_OFF
            },
            true,
        )
        .map_max_entries(names::EVENTS, ring_size)
        .load(EBPF_OBJECT)
        .context("loading sockmem's eBPF object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_missing_capability() {
        let bit = |c: u32| 1u64 << c;
        assert_eq!(missing_capabilities(bit(CAP_SYS_ADMIN)), None);
        assert_eq!(missing_capabilities(bit(CAP_BPF) | bit(CAP_PERFMON)), None);
        assert_eq!(missing_capabilities(bit(CAP_BPF)), Some("CAP_PERFMON"));
        assert_eq!(missing_capabilities(bit(CAP_PERFMON)), Some("CAP_BPF"));
        assert_eq!(missing_capabilities(0), Some("both"));
    }
}
