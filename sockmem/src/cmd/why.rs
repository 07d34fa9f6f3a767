//! `sockmem why`: per socket, where the window's time went by limiting cause. Events stream as
//! for `trace` (the qdisc events of every socket: other sockets' bytes ahead in a qdisc are
//! part of the answer) into the analysis, with sock_diag samples at `--interval`; one report
//! at the end.

use std::{collections::HashMap, io, time::Duration};

use anyhow::Context as _;
use sockmem_common::{config::MODE_WHY, Hook, Per};

use crate::{
    attach::loader,
    cli::WhyArgs,
    kernel::{
        owners,
        sampler::{self, SocketSampler},
    },
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer, Drive},
        filter::SocketFilter,
        names::Names,
        seed,
        stream::{EventStream, LossCounter},
        why::{
            report::{RunFacts, WhyReport},
            Analyzer,
        },
    },
    render::{
        why::{write_json, write_text},
        Finish as _,
    },
    session,
};

/// decode → (batch, in time order) → analysis; sock_diag samples on the period.
struct WhyPipeline {
    analyzer: Analyzer,
    sampler: SocketSampler,
    batch: Vec<Event>,
    names: Names,
    events: u64,
}

impl Consumer for WhyPipeline {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Event::decode(bytes) {
            Ok(mut e) => {
                self.names.fill(&mut e);
                self.batch.push(e);
                self.events += 1;
            }
            Err(err) => eprintln!("sockmem: skipping an event: {err}"),
        }
        Ok(())
    }

    /// The ring holds each CPU's events in order, interleaved: the qdisc model needs them in
    /// time order.
    fn flush(&mut self) -> io::Result<()> {
        self.batch.sort_by_key(|e| e.ts_ns);
        for e in self.batch.drain(..) {
            self.analyzer.observe(&e);
        }
        Ok(())
    }

    fn periodic(&mut self) -> io::Result<()> {
        let samples = self.sampler.sample(&self.analyzer.wanted());
        let now = monotonic_ns();
        let sampler = &mut self.sampler;
        self.analyzer
            .sample(now, &samples, sampler::memory_pressure(), &mut |ns| {
                sampler.limit_output_bytes(ns)
            });
        Ok(())
    }
}

pub fn run(args: WhyArgs) -> anyhow::Result<()> {
    let (runtime, mut stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    session::check_filters(&args.filters)?;
    if let Some(d) = args.duration {
        // Two samples at least, or no interval can be judged.
        anyhow::ensure!(
            d >= Duration::from_millis(2 * args.interval),
            "--duration {:.3} s is shorter than two --interval {} ms samples: nothing could be \
             judged; give a longer duration or a shorter interval",
            d.as_secs_f64(),
            args.interval
        );
    }
    let mut out = session::open_output(args.output.as_deref())?;
    // The filters run in the kernel, but for the qdisc events (MODE_WHY).
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &args.session,
        ring_size: args.ring_size,
        mode: MODE_WHY,
        per: Per::Total,
    })?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = LossCounter::new(&mut session.ebpf)?;
    let unavailable: HashMap<Hook, String> = session
        .reports
        .iter()
        .filter(|r| r.chosen.is_none())
        .map(|r| (r.hook, r.why_unavailable()))
        .collect();
    let attached = |h: Hook| !unavailable.contains_key(&h);
    let mut pipe = WhyPipeline {
        analyzer: Analyzer::new(
            SocketFilter::new(&args.filters)?,
            &attached,
            &loader::kernel_release(),
        ),
        sampler: SocketSampler::new(),
        batch: Vec::new(),
        events: 0,
        names: std::mem::replace(&mut session.names, Names::empty()),
    };
    let interval = Duration::from_millis(args.interval);
    let drive = Drive {
        duration: args.duration,
        periodic: Some(interval),
        watch_stdout: false,
    };
    let started = monotonic_ns();
    // The sockets already there, watched from the first interval (a stalled one may never
    // make an event), before the ready file says the run has begun.
    let existing = seed::existing(&mut pipe.sampler, &pipe.names);
    pipe.analyzer.seed(&existing, started);
    pipe.periodic()?;
    session.go(args.session.ready_file.as_deref())?;
    eprintln!(
        "sockmem: watching{}; Ctrl-C to report",
        args.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default()
    );
    runtime.block_on(async {
        drive
            .run(&mut session, &mut stream, &losses, &mut stops, &mut pipe)
            .await?;
        // The last interval, up to now.
        pipe.periodic()?;
        anyhow::Ok(())
    })?;
    let window_s = monotonic_ns().saturating_sub(started) as f64 / 1e9;
    let lost_events: u64 = losses.per_cpu()?.iter().sum();
    let missed = crate::attach::stats::missed(&session.ebpf);
    session.report_stats();
    pipe.analyzer.finish();
    let unnamed = pipe.analyzer.unnamed();
    pipe.analyzer.name_holders(&owners::socket_owners(&unnamed));
    let hooks = session::hooks_json(&session.reports);
    drop(stream);
    drop(session);
    let sampler = &pipe.sampler;
    let report = WhyReport::build(
        &pipe.analyzer,
        &RunFacts {
            kernel: loader::kernel_release(),
            window_s,
            interval_ms: args.interval,
            hooks,
            unavailable: &|h| unavailable.get(&h).cloned(),
            netns_label: &|ns| sampler.label(ns).map(str::to_owned),
            lost_events,
        },
    );
    if args.json {
        write_json(&mut out, &report)?;
    } else {
        write_text(&mut out, &report)?;
    }
    out.finish().context("writing the report")?;
    eprintln!(
        "sockmem: {} events from {} sockets in {window_s:.1} s, {lost_events} lost{}",
        pipe.events,
        pipe.analyzer.seen(),
        crate::render::missed_note(missed.as_ref())
    );
    Ok(())
}
