//! Reading a tracer's costs from the system: the run-time statistics of its BPF programs
//! (`bpftool prog show --json`, or `/proc/PID/fdinfo` of its program fds) and its CPU time
//! (`/proc/PID/stat`).

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use anyhow::Context as _;
use serde::Serialize;

use super::parse::{self, ProgStats};

/// The BPF program fds a process holds, with the statistics fdinfo shows.
fn prog_fds(pid: u32) -> anyhow::Result<Vec<ProgStats>> {
    let dir = format!("/proc/{pid}/fd");
    let mut progs = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let e = e?;
        let is_prog =
            fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
        if let Some(p) = fs::read_to_string(&info)
            .ok()
            .as_deref()
            .and_then(parse::fdinfo_prog)
        {
            if !progs.iter().any(|q: &ProgStats| q.id == p.id) {
                progs.push(p);
            }
        }
    }
    Ok(progs)
}

/// Cumulative statistics of every BPF program `pid` holds, by program id: from bpftool when
/// given (for the names), else from fdinfo.
pub fn bpf_snapshot(pid: u32, bpftool: Option<&Path>) -> anyhow::Result<BTreeMap<u32, ProgStats>> {
    let mine = prog_fds(pid)?;
    let mut by_id: BTreeMap<u32, ProgStats> = mine.into_iter().map(|p| (p.id, p)).collect();
    if let Some(bpftool) = bpftool {
        let out = Command::new(bpftool)
            .args(["prog", "show", "--json"])
            .output()
            .context("running `bpftool prog show --json`")?;
        for p in parse::bpftool_progs(&String::from_utf8_lossy(&out.stdout))? {
            if let Some(slot) = by_id.get_mut(&p.id) {
                *slot = p;
            }
        }
    }
    Ok(by_id)
}

/// One program's cost over a run (the difference of two snapshots).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgCost {
    /// The program's name with sockmem's `tp_` prefix dropped: the tracepoint's name for both
    /// sockmem and bpftrace.
    pub hook: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl ProgCost {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// A program's name as a hook: sockmem's `tp_` prefix dropped, and a name the kernel cut to 15
/// bytes (bpftrace's programs have no BTF to give bpftool the whole name) completed from the
/// tracepoints it may be, when exactly one fits.
pub fn hook_name(prog: &str, tracepoints: &[String]) -> String {
    let name = prog.strip_prefix("tp_").unwrap_or(prog);
    if prog.len() == 15 {
        let fits: std::collections::BTreeSet<&str> = tracepoints
            .iter()
            .filter_map(|t| t.split_once(':').map(|(_, n)| n))
            .filter(|n| n.starts_with(name))
            .collect();
        let mut fits = fits.into_iter();
        if let (Some(full), None) = (fits.next(), fits.next()) {
            return full.to_string();
        }
    }
    name.to_string()
}

/// The programs that ran between two snapshots, with what they cost.
pub fn bpf_delta(
    before: &BTreeMap<u32, ProgStats>,
    after: &BTreeMap<u32, ProgStats>,
    tracepoints: &[String],
) -> Vec<ProgCost> {
    let mut v: Vec<ProgCost> = after
        .values()
        .map(|a| {
            let (t0, c0) = before
                .get(&a.id)
                .map(|b| (b.run_time_ns, b.run_cnt))
                .unwrap_or((0, 0));
            ProgCost {
                hook: hook_name(&a.name, tracepoints),
                runs: a.run_cnt.saturating_sub(c0),
                run_time_ns: a.run_time_ns.saturating_sub(t0),
            }
        })
        .filter(|c| c.runs > 0)
        .collect();
    v.sort_by(|a, b| a.hook.cmp(&b.hook));
    v
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A process's user + system CPU time so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse::proc_stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
    Ok(ticks as f64 / clock_ticks_per_s())
}

/// How many perf events a process holds open (bpftrace: one per attached tracepoint, plus its
/// per-CPU output buffers).
pub fn perf_event_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[perf_event]")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Online CPUs (the number of bpftrace's per-CPU perf buffers).
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(id: u32, name: &str, t: u64, c: u64) -> (u32, ProgStats) {
        (
            id,
            ProgStats {
                id,
                name: name.into(),
                run_time_ns: t,
                run_cnt: c,
            },
        )
    }

    #[test]
    fn delta_names_hooks_and_drops_idle_programs() {
        let before = BTreeMap::from([
            stats(1, "tp_net_dev_queue", 1000, 10),
            stats(2, "tp_kfree_skb", 0, 0),
        ]);
        let after = BTreeMap::from([
            stats(1, "tp_net_dev_queue", 5000, 30),
            stats(2, "tp_kfree_skb", 0, 0),
            stats(3, "net_dev_xmit", 700, 7),
        ]);
        let d = bpf_delta(&before, &after, &[]);
        assert_eq!(
            d,
            [
                ProgCost {
                    hook: "net_dev_queue".into(),
                    runs: 20,
                    run_time_ns: 4000
                },
                ProgCost {
                    hook: "net_dev_xmit".into(),
                    runs: 7,
                    run_time_ns: 700
                },
            ]
        );
        assert_eq!(d[0].ns_per_run(), Some(200.0));
    }

    #[test]
    fn cut_names_completed() {
        let tps: Vec<String> = [
            "net:net_dev_start_xmit",
            "tcp:tcp_retransmit_skb",
            "net:net_dev_xmit",
            "net:net_dev_start_xmit",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(hook_name("net_dev_start_x", &tps), "net_dev_start_xmit");
        assert_eq!(
            hook_name("tp_net_dev_start_xmit", &tps),
            "net_dev_start_xmit"
        );
        assert_eq!(hook_name("tcp_retransmit_", &tps), "tcp_retransmit_skb");
        assert_eq!(hook_name("net_dev_xmit", &tps), "net_dev_xmit");
        // Not one of ours: left as it is.
        assert_eq!(hook_name("something_else_", &tps), "something_else_");
    }
}
