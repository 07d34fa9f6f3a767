//! `why`: where each socket's time went, by limiting cause. Events give what only sockmem sees
//! (whose skbs are in which qdisc, each skb's time there and in the driver, sends that slept);
//! sock_diag samples give the kernel's own accounting (tcp_info's busy / rwnd-limited /
//! sndbuf-limited timers, windows, cwnd, pacing rate). Each interval between two samples of a
//! socket goes under one [`Cause`], so a socket's shares add up to its window.

pub mod cause;
pub mod queue;
pub mod report;
pub mod samples;
pub mod sleeps;
pub mod tsq;
pub mod txq;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sockmem_common::Hook;

use crate::{
    kernel::sampler::Sampled,
    pipeline::{
        decode::{Event, Name, Owner, Protocol, SkbInfo},
        filter::{SocketFacts, SocketFilter},
        identity::SocketIdentity,
        seed::{is_seeded, Existing},
    },
};

use cause::{classify_busy, Cause, TcpState};
use queue::QdiscQueue;
use samples::Samples;
use sleeps::{Pending, Sleeps};
use tsq::TsqLimit;

/// Sends of one socket.
#[derive(Clone, Debug, Default)]
pub struct SendStats {
    pub calls: u64,
    pub bytes: u64,
    pub blocked_calls: u64,
    pub blocked_ns: u64,
    /// Of `blocked_calls`, those found asleep as the run started (their sleep counted from the
    /// start).
    pub asleep_at_start: u64,
}

/// One socket's skbs in qdiscs.
#[derive(Clone, Debug, Default)]
pub struct QdiscStats {
    pub enqueues: u64,
    pub sojourn_ns: Samples,
    /// Bytes found ahead at this socket's enqueues, by the socket that owned them.
    pub ahead: HashMap<u64, u64>,
    pub ahead_total: u64,
    /// Drops in or at a qdisc.
    pub drops: u64,
}

/// `sock_exceed_buf_limit` events: the protocol refused memory, by protocol and direction.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Refusals {
    pub tcp_send: u64,
    pub tcp_recv: u64,
    pub udp_send: u64,
    pub udp_recv: u64,
}

impl Refusals {
    fn count(&mut self, protocol: Protocol, recv: bool) {
        let n = match (protocol, recv) {
            (Protocol::Tcp, false) => &mut self.tcp_send,
            (Protocol::Tcp, true) => &mut self.tcp_recv,
            (Protocol::Udp, false) => &mut self.udp_send,
            (Protocol::Udp, true) => &mut self.udp_recv,
        };
        *n += 1;
    }

    pub fn total(&self) -> u64 {
        self.tcp_send + self.tcp_recv + self.udp_send + self.udp_recv
    }
}

/// The kernel's TCP view, summed over the window.
#[derive(Clone, Debug, Default)]
pub struct TcpTotals {
    pub busy_ns: u64,
    pub rwnd_limited_ns: u64,
    pub sndbuf_limited_ns: u64,
    pub zero_window_ns: u64,
    /// cwnd and packets in flight, weighted by time (divide by the window).
    pub cwnd_area: f64,
    pub in_flight_area: f64,
    pub snd_wnd_min: Option<u32>,
    /// tcp_info had the chrono timers (4.10+).
    pub has_timers: bool,
    pub has_snd_wnd: bool,
    /// The last pacing rate and `SO_MAX_PACING_RATE` cap read (`None`: unlimited or not read).
    pub pacing_rate: Option<u64>,
    pub max_pacing_rate: Option<u64>,
    /// Bytes the peer acknowledged over the window (tcp_info's `bytes_acked`, 4.1+).
    pub bytes_acked: Option<u64>,
}

/// A sample kept until the next.
#[derive(Clone, Debug)]
struct LastSample {
    t_ns: u64,
    queued: u64,
    alloc: u64,
    busy_us: Option<u64>,
    rwnd_us: Option<u64>,
    sndbuf_us: Option<u64>,
    bytes_acked: Option<u64>,
}

