//! Issue #10's goals for the bench's figures, each met, missed or not measured.

use std::fmt::Write as _;

use serde::Serialize;

use super::{num, Cell, Mode, Workload};

/// One of issue #10's goals, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub workload: Workload,
    pub goal: String,
    pub figure: Option<String>,
    /// `None`: not measured (a mode failed).
    pub met: Option<bool>,
    /// The modes the goal needs.
    #[serde(skip)]
    needs: Vec<Mode>,
}

/// The goals whose modes were all selected, judged on medians over rounds (lost events: the
/// worst round). Throughput and lost events are judged under the unlimited workload only.
pub fn goals(cells: &[Cell], workloads: &[Workload], selected: &[Mode]) -> Vec<Goal> {
    let mut out = Vec::new();
    for &w in workloads {
        let fig = |m: Mode, key: &str| {
            cells
                .iter()
                .find(|c| c.workload == w && c.mode == m)
                .and_then(|c| c.figures.get(key))
                .copied()
        };
        let med = |m: Mode, key: &str| fig(m, key).map(|s| s.median);
        let mut push = |needs: Vec<Mode>, goal: String, figure: Option<String>, met| {
            out.push(Goal {
                workload: w,
                goal,
                figure,
                met,
                needs,
            })
        };
        let ns = "BPF ns per run (mean over hooks)";
        let mut at_most = |m: Mode, key: &str, what: &str, limit: f64, digits: usize| {
            let v = med(m, key);
            let goal = format!("{}: {what} ≤ {}", m.name(), num(limit, digits));
            push(
                vec![m],
                goal,
                v.map(|v| num(v, digits.max(2))),
                v.map(|v| v <= limit),
            );
        };
        at_most(Mode::Hist, "bpf_ns_per_run", ns, 300.0, 0);
        for m in [Mode::TraceJsonNull, Mode::TraceJsonFile] {
            at_most(m, "bpf_ns_per_run", ns, 500.0, 0);
            at_most(m, "cpu_us_per_event", "userspace CPU µs per event", 1.0, 1);
        }
        for m in [
            Mode::Hist,
            Mode::TraceJsonNull,
            Mode::TraceJsonFile,
            Mode::TraceText,
        ] {
            at_most(m, "ready_s", "launch to ready, s", 0.5, 1);
        }
        // Throughput and lost events at full rate: under tbf the rate is capped by design.
        let full_rate = w == Workload::Unlimited;
        for (m, limit) in [
            (Mode::Hist, 0.90),
            (Mode::TraceJsonNull, 0.85),
            (Mode::TraceJsonFile, 0.85),
        ]
        .into_iter()
        .filter(|_| full_rate)
        {
            let v = med(m, "ratio_to_none");
            let goal = format!("{}: throughput ≥ {limit:.2} × none", m.name());
            push(
                vec![m, Mode::None],
                goal,
                v.map(|v| num(v, 3)),
                v.map(|v| v >= limit),
            );
        }
        let lost = fig(Mode::TraceJsonFile, "lost").map(|s| s.max);
        if full_rate {
            push(
                vec![Mode::TraceJsonFile],
                "trace-json-file: zero lost events to a file, default ring (worst round)".into(),
                lost.map(|v| num(v, 0)),
                lost.map(|v| v == 0.0),
            );
        }
        let (h, b) = (
            med(Mode::Hist, "bpf_ms_per_gb"),
            med(Mode::BpftraceHist, "bpf_ms_per_gb"),
        );
        push(
            vec![Mode::Hist, Mode::BpftraceHist],
            "hist: BPF ms per GB ≤ ½ of bpftrace-hist's".into(),
            h.zip(b)
                .map(|(h, b)| format!("{} vs {} (×{:.2})", num(h, 2), num(b, 2), h / b)),
            h.zip(b).map(|(h, b)| h <= b / 2.0),
        );
        for m in [
            Mode::Hist,
            Mode::TraceJsonNull,
            Mode::TraceJsonFile,
            Mode::TraceText,
        ] {
            let eq = m.bpftrace_equivalent().expect("sockmem modes have one");
            for (key, what, higher_better) in [
                ("gbps", "throughput", true),
                ("bpf_ms_per_gb", "BPF ms per GB", false),
            ] {
                if key == "gbps" && !full_rate {
                    continue;
                }
                let (s, b) = (med(m, key), med(eq, key));
                push(
                    vec![m, eq],
                    format!("{}: ahead of {} in {what}", m.name(), eq.name()),
                    s.zip(b)
                        .map(|(s, b)| format!("{} vs {}", num(s, 2), num(b, 2))),
                    s.zip(b)
                        .map(|(s, b)| if higher_better { s > b } else { s < b }),
                );
            }
        }
    }
    out.retain(|g| g.needs.iter().all(|m| selected.contains(m)));
    out
}

pub fn goal_lines(goals: &[Goal]) -> String {
    let mut t = String::new();
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let figure = g.figure.as_deref().unwrap_or("–");
        let _ = writeln!(
            t,
            "- [{}] {}: {figure} — {verdict}",
            g.workload.name(),
            g.goal
        );
    }
    t
}
