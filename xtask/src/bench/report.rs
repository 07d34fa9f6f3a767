//! The bench's results: one [`Run`] per mode × workload × round, summarised as median and
//! spread per mode × workload (a Markdown table), the cost per hook, the qdisc's state, the
//! issue's goals met or missed, and everything as JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{
    measure::ProgCost,
    modes::{Finished, Mode},
    parse::{Iperf, Qdisc},
    setup::Workload,
};

/// One mode run once under one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: u32,
    pub workload: Workload,
    pub mode: Mode,
    pub error: Option<String>,
    pub iperf: Option<Iperf>,
    pub tracer: Option<Finished>,
    /// Per BPF program of the tracer, over the traffic window.
    pub progs: Vec<ProgCost>,
    /// The sender's qdisc halfway through the traffic (backlog, qlen).
    pub qdisc_mid: Option<Qdisc>,
    /// The qdisc's counters over the run (after − before).
    pub qdisc_delta: Option<Qdisc>,
    pub gbps: Option<f64>,
    /// Throughput over the `none` run of the same round and workload.
    pub ratio_to_none: Option<f64>,
    /// BPF ns per program run, averaged over the hooks (programs) that ran.
    pub bpf_ns_per_run: Option<f64>,
    /// BPF ns per program run over all runs of all programs (weighted by runs).
    pub bpf_ns_per_run_all: Option<f64>,
    pub bpf_ms: Option<f64>,
    pub bpf_ms_per_gb: Option<f64>,
    pub events_per_s: Option<f64>,
    pub cpu_us_per_event: Option<f64>,
}

impl Run {
    pub fn new(round: u32, workload: Workload, mode: Mode) -> Run {
        Run {
            round,
            workload,
            mode,
            error: None,
            iperf: None,
            tracer: None,
            progs: Vec::new(),
            qdisc_mid: None,
            qdisc_delta: None,
            gbps: None,
            ratio_to_none: None,
            bpf_ns_per_run: None,
            bpf_ns_per_run_all: None,
            bpf_ms: None,
            bpf_ms_per_gb: None,
            events_per_s: None,
            cpu_us_per_event: None,
        }
    }

    /// Fills the figures derived from the raw measurements.
    pub fn derive(&mut self) {
        let Some(ip) = self.iperf else { return };
        self.gbps = Some(ip.bits_per_second / 1e9);
        if self.mode != Mode::None {
            let per_run: Vec<f64> = self.progs.iter().filter_map(ProgCost::ns_per_run).collect();
            if !per_run.is_empty() {
                self.bpf_ns_per_run = Some(per_run.iter().sum::<f64>() / per_run.len() as f64);
            }
            let ns: u64 = self.progs.iter().map(|p| p.run_time_ns).sum();
            let runs: u64 = self.progs.iter().map(|p| p.runs).sum();
            if runs > 0 {
                self.bpf_ns_per_run_all = Some(ns as f64 / runs as f64);
            }
            self.bpf_ms = Some(ns as f64 / 1e6);
            if ip.bytes_sent > 0 {
                self.bpf_ms_per_gb = Some(ns as f64 / 1e6 / (ip.bytes_sent as f64 / 1e9));
            }
        }
        if let Some(t) = &self.tracer {
            if let Some(ev) = t.events.filter(|&e| e > 0) {
                self.events_per_s = Some(ev as f64 / ip.seconds);
                self.cpu_us_per_event = Some(t.cpu_s * 1e6 / ev as f64);
            }
        }
    }
}

/// Sets each run's throughput ratio to the `none` run of its round and workload.
pub fn fill_ratios(runs: &mut [Run]) {
    let none: Vec<(u32, Workload, f64)> = runs
        .iter()
        .filter(|r| r.mode == Mode::None)
        .filter_map(|r| Some((r.round, r.workload, r.gbps?)))
        .collect();
    for r in runs.iter_mut() {
        let base = none
            .iter()
            .find(|(round, w, _)| *round == r.round && *w == r.workload);
        if let (Some((_, _, b)), Some(g)) = (base, r.gbps) {
            r.ratio_to_none = Some(g / b);
        }
    }
}

/// Median and spread of one figure over rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(mut v: Vec<f64>) -> Option<Stat> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// A figure of the table.
pub struct Metric {
    pub key: &'static str,
    header: &'static str,
    get: fn(&Run) -> Option<f64>,
    digits: usize,
}

pub const METRICS: &[Metric] = &[
    Metric {
        key: "gbps",
        header: "Gbit/s",
        get: |r| r.gbps,
        digits: 2,
    },
    Metric {
        key: "ratio_to_none",
        header: "× none",
        get: |r| r.ratio_to_none,
        digits: 3,
    },
    Metric {
        key: "bpf_ns_per_run",
        header: "BPF ns/run",
        get: |r| r.bpf_ns_per_run,
        digits: 0,
    },
    Metric {
        key: "bpf_ns_per_run_all",
        header: "ns/run, all runs",
        get: |r| r.bpf_ns_per_run_all,
        digits: 0,
    },
    Metric {
        key: "bpf_ms",
        header: "BPF ms",
        get: |r| r.bpf_ms,
        digits: 1,
    },
    Metric {
        key: "bpf_ms_per_gb",
        header: "BPF ms/GB",
        get: |r| r.bpf_ms_per_gb,
        digits: 2,
    },
    Metric {
        key: "events_per_s",
        header: "events/s",
        get: |r| r.events_per_s,
        digits: 0,
    },
    Metric {
        key: "lost",
        header: "lost",
        get: |r| r.tracer.as_ref()?.lost.map(|l| l as f64),
        digits: 0,
    },
    Metric {
        key: "cpu_us_per_event",
        header: "CPU µs/event",
        get: |r| r.cpu_us_per_event,
        digits: 3,
    },
    Metric {
        key: "ready_s",
        header: "ready s",
        get: |r| r.tracer.as_ref().map(|t| t.ready_s),
        digits: 3,
    },
];

