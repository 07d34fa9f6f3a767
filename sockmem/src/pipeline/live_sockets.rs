//! The live sockets' last known counters: what `top` (a row per socket, `live.rs`) and `serve`
//! (sums per sender cgroup, `groups.rs`) both keep from the events. Per socket: its identity,
//! sender, cgroup, namespace, and `sk_wmem_queued`, `sk_wmem_alloc`, `sk_sndbuf` as its last
//! event read them (or, for a socket there before the run, as sock_diag read them: [`seed`]).
//!
//! Bounded for runs of days by its [`Retention`]: a socket goes when the kernel destroys it (at
//! once, or after a grace to be seen closed), when it has been silent too long (UDP sockets have
//! no destroy event, and a lost event must not pin one), and past a number of sockets. Silence
//! alone does not say a socket that held bytes is gone: a sender stalled by a zero window probes
//! it every 2 minutes at most, and a socket its process closed keeps its bytes until the peer
//! takes them. Those are looked up with sock_diag first ([`silent_holders`], [`confirm`]), by
//! inode or, once closed by its process, by addresses, and stay while the kernel still has
//! them.
//!
//! [`silent_holders`]: LiveSockets::silent_holders
//! [`confirm`]: LiveSockets::confirm
//!
//! [`seed`]: crate::pipeline::seed

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use sockmem_common::Hook;

use crate::{
    kernel::sampler::{Sampled, SoughtSocket},
    pipeline::{
        decode::{Event, Protocol},
        identity::SocketIdentity,
        seed::{is_seeded, Existing},
    },
};

/// How long sockets stay, and how many.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// A destroyed socket stays this long (shown closed); 0: it goes with its destroy event.
    pub closed_ns: u64,
    /// A socket goes after this long without an event (or, if it held bytes, without sock_diag
    /// finding it: [`LiveSockets::confirm`]).
    pub idle_ns: u64,
    pub max_sockets: usize,
    pub when_full: WhenFull,
}

/// What happens past [`Retention::max_sockets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// New sockets are not followed (counted in [`LiveSockets::untracked`]).
    RefuseNew,
    /// All enter; at each [`LiveSockets::prune`] the longest silent go first.
    EvictIdlest,
}

/// One live socket.
#[derive(Clone, Debug)]
pub struct LiveSocket {
    pub id: SocketIdentity,
    /// The cgroup v2 id of the last event that named one (0: none yet), and its path where
    /// the event was named (`Names::fill`).
    pub cgroup_id: u64,
    cgroup_path: Option<Arc<str>>,
    /// The socket's namespace inode (0: not read) and `ip netns` name.
    pub netns_ino: u32,
    netns_name: Option<Arc<str>>,
    pub queued: i64,
    pub alloc: i64,
    pub sndbuf: i64,
    /// Its last event, its seeding, or sock_diag's last finding it holding bytes.
    pub last_ns: u64,
    /// When the kernel destroyed it.
    pub closed_at: Option<u64>,
}

