//! In-kernel histograms: log2 slots, keys and counters, shared by both sides.

/// Number of log2 slots: slot 0 holds 0, slot `s` holds `[2^(s-1), 2^s)`.
pub const SLOTS: usize = 64;

/// What a histogram measures.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HistKind {
    /// `tcp_sendmsg` entry → return, ns.
    SendmsgTime = 1,
    /// Time the sender slept inside a send system call (per call that slept), ns.
    SendBlocked = 2,
    /// qdisc enqueue → dequeue of the same skb, ns.
    QdiscSojourn = 3,
    /// Hand-off to the driver → skb freed, ns.
    DriverTime = 4,
    /// `dev_queue_xmit` → skb freed, ns.
    BelowTcp = 5,
    /// `sk_wmem_queued` at every event, bytes.
    WmemQueued = 6,
    /// `sk_wmem_alloc` at every event, bytes.
    WmemAlloc = 7,
}

impl HistKind {
    pub const ALL: [HistKind; 7] = [
        HistKind::SendmsgTime,
        HistKind::SendBlocked,
        HistKind::QdiscSojourn,
        HistKind::DriverTime,
        HistKind::BelowTcp,
        HistKind::WmemQueued,
        HistKind::WmemAlloc,
    ];

    pub fn from_u8(v: u8) -> Option<HistKind> {
        HistKind::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// One more than the largest [`HistKind`]: the size of an array indexed by kind.
pub const KINDS: u32 = 8;
const _: () = assert!(HistKind::WmemAlloc as u32 + 1 == KINDS);

/// How histograms are split (`--per`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    Total = 0,
    Socket = 1,
    Pid = 2,
    Iface = 3,
    /// By the sender's cgroup: `HistKey.id` is the cgroup id (0: sender unknown).
    Cgroup = 4,
    /// By the socket's network namespace: `HistKey.id` is its inode number.
    Netns = 5,
    /// By sender's cgroup and interface: `HistKey.id` is the cgroup id, `HistKey.name` the
    /// interface (empty for events with no skb). For exporters labelling by both.
    CgroupIface = 6,
}

/// One histogram's identity. Self-describing, so that userspace needs no other map to label it:
/// per socket it carries the 4-tuple, per pid the comm, per interface the name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistKey {
    /// A [`HistKind`] as `u8`.
    pub kind: u8,
    pub protocol: u8,
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    /// Socket id (per socket), tgid (per pid), cgroup id (per cgroup, per cgroup and
    /// interface) or network namespace inode (per netns).
    pub id: u64,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// comm (per pid) or interface name (per interface, per cgroup and interface).
    pub name: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    pub slots: [u64; SLOTS],
    pub count: u64,
    pub sum: u64,
    pub max: u64,
    pub _pad: u64,
}

impl Hist {
    pub const ZERO: Hist = Hist {
        slots: [0; SLOTS],
        count: 0,
        sum: 0,
        max: 0,
        _pad: 0,
    };
}

/// Indexes of the per-CPU counters that say how complete the histograms are.
pub mod counter {
    /// skbs whose path is followed (seen at `dev_queue_xmit` or at the driver).
    pub const SKB_TRACKED: u32 = 0;
    /// Followed skbs seen freed.
    pub const SKB_FREED: u32 = 1;
    /// skbs that reached the driver without passing a qdisc (noqueue, or TCQ_F_CAN_BYPASS).
    pub const QDISC_BYPASS: u32 = 2;
    /// Dequeues (or direct transmits) with no matching enqueue.
    pub const QDISC_UNMATCHED: u32 = 3;
    /// `sendmsg` calls whose start was seen.
    pub const SEND_STARTED: u32 = 4;
    /// `sendmsg` returns matched to their start.
    pub const SEND_MATCHED: u32 = 5;
    /// `sendmsg` returns without a seen start (e.g. UDP on the tracepoint backend).
    pub const SEND_UNMATCHED: u32 = 6;
    /// Samples dropped because the histogram map was full.
    pub const HIST_FULL: u32 = 7;
    /// skb lists (bulk dequeues, lists handed to the driver) longer than the programs walk:
    /// the skbs past the limit were not seen at that hook.
    pub const LIST_CUT: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// The slot of a value: 0 for 0, else `floor(log2(v)) + 1`. Written with shifts and compares
/// (no `leading_zeros`), which the BPF backend and verifier handle everywhere.
#[inline(always)]
pub fn slot(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let mut v = v;
    let mut s = 1;
    if v >= 1 << 32 {
        v >>= 32;
        s += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        s += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        s += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        s += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        s += 2;
    }
    if v >= 1 << 1 {
        s += 1;
    }
    s
}

/// `[lo, hi)` of a slot; the last slot's `hi` saturates.
pub fn slot_bounds(s: usize) -> (u64, u64) {
    match s {
        0 => (0, 1),
        s if s >= SLOTS => (1 << (SLOTS - 1), u64::MAX),
        s => (1 << (s - 1), (1u64 << (s - 1)).saturating_mul(2)),
    }
}

const _: () = assert!(core::mem::size_of::<HistKey>() == 64);
const _: () = assert!(core::mem::size_of::<Hist>() == 544);

#[cfg(feature = "user")]
unsafe impl aya::Pod for HistKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Hist {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_log2_buckets() {
        assert_eq!(slot(0), 0);
        assert_eq!(slot(1), 1);
        assert_eq!(slot(2), 2);
        assert_eq!(slot(3), 2);
        assert_eq!(slot(4), 3);
        assert_eq!(slot(1023), 10);
        assert_eq!(slot(1024), 11);
        assert_eq!(slot(u64::MAX), 64);
        for s in 1..SLOTS {
            let (lo, hi) = slot_bounds(s);
            assert_eq!(slot(lo), s, "lo of slot {s}");
            assert_eq!(slot(hi - 1), s, "hi-1 of slot {s}");
        }
        // Every value lands in the slot whose bounds contain it.
        let mut v: u64 = 1;
        while v < u64::MAX / 3 {
            let (lo, hi) = slot_bounds(slot(v));
            assert!(lo <= v && v < hi, "{v} in [{lo}, {hi})");
            v = v * 3 + 1;
        }
    }
}