/// One socket, as seen over the run.
#[derive(Clone, Debug)]
pub struct Watched {
    /// Kept by [`Analyzer::observe`]'s own rules, not [`SocketIdentity::observe`]: any task in
    /// process context names the sender, and addresses are taken as each event carries them.
    pub id: SocketIdentity,
    /// The sender's cgroup path, once an event named it (seeded: the holder's).
    pub cgroup: Option<Arc<str>>,
    /// The socket's namespace inode and `ip netns` name, from its events.
    pub netns_ino: u32,
    pub netns_name: Option<Arc<str>>,
    /// Passes the user's filters: sampled and reported.
    pub matched: bool,
    pub gone: bool,
    pub netns: Option<u64>,
    pub send: SendStats,
    pub qdisc: QdiscStats,
    pub device_ns: Samples,
    /// The TX queue as the hand-offs to the driver saw it.
    pub txq: txq::TxQueueSeen,
    /// Every drop of this socket's followed skbs, by the kernel's reason.
    pub drops: HashMap<String, u64>,
    pub truesize_max: u64,
    /// Skbs handed to the device with more than headers in them.
    pub data_skbs: u64,
    pub queued_max: u64,
    pub alloc_max: u64,
    pub sndbuf: u64,
    last: Option<LastSample>,
    pub window_ns: u64,
    pub times_ns: [u64; Cause::ALL.len()],
    pub tcp: TcpTotals,
    pub queued_area: f64,
    pub alloc_area: f64,
    pub tsq: Option<TsqLimit>,
    /// The congestion control's name, as sock_diag says.
    pub congestion: Option<String>,
    /// Busy time with `sk_wmem_alloc` at the TSQ limit when sampled.
    pub throttled_ns: u64,
    /// Busy time the kernel's timers reported beyond an interval's length (they move in
    /// jiffies), counted in the next interval.
    busy_carry_ns: u64,
    /// Time asleep in send calls, by sampled interval.
    pub sleeps: Sleeps,
    /// Times the protocol refused this socket memory (`sock_exceed_buf_limit`): to send, to
    /// receive.
    pub refused: [u64; 2],
    /// Qdisc drops since the last sample.
    drops_since_sample: u64,
    /// UDP: sampled time with the send buffer at least half full, by where its bytes were
    /// (qdisc, device, unknown): where time asleep in sends waited.
    udp_full_ns: [u64; 3],
    /// UDP: sampled time the socket was not writable (its buffer at least half full at either
    /// end of an interval), put under where the bytes were.
    udp_held_ns: u64,
    /// An skb of this socket queued before the run (so not in the model) left a qdisc, and
    /// none of those queued since has left yet: its older skbs are still ahead of them there.
    prerun_queued: bool,
}

/// The cause of UDP time held by a full buffer, by where its bytes were.
const HELD_AT: [Cause; 3] = [Cause::Qdisc, Cause::Device, Cause::SendBuffer];

impl Watched {
    fn new(e: &Event) -> Watched {
        let mut w = Watched::blank(SocketIdentity::from_event(e));
        w.netns_ino = e.netns_ino;
        w.netns_name = e.netns.clone();
        w
    }

    fn blank(id: SocketIdentity) -> Watched {
        Watched {
            id,
            cgroup: None,
            netns_ino: 0,
            netns_name: None,
            matched: false,
            gone: false,
            netns: None,
            send: SendStats::default(),
            qdisc: QdiscStats::default(),
            device_ns: Samples::default(),
            txq: txq::TxQueueSeen::default(),
            drops: HashMap::new(),
            truesize_max: 0,
            data_skbs: 0,
            queued_max: 0,
            alloc_max: 0,
            sndbuf: 0,
            last: None,
            window_ns: 0,
            times_ns: [0; Cause::ALL.len()],
            tcp: TcpTotals::default(),
            queued_area: 0.0,
            alloc_area: 0.0,
            tsq: None,
            congestion: None,
            throttled_ns: 0,
            busy_carry_ns: 0,
            sleeps: Sleeps::default(),
            refused: [0; 2],
            drops_since_sample: 0,
            udp_full_ns: [0; 3],
            udp_held_ns: 0,
            prerun_queued: false,
        }
    }