impl LiveSocket {
    /// The cgroup as shown: its path, `id:N` when not found; `None` before any sender.
    pub fn cgroup(&self) -> Option<Cow<'_, str>> {
        match &self.cgroup_path {
            // An event with no known sender names its cgroup `(unknown)`: no cgroup, as `-`.
            Some(p) if !p.starts_with("id:") && **p != *crate::kernel::cgroups::UNKNOWN => {
                Some(Cow::Borrowed(p))
            }
            _ if self.cgroup_id == 0 => None,
            _ => Some(Cow::Owned(format!("id:{}", self.cgroup_id))),
        }
    }

    /// The namespace as shown: its `ip netns` name, else `ino:N`.
    pub fn netns(&self) -> Option<Cow<'_, str>> {
        match &self.netns_name {
            Some(n) => Some(Cow::Borrowed(n)),
            None if self.netns_ino == 0 => None,
            None => Some(Cow::Owned(format!("ino:{}", self.netns_ino))),
        }
    }

    /// Still known by its stand-in identity: no event of it yet.
    pub fn seeded(&self) -> bool {
        is_seeded(self.id.sock_id)
    }

    fn holds_bytes(&self) -> bool {
        self.queued != 0 || self.alloc != 0
    }

    fn silent(&self, now_ns: u64, idle_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_ns) >= idle_ns
    }

    /// Open, silent for the idle time, holding bytes at its last reading, and findable by
    /// sock_diag: by inode, or as TCP by addresses.
    fn silent_holder(&self, now_ns: u64, idle_ns: u64) -> bool {
        self.closed_at.is_none()
            && (self.id.ino != 0 || self.id.protocol == Protocol::Tcp)
            && self.holds_bytes()
            && self.silent(now_ns, idle_ns)
    }

    /// How sock_diag finds it.
    fn sought(&self) -> SoughtSocket {
        SoughtSocket {
            ino: self.id.ino,
            netns: self.netns_ino.into(),
            tcp_addresses: (self.id.protocol == Protocol::Tcp)
                .then_some((self.id.local, self.id.remote)),
        }
    }
}

pub struct LiveSockets {
    retention: Retention,
    sockets: HashMap<u64, LiveSocket>,
    /// Seeded sockets by inode, until their first event.
    seeded: HashMap<u64, u64>,
    /// Sockets not followed because the table was full.
    pub untracked: u64,
}

/// What one event did to the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The socket is (still) in the table.
    pub live: bool,
    /// The seeded identity it had until this event.
    pub was: Option<u64>,
}

impl LiveSockets {
    pub fn new(retention: Retention) -> LiveSockets {
        LiveSockets {
            retention,
            sockets: HashMap::new(),
            seeded: HashMap::new(),
            untracked: 0,
        }
    }

    /// A socket there before the run, at `now_ns`, with its counters as sock_diag read them
    /// (the caller chose it: filters, what is worth showing).
    pub fn seed(&mut self, x: &Existing, now_ns: u64) {
        let ino = x.ino();
        if self.seeded.contains_key(&ino) || self.sockets.values().any(|s| s.id.ino == ino) {
            return;
        }
        let m = &x.sampled.mem;
        let (cgroup_id, cgroup_path) = match &x.cgroup {
            Some((id, path)) => (*id, Some(path.clone())),
            None => (0, None),
        };
        self.seeded.insert(ino, x.sock_id);
        self.sockets.insert(
            x.sock_id,
            LiveSocket {
                id: SocketIdentity::from_existing(x),
                cgroup_id,
                cgroup_path,
                netns_ino: x.netns_ino,
                netns_name: x.netns.clone(),
                queued: m.wmem_queued.into(),
                alloc: m.wmem_alloc.into(),
                sndbuf: m.sndbuf.into(),
                last_ns: now_ns,
                closed_at: None,
            },
        );
    }

    /// One event, in time order.
    pub fn observe(&mut self, e: &Event) -> Observed {
        let was = self.take_seeded(e);
        if e.hook == Hook::SockDestroy && self.retention.closed_ns == 0 {
            self.sockets.remove(&e.sock_id);
            return Observed { live: false, was };
        }
        let full = self.retention.when_full == WhenFull::RefuseNew
            && self.sockets.len() >= self.retention.max_sockets;
        let s = match self.sockets.get_mut(&e.sock_id) {
            Some(s) => s,
            // Only sending makes a socket worth following: late events of a destroyed socket
            // (its last skbs freed, an ACK in TIME_WAIT) must not bring it back.
            None if e.freed || !sends(e.hook) => return Observed { live: false, was },
            None if full => {
                self.untracked += 1;
                return Observed { live: false, was };
            }
            None => self.sockets.entry(e.sock_id).or_insert_with(|| LiveSocket {
                id: SocketIdentity::from_event(e),
                cgroup_id: e.cgroup_id,
                cgroup_path: e.cgroup.clone(),
                netns_ino: e.netns_ino,
                netns_name: e.netns.clone(),
                queued: 0,
                alloc: 0,
                sndbuf: 0,
                last_ns: e.ts_ns,
                closed_at: None,
            }),
        };
        s.last_ns = e.ts_ns;
        s.id.observe(e);
        // The sender can change (a socket handed to another process): the last cgroup wins.
        if e.cgroup_id != 0 && (e.cgroup_id != s.cgroup_id || s.cgroup_path.is_none()) {
            s.cgroup_id = e.cgroup_id;
            s.cgroup_path = e.cgroup.clone();
        }
        if s.netns_ino == 0 && e.netns_ino != 0 {
            s.netns_ino = e.netns_ino;
            s.netns_name = e.netns.clone();
        }
        if e.hook == Hook::SockDestroy {
            s.closed_at.get_or_insert(e.ts_ns);
        }
        // A socket being freed has no counters.
        if !e.freed {
            s.queued = e.wmem_queued.into();
            s.alloc = e.wmem_alloc.into();
            // Some hooks do not read the send buffer (0).
            if e.sndbuf > 0 {
                s.sndbuf = e.sndbuf.into();
            }
        }
        Observed { live: true, was }
    }

