//! `top`'s per-socket table: the live sockets ([`LiveSockets`]: identity, sender, last
//! counters; those already holding bytes at the start seeded from sock_diag), with what `top`
//! adds per socket from the events (time asleep in sends, qdisc sojourn, drops, interface),
//! read out at every refresh into rows with what moved over the interval.
//!
//! Bounded for a run of days: a socket the kernel destroyed stays [`GRACE_NS`] (long enough to
//! be seen closed) and then goes; one with no event for [`IDLE_NS`] goes too (UDP sockets have
//! no destroy event) unless it held bytes and sock_diag still finds it; past [`MAX_SOCKETS`]
//! the longest idle go first.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use sockmem_common::Hook;

use crate::{
    cli::SortKey,
    pipeline::{
        decode::{Event, Name},
        live_sockets::{LiveSocket, LiveSockets, Retention, WhenFull},
        seed::Existing,
        why::samples::Samples,
    },
};

/// How long a closed socket stays in the table.
pub const GRACE_NS: u64 = 3_000_000_000;
/// How long a socket stays without an event (one that held bytes: without sock_diag finding it).
pub const IDLE_NS: u64 = 30_000_000_000;
/// Sockets the table holds at most.
pub const MAX_SOCKETS: usize = 10_000;
/// A send call open this long at a refresh is asleep (copying 64 KiB takes microseconds).
const OPEN_CALL_ASLEEP_NS: u64 = 10_000_000;

/// One socket at a refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRow {
    pub sock_id: u64,
    pub protocol: &'static str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The last sender seen (`sendmsg`).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The sender's cgroup v2 path (`id:N` when the id is not in the tree), and the socket's
    /// network namespace (its `ip netns` name, else `ino:N`).
    pub cgroup: Option<String>,
    pub netns: Option<String>,
    /// The interface most of its skbs went through.
    pub iface: Option<String>,
    /// The counters as its last event read them (`sk_wmem_queued`, `sk_wmem_alloc`, `sk_sndbuf`).
    pub queued: i64,
    pub alloc: i64,
    pub sndbuf: i64,
    /// Change per second over the interval; `None` in the socket's first refresh (it may have
    /// held those bytes long before its first event).
    pub queued_rate: Option<f64>,
    pub alloc_rate: Option<f64>,
    /// Time within the interval its sender spent asleep in send calls: calls that ended
    /// (`send_blocked`), a TCP call still open at the refresh after [`OPEN_CALL_ASLEEP_NS`], and
    /// a call found asleep as the run started, from the start until it returns.
    pub blocked_ns: u64,
    /// Qdisc sojourn of its skbs dequeued within the interval.
    pub sojourn_p99_ns: Option<u64>,
    pub sojourn_count: u64,
    /// Drops of its skbs since it entered the table, and within the interval.
    pub drops: u64,
    pub drops_new: u64,
    pub closed: bool,
}

/// The table at one refresh.
#[derive(Clone, Debug, Default)]
pub struct Refresh {
    pub interval_ns: u64,
    pub rows: Vec<LiveRow>,
    /// Events taken in over the interval, per second.
    pub events_per_s: f64,
    /// Events the ring buffer had no room for, since the start.
    pub lost: u64,
}

impl Refresh {
    pub fn queued_total(&self) -> i64 {
        self.rows.iter().map(|r| r.queued).sum()
    }
    pub fn alloc_total(&self) -> i64 {
        self.rows.iter().map(|r| r.alloc).sum()
    }
}

impl LiveRow {
    /// `local > remote protocol`, as `report` names a socket.
    pub fn socket(&self) -> String {
        format!("{} > {} {}", self.local, self.remote, self.protocol)
    }

    /// Whether `text` is in its socket, sender, cgroup, namespace or interface (`top`'s filter
    /// key).
    pub fn contains(&self, text: &str) -> bool {
        let has = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains(text));
        text.is_empty()
            || self.socket().contains(text)
            || has(&self.comm)
            || has(&self.cgroup)
            || has(&self.netns)
            || self.pid.is_some_and(|p| p.to_string() == text)
            || has(&self.iface)
    }
}

