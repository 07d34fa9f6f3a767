//! Histograms as bcc/bpftrace users know them (`[lo, hi)  count |@@@@   |`), or as JSON.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;
use sockmem_common::hist::{slot_bounds, HistKind};

use super::{human_bytes, human_ns, missed_runs};
use crate::attach::stats::HookCost;
use crate::pipeline::histogram::{kind_name, kind_unit, Completeness, Histogram, Report, Unit};

const BAR: usize = 40;

/// A value with a unit chosen for it: a time as everywhere (`human_ns`: `512ns`, `1.0us`,
/// `2.0ms`), a byte size as everywhere (`human_bytes`).
pub fn human(v: u64, unit: Unit) -> String {
    match unit {
        Unit::Nanoseconds => human_ns(v),
        Unit::Bytes => human_bytes(v as f64),
    }
}

/// A bucket bound: a byte size as everywhere (`64KiB`: every bound is a power of two, so it
/// stays exact); a time as bpftrace prints it, `K`/`M`/`G` (×1024) keeping it exact and short.
fn bound(v: u64, unit: Unit) -> String {
    if unit == Unit::Bytes {
        return human_bytes(v as f64);
    }
    for (shift, suffix) in [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ] {
        if v >= 1 << shift && v.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", v >> shift);
        }
    }
    v.to_string()
}

fn title(h: &Histogram, unit_name: &str) -> String {
    if h.label.is_empty() {
        format!("@{} ({unit_name})", kind_name(h.kind))
    } else {
        format!("@{}[{}] ({unit_name})", kind_name(h.kind), h.label)
    }
}

pub fn write_histogram(out: &mut impl Write, h: &Histogram) -> io::Result<()> {
    let unit = kind_unit(h.kind);
    let unit_name = match unit {
        Unit::Nanoseconds => "ns",
        Unit::Bytes => "bytes",
    };
    writeln!(out, "{}", title(h, unit_name))?;
    writeln!(
        out,
        "count {}  mean {}  p50 {}  p90 {}  p99 {}  max {}",
        h.count,
        human(h.mean().round() as u64, unit),
        human(h.percentile(0.5), unit),
        human(h.percentile(0.9), unit),
        human(h.percentile(0.99), unit),
        human(h.max, unit)
    )?;
    let used: Vec<usize> = (0..h.slots.len()).filter(|&s| h.slots[s] > 0).collect();
    let (Some(&first), Some(&last)) = (used.first(), used.last()) else {
        return writeln!(out);
    };
    let peak = h.slots.iter().copied().max().unwrap_or(1).max(1);
    for s in first..=last {
        let (lo, hi) = slot_bounds(s);
        let range = if hi == u64::MAX {
            format!("[{}, ...)", bound(lo, unit))
        } else {
            format!("[{}, {})", bound(lo, unit), bound(hi, unit))
        };
        let n = h.slots[s];
        let bar = "@".repeat(((n as u128 * BAR as u128) / peak as u128) as usize);
        writeln!(out, "{range:<20} {n:>8} |{bar:<BAR$}|")?;
    }
    writeln!(out)
}

/// `missed`: per hook, runs the kernel skipped (see `attach::stats::missed`); `None` where not
/// known (a recording does not keep it).
pub fn write_text(
    out: &mut impl Write,
    header: &str,
    report: &Report,
    missed: Option<&BTreeMap<String, u64>>,
) -> io::Result<()> {
    writeln!(out, "{header}\n")?;
    for total in &report.totals {
        let keyed: Vec<&Histogram> = report
            .histograms
            .iter()
            .filter(|h| h.kind == total.kind && !h.label.is_empty())
            .collect();
        if total.count == 0 {
            writeln!(out, "@{}: no samples\n", kind_name(total.kind))?;
        } else if keyed.is_empty() {
            write_histogram(out, total)?;
        } else {
            for h in keyed {
                write_histogram(out, h)?;
            }
        }
    }
    write_completeness(out, report)?;
    if let Some((total, hooks)) = missed_runs(missed) {
        writeln!(
            out,
            "warning: {total} program runs skipped by the kernel ({hooks}: a BPF program was \
             already running on that CPU): their samples are missing"
        )?;
    }
    Ok(())
}

