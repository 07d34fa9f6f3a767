//! `sockmem top`: events stream as for `trace` into the live per-socket table, which is read out
//! at every `--interval` onto the screen (or as plain lines when standard output is not a
//! terminal), until `q`, Ctrl-C, SIGTERM or the duration's end. The sockets already holding
//! send bytes at the start (a stalled sender may make no event for minutes) are in the table
//! from the first refresh, as sock_diag reads them (`pipeline::seed`, as for `why`).

use std::{io, time::Instant};

use sockmem_common::{config::MODE_TRACE, Per};

use crate::{
    cli::TopArgs,
    kernel::sampler::SocketSampler,
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer, Drive},
        live::LiveTable,
        names::Names,
        seed,
        stream::{EventStream, LossCounter},
    },
    render::top::{Lines, Screen, TopSink, View},
    session,
};

/// decode → names → table; the table onto the sink at each refresh, keys in between.
struct TopPipeline<'a> {
    table: LiveTable,
    batch: Vec<Event>,
    names: Names,
    sink: Box<dyn TopSink>,
    losses: &'a LossCounter,
    started: Instant,
    /// When the last block was shown.
    shown: Instant,
    /// Looks up silent sockets that held bytes before the table forgets them.
    sampler: SocketSampler,
}

impl Consumer for TopPipeline<'_> {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Event::decode(bytes) {
            Ok(mut e) => {
                self.names.fill(&mut e);
                self.batch.push(e);
            }
            Err(err) => eprintln!("sockmem: skipping an event: {err}"),
        }
        Ok(())
    }

    /// The ring holds each CPU's events in order, interleaved: a qdisc's enqueue must come
    /// before its dequeue.
    fn flush(&mut self) -> io::Result<()> {
        self.batch.sort_by_key(|e| e.ts_ns);
        for e in self.batch.drain(..) {
            self.table.observe(&e);
        }
        Ok(())
    }

    fn periodic(&mut self) -> io::Result<()> {
        let lost = self
            .losses
            .per_cpu()
            .map(|v| v.iter().sum())
            .unwrap_or_default();
        let now = monotonic_ns();
        // A stalled sender's next probe can be 2 minutes away: silence alone does not say
        // it is gone, and a destroy a kernel-side filter hid (or a lost event) must not pin it.
        // No dump when none is silent.
        let found = self.sampler.find(&self.table.silent_holders(now));
        self.table.confirm(&found, now);
        let r = self.table.refresh(now, lost);
        self.shown = Instant::now();
        self.sink.show(r, self.started.elapsed().as_secs_f64())
    }

    fn poll(&mut self) -> io::Result<bool> {
        self.sink.keys()
    }
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let (runtime, mut stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    session::check_filters(&args.filters)?;
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &args.session,
        ring_size: args.ring_size,
        mode: MODE_TRACE,
        per: Per::Total,
    })?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = LossCounter::new(&mut session.ebpf)?;
    let view = View {
        sort: args.sort,
        ..View::default()
    };
    let on_terminal = Screen::wanted() && !args.json;
    let names = std::mem::replace(&mut session.names, Names::empty());
    let mut table = LiveTable::new(monotonic_ns());
    // The sockets already holding send bytes, before the ready file says the run has begun.
    let now = monotonic_ns();
    for x in seed::holding_send_bytes(&args.filters, &names)? {
        table.seed(&x, now);
    }
    session.go(args.session.ready_file.as_deref())?;
    if !on_terminal {
        eprintln!(
            "sockmem: top, a block every {:.1} s; Ctrl-C to end",
            args.interval.as_secs_f64()
        );
    }
    let sink: Box<dyn TopSink> = if on_terminal {
        Box::new(Screen::enter(view)?)
    } else {
        Box::new(Lines::new(session::open_output(None)?, view, args.json))
    };
    let mut pipe = TopPipeline {
        table,
        batch: Vec::new(),
        names,
        sink,
        losses: &losses,
        started: Instant::now(),
        shown: Instant::now(),
        sampler: SocketSampler::new(),
    };
    let drive = Drive {
        duration: args.duration,
        periodic: Some(args.interval),
        watch_stdout: !on_terminal,
    };
    let mut outcome =
        runtime.block_on(drive.run(&mut session, &mut stream, &losses, &mut stops, &mut pipe));
    // A run's end races its last refresh (`-d 5` showed 4 blocks): a run that lasted its
    // duration shows its last interval, with every event read, unless a block just did.
    let lasted = args.duration.is_some_and(|d| pipe.started.elapsed() >= d);
    if outcome.is_ok() && lasted && pipe.shown.elapsed() > args.interval / 2 {
        outcome = pipe.periodic().map_err(Into::into);
    }
    // The screen is given back before anything else is said.
    let finished = pipe.sink.finish();
    let lost: u64 = losses.per_cpu()?.iter().sum();
    let missed = crate::attach::stats::missed(&session.ebpf);
    session.report_stats();
    outcome?;
    finished?;
    eprintln!(
        "sockmem: {} events in {:.1} s, {lost} lost{}",
        pipe.table.events(),
        pipe.started.elapsed().as_secs_f64(),
        crate::render::missed_note(missed.as_ref())
    );
    Ok(())
}
