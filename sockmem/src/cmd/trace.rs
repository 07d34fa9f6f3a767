//! `sockmem trace`: load → attach → stream events through decode → deltas → sink, until the
//! duration ends, Ctrl-C or SIGTERM.

use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::time::{interval, sleep_until, MissedTickBehavior};

use std::collections::{HashMap, HashSet};

use sockmem_common::{config::MODE_TRACE, Hook, Per};

use crate::{
    attach::loader,
    cli::TraceArgs,
    pipeline::{
        decode::Event,
        names::Names,
        snapshot::{self, Agreement, Snapshot},
        stream::{EventStream, LossCounter},
        track::{SocketState, SocketTracker},
    },
    render::{background::Background, json::JsonSink, text::TextSink, RunInfo, Sink, Summary},
    session,
};

/// How often the ring buffer is drained when the programs do not wake the reader.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // CLOCK_MONOTONIC is what bpf_ktime_get_ns() reads.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// decode → per-socket deltas → sink, for each record.
struct Pipeline {
    tracker: SocketTracker,
    sink: Box<dyn Sink>,
    start_ns: u64,
    events: u64,
    /// Hooks that attached (what a snapshot's difference can be explained by).
    attached: HashSet<Hook>,
    /// The last snapshot of each socket, by socket id.
    snapshots: HashMap<u64, Snapshot>,
    names: Names,
}

