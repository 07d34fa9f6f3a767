use super::*;

fn run(round: u32, mode: Mode, bps: f64, progs: &[(&str, u64, u64)], events: Option<u64>) -> Run {
    let mut r = Run::new(round, Workload::Unlimited, mode);
    r.iperf = Some(Iperf {
        bits_per_second: bps,
        bytes_sent: 2_000_000_000,
        seconds: 2.0,
        retransmits: 0,
    });
    r.progs = progs
        .iter()
        .map(|&(hook, runs, ns)| ProgCost {
            hook: hook.into(),
            runs,
            run_time_ns: ns,
        })
        .collect();
    if mode != Mode::None {
        r.tracer = Some(Finished {
            ready_s: 0.2,
            events,
            lost: events.map(|_| 0),
            cpu_s: 0.5,
            output_bytes: None,
        });
    }
    r.derive();
    r
}

#[test]
fn median_and_spread() {
    assert_eq!(stat(vec![]), None);
    let s = stat(vec![3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    assert_eq!(stat(vec![4.0, 1.0]).unwrap().median, 2.5);
    assert_eq!(show(Some(&s), 1), "2.0 (1.0–3.0)");
    assert_eq!(show(stat(vec![7.0]).as_ref(), 0), "7");
    assert_eq!(show(None, 0), "–");
}

#[test]
fn derived_figures() {
    let r = run(
        1,
        Mode::Hist,
        9e9,
        &[("a", 10, 1000), ("b", 100, 20000)],
        Some(1000),
    );
    assert_eq!(r.gbps, Some(9.0));
    // Mean over hooks: (100 + 200) / 2, not the weighted 21000 / 110.
    assert_eq!(r.bpf_ns_per_run, Some(150.0));
    assert_eq!(r.bpf_ns_per_run_all, Some(21000.0 / 110.0));
    assert_eq!(r.bpf_ms, Some(0.021));
    assert_eq!(r.bpf_ms_per_gb, Some(0.0105));
    assert_eq!(r.events_per_s, Some(500.0));
    assert_eq!(r.cpu_us_per_event, Some(500.0));
    let none = run(1, Mode::None, 10e9, &[], None);
    assert_eq!((none.bpf_ms, none.events_per_s), (None, None));
}

#[test]
fn ratios_within_the_same_round() {
    let mut runs = vec![
        run(1, Mode::None, 10e9, &[], None),
        run(1, Mode::Hist, 9e9, &[], None),
        run(2, Mode::None, 5e9, &[], None),
        run(2, Mode::Hist, 4e9, &[], None),
    ];
    fill_ratios(&mut runs);
    assert_eq!(runs[1].ratio_to_none, Some(0.9));
    assert_eq!(runs[3].ratio_to_none, Some(0.8));
    assert_eq!(runs[0].ratio_to_none, Some(1.0));
}

#[test]
fn table_and_goals() {
    let mut runs = vec![
        run(1, Mode::None, 10e9, &[], None),
        run(
            1,
            Mode::Hist,
            9.5e9,
            &[("net_dev_queue", 10, 2000)],
            Some(100),
        ),
        run(
            1,
            Mode::BpftraceHist,
            6e9,
            &[("net_dev_queue", 10, 9000)],
            Some(100),
        ),
    ];
    let mut failed = Run::new(1, Workload::Unlimited, Mode::TraceJsonFile);
    failed.error = Some("boom".into());
    runs.push(failed);
    fill_ratios(&mut runs);
    let modes = [
        Mode::None,
        Mode::Hist,
        Mode::BpftraceHist,
        Mode::TraceJsonFile,
    ];
    let cells = cells(&runs, &[Workload::Unlimited], &modes);
    let t = table(&cells);
    assert!(
        t.contains("| unlimited | hist | 9.50 | 0.950 | 200 | 200 |"),
        "{t}"
    );
    assert!(
        t.contains("| unlimited | trace-json-file (1 of 1 failed) | – |"),
        "{t}"
    );
    let hooks = hook_table(&cells, Workload::Unlimited).unwrap();
    assert!(hooks.contains("| net_dev_queue | 200 | 900 |"), "{hooks}");
    let mut selected = modes.to_vec();
    selected.push(Mode::TraceJsonNull);
    let g = goals(&cells, &[Workload::Unlimited], &selected);
    let find = |text: &str| {
        g.iter()
            .find(|g| g.goal == text)
            .unwrap_or_else(|| panic!("no goal {text:?} in {g:?}"))
    };
    assert_eq!(
        find("hist: BPF ns per run (mean over hooks) ≤ 300").met,
        Some(true)
    );
    assert_eq!(find("hist: throughput ≥ 0.90 × none").met, Some(true));
    assert_eq!(
        find("hist: BPF ms per GB ≤ ½ of bpftrace-hist's").met,
        Some(true)
    );
    assert_eq!(
        find("hist: ahead of bpftrace-hist in throughput").met,
        Some(true)
    );
    assert_eq!(find("trace-json-null: throughput ≥ 0.85 × none").met, None);
    let lines = goal_lines(&g);
    assert!(
        lines.contains("- [unlimited] hist: throughput ≥ 0.90 × none: 0.950 — met"),
        "{lines}"
    );
    assert!(lines.contains("not measured"), "{lines}");
    // Goals of modes not selected are left out.
    assert!(!lines.contains("trace-text"), "{lines}");
    assert!(goals(&cells, &[Workload::Unlimited], &[Mode::Hist])
        .iter()
        .all(|g| g.goal.starts_with("hist: ")
            && !g.goal.contains("bpftrace")
            && !g.goal.contains("none")));
}

#[test]
fn timestamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(1796064801), "20261130T185321Z");
    assert_eq!(utc_stamp(951782400), "20000229T000000Z");
}