    /// A seeded socket's first event gives it the identity events carry; returns the
    /// stand-in it had.
    fn take_seeded(&mut self, e: &Event) -> Option<u64> {
        if e.ino == 0 || self.seeded.is_empty() || self.sockets.contains_key(&e.sock_id) {
            return None;
        }
        let was = self.seeded.remove(&e.ino)?;
        let mut s = self.sockets.remove(&was)?;
        s.id.sock_id = e.sock_id;
        self.sockets.insert(e.sock_id, s);
        Some(was)
    }

    /// The sockets [`prune`] would forget for their silence though they held bytes at their
    /// last reading: what to look up with sock_diag ([`SocketSampler::find`]) and [`confirm`]
    /// first.
    ///
    /// [`prune`]: LiveSockets::prune
    /// [`confirm`]: LiveSockets::confirm
    /// [`SocketSampler::find`]: crate::kernel::sampler::SocketSampler::find
    pub fn silent_holders(&self, now_ns: u64) -> Vec<SoughtSocket> {
        self.sockets
            .values()
            .filter(|s| s.silent_holder(now_ns, self.retention.idle_ns))
            .map(LiveSocket::sought)
            .collect()
    }

    /// What sock_diag read at `now_ns` of the [`silent_holders`]: each still there is alive,
    /// with its counters as read (bytes still held, or gone since its last event, which can
    /// be lost); one not found is gone, and goes at the next [`prune`].
    ///
    /// [`silent_holders`]: LiveSockets::silent_holders
    /// [`prune`]: LiveSockets::prune
    pub fn confirm(&mut self, found: &[Sampled], now_ns: u64) {
        let idle_ns = self.retention.idle_ns;
        for s in self.sockets.values_mut() {
            if !s.silent_holder(now_ns, idle_ns) {
                continue;
            }
            let sought = s.sought();
            let Some(f) = found.iter().find(|f| sought.is(f)) else {
                continue;
            };
            s.queued = f.mem.wmem_queued.into();
            s.alloc = f.mem.wmem_alloc.into();
            s.sndbuf = f.mem.sndbuf.into();
            s.last_ns = s.last_ns.max(now_ns);
        }
    }

