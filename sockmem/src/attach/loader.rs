//! Loads the embedded eBPF object with its configuration (field offsets and filters).

use std::io;

use anyhow::{bail, Context as _};
use aya::{Ebpf, EbpfLoader};
use sockmem_common::{config::MODE_TRACE, names, Config, Filter, Per};

use crate::kernel::{btf::Btf, offsets};

/// The programs, built by build.rs (a build without them fails).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SOCKMEM_EBPF_OBJ"));

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
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON \
         (this process has neither); run with sudo, or `cargo xtask run` which does"
    )
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

/// The configuration global for this kernel and these filters.
pub fn config(btf: &Btf, filter: Filter) -> anyhow::Result<Config> {
    let offsets = offsets::resolve(btf).context("resolving kernel struct offsets from BTF")?;
    Ok(Config {
        offsets,
        filter,
        ready: 1,
        mode: MODE_TRACE,
        per: Per::Total as u32,
        _pad: 0,
    })
}

/// Loads the object (maps created, programs not yet loaded into the kernel).
pub fn load(config: &Config, ring_size: u32) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    EbpfLoader::new()
        .override_global(names::CONFIG, config, true)
        .map_max_entries(names::EVENTS, ring_size)
        .load(EBPF_OBJECT)
        .context("loading sockmem's eBPF object")
}
