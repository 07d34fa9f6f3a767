//! TCP's own events on a socket: segments arriving, ACKs freeing the write queue, retransmits,
//! destruction.

use sockmem_common::Hook;

use crate::{
    kernel,
    maps::ACK_STASH,
    observe::{skb_event, socket_event, Dev},
    sink::Extra,
};

#[inline(always)]
pub fn retransmit(sk: u64, skb: u64) {
    if !kernel::ready() {
        return;
    }
    skb_event(
        Hook::TcpRetransmit,
        skb,
        sk,
        Dev::None,
        true,
        0,
        Extra::value(0),
    );
}

#[inline(always)]
pub fn ack(sk: u64) {
    socket_event(Hook::TcpAck, sk, false, Extra::value(0));
}

/// The socket is destroyed. Its sender stays known (ids are never reused, the LRU map evicts
/// it): skbs still in flight are freed after this and keep naming their sender.
#[inline(always)]
pub fn destroy(sk: u64) {
    socket_event(Hook::SockDestroy, sk, false, Extra::value(0));
}

/// `tcp_ack` entry: remember `sk_wmem_queued` to report what this ACK freed. Per CPU, because
/// ACK processing runs in softirq and does not nest on one CPU.
#[inline(always)]
pub fn ack_enter(sk: u64) {
    if !kernel::ready() {
        return;
    }
    if let Some(slot) = ACK_STASH.get_ptr_mut(0) {
        unsafe {
            (*slot).sk = sk;
            (*slot).wmem_queued = kernel::wmem_queued(sk) as i64;
        }
    }
}

#[inline(always)]
pub fn ack_exit() {
    let Some(slot) = ACK_STASH.get_ptr_mut(0) else {
        return;
    };
    let (sk, before) = unsafe { ((*slot).sk, (*slot).wmem_queued) };
    unsafe { (*slot).sk = 0 };
    if sk == 0 {
        return;
    }
    let change = kernel::wmem_queued(sk) as i64 - before;
    // An ACK that freed nothing changed nothing: not an event.
    if change != 0 {
        socket_event(Hook::TcpAckFreed, sk, false, Extra::value(change));
    }
}
