//! Histograms read back from the kernel: per-CPU values summed, labelled, with percentile
//! estimates from the log2 slots.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use sockmem_common::{
    hist::{counter, slot_bounds, Hist, HistKey, HistKind, Per, SLOTS},
    inflight::{SendStart, SkbTrack},
    names,
};

use crate::{
    kernel::{cgroups::CgroupNames, netns::NetnsNames},
    pipeline::decode::{address, c_string},
};

/// What a histogram's values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Nanoseconds,
    Bytes,
}

pub fn kind_name(kind: HistKind) -> &'static str {
    match kind {
        HistKind::SendmsgTime => "sendmsg_time",
        HistKind::SendBlocked => "send_blocked",
        HistKind::QdiscSojourn => "qdisc_sojourn",
        HistKind::DriverTime => "driver_time",
        HistKind::BelowTcp => "below_tcp",
        HistKind::WmemQueued => "wmem_queued",
        HistKind::WmemAlloc => "wmem_alloc",
    }
}

pub fn kind_unit(kind: HistKind) -> Unit {
    match kind {
        HistKind::WmemQueued | HistKind::WmemAlloc => Unit::Bytes,
        _ => Unit::Nanoseconds,
    }
}

/// One histogram, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub kind: HistKind,
    /// e.g. `198.18.0.1:40000 > 198.18.0.2:5201 tcp`, `4242 iperf3`, `eth0`; empty for totals.
    pub label: String,
    /// With `--per socket`: the socket's id (as `trace --json` names it, `sock`).
    pub sock: Option<u64>,
    /// With `--per cgroup` (and the cgroup × interface split): the sender's cgroup id, 0 for
    /// an unknown sender. The label is then to be named by `kernel::cgroups`.
    pub cgroup_id: Option<u64>,
    /// With `--per netns`: the network namespace inode.
    pub netns_ino: Option<u64>,
    /// With the cgroup × interface split: the interface ("" for events with no skb).
    pub iface: Option<String>,
    pub slots: [u64; SLOTS],
    pub count: u64,
    pub sum: u64,
    pub max: u64,
}

