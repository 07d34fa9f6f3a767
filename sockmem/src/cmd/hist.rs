//! `sockmem hist`: aggregate in the kernel for a while, then print latency and size histograms.

use std::{
    io::{self, IsTerminal},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sockmem_common::config::MODE_HIST;
use tokio::time::{interval, sleep_until, MissedTickBehavior};

use crate::{
    attach::loader,
    cli::{HistArgs, PerArg},
    kernel::{cgroups::CgroupNames, netns::NetnsNames},
    pipeline::histogram::HistMaps,
    render::{
        hist::{write_json, write_text, JsonContext},
        Finish as _,
    },
    session,
};

pub fn run(args: HistArgs) -> anyhow::Result<()> {
    let (runtime, stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    let per = args
        .per
        .map(PerArg::to_kernel)
        .unwrap_or(sockmem_common::Per::Total);
    session::check_filters(&args.filters)?;
    // Open the output first: a bad path should fail before any program runs.
    let mut out = session::open_output(args.output.as_deref())?;
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &args.session,
        ring_size: 4096,
        mode: MODE_HIST,
        per,
    })?;
    let maps = HistMaps::take(&mut session.ebpf)?;
    session.go(args.session.ready_file.as_deref())?;
    let started = Instant::now();
    runtime.block_on(wait(args.duration, stops))?;
    let elapsed = started.elapsed().as_secs_f64();
    // Stop every program at once, then detach, so the numbers are one consistent snapshot.
    session.set_running(false)?;
    runtime.block_on(session.finish_debug_log());
    let reports = std::mem::take(&mut session.reports);
    let bpf_stats = session.report_stats();
    let missed_per_hook = crate::attach::stats::missed(&session.ebpf);
    drop(session);
    let mut report = maps.read(per)?;
    report.name_keys(&mut CgroupNames::live(), &mut NetnsNames::live());

    let kernel = loader::kernel_release();
    let hooks: Vec<String> = session::hook_lines(&reports)
        .into_iter()
        .filter(|h| h.unavailable.is_none())
        .map(|h| format!("{} via {}", h.hook, h.backend))
        .collect();
    if args.json {
        let hooks = session::hooks_json(&reports);
        let ctx = JsonContext {
            per: args.per.map(PerArg::name).unwrap_or("total"),
            duration_s: elapsed,
            kernel: &kernel,
            hooks: &hooks,
            bpf_stats: bpf_stats.as_deref(),
            missed_per_hook: missed_per_hook.as_ref(),
        };
        write_json(&mut out, &ctx, &report)?;
    } else {
        let header = format!(
            "sockmem hist: {elapsed:.1} s on kernel {kernel}; hooks: {}",
            hooks.join(", ")
        );
        write_text(&mut out, &header, &report, missed_per_hook.as_ref())?;
    }
    out.finish().context("writing the histograms")
}

/// Until the duration ends, Ctrl-C or SIGTERM; a countdown on stderr when it is a terminal.
async fn wait(duration: Option<Duration>, mut stops: session::Stops) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let deadline = start + duration.unwrap_or(Duration::from_secs(100 * 365 * 86400));
    let tty = io::stderr().is_terminal();
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if !tty {
        eprintln!("sockmem: aggregating; Ctrl-C to print");
    }
    loop {
        tokio::select! {
            _ = stops.recv() => break,
            _ = sleep_until(deadline) => break,
            _ = tick.tick(), if tty => {
                let done = start.elapsed().as_secs();
                match duration {
                    Some(d) => eprint!("\rsockmem: {done} of {} s; Ctrl-C to print now ", d.as_secs()),
                    None => eprint!("\rsockmem: {done} s; Ctrl-C to print "),
                }
            }
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    Ok(())
}
