//! `--stats`: what sockmem's programs cost, from the kernel's own BPF run-time statistics
//! (`run_time_ns`, `run_cnt` per program). They are collected only while someone holds a
//! `BPF_ENABLE_STATS` file descriptor, so sockmem enables them for its own run and nothing
//! changes system-wide afterwards (no `kernel.bpf_stats_enabled` to restore).

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use aya::{sys::Stats, Ebpf};
use serde::{Deserialize, Serialize};

use super::hooks::{hooks, CONTEXT};

/// Holds statistics collection on while alive.
pub struct StatsGuard(#[allow(dead_code)] OwnedFd);

/// Turns the kernel's BPF run-time statistics on for as long as the guard lives.
pub fn enable() -> anyhow::Result<StatsGuard> {
    aya::sys::enable_stats(Stats::RunTime)
        .map(StatsGuard)
        .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics (BPF_ENABLE_STATS): {e}"))
}

/// One hook's (or the context programs') cost over the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HookCost {
    pub hook: String,
    pub runs: u64,
    pub total_ns: u64,
    pub ns_per_run: f64,
}

/// Which hook each program name belongs to (the softirq trackers to `context`).
fn owners() -> BTreeMap<&'static str, String> {
    let mut owner: BTreeMap<&str, String> = BTreeMap::new();
    for spec in hooks() {
        for v in spec.variants {
            for a in v.attachments {
                owner.insert(a.program, spec.hook.name().to_owned());
            }
        }
    }
    for a in CONTEXT {
        owner.insert(a.program, "context".to_owned());
    }
    owner
}

/// The cost of every loaded program, summed per hook (the softirq trackers as `context`).
pub fn read(ebpf: &Ebpf) -> Vec<HookCost> {
    let owner = owners();
    let mut per_hook: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, program) in ebpf.programs() {
        // Programs that did not load (other backends) have no statistics.
        let Ok(info) = program.info() else { continue };
        let hook = owner.get(name).cloned().unwrap_or_else(|| name.to_owned());
        let e = per_hook.entry(hook).or_default();
        e.0 += info.run_count();
        e.1 += info.run_time().as_nanos() as u64;
    }
    costs(per_hook)
}

/// Per hook, how often the kernel did not run one of its programs because a BPF program was
/// already running on that CPU (`recursion_misses`: a hook fired inside a program, such as an
/// skb freed by an interrupt while one ran): events that never reached the ring, apart from
/// the `lost` ones (the ring was full). Hooks with none are left out, and the softirq trackers
/// (`context`), whose misses lose no event. Not every kernel counts them for every kind of
/// program (fentry's trampolines do since 5.12). `None`, said, when a count could not be read:
/// unknown, not zero.
pub fn missed(ebpf: &Ebpf) -> Option<BTreeMap<String, u64>> {
    match ProgramIds::of(ebpf).missed() {
        Ok(mut per_hook) => {
            per_hook.retain(|hook, n| *n > 0 && hook != "context");
            Some(per_hook)
        }
        Err(e) => {
            eprintln!("sockmem: warning: reading how often the kernel skipped the programs: {e}");
            None
        }
    }
}

/// The program's `recursion_misses` (`BPF_OBJ_GET_INFO_BY_FD`).
fn recursion_misses(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    // SAFETY: both are plain C structs for which all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The union member this command reads.
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_int,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// The kernel ids of the loaded programs and their hooks: their statistics can then be read
/// without the `Ebpf` (which an event loop holds), from the kernel's list of programs.
#[derive(Clone, Debug, Default)]
pub struct ProgramIds(BTreeMap<u32, String>);

impl ProgramIds {
    pub fn of(ebpf: &Ebpf) -> ProgramIds {
        let owner = owners();
        let mut ids = BTreeMap::new();
        for (name, program) in ebpf.programs() {
            let Ok(info) = program.info() else { continue };
            let hook = owner.get(name).cloned().unwrap_or_else(|| name.to_owned());
            ids.insert(info.id(), hook);
        }
        ProgramIds(ids)
    }

    /// The programs' cost so far, per hook; every hook with a loaded program, also one that
    /// has not run yet (a series that appears late would look like a new one).
    pub fn costs(&self) -> Vec<HookCost> {
        let mut per_hook: BTreeMap<String, (u64, u64)> =
            self.0.values().map(|h| (h.clone(), (0, 0))).collect();
        for info in aya::programs::loaded_programs().flatten() {
            if let Some(hook) = self.0.get(&info.id()) {
                let e = per_hook.entry(hook.clone()).or_default();
                e.0 += info.run_count();
                e.1 += info.run_time().as_nanos() as u64;
            }
        }
        per_hook
            .into_iter()
            .map(|(hook, (runs, total_ns))| HookCost {
                hook,
                runs,
                total_ns,
                ns_per_run: total_ns as f64 / runs.max(1) as f64,
            })
            .collect()
    }

    /// Per hook, the runs the kernel skipped so far (see [`missed`]); every hook with a loaded
    /// program, at 0 when none was skipped (a series that appears late would look like a new
    /// one); the softirq trackers are `context`. An error when a program's count could not be
    /// read: a total without it could go backwards.
    pub fn missed(&self) -> std::io::Result<BTreeMap<String, u64>> {
        let mut per_hook: BTreeMap<String, u64> = self.0.values().map(|h| (h.clone(), 0)).collect();
        for info in aya::programs::loaded_programs().flatten() {
            let Some(hook) = self.0.get(&info.id()) else {
                continue;
            };
            // By id: in `serve` the event loop holds the programs themselves.
            let fd = info.fd().map_err(std::io::Error::other)?;
            *per_hook.entry(hook.clone()).or_default() += recursion_misses(fd.as_fd())?;
        }
        Ok(per_hook)
    }
}

fn costs(per_hook: BTreeMap<String, (u64, u64)>) -> Vec<HookCost> {
    per_hook
        .into_iter()
        .filter(|(_, (runs, _))| *runs > 0)
        .map(|(hook, (runs, total_ns))| HookCost {
            hook,
            runs,
            total_ns,
            ns_per_run: total_ns as f64 / runs as f64,
        })
        .collect()
}

/// The table `--stats` prints on stderr.
pub fn table(costs: &[HookCost]) -> String {
    let mut out = format!(
        "{:<15} {:>12} {:>10} {:>12}\n",
        "HOOK", "RUNS", "NS/RUN", "TOTAL(ms)"
    );
    let (mut runs, mut total) = (0u64, 0u64);
    for c in costs {
        out.push_str(&format!(
            "{:<15} {:>12} {:>10.0} {:>12.3}\n",
            c.hook,
            c.runs,
            c.ns_per_run,
            c.total_ns as f64 / 1e6
        ));
        runs += c.runs;
        total += c.total_ns;
    }
    let mean = if runs > 0 {
        total as f64 / runs as f64
    } else {
        0.0
    };
    out.push_str(&format!(
        "{:<15} {:>12} {:>10.0} {:>12.3}\n",
        "total",
        runs,
        mean,
        total as f64 / 1e6
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_hook_costs_and_the_table() {
        let mut m = BTreeMap::new();
        m.insert("qdisc_enqueue".to_owned(), (4, 1000));
        m.insert("tcp_ack".to_owned(), (0, 0));
        let c = costs(m);
        assert_eq!(c.len(), 1, "hooks that never ran are left out");
        assert_eq!(c[0].ns_per_run, 250.0);
        let t = table(&c);
        assert!(t.contains("qdisc_enqueue"), "{t}");
        assert!(t.lines().last().unwrap().starts_with("total"), "{t}");
    }
}