impl Histogram {
    pub fn empty(kind: HistKind, label: String) -> Histogram {
        Histogram {
            sock: None,
            cgroup_id: None,
            netns_ino: None,
            iface: None,
            kind,
            label,
            slots: [0; SLOTS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    pub fn add(&mut self, h: &Hist) {
        for (a, b) in self.slots.iter_mut().zip(h.slots.iter()) {
            *a += b;
        }
        self.count += h.count;
        self.sum += h.sum;
        self.max = self.max.max(h.max);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value below which a fraction `p` of the samples fall, interpolated linearly inside
    /// the log2 slot that holds it and capped at the true maximum.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = (p * self.count as f64).ceil().max(1.0);
        let mut seen = 0.0;
        for (s, &n) in self.slots.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if seen + n as f64 >= rank {
                let (lo, hi) = slot_bounds(s);
                let within = (rank - seen) / n as f64;
                let v = lo as f64 + within * (hi.min(self.max.saturating_add(1)) - lo) as f64;
                return (v as u64).min(self.max);
            }
            seen += n as f64;
        }
        self.max
    }
}

fn ip(family: u16, bytes: [u8; 16]) -> IpAddr {
    address(family, bytes).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `--per total`: the per-CPU array indexed by kind; kinds without a sample are left out.
fn read_totals(map: &Map) -> anyhow::Result<Vec<Histogram>> {
    let totals: PerCpuArray<&MapData, Hist> =
        PerCpuArray::try_from(map).context("opening the histogram array")?;
    let mut out = Vec::new();
    for kind in HistKind::ALL {
        let mut h = Histogram::empty(kind, String::new());
        let values = totals
            .get(&(kind as u32), 0)
            .context("reading the histogram array")?;
        for v in values.iter() {
            h.add(v);
        }
        if h.count > 0 {
            out.push(h);
        }
    }
    Ok(out)
}

/// Every entry of the keyed map as it is now, summed over CPUs, with its key (unlabelled). The
/// programs may be adding to it meanwhile: each entry is one consistent read of its own.
pub fn keyed_entries(map: &Map) -> anyhow::Result<Vec<(HistKey, Histogram)>> {
    let hists: PerCpuHashMap<&MapData, HistKey, Hist> =
        PerCpuHashMap::try_from(map).context("opening the histogram map")?;
    let mut out = Vec::new();
    for entry in hists.iter() {
        let (key, values) = match entry {
            Ok(e) => e,
            // Deleted between listing its key and reading it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).context("reading the histogram map"),
        };
        let Some(kind) = HistKind::from_u8(key.kind) else {
            continue;
        };
        let mut h = Histogram::empty(kind, String::new());
        for v in values.iter() {
            h.add(v);
        }
        out.push((key, h));
    }
    Ok(out)
}

/// `--per socket|pid|iface`: the hash of self-describing keys.
fn read_keyed(map: &Map, per: Per) -> anyhow::Result<Vec<Histogram>> {
    // Per socket, one socket can show several 4-tuples (its local port is cleared when it
    // closes): its histograms are merged by socket id, named by its fullest tuple.
    let mut keyed: BTreeMap<(HistKind, u64, String), (Histogram, HistKey)> = BTreeMap::new();
    for (key, h) in keyed_entries(map)? {
        let kind = h.kind;
        let group = match per {
            Per::Socket => (kind, key.id, String::new()),
            _ => (kind, 0, label(&key, per)),
        };
        let (sum, best) = keyed
            .entry(group)
            .or_insert_with(|| (Histogram::empty(kind, String::new()), key));
        sum.merge(&h);
        if (best.lport == 0 || best.rport == 0) && key.lport != 0 && key.rport != 0 {
            *best = key;
        }
    }
    Ok(keyed
        .into_values()
        .map(|(mut h, key)| {
            h.label = label(&key, per);
            h.sock = (per == Per::Socket).then_some(key.id);
            h.cgroup_id = matches!(per, Per::Cgroup | Per::CgroupIface).then_some(key.id);
            h.netns_ino = (per == Per::Netns).then_some(key.id);
            h.iface = (per == Per::CgroupIface).then(|| c_string(&key.name));
            h
        })
        .collect())
}

/// A key in words, as `--per` split it.
pub fn label(key: &HistKey, per: Per) -> String {
    match per {
        Per::Total => String::new(),
        Per::Socket => {
            let proto = match key.protocol as i32 {
                libc::IPPROTO_TCP => "tcp",
                libc::IPPROTO_UDP => "udp",
                _ => "?",
            };
            let fmt = |a: IpAddr, p: u16| match a {
                IpAddr::V4(a) => format!("{a}:{p}"),
                IpAddr::V6(a) => format!("[{a}]:{p}"),
            };
            format!(
                "{} > {} {proto}",
                fmt(ip(key.family, key.laddr), key.lport),
                fmt(ip(key.family, key.raddr), key.rport)
            )
        }
        // Softirq work on a socket before its first seen `sendmsg` has no sender.
        Per::Pid if key.id == 0 && key.name[0] == 0 => "(unknown sender)".to_owned(),
        Per::Pid => format!("{} {}", key.id, c_string(&key.name)),
        Per::Iface => iface_label(key),
        // Named by `kernel::cgroups` / `kernel::netns` where the histograms are shown.
        Per::Cgroup if key.id == 0 => "(unknown sender)".to_owned(),
        Per::Cgroup => format!("id:{}", key.id),
        Per::Netns => format!("ino:{}", key.id),
        Per::CgroupIface if key.id == 0 => format!("(unknown sender) {}", iface_label(key)),
        Per::CgroupIface => format!("id:{} {}", key.id, iface_label(key)),
    }
}

fn iface_label(key: &HistKey) -> String {
    match c_string(&key.name) {
        n if n.is_empty() => "(no interface)".to_owned(),
        n => n,
    }
}

/// How complete the histograms are.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Completeness {
    pub skbs_tracked: u64,
    pub skbs_freed: u64,
    /// Still in flight when tracing stopped.
    pub skbs_in_flight: u64,
    /// Tracked but neither freed nor in flight: evicted from the LRU map or freed where no
    /// hook sees it.
    pub skbs_lost: u64,
    pub qdisc_bypass: u64,
    pub qdisc_unmatched: u64,
    pub sends_started: u64,
    pub sends_matched: u64,
    pub sends_unmatched: u64,
    pub sends_in_flight: u64,
    pub hist_full: u64,
    /// skb lists longer than the programs walk (skbs past the limit unseen at that hook).
    pub lists_cut: u64,
}

/// Everything `sockmem hist` prints.
pub struct Report {
    /// Keyed histograms in kind order, then label order.
    pub histograms: Vec<Histogram>,
    /// One per kind: every key summed.
    pub totals: Vec<Histogram>,
    pub completeness: Completeness,
}

impl Report {
    /// Names the cgroup and namespace keys (`--per cgroup|netns`, the cgroup × interface
    /// split): paths and `ip netns` names instead of ids.
    pub fn name_keys(&mut self, cgroups: &mut CgroupNames, netns: &mut NetnsNames) {
        for h in &mut self.histograms {
            let cgroup = h.cgroup_id.map(|id| match id {
                0 => "(unknown sender)".to_owned(),
                id => cgroups.name(id).to_string(),
            });
            match (cgroup, &h.iface, h.netns_ino) {
                (Some(c), Some(iface), _) => {
                    let iface = if iface.is_empty() {
                        "(no interface)"
                    } else {
                        iface
                    };
                    h.label = format!("{c} {iface}");
                }
                (Some(c), None, _) => h.label = c,
                (None, _, Some(ino)) => h.label = netns.name(ino).to_string(),
                _ => {}
            }
        }
        self.histograms
            .sort_by(|a, b| (a.kind, &a.label).cmp(&(b.kind, &b.label)));
    }
}

/// The maps to read once the programs are detached.
pub struct HistMaps {
    hists: Map,
    total_hists: Map,
    counters: Map,
    skbs: Map,
    sends: Map,
}

impl HistMaps {
    /// Takes the maps out of `ebpf`, so that dropping it detaches the programs first and the
    /// maps are read whole afterwards.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<HistMaps> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map `{name}` missing from the eBPF object"))
        };
        Ok(HistMaps {
            hists: take(names::HISTS)?,
            total_hists: take(names::TOTAL_HISTS)?,
            counters: take(names::COUNTERS)?,
            skbs: take(names::SKBS)?,
            sends: take(names::SENDS)?,
        })
    }

