//! `cargo xtask bench`: what tracing costs. iperf3 over a veth pair between two network
//! namespaces, with no tracer, with sockmem's modes and with bpftrace doing the same work, in
//! interleaved rounds (every mode once per round, so slow drift hits all alike); throughput,
//! BPF run time per program (`kernel.bpf_stats_enabled`), events, lost events, the tracer's
//! CPU per event, time to ready. Prints a Markdown table and the goals of issue #10; writes
//! every figure as JSON under `target/bench/`.

mod measure;
mod modes;
mod parse;
mod process;
mod report;
mod scripts;
mod setup;

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
pub use modes::Mode;
use report::Run;
use scripts::Script;
pub use setup::Workload;
use setup::{Net, Tools};

/// Which workloads `--workload` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadArg {
    Unlimited,
    Queued,
    All,
}

pub struct Options {
    pub rounds: u32,
    pub seconds: u32,
    pub workload: WorkloadArg,
    /// Empty: every mode.
    pub modes: Vec<Mode>,
}

/// The bpftrace programs of this kernel.
struct Scripts {
    floor: Script,
    hist: Script,
    printf: Script,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.rounds == 0 || opts.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads BPF programs and creates network namespaces: run it as root");
    }
    let workloads: Vec<Workload> = match opts.workload {
        WorkloadArg::Unlimited => vec![Workload::Unlimited],
        WorkloadArg::Queued => vec![Workload::Queued],
        WorkloadArg::All => vec![Workload::Unlimited, Workload::Queued],
    };
    // In the fixed order, whatever order `--modes` names them in.
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| opts.modes.is_empty() || opts.modes.contains(m))
        .collect();
    let sockmem = crate::build::build_all(true)?;
    let dir = sockmem
        .parent()
        .and_then(Path::parent)
        .context("sockmem's binary is not under a target directory")?
        .join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    process::install_signal_handlers();

    let need_bpftrace = modes.iter().any(|m| m.uses_bpftrace());
    let tools = setup::ensure_tools(need_bpftrace)?;
    let mut notes = tools.notes.clone();
    if need_bpftrace && setup::ensure_tracefs()? {
        notes.push(format!(
            "mounted tracefs at {} for bpftrace",
            setup::TRACEFS
        ));
    }
    let probe = sockmem_probe(&sockmem)?;
    if modes.contains(&Mode::Floor) {
        notes.push(floor_note(&probe));
    }
    let scripts = need_bpftrace.then(|| bpftrace_scripts(&tools, &probe.tracepoints, &mut notes));
    notes.push(format!(
        "BPF statistics from {}",
        if tools.bpftool.is_some() {
            "`bpftool prog show --json`"
        } else {
            "/proc/PID/fdinfo (no bpftool: programs named by id)"
        }
    ));
    for n in &notes {
        eprintln!("bench: {n}");
    }

    let _stats = setup::BpfStats::enable()?;
    let net = Net::create().context("creating the network namespaces")?;
    let _server = net.start_server(&dir)?;
    // Every tracepoint a program may stand for (to complete names the kernel cut).
    let mut known_tracepoints = probe.tracepoints.clone();
    known_tracepoints.extend(scripts::HOOKS.iter().map(|h| h.tracepoint.to_string()));
    let script_of = |m: Mode| {
        let s = scripts.as_ref()?;
        match m {
            Mode::Floor => Some(&s.floor),
            Mode::BpftraceHist => Some(&s.hist),
            Mode::BpftracePrintf => Some(&s.printf),
            _ => None,
        }
    };
    let ctx = modes::Ctx {
        sockmem: &sockmem,
        dir: &dir,
        seconds: opts.seconds,
        script: &script_of,
        tracepoints: &known_tracepoints,
    };
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut runs = Vec::new();
    for round in 1..=opts.rounds {
        for &w in &workloads {
            net.set_workload(w)?;
            for &m in &modes {
                eprint!(
                    "bench: round {round}/{} {} {:<16}",
                    opts.rounds,
                    w.name(),
                    m.name()
                );
                let r = run_one(&ctx, &net, &tools, round, w, m).inspect_err(|_| eprintln!())?;
                match (&r.error, r.gbps) {
                    (Some(e), _) => eprintln!(" failed: {e}"),
                    (None, Some(g)) => eprintln!(" {g:.2} Gbit/s"),
                    (None, None) => eprintln!(),
                }
                runs.push(r);
                process::sleep(Duration::from_secs(1))?;
            }
        }
    }
    report::fill_ratios(&mut runs);
    let cells = report::cells(&runs, &workloads, &modes);
    let goals = report::goals(&cells, &workloads, &modes);
    let heading = format!(
        "sockmem bench: kernel {}, {} round(s) × {} s per mode, iperf3 TCP on a veth pair, \
         port {}",
        probe.kernel,
        opts.rounds,
        opts.seconds,
        modes::PORT
    );
    print!(
        "{}",
        report_text(&heading, &runs, &cells, &workloads, &notes, &goals)
    );

    let json = serde_json::json!({
        "started_unix": started,
        "kernel": probe.kernel,
        "rounds": opts.rounds,
        "seconds": opts.seconds,
        "workloads": workloads,
        "qdisc": workloads.iter().map(|w| (w.name(), w.qdisc_spec())).collect::<BTreeMap<_, _>>(),
        "modes": modes,
        "port": modes::PORT,
        "floor_tracepoints": probe.tracepoints,
        "notes": notes,
        "summary": cells,
        "goals": goals,
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&json)?;
    let file = dir.join(format!("bench-{}.json", report::utc_stamp(started)));
    fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
    fs::write(dir.join("latest.json"), &text).context("writing latest.json")?;
    eprintln!(
        "bench: every figure in {} (and latest.json)",
        file.display()
    );
    Ok(())
}

