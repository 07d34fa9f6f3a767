//! `report`: a recording's events summed up per socket (or per process, command or interface),
//! and, with `--hist`, the histograms `hist` builds in the kernel, built here from the events.
//!
//! Per socket: the identity, sender, lifetime and counters `trace`'s exit table has
//! ([`SocketTracker`]); bytes and calls from `sendmsg_ret`, time asleep from `send_blocked`; qdisc
//! sojourn from each skb's `qdisc_enqueue` → `qdisc_dequeue` (paired per skb address and
//! socket); drops by the kernel's reason; the largest skb truesize handed down
//! (`dev_queue_xmit`, `wmem_charge`), and how long `sk_wmem_alloc` held each value (`demo`
//! asks for these). The histograms follow the programs' rules
//! (`sockmem-ebpf`: `hooks/send.rs`, `hooks/qdisc.rs`, `skbs.rs`), event by event:
//!
//! | histogram | from the events |
//! |---|---|
//! | `sendmsg_time` | `sendmsg_ret`'s `took` (a return whose start was not seen took 0 and is left out) |
//! | `send_blocked` | `send_blocked`'s `took` |
//! | `qdisc_sojourn` | `qdisc_enqueue` → `qdisc_dequeue` of the same skb |
//! | `driver_time`, `below_tcp` | `driver_xmit` / `dev_queue_xmit` → the first of `wmem_release`, `skb_received`, `skb_free`, `skb_drop` (on `lo`: `driver_done`) of the same skb |
//! | `wmem_queued`, `wmem_alloc` | every event that read the counters |
//!
//! Where a driver orphans the skb in its xmit, the programs end its transmit side at
//! `driver_done` (they see the skb no longer points at its socket); the event does not say so,
//! so here that is done for the loopback (which always does) and no other device.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Seek},
    net::SocketAddr,
};

use sockmem_common::{
    hist::{slot, HistKind},
    Hook,
};

use crate::{
    cli::GroupBy,
    pipeline::{
        decode::Event,
        filter::EventFilter,
        histogram::{Completeness, Histogram, Report},
        names::Names,
        track::{SocketState, SocketTracker},
        why::samples::Samples,
    },
    recording::reader::{Item, ReadError, Reader},
};

/// What a socket's events add up to beyond [`SocketState`].
#[derive(Clone, Debug, Default)]
struct Figures {
    bytes_sent: u64,
    calls: u64,
    blocked_calls: u64,
    blocked_ns: u64,
    sojourn: Samples,
    drops: BTreeMap<String, u64>,
    truesize_max: u64,
    alloc_held: HeldValues,
    /// The last `sk_wmem_alloc` read and when: it holds until the socket's next event.
    alloc_reading: Option<(i64, u64)>,
    /// skb events per interface.
    ifaces: BTreeMap<String, u64>,
    /// The sender's cgroup path (the last an event named), and the socket's namespace.
    cgroup: Option<String>,
    netns: Option<String>,
}

/// One skb followed below the transport, as the programs follow it (`SkbTrack`).
#[derive(Clone, Copy, Debug)]
struct SkbPath {
    sock_id: u64,
    queued_ns: u64,
    xmit_ns: u64,
    enqueued_ns: u64,
    qdisc_seen: bool,
    given_back: bool,
}

/// Events in, rows (and histograms) out.
pub struct Collector {
    tracker: SocketTracker,
    figures: HashMap<u64, Figures>,
    skbs: HashMap<u64, SkbPath>,
    /// Per socket and kind, with `--hist`.
    hists: Option<HashMap<(u64, HistKind), Histogram>>,
    completeness: Completeness,
    qdisc: QdiscPairs,
    /// Events observed.
    pub events: u64,
}