    /// Every histogram as `per` splits them, and how complete they are. Also while the
    /// programs run (`serve` reads on every scrape).
    pub fn read(&self, per: Per) -> anyhow::Result<Report> {
        let mut histograms = if per == Per::Total {
            read_totals(&self.total_hists)?
        } else {
            read_keyed(&self.hists, per)?
        };
        histograms.sort_by(|a, b| (a.kind, &a.label).cmp(&(b.kind, &b.label)));
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

        Ok(Report {
            histograms,
            totals,
            completeness: self.completeness()?,
        })
    }

    /// The keyed histograms' entries with their keys (see [`keyed_entries`]).
    pub fn keyed_entries(&self) -> anyhow::Result<Vec<(HistKey, Histogram)>> {
        keyed_entries(&self.hists)
    }

    /// Deletes keyed entries (of cgroups that are gone), so that the map does not fill up over
    /// days; returns how many were deleted.
    pub fn remove_keyed(&mut self, keys: &[HistKey]) -> anyhow::Result<usize> {
        let mut hists: PerCpuHashMap<&mut MapData, HistKey, Hist> =
            PerCpuHashMap::try_from(&mut self.hists).context("opening the histogram map")?;
        let mut removed = 0;
        for k in keys {
            match hists.remove(k) {
                Ok(()) => removed += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("deleting from the histogram map"),
            }
        }
        Ok(removed)
    }

