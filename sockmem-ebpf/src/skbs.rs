//! Following skbs below the transport: the in-flight map and list walks.

use aya_ebpf::bindings::BPF_ANY;
use sockmem_common::{hist::counter, inflight::SkbTrack, HistKind};

use crate::{
    kernel,
    maps::{count, SKBS},
    sink::Extra,
};

/// Drops what is known about an skb address the filters do not keep: an entry left there by
/// an earlier skb freed unseen must not be taken for this one.
#[inline(always)]
pub fn forget(skb: u64) {
    let _ = SKBS.remove(skb);
}

/// The socket got a followed skb's truesize back at `t_now`: adds the transmit side's times to
/// `x` (once per skb) and remembers that they ended.
#[inline(always)]
pub fn given_back(skb: u64, t_now: u64, x: Extra) -> Extra {
    match SKBS.get_ptr_mut(skb) {
        Some(t) => end_transmit(unsafe { &mut *t }, t_now, x),
        None => x,
    }
}

/// Ends the transmit side of the followed skb `t` at `t_now` unless it ended already.
#[inline(always)]
pub fn end_transmit(t: &mut SkbTrack, t_now: u64, x: Extra) -> Extra {
    if t.given_back != 0 {
        return x;
    }
    t.given_back = 1;
    transmit_times(t.queued_ns, t.xmit_ns, t_now, x)
}

/// `driver_time` (hand-off → `t_now`) and `below_tcp` (`dev_queue_xmit` → `t_now`), where seen.
#[inline(always)]
pub fn transmit_times(queued_ns: u64, xmit_ns: u64, t_now: u64, mut x: Extra) -> Extra {
    if xmit_ns != 0 {
        x = x.with_sample(HistKind::DriverTime, t_now.saturating_sub(xmit_ns));
    }
    if queued_ns != 0 {
        x = x.with_sample(HistKind::BelowTcp, t_now.saturating_sub(queued_ns));
    }
    x
}

/// Starts following an skb below the transport.
#[inline(always)]
pub fn track(skb: u64, sk: u64, queued_ns: u64, xmit_ns: u64) {
    let t = SkbTrack {
        sk,
        head: kernel::skb_head(skb),
        queued_ns,
        xmit_ns,
        xmit_dev: 0,
        enqueued_ns: 0,
        qdisc_seen: 0,
        given_back: 0,
    };
    if SKBS.insert(skb, t, BPF_ANY as u64).is_ok() {
        count(counter::SKB_TRACKED);
    }
}

/// The most skbs of one list the programs follow. Without BQL (veth, most virtual devices)
/// `dequeue_skb` bulks at most 8 skbs; with BQL the device's byte limit keeps lists short.
const SKB_LIST_MAX: u32 = 16;

/// Calls `each` for every skb of the list starting at `first`, at most `len` of them; a list
/// longer than [`SKB_LIST_MAX`] is counted as cut.
#[inline(always)]
pub fn for_each_in_list(first: u64, len: u32, each: impl Fn(u64)) {
    let mut skb = first;
    let mut i = 0;
    while i < SKB_LIST_MAX {
        if skb == 0 || i >= len {
            return;
        }
        // Read before the handler: the skb stays linked while its hook runs, but read it once.
        let next = kernel::skb_next(skb);
        each(skb);
        skb = next;
        i += 1;
    }
    if skb != 0 && i < len {
        count(counter::LIST_CUT);
        crate::diag::list_cut(SKB_LIST_MAX);
    }
}