/// One row: a socket, or a group of sockets.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// The group's name (`pid comm`, `comm`, interface); for a socket, its 4-tuple and protocol.
    pub key: String,
    /// A socket row's own.
    pub sock: Option<u64>,
    pub ino: Option<u64>,
    pub protocol: Option<&'static str>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// The sender, where every socket of the row has the same.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub iface: Option<String>,
    /// The sender's cgroup path and the socket's namespace, where every socket of the row has
    /// the same.
    pub cgroup: Option<String>,
    pub netns: Option<String>,
    pub sock_ids: Vec<u64>,
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The last counters read (a group: the sum of its sockets' last ones).
    pub wmem_queued: Option<i64>,
    pub wmem_alloc: Option<i64>,
    /// The largest any one socket of the row reached.
    pub wmem_queued_max: i64,
    pub wmem_alloc_max: i64,
    pub sndbuf: i64,
    pub bytes_sent: u64,
    pub calls: u64,
    pub blocked_calls: u64,
    pub blocked_ns: u64,
    pub sojourn: Samples,
    pub drops: BTreeMap<String, u64>,
    /// The largest truesize of an skb the sockets handed down (`dev_queue_xmit`,
    /// `wmem_charge`): TCP Small Queues' limit counts two of them.
    pub truesize_max: u64,
    /// How long `sk_wmem_alloc` held each value.
    pub alloc_held: HeldValues,
    pub destroyed: bool,
}

/// A counter over time: how long it held each value, each reading until its socket's next
/// event (the last reading for no time). Kept per value, not per reading: a long recording
/// repeats few values many times.
#[derive(Clone, Debug, Default)]
pub struct HeldValues {
    ns: BTreeMap<i64, u64>,
}

impl HeldValues {
    fn add(&mut self, value: i64, ns: u64) {
        *self.ns.entry(value).or_default() += ns;
    }

    fn merge(&mut self, o: &HeldValues) {
        for (&v, &ns) in &o.ns {
            self.add(v, ns);
        }
    }

    /// The value the counter stayed at or below for a `p` share of the time (0 if never read).
    pub fn at_or_below_for(&self, p: f64) -> i64 {
        let total: u64 = self.ns.values().sum();
        let mut acc = 0;
        for (&v, &ns) in &self.ns {
            acc += ns;
            if acc as f64 >= p * total as f64 {
                return v;
            }
        }
        0
    }
}

impl Row {
    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Adds another row's sockets to this one.
    pub fn merge(&mut self, o: &Row) {
        fn same<T: PartialEq>(a: &mut Option<T>, b: &Option<T>) {
            if a != b {
                *a = None;
            }
        }
        same(&mut self.pid, &o.pid);
        same(&mut self.comm, &o.comm);
        same(&mut self.iface, &o.iface);
        same(&mut self.cgroup, &o.cgroup);
        same(&mut self.netns, &o.netns);
        self.sock_ids.extend(&o.sock_ids);
        self.events += o.events;
        self.first_ns = self.first_ns.min(o.first_ns);
        self.last_ns = self.last_ns.max(o.last_ns);
        let add = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.wmem_queued = add(self.wmem_queued, o.wmem_queued);
        self.wmem_alloc = add(self.wmem_alloc, o.wmem_alloc);
        self.wmem_queued_max = self.wmem_queued_max.max(o.wmem_queued_max);
        self.wmem_alloc_max = self.wmem_alloc_max.max(o.wmem_alloc_max);
        self.sndbuf = self.sndbuf.max(o.sndbuf);
        self.bytes_sent += o.bytes_sent;
        self.calls += o.calls;
        self.blocked_calls += o.blocked_calls;
        self.blocked_ns += o.blocked_ns;
        self.sojourn.merge(&o.sojourn);
        for (r, n) in &o.drops {
            *self.drops.entry(r.clone()).or_default() += n;
        }
        self.truesize_max = self.truesize_max.max(o.truesize_max);
        self.alloc_held.merge(&o.alloc_held);
        self.destroyed &= o.destroyed;
    }
}

/// How the qdisc sojourns (QDISC_P50/P99) were sampled: each skb's `qdisc_enqueue` paired with
/// the `qdisc_dequeue` of the same address. A qdisc that splits GSO skbs (tbf) dequeues
/// segments at addresses never enqueued, and a bypassed qdisc shows dequeues only: such events
/// pair with nothing, and the percentiles are of the pairs alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QdiscPairs {
    pub enqueues: u64,
    pub dequeues: u64,
    /// Sojourns sampled.
    pub pairs: u64,
}

