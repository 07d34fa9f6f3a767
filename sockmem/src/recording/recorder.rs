//! `record`'s consumer of the ring buffer: every record to the file as it is, and enough of each
//! decoded to know the traced sockets (for snapshots) and the drop sites the trailer must name.

use std::{
    collections::{BTreeSet, HashSet},
    io,
    time::{Duration, Instant},
};

use sockmem_common::Hook;

use super::{
    format::{Header, RecordedAttribution, RecordedSnapshot, Trailer},
    writer::Writer,
};
use crate::{
    attach::stats::HookCost,
    kernel::{cgroups::CgroupNames, netns::NetnsNames},
    pipeline::{
        decode::Event,
        drive::{monotonic_ns, Consumer},
        names::Names,
        snapshot,
        track::SocketTracker,
    },
    render::{background::Background, Finish},
    session::Output,
};

pub struct Recorder {
    /// Written on a thread of its own, in large chunks: a slow disk must not stop the ring
    /// buffer being drained.
    writer: Writer<Background<Output>>,
    tracker: SocketTracker,
    /// Hooks that attached (what a snapshot's difference can be explained by).
    attached: HashSet<Hook>,
    /// Every code address an `skb_drop` event named.
    drop_sites: BTreeSet<u64>,
    /// Named at first sight of each id (a cgroup may be gone by the end), for the trailer.
    cgroups: CgroupNames,
    netns: NetnsNames,
    cgroup_ids: BTreeSet<u64>,
    netns_inos: BTreeSet<u64>,
    /// When what was written last went to the file.
    flushed: Instant,
}

/// A recording is a flight recorder: a `record` killed with SIGKILL (no trailer) leaves what
/// reached the file readable (`Reader::open`). Handing it over this often keeps that to all
/// but about the last second's events, in chunks still large at any rate that matters.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Consumer for Recorder {
    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.event(bytes)?;
        // One that does not decode is kept as it came; `trace --input` says it skips it.
        if let Ok(e) = Event::decode(bytes) {
            self.tracker.observe(&e);
            if e.hook == Hook::SkbDrop && e.aux != 0 {
                self.drop_sites.insert(e.aux);
            }
            if e.cgroup_id != 0 && self.cgroup_ids.insert(e.cgroup_id) {
                self.cgroups.path(e.cgroup_id);
            }
            if self.netns_inos.insert(e.netns_ino as u64) {
                self.netns.named(e.netns_ino as u64);
            }
        }
        Ok(())
    }

    /// At most every [`FLUSH_EVERY`]: between, the writing thread gets full chunks.
    fn flush(&mut self) -> io::Result<()> {
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.writer.flush()?;
            self.flushed = Instant::now();
        }
        Ok(())
    }

    /// `--snapshot SECS`.
    fn periodic(&mut self) -> io::Result<()> {
        self.snapshot()
    }
}

impl Recorder {
    pub fn new(out: Output, header: &Header, attached: HashSet<Hook>) -> io::Result<Recorder> {
        Ok(Recorder {
            writer: Writer::new(Background::new(out)?, header)?,
            tracker: SocketTracker::default(),
            attached,
            drop_sites: BTreeSet::new(),
            cgroups: CgroupNames::live(),
            netns: NetnsNames::live(),
            cgroup_ids: BTreeSet::new(),
            netns_inos: BTreeSet::new(),
            flushed: Instant::now(),
        })
    }

    /// The kernel's view of every live traced socket, into the recording.
    pub fn snapshot(&mut self) -> io::Result<()> {
        let now = monotonic_ns();
        let attached = |h: Hook| self.attached.contains(&h);
        for s in snapshot::take(&self.tracker, &attached, now) {
            self.writer.snapshot(&RecordedSnapshot::new(&s, now))?;
        }
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.writer.events()
    }

    /// Writes the trailer, then puts the file in place.
    pub fn finish(
        self,
        names: &Names,
        lost_per_cpu: Vec<u64>,
        elapsed_s: f64,
        bpf_stats: Option<Vec<HookCost>>,
    ) -> io::Result<()> {
        let locations = self
            .drop_sites
            .iter()
            .filter_map(|&a| Some((a, names.location(a)?)))
            .collect();
        let trailer = Trailer {
            lost_per_cpu,
            elapsed_s,
            enums: names.enum_tables(),
            locations,
            bpf_stats,
            attribution: Some(RecordedAttribution {
                cgroups: self.cgroups.table(self.cgroup_ids.iter().copied()),
                netns: self.netns.table(self.netns_inos.iter().copied()),
            }),
            ..Trailer::default()
        };
        self.writer.finish(trailer)?.finish()
    }
}