    pub fn completeness(&self) -> anyhow::Result<Completeness> {
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(&self.counters).context("opening the counters")?;
        let c = |i: u32| -> anyhow::Result<u64> {
            Ok(counters
                .get(&i, 0)
                .context("reading the counters")?
                .iter()
                .sum())
        };
        let skbs: HashMap<&MapData, u64, SkbTrack> =
            HashMap::try_from(&self.skbs).context("opening the skb map")?;
        let sends: HashMap<&MapData, u32, SendStart> =
            HashMap::try_from(&self.sends).context("opening the sendmsg map")?;
        let skbs_in_flight = skbs.keys().filter(Result::is_ok).count() as u64;
        // A thread's entry stays between its calls, with no socket.
        let sends_in_flight = sends
            .iter()
            .filter(|e| matches!(e, Ok((_, s)) if s.sk != 0))
            .count() as u64;
        let (tracked, freed) = (c(counter::SKB_TRACKED)?, c(counter::SKB_FREED)?);
        Ok(Completeness {
            skbs_tracked: tracked,
            skbs_freed: freed,
            skbs_in_flight,
            skbs_lost: tracked.saturating_sub(freed + skbs_in_flight),
            qdisc_bypass: c(counter::QDISC_BYPASS)?,
            qdisc_unmatched: c(counter::QDISC_UNMATCHED)?,
            sends_started: c(counter::SEND_STARTED)?,
            sends_matched: c(counter::SEND_MATCHED)?,
            sends_unmatched: c(counter::SEND_UNMATCHED)?,
            sends_in_flight,
            hist_full: c(counter::HIST_FULL)?,
            lists_cut: c(counter::LIST_CUT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmem_common::hist::slot;

    fn hist_of(values: &[u64]) -> Histogram {
        let mut h = Histogram::empty(HistKind::QdiscSojourn, String::new());
        for &v in values {
            h.slots[slot(v)] += 1;
            h.count += 1;
            h.sum += v;
            h.max = h.max.max(v);
        }
        h
    }

    #[test]
    fn percentiles_fall_in_the_right_slot_and_never_exceed_max() {
        let values: Vec<u64> = (1..=1000).collect();
        let h = hist_of(&values);
        assert_eq!(h.mean(), 500.5);
        for (p, exact) in [(0.5, 500u64), (0.9, 900), (0.99, 990)] {
            let est = h.percentile(p);
            let (lo, hi) = slot_bounds(slot(exact));
            assert!(lo <= est && est < hi, "p{p}: {est} not in [{lo}, {hi})");
        }
        assert_eq!(h.percentile(1.0), 1000);
        let one = hist_of(&[7]);
        assert_eq!(one.percentile(0.5), 7.min(one.max));
        assert!(one.percentile(0.99) <= 7);
        assert_eq!(hist_of(&[]).percentile(0.5), 0);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = hist_of(&[1, 2, 3]);
        a.merge(&hist_of(&[100, 200]));
        assert_eq!((a.count, a.sum, a.max), (5, 306, 200));
    }

    #[test]
    fn labels_per_key_kind() {
        let mut k = HistKey {
            kind: HistKind::SendmsgTime as u8,
            protocol: libc::IPPROTO_TCP as u8,
            family: libc::AF_INET as u16,
            lport: 40000,
            rport: 5201,
            id: 42,
            laddr: [0; 16],
            raddr: [0; 16],
            name: [0; 16],
        };
        k.laddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        k.raddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(
            label(&k, Per::Socket),
            "198.18.0.1:40000 > 198.18.0.2:5201 tcp"
        );
        k.name[..6].copy_from_slice(b"iperf3");
        assert_eq!(label(&k, Per::Pid), "42 iperf3");
        assert_eq!(label(&k, Per::Iface), "iperf3");
        assert_eq!(label(&k, Per::Total), "");
        assert_eq!(label(&k, Per::Cgroup), "id:42");
        assert_eq!(label(&k, Per::Netns), "ino:42");
        assert_eq!(label(&k, Per::CgroupIface), "id:42 iperf3");
        k.id = 0;
        assert_eq!(label(&k, Per::Cgroup), "(unknown sender)");
    }
}