/// Sorts by `key`: largest first (`port`, `pid`: smallest first), `reverse` the other way; ties
/// by socket id, so rows do not jump between refreshes.
pub fn sort_rows(rows: &mut [LiveRow], key: SortKey, reverse: bool) {
    let value = |r: &LiveRow| -> f64 {
        match key {
            SortKey::Queued => r.queued as f64,
            SortKey::Alloc => r.alloc as f64,
            SortKey::Sndbuf => r.sndbuf as f64,
            SortKey::QueuedRate => r.queued_rate.unwrap_or(0.0),
            SortKey::AllocRate => r.alloc_rate.unwrap_or(0.0),
            SortKey::Blocked => r.blocked_ns as f64,
            SortKey::Sojourn => r.sojourn_p99_ns.map_or(-1.0, |v| v as f64),
            SortKey::Drops => r.drops as f64,
            SortKey::Port => -f64::from(r.local.port()),
            SortKey::Pid => -f64::from(r.pid.unwrap_or(u32::MAX)),
        }
    };
    rows.sort_by(|a, b| {
        let o = value(b).total_cmp(&value(a));
        let o = if reverse { o.reverse() } else { o };
        o.then(a.sock_id.cmp(&b.sock_id))
    });
}

/// A socket's figures at the previous refresh: the base of the rates.
#[derive(Clone, Copy, Debug, Default)]
struct Before {
    queued: i64,
    alloc: i64,
    drops: u64,
}

/// What `top` adds to a live socket from its events.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// Qdisc sojourns of its skbs dequeued since the last refresh.
    sojourn: Samples,
    drops: u64,
    /// skb events per interface.
    ifaces: HashMap<Name, u64>,
}

impl Figures {
    /// The interface most of its skbs went through (ties: the first name).
    fn iface(&self) -> Option<String> {
        self.ifaces
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.as_str().cmp(a.0.as_str())))
            .map(|(name, _)| name.as_str().to_owned())
    }
}

const TOP_RETENTION: Retention = Retention {
    closed_ns: GRACE_NS,
    idle_ns: IDLE_NS,
    max_sockets: MAX_SOCKETS,
    when_full: WhenFull::EvictIdlest,
};

pub struct LiveTable {
    sockets: LiveSockets,
    figures: HashMap<u64, Figures>,
    /// Skbs in a qdisc: their socket and when they were enqueued, by skb address.
    in_qdisc: HashMap<u64, (u64, u64)>,
    before: HashMap<u64, Before>,
    /// TCP send calls in progress: since when (their first `tcp_sendmsg` chunk).
    open_sends: HashMap<u64, u64>,
    /// Time asleep in calls that ended within the interval.
    blocked: HashMap<u64, u64>,
    events: u64,
    last_refresh_ns: u64,
    events_at_refresh: u64,
}

impl LiveTable {
    pub fn new(start_ns: u64) -> LiveTable {
        LiveTable {
            sockets: LiveSockets::new(TOP_RETENTION),
            figures: HashMap::new(),
            in_qdisc: HashMap::new(),
            before: HashMap::new(),
            open_sends: HashMap::new(),
            blocked: HashMap::new(),
            events: 0,
            last_refresh_ns: start_ns,
            events_at_refresh: 0,
        }
    }

    /// A socket there before the run (the caller applied the filters), shown from the first
    /// refresh with its counters as sock_diag read them. A thread of its holder asleep in a send
    /// call on it (the call began before the run, so no event tells of it until it returns) is
    /// a call open since the run's start.
    pub fn seed(&mut self, x: &Existing, now_ns: u64) {
        self.sockets.seed(x, now_ns);
        if !x.asleep_in_send.is_empty() {
            self.open_sends.insert(x.sock_id, self.last_refresh_ns);
        }
    }

