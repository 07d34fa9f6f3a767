//! Every map and global the programs share with each other and with userspace.

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sockmem_common::{
    hist::{Hist, HistKey},
    inflight::{SendCall, SendStart, SkbTrack, SockIdent},
    Config,
};

use crate::scratch::CpuScratch;

/// Filled by the loader (offsets from BTF, filters) before any program is attached.
#[no_mangle]
pub static CONFIG: Config = unsafe { core::mem::zeroed() };

/// 1 while the programs should work; set by userspace once every hook is attached. A global in
/// a data section of its own (one map, one value that userspace writes): read with a plain load,
/// where an array map lookup cost ~80 ns per event on the 6.18 host.
#[no_mangle]
#[link_section = ".data.running"]
pub static mut RUNNING: u32 = 0;

/// Events to userspace; the loader resizes it (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Ring-buffer reserve failures, per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Every socket seen, keyed by `struct sock *`: its id (see `ident`).
#[map]
pub static SOCKETS: LruHashMap<u64, SockIdent> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU counter the socket ids are made from.
#[map]
pub static NEXT_SOCK_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The last process that called `sendmsg` on a socket, keyed by socket id.
#[map]
pub static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(16384, 0);

/// skbs seen at `dev_queue_xmit` that passed the filters, keyed by `struct sk_buff *`. One
/// insert per skb: per-CPU LRU lists spare each insert the common list's lock.
#[map]
pub static SKBS: LruHashMap<u64, SkbTrack> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);

/// `sendmsg` calls in progress, keyed by thread id.
#[map]
pub static SENDS: LruHashMap<u32, SendStart> = LruHashMap::with_max_entries(16384, 0);

/// Histograms (`sockmem hist`), summed over CPUs in userspace.
#[map]
pub static HISTS: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per-CPU scratch for what a handler observed, one slot per nesting level, and how many are
/// in use: one value, so that taking and giving back a slot is one lookup.
#[map]
pub static SCRATCH: PerCpuArray<CpuScratch> = PerCpuArray::with_max_entries(1, 0);

/// The socket whose `tcp_wfree` runs on this CPU (see `hooks::wmem::tcp_wfree`).
#[map]
pub static IN_TCP_WFREE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 1 while this CPU runs a softirq (see `sender::softirq_entry`).
#[map]
pub static IN_SOFTIRQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The histograms without `--per`, indexed by `HistKind` (slot 0 unused).
#[map]
pub static TOTAL_HISTS: PerCpuArray<Hist> =
    PerCpuArray::with_max_entries(sockmem_common::hist::KINDS, 0);

/// Never written: the zeroed value new histograms are created from.
#[map]
pub static ZERO_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

/// How complete the histograms are (see `sockmem_common::hist::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(sockmem_common::hist::counter::COUNT, 0);

/// Send system calls in progress, keyed by thread id (see `hooks::send::syscall_enter`).
#[map]
pub static SEND_CALLS: LruHashMap<u32, SendCall> = LruHashMap::with_max_entries(16384, 0);

/// `sk_wmem_queued` at `tcp_ack` entry, per CPU.
#[map]
pub static ACK_STASH: PerCpuArray<AckStash> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct AckStash {
    pub sk: u64,
    pub wmem_queued: i64,
}

#[repr(C)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// 1 once an skb of this socket passed the interface filter.
    pub iface_seen: u32,
    /// 1 when the sender was in the `--cgroup` cgroup (or below) when it sent: decided in its
    /// own context, where the ancestor helper can tell (see `filter::current_in_cgroup`).
    pub in_cgroup: u32,
    /// The sender's cgroup v2 id when it sent.
    pub cgroup_id: u64,
}

/// Adds one to a completeness counter (`sockmem_common::hist::counter`).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}