impl QdiscPairs {
    /// Some enqueue or dequeue paired with nothing.
    pub fn unpaired(&self) -> bool {
        self.enqueues > self.pairs || self.dequeues > self.pairs
    }
}

/// What `report` prints.
pub struct Summary {
    /// Busiest first (bytes sent, then events).
    pub rows: Vec<Row>,
    /// Every socket's, in total.
    pub qdisc: QdiscPairs,
    /// `--hist`: per group (unless `--group-by` was left out: totals only) and in total.
    pub hist: Option<Report>,
}

fn sample(h: &mut Histogram, v: u64) {
    h.slots[slot(v)] += 1;
    h.count += 1;
    h.sum += v;
    h.max = h.max.max(v);
}

impl Collector {
    pub fn new(with_hist: bool) -> Collector {
        Collector {
            tracker: SocketTracker::default(),
            figures: HashMap::new(),
            skbs: HashMap::new(),
            hists: with_hist.then(HashMap::new),
            completeness: Completeness::default(),
            qdisc: QdiscPairs::default(),
            events: 0,
        }
    }

    fn sample(&mut self, sock: u64, kind: HistKind, v: u64) {
        if let Some(h) = &mut self.hists {
            let h = h
                .entry((sock, kind))
                .or_insert_with(|| Histogram::empty(kind, String::new()));
            sample(h, v);
        }
    }

    /// One event the filters passed (names filled in), in recorded order.
    pub fn observe(&mut self, e: &Event) {
        self.events += 1;
        self.tracker.observe(e);
        let sock = e.sock_id;
        let f = self.figures.entry(sock).or_default();
        if let Some(c) = e.cgroup_name() {
            if f.cgroup.as_deref() != Some(&*c) {
                f.cgroup = Some(c.into_owned());
            }
        }
        if f.netns.is_none() {
            f.netns = e.netns_name().map(|n| n.into_owned());
        }
        if let Some(skb) = &e.skb {
            if !skb.iface.is_empty() {
                *f.ifaces.entry(skb.iface.to_string()).or_default() += 1;
            }
        }
        match e.hook {
            Hook::SendmsgReturn => {
                f.calls += 1;
                f.bytes_sent += e.value.max(0) as u64;
            }
            Hook::SendBlocked => {
                f.blocked_calls += 1;
                f.blocked_ns += e.duration_ns;
            }
            Hook::SkbDrop => {
                let reason = e.value_name.clone().unwrap_or_else(|| e.value.to_string());
                *f.drops.entry(reason).or_default() += 1;
            }
            Hook::DevQueueXmit | Hook::WmemCharge => {
                if let Some(skb) = &e.skb {
                    f.truesize_max = f.truesize_max.max(u64::from(skb.truesize));
                }
            }
            _ => {}
        }
        if let Some((alloc, since)) = f.alloc_reading.take() {
            f.alloc_held.add(alloc, e.ts_ns.saturating_sub(since));
        }
        if !e.freed {
            let alloc = i64::from(e.wmem_alloc);
            f.alloc_held.add(alloc, 0);
            f.alloc_reading = Some((alloc, e.ts_ns));
            self.sample(sock, HistKind::WmemQueued, e.wmem_queued.max(0) as u64);
            self.sample(sock, HistKind::WmemAlloc, e.wmem_alloc.max(0) as u64);
        }
        let c = &mut self.completeness;
        match e.hook {
            Hook::TcpSendmsg if e.send_start => c.sends_started += 1,
            Hook::SendmsgReturn if e.duration_ns > 0 => {
                c.sends_matched += 1;
                self.sample(sock, HistKind::SendmsgTime, e.duration_ns);
            }
            Hook::SendmsgReturn => c.sends_unmatched += 1,
            Hook::SendBlocked => self.sample(sock, HistKind::SendBlocked, e.duration_ns),
            _ => {}
        }
        match e.hook {
            Hook::QdiscEnqueue => self.qdisc.enqueues += 1,
            Hook::QdiscDequeue => self.qdisc.dequeues += 1,
            _ => {}
        }
        if let Some(skb) = &e.skb {
            self.skb_event(e, skb.skb);
        }
    }