    /// Events taken in since the start.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// One event (names filled in), in time order.
    pub fn observe(&mut self, e: &Event) {
        self.events += 1;
        let seen = self.sockets.observe(e);
        let sock = e.sock_id;
        if let Some(was) = seen.was {
            // A seeded socket's first event: its figures so far go with it.
            if let Some(b) = self.before.remove(&was) {
                self.before.insert(sock, b);
            }
            if let Some(f) = self.figures.remove(&was) {
                self.figures.insert(sock, f);
            }
            if let Some(t) = self.open_sends.remove(&was) {
                self.open_sends.entry(sock).or_insert(t);
            }
        }
        if !seen.live {
            return;
        }
        let f = self.figures.entry(sock).or_default();
        if let Some(skb) = &e.skb {
            if !skb.iface.as_str().is_empty() {
                *f.ifaces.entry(skb.iface).or_default() += 1;
            }
            match e.hook {
                Hook::QdiscEnqueue => {
                    self.in_qdisc.insert(skb.skb, (sock, e.ts_ns));
                }
                Hook::QdiscDequeue => {
                    if let Some((s, t)) = self.in_qdisc.remove(&skb.skb) {
                        if s == sock {
                            f.sojourn.push(e.ts_ns.saturating_sub(t));
                        }
                    }
                }
                Hook::SkbFree | Hook::SkbDrop => {
                    self.in_qdisc.remove(&skb.skb);
                }
                _ => {}
            }
        }
        match e.hook {
            Hook::SkbDrop => f.drops += 1,
            Hook::TcpSendmsg if e.send_start => {
                self.open_sends.insert(sock, e.ts_ns);
            }
            Hook::SendmsgReturn => {
                self.open_sends.remove(&sock);
            }
            Hook::SendBlocked => {
                // The sleep may have begun in an earlier interval, which counted it as an open
                // call: only its part within this one.
                let since = e.ts_ns.saturating_sub(self.last_refresh_ns);
                *self.blocked.entry(sock).or_default() += e.duration_ns.min(since);
                self.open_sends.remove(&sock);
            }
            Hook::SockDestroy => {
                self.open_sends.remove(&sock);
            }
            _ => {}
        }
    }

    /// The silent sockets to look up with sock_diag before [`LiveTable::refresh`]
    /// ([`LiveSockets::silent_holders`]).
    pub fn silent_holders(&self, now_ns: u64) -> Vec<crate::kernel::sampler::SoughtSocket> {
        self.sockets.silent_holders(now_ns)
    }

    /// What sock_diag found of them ([`LiveSockets::confirm`]).
    pub fn confirm(&mut self, found: &[crate::kernel::sampler::Sampled], now_ns: u64) {
        self.sockets.confirm(found, now_ns);
    }

    /// The rows since the previous refresh (unsorted); forgets what has been shown long enough.
    pub fn refresh(&mut self, now_ns: u64, lost: u64) -> Refresh {
        let interval_ns = now_ns.saturating_sub(self.last_refresh_ns).max(1);
        let secs = interval_ns as f64 / 1e9;
        let events = self.events - self.events_at_refresh;
        let gone: HashSet<u64> = self.sockets.prune(now_ns).into_iter().collect();
        if !gone.is_empty() {
            for s in &gone {
                self.figures.remove(s);
                self.before.remove(s);
                self.open_sends.remove(s);
            }
            self.in_qdisc.retain(|_, (s, _)| !gone.contains(s));
        }
        let mut rows = Vec::with_capacity(self.sockets.count());
        for s in self.sockets.iter() {
            let blocked_ns = self.blocked_ns(s.id.sock_id, now_ns, interval_ns);
            let f = self.figures.entry(s.id.sock_id).or_default();
            let sojourn = std::mem::take(&mut f.sojourn);
            let before = self.before.get(&s.id.sock_id).copied();
            let row = row_of(s, f, &sojourn, before, secs, blocked_ns);
            self.before.insert(
                s.id.sock_id,
                Before {
                    queued: row.queued,
                    alloc: row.alloc,
                    drops: row.drops,
                },
            );
            rows.push(row);
        }
        self.blocked.clear();
        self.last_refresh_ns = now_ns;
        self.events_at_refresh = self.events;
        Refresh {
            interval_ns,
            rows,
            events_per_s: events as f64 / secs,
            lost,
        }
    }

    /// Time asleep in send calls within the interval: calls that ended, and a call open for
    /// [`OPEN_CALL_ASLEEP_NS`] at the refresh.
    fn blocked_ns(&self, sock: u64, now_ns: u64, interval_ns: u64) -> u64 {
        let open_asleep = self
            .open_sends
            .get(&sock)
            .filter(|&&t| now_ns.saturating_sub(t) >= OPEN_CALL_ASLEEP_NS)
            .map(|&t| now_ns - t.max(self.last_refresh_ns))
            .unwrap_or(0);
        (self.blocked.get(&sock).copied().unwrap_or(0) + open_asleep).min(interval_ns)
    }
}

