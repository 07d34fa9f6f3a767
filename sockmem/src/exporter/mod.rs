//! `serve`'s state between scrapes and what a scrape reads: the in-kernel histograms (read in
//! place, no per-event work in userspace), the live socket table fed by events, the lost-event
//! counter and the programs' own BPF time. Label values are bounded: the top N interfaces and
//! the top N sender groups by traffic, the rest under `other`.

pub mod http;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use sockmem_common::{hist::HistKey, HistKind, Per};

use crate::{
    attach::stats::ProgramIds,
    pipeline::{
        decode::c_string,
        histogram::{HistMaps, Histogram},
        live::{top_n, LiveState, OTHER},
        stream::LossCounter,
    },
    render::metrics::{HistSeries, Scrape},
};

/// How the in-kernel histograms are keyed for `serve`: by interface. Never by socket or pid,
/// whose keys would pile up in the map as sockets and processes come and go.
pub const PER: Per = Per::Iface;
/// The label of the sender's group (the gauges and drops come from events, which name it).
pub const GROUP_LABEL: &str = "comm";

/// A histogram key's interface label (`none`: events with no skb, at the socket level).
fn iface_of(key: &HistKey) -> String {
    match c_string(&key.name) {
        n if n.is_empty() => "none".to_owned(),
        n => n,
    }
}

/// Everything a scrape reads, shared between the event loop and the HTTP server.
pub struct Exporter {
    maps: Mutex<HistMaps>,
    pub live: Arc<Mutex<LiveState>>,
    losses: Arc<LossCounter>,
    programs: ProgramIds,
    top_n: usize,
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
    ) -> Exporter {
        Exporter {
            maps: Mutex::new(maps),
            live: Arc::new(Mutex::new(LiveState::default())),
            losses,
            programs,
            top_n,
        }
    }

    /// The sender groups kept as their own label values now.
    pub fn top_groups(&self) -> HashSet<String> {
        let live = lock(&self.live);
        top_n(live.events_per_group(), self.top_n)
    }

    /// One scrape: the histograms as the kernel has them now, the gauges, the counters.
    pub fn scrape(&self) -> anyhow::Result<Scrape> {
        let (entries, completeness) = {
            let maps = lock(&self.maps);
            (maps.keyed_entries()?, maps.completeness()?)
        };
        // Interfaces ranked by the samples of every kind they have.
        let names: Vec<(String, u64)> = entries
            .iter()
            .map(|(k, h)| (c_string(&k.name), h.count))
            .collect();
        let ifaces = top_n(names.iter().map(|(n, c)| (n.as_str(), *c)), self.top_n);
        let iface_label = |key: &HistKey| {
            let n = c_string(&key.name);
            if n.is_empty() || ifaces.contains(&n) {
                iface_of(key)
            } else {
                OTHER.to_owned()
            }
        };
        let mut merged: BTreeMap<(HistKind, String), Histogram> = BTreeMap::new();
        for (key, h) in &entries {
            merged
                .entry((h.kind, iface_label(key)))
                .or_insert_with(|| Histogram::empty(h.kind, String::new()))
                .merge(h);
        }
        let mut hists: BTreeMap<HistKind, Vec<HistSeries>> = BTreeMap::new();
        for ((kind, iface), hist) in merged {
            hists.entry(kind).or_default().push(HistSeries {
                labels: vec![("iface", iface)],
                hist,
            });
        }
        let groups = self.top_groups();
        let group_label = |g: &str| match groups.contains(g) {
            true => g.to_owned(),
            false => OTHER.to_owned(),
        };
        let live = lock(&self.live);
        Ok(Scrape {
            group_label: GROUP_LABEL,
            hists,
            gauges: live.gauges(&group_label),
            drops: live.drops(&group_label),
            lost_events: self.losses.per_cpu()?.iter().sum(),
            events: live.events,
            bpf: self.programs.costs(),
            completeness,
            tracked_sockets: live.sockets() as u64,
            untracked_sockets: live.untracked_sockets,
            histogram_keys: entries.len() as u64,
        })
    }
}
