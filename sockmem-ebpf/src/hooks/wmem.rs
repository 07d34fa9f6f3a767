//! `sk_wmem_alloc` charged (skb given to the socket) and given back (skb destructor), and the
//! reference TCP Small Queues keeps.

use sockmem_common::{event::FLAG_TSQ_REFERENCE, Hook};

use crate::{
    kernel,
    maps::IN_TCP_WFREE,
    observe::{skb_event, socket_event, Dev},
    sink::Extra,
    skbs,
};

/// `sk_wmem_alloc` is about to grow by the skb's truesize (called at function entry, so the
/// reported counter is the value after the change).
#[inline(always)]
pub fn charge(sk: u64, skb: u64) {
    if !kernel::ready() || sk == 0 {
        return;
    }
    let (_, truesize) = kernel::skb_sizes(skb);
    let x = Extra {
        aux: 0,
        value: truesize as i64,
        duration_ns: 0,
        flags: 0,
        alloc_adjust: truesize as i32,
        samples: [(0, 0); 2],
    };
    skb_event(Hook::WmemCharge, skb, sk, Dev::None, true, 0, x);
}

/// The skb destructor is about to give its truesize back to the socket.
#[inline(always)]
pub fn release(skb: u64) {
    if !kernel::ready() {
        return;
    }
    let sk = kernel::skb_sk(skb);
    if sk == 0 {
        return;
    }
    let (_, truesize) = kernel::skb_sizes(skb);
    let x = Extra {
        aux: 0,
        value: -(truesize as i64),
        duration_ns: 0,
        flags: 0,
        alloc_adjust: -(truesize as i32),
        samples: [(0, 0); 2],
    };
    // The transmit side of a followed skb ends where the socket gets its bytes back.
    let x = skbs::given_back(skb, kernel::now(), x);
    skb_event(Hook::WmemRelease, skb, sk, Dev::FromSkb, true, 0, x);
}

/// `tcp_wfree` gives back all of an skb's truesize but 1, and keeps that 1 as a reference on
/// `sk_wmem_alloc` (TCP Small Queues) that `sk_free` drops: right away, or later from the TSQ
/// tasklet/work when the socket was queued to send more. The release event above reports the
/// truesize; the deferred drop is reported by [`tsq_reference_released`], so that the counters
/// of the last event of a drained socket read 0 as they do in the kernel.
#[inline(always)]
pub fn tcp_wfree(skb: u64) {
    let sk = kernel::skb_sk(skb);
    if let Some(w) = IN_TCP_WFREE.get_ptr_mut(0) {
        unsafe { *w = sk };
    }
    release(skb);
}

/// `tcp_wfree` returned: its own `sk_free` call, if any, is behind us.
#[inline(always)]
pub fn tcp_wfree_done() {
    if let Some(w) = IN_TCP_WFREE.get_ptr_mut(0) {
        unsafe { *w = 0 };
    }
}

/// `sk_free` on a live TCP socket outside `tcp_wfree`: the TSQ reference is dropped.
/// (Inside `tcp_wfree` the release event already counted it; on a socket being destroyed
/// `sk_refcnt` is 0 and nothing is reported.)
#[inline(always)]
pub fn tsq_reference_released(sk: u64) {
    if !kernel::ready() || sk == 0 {
        return;
    }
    if matches!(IN_TCP_WFREE.get(0), Some(&w) if w == sk) {
        return;
    }
    if kernel::sk_protocol(sk) != kernel::IPPROTO_TCP
        || kernel::sk_refcnt(sk) == 0
        || kernel::wmem_alloc(sk) < 1
    {
        return;
    }
    let x = Extra {
        aux: 0,
        value: 0,
        duration_ns: 0,
        flags: FLAG_TSQ_REFERENCE,
        alloc_adjust: -1,
        samples: [(0, 0); 2],
    };
    socket_event(Hook::WmemRelease, sk, false, x);
}

/// `sock:sock_exceed_buf_limit`: the protocol refused `sk` memory (`kind` 0: to send, 1: to
/// receive); `allocated` is the protocol's pages in use, carried in `aux`. A send is refused in
/// the sender's own call; a receive in softirq, where the current task is not the socket's.
#[inline(always)]
pub fn exceed_buf_limit(sk: u64, allocated: u64, kind: u64) {
    let kind = kind as u32;
    let mut x = Extra::value(i64::from(kind != 0));
    x.aux = allocated;
    socket_event(Hook::SockExceedBufLimit, sk, kind == 0, x);
}
