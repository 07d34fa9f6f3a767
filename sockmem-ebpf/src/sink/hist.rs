//! `hist`: events become samples of per-CPU log2 histograms, keyed as `--per` asks.

use sockmem_common::{
    hist::{counter, slot, Per},
    Hist, HistKey, HistKind,
};

use super::Extra;
use crate::{
    kernel,
    maps::{count, HISTS, TOTAL_HISTS, ZERO_HIST},
    scratch::Observed,
};

/// Fills the scratch record's histogram key for this event, as `--per` asks; null without
/// `--per` (the totals need no key).
#[inline(always)]
fn hist_key(ob: &mut Observed) -> *mut HistKey {
    let per = unsafe { core::ptr::read_volatile(&kernel::config().per) };
    if per == Per::Total as u32 {
        return core::ptr::null_mut();
    }
    let (id, sender) = (&ob.id, &ob.sender);
    let key: *mut HistKey = &mut ob.key;
    unsafe {
        (*key).kind = 0;
        (*key).protocol = 0;
        (*key).family = 0;
        (*key).lport = 0;
        (*key).rport = 0;
        (*key).id = 0;
        (*key).laddr = [0; 16];
        (*key).raddr = [0; 16];
        (*key).name = [0; 16];
        if per == Per::Socket as u32 {
            (*key).protocol = id.protocol;
            (*key).family = id.family;
            (*key).lport = id.lport;
            (*key).rport = id.rport;
            (*key).id = ob.sock;
            (*key).laddr = id.laddr;
            (*key).raddr = id.raddr;
        } else if per == Per::Pid as u32 {
            (*key).id = sender.tgid as u64;
            (*key).name = sender.comm;
        } else if per == Per::Iface as u32 && ob.has_skb {
            (*key).name = ob.skb.ifname;
        } else if per == Per::Cgroup as u32 {
            (*key).id = sender.cgroup_id;
        } else if per == Per::Netns as u32 {
            (*key).id = ob.netns_ino as u64;
        } else if per == Per::CgroupIface as u32 {
            (*key).id = sender.cgroup_id;
            if ob.has_skb {
                (*key).name = ob.skb.ifname;
            }
        }
    }
    key
}

/// Adds `value` to the histogram `kind`: of `key`, or (`key` null, no `--per`) the total.
#[inline(always)]
fn record(kind: u8, key: *mut HistKey, value: u64) {
    // Without `--per` a per-CPU array indexed by kind does: no key to build and hash.
    let hist = if key.is_null() {
        match TOTAL_HISTS.get_ptr_mut(kind as u32) {
            Some(h) => h,
            None => return,
        }
    } else {
        match keyed(kind, key) {
            Some(h) => h,
            None => return,
        }
    };
    unsafe {
        if let Some(c) = (*hist).slots.get_mut(slot(value)) {
            *c += 1;
        }
        (*hist).count += 1;
        (*hist).sum += value;
        if value > (*hist).max {
            (*hist).max = value;
        }
    }
}

/// The histogram `kind` of `key`, created from a zeroed per-CPU template (a 544-byte value
/// cannot be built on the BPF stack either); `None` when the map is full.
#[inline(always)]
fn keyed(kind: u8, key: *mut HistKey) -> Option<*mut Hist> {
    // SAFETY: `key` points into this handler's own scratch slot.
    let key = unsafe {
        (*key).kind = kind;
        &*key
    };
    if let Some(h) = HISTS.get_ptr_mut(key) {
        return Some(h);
    }
    let zero = ZERO_HIST.get_ptr(0)?;
    // By reference: a copy of the 544-byte value would not fit on the BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let _ = HISTS.insert(key, unsafe { &*zero }, 0);
    let h = HISTS.get_ptr_mut(key);
    if h.is_none() {
        count(counter::HIST_FULL);
        crate::diag::hist_full();
    }
    h
}

/// Histogram mode: the event becomes samples of the value histograms and of the latencies it
/// completes. Not inlined: a BPF function of its own keeps its stack apart from the event path's.
#[inline(never)]
pub fn aggregate(ob: &mut Observed, x: &Extra) {
    let mem = kernel::counters(ob.sk);
    let key = hist_key(ob);
    // A socket being freed has no counters to sample; its latencies still count.
    if !mem.freed() {
        record(
            HistKind::WmemQueued as u8,
            key,
            mem.wmem_queued.max(0) as u64,
        );
        let alloc = (mem.wmem_alloc + x.alloc_adjust).max(0) as u64;
        record(HistKind::WmemAlloc as u8, key, alloc);
    }
    let mut i = 0;
    while i < 2 {
        let (kind, ns) = x.samples[i];
        if kind != 0 {
            record(kind, key, ns);
        }
        i += 1;
    }
}
