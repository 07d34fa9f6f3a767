//! `serve`'s state between scrapes and what a scrape reads: the in-kernel histograms (read in
//! place, no per-event work in userspace), the live socket table fed by events, the lost-event
//! counter and the programs' own BPF time. Label values are bounded: the top N interfaces and
//! the top N sender cgroups by traffic, the rest under `other`.
//!
//! Bounded over days: the kernel's histogram map is keyed by cgroup × interface (never by
//! socket or process), and [`Exporter::prune`] deletes the entries of cgroups that no longer
//! exist, their counts kept (summed per interface) under `cgroup="other"` so that no series
//! goes backwards; the cgroup names are rescanned then, so their table holds live ones only.

pub mod http;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use sockmem_common::{hist::HistKey, HistKind, Per};

use crate::{
    attach::stats::ProgramIds,
    kernel::cgroups::CgroupNames,
    pipeline::{
        decode::c_string,
        groups::{top_n, Group, LiveState, OTHER},
        histogram::{HistMaps, Histogram},
        stream::LossCounter,
    },
    render::metrics::{HistSeries, Scrape},
};

/// How the in-kernel histograms are keyed for `serve`: by the sender's cgroup and the
/// interface. Never by socket or pid, whose keys would pile up as sockets and processes come
/// and go.
pub const PER: Per = Per::CgroupIface;
/// The label of the sender's group.
pub const GROUP_LABEL: &str = "cgroup";
/// The label value of samples whose sender is not known (softirq before any `sendmsg`).
const UNKNOWN_SENDER: &str = "unknown";

