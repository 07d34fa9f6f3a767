//! `sockmem trace`: load → attach → stream events through decode → deltas → sink, until the
//! duration ends, Ctrl-C or SIGTERM.

use std::time::Instant;

use anyhow::Context as _;

use sockmem_common::{config::MODE_TRACE, Per};

use crate::{
    attach::loader,
    cli::TraceArgs,
    pipeline::{
        drive::Drive,
        names::Names,
        stream::{EventStream, LossCounter},
        trace::TracePipeline,
    },
    recording::{self, format::ClockAnchor},
    render::{background::Background, time::Clock, trace_sink, RunInfo, Summary},
    session,
};

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    if let Some(input) = &args.input {
        if let Some(out) = &args.output {
            crate::output::refuse_input(out, input)?;
        }
        return recording::replay::run(&args, input);
    }
    let (runtime, mut stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    session::check_filters(&args.filters)?;
    // Checked before any program runs; the file is in place only when the run succeeds.
    let out = session::open_output(args.output.as_deref())?;
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &args.session,
        ring_size: args.ring_size,
        mode: MODE_TRACE,
        per: Per::Total,
    })?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = LossCounter::new(&mut session.ebpf)?;

    // Written on a thread of its own: a stalled write must not stop the ring being drained.
    let out = Background::new(out).context("starting the output's writing thread")?;
    // Time 0, and the wall clock's anchor (`--time wall`, the JSON header).
    let anchor = ClockAnchor::now();
    let clock = Clock {
        mode: args.time,
        anchor,
    };
    let mut sink = trace_sink(out, args.json, args.kernel_addrs, clock);

    let info = RunInfo {
        kernel: loader::kernel_release(),
        ring_size: args.ring_size,
        hooks: session::hook_lines(&session.reports),
    };
    let start_ns = anchor.monotonic_ns;
    let started = Instant::now();
    sink.header(&info)?;
    sink.flush()?;
    session.go(args.session.ready_file.as_deref())?;
    eprintln!(
        "sockmem: tracing{}; Ctrl-C to end",
        args.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default()
    );

    let mut pipe = TracePipeline::new(
        sink,
        start_ns,
        session
            .reports
            .iter()
            .filter(|r| r.chosen.is_some())
            .map(|r| r.hook)
            .collect(),
        std::mem::replace(&mut session.names, Names::empty()),
        None,
    );
    let drive = Drive {
        duration: args.duration,
        periodic: args.snapshot,
        watch_stdout: args.output.is_none(),
    };
    let outcome = runtime.block_on(async {
        drive
            .run(&mut session, &mut stream, &losses, &mut stops, &mut pipe)
            .await?;
        // The settled truth of the sockets still alive, and the per-socket table.
        pipe.snapshot()?;
        pipe.socket_table()?;
        anyhow::Ok(())
    });
    let lost_per_cpu = losses.per_cpu()?;
    let missed_per_hook = crate::attach::stats::missed(&session.ebpf);
    let bpf_stats = session.report_stats();
    drop(stream);
    drop(session);
    let TracePipeline {
        tracker,
        mut sink,
        events,
        ..
    } = pipe;
    let summary = Summary {
        events,
        lost: lost_per_cpu.iter().sum(),
        lost_per_cpu,
        missed_per_hook,
        sockets: tracker.sockets(),
        elapsed_s: started.elapsed().as_secs_f64(),
        bpf_stats,
    };
    outcome?;
    sink.summary(&summary)?;
    sink.finish()?;
    eprintln!(
        "sockmem: {} events from {} sockets in {:.1} s, {} lost{}",
        summary.events,
        summary.sockets,
        summary.elapsed_s,
        summary.lost,
        crate::render::missed_note(summary.missed_per_hook.as_ref())
    );
    Ok(())
}
