//! `trace`'s path for each record: decode → names → (filter) → per-socket deltas → sink, and the
//! snapshots among the events. One path for a live run and for a recording replayed (`trace
//! --input`), so both print the same lines for the same events.

use std::{
    collections::{HashMap, HashSet},
    io,
};

use sockmem_common::Hook;

use crate::{
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer},
        filter::EventFilter,
        names::Names,
        snapshot::{self, Agreement, Snapshot},
        track::{SocketState, SocketTracker},
    },
    render::Sink,
};

pub struct TracePipeline {
    pub tracker: SocketTracker,
    pub sink: Box<dyn Sink>,
    /// Time 0 of `time_s` (CLOCK_MONOTONIC ns).
    start_ns: u64,
    /// Events handed to the sink.
    pub events: u64,
    /// Hooks that attached (what a snapshot's difference can be explained by).
    attached: HashSet<Hook>,
    /// The last snapshot of each socket, by socket id.
    snapshots: HashMap<u64, Snapshot>,
    names: Names,
    /// Filters applied here (a replay); a live run's are applied in the kernel.
    filter: Option<EventFilter>,
}

impl Consumer for TracePipeline {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        TracePipeline::record(self, bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
    /// `--snapshot SECS`.
    fn periodic(&mut self) -> io::Result<()> {
        self.snapshot()
    }
}

impl TracePipeline {
    pub fn new(
        sink: Box<dyn Sink>,
        start_ns: u64,
        attached: HashSet<Hook>,
        names: Names,
        filter: Option<EventFilter>,
    ) -> TracePipeline {
        TracePipeline {
            tracker: SocketTracker::default(),
            sink,
            start_ns,
            events: 0,
            attached,
            snapshots: HashMap::new(),
            names,
            filter,
        }
    }

    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Event::decode(bytes) {
            Ok(mut e) => {
                // Named first: `--cgroup`/`--netns` after the fact match the names.
                self.names.fill(&mut e);
                if let Some(f) = &mut self.filter {
                    if !f.admits(&e) {
                        return Ok(());
                    }
                }
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
    pub fn snapshot(&mut self) -> io::Result<()> {
        let now = monotonic_ns();
        let attached = |h: Hook| self.attached.contains(&h);
        for s in snapshot::take(&self.tracker, &attached, now) {
            self.put_snapshot(s, now)?;
        }
        Ok(())
    }

    /// A snapshot taken at `time_ns` (a recording's); one of a socket the filters left out is
    /// left out too.
    pub fn put_snapshot(&mut self, s: Snapshot, time_ns: u64) -> io::Result<()> {
        let time_s = time_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let Some(st) = self.tracker.get(s.sock_id) else {
            return Ok(());
        };
        self.sink.snapshot(&s, st, time_s)?;
        if let Agreement::Differs(why) = &s.agreement {
            eprintln!(
                "sockmem: socket {} ({} > {}): the kernel's counters differ from its last \
                 event: {why}",
                s.sock_id, st.id.local, st.id.remote
            );
        }
        self.snapshots.insert(s.sock_id, s);
        Ok(())
    }

    /// At exit: every socket seen, with its last snapshot.
    pub fn socket_table(&mut self) -> io::Result<()> {
        let rows: Vec<(&SocketState, Option<&Snapshot>)> = self
            .tracker
            .states()
            .into_iter()
            .map(|st| (st, self.snapshots.get(&st.id.sock_id)))
            .collect();
        self.sink.sockets(&rows)
    }
}
