//! A recording as per-socket time series, for `plot` and `export`: the counters as each event
//! read them, and the spans and marks the events stand for (sendmsg calls, time blocked in a
//! send call, each skb's time in the qdisc and in the driver, drops). The user's filters apply
//! as `trace --input` applies them.

use std::{
    collections::HashMap,
    io::{Read, Seek},
    net::SocketAddr,
    path::Path,
};

use anyhow::Context as _;
use sockmem_common::Hook;

use crate::{
    cli::FilterArgs,
    pipeline::why::tsq::{caps_paced, TsqLimit},
    pipeline::{
        decode::{Event, Protocol},
        filter::EventFilter,
        identity::sender_named,
        names::Names,
    },
    recording::{
        format::RecordedSnapshot,
        reader::{Item, ReadError, Reader},
    },
};

/// The counters as one event (or snapshot) read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub ts_ns: u64,
    pub queued: i32,
    pub alloc: i32,
    pub sndbuf: i32,
    /// From a snapshot (the kernel's view, `record --snapshot`), not an event.
    pub snapshot: bool,
}

/// Something that lasted from `start_ns` to `end_ns`; `value` is what the event said (a
/// sendmsg's return value, how often a send call slept, an skb's length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: u64,
    pub value: i64,
}

/// An skb dropped (`skb_drop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropMark {
    pub ts_ns: u64,
    /// The kernel's `skb_drop_reason`, named where the recording names it.
    pub reason: String,
}

/// One socket's part of the recording.
#[derive(Clone, Debug)]
pub struct SocketTimeline {
    pub sock_id: u64,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The process that called `sendmsg` on it, by the rule `report` and `trace` follow
    /// ([`sender_named`]); `None` when no event named one.
    pub sender: Option<(u32, String)>,
    /// Events of the socket that passed the filters.
    pub events: u64,
    /// One per event that read the counters (every event but those of a socket being freed)
    /// and per snapshot of it (`record --snapshot SECS`: the kernel's own counters then), in
    /// time order. A value holds until the next reading, and after the last one until
    /// `end_ns`.
    pub readings: Vec<Reading>,
    /// Where its last readings hold until: the socket's `sock_destroy`, else the recording's
    /// end (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    /// The socket's `sock_destroy`, when an event showed it.
    destroyed_ns: Option<u64>,
    /// `sendmsg_ret`: [return − took, return], value = the return value.
    pub sendmsg: Vec<Span>,
    /// `send_blocked`: [report − time asleep, report], value = how often it slept.
    pub blocked: Vec<Span>,
    /// `qdisc_enqueue` → `qdisc_dequeue` of one skb (paired by skb address), value = its length.
    pub qdisc: Vec<Span>,
    /// `driver_done`: [done − time in the driver, done], value = its length.
    pub driver: Vec<Span>,
    pub drops: Vec<DropMark>,
    /// The largest truesize of the skbs it handed down (what TSQ weighs).
    pub truesize_max: u64,
    /// TCP Small Queues' limit at each snapshot of the recording (`record --snapshot SECS`),
    /// computed as the kernel does from the snapshot's pacing rate and
    /// `tcp_limit_output_bytes`: (CLOCK_MONOTONIC ns, bytes).
    pub tsq_limit: Vec<(u64, u64)>,
}

impl SocketTimeline {
    fn new(e: &Event) -> SocketTimeline {
        SocketTimeline {
            sock_id: e.sock_id,
            protocol: e.protocol,
            local: e.local,
            remote: e.remote,
            sender: None,
            events: 0,
            readings: Vec::new(),
            end_ns: 0,
            destroyed_ns: None,
            sendmsg: Vec::new(),
            blocked: Vec::new(),
            qdisc: Vec::new(),
            driver: Vec::new(),
            drops: Vec::new(),
            truesize_max: 0,
            tsq_limit: Vec::new(),
        }
    }

    /// `tcp 198.18.0.1:40000 > 198.18.0.2:5201`
    pub fn four_tuple(&self) -> String {
        format!("{} {} > {}", self.protocol.name(), self.local, self.remote)
    }

    /// `python3 (9820)`, or `no sendmsg seen` (a receiver, or a sender that did not send
    /// while recorded: `report` shows `-` for it).
    pub fn sender_name(&self) -> String {
        match &self.sender {
            Some((tgid, comm)) => format!("{comm} ({tgid})"),
            None => "no sendmsg seen".to_owned(),
        }
    }
}