/// What the skb counts mean for the histograms: an skb is timed (`driver_time`, `below_tcp`)
/// when its socket gets its bytes back, which a driver that orphans it, or the receiving end
/// of a veth, shows long before any free. Most skbs on such paths are then freed where no hook
/// sees it (a received skb merged into another frees no skb), so `skbs_lost` (followed, not
/// seen freed, not in flight) counts skbs whose samples are in, not missing ones.
fn write_completeness(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let c = &report.completeness;
    let samples = |kind: HistKind| {
        report
            .totals
            .iter()
            .find(|t| t.kind == kind)
            .map_or(0, |t| t.count)
    };
    let (driver, below) = (samples(HistKind::DriverTime), samples(HistKind::BelowTcp));
    // An skb in the map at the end may be timed already (its free not seen yet): count every
    // followed one against the samples.
    let untimed = c.skbs_tracked.saturating_sub(driver.max(below));
    writeln!(
        out,
        "skbs: {} followed below the socket, {} of them still in the map at the end; timed \
         when their socket got the bytes back: {driver} driver_time and {below} below_tcp \
         samples ({})",
        c.skbs_tracked,
        c.skbs_in_flight,
        match untimed {
            0 => "every one followed".to_owned(),
            n => format!(
                "up to {n} followed have neither: still in flight, dropped before the driver, \
                 evicted from the map, or their end unseen"
            ),
        }
    )?;
    writeln!(
        out,
        "skbs: {} seen freed, {} not (freed where no hook sees it, e.g. merged into another skb \
         on receive): an skb timed before its unseen free is in the histograms",
        c.skbs_freed, c.skbs_lost
    )?;
    writeln!(
        out,
        "qdisc: {} skbs bypassed it (no qdisc, or TCQ_F_CAN_BYPASS), {} dequeues without a seen enqueue",
        c.qdisc_bypass, c.qdisc_unmatched
    )?;
    writeln!(
        out,
        "sendmsg: {} starts seen, {} returns matched, {} returns without a seen start, {} in progress",
        c.sends_started, c.sends_matched, c.sends_unmatched, c.sends_in_flight
    )?;
    if c.hist_full > 0 {
        writeln!(
            out,
            "warning: {} samples dropped: the histogram map is full (too many keys)",
            c.hist_full
        )?;
    }
    if c.lists_cut > 0 {
        writeln!(
            out,
            "warning: {} skb lists were longer than sockmem follows: their later skbs were not seen dequeued or transmitted",
            c.lists_cut
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonBucket {
    lo: u64,
    hi: u64,
    count: u64,
}

#[derive(Serialize)]
struct JsonHist<'a> {
    name: &'static str,
    unit: &'static str,
    key: &'a str,
    /// `--per socket`: the socket's id, as `trace --json` names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    sock: Option<u64>,
    /// `--per cgroup`: the cgroup id (0: unknown sender); `key` is its path.
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    /// `--per netns`: the namespace inode; `key` is its name or `ino:N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    netns_ino: Option<u64>,
    count: u64,
    sum: u64,
    mean: f64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    buckets: Vec<JsonBucket>,
}

fn json_hist(h: &Histogram) -> JsonHist<'_> {
    JsonHist {
        name: kind_name(h.kind),
        unit: match kind_unit(h.kind) {
            Unit::Nanoseconds => "ns",
            Unit::Bytes => "bytes",
        },
        key: &h.label,
        sock: h.sock,
        cgroup_id: h.cgroup_id,
        netns_ino: h.netns_ino,
        count: h.count,
        sum: h.sum,
        mean: h.mean(),
        p50: h.percentile(0.5),
        p90: h.percentile(0.9),
        p99: h.percentile(0.99),
        max: h.max,
        buckets: (0..h.slots.len())
            .filter(|&s| h.slots[s] > 0)
            .map(|s| {
                let (lo, hi) = slot_bounds(s);
                JsonBucket {
                    lo,
                    hi,
                    count: h.slots[s],
                }
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    r#type: &'static str,
    per: &'a str,
    duration_s: f64,
    kernel: &'a str,
    hooks: &'a [serde_json::Value],
    /// `--stats`: the programs' cost per hook.
    #[serde(skip_serializing_if = "Option::is_none")]
    bpf_stats: Option<&'a [HookCost]>,
    /// Runs the kernel skipped (a BPF program already running on that CPU): their samples are
    /// missing. Absent when they could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_per_hook: Option<&'a BTreeMap<String, u64>>,
    histograms: Vec<JsonHist<'a>>,
    totals: Vec<JsonHist<'a>>,
    completeness: &'a Completeness,
}

/// What the JSON document says besides the histograms.
pub struct JsonContext<'a> {
    pub per: &'a str,
    pub duration_s: f64,
    pub kernel: &'a str,
    pub hooks: &'a [serde_json::Value],
    pub bpf_stats: Option<&'a [HookCost]>,
    pub missed_per_hook: Option<&'a BTreeMap<String, u64>>,
}

/// The histograms, their totals and the completeness counts as `hist --json` has them, for a
/// document of another command (`report --hist --json`).
pub fn json_parts(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "histograms": report
            .histograms
            .iter()
            .filter(|h| !h.label.is_empty())
            .map(json_hist)
            .collect::<Vec<_>>(),
        "totals": report.totals.iter().map(json_hist).collect::<Vec<_>>(),
        "completeness": &report.completeness,
    })
}

pub fn write_json(out: &mut impl Write, ctx: &JsonContext, report: &Report) -> io::Result<()> {
    let c = &report.completeness;
    let doc = JsonReport {
        r#type: "hist",
        per: ctx.per,
        duration_s: ctx.duration_s,
        kernel: ctx.kernel,
        hooks: ctx.hooks,
        bpf_stats: ctx.bpf_stats,
        missed: ctx.missed_per_hook.map(|m| m.values().sum()),
        missed_per_hook: ctx.missed_per_hook,
        histograms: report
            .histograms
            .iter()
            .filter(|h| !h.label.is_empty())
            .map(json_hist)
            .collect(),
        totals: report.totals.iter().map(json_hist).collect(),
        completeness: c,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmem_common::hist::{slot, HistKind};

    fn sample() -> Histogram {
        let mut h = Histogram::empty(HistKind::QdiscSojourn, "smvA".into());
        for v in [600u64, 700, 1500, 1600, 1700, 40_000] {
            h.slots[slot(v)] += 1;
            h.count += 1;
            h.sum += v;
            h.max = h.max.max(v);
        }
        h
    }

    fn json_of(report: &Report, missed: Option<&BTreeMap<String, u64>>) -> serde_json::Value {
        let ctx = JsonContext {
            bpf_stats: None,
            missed_per_hook: missed,
            per: "iface",
            duration_s: 1.0,
            kernel: "k",
            hooks: &[],
        };
        let mut buf = Vec::new();
        write_json(&mut buf, &ctx, report).unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn units_are_chosen_per_value() {
        assert_eq!(human(512, Unit::Nanoseconds), "512ns");
        assert_eq!(human(1024, Unit::Nanoseconds), "1.0us");
        assert_eq!(human(2_000_000, Unit::Nanoseconds), "2.0ms");
        assert_eq!(human(999_960, Unit::Nanoseconds), "1.0ms");
        assert_eq!(human(1536, Unit::Bytes), "1.5KiB");
        assert_eq!(human(4 << 20, Unit::Bytes), "4MiB");
    }

    #[test]
    fn text_has_one_row_per_slot_between_first_and_last() {
        let mut buf = Vec::new();
        write_histogram(&mut buf, &sample()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "@qdisc_sojourn[smvA] (ns)");
        assert!(lines[1].starts_with("count 6  mean "), "{}", lines[1]);
        // 600..700 in [512, 1024), 1500..1700 in [1024, 2048), 40000 in [32768, 65536):
        // rows from slot 10 to slot 16.
        let rows: Vec<&&str> = lines.iter().filter(|l| l.starts_with('[')).collect();
        assert_eq!(rows.len(), 7, "{text}");
        assert!(rows[0].starts_with("[512, 1K) "), "{}", rows[0]);
        assert!(rows[6].starts_with("[32K, 64K) "), "{}", rows[6]);
        assert!(
            rows[1].contains("       3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"),
            "{}",
            rows[1]
        );
        assert!(rows[2].contains("       0 |"), "{}", rows[2]);
    }

    #[test]
    fn bounds_are_exact_powers_of_two() {
        let ns = Unit::Nanoseconds;
        assert_eq!(bound(0, ns), "0");
        assert_eq!(bound(512, ns), "512");
        assert_eq!(bound(1024, ns), "1K");
        assert_eq!(bound(16 << 20, ns), "16M");
        assert_eq!(bound(1 << 63, ns), "8E");
        let bytes = Unit::Bytes;
        assert_eq!(bound(512, bytes), "512B");
        assert_eq!(bound(64 << 10, bytes), "64KiB");
        assert_eq!(bound(16 << 20, bytes), "16MiB");
    }

    #[test]
    fn json_has_buckets_and_percentiles() {
        let report = Report {
            histograms: vec![sample()],
            totals: vec![sample()],
            completeness: Completeness::default(),
        };
        let v = json_of(&report, None);
        let h = &v["histograms"][0];
        assert_eq!(h["name"], "qdisc_sojourn");
        assert_eq!(h["unit"], "ns");
        assert_eq!(h["key"], "smvA");
        assert_eq!(h["count"], 6);
        assert_eq!(h["buckets"].as_array().unwrap().len(), 3);
        assert_eq!(h["max"], 40_000);
        assert!(h["p50"].as_u64().unwrap() >= 1024);
    }

    #[test]
    fn skipped_runs_are_said_in_text_and_json() {
        let report = Report {
            histograms: vec![],
            totals: vec![sample()],
            completeness: Completeness::default(),
        };
        let missed = BTreeMap::from([("qdisc_enqueue".to_owned(), 3), ("wmem_release".into(), 2)]);
        let mut buf = Vec::new();
        write_text(&mut buf, "h", &report, Some(&missed)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with(
                "warning: 5 program runs skipped by the kernel (qdisc_enqueue 3, wmem_release 2:"
            )),
            "{text}"
        );
        let mut buf = Vec::new();
        write_text(&mut buf, "h", &report, Some(&BTreeMap::new())).unwrap();
        assert!(!String::from_utf8(buf).unwrap().contains("skipped"));
        let v = json_of(&report, Some(&missed));
        assert_eq!(v["missed"], 5);
        assert_eq!(v["missed_per_hook"]["qdisc_enqueue"], 3);
    }
}