    /// Sent (its calls, or skbs larger than bare headers: on kernels without a `sendmsg_ret`
    /// hook the calls are not seen), tried to, or had data outstanding for a tenth of its
    /// window by the kernel's busy timer (a sender stuck since before the run): not a receiver
    /// whose ACKs and FIN alone passed through.
    fn sent_anything(&self) -> bool {
        self.send.calls > 0
            || self.send.blocked_calls > 0
            || self.data_skbs > 0
            || (self.window_ns > 0 && self.tcp.busy_ns * 10 >= self.window_ns)
    }

    fn facts(&self) -> SocketFacts<'_> {
        SocketFacts {
            protocol: self.id.protocol,
            local: self.id.local,
            remote: self.id.remote,
            sender: self.id.sender.as_ref().map(|(t, c)| (*t, c.as_str())),
            cgroup: self.cgroup.as_deref(),
            netns: (self.netns_ino, self.netns_name.as_deref()),
        }
    }

    /// The causes this socket's window is split into, and their times.
    pub fn causes(&self) -> Vec<(Cause, u64)> {
        let list: &[Cause] = match self.id.protocol {
            Protocol::Tcp => &Cause::ALL,
            Protocol::Udp => &Cause::UDP,
        };
        let mut v: Vec<(Cause, u64)> = list
            .iter()
            .map(|&c| (c, self.times_ns[c.index()]))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Every socket seen, and the qdiscs' contents.
pub struct Analyzer {
    filter: SocketFilter,
    sockets: HashMap<u64, Watched>,
    by_ino: HashMap<u64, u64>,
    queues: HashMap<(u32, Name), QdiscQueue>,
    /// The qdisc hooks attached: sockmem knows which bytes are in a qdisc.
    qdisc_seen: bool,
    /// Sampled time with TCP / UDP under memory pressure.
    pub pressure_ns: (u64, u64),
    /// `sock_exceed_buf_limit` events of the matched sockets (receivers too).
    pub refusals: Refusals,
    last_pressure_ns: Option<u64>,
    /// The running kernel caps paced sockets' TSQ limit too (6.16+).
    caps_paced: bool,
    /// Queued skbs whose dequeue never came (see [`QdiscQueue::forget_older_than`]).
    pub stale_skbs: u64,
}

/// What an skb weighs in a qdisc's count of bytes: its truesize (what `sk_wmem_alloc` holds),
/// or its length where the hook could not read the truesize.
fn queued_bytes(skb: &SkbInfo) -> u64 {
    u64::from(if skb.truesize > 0 {
        skb.truesize
    } else {
        skb.len
    })
}

/// An skb no longer than this at `dev_queue_xmit` carries no data: Ethernet, IPv6 and TCP
/// headers with options (a pure ACK or FIN is 66-86 bytes).
const BARE_HEADERS: u32 = 128;

/// An skb in a qdisc for longer than this lost its dequeue event.
const STALE_AFTER_NS: u64 = 10_000_000_000;

impl Analyzer {
    pub fn new(filter: SocketFilter, attached: &dyn Fn(Hook) -> bool, release: &str) -> Analyzer {
        Analyzer {
            filter,
            sockets: HashMap::new(),
            by_ino: HashMap::new(),
            queues: HashMap::new(),
            qdisc_seen: attached(Hook::QdiscEnqueue) && attached(Hook::QdiscDequeue),
            pressure_ns: (0, 0),
            refusals: Refusals::default(),
            last_pressure_ns: None,
            caps_paced: tsq::caps_paced(release),
            stale_skbs: 0,
        }
    }

    /// The sockets that exist as the run starts: those the filters match are watched from the
    /// first interval, before any event of theirs, for a socket stuck since before the run
    /// makes few or none (a sender behind a zero window: rare window probes).
    ///
    /// A thread of a socket's holder asleep in a send call on it at `start_ns` made no event of
    /// that call: it is asleep from `start_ns` until the call returns, or the run ends.
    pub fn seed(&mut self, existing: &[Existing], start_ns: u64) {
        for x in existing {
            let ino = x.ino();
            // A socket already seen by an event is watched.
            if self.by_ino.contains_key(&ino) {
                continue;
            }
            let mut w = Watched::blank(SocketIdentity::from_existing(x));
            w.cgroup = x.cgroup.as_ref().map(|(_, path)| path.clone());
            w.netns = Some(x.sampled.netns);
            w.netns_ino = x.netns_ino;
            w.netns_name = x.netns.clone();
            w.matched = self.filter.matches(&x.facts());
            for &tid in &x.asleep_in_send {
                w.sleeps.asleep_since(tid, start_ns);
                w.send.blocked_calls += 1;
                w.send.asleep_at_start += 1;
            }
            if w.matched {
                self.by_ino.insert(ino, w.id.sock_id);
                self.sockets.insert(w.id.sock_id, w);
            }
        }
    }

    /// The inodes of sockets seen whose sender no event named.
    pub fn unnamed(&self) -> BTreeSet<u64> {
        self.sockets
            .values()
            .filter(|w| w.id.sender.is_none() && w.id.ino != 0)
            .map(|w| w.id.ino)
            .collect()
    }

    /// Names sockets no event named by the process holding them (`owners`, by inode): whose
    /// bytes were ahead in a qdisc, where the filters leave that socket out.
    pub fn name_holders(&mut self, owners: &HashMap<u64, (u32, String)>) {
        for w in self.sockets.values_mut() {
            if w.id.sender.is_none() {
                if let Some((tgid, comm)) = owners.get(&w.id.ino) {
                    w.id.sender = Some((*tgid, Name::new(comm.as_bytes())));
                }
            }
        }
    }

    /// One event (in time order).
    pub fn observe(&mut self, e: &Event) {
        // A seeded socket's first event gives it its identity in events.
        if e.ino != 0 && !self.sockets.contains_key(&e.sock_id) {
            if let Some(&sock_id) = self.by_ino.get(&e.ino) {
                if is_seeded(sock_id) {
                    if let Some(mut w) = self.sockets.remove(&sock_id) {
                        w.id.sock_id = e.sock_id;
                        self.sockets.insert(e.sock_id, w);
                    }
                }
            }
        }
        let w = self
            .sockets
            .entry(e.sock_id)
            .or_insert_with(|| Watched::new(e));
        if w.id.ino == 0 && e.ino != 0 {
            w.id.ino = e.ino;
        }
        if w.id.ino != 0 {
            self.by_ino.insert(w.id.ino, e.sock_id);
        }
        // Ports change when a socket connects after it was first seen (UDP).
        w.id.local = e.local;
        w.id.remote = e.remote;
        if matches!(e.owner, Owner::Sendmsg | Owner::Current) && e.tgid != 0 {
            w.id.sender = Some((e.tgid, e.comm));
            if e.cgroup_id != 0 {
                w.cgroup = e.cgroup.clone();
            }
        }
        if !w.matched {
            w.matched = self.filter.matches(&w.facts());
        }
        if !e.freed {
            w.queued_max = w.queued_max.max(e.wmem_queued.max(0) as u64);
            w.alloc_max = w.alloc_max.max(e.wmem_alloc.max(0) as u64);
            if e.sndbuf > 0 {
                w.sndbuf = e.sndbuf as u64;
            }
        }
        // The truesize TSQ weighs is the transmitted skb's (the clone shares it): taken where
        // the socket hands skbs down, not from received or freed ones.
        if let (Some(skb), Hook::WmemCharge | Hook::DevQueueXmit) = (&e.skb, e.hook) {
            w.truesize_max = w.truesize_max.max(u64::from(skb.truesize));
            if e.hook == Hook::DevQueueXmit && skb.len > BARE_HEADERS {
                w.data_skbs += 1;
            }
        }
        match e.hook {
            Hook::SendmsgReturn => {
                w.send.calls += 1;
                w.send.bytes += e.value.max(0) as u64;
                if let Some(ns) = w.sleeps.woke(e.pid, e.ts_ns) {
                    w.send.blocked_ns += ns;
                } else {
                    w.sleeps.returned(e.ts_ns, e.duration_ns);
                }
            }
            Hook::SendBlocked => {
                // A call asleep since before the run: its span reaches before the run, which
                // counts from the start only.
                if let Some(ns) = w.sleeps.woke(e.pid, e.ts_ns) {
                    w.send.blocked_ns += ns;
                } else {
                    w.send.blocked_calls += 1;
                    w.send.blocked_ns += e.duration_ns;
                    w.sleeps.blocked(e.ts_ns, e.duration_ns);
                }
            }
            Hook::DriverDone if e.duration_ns > 0 => w.device_ns.push(e.duration_ns),
            Hook::DriverXmit => w.txq.add(e.value, e.aux),
            Hook::SockDestroy => w.gone = true,
            Hook::SockExceedBufLimit => {
                let recv = e.value != 0;
                w.refused[usize::from(recv)] += 1;
                if w.matched {
                    self.refusals.count(w.id.protocol, recv);
                }
            }
            Hook::QdiscEnqueue => self.enqueue(e),
            Hook::QdiscDequeue => self.dequeue(e, false),
            Hook::SkbDrop => self.dequeue(e, true),
            _ => {}
        }
    }

    fn enqueue(&mut self, e: &Event) {
        let Some(skb) = &e.skb else { return };
        let bytes = queued_bytes(skb);
        let ahead = self
            .queues
            .entry((skb.ifindex, skb.iface))
            .or_default()
            .enqueue(skb.skb, e.sock_id, bytes, skb.len, e.ts_ns);
        if let Some(w) = self.sockets.get_mut(&e.sock_id) {
            w.qdisc.enqueues += 1;
            for (s, b) in ahead.by_socket {
                *w.qdisc.ahead.entry(s).or_default() += b;
                w.qdisc.ahead_total += b;
            }
        }
    }

    fn dequeue(&mut self, e: &Event, dropped: bool) {
        let Some(skb) = &e.skb else { return };
        let bytes = queued_bytes(skb);
        let queue = self.queues.get_mut(&(skb.ifindex, skb.iface));
        let left = queue
            .and_then(|q| {
                q.dequeue(skb.skb, e.ts_ns).or_else(|| {
                    (!dropped)
                        .then(|| q.dequeue_segment(e.sock_id, bytes, skb.len, e.ts_ns))
                        .flatten()
                })
            })
            // A drop reports the skb's device only sometimes: look in every queue.
            .or_else(|| {
                dropped
                    .then(|| {
                        self.queues
                            .values_mut()
                            .find_map(|q| q.dequeue(skb.skb, e.ts_ns))
                    })
                    .flatten()
            });
        if dropped {
            if let Some(w) = self.sockets.get_mut(&e.sock_id) {
                let reason = e.value_name.clone().unwrap_or_else(|| e.value.to_string());
                // Dropped from a qdisc, or by one at its door (the skb never entered).
                if left.is_some() || reason.starts_with("QDISC") {
                    w.qdisc.drops += 1;
                    w.drops_since_sample += 1;
                }
                *w.drops.entry(reason).or_default() += 1;
            }
        } else if let Some((sock, sojourn)) = left {
            if let Some(w) = self.sockets.get_mut(&sock) {
                w.qdisc.sojourn_ns.push(sojourn);
                w.prerun_queued = false;
            }
        } else if let Some(w) = self.sockets.get_mut(&e.sock_id) {
            // Not one the model saw enter: queued before the run (FIFO: ahead of the rest).
            w.prerun_queued = w.qdisc.sojourn_ns.count() == 0;
        }
    }

    /// The inode numbers of the sockets to sample: matched, alive, with a file.
    pub fn wanted(&self) -> BTreeSet<u64> {
        self.sockets
            .values()
            .filter(|w| w.matched && !w.gone && w.id.ino != 0)
            .map(|w| w.id.ino)
            .collect()
    }

    /// This socket's bytes in qdiscs now.
    fn in_qdisc(&self, sock_id: u64) -> u64 {
        self.queues.values().map(|q| q.bytes_of(sock_id)).sum()
    }

    /// The kernel's view of the wanted sockets at `now_ns`; `limit_output_bytes` gives a
    /// namespace's TSQ cap. A wanted socket missing from `samples` is closed.
    pub fn sample(
        &mut self,
        now_ns: u64,
        samples: &[Sampled],
        pressure: (bool, bool),
        limit_output_bytes: &mut dyn FnMut(u64) -> Option<u64>,
    ) {
        if let Some(prev) = self.last_pressure_ns {
            let dt = now_ns.saturating_sub(prev);
            self.pressure_ns.0 += if pressure.0 { dt } else { 0 };
            self.pressure_ns.1 += if pressure.1 { dt } else { 0 };
        }
        self.last_pressure_ns = Some(now_ns);
        for q in self.queues.values_mut() {
            self.stale_skbs += q.forget_older_than(now_ns.saturating_sub(STALE_AFTER_NS)) as u64;
        }
        let mut seen = BTreeSet::new();
        for s in samples {
            let Some(&id) = self.by_ino.get(&s.mem.ino) else {
                continue;
            };
            seen.insert(id);
            let in_qdisc = self.in_qdisc(id);
            let qdisc_seen = self.qdisc_seen;
            let Some(w) = self.sockets.get_mut(&id) else {
                continue;
            };
            if w.netns.is_none() {
                w.netns = Some(s.netns);
            }
            let lob = match w.id.protocol {
                Protocol::Tcp => limit_output_bytes(s.netns),
                Protocol::Udp => None,
            };
            account(w, now_ns, s, in_qdisc, qdisc_seen, lob, self.caps_paced);
        }
        let wanted = self.wanted();
        for w in self.sockets.values_mut() {
            if w.matched && !w.gone && wanted.contains(&w.id.ino) && !seen.contains(&w.id.sock_id) {
                w.gone = true;
            }
        }
    }

    /// Sockets to report: matched, watched for some time, and with something to send (a
    /// receiver's ACKs alone do not make a sender); longest window first.
    pub fn reported(&self) -> Vec<&Watched> {
        let mut v: Vec<&Watched> = self
            .sockets
            .values()
            .filter(|w| w.matched && w.window_ns > 0 && w.sent_anything())
            .collect();
        v.sort_by(|a, b| {
            b.window_ns
                .cmp(&a.window_ns)
                .then(a.id.sock_id.cmp(&b.id.sock_id))
        });
        v
    }

    /// Matched sockets watched that had nothing to send.
    pub fn idle(&self) -> usize {
        self.sockets
            .values()
            .filter(|w| w.matched && w.window_ns > 0 && !w.sent_anything())
            .count()
    }

    /// Matched sockets never sampled twice (too short-lived, or without a file).
    pub fn unsampled(&self) -> usize {
        self.sockets
            .values()
            .filter(|w| w.matched && w.window_ns == 0)
            .count()
    }

    /// Every socket seen (also those the filters leave out, from their qdisc events).
    pub fn seen(&self) -> usize {
        self.sockets.len()
    }

    pub fn socket(&self, sock_id: u64) -> Option<&Watched> {
        self.sockets.get(&sock_id)
    }
}

/// `sk_state` of a socket whose SYN is not answered yet.
const TCP_SYN_SENT: u8 = 2;

/// Puts the interval since the socket's previous sample under its causes.
fn account(
    w: &mut Watched,
    now_ns: u64,
    s: &Sampled,
    in_qdisc: u64,
    qdisc_seen: bool,
    limit_output_bytes: Option<u64>,
    caps_paced: bool,
) {
    let m = &s.mem;
    let tcp = m.tcp.as_ref();
    // While skbs queued before the run are leaving, the model does not know what is in the
    // qdisc: all the socket's bytes below it may be.
    let in_qdisc = if w.prerun_queued {
        in_qdisc.max(u64::from(m.wmem_alloc))
    } else {
        in_qdisc
    };
    w.sndbuf = u64::from(m.sndbuf);
    w.queued_max = w.queued_max.max(u64::from(m.wmem_queued));
    w.alloc_max = w.alloc_max.max(u64::from(m.wmem_alloc));
    if let (Some(lob), Some(rate)) = (limit_output_bytes, tcp.and_then(|t| t.pacing_rate)) {
        if w.truesize_max > 0 {
            // BBR paces (sk_pacing_status); the fq qdisc would too, which sockmem cannot tell.
            let paced = tcp.and_then(|t| t.congestion.as_deref()) == Some("bbr");
            let capped = caps_paced || !paced;
            w.tsq = Some(TsqLimit::new(lob, rate, w.truesize_max, capped));
        }
    }
    if let Some(c) = tcp.and_then(|t| t.congestion.as_ref()) {
        if w.congestion.as_ref() != Some(c) {
            w.congestion = Some(c.clone());
        }
    }
    let cur = LastSample {
        t_ns: now_ns,
        queued: u64::from(m.wmem_queued),
        alloc: u64::from(m.wmem_alloc),
        busy_us: tcp.and_then(|t| t.busy_time),
        rwnd_us: tcp.and_then(|t| t.rwnd_limited),
        sndbuf_us: tcp.and_then(|t| t.sndbuf_limited),
        bytes_acked: tcp.and_then(|t| t.bytes_acked),
    };
    let asleep = w.sleeps.close(now_ns);
    let Some(prev) = w.last.replace(cur.clone()) else {
        return;
    };
    let dt = now_ns.saturating_sub(prev.t_ns);
    if dt == 0 {
        return;
    }
    let drops = std::mem::take(&mut w.drops_since_sample);
    w.window_ns += dt;
    w.queued_area += (prev.queued + cur.queued) as f64 / 2.0 * dt as f64;
    w.alloc_area += (prev.alloc + cur.alloc) as f64 / 2.0 * dt as f64;
    // The kernel's timers, µs → ns, as they moved (not clipped: their sums are `ss -ti`'s).
    let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) * 1000),
        _ => None,
    };
    match (w.id.protocol, tcp) {
        (Protocol::Tcp, Some(t)) => {
            let busy_raw = delta(prev.busy_us, cur.busy_us);
            let rwnd = delta(prev.rwnd_us, cur.rwnd_us).unwrap_or(0);
            let sndbuf = delta(prev.sndbuf_us, cur.sndbuf_us).unwrap_or(0);
            w.tcp.has_timers = busy_raw.is_some();
            w.tcp.has_snd_wnd = t.snd_wnd.is_some();
            w.tcp.busy_ns += busy_raw.unwrap_or(0);
            w.tcp.rwnd_limited_ns += rwnd;
            w.tcp.sndbuf_limited_ns += sndbuf;
            if let (Some(a), Some(b)) = (prev.bytes_acked, cur.bytes_acked) {
                *w.tcp.bytes_acked.get_or_insert(0) += b.saturating_sub(a);
            }
            let unlimited = |r: &u64| *r != u64::MAX && *r != 0;
            w.tcp.pacing_rate = t.pacing_rate.filter(unlimited);
            w.tcp.max_pacing_rate = t.max_pacing_rate.filter(unlimited);
            // The kernel keeps sk_pacing_rate at most the cap: at it, the cap binds.
            let capped =
                matches!((w.tcp.pacing_rate, w.tcp.max_pacing_rate), (Some(r), Some(m)) if r >= m);
            // Without the timers (before 4.10) the whole interval is judged by the state.
            let busy = match busy_raw {
                Some(b) => {
                    let b = b + w.busy_carry_ns;
                    let fits = b.min(dt);
                    w.busy_carry_ns = b - fits;
                    fits
                }
                None => dt,
            };
            // Before the handshake completes the peer has advertised no window yet.
            let snd_wnd = t.snd_wnd.filter(|_| m.state != TCP_SYN_SENT);
            if snd_wnd == Some(0) {
                w.tcp.zero_window_ns += dt;
            }
            if let Some(wnd) = snd_wnd {
                w.tcp.snd_wnd_min = Some(w.tcp.snd_wnd_min.map_or(wnd, |m| m.min(wnd)));
            }
            let unacked = t.unacked.unwrap_or(0);
            let cwnd = t.snd_cwnd.unwrap_or(0);
            w.tcp.cwnd_area += f64::from(cwnd) * dt as f64;
            w.tcp.in_flight_area += f64::from(unacked) * dt as f64;
            let state = TcpState {
                wmem_alloc: cur.alloc,
                unacked,
                cwnd,
                mss: t.snd_mss.unwrap_or(0),
                snd_wnd,
                rwnd_limited_moved: rwnd > 0,
                // The kernel's timer; where it did not move, sockmem's own count of time
                // asleep in send calls decides between `send_buffer` and `sending` below (the
                // timer does not always move where `sendmsg` waits for memory).
                sndbuf_limited_moved: sndbuf > 0,
                in_qdisc,
                qdisc_seen,
                pacing_capped_with_data: capped && t.notsent_bytes.is_some_and(|n| n > 0),
            };
            let mut cause = classify_busy(&state, w.tsq.as_ref());
            w.times_ns[Cause::Application.index()] += dt - busy;
            if cause == Cause::Sending {
                let p = Pending {
                    from: prev.t_ns,
                    to: now_ns,
                    busy,
                    asleep,
                };
                if p.send_buffer_limited() {
                    cause = Cause::SendBuffer;
                } else if busy > 0 {
                    // `sending` until the calls over it have returned and said how long they
                    // slept in it.
                    if let Some(old) = w.sleeps.defer(p) {
                        judge_sleeps(w, &old);
                    }
                }
            }
            w.times_ns[cause.index()] += busy;
            if w.tsq.is_some_and(|l| l.binds(cur.alloc)) {
                w.throttled_ns += busy;
            }
        }
        _ => {
            // UDP. Where the buffer's bytes are: the qdisc, past it (the device), not known.
            let at = if !qdisc_seen {
                2
            } else if in_qdisc * 2 >= cur.alloc {
                0
            } else {
                1
            };
            let unwritable = |alloc: u64| alloc > 0 && alloc * 2 >= w.sndbuf;
            // Not writable at a sample (`sock_writeable`: alloc < sndbuf / 2): whether the
            // sender sleeps in send or waits in poll()/select() for room, the buffer held it
            // (its bytes are where they wait). At either end: a sender woken at the threshold
            // refills the buffer within microseconds, a sample between the two is chance. Otherwise the application's time, unless the
            // qdisc dropped its datagrams meanwhile (it sends faster than the path takes
            // them: they are lost, not waiting). Time asleep in sends outside held intervals
            // is moved out of the application's at the end ([`Analyzer::finish`]): a send call
            // is reported when it returns, long after the samples it spanned.
            let cause = if unwritable(prev.alloc) || unwritable(cur.alloc) {
                w.udp_held_ns += dt;
                HELD_AT[at]
            } else if drops > 0 {
                Cause::Qdisc
            } else {
                Cause::Application
            };
            w.times_ns[cause.index()] += dt;
            if unwritable(cur.alloc) {
                w.udp_full_ns[at] += dt;
            }
        }
    }
}