/// Everything a scrape reads, shared between the event loop and the HTTP server.
pub struct Exporter {
    maps: Mutex<HistMaps>,
    pub live: Arc<Mutex<LiveState>>,
    losses: Arc<LossCounter>,
    programs: ProgramIds,
    top_n: usize,
    cgroups: Mutex<CgroupNames>,
    /// Histograms of deleted entries (cgroups gone), per kind and raw interface name.
    retired: Mutex<BTreeMap<(HistKind, String), Histogram>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain numbers behind, still fit to read.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Exporter {
    pub fn new(
        maps: HistMaps,
        losses: Arc<LossCounter>,
        programs: ProgramIds,
        top_n: usize,
        idle_ns: u64,
    ) -> Exporter {
        Exporter {
            maps: Mutex::new(maps),
            live: Arc::new(Mutex::new(LiveState::new(idle_ns))),
            losses,
            programs,
            top_n,
            cgroups: Mutex::new(CgroupNames::live()),
            retired: Mutex::new(BTreeMap::new()),
        }
    }

    /// The cgroups kept as their own label values now (see [`ranked_groups`]).
    pub fn top_groups(&self) -> anyhow::Result<HashSet<Group>> {
        let entries = lock(&self.maps).keyed_entries()?;
        let with_sockets = lock(&self.live).socket_groups();
        Ok(ranked_groups(&entries, with_sockets, self.top_n))
    }

    /// A cgroup's label value: its path, `unknown`, or `id:N` if it is gone unnamed.
    fn cgroup_name(&self, id: Group) -> String {
        match id {
            0 => UNKNOWN_SENDER.to_owned(),
            id => lock(&self.cgroups).name(id).to_string(),
        }
    }

    /// Re-reads the cgroup tree (the names of cgroups created, renamed or removed since), then
    /// deletes the kernel's entries of cgroups gone and out of the top N, keeping their counts.
    /// Returns how many entries went.
    pub fn prune(&self) -> anyhow::Result<usize> {
        let keep = self.top_groups()?;
        let mut fresh = CgroupNames::live();
        let mut maps = lock(&self.maps);
        let gone: Vec<(HistKey, Histogram)> = maps
            .keyed_entries()?
            .into_iter()
            .filter(|(k, _)| k.id != 0 && !keep.contains(&k.id) && fresh.path(k.id).is_none())
            .collect();
        let keys: Vec<HistKey> = gone.iter().map(|(k, _)| *k).collect();
        let removed = maps.remove_keyed(&keys)?;
        drop(maps);
        let mut retired = lock(&self.retired);
        for (k, h) in gone {
            retired
                .entry((h.kind, c_string(&k.name)))
                .or_insert_with(|| Histogram::empty(h.kind, String::new()))
                .merge(&h);
        }
        *lock(&self.cgroups) = fresh;
        Ok(removed)
    }

    /// One scrape: the histograms as the kernel has them now, the gauges, the counters.
    pub fn scrape(&self) -> anyhow::Result<Scrape> {
        let (entries, completeness) = {
            let maps = lock(&self.maps);
            (maps.keyed_entries()?, maps.completeness()?)
        };
        let retired = lock(&self.retired).clone();
        // Interfaces ranked by the samples of every kind they have, those of deleted entries
        // too (a deletion must not reshuffle the labels); socket-level samples (no interface)
        // are always `none`, outside the ranking.
        let names: Vec<(String, u64)> = entries
            .iter()
            .map(|(k, h)| (c_string(&k.name), h.count))
            .chain(retired.iter().map(|((_, i), h)| (i.clone(), h.count)))
            .filter(|(n, _)| !n.is_empty())
            .collect();
        let ifaces = top_n(names.iter().map(|(n, c)| (n.as_str(), *c)), self.top_n);
        let iface_label = |raw: &str| match raw {
            "" => "none".to_owned(),
            n if ifaces.contains(n) => n.to_owned(),
            _ => OTHER.to_owned(),
        };
        let live = lock(&self.live);
        let groups = ranked_groups(&entries, live.socket_groups(), self.top_n);
        let group_label = |g: Group| match groups.contains(&g) {
            true => self.cgroup_name(g),
            false => OTHER.to_owned(),
        };
        let mut merged: BTreeMap<(HistKind, String, String), Histogram> = BTreeMap::new();
        let all = entries
            .iter()
            .map(|(k, h)| (iface_label(&c_string(&k.name)), group_label(k.id), h))
            .chain(
                retired
                    .iter()
                    .map(|((_, iface), h)| (iface_label(iface), OTHER.to_owned(), h)),
            );
        for (iface, group, h) in all {
            merged
                .entry((h.kind, iface, group))
                .or_insert_with(|| Histogram::empty(h.kind, String::new()))
                .merge(h);
        }
        let mut hists: BTreeMap<HistKind, Vec<HistSeries>> = BTreeMap::new();
        for ((kind, iface, group), hist) in merged {
            hists.entry(kind).or_default().push(HistSeries {
                labels: vec![("iface", iface), (GROUP_LABEL, group)],
                hist,
            });
        }
        Ok(Scrape {
            group_label: GROUP_LABEL,
            hists,
            gauges: live.gauges(&group_label),
            drops: live.drops(&group_label),
            lost_events: self.losses.per_cpu()?.iter().sum(),
            events: live.events,
            bpf: self.programs.costs(),
            bpf_missed: self
                .programs
                .missed()
                .map_err(|e| eprintln!("sockmem: reading the programs' skipped runs: {e}"))
                .ok(),
            completeness,
            tracked_sockets: live.sockets() as u64,
            untracked_sockets: live.untracked_sockets(),
            histogram_keys: entries.len() as u64,
        })
    }
}

/// The top `n` cgroups by samples in the kernel's histograms (every event of theirs is one),
/// then, where room is left, those holding live sockets without a sample yet (sockets seeded at
/// the start, stalled since before it).
fn ranked_groups(
    entries: &[(HistKey, Histogram)],
    with_sockets: HashSet<Group>,
    n: usize,
) -> HashSet<Group> {
    let sampled = entries.iter().map(|(k, h)| (k.id, h.count));
    top_n(sampled.chain(with_sockets.into_iter().map(|g| (g, 0))), n)
}