/// The sockets of a recording, in the order they were first seen.
#[derive(Debug)]
pub struct Timeline {
    /// Time 0 (CLOCK_MONOTONIC ns): where the recording started, as `trace`'s `time_s`.
    pub start_ns: u64,
    /// How long the recording ran (at least up to its last event).
    pub duration_ns: u64,
    pub kernel: String,
    pub sockets: Vec<SocketTimeline>,
    /// Events in the recording, before the filters.
    pub recorded_events: u64,
}

impl Timeline {
    /// Reads the recording at `path` (as `recording::open` does: a truncated one up to where
    /// it ends, with a warning); the filters choose the events.
    pub fn read(path: &Path, filters: &FilterArgs) -> anyhow::Result<Timeline> {
        let what = || format!("reading the recording `{}`", path.display());
        let reader = crate::recording::open(path)?;
        let filter = EventFilter::new(filters)?;
        Timeline::from_reader(reader, filter).with_context(what)
    }

    /// The events of an opened recording; the filters choose them.
    pub fn from_reader<R: Read + Seek>(
        mut reader: Reader<R>,
        filter: EventFilter,
    ) -> Result<Timeline, ReadError> {
        let (header, trailer) = (reader.header().clone(), reader.trailer().clone());
        let names = Names::recorded(
            &trailer.enums,
            &trailer.locations,
            trailer.attribution.as_ref(),
        );
        let mut b = Builder {
            filter,
            names,
            index: HashMap::new(),
            sockets: Vec::new(),
            in_qdisc: HashMap::new(),
            last_ns: header.anchor.monotonic_ns,
        };
        let caps_paced = caps_paced(&header.kernel);
        while let Some(item) = reader.next_item()? {
            match item {
                Item::Event(bytes) => match Event::decode(bytes) {
                    Ok(e) => b.event(e),
                    Err(err) => eprintln!("sockmem: skipping an event: {err}"),
                },
                Item::Snapshot(snap) => b.snapshot(&snap, caps_paced),
            }
        }
        let start_ns = header.anchor.monotonic_ns;
        let elapsed = (trailer.elapsed_s.max(0.0) * 1e9) as u64;
        let duration_ns = elapsed.max(b.last_ns.saturating_sub(start_ns));
        for s in &mut b.sockets {
            // A snapshot is written after the events drained before it, which may be younger.
            s.readings.sort_by_key(|r| r.ts_ns);
            let last = s.readings.last().map_or(0, |r| r.ts_ns);
            s.end_ns = s.destroyed_ns.unwrap_or(start_ns + duration_ns).max(last);
        }
        Ok(Timeline {
            start_ns,
            duration_ns,
            kernel: header.kernel,
            sockets: b.sockets,
            recorded_events: trailer.events,
        })
    }

    /// Nanoseconds since the recording's start.
    pub fn rel_ns(&self, ts_ns: u64) -> u64 {
        ts_ns.saturating_sub(self.start_ns)
    }
}

struct Builder {
    filter: EventFilter,
    names: Names,
    /// Socket id → index in `sockets`.
    index: HashMap<u64, usize>,
    sockets: Vec<SocketTimeline>,
    /// skb address → (socket index, enqueue time) of skbs in a qdisc.
    in_qdisc: HashMap<u64, (usize, u64)>,
    last_ns: u64,
}

impl Builder {
    /// A snapshot of a socket the filters kept: its counters as the kernel read them then (a
    /// stalled socket has few events, so these are most of what shows it held), and TSQ's
    /// limit then, where its inputs are known.
    fn snapshot(&mut self, snap: &RecordedSnapshot, caps_paced: bool) {
        let Some(&i) = self.index.get(&snap.sock_id) else {
            return;
        };
        let s = &mut self.sockets[i];
        let k = &snap.kernel;
        let counter = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        s.readings.push(Reading {
            ts_ns: snap.time_ns,
            queued: counter(k.wmem_queued),
            alloc: counter(k.wmem_alloc),
            sndbuf: counter(k.sndbuf),
            snapshot: true,
        });
        self.last_ns = self.last_ns.max(snap.time_ns);
        let Some(t) = snap.kernel.tcp.as_ref() else {
            return;
        };
        if let (Some(lob), Some(rate), true) =
            (snap.limit_output_bytes, t.pacing_rate, s.truesize_max > 0)
        {
            // BBR paces: before 6.16 the cap does not apply to it (see `why::tsq`).
            let capped = caps_paced || t.congestion.as_deref() != Some("bbr");
            let limit = TsqLimit::new(lob, rate, s.truesize_max, capped).limit;
            s.tsq_limit.push((snap.time_ns, limit));
        }
    }