/// A TCP interval put under `sending` moves to `send_buffer` if its sender turned out to be
/// asleep in send calls at least half its busy time.
fn judge_sleeps(w: &mut Watched, p: &Pending) {
    if p.send_buffer_limited() {
        let busy = p.busy.min(w.times_ns[Cause::Sending.index()]);
        w.times_ns[Cause::Sending.index()] -= busy;
        w.times_ns[Cause::SendBuffer.index()] += busy;
    }
}

impl Analyzer {
    /// Ends the run: every socket's sleeps in send calls are all known. A TCP interval still
    /// pending is judged; each UDP socket's time asleep (within its window) moves from
    /// `application` to where its full buffer's bytes were: the qdisc, the device, or not
    /// known (`send_buffer`), in the shares the samples saw.
    pub fn finish(&mut self) {
        for w in self.sockets.values_mut() {
            for p in w.sleeps.drain() {
                judge_sleeps(w, &p);
            }
            if w.id.protocol != Protocol::Udp {
                continue;
            }
            let app = Cause::Application.index();
            // Sleeps in held intervals are already under the buffer's place.
            let moved = w
                .sleeps
                .in_window_ns
                .saturating_sub(w.udp_held_ns)
                .min(w.times_ns[app]);
            w.times_ns[app] -= moved;
            let full: u64 = w.udp_full_ns.iter().sum();
            let part = |n: u64| {
                if full == 0 {
                    0
                } else {
                    (u128::from(moved) * u128::from(n) / u128::from(full)) as u64
                }
            };
            let (q, d) = (part(w.udp_full_ns[0]), part(w.udp_full_ns[1]));
            w.times_ns[Cause::Qdisc.index()] += q;
            w.times_ns[Cause::Device.index()] += d;
            w.times_ns[Cause::SendBuffer.index()] += moved - q - d;
        }
    }
}