impl Pipeline {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Event::decode(bytes) {
            Ok(mut e) => {
                self.names.fill(&mut e);
                let d = self.tracker.observe(&e);
                let time_s = e.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9;
                self.events += 1;
                self.sink.event(&e, d, time_s)
            }
            // A record we cannot read is a sockmem bug; say so and go on.
            Err(err) => {
                eprintln!("sockmem: skipping an event: {err}");
                Ok(())
            }
        }
    }

    /// The kernel's view of every live traced socket, into the output.
    fn snapshot(&mut self) -> io::Result<()> {
        let now = monotonic_ns();
        let attached = |h: Hook| self.attached.contains(&h);
        let taken = snapshot::take(&self.tracker, &attached, now);
        let time_s = now.saturating_sub(self.start_ns) as f64 / 1e9;
        for s in taken {
            if let Some(st) = self.tracker.get(s.sock_id) {
                self.sink.snapshot(&s, st, time_s)?;
                if let Agreement::Differs(why) = &s.agreement {
                    eprintln!(
                        "sockmem: socket {} ({} > {}): the kernel's counters differ from its last \
                         event: {why}",
                        s.sock_id, st.local, st.remote
                    );
                }
            }
            self.snapshots.insert(s.sock_id, s);
        }
        Ok(())
    }

    /// At exit: every socket seen, with its last snapshot.
    fn socket_table(&mut self) -> io::Result<()> {
        let rows: Vec<(&SocketState, Option<&Snapshot>)> = self
            .tracker
            .states()
            .into_iter()
            .map(|st| (st, self.snapshots.get(&st.sock_id)))
            .collect();
        self.sink.sockets(&rows)
    }
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    let runtime = session::runtime()?;
    let _runtime_context = runtime.enter();
    session::check_filters(&args.filters)?;
    // Checked before any program runs; the file is in place only when the run succeeds.
    let out = session::open_output(args.output.as_deref())?;
    let mut session = session::start(&session::Options {
        filter: args.filters.to_kernel().map_err(anyhow::Error::msg)?,
        args: &args.session,
        ring_size: args.ring_size,
        mode: MODE_TRACE,
        per: Per::Total,
    })?;
    let mut stream = EventStream::new(&mut session.ebpf)?;
    let losses = LossCounter::new(&mut session.ebpf)?;

    // Written on a thread of its own: a stalled write must not stop the ring being drained.
    let out = Background::new(out).context("starting the output's writing thread")?;
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(out, args.kernel_addrs))
    } else {
        Box::new(TextSink::new(out))
    };

    let info = RunInfo {
        kernel: loader::kernel_release(),
        ring_size: args.ring_size,
        hooks: session::hook_lines(&session.reports),
    };
    let start_ns = monotonic_ns();
    let started = Instant::now();
    sink.header(&info)?;
    sink.flush()?;
    let mut stops = session::Stops::new()?;
    session.go(args.session.ready_file.as_deref())?;
    eprintln!(
        "sockmem: tracing{}; Ctrl-C to end",
        args.duration
            .map(|d| format!(" for {:.1} s", d.as_secs_f64()))
            .unwrap_or_default()
    );

    let mut pipe = Pipeline {
        tracker: SocketTracker::default(),
        sink,
        start_ns,
        events: 0,
        attached: session
            .reports
            .iter()
            .filter(|r| r.chosen.is_some())
            .map(|r| r.hook)
            .collect(),
        snapshots: HashMap::new(),
        names: std::mem::replace(&mut session.names, Names::empty()),
    };
    let outcome = runtime.block_on(async {
        let to_stdout = args.output.is_none();
        let deadline = tokio::time::Instant::now()
            + args.duration.unwrap_or(Duration::from_secs(100 * 365 * 86400));
        // The programs wake this loop only when the ring is filling up (see the eBPF sink's
        // `wakeup_flag`): at any other rate it drains on this timer, so events are written
        // within about DRAIN_EVERY of happening, in large batches.
        let mut drain_tick = interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut lost_seen = 0u64;
        let mut snapshot_tick = interval(args.snapshot.unwrap_or(Duration::from_secs(3600)));
        snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        snapshot_tick.tick().await;
        loop {
            tokio::select! {
                r = stream.readable() => {
                    r?;
                    stream.drain(|b| pipe.record(b))?;
                    pipe.sink.flush()?;
                }
                _ = drain_tick.tick() => {
                    if stream.drain(|b| pipe.record(b))? > 0 {
                        pipe.sink.flush()?;
                    }
                }
                _ = stops.recv() => break,
                _ = sleep_until(deadline) => break,
                _ = snapshot_tick.tick(), if args.snapshot.is_some() => {
                    stream.drain(|b| pipe.record(b))?;
                    pipe.snapshot()?;
                    pipe.sink.flush()?;
                }
                _ = tick.tick() => {
                    // `sockmem trace | head -1` with nothing to print: notice the reader left.
                    if to_stdout && session::stdout_reader_gone() {
                        return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
                    }
                    let total: u64 = losses.per_cpu().map(|v| v.iter().sum()).unwrap_or(0);
                    if total > lost_seen {
                        eprintln!(
                            "sockmem: lost {} events (ring buffer full, {total} so far); a larger --ring-size or narrower filters help",
                            total - lost_seen
                        );
                        lost_seen = total;
                    }
                }
            }
        }
        // Stop producing, then print whatever is already in the ring buffer: it was asked for.
        session.set_running(false)?;
        session.finish_debug_log().await;
        stream.drain(|b| pipe.record(b))?;
        // The settled truth of the sockets still alive, and the per-socket table.
        pipe.snapshot()?;
        pipe.socket_table()?;
        anyhow::Ok(())
    });
    let lost_per_cpu = losses.per_cpu()?;
    let bpf_stats = session.report_stats();
    drop(stream);
    drop(session);
    let Pipeline {
        tracker,
        mut sink,
        events,
        ..
    } = pipe;
    let summary = Summary {
        events,
        lost: lost_per_cpu.iter().sum(),
        lost_per_cpu,
        sockets: tracker.sockets(),
        elapsed_s: started.elapsed().as_secs_f64(),
        bpf_stats,
    };
    outcome?;
    sink.summary(&summary)?;
    sink.finish()?;
    eprintln!(
        "sockmem: {} events from {} sockets in {:.1} s, {} lost",
        summary.events, summary.sockets, summary.elapsed_s, summary.lost
    );
    Ok(())
}