    fn event(&mut self, mut e: Event) {
        self.names.fill(&mut e);
        if !self.filter.admits(&e) {
            return;
        }
        self.last_ns = self.last_ns.max(e.ts_ns);
        let i = *self.index.entry(e.sock_id).or_insert_with(|| {
            self.sockets.push(SocketTimeline::new(&e));
            self.sockets.len() - 1
        });
        let s = &mut self.sockets[i];
        s.events += 1;
        if let Some((tgid, comm)) = sender_named(&e) {
            s.sender = Some((tgid, comm.as_str().to_owned()));
        }
        if e.hook == Hook::SockDestroy {
            s.destroyed_ns = Some(e.ts_ns);
        }
        if !e.freed {
            s.readings.push(Reading {
                ts_ns: e.ts_ns,
                queued: e.wmem_queued,
                alloc: e.wmem_alloc,
                sndbuf: e.sndbuf,
                snapshot: false,
            });
        }
        let ended = |dur: u64, value: i64| Span {
            start_ns: e.ts_ns.saturating_sub(dur),
            end_ns: e.ts_ns,
            value,
        };
        let skb_len = e.skb.as_ref().map_or(0, |k| i64::from(k.len));
        if let (Some(k), Hook::DevQueueXmit | Hook::WmemCharge) = (&e.skb, e.hook) {
            s.truesize_max = s.truesize_max.max(u64::from(k.truesize));
        }
        match e.hook {
            Hook::SendmsgReturn => s.sendmsg.push(ended(e.duration_ns, e.value)),
            Hook::SendBlocked => s.blocked.push(ended(e.duration_ns, e.value)),
            Hook::DriverDone => s.driver.push(ended(e.duration_ns, skb_len)),
            Hook::SkbDrop => s.drops.push(DropMark {
                ts_ns: e.ts_ns,
                reason: e
                    .value_name
                    .clone()
                    .unwrap_or_else(|| format!("reason {}", e.value)),
            }),
            _ => {}
        }
        let Some(skb) = &e.skb else { return };
        match e.hook {
            Hook::QdiscEnqueue => {
                self.in_qdisc.insert(skb.skb, (i, e.ts_ns));
            }
            Hook::QdiscDequeue => {
                // Without an enqueue seen: it bypassed the qdisc (fentry/kprobe see those).
                if let Some((at, t0)) = self.in_qdisc.remove(&skb.skb) {
                    self.sockets[at].qdisc.push(Span {
                        start_ns: t0,
                        end_ns: e.ts_ns,
                        value: skb_len,
                    });
                }
            }
            // Its address may be another skb's next.
            Hook::SkbDrop | Hook::SkbFree => {
                self.in_qdisc.remove(&skb.skb);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;

    use sockmem_common::{event::FLAG_HAS_SKB, SockEvent};

    use super::*;
    use crate::{
        pipeline::decode::tests::raw_event,
        recording::{
            format::{ClockAnchor, Header, RecordedFilters, Trailer},
            writer::Writer,
        },
    };

    /// A recording of `events` (time 0 at 1 s).
    pub fn recording(events: &[SockEvent]) -> Vec<u8> {
        let header = Header {
            sockmem_version: "0.1.0".into(),
            kernel: "6.18.0-test".into(),
            ring_size: 1 << 22,
            hooks: Vec::new(),
            filters: RecordedFilters::default(),
            event_size: std::mem::size_of::<SockEvent>() as u32,
            anchor: ClockAnchor {
                realtime_ns: 1_764_000_000_000_000_000,
                monotonic_ns: 1_000_000_000,
            },
            snapshot_every_s: None,
        };
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for raw in events {
            let p = (raw as *const SockEvent).cast::<u8>();
            // SAFETY: plain old data, read whole.
            let bytes = unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<SockEvent>()) };
            w.event(bytes).unwrap();
        }
        w.finish(Trailer {
            elapsed_s: 1.0,
            ..Trailer::default()
        })
        .unwrap()
    }

    pub fn at(hook: Hook, ms: u64, f: impl FnOnce(&mut SockEvent)) -> SockEvent {
        let mut raw = raw_event(hook);
        raw.ts_ns = 1_000_000_000 + ms * 1_000_000;
        f(&mut raw);
        raw
    }

    pub fn timeline(events: &[SockEvent], filters: &FilterArgs) -> Timeline {
        let file = recording(events);
        let filter = EventFilter::new(filters).unwrap();
        Timeline::from_reader(Reader::open(Cursor::new(file)).unwrap(), filter).unwrap()
    }

    fn skb(raw: &mut SockEvent, addr: u64) {
        raw.flags |= FLAG_HAS_SKB;
        raw.skb = addr;
        raw.skb_len = 1500;
    }

    #[test]
    fn events_become_readings_calls_and_skb_spans() {
        let events = [
            at(Hook::TcpSendmsg, 1, |r| {
                r.wmem_queued = 100;
                r.flags |= sockmem_common::event::FLAG_OWNER_FROM_SEND;
            }),
            at(Hook::QdiscEnqueue, 2, |r| skb(r, 0xa)),
            at(Hook::QdiscEnqueue, 3, |r| skb(r, 0xb)),
            at(Hook::QdiscDequeue, 5, |r| skb(r, 0xa)),
            // Bypassed the qdisc: no enqueue seen.
            at(Hook::QdiscDequeue, 6, |r| skb(r, 0xc)),
            // Dropped in the qdisc: its address is free for another skb.
            at(Hook::SkbDrop, 7, |r| {
                skb(r, 0xb);
                r.value = 2;
            }),
            at(Hook::QdiscDequeue, 8, |r| skb(r, 0xb)),
            at(Hook::DriverDone, 9, |r| {
                skb(r, 0xa);
                r.duration_ns = 500_000;
            }),
            at(Hook::SendBlocked, 10, |r| {
                (r.value, r.duration_ns) = (2, 4_000_000)
            }),
            at(Hook::SendmsgReturn, 10, |r| {
                (r.value, r.duration_ns) = (65536, 9_000_000)
            }),
            at(Hook::TcpAck, 11, |r| {
                r.flags |= sockmem_common::event::FLAG_SOCK_FREED
            }),
            at(Hook::TcpSendmsg, 12, |r| {
                (r.sock_id, r.lport) = (0x402, 40001)
            }),
        ];
        let t = timeline(&events, &FilterArgs::default());
        assert_eq!((t.start_ns, t.duration_ns), (1_000_000_000, 1_000_000_000));
        assert_eq!(t.sockets.len(), 2);
        let s = &t.sockets[0];
        assert_eq!(s.events, 11);
        assert_eq!(
            s.readings.len(),
            10,
            "the freed socket's event reads no counters"
        );
        assert_eq!(s.readings[0].queued, 100);
        let ms = |ms: u64| 1_000_000_000 + ms * 1_000_000;
        assert_eq!(
            s.qdisc,
            vec![Span {
                start_ns: ms(2),
                end_ns: ms(5),
                value: 1500
            }]
        );
        assert_eq!(
            s.driver,
            vec![Span {
                start_ns: ms(9) - 500_000,
                end_ns: ms(9),
                value: 1500
            }]
        );
        assert_eq!(
            (s.blocked[0].start_ns, s.blocked[0].value),
            (ms(6), 2),
            "blocked: the report back by the time asleep"
        );
        assert_eq!((s.sendmsg[0].start_ns, s.sendmsg[0].value), (ms(1), 65536));
        assert_eq!(s.drops[0].reason, "reason 2");
        assert_eq!(s.sender, Some((100, "sender".to_owned())));
        assert_eq!(s.four_tuple(), "tcp 198.18.0.1:40000 > 198.18.0.2:5201");

        let only = timeline(
            &events,
            &FilterArgs {
                port: vec![40001],
                ..FilterArgs::default()
            },
        );
        assert_eq!(only.sockets.len(), 1);
        assert_eq!(only.sockets[0].sock_id, 0x402);
    }

    #[test]
    fn the_sender_is_the_last_sendmsg_caller_never_a_task_that_ran() {
        use sockmem_common::event::{FLAG_OWNER_FROM_SEND, FLAG_OWNER_UNKNOWN};
        let events = [
            at(Hook::TcpAck, 1, |r| {
                r.flags |= FLAG_OWNER_UNKNOWN;
                r.tgid = 0;
            }),
            at(Hook::TcpAck, 2, |r| r.tgid = 7),
            at(Hook::TcpSendmsg, 3, |r| {
                r.flags |= FLAG_OWNER_FROM_SEND;
                r.tgid = 9;
            }),
            at(Hook::TcpAck, 4, |r| r.tgid = 11),
        ];
        let t = timeline(&events, &FilterArgs::default());
        assert_eq!(t.sockets[0].sender.as_ref().map(|s| s.0), Some(9));
        assert_eq!(t.sockets[0].sender_name(), "sender (9)");
        // As `report` names it: the same shared rule.
        let mut c = crate::pipeline::report::Collector::new(false);
        for raw in &events {
            c.observe(&Event::from_raw(raw).unwrap());
        }
        let rows = c.finish(crate::cli::GroupBy::Socket, false).rows;
        assert_eq!(rows[0].pid, Some(9));
        // A receiver: only tasks that ran, no `sendmsg`.
        let t = timeline(&events[..2], &FilterArgs::default());
        assert_eq!(t.sockets[0].sender, None);
        assert_eq!(t.sockets[0].sender_name(), "no sendmsg seen");
    }
}