/// The figures of one mode under one workload over every round.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub workload: Workload,
    pub mode: Mode,
    pub runs: usize,
    pub failed: usize,
    pub figures: BTreeMap<&'static str, Stat>,
    /// Median BPF ns per run of each hook (program) that ran.
    pub hooks: BTreeMap<String, f64>,
}

pub fn cells(runs: &[Run], workloads: &[Workload], modes: &[Mode]) -> Vec<Cell> {
    let mut out = Vec::new();
    for &w in workloads {
        for &m in modes {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.workload == w && r.mode == m)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let ok: Vec<&&Run> = rs.iter().filter(|r| r.error.is_none()).collect();
            let mut figures = BTreeMap::new();
            for metric in METRICS {
                if let Some(s) = stat(ok.iter().filter_map(|r| (metric.get)(r)).collect()) {
                    figures.insert(metric.key, s);
                }
            }
            let mut per_hook: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &ok {
                for p in &r.progs {
                    if let Some(ns) = p.ns_per_run() {
                        per_hook.entry(p.hook.clone()).or_default().push(ns);
                    }
                }
            }
            let hooks = per_hook
                .into_iter()
                .filter_map(|(h, v)| Some((h, stat(v)?.median)))
                .collect();
            out.push(Cell {
                workload: w,
                mode: m,
                runs: rs.len(),
                failed: rs.len() - ok.len(),
                figures,
                hooks,
            });
        }
    }
    out
}

fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn show(s: Option<&Stat>, digits: usize) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n == 1 || s.min == s.max => num(s.median, digits),
        Some(s) => format!(
            "{} ({}–{})",
            num(s.median, digits),
            num(s.min, digits),
            num(s.max, digits)
        ),
    }
}

/// The main table: one row per workload × mode, median (min–max) over rounds.
pub fn table(cells: &[Cell]) -> String {
    let mut t = String::from("| workload | mode |");
    for m in METRICS {
        let _ = write!(t, " {} |", m.header);
    }
    t.push_str("\n|---|---|");
    t.push_str(&"---:|".repeat(METRICS.len()));
    t.push('\n');
    for c in cells {
        let failed = if c.failed > 0 {
            format!(" ({} of {} failed)", c.failed, c.runs)
        } else {
            String::new()
        };
        let _ = write!(t, "| {} | {}{failed} |", c.workload.name(), c.mode.name());
        for m in METRICS {
            let _ = write!(t, " {} |", show(c.figures.get(m.key), m.digits));
        }
        t.push('\n');
    }
    t
}

/// BPF ns per run of each hook, one column per mode that has programs.
pub fn hook_table(cells: &[Cell], workload: Workload) -> Option<String> {
    let cols: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.workload == workload && !c.hooks.is_empty())
        .collect();
    if cols.is_empty() {
        return None;
    }
    let mut hooks: Vec<&String> = cols.iter().flat_map(|c| c.hooks.keys()).collect();
    hooks.sort();
    hooks.dedup();
    let mut t = String::from("| hook (program) |");
    for c in &cols {
        let _ = write!(t, " {} |", c.mode.name());
    }
    let _ = writeln!(t, "\n|---|{}", "---:|".repeat(cols.len()));
    for h in hooks {
        let _ = write!(t, "| {h} |");
        for c in &cols {
            let v = c.hooks.get(h).map_or("–".into(), |v| num(*v, 0));
            let _ = write!(t, " {v} |");
        }
        t.push('\n');
    }
    Some(t)
}

/// What the sender's qdisc did under a workload: medians over every run.
pub fn qdisc_line(runs: &[Run], workload: Workload) -> Option<String> {
    let rs: Vec<&Run> = runs.iter().filter(|r| r.workload == workload).collect();
    let med = |f: fn(&Run) -> Option<u64>| {
        stat(rs.iter().filter_map(|r| f(r).map(|v| v as f64)).collect()).map(|s| s.median)
    };
    let kind = rs.iter().find_map(|r| r.qdisc_mid.as_ref())?.kind.clone();
    Some(format!(
        "{}: {kind} on the sender's veth, halfway through a run (median over {} runs): backlog \
         {:.0} bytes, qlen {:.0}; per run: {:.0} packets, {:.0} overlimits, {:.0} requeues, {:.0} \
         drops",
        workload.name(),
        rs.len(),
        med(|r| Some(r.qdisc_mid.as_ref()?.backlog)).unwrap_or(0.0),
        med(|r| Some(r.qdisc_mid.as_ref()?.qlen)).unwrap_or(0.0),
        med(|r| Some(r.qdisc_delta.as_ref()?.packets)).unwrap_or(0.0),
        med(|r| Some(r.qdisc_delta.as_ref()?.overlimits)).unwrap_or(0.0),
        med(|r| Some(r.qdisc_delta.as_ref()?.requeues)).unwrap_or(0.0),
        med(|r| Some(r.qdisc_delta.as_ref()?.drops)).unwrap_or(0.0),
    ))
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC), for file names.
pub fn utc_stamp(unix: u64) -> String {
    let (days, secs) = (unix / 86400, unix % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

mod goals;
pub use goals::{goal_lines, goals, Goal};

#[cfg(test)]
mod tests;