    /// A recording's events the filter admits, named as the recording names them (what
    /// `report` reads). Returns how many events could not be decoded (left out).
    pub fn read<R: Read + Seek>(
        &mut self,
        reader: &mut Reader<R>,
        filter: &mut EventFilter,
    ) -> Result<u64, ReadError> {
        let t = reader.trailer();
        let names = Names::recorded(&t.enums, &t.locations, t.attribution.as_ref());
        let mut undecodable = 0u64;
        while let Some(item) = reader.next_item()? {
            let Item::Event(bytes) = item else { continue };
            let Ok(mut e) = Event::decode(bytes) else {
                undecodable += 1;
                continue;
            };
            names.fill(&mut e);
            if filter.admits(&e) {
                self.observe(&e);
            }
        }
        Ok(undecodable)
    }

    /// The skb's path below the transport, as the programs follow it.
    fn skb_event(&mut self, e: &Event, addr: u64) {
        let (sock, t) = (e.sock_id, e.ts_ns);
        let fresh = |queued_ns, xmit_ns| SkbPath {
            sock_id: sock,
            queued_ns,
            xmit_ns,
            enqueued_ns: 0,
            qdisc_seen: false,
            given_back: false,
        };
        // Another socket's skb at the address, or an skb handed to the driver again after the
        // socket got its bytes back (a segment the qdisc cut from a GSO skb, at the address of
        // one that ended): what was followed there is gone. The programs forget it when it is
        // freed, which not every free shows as an event.
        if self.skbs.get(&addr).is_some_and(|p| {
            p.sock_id != sock
                || (p.given_back && matches!(e.hook, Hook::DriverXmit | Hook::QdiscEnqueue))
        }) {
            self.skbs.remove(&addr);
            self.completeness.skbs_lost += 1;
        }
        match e.hook {
            Hook::DevQueueXmit => {
                if self.skbs.insert(addr, fresh(t, 0)).is_some() {
                    self.completeness.skbs_lost += 1;
                }
                self.completeness.skbs_tracked += 1;
            }
            Hook::QdiscEnqueue => {
                let p = self.skbs.entry(addr).or_insert_with(|| {
                    self.completeness.skbs_tracked += 1;
                    fresh(0, 0)
                });
                p.enqueued_ns = t;
                p.qdisc_seen = true;
            }
            Hook::QdiscDequeue => match self.skbs.get_mut(&addr) {
                Some(p) if p.enqueued_ns != 0 => {
                    let sojourn = t.saturating_sub(p.enqueued_ns);
                    p.enqueued_ns = 0;
                    self.figures.entry(sock).or_default().sojourn.push(sojourn);
                    self.qdisc.pairs += 1;
                    self.sample(sock, HistKind::QdiscSojourn, sojourn);
                }
                _ => self.completeness.qdisc_unmatched += 1,
            },
            Hook::DriverXmit => match self.skbs.get_mut(&addr) {
                Some(p) => {
                    p.xmit_ns = t;
                    if p.queued_ns != 0 && !p.qdisc_seen {
                        self.completeness.qdisc_bypass += 1;
                    }
                }
                None => {
                    self.skbs.insert(addr, fresh(0, t));
                    self.completeness.skbs_tracked += 1;
                }
            },
            Hook::WmemRelease | Hook::SkbReceived => self.given_back(addr, t),
            // A loopback orphans the skb in its xmit: the socket has its bytes back when the
            // driver returns (the programs see the skb no longer points at its socket).
            Hook::DriverDone if e.skb.as_ref().is_some_and(|s| s.iface == "lo") => {
                self.given_back(addr, t)
            }
            Hook::SkbFree | Hook::SkbDrop if self.skbs.contains_key(&addr) => {
                self.given_back(addr, t);
                self.skbs.remove(&addr);
                self.completeness.skbs_freed += 1;
            }
            _ => {}
        }
    }