/// Everything printed on stdout: the table, the cost by hook, the qdiscs, notes, goals.
fn report_text(
    heading: &str,
    runs: &[Run],
    cells: &[report::Cell],
    workloads: &[Workload],
    notes: &[String],
    goals: &[report::Goal],
) -> String {
    let mut out = format!("{heading}\n\n{}", report::table(cells));
    out.push_str(
        "\nmedian (min–max) over rounds. BPF ns/run: run time per program run (bpf_stats, which \
         itself adds ~20–30 ns), averaged over the hooks that ran; ns/run, all runs: the same \
         weighted by runs; BPF ms/GB: all programs' run time per GB sent; CPU µs/event: the \
         tracer's user+system time from ready to exit per event; events of hist and \
         bpftrace-hist: counter samples.\n",
    );
    for &w in workloads {
        if let Some(t) = report::hook_table(cells, w) {
            out.push_str(&format!("\nBPF ns per run by hook, {}:\n\n{t}", w.name()));
        }
    }
    out.push('\n');
    for &w in workloads {
        if let Some(l) = report::qdisc_line(runs, w) {
            out.push_str(&format!("qdisc {l}\n"));
        }
    }
    for n in notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str("\nGoals (issue #10; medians over rounds):\n\n");
    out.push_str(&report::goal_lines(goals));
    out
}

fn floor_note(probe: &parse::ProbeTracepoints) -> String {
    let mut n = format!(
        "floor: sockmem has no do-nothing mode; approximated by bpftrace with empty programs on \
         the {} tracepoints sockmem attaches on this kernel ({}). bpftrace attaches perf-event \
         tracepoints (which copy the event's fields before the program runs), sockmem raw ones",
        probe.tracepoints.len(),
        probe.tracepoints.join(", ")
    );
    if !probe.other_backends.is_empty() {
        n.push_str(&format!(
            "; hooks attached otherwise are left out: {}",
            probe.other_backends.join(", ")
        ));
    }
    n
}

fn sockmem_probe(sockmem: &Path) -> anyhow::Result<parse::ProbeTracepoints> {
    let out = Command::new(sockmem)
        .args(["probe", "--json"])
        .output()
        .context("running `sockmem probe --json`")?;
    if !out.status.success() {
        bail!(
            "`sockmem probe --json` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse::probe_tracepoints(&String::from_utf8_lossy(&out.stdout))
}

fn bpftrace_scripts(tools: &Tools, tracepoints: &[String], notes: &mut Vec<String>) -> Scripts {
    let version = tools.bpftrace_version.unwrap_or((0, 17));
    let args = scripts::args_accessor(version);
    let s = Scripts {
        floor: scripts::floor(tracepoints, setup::tracepoint_exists),
        hist: scripts::equivalent(
            scripts::Kind::Hist,
            args,
            modes::PORT,
            setup::tracepoint_exists,
        ),
        printf: scripts::equivalent(
            scripts::Kind::Printf,
            args,
            modes::PORT,
            setup::tracepoint_exists,
        ),
    };
    let mut missing: Vec<&String> = [&s.floor, &s.hist, &s.printf]
        .iter()
        .flat_map(|s| &s.missing)
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        notes.push(format!(
            "bpftrace: no tracefs event for {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    notes.push(format!(
        "bpftrace {}.{} (fields as `{args}field`), BPFTRACE_MAP_KEYS_MAX=65536 (plain hash \
         maps: skbs never seen freed fill them); its stdout is drained by the bench (to see \
         `Attaching`, `Lost N events` and the maps printed at exit), sockmem's goes to /dev/null",
        version.0, version.1
    ));
    s
}

/// One mode under one workload: tracer started and ready, traffic, tracer stopped. A failure
/// of the mode is kept in the run; an interrupt ends the bench.
fn run_one(
    ctx: &modes::Ctx,
    net: &Net,
    tools: &Tools,
    round: u32,
    w: Workload,
    m: Mode,
) -> anyhow::Result<Run> {
    let mut run = Run::new(round, w, m);
    if let Err(e) = measure_into(&mut run, ctx, net, tools) {
        process::check_interrupted()?;
        run.error = Some(format!("{e:#}"));
    }
    run.derive();
    Ok(run)
}

fn measure_into(run: &mut Run, ctx: &modes::Ctx, net: &Net, tools: &Tools) -> anyhow::Result<()> {
    let tracer = modes::start(run.mode, ctx)?;
    let bpftool = tools.bpftool.as_deref();
    let before = match &tracer {
        Some(t) => Some(measure::bpf_snapshot(t.pid(), bpftool)?),
        None => None,
    };
    let q0 = net.qdisc()?;
    let mut mid = None;
    let iperf = net.run_client(ctx.seconds, ctx.dir, || mid = net.qdisc().ok())?;
    let q1 = net.qdisc()?;
    if let (Some(t), Some(before)) = (&tracer, &before) {
        let after = measure::bpf_snapshot(t.pid(), bpftool)?;
        run.progs = measure::bpf_delta(before, &after, ctx.tracepoints);
    }
    run.iperf = Some(iperf);
    run.qdisc_mid = mid;
    run.qdisc_delta = Some(parse::Qdisc {
        kind: q1.kind.clone(),
        bytes: q1.bytes.saturating_sub(q0.bytes),
        packets: q1.packets.saturating_sub(q0.packets),
        drops: q1.drops.saturating_sub(q0.drops),
        overlimits: q1.overlimits.saturating_sub(q0.overlimits),
        requeues: q1.requeues.saturating_sub(q0.requeues),
        backlog: q1.backlog,
        qlen: q1.qlen,
    });
    if let Some(t) = tracer {
        run.tracer = Some(t.stop()?);
    }
    Ok(())
}
