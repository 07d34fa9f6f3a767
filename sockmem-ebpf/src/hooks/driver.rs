//! The driver and the skb's end: hand-off, the driver's return, free or drop.

use sockmem_common::{hist::counter, Hook};

use crate::{
    kernel::{self, now},
    maps::{count, SKBS},
    needs,
    observe::{skb_event, Dev},
    sink::Extra,
    skbs::{end_transmit, for_each_in_list, forget, track, transmit_times},
};

/// The driver is handed the list starting at `first` (`dev_hard_start_xmit`).
#[inline(always)]
pub fn xmit_list(first: u64, dev: u64) {
    for_each_in_list(first, u32::MAX, |skb| xmit(skb, dev));
}

/// One skb is handed to the driver. Not inlined: list walks call it once per skb.
#[inline(never)]
pub fn xmit(skb: u64, dev: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    let mut x = Extra::value(0);
    if sk != 0 && needs::tx_queue() {
        (x.value, x.aux) = kernel::tx_queue(skb, dev);
    }
    if sk == 0 || !skb_event(Hook::DriverXmit, skb, sk, Dev::Given(dev), true, 0, x) {
        forget(skb);
        return;
    }
    match SKBS.get_ptr_mut(skb) {
        Some(t) => unsafe {
            (*t).xmit_ns = now();
            (*t).xmit_dev = dev;
            // Seen at dev_queue_xmit but never enqueued: no qdisc, or the qdisc let it bypass.
            if (*t).queued_ns != 0 && (*t).qdisc_seen == 0 {
                count(counter::QDISC_BYPASS);
            }
        },
        // A segment made below dev_queue_xmit (e.g. a qdisc splitting a GSO skb): track it
        // from here so its driver return and free are seen too.
        None => {
            track(skb, sk, 0, now());
            if let Some(t) = SKBS.get_ptr_mut(skb) {
                unsafe { (*t).xmit_dev = dev };
            }
        }
    }
}

/// After `ndo_start_xmit` returns the skb may already be freed: only tracked skbs, and the skb
/// itself is not read.
#[inline(always)]
pub fn done(skb: u64, rc: u64, dev: u64, len: u64) {
    let (rc, len) = (rc as i32, len as u32);
    if !kernel::ready() {
        return;
    }
    let Some(t) = SKBS.get_ptr_mut(skb) else {
        return;
    };
    // SAFETY: a map value, valid for this program's run.
    let t = unsafe { &mut *t };
    let (sk, xmit_ns) = (t.sk, t.xmit_ns);
    // Another device: an entry left by an skb freed unseen, not this transmission.
    if t.xmit_dev != dev {
        return;
    }
    let t_now = now();
    let duration = if xmit_ns == 0 { 0 } else { t_now - xmit_ns };
    let mut x = Extra::timed(rc as i64, duration);
    // A driver that orphans the skb in its xmit (loopback, a veth handing it to its peer) gave
    // the socket its bytes back already. Where no hook sees the destructor (tracepoints), this
    // is the first moment it shows: the skb no longer points at the socket. The transmit side
    // ends here, not when the receiver frees the skb much later. `skb->head` is not compared
    // (a read, ~50 ns, on every followed skb): an skb freed since, whatever it became, gave
    // the socket its bytes back too, and still tracked means its free went unseen.
    if t.given_back == 0 && kernel::skb_sk(skb) != sk {
        x = end_transmit(t, t_now, x);
    }
    skb_event(Hook::DriverDone, skb, sk, Dev::Given(dev), false, len, x);
}

/// A followed skb reaches a receiving stack on this machine (`netif_receive_skb`): the end of
/// its transmit side (a veth's peer orphans it in `ip_rcv`, right after).
#[inline(always)]
pub fn received(skb: u64) {
    if !kernel::ready() {
        return;
    }
    let Some(t) = SKBS.get_ptr_mut(skb) else {
        return;
    };
    let t = unsafe { &mut *t };
    // Ended already (the destructor ran, or a loopback orphaned it in its xmit), or another
    // buffer at the address.
    if t.given_back != 0 || kernel::skb_head(skb) != t.head {
        return;
    }
    let (sk, queued_ns, xmit_dev) = (t.sk, t.queued_ns, t.xmit_dev);
    let t_now = now();
    let since = if queued_ns != 0 { queued_ns } else { t.xmit_ns };
    let x = end_transmit(t, t_now, Extra::timed(0, t_now.saturating_sub(since)));
    // Shown on the device it was sent through (its transmit side ends), as `--iface` and
    // `--per iface` expect; `skb->dev` is the receiving one by now.
    let dev = if xmit_dev != 0 {
        Dev::Given(xmit_dev)
    } else {
        Dev::FromSkb
    };
    skb_event(Hook::SkbReceived, skb, sk, dev, true, 0, x);
}

/// `consume_skb`: a tracked skb is freed (value: still charged to the socket).
#[inline(always)]
pub fn skb_free(skb: u64) {
    skb_freed(Hook::SkbFree, skb, 0, 0);
}

/// `kfree_skb`: a tracked skb is dropped (value: the drop reason; aux: where).
#[inline(always)]
pub fn skb_drop(skb: u64, reason: u64, location: u64) {
    skb_freed(Hook::SkbDrop, skb, reason as u32, location);
}

#[inline(always)]
fn skb_freed(hook: Hook, skb: u64, reason: u32, location: u64) {
    if !kernel::ready() {
        return;
    }
    let Some(t) = (unsafe { SKBS.get(skb) }) else {
        return;
    };
    let (sk, head, queued_ns, xmit_ns) = (t.sk, t.head, t.queued_ns, t.xmit_ns);
    let given_back = t.given_back;
    let _ = SKBS.remove(skb);
    // Same address, other buffer: a later skb, not the one that was followed.
    if kernel::skb_head(skb) != head {
        crate::diag::stale_skb(skb);
        return;
    }
    count(counter::SKB_FREED);
    let value = match hook {
        Hook::SkbDrop => reason as i64,
        _ => (kernel::skb_sk(skb) == sk) as i64,
    };
    let t_now = now();
    let since = if queued_ns != 0 { queued_ns } else { xmit_ns };
    let mut x = Extra::timed(value, t_now.saturating_sub(since));
    x.aux = location;
    if given_back == 0 {
        x = transmit_times(queued_ns, xmit_ns, t_now, x);
    }
    skb_event(hook, skb, sk, Dev::FromSkb, true, 0, x);
}
