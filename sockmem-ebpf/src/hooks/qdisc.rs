//! The device layer's entry and the qdisc: `dev_queue_xmit`, enqueue, dequeue (bulk lists too).

use sockmem_common::{hist::counter, HistKind, Hook};

use crate::{
    kernel::{self, now},
    maps::{count, SKBS},
    observe::{skb_event, Dev},
    sink::Extra,
    skbs::{for_each_in_list, forget, track},
};

#[inline(always)]
pub fn dev_queue_xmit(skb: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    let x = Extra::value(0);
    if sk != 0 && skb_event(Hook::DevQueueXmit, skb, sk, Dev::FromSkb, true, 0, x) {
        track(skb, sk, now(), 0);
    } else {
        forget(skb);
    }
}

#[inline(always)]
pub fn enqueue(skb: u64) {
    if !kernel::ready() || skb == 0 {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk != 0
        && skb_event(
            Hook::QdiscEnqueue,
            skb,
            sk,
            Dev::FromSkb,
            true,
            0,
            Extra::value(0),
        )
    {
        match SKBS.get_ptr_mut(skb) {
            Some(t) => unsafe {
                (*t).enqueued_ns = now();
                (*t).qdisc_seen = 1;
            },
            None => {
                track(skb, sk, 0, 0);
                if let Some(t) = SKBS.get_ptr_mut(skb) {
                    unsafe {
                        (*t).enqueued_ns = now();
                        (*t).qdisc_seen = 1;
                    }
                }
            }
        }
    }
}

/// A dequeue handed out `packets` skbs linked from `first` (bulk dequeue).
#[inline(always)]
pub fn dequeue_list(first: u64, packets: u64) {
    for_each_in_list(first, packets as u32, dequeue);
}

/// A dequeue whose hook does not say how many skbs it handed out: the list ends at a null `next`.
#[inline(always)]
pub fn dequeue_list_to_end(first: u64) {
    for_each_in_list(first, u32::MAX, dequeue);
}

/// One skb leaves the qdisc. Not inlined: list walks call it once per skb.
#[inline(never)]
fn dequeue(skb: u64) {
    if !kernel::ready() || skb == 0 {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk == 0 {
        return;
    }
    let mut x = Extra::value(0);
    let mut matched = false;
    if let Some(t) = SKBS.get_ptr_mut(skb) {
        unsafe {
            if (*t).enqueued_ns != 0 {
                let sojourn = now().saturating_sub((*t).enqueued_ns);
                x = x.with_sample(HistKind::QdiscSojourn, sojourn);
                (*t).enqueued_ns = 0;
                matched = true;
            }
        }
    }
    if skb_event(Hook::QdiscDequeue, skb, sk, Dev::FromSkb, true, 0, x) && !matched {
        count(counter::QDISC_UNMATCHED);
    }
}

/// Entry of `dev_qdisc_enqueue` with its result known (fexit): only successful enqueues count,
/// as with the tracepoint.
#[inline(always)]
pub fn enqueue_result(skb: u64, ret: u64) {
    if ret as i32 == 0 {
        enqueue(skb);
    }
}