    /// Forgets sockets closed longer than the grace, silent longer than the idle time (those
    /// holding bytes stay while [`confirm`] finds them) and, past the maximum, the longest
    /// silent; returns the identities forgotten.
    ///
    /// [`confirm`]: LiveSockets::confirm
    pub fn prune(&mut self, now_ns: u64) -> Vec<u64> {
        let r = self.retention;
        let mut gone: Vec<u64> = self
            .sockets
            .values()
            .filter(|s| match s.closed_at {
                Some(t) => now_ns.saturating_sub(t) > r.closed_ns,
                None => s.silent(now_ns, r.idle_ns),
            })
            .map(|s| s.id.sock_id)
            .collect();
        let left = self.sockets.len() - gone.len();
        if r.when_full == WhenFull::EvictIdlest && left > r.max_sockets {
            let mut idle: Vec<(u64, u64)> = self
                .sockets
                .values()
                .filter(|s| !gone.contains(&s.id.sock_id))
                .map(|s| (s.last_ns, s.id.sock_id))
                .collect();
            idle.sort_unstable();
            gone.extend(idle[..left - r.max_sockets].iter().map(|&(_, id)| id));
        }
        for id in &gone {
            if let Some(s) = self.sockets.remove(id) {
                if s.seeded() {
                    self.seeded.remove(&s.id.ino);
                }
            }
        }
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = &LiveSocket> {
        self.sockets.values()
    }

    /// Sockets in the table.
    pub fn count(&self) -> usize {
        self.sockets.len()
    }
}

/// Hooks of a socket sending: the ones that start following it.
fn sends(hook: Hook) -> bool {
    matches!(
        hook,
        Hook::TcpSendmsg
            | Hook::SendmsgReturn
            | Hook::SendBlocked
            | Hook::WmemCharge
            | Hook::DevQueueXmit
            | Hook::QdiscEnqueue
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::event::{FLAG_OWNER_FROM_SEND, FLAG_SOCK_FREED};

    fn event(sock: u64, hook: Hook, ts_ns: u64, q: i32) -> Event {
        let mut raw = raw_event(hook);
        (raw.sock_id, raw.ts_ns, raw.wmem_queued, raw.ino) = (sock, ts_ns, q, 1000 + sock);
        raw.wmem_alloc = 0;
        raw.flags |= FLAG_OWNER_FROM_SEND;
        Event::from_raw(&raw).unwrap()
    }

    const RETENTION: Retention = Retention {
        closed_ns: 0,
        idle_ns: 100,
        max_sockets: 2,
        when_full: WhenFull::RefuseNew,
    };

    fn inodes(sought: Vec<SoughtSocket>) -> Vec<u64> {
        sought.iter().map(|s| s.ino).collect()
    }

    #[test]
    fn a_holder_its_process_closed_is_found_by_its_addresses() {
        let mut t = LiveSockets::new(RETENTION);
        t.observe(&event(4, Hook::TcpSendmsg, 1, 5));
        let s = t.iter().next().unwrap();
        let (local, remote, netns) = (s.id.local, s.id.remote, u64::from(s.netns_ino));
        let sought = t.silent_holders(200);
        assert_eq!(sought.len(), 1);
        assert_eq!(sought[0].tcp_addresses, Some((local, remote)));
        // sock_diag shows it without a file now (ino 0) at the same addresses; another
        // socket without a file, elsewhere, and one with a file at these addresses (a new
        // connection) are not it.
        let mut orphan = Existing::example(0, 9, 2).sampled;
        (orphan.mem.local, orphan.mem.remote, orphan.netns) = (local, remote, netns);
        let mut elsewhere = orphan.clone();
        elsewhere.mem.remote = "198.18.0.9:1".parse().unwrap();
        elsewhere.mem.wmem_queued = 1;
        let mut reused = orphan.clone();
        (reused.mem.ino, reused.mem.wmem_queued) = (5555, 3);
        t.confirm(&[elsewhere.clone(), reused.clone()], 200);
        assert_eq!(
            t.iter().next().map(|s| (s.queued, s.last_ns)),
            Some((5, 1)),
            "not confirmed by them"
        );
        t.confirm(&[elsewhere, reused, orphan], 200);
        assert!(t.prune(200).is_empty());
        assert_eq!(
            t.iter().next().map(|s| (s.queued, s.alloc, s.last_ns)),
            Some((9, 2, 200))
        );
    }

    fn ids(t: &LiveSockets) -> Vec<u64> {
        let mut v: Vec<u64> = t.iter().map(|s| s.id.sock_id).collect();
        v.sort();
        v
    }

    #[test]
    fn sending_starts_following_and_destroy_or_silence_ends_it() {
        let mut t = LiveSockets::new(RETENTION);
        assert!(
            !t.observe(&event(1, Hook::TcpAck, 1, 10)).live,
            "not a send"
        );
        assert!(t.observe(&event(1, Hook::TcpSendmsg, 2, 10)).live);
        t.observe(&event(2, Hook::DevQueueXmit, 3, 20));
        assert!(t
            .iter()
            .any(|s| s.id.sock_id == 1 && s.queued == 10 && s.id.sender.is_some()));
        // Full: a third is counted, not followed.
        t.observe(&event(3, Hook::TcpSendmsg, 4, 30));
        assert_eq!((ids(&t), t.untracked), (vec![1, 2], 1));
        // Destroyed: gone at once; its late freed skb does not bring it back.
        t.observe(&event(1, Hook::SockDestroy, 5, 0));
        let mut late = raw_event(Hook::SkbFree);
        (late.sock_id, late.ts_ns, late.flags) = (1, 6, FLAG_SOCK_FREED);
        assert!(!t.observe(&Event::from_raw(&late).unwrap()).live);
        assert_eq!(ids(&t), vec![2]);
        // Silent for the idle time, bytes or not.
        assert!(t.prune(102).is_empty());
        assert_eq!(t.prune(103), vec![2]);
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn a_grace_keeps_closed_sockets_and_holders_stay_while_found_and_the_idlest_go_past_the_maximum(
    ) {
        let mut t = LiveSockets::new(Retention {
            closed_ns: 50,
            when_full: WhenFull::EvictIdlest,
            ..RETENTION
        });
        t.observe(&event(1, Hook::TcpSendmsg, 1, 10));
        t.observe(&event(2, Hook::TcpSendmsg, 2, 0));
        t.observe(&event(3, Hook::TcpSendmsg, 3, 0));
        t.observe(&event(2, Hook::SockDestroy, 10, 0));
        // Three sockets, two at most: the longest silent (1) goes, holding or not.
        assert_eq!(t.prune(20), vec![1]);
        assert!(t
            .iter()
            .any(|s| s.id.sock_id == 2 && s.closed_at == Some(10)));
        assert_eq!(t.prune(61), vec![2], "closed past the grace");
        t.observe(&event(4, Hook::TcpSendmsg, 62, 5));
        // 3 is idle with nothing queued, gone; 4 holds bytes: looked up first, and it stays
        // while sock_diag finds it, with the counters read there.
        assert_eq!(inodes(t.silent_holders(200)), [1004]);
        let found = |ino, q, a| Existing::example(ino, q, a).sampled;
        t.confirm(&[found(1004, 7, 3), found(1003, 9, 9)], 200);
        assert_eq!(t.prune(200), vec![3]);
        assert!(t
            .iter()
            .any(|s| s.id.sock_id == 4 && (s.queued, s.alloc, s.last_ns) == (7, 3, 200)));
        assert!(
            t.silent_holders(299).is_empty(),
            "found: silent again from then"
        );
        // Not found the next time: gone.
        assert_eq!(inodes(t.silent_holders(300)), [1004]);
        t.confirm(&[], 300);
        assert_eq!(t.prune(300), vec![4]);
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn a_seeded_socket_takes_the_identity_of_its_first_event() {
        let mut t = LiveSockets::new(RETENTION);
        let x = Existing::example(1001, 700, 0);
        t.seed(&x, 0);
        t.seed(&x, 0);
        assert_eq!(ids(&t), vec![x.sock_id]);
        assert!(t
            .iter()
            .all(|s| s.seeded() && s.cgroup().as_deref() == Some("/holders")));
        // Any event of it (its inode), not only a send.
        let o = t.observe(&event(1, Hook::TcpAck, 5, 650));
        assert_eq!(
            o,
            Observed {
                live: true,
                was: Some(x.sock_id)
            }
        );
        let s = t.iter().next().unwrap();
        assert_eq!((s.id.sock_id, s.queued, s.seeded()), (1, 650, false));
        assert_eq!(s.sndbuf, 87040);
    }
}