/// A live socket's row: `before`, its figures at the previous refresh (`None`: its first).
fn row_of(
    s: &LiveSocket,
    f: &Figures,
    sojourn: &Samples,
    before: Option<Before>,
    secs: f64,
    blocked_ns: u64,
) -> LiveRow {
    let b = before.unwrap_or_default();
    LiveRow {
        sock_id: s.id.sock_id,
        protocol: s.id.protocol.name(),
        local: s.id.local,
        remote: s.id.remote,
        pid: s.id.sender.map(|(pid, _)| pid),
        comm: s.id.sender.map(|(_, comm)| comm.as_str().to_owned()),
        cgroup: s.cgroup().map(|c| c.into_owned()),
        netns: s.netns().map(|n| n.into_owned()),
        iface: f.iface(),
        queued: s.queued,
        alloc: s.alloc,
        sndbuf: s.sndbuf,
        queued_rate: before.map(|b| (s.queued - b.queued) as f64 / secs),
        alloc_rate: before.map(|b| (s.alloc - b.alloc) as f64 / secs),
        blocked_ns,
        sojourn_p99_ns: (sojourn.count() > 0).then(|| sojourn.percentile(0.99)),
        sojourn_count: sojourn.count(),
        drops: f.drops,
        drops_new: f.drops.saturating_sub(b.drops),
        closed: s.closed_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::event::{FLAG_HAS_SKB, FLAG_SEND_START};

    fn event(sock: u64, hook: Hook, ts_ns: u64, q: i32, a: i32) -> Event {
        let mut raw = raw_event(hook);
        (raw.sock_id, raw.ts_ns, raw.wmem_queued, raw.wmem_alloc) = (sock, ts_ns, q, a);
        Event::from_raw(&raw).unwrap()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn rates_sojourn_and_blocked_time_are_per_interval() {
        let mut t = LiveTable::new(0);
        t.observe(&event(1, Hook::TcpSendmsg, S / 2, 1000, 500));
        let r = t.refresh(S, 0);
        assert_eq!(r.rows.len(), 1);
        assert_eq!((r.rows[0].queued, r.rows[0].queued_rate), (1000, None));
        assert_eq!(r.events_per_s, 1.0);

        // An skb 2 ms in the qdisc; a call that slept 3 s, of which 0.4 s in this interval.
        let mut skb = raw_event(Hook::QdiscEnqueue);
        (skb.sock_id, skb.ts_ns, skb.skb, skb.flags) = (1, S + 10, 0x77, FLAG_HAS_SKB);
        t.observe(&Event::from_raw(&skb).unwrap());
        (skb.hook, skb.ts_ns) = (Hook::QdiscDequeue as u8, S + 10 + 2_000_000);
        t.observe(&Event::from_raw(&skb).unwrap());
        let mut blocked = event(1, Hook::SendBlocked, S + 400_000_000, 3000, 500);
        blocked.duration_ns = 3 * S;
        t.observe(&blocked);
        let r = t.refresh(2 * S, 0);
        let row = &r.rows[0];
        assert_eq!(
            (row.queued, row.queued_rate, row.alloc_rate),
            (3000, Some(2000.0), Some(0.0))
        );
        assert_eq!(
            (row.sojourn_p99_ns, row.sojourn_count),
            (Some(2_000_000), 1)
        );
        assert_eq!(row.blocked_ns, 400_000_000);

        // Nothing new: no sojourn, no blocked time; an open call counts from the interval start.
        let mut start = raw_event(Hook::TcpSendmsg);
        (start.sock_id, start.ts_ns, start.flags) = (1, 2 * S + S / 4, FLAG_SEND_START);
        (start.wmem_queued, start.wmem_alloc) = (3000, 500);
        t.observe(&Event::from_raw(&start).unwrap());
        let row = t.refresh(3 * S, 0).rows[0].clone();
        assert_eq!((row.sojourn_p99_ns, row.queued_rate), (None, Some(0.0)));
        assert_eq!(row.blocked_ns, 3 * S / 4);
        let row = t.refresh(4 * S, 0).rows[0].clone();
        assert_eq!(row.blocked_ns, S, "asleep the whole interval");
    }

    #[test]
    fn closed_and_idle_sockets_leave() {
        let mut t = LiveTable::new(0);
        t.observe(&event(1, Hook::TcpSendmsg, 1, 100, 0));
        t.observe(&event(2, Hook::TcpSendmsg, 1, 0, 0));
        t.observe(&event(1, Hook::SockDestroy, S, 0, 0));
        let r = t.refresh(2 * S, 0);
        assert!(r.rows.iter().any(|r| r.sock_id == 1 && r.closed));
        let r = t.refresh(S + GRACE_NS + 1, 0);
        assert_eq!(
            r.rows.iter().map(|r| r.sock_id).collect::<Vec<_>>(),
            vec![2]
        );
        let r = t.refresh(IDLE_NS + 2, 0);
        assert!(r.rows.is_empty(), "idle with nothing queued");
        // Forgotten: a late ACK does not bring it back; a send starts it anew.
        t.observe(&event(1, Hook::TcpAck, IDLE_NS + 3, 10, 0));
        assert!(t.refresh(IDLE_NS + 4, 0).rows.is_empty());
        t.observe(&event(1, Hook::TcpSendmsg, IDLE_NS + 5, 10, 0));
        assert_eq!(t.refresh(IDLE_NS + 6, 0).rows[0].queued, 10);
    }

    #[test]
    fn a_seeded_socket_shows_at_once_and_takes_its_events_identity() {
        let mut t = LiveTable::new(0);
        let x = Existing::example(77, 5000, 2000);
        t.seed(&x, 0);
        let r = t.refresh(S, 0);
        let row = &r.rows[0];
        assert_eq!(
            (row.sock_id, row.queued, row.alloc),
            (x.sock_id, 5000, 2000)
        );
        assert_eq!((row.pid, row.comm.as_deref()), (Some(42), Some("holder")));
        assert_eq!(row.cgroup.as_deref(), Some("/holders"));
        assert_eq!(row.queued_rate, None);
        // Silent past the idle time, but holding bytes: looked up, found, it stays.
        let sought = t.silent_holders(IDLE_NS + S);
        assert_eq!(sought.iter().map(|s| s.ino).collect::<Vec<_>>(), [77]);
        t.confirm(std::slice::from_ref(&x.sampled), IDLE_NS + S);
        let r = t.refresh(IDLE_NS + S, 0);
        assert_eq!(r.rows.len(), 1);
        // Its first event, under the identity events carry, with the sender's name.
        let mut e = event(9, Hook::TcpAck, IDLE_NS + 2 * S, 4000, 0);
        e.ino = 77;
        t.observe(&e);
        let r = t.refresh(IDLE_NS + 3 * S, 0);
        assert_eq!(r.rows.len(), 1, "{:?}", r.rows);
        let row = &r.rows[0];
        assert_eq!((row.sock_id, row.queued), (9, 4000));
        assert_eq!((row.pid, row.comm.as_deref()), (Some(42), Some("holder")));
        assert_eq!(
            row.queued_rate,
            Some(-500.0),
            "the base of its rate went with it"
        );
    }

    #[test]
    fn a_call_asleep_before_the_run_counts_from_the_start_until_it_returns() {
        let mut t = LiveTable::new(0);
        let mut x = Existing::example(77, 5000, 2000);
        x.asleep_in_send = vec![4242];
        t.seed(&x, 0);
        assert_eq!(
            t.refresh(S, 0).rows[0].blocked_ns,
            S,
            "asleep the whole interval"
        );
        assert_eq!(t.refresh(2 * S, 0).rows[0].blocked_ns, S);
        // It returns 0.3 s into the third interval, under the identity events carry, having
        // reported a sleep that began long before the run: only its part in this interval.
        let mut e = event(9, Hook::SendBlocked, 2 * S + 3 * S / 10, 4000, 0);
        (e.ino, e.duration_ns) = (77, 60 * S);
        t.observe(&e);
        let mut e = event(9, Hook::SendmsgReturn, 2 * S + 3 * S / 10, 4000, 0);
        e.ino = 77;
        t.observe(&e);
        assert_eq!(t.refresh(3 * S, 0).rows[0].blocked_ns, 3 * S / 10);
        assert_eq!(t.refresh(4 * S, 0).rows[0].blocked_ns, 0);
    }
}
