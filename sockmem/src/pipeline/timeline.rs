//! A recording as per-socket time series, for `plot` and `export`: the counters as each event
//! read them, and the spans and marks the events stand for (sendmsg calls, time blocked in a
//! send call, each skb's time in the qdisc and in the driver, drops). The user's filters apply
//! as `trace --input` applies them.

use std::{collections::HashMap, fs::File, io::BufReader, net::SocketAddr, path::Path};

use anyhow::Context as _;
use sockmem_common::Hook;

use crate::{
    cli::FilterArgs,
    pipeline::{
        decode::{Event, Owner, Protocol},
        filter::EventFilter,
        names::Names,
    },
    recording::reader::{Item, Reader},
};

/// The counters as one event read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub ts_ns: u64,
    pub queued: i32,
    pub alloc: i32,
    pub sndbuf: i32,
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
    /// The process that called `sendmsg` on it (else the first task an event named); `None`
    /// when no event named one.
    pub sender: Option<(u32, String)>,
    /// `sender` called `sendmsg` on it (not just ran when an event fired).
    sender_from_sendmsg: bool,
    /// Events of the socket that passed the filters.
    pub events: u64,
    /// One per event that read the counters (every event but those of a socket being freed).
    pub readings: Vec<Reading>,
    /// `sendmsg_ret`: [return − took, return], value = the return value.
    pub sendmsg: Vec<Span>,
    /// `send_blocked`: [report − time asleep, report], value = how often it slept.
    pub blocked: Vec<Span>,
    /// `qdisc_enqueue` → `qdisc_dequeue` of one skb (paired by skb address), value = its length.
    pub qdisc: Vec<Span>,
    /// `driver_done`: [done − time in the driver, done], value = its length.
    pub driver: Vec<Span>,
    pub drops: Vec<DropMark>,
}

impl SocketTimeline {
    fn new(e: &Event) -> SocketTimeline {
        SocketTimeline {
            sock_id: e.sock_id,
            protocol: e.protocol,
            local: e.local,
            remote: e.remote,
            sender: None,
            sender_from_sendmsg: false,
            events: 0,
            readings: Vec::new(),
            sendmsg: Vec::new(),
            blocked: Vec::new(),
            qdisc: Vec::new(),
            driver: Vec::new(),
            drops: Vec::new(),
        }
    }

    /// `tcp 198.18.0.1:40000 > 198.18.0.2:5201`
    pub fn four_tuple(&self) -> String {
        format!("{} {} > {}", self.protocol.name(), self.local, self.remote)
    }

    /// `python3 (9820)`, or `sender unknown`.
    pub fn sender_name(&self) -> String {
        match &self.sender {
            Some((tgid, comm)) => format!("{comm} ({tgid})"),
            None => "sender unknown".to_owned(),
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
    /// Reads the recording at `path`; the filters choose the events.
    pub fn read(path: &Path, filters: &FilterArgs) -> anyhow::Result<Timeline> {
        let what = || format!("reading the recording `{}`", path.display());
        let meta = std::fs::metadata(path).with_context(what)?;
        if !meta.is_file() {
            anyhow::bail!(
                "`{}` is not a regular file; a recording is made with `sockmem record -o FILE`",
                path.display()
            );
        }
        let file = File::open(path).with_context(what)?;
        let mut reader =
            Reader::open(BufReader::with_capacity(1 << 20, file)).with_context(what)?;
        let (header, trailer) = (reader.header().clone(), reader.trailer().clone());
        let names = Names::recorded(&trailer.enums, &trailer.locations);
        let mut b = Builder {
            filter: EventFilter::new(filters),
            names,
            index: HashMap::new(),
            sockets: Vec::new(),
            in_qdisc: HashMap::new(),
            last_ns: header.anchor.monotonic_ns,
        };
        while let Some(item) = reader.next_item().with_context(what)? {
            if let Item::Event(bytes) = item {
                match Event::decode(bytes) {
                    Ok(e) => b.event(e),
                    Err(err) => eprintln!("sockmem: skipping an event: {err}"),
                }
            }
        }
        let start_ns = header.anchor.monotonic_ns;
        let elapsed = (trailer.elapsed_s.max(0.0) * 1e9) as u64;
        Ok(Timeline {
            start_ns,
            duration_ns: elapsed.max(b.last_ns.saturating_sub(start_ns)),
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
    fn event(&mut self, mut e: Event) {
        if !self.filter.admits(&e) {
            return;
        }
        self.names.fill(&mut e);
        self.last_ns = self.last_ns.max(e.ts_ns);
        let i = *self.index.entry(e.sock_id).or_insert_with(|| {
            self.sockets.push(SocketTimeline::new(&e));
            self.sockets.len() - 1
        });
        let s = &mut self.sockets[i];
        s.events += 1;
        // The sender: the first `sendmsg` caller, else the first task an event named.
        let from_send = e.owner == Owner::Sendmsg;
        if e.owner != Owner::Unknown
            && e.tgid != 0
            && (s.sender.is_none() || (from_send && !s.sender_from_sendmsg))
        {
            s.sender = Some((e.tgid, e.comm.as_str().to_owned()));
            s.sender_from_sendmsg = from_send;
        }
        if !e.freed {
            s.readings.push(Reading {
                ts_ns: e.ts_ns,
                queued: e.wmem_queued,
                alloc: e.wmem_alloc,
                sndbuf: e.sndbuf,
            });
        }
        let ended = |dur: u64, value: i64| Span {
            start_ns: e.ts_ns.saturating_sub(dur),
            end_ns: e.ts_ns,
            value,
        };
        let skb_len = e.skb.as_ref().map_or(0, |k| i64::from(k.len));
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
