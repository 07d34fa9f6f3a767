//! `sockmem trace`: load → attach → stream events through decode → deltas → sink, until the
//! duration ends, Ctrl-C or SIGTERM.

use std::{io, time::Instant};

use anyhow::Context as _;

use std::collections::{HashMap, HashSet};

use sockmem_common::{config::MODE_TRACE, Hook, Per};

use crate::{
    attach::loader,
    cli::TraceArgs,
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer, Drive},
        names::Names,
        snapshot::{self, Agreement, Snapshot},
        stream::{EventStream, LossCounter},
        track::{SocketState, SocketTracker},
    },
    render::{background::Background, json::JsonSink, text::TextSink, RunInfo, Sink, Summary},
    session,
};

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

impl Consumer for Pipeline {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        Pipeline::record(self, bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
    /// `--snapshot SECS`.
    fn periodic(&mut self) -> io::Result<()> {
        self.snapshot()
    }
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
