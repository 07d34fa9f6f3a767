//! `sockmem record`: the programs as for `trace`, every raw event and the kernel's view of the
//! traced sockets into a recording (see `recording`), until the duration ends, Ctrl-C or
//! SIGTERM. The file is in place once the run ends, whichever way it ends short of SIGKILL
//! (then what was written stays in the temporary file beside it, readable).

use std::time::Instant;

use sockmem_common::{config::MODE_TRACE, Per, SockEvent};

use crate::{
    attach::loader,
    cli::RecordArgs,
    pipeline::{
        drive::Drive,
        names::Names,
        stream::{EventStream, LossCounter},
    },
    recording::{
        format::{ClockAnchor, Header},
        recorder::Recorder,
    },
    session,
};

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let (runtime, mut stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    session::check_filters(&args.filters)?;
    // Checked before any program runs. Written to a temporary file beside FILE, renamed over
    // it when the run ends (`output::OutputFile`), rather than at FILE from the start: a start
    // that fails, and also a run killed with SIGKILL, leave an older recording at FILE as it
    // was. A killed run's events are not lost for that: they are in the temporary file,
    // handed to it at least every second (`Recorder::flush`), readable up to where it ends
    // (`Reader::open`), and opening the missing FILE names it (`recording::open`).
    let out = session::open_output(Some(&args.output))?;
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &args.session,
        ring_size: args.ring_size,
        mode: MODE_TRACE,
        per: Per::Total,
    })?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = LossCounter::new(&mut session.ebpf)?;
    let header = Header {
        sockmem_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: loader::kernel_release(),
        ring_size: args.ring_size,
        hooks: session::hook_lines(&session.reports)
            .iter()
            .map(Into::into)
            .collect(),
        filters: (&args.filters).into(),
        event_size: std::mem::size_of::<SockEvent>() as u32,
        // `trace`'s time 0 is taken here too.
        anchor: ClockAnchor::now(),
        snapshot_every_s: args.snapshot.map(|d| d.as_secs_f64()),
    };
    let attached = session
        .reports
        .iter()
        .filter(|r| r.chosen.is_some())
        .map(|r| r.hook)
        .collect();
    let mut rec = Recorder::new(out, &header, attached)?;
    let started = Instant::now();
    session.go(args.session.ready_file.as_deref())?;
    eprintln!(
        "sockmem: recording to `{}`{}; Ctrl-C to end",
        args.output.display(),
        args.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default()
    );
    let drive = Drive {
        duration: args.duration,
        periodic: args.snapshot,
        watch_stdout: false,
    };
    let outcome = runtime.block_on(async {
        drive
            .run(&mut session, &mut stream, &losses, &mut stops, &mut rec)
            .await?;
        rec.snapshot()?;
        anyhow::Ok(())
    });
    let lost_per_cpu = losses.per_cpu().unwrap_or_else(|e| {
        eprintln!("sockmem: warning: {e:#}; the recording counts no lost events");
        Vec::new()
    });
    let missed = crate::attach::stats::missed(&session.ebpf);
    let bpf_stats = session.report_stats();
    let names = std::mem::replace(&mut session.names, Names::empty());
    drop(stream);
    drop(session);
    let (events, lost) = (rec.events(), lost_per_cpu.iter().sum::<u64>());
    let elapsed_s = started.elapsed().as_secs_f64();
    // What was recorded is kept even when the run ended on an error.
    rec.finish(&names, lost_per_cpu, elapsed_s, bpf_stats)
        .map_err(|e| anyhow::anyhow!(e).context("writing the recording"))?;
    outcome?;
    eprintln!(
        "sockmem: recorded {events} events in {elapsed_s:.1} s to `{}`, {lost} lost{}",
        args.output.display(),
        crate::render::missed_note(missed.as_ref())
    );
    Ok(())
}
