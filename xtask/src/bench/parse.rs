//! Pure parsers for what the bench reads: iperf3's JSON, `bpftool prog show --json`, fdinfo of a
//! BPF program, `/proc/PID/stat`, sockmem's summaries and histograms, bpftrace's output, `tc -s
//! -j qdisc`, `sockmem probe --json`. No system calls here: every function is tested below on
//! text captured from the real tools (`testdata/`).

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::Value;

/// One iperf3 client run (`iperf3 -c … -J`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Iperf {
    /// `end.sum_received.bits_per_second`: what the receiver got.
    pub bits_per_second: f64,
    /// `end.sum_sent.bytes`.
    pub bytes_sent: u64,
    /// `end.sum_sent.seconds`: the length of the traffic window.
    pub seconds: f64,
    /// `end.sum_sent.retransmits`.
    pub retransmits: u64,
}

pub fn iperf3(json: &str) -> anyhow::Result<Iperf> {
    let v: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let f = |section: &str, key: &str| {
        end[section][key]
            .as_f64()
            .with_context(|| format!("iperf3 JSON has no end.{section}.{key}"))
    };
    Ok(Iperf {
        bits_per_second: f("sum_received", "bits_per_second")?,
        bytes_sent: f("sum_sent", "bytes")? as u64,
        seconds: f("sum_sent", "seconds")?,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// Cumulative statistics of one BPF program (they need `kernel.bpf_stats_enabled=1` to move).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgStats {
    pub id: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `bpftool prog show --json`: every program on the machine. bpftool leaves `run_time_ns` and
/// `run_cnt` out while they are 0.
pub fn bpftool_progs(json: &str) -> anyhow::Result<Vec<ProgStats>> {
    let v: Vec<Value> = serde_json::from_str(json).context("bpftool output is not a JSON array")?;
    v.iter()
        .map(|p| {
            Ok(ProgStats {
                id: p["id"].as_u64().context("bpftool program without an id")? as u32,
                name: p["name"].as_str().unwrap_or("").to_string(),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// `/proc/PID/fdinfo/FD` of a BPF program fd (`prog_id`, `run_time_ns`, `run_cnt` lines); `None`
/// for any other kind of fd. The name is not there: `prog<id>` stands in.
pub fn fdinfo_prog(text: &str) -> Option<ProgStats> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    let id = field("prog_id")? as u32;
    Some(ProgStats {
        id,
        name: format!("prog{id}"),
        run_time_ns: field("run_time_ns").unwrap_or(0),
        run_cnt: field("run_cnt").unwrap_or(0),
    })
}

/// utime + stime in clock ticks from `/proc/PID/stat` (fields 14 and 15; the command name in
/// brackets may itself hold spaces and brackets, so count from the last `)`).
pub fn proc_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the comm: state is field 3, utime field 14, stime field 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// What a sockmem trace run says about itself at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TraceSummary {
    pub events: u64,
    pub sockets: u64,
    pub lost: u64,
}

/// The last `sockmem: N events from M sockets in X s, L lost` line on sockmem's stderr.
pub fn sockmem_stderr_summary(text: &str) -> Option<TraceSummary> {
    text.lines().rev().find_map(|l| {
        let w: Vec<&str> = l.strip_prefix("sockmem: ")?.split_whitespace().collect();
        // N events from M sockets in X s, L lost
        if w.len() != 10 || w[1] != "events" || w[2] != "from" || w[9] != "lost" {
            return None;
        }
        Some(TraceSummary {
            events: w[0].parse().ok()?,
            sockets: w[3].parse().ok()?,
            lost: w[8].parse().ok()?,
        })
    })
}

/// sockmem's JSON summary line (`{"type":"summary",…}`), the last line of `trace --json`.
pub fn sockmem_json_summary(line: &str) -> Option<TraceSummary> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if v["type"] != "summary" {
        return None;
    }
    Some(TraceSummary {
        events: v["events"].as_u64()?,
        sockets: v["sockets"].as_u64()?,
        lost: v["lost"].as_u64()?,
    })
}

/// The sample count of one histogram in `sockmem hist`'s text (`@NAME (unit)` then
/// `count N  mean …`); 0 for `@NAME: no samples`.
pub fn sockmem_hist_count(text: &str, name: &str) -> Option<u64> {
    let head = format!("@{name}");
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix(&head) else {
            continue;
        };
        if rest.starts_with(": no samples") {
            return Some(0);
        }
        if rest.starts_with(' ') || rest.starts_with('[') {
            let count = lines.next()?.strip_prefix("count ")?;
            return count.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// The sum of a bpftrace `hist()` map's buckets as bpftrace prints it at exit
/// (`@name:` then `[lo, hi)   count |@@@|` rows until a blank line).
pub fn bpftrace_hist_total(text: &str, map: &str) -> Option<u64> {
    let head = format!("{map}:");
    let mut lines = text.lines().skip_while(|l| l.trim_end() != head);
    lines.next()?;
    let mut total = 0;
    for l in lines.take_while(|l| l.starts_with('[')) {
        let after = &l[l.find(']').or_else(|| l.find(')'))? + 1..];
        total += after.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// A scalar bpftrace map as printed at exit (`@events: 18505`).
pub fn bpftrace_scalar(text: &str, map: &str) -> Option<u64> {
    let head = format!("{map}: ");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&head)?.trim().parse().ok())
}

/// Events bpftrace lost (perf buffer full): the sum of its `Lost N events` lines.
pub fn bpftrace_lost(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("Lost ")?
                .strip_suffix(" events")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `bpftrace --version` (`bpftrace v0.17.0`) as (major, minor).
pub fn bpftrace_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Statistics of one qdisc (`tc -s -j qdisc show dev IF`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Qdisc {
    pub kind: String,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub requeues: u64,
    /// Bytes queued at the moment of reading.
    pub backlog: u64,
    /// Packets (GSO skbs) queued at the moment of reading.
    pub qlen: u64,
}

/// The root qdisc of `tc -s -j qdisc show dev IF`.
pub fn tc_root_qdisc(json: &str) -> anyhow::Result<Qdisc> {
    let v: Vec<Value> = serde_json::from_str(json).context("tc output is not a JSON array")?;
    let q = v
        .iter()
        .find(|q| q["root"].as_bool() == Some(true))
        .context("tc shows no root qdisc")?;
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    Ok(Qdisc {
        kind: q["kind"].as_str().unwrap_or("").to_string(),
        bytes: n("bytes"),
        packets: n("packets"),
        drops: n("drops"),
        overlimits: n("overlimits"),
        requeues: n("requeues"),
        backlog: n("backlog"),
        qlen: n("qlen"),
    })
}

/// What `sockmem probe --json` says sockmem attaches through tracepoints on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeTracepoints {
    pub kernel: String,
    /// `category:name` of every chosen tracepoint attach point (a hook may have several).
    pub tracepoints: Vec<String>,
    /// Hooks attached through another backend (not covered by the floor's tracepoints).
    pub other_backends: Vec<String>,
    /// Whether sockmem also attaches `irq:softirq_entry`/`softirq_exit`.
    pub softirq: bool,
}

pub fn probe_tracepoints(json: &str) -> anyhow::Result<ProbeTracepoints> {
    let v: Value = serde_json::from_str(json).context("`sockmem probe --json` is not JSON")?;
    let mut tracepoints = Vec::new();
    let mut other_backends = Vec::new();
    for h in v["hooks"].as_array().context("probe JSON without hooks")? {
        let name = h["hook"].as_str().unwrap_or("?");
        match h["chosen"].as_str() {
            Some("tracepoint") => {
                let detail = h["backends"]
                    .as_array()
                    .and_then(|b| b.iter().find(|b| b["status"] == "chosen"))
                    .and_then(|b| b["detail"].as_str())
                    .with_context(|| format!("hook `{name}`: no chosen tracepoint"))?;
                for tp in detail.split('+') {
                    if !tracepoints.iter().any(|t| t == tp) {
                        tracepoints.push(tp.to_string());
                    }
                }
            }
            Some(b) => other_backends.push(format!("{name} ({b})")),
            None => {}
        }
    }
    let softirq = v["softirq_tracked"].as_bool().unwrap_or(false);
    if softirq {
        tracepoints.extend(["irq:softirq_entry".into(), "irq:softirq_exit".into()]);
    }
    Ok(ProbeTracepoints {
        kernel: v["kernel"].as_str().unwrap_or("").to_string(),
        tracepoints,
        other_backends,
        softirq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPERF3: &str = include_str!("testdata/iperf3-tbf.json");
    const IPERF3_ERROR: &str = include_str!("testdata/iperf3-error.json");
    const BPFTOOL: &str = include_str!("testdata/bpftool-prog-show.json");
    const FDINFO: &str = include_str!("testdata/fdinfo-prog.txt");
    const STAT: &str = include_str!("testdata/proc-pid-stat.txt");
    const TRACE_STDERR: &str = include_str!("testdata/sockmem-trace.stderr");
    const TRACE_SUMMARY: &str = include_str!("testdata/sockmem-trace-summary.jsonl");
    const HIST: &str = include_str!("testdata/sockmem-hist.txt");
    const BT_HIST: &str = include_str!("testdata/bpftrace-hist.out");
    const BT_PRINTF: &str = include_str!("testdata/bpftrace-printf.out");
    const TC: &str = include_str!("testdata/tc-tbf.json");
    const PROBE: &str = include_str!("testdata/sockmem-probe.json");

    #[test]
    fn iperf3_end_sums() {
        let r = iperf3(IPERF3).unwrap();
        assert_eq!(r.bits_per_second, 478900585.6834272);
        assert_eq!(r.bytes_sent, 121590064);
        assert_eq!(r.seconds, 2.000117);
        assert_eq!(r.retransmits, 0);
        let e = iperf3(IPERF3_ERROR).unwrap_err().to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(iperf3("not json").is_err());
    }

    #[test]
    fn bpftool_programs() {
        let p = bpftool_progs(BPFTOOL).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            ProgStats {
                id: 7968,
                name: "tp_tcp_sendmsg_locked".into(),
                run_time_ns: 5741648,
                run_cnt: 6835
            }
        );
        // A program that never ran has no stats fields.
        assert_eq!(
            (p[3].name.as_str(), p[3].run_cnt),
            ("tp_tcp_retransmit_skb", 0)
        );
        assert_eq!(bpftool_progs("[]").unwrap(), vec![]);
    }

    #[test]
    fn fdinfo_of_a_program() {
        assert_eq!(
            fdinfo_prog(FDINFO),
            Some(ProgStats {
                id: 7969,
                name: "prog7969".into(),
                run_time_ns: 1335198,
                run_cnt: 22073
            })
        );
        assert_eq!(fdinfo_prog("pos:\t0\nflags:\t02\nmnt_id:\t17\n"), None);
    }

    #[test]
    fn cpu_ticks_from_stat() {
        assert_eq!(proc_stat_cpu_ticks(STAT), Some(9 + 54));
        let odd = "42 (a) b (c) S 1 1 1 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(proc_stat_cpu_ticks(odd), Some(10));
        assert_eq!(proc_stat_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn sockmem_summaries() {
        let want = TraceSummary {
            events: 14307,
            sockets: 5,
            lost: 0,
        };
        assert_eq!(sockmem_stderr_summary(TRACE_STDERR), Some(want));
        assert_eq!(sockmem_json_summary(TRACE_SUMMARY), Some(want));
        let lossy = "sockmem: lost 12 events (ring buffer full, 12 so far); a larger --ring-size \
                     or narrower filters help\nsockmem: 9574 events from 2 sockets in 3.0 s, 12 lost\n";
        assert_eq!(
            sockmem_stderr_summary(lossy),
            Some(TraceSummary {
                events: 9574,
                sockets: 2,
                lost: 12
            })
        );
        assert_eq!(
            sockmem_stderr_summary("sockmem: tracing for 1.0 s; Ctrl-C to end"),
            None
        );
        assert_eq!(sockmem_json_summary(r#"{"type":"socket","sock":1}"#), None);
    }

    #[test]
    fn sockmem_hist_counts() {
        assert_eq!(sockmem_hist_count(HIST, "wmem_queued"), Some(27604));
        assert_eq!(sockmem_hist_count(HIST, "sendmsg_time"), Some(1821));
        assert_eq!(sockmem_hist_count(HIST, "send_blocked"), Some(0));
        assert_eq!(sockmem_hist_count(HIST, "nothing"), None);
    }

    #[test]
    fn bpftrace_output() {
        assert_eq!(bpftrace_hist_total(BT_HIST, "@wmem_queued"), Some(1848));
        assert_eq!(bpftrace_hist_total(BT_HIST, "@wmem_alloc"), Some(1848));
        assert_eq!(bpftrace_hist_total(BT_HIST, "@nothing"), None);
        assert_eq!(bpftrace_scalar(BT_PRINTF, "@events"), Some(18505));
        assert_eq!(bpftrace_scalar(BT_HIST, "@events"), None);
        assert_eq!(bpftrace_lost(BT_PRINTF), 5 + 36);
        assert_eq!(bpftrace_lost(BT_HIST), 0);
        assert_eq!(bpftrace_version("bpftrace v0.17.0\n"), Some((0, 17)));
        assert_eq!(bpftrace_version("bpftrace v0.21.2-1"), Some((0, 21)));
        assert_eq!(bpftrace_version("nonsense"), None);
    }

    #[test]
    fn tc_root() {
        let q = tc_root_qdisc(TC).unwrap();
        assert_eq!(q.kind, "tbf");
        assert_eq!((q.backlog, q.qlen), (136260, 2));
        assert_eq!(
            (q.packets, q.overlimits, q.requeues, q.drops),
            (41735, 2773, 0, 0)
        );
        assert!(tc_root_qdisc("[]").is_err());
    }

    #[test]
    fn probe_chosen_tracepoints() {
        let p = probe_tracepoints(PROBE).unwrap();
        assert!(p.kernel.starts_with("6.18"), "{}", p.kernel);
        assert_eq!(
            p.tracepoints,
            [
                "tcp:tcp_sendmsg_locked",
                "raw_syscalls:sys_enter",
                "sched:sched_switch",
                "sock:sock_send_length",
                "net:net_dev_queue",
                "qdisc:qdisc_enqueue",
                "qdisc:qdisc_dequeue",
                "net:net_dev_start_xmit",
                "net:net_dev_xmit",
                "skb:consume_skb",
                "skb:kfree_skb",
                "tcp:tcp_probe",
                "tcp:tcp_retransmit_skb",
                "tcp:tcp_destroy_sock",
                "irq:softirq_entry",
                "irq:softirq_exit",
            ]
        );
        assert!(p.softirq);
        assert!(p.other_backends.is_empty());
    }
}