    fn given_back(&mut self, addr: u64, t: u64) {
        let Some(p) = self.skbs.get_mut(&addr) else {
            return;
        };
        if p.given_back {
            return;
        }
        p.given_back = true;
        let p = *p;
        if p.xmit_ns != 0 {
            self.sample(p.sock_id, HistKind::DriverTime, t.saturating_sub(p.xmit_ns));
        }
        if p.queued_ns != 0 {
            self.sample(p.sock_id, HistKind::BelowTcp, t.saturating_sub(p.queued_ns));
        }
    }

    fn socket_row(st: &SocketState, f: &Figures) -> Row {
        let iface = f
            .ifaces
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
            .map(|(name, _)| name.clone());
        Row {
            key: format!(
                "{} > {} {}",
                st.id.local,
                st.id.remote,
                st.id.protocol.name()
            ),
            sock: Some(st.id.sock_id),
            ino: Some(st.id.ino),
            protocol: Some(st.id.protocol.name()),
            local: Some(st.id.local),
            remote: Some(st.id.remote),
            pid: st.id.sender.as_ref().map(|s| s.0),
            comm: st.id.sender.as_ref().map(|s| s.1.to_string()),
            iface,
            cgroup: f.cgroup.clone(),
            netns: f.netns.clone(),
            sock_ids: vec![st.id.sock_id],
            events: st.events,
            first_ns: st.first_ns,
            last_ns: st.last_ns,
            wmem_queued: st.last.map(|l| i64::from(l.0)),
            wmem_alloc: st.last.map(|l| i64::from(l.1)),
            wmem_queued_max: i64::from(st.max_queued),
            wmem_alloc_max: i64::from(st.max_alloc),
            sndbuf: i64::from(st.sndbuf),
            bytes_sent: f.bytes_sent,
            calls: f.calls,
            blocked_calls: f.blocked_calls,
            blocked_ns: f.blocked_ns,
            sojourn: f.sojourn.clone(),
            drops: f.drops.clone(),
            truesize_max: f.truesize_max,
            alloc_held: f.alloc_held.clone(),
            destroyed: st.destroyed,
        }
    }

    /// The group a socket row falls in.
    fn group_key(row: &Row, by: GroupBy) -> String {
        match by {
            GroupBy::Socket => row.key.clone(),
            GroupBy::Pid => match (&row.pid, &row.comm) {
                (Some(p), Some(c)) => format!("{p} {c}"),
                _ => "(unknown sender)".to_owned(),
            },
            GroupBy::Comm => row
                .comm
                .clone()
                .unwrap_or_else(|| "(unknown sender)".to_owned()),
            GroupBy::Iface => row
                .iface
                .clone()
                .unwrap_or_else(|| "(no interface)".to_owned()),
            GroupBy::Cgroup => row
                .cgroup
                .clone()
                .unwrap_or_else(|| "(unknown sender)".to_owned()),
            GroupBy::Netns => row.netns.clone().unwrap_or_else(|| "(unknown)".to_owned()),
        }
    }

