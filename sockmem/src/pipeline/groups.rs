//! `serve`'s per-cgroup gauges: the live sockets' last counters ([`LiveSockets`], the table
//! `top` reads per socket) summed per sender cgroup, and drops per cgroup and reason. Bounded
//! for runs of days: a socket leaves the table when it is destroyed, when it has been silent
//! for the idle time ([`IDLE_NS`] unless `--idle` says otherwise; UDP sockets have no destroy
//! event) and sock_diag does not find it still holding bytes, or never enters it past
//! [`MAX_SOCKETS`]; groups with no live socket are folded into `other` once they are out of the
//! top N.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::Hash,
};

use sockmem_common::Hook;

use crate::{
    kernel::sampler::{Sampled, SoughtSocket},
    pipeline::{
        decode::Event,
        live_sockets::{LiveSockets, Retention, WhenFull},
        seed::Existing,
    },
};

/// A socket silent this long is dropped from the gauges (by default) unless sock_diag finds it
/// still holding bytes: an idle TCP socket holds nothing in flight, and a closed UDP socket
/// says nothing when it goes.
pub const IDLE_NS: u64 = 120_000_000_000;
/// At most this many sockets are followed at once (about 250 bytes each: 16 MiB when full).
pub const MAX_SOCKETS: usize = 65_536;
/// The label value of everything outside the top N.
pub const OTHER: &str = "other";

/// Who a socket's bytes are attributed to: the sender's cgroup v2 id (0: a sender not known,
/// softirq before any `sendmsg`). Named only when a scrape shows it.
pub type Group = u64;

pub fn group_of(e: &Event) -> Group {
    e.cgroup_id
}

/// Per group: cumulative events and drops by reason.
#[derive(Default, Clone)]
pub struct GroupTally {
    pub events: u64,
    pub drops: BTreeMap<String, u64>,
}

impl GroupTally {
    fn absorb(&mut self, other: &GroupTally) {
        self.events += other.events;
        for (reason, n) in &other.drops {
            *self.drops.entry(reason.clone()).or_default() += n;
        }
    }
}

/// One group's numbers as a scrape shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupGauges {
    pub sockets: u64,
    pub queued: i64,
    pub alloc: i64,
}

/// A socket goes with its destroy event, or after `idle_ns` of silence unless sock_diag finds
/// it still holding bytes (a lost destroy event must not pin it); past [`MAX_SOCKETS`] new ones
/// are not followed.
fn serve_retention(idle_ns: u64) -> Retention {
    Retention {
        closed_ns: 0,
        idle_ns,
        max_sockets: MAX_SOCKETS,
        when_full: WhenFull::RefuseNew,
    }
}

pub struct LiveState {
    sockets: LiveSockets,
    tallies: HashMap<Group, GroupTally>,
    /// Groups folded away, summed: what `other` shows besides the groups outside the top N.
    retired: GroupTally,
    pub events: u64,
    last_ns: u64,
}

impl Default for LiveState {
    fn default() -> Self {
        LiveState::new(IDLE_NS)
    }
}

impl LiveState {
    /// Sockets silent for `idle_ns` are forgotten (unless still holding bytes).
    pub fn new(idle_ns: u64) -> LiveState {
        LiveState {
            sockets: LiveSockets::new(serve_retention(idle_ns)),
            tallies: HashMap::new(),
            retired: GroupTally::default(),
            events: 0,
            last_ns: 0,
        }
    }

    pub fn observe(&mut self, e: &Event) {
        self.events += 1;
        self.last_ns = self.last_ns.max(e.ts_ns);
        let tally = self.tallies.entry(group_of(e)).or_default();
        tally.events += 1;
        if e.hook == Hook::SkbDrop {
            let reason = e
                .value_name
                .clone()
                .unwrap_or_else(|| format!("reason {}", e.value));
            *tally.drops.entry(reason).or_default() += 1;
        }
        self.sockets.observe(e);
    }

    /// A socket there before the run (the caller applied the filters), in its holder's cgroup
    /// (by id, as events key it) with its counters as sock_diag read them, until its first event.
    pub fn seed(&mut self, x: &Existing, now_ns: u64) {
        self.sockets.seed(x, now_ns);
    }

    /// The groups holding a live socket: a seeded one's may have no sample in the kernel's
    /// histograms yet, and still needs a label of its own.
    pub fn socket_groups(&self) -> HashSet<Group> {
        self.sockets.iter().map(|s| s.cgroup_id).collect()
    }

    /// The silent sockets to look up with sock_diag before [`LiveState::prune`]
    /// ([`LiveSockets::silent_holders`]).
    pub fn silent_holders(&self, now_ns: u64) -> Vec<SoughtSocket> {
        self.sockets.silent_holders(now_ns)
    }

    /// What sock_diag found of them ([`LiveSockets::confirm`]).
    pub fn confirm(&mut self, found: &[Sampled], now_ns: u64) {
        self.sockets.confirm(found, now_ns);
    }

    /// Forgets sockets silent for the idle time before `now_ns` (see [`LiveState::confirm`]),
    /// and folds the tallies of groups that have no live socket and are not in `keep` into
    /// `other`.
    pub fn prune(&mut self, now_ns: u64, keep: &HashSet<Group>) {
        self.sockets.prune(now_ns);
        let live = self.socket_groups();
        let gone: Vec<Group> = self
            .tallies
            .keys()
            .filter(|g| !live.contains(*g) && !keep.contains(*g))
            .copied()
            .collect();
        for g in gone {
            if let Some(t) = self.tallies.remove(&g) {
                self.retired.absorb(&t);
            }
        }
    }

