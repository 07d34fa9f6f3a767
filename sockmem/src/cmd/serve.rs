//! `sockmem serve`: a Prometheus exporter. The programs aggregate `hist`'s histograms in the
//! kernel (read on each scrape) and also stream events, which keep the live sockets' gauges and
//! the drops; an HTTP server answers `/metrics` and `/healthz` until SIGTERM or SIGINT. The
//! sockets already holding send bytes at the start are in the gauges from the first scrape, as
//! sock_diag reads them (`pipeline::seed`, as for `top`).

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use sockmem_common::config::MODE_SERVE;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    attach::stats::ProgramIds,
    cli::ServeArgs,
    exporter::{self, http, Exporter},
    kernel::sampler::SocketSampler,
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer, Drive},
        groups::LiveState,
        histogram::HistMaps,
        names::Names,
        seed,
        stream::{EventStream, LossCounter},
    },
    session,
};

/// Events sorted and applied at a time: a bound on the batch's memory (a drain can hand over
/// 65,536 records, ~250 bytes each decoded).
const BATCH: usize = 4096;
/// How often silent sockets and groups out of the top N are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// decode → live socket table.
struct LiveFeed {
    live: Arc<Mutex<LiveState>>,
    exporter: Arc<Exporter>,
    names: Names,
    batch: Vec<Event>,
}

impl Consumer for LiveFeed {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Event::decode(bytes) {
            Ok(mut e) => {
                self.names.fill_value(&mut e);
                self.batch.push(e);
                if self.batch.len() >= BATCH {
                    self.flush()?;
                }
            }
            Err(err) => eprintln!("sockmem: skipping an event: {err}"),
        }
        Ok(())
    }

    /// One lock per batch; in time order, so a socket's last event is its latest.
    fn flush(&mut self) -> io::Result<()> {
        self.batch.sort_by_key(|e| e.ts_ns);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for e in self.batch.drain(..) {
            live.observe(&e);
        }
        Ok(())
    }

    /// A failure here (a map read) is said and retried next period: a daemon does not end
    /// over its housekeeping.
    fn periodic(&mut self) -> io::Result<()> {
        if let Err(e) = forget(&self.exporter) {
            eprintln!("sockmem: forgetting silent sockets and removed cgroups: {e:#}");
        }
        Ok(())
    }
}

/// Forgets silent sockets, folds cgroups gone out of the top N, re-reads the cgroup names;
/// returns (sockets forgotten, kernel entries deleted).
fn forget(exporter: &Exporter) -> anyhow::Result<(usize, usize)> {
    let keep = exporter.top_groups()?;
    let lock = || exporter.live.lock().unwrap_or_else(|p| p.into_inner());
    // Silent sockets that held bytes are looked up first (a stalled sender's next probe can be
    // 2 minutes away), outside the lock: a scrape does not wait on a dump (none when no socket
    // is asked for).
    let now = monotonic_ns();
    let silent = lock().silent_holders(now);
    // A sampler of its own each time, unlike `top`'s: a kept one holds a sock_diag socket in
    // every namespace it dumped, which keeps a container's namespace alive after the container
    // is gone, and remembers the homes of sockets never asked for again; a daemon keeps neither.
    let found = SocketSampler::new().find(&silent);
    let forgotten = {
        let mut live = lock();
        live.confirm(&found, now);
        let before = live.sockets();
        live.prune(now, &keep);
        before - live.sockets()
    };
    Ok((forgotten, exporter.prune()?))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (runtime, stops) = session::runtime()?;
    let _runtime_context = runtime.enter();
    // A daemon gives SIGHUP a meaning of its own: it does not end the run (still caught since
    // `runtime()`, so its default action, death, is never in place).
    let mut stops = stops.without_hangup();
    let mut hangups = signal(SignalKind::hangup()).context("installing a signal handler")?;
    session::check_filters(&args.filters)?;
    // Bound before any program loads: a taken port fails at once.
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    listener
        .set_nonblocking(true)
        .context("setting the listening socket non-blocking")?;
    // Port 0 asks the kernel for one: the address said below is the one it chose.
    let bound = listener
        .local_addr()
        .context("reading the listening address")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("registering the listening socket")?;
    // The programs' own BPF time is one of the metrics: statistics on for the whole run.
    let session_args = crate::cli::SessionArgs {
        stats: true,
        ..args.session.clone()
    };
    let mut session = session::start(&session::Options {
        filter: session::kernel_filter(&args.filters)?,
        args: &session_args,
        ring_size: args.ring_size,
        mode: MODE_SERVE,
        per: exporter::PER,
    })?;
    let maps = HistMaps::take(&mut session.ebpf)?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = Arc::new(LossCounter::new(&mut session.ebpf)?);
    let exporter = Arc::new(Exporter::new(
        maps,
        losses.clone(),
        ProgramIds::of(&session.ebpf),
        args.top_n as usize,
        args.idle.saturating_mul(1_000_000_000),
    ));
    let names = std::mem::replace(&mut session.names, Names::empty());
    // The sockets already holding send bytes, as `top` takes them: a sender stalled since before
    // the start makes no event until its next zero-window probe, and must count from the first
    // scrape. Read with the programs attached, so an event of one finds it seeded.
    {
        let seeded = seed::holding_send_bytes(&args.filters, &names)?;
        let now = monotonic_ns();
        let mut live = exporter.live.lock().unwrap_or_else(|p| p.into_inner());
        for x in &seeded {
            live.seed(x, now);
        }
    }
    let mut feed = LiveFeed {
        live: exporter.live.clone(),
        exporter: exporter.clone(),
        names,
        batch: Vec::with_capacity(BATCH),
    };
    let drive = Drive {
        duration: None,
        periodic: Some(PRUNE_EVERY),
        watch_stdout: false,
    };
    let server = tokio::spawn(http::serve(listener, exporter.clone()));
    let for_hangup = exporter.clone();
    let hangup_task = tokio::spawn(async move {
        // The programs, filters and address are fixed for the run: SIGHUP re-reads what can
        // change under it (the cgroup tree, for the names) and does the periodic forgetting now.
        while hangups.recv().await.is_some() {
            match forget(&for_hangup) {
                Ok((sockets, entries)) => eprintln!(
                    "sockmem: SIGHUP: re-read the cgroup names; forgot {sockets} silent sockets \
                     and {entries} histogram entries of cgroups gone (programs, filters and \
                     address stay as started)"
                ),
                Err(e) => eprintln!("sockmem: SIGHUP: {e:#}"),
            }
        }
    });
    session.go(args.session.ready_file.as_deref())?;
    eprintln!("sockmem: serving http://{bound}/metrics; SIGTERM or Ctrl-C to stop");
    runtime.block_on(drive.run(&mut session, &mut stream, &losses, &mut stops, &mut feed))?;
    server.abort();
    hangup_task.abort();
    if args.session.stats {
        session.report_stats();
    }
    eprintln!("sockmem: stopped");
    Ok(())
}