    /// The rows, grouped; with `--hist`, the histograms per group (`hist_per`) and in total.
    pub fn finish(mut self, by: GroupBy, hist_per: bool) -> Summary {
        let sockets: Vec<Row> = self
            .tracker
            .states()
            .into_iter()
            .map(|st| {
                let f = self
                    .figures
                    .get(&st.id.sock_id)
                    .cloned()
                    .unwrap_or_default();
                Collector::socket_row(st, &f)
            })
            .collect();
        let mut group_of: HashMap<u64, String> = HashMap::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for s in sockets {
            let key = Collector::group_key(&s, by);
            group_of.insert(s.sock.unwrap_or_default(), key.clone());
            if by == GroupBy::Socket {
                rows.push(s);
                continue;
            }
            match index.get(&key) {
                Some(&i) => rows[i].merge(&s),
                None => {
                    index.insert(key.clone(), rows.len());
                    rows.push(Row {
                        key,
                        sock: None,
                        ino: None,
                        protocol: None,
                        local: None,
                        remote: None,
                        ..s
                    });
                }
            }
        }
        if by == GroupBy::Iface {
            // Each row's sockets left by that interface: say so even when their senders differ.
            for r in &mut rows {
                r.iface = (r.key != "(no interface)").then(|| r.key.clone());
            }
        }
        rows.sort_by(|a, b| {
            (b.bytes_sent, b.events)
                .cmp(&(a.bytes_sent, a.events))
                .then_with(|| a.key.cmp(&b.key))
        });
        self.completeness.skbs_in_flight = self.skbs.len() as u64;
        let hist = self.hists.take().map(|hists| {
            let mut keyed: BTreeMap<(HistKind, String), Histogram> = BTreeMap::new();
            for ((sock, kind), h) in hists {
                let label = if hist_per {
                    group_of.get(&sock).cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                let k = keyed
                    .entry((kind, label.clone()))
                    .or_insert_with(|| Histogram::empty(kind, label));
                k.merge(&h);
                if hist_per && by == GroupBy::Socket {
                    k.sock = Some(sock);
                }
            }
            let histograms: Vec<Histogram> = keyed.into_values().collect();
            let totals = HistKind::ALL
                .iter()
                .map(|&kind| {
                    let mut t = Histogram::empty(kind, String::new());
                    for h in histograms.iter().filter(|h| h.kind == kind) {
                        t.merge(h);
                    }
                    t
                })
                .collect();
            Report {
                histograms,
                totals,
                completeness: self.completeness.clone(),
            }
        });
        Summary {
            rows,
            qdisc: self.qdisc,
            hist,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::event::{FLAG_HAS_SKB, FLAG_OWNER_FROM_SEND, FLAG_SOCK_FREED};

    struct Events {
        v: Vec<Event>,
        t: u64,
    }

    impl Events {
        fn at(&mut self, dt: u64, hook: Hook, f: impl FnOnce(&mut sockmem_common::SockEvent)) {
            self.t += dt;
            let mut raw = raw_event(hook);
            raw.ts_ns = self.t;
            f(&mut raw);
            raw.flags |= FLAG_OWNER_FROM_SEND;
            self.v.push(Event::from_raw(&raw).unwrap());
        }
    }

    fn skb(addr: u64) -> impl FnOnce(&mut sockmem_common::SockEvent) {
        move |r| {
            r.flags = FLAG_HAS_SKB;
            r.skb = addr;
            r.skb_len = 1000;
            r.ifname[..5].copy_from_slice(b"veth0");
        }
    }

    /// Socket 0x301 (pid 100, as `raw_event` makes it) sends twice, one skb of it waits 5 µs in
    /// the qdisc and another 7 µs, one is dropped; socket 0x402 of another process sends once.
    fn run() -> Vec<Event> {
        let mut e = Events {
            v: Vec::new(),
            t: 1_000_000,
        };
        e.at(0, Hook::TcpSendmsg, |r| r.flags = 4);
        e.at(1000, Hook::SendBlocked, |r| {
            (r.value, r.duration_ns) = (1, 30_000)
        });
        e.at(10, Hook::SendmsgReturn, |r| {
            (r.value, r.duration_ns, r.wmem_queued) = (65536, 50_000, 90_000)
        });
        e.at(10, Hook::DevQueueXmit, skb(0xa));
        e.at(10, Hook::QdiscEnqueue, skb(0xa));
        e.at(5000, Hook::QdiscDequeue, skb(0xa));
        e.at(100, Hook::DriverXmit, skb(0xa));
        e.at(400, Hook::SkbReceived, skb(0xa));
        e.at(100, Hook::SkbFree, skb(0xa));
        e.at(10, Hook::QdiscEnqueue, skb(0xb));
        e.at(7000, Hook::QdiscDequeue, skb(0xb));
        e.at(10, Hook::QdiscEnqueue, skb(0xc));
        e.at(10, Hook::SkbDrop, |r| {
            skb(0xc)(r);
            r.value = 3;
        });
        e.at(10, Hook::SendmsgReturn, |r| {
            (r.value, r.duration_ns, r.wmem_queued) = (1000, 0, 20_000)
        });
        e.at(10, Hook::SendmsgReturn, |r| {
            (r.sock_id, r.lport, r.tgid, r.value, r.duration_ns) = (0x402, 40001, 200, 10, 5)
        });
        e.v.iter_mut()
            .filter(|e| e.hook == Hook::SkbDrop)
            .for_each(|e| e.value_name = Some("QDISC_DROP".into()));
        e.v
    }

    fn collect(by: GroupBy, hist: bool, per: bool) -> Summary {
        let mut c = Collector::new(hist);
        for e in run() {
            c.observe(&e);
        }
        c.finish(by, per)
    }

    #[test]
    fn per_socket_figures() {
        let s = collect(GroupBy::Socket, false, false);
        assert_eq!(s.rows.len(), 2);
        let r = &s.rows[0];
        assert_eq!(r.sock, Some(0x301), "the busiest first");
        assert_eq!((r.bytes_sent, r.calls), (66536, 2));
        assert_eq!((r.blocked_calls, r.blocked_ns), (1, 30_000));
        assert_eq!(r.sojourn.count(), 2);
        assert_eq!((r.sojourn.percentile(0.5), r.sojourn.max()), (5000, 7000));
        assert_eq!(r.drops.get("QDISC_DROP"), Some(&1));
        assert_eq!(r.wmem_queued_max, 90_000);
        assert_eq!(r.wmem_queued, Some(20_000));
        assert_eq!(r.iface.as_deref(), Some("veth0"));
        assert_eq!(r.events, 14);
        assert!(s.hist.is_none());
        assert_eq!((s.rows[1].bytes_sent, s.rows[1].pid), (10, Some(200)));
    }

    #[test]
    fn groups_sum_their_sockets() {
        let sockets = collect(GroupBy::Socket, false, false);
        for (by, groups) in [(GroupBy::Comm, 1), (GroupBy::Iface, 2), (GroupBy::Pid, 2)] {
            let g = collect(by, false, false);
            assert_eq!(g.rows.len(), groups, "{by:?}");
            type Field = fn(&Row) -> u64;
            let fields: [Field; 4] = [
                |r| r.bytes_sent,
                |r| r.calls,
                |r| r.events,
                |r| r.sojourn.count(),
            ];
            for f in fields {
                let sum = |rows: &[Row]| rows.iter().map(f).sum::<u64>();
                assert_eq!(sum(&g.rows), sum(&sockets.rows), "{by:?}");
            }
        }
        let comm = &collect(GroupBy::Comm, false, false).rows[0];
        assert_eq!((comm.sock_ids.len(), comm.pid), (2, None), "two processes");
        let iface = collect(GroupBy::Iface, false, false);
        assert_eq!(iface.rows[0].key, "veth0");
        assert_eq!(iface.rows[1].key, "(no interface)");
        let pid = collect(GroupBy::Pid, false, false);
        assert_eq!(pid.rows[0].key, "100 sender");
        assert_eq!(pid.rows[0].comm.as_deref(), Some("sender"));
    }

    #[test]
    fn histograms_from_the_events() {
        let s = collect(GroupBy::Socket, true, false);
        let h = s.hist.expect("--hist");
        let total = |k: HistKind| h.totals.iter().find(|t| t.kind == k).unwrap().clone();
        // Two returns with a seen start (one took 0: its start was not seen).
        assert_eq!(total(HistKind::SendmsgTime).count, 2);
        assert_eq!(total(HistKind::SendBlocked).sum, 30_000);
        let q = total(HistKind::QdiscSojourn);
        assert_eq!((q.count, q.sum, q.max), (2, 12_000, 7000));
        // Only skb 0xa went through the driver; it ended at skb_received, not again at its free.
        let d = total(HistKind::DriverTime);
        assert_eq!((d.count, d.sum), (1, 400));
        assert_eq!(total(HistKind::BelowTcp).sum, 10 + 5000 + 100 + 400);
        assert_eq!(total(HistKind::WmemQueued).count, 15);
        assert_eq!(h.completeness.qdisc_unmatched, 0);
        // 0xc was dropped in the qdisc: its enqueue paired with nothing.
        let pairs = QdiscPairs {
            enqueues: 3,
            dequeues: 2,
            pairs: 2,
        };
        assert_eq!((s.qdisc, s.qdisc.unpaired()), (pairs, true));
        assert_eq!(h.completeness.skbs_freed, 2);
        assert_eq!(h.completeness.skbs_in_flight, 1, "0xb was never freed");
        assert!(h.histograms.iter().all(|h| h.label.is_empty()));
        let per = collect(GroupBy::Pid, true, true).hist.unwrap();
        let labels: Vec<&str> = per
            .histograms
            .iter()
            .filter(|h| h.kind == HistKind::SendmsgTime)
            .map(|h| h.label.as_str())
            .collect();
        assert_eq!(labels, ["100 sender", "200 sender"]);
    }

    #[test]
    fn alloc_over_time_and_the_largest_truesize() {
        let mut e = Events {
            v: Vec::new(),
            t: 1_000_000,
        };
        let alloc = |a: i32| move |r: &mut sockmem_common::SockEvent| r.wmem_alloc = a;
        // sk_wmem_alloc 100 for 10 µs, 300 for 30 µs, 200 for 60 µs; then the socket is freed
        // (no reading) and one last event reads 900 for no time.
        e.at(0, Hook::TcpSendmsg, alloc(100));
        e.at(10_000, Hook::DevQueueXmit, |r| {
            skb(0xa)(r);
            (r.wmem_alloc, r.skb_truesize) = (300, 2304);
        });
        e.at(30_000, Hook::WmemCharge, |r| {
            skb(0xb)(r);
            (r.wmem_alloc, r.skb_truesize) = (200, 4352);
        });
        e.at(60_000, Hook::SkbFree, |r| {
            skb(0xb)(r);
            r.flags |= FLAG_SOCK_FREED;
            r.skb_truesize = 1 << 20;
        });
        e.at(500_000, Hook::SkbFree, alloc(900));
        let mut c = Collector::new(false);
        e.v.iter().for_each(|e| c.observe(e));
        let r = &c.finish(GroupBy::Socket, false).rows[0];
        let held = |p| r.alloc_held.at_or_below_for(p);
        assert_eq!(
            (held(0.05), held(0.5), held(0.9), held(1.0)),
            (100, 200, 300, 300)
        );
        assert_eq!(r.truesize_max, 4352, "skbs handed down, not freed ones");
        assert_eq!(HeldValues::default().at_or_below_for(0.5), 0);
    }

    #[test]
    fn an_address_handed_to_the_driver_again_after_it_ended_is_a_new_skb() {
        let mut e = Events {
            v: Vec::new(),
            t: 1_000_000,
        };
        // A GSO skb's segments at one address, the first one's free unseen.
        e.at(0, Hook::DriverXmit, skb(0xa));
        e.at(300, Hook::SkbReceived, skb(0xa));
        e.at(1000, Hook::DriverXmit, skb(0xa));
        e.at(200, Hook::SkbReceived, skb(0xa));
        e.at(10, Hook::SkbReceived, skb(0xa));
        let mut c = Collector::new(true);
        e.v.iter().for_each(|e| c.observe(e));
        let h = c.finish(GroupBy::Socket, false).hist.unwrap();
        let d = h
            .totals
            .iter()
            .find(|t| t.kind == HistKind::DriverTime)
            .unwrap();
        assert_eq!((d.count, d.sum), (2, 500), "each segment once");
        assert_eq!(h.completeness.skbs_lost, 1);
    }
}