    /// Gauges per label value, `label` mapping a group to its label (itself, or `other`).
    /// Every group still tallied has its gauges, at 0 when none of its sockets is live: a
    /// series that comes and goes with its sockets would churn.
    pub fn gauges(&self, label: &dyn Fn(Group) -> String) -> BTreeMap<String, GroupGauges> {
        let mut out: BTreeMap<String, GroupGauges> = self
            .tallies
            .keys()
            .map(|g| (label(*g), GroupGauges::default()))
            .collect();
        for s in self.sockets.iter() {
            let g = out.entry(label(s.cgroup_id)).or_default();
            g.sockets += 1;
            g.queued += s.queued.max(0);
            g.alloc += s.alloc.max(0);
        }
        out
    }

    /// Drops per (label value, reason), folded groups under `other`.
    pub fn drops(&self, label: &dyn Fn(Group) -> String) -> BTreeMap<(String, String), u64> {
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        let all = self
            .tallies
            .iter()
            .map(|(g, t)| (label(*g), t))
            .chain(std::iter::once((OTHER.to_owned(), &self.retired)));
        for (l, t) in all {
            for (reason, n) in &t.drops {
                *out.entry((l.clone(), reason.clone())).or_default() += n;
            }
        }
        out
    }

    pub fn sockets(&self) -> usize {
        self.sockets.count()
    }

    /// Sockets not followed because the table was full.
    pub fn untracked_sockets(&self) -> u64 {
        self.sockets.untracked
    }

    #[cfg(test)]
    pub fn groups(&self) -> usize {
        self.tallies.len()
    }
}

/// The `n` values with the most traffic; the others go under [`OTHER`].
pub fn top_n<K: Hash + Eq + Ord>(scores: impl Iterator<Item = (K, u64)>, n: usize) -> HashSet<K> {
    let mut summed: HashMap<K, u64> = HashMap::new();
    for (v, s) in scores {
        *summed.entry(v).or_default() += s;
    }
    let mut ranked: Vec<(K, u64)> = summed.into_iter().collect();
    // Ties by value, so the set is the same from one scrape to the next.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().take(n).map(|(v, _)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;

    const A: u64 = 1001;
    const B: u64 = 1002;

    fn event(hook: Hook, sock: u64, cgroup: u64, queued: i32, ts: u64) -> Event {
        let mut e = Event::from_raw(&raw_event(hook)).unwrap();
        e.sock_id = sock;
        e.cgroup_id = cgroup;
        e.wmem_queued = queued;
        e.wmem_alloc = queued / 2;
        e.ts_ns = ts;
        e
    }

    #[test]
    fn gauges_follow_live_sockets_and_forget_dead_ones() {
        let mut s = LiveState::default();
        s.observe(&event(Hook::TcpSendmsg, 1, A, 1000, 1));
        s.observe(&event(Hook::TcpSendmsg, 2, A, 500, 2));
        s.observe(&event(Hook::TcpSendmsg, 3, B, 70, 3));
        let same = |g: u64| g.to_string();
        let g = s.gauges(&same);
        assert_eq!(g["1001"].queued, 1500);
        assert_eq!(g["1001"].alloc, 750);
        assert_eq!(g["1002"].sockets, 1);
        s.observe(&event(Hook::SockDestroy, 1, A, 0, 4));
        assert_eq!(s.gauges(&same)["1001"].queued, 500);
        // Idle sockets go; a group with none left, out of the top N, folds into `other`.
        s.observe(&event(Hook::SkbDrop, 3, B, 70, 5));
        // A late event of a destroyed socket does not bring it back.
        s.observe(&event(Hook::SkbFree, 1, A, 0, 5));
        assert_eq!(s.gauges(&same)["1001"].sockets, 1);
        s.prune(5 + IDLE_NS, &HashSet::new());
        assert_eq!(s.sockets(), 0);
        assert_eq!(s.groups(), 0);
        let drops = s.drops(&same);
        assert_eq!(drops.values().sum::<u64>(), 1);
        assert!(drops.keys().all(|(g, _)| g == OTHER), "{drops:?}");
        assert!(s.gauges(&same).is_empty());
    }

    #[test]
    fn a_seeded_socket_counts_under_its_holders_cgroup_once() {
        let mut s = LiveState::default();
        let x = Existing::example(7001, 700, 100);
        let holders = x.cgroup.as_ref().unwrap().0.to_string();
        s.seed(&x, 1);
        let same = |g: u64| g.to_string();
        let seeded = GroupGauges {
            sockets: 1,
            queued: 700,
            alloc: 100,
        };
        assert_eq!(s.gauges(&same)[&holders], seeded);
        // Its first event, a zero-window probe's: softirq, no sender's cgroup.
        let mut probe = event(Hook::TcpAck, 9, 0, 650, 2);
        probe.ino = x.ino();
        s.observe(&probe);
        let g = s.gauges(&same);
        let after = GroupGauges {
            sockets: 1,
            queued: 650,
            alloc: 325,
        };
        assert_eq!((&g[&holders], g["0"].sockets, s.sockets()), (&after, 0, 1));
    }

    #[test]
    fn top_n_keeps_the_busiest() {
        let top = top_n([(A, 5), (B, 9), (3, 1), (A, 5)].into_iter(), 2);
        assert_eq!(top, HashSet::from([A, B]));
    }
}
