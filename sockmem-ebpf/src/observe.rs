//! The hook-independent event path: identify the socket → resolve the sender → filter → sink.
//! Nothing is reserved in the ring buffer before the filters pass.

use crate::scratch::Observed;
use crate::{
    filter, ident, kernel,
    scratch::Scratch,
    sender::{mark_iface_seen, record_sender, sender_of},
    sink::{emit, Extra},
};
use sockmem_common::Hook;

/// Identifies a socket and its sender into `ob` and applies every filter but the interface's;
/// false if filtered out. `in_send` is true in the sender's `sendmsg` context (the sender is then
/// recorded).
#[inline(always)]
fn admit(ob: &mut Observed, sk: u64, in_send: bool) -> bool {
    ob.sk = sk;
    ob.has_skb = false;
    if !kernel::socket_id(sk, &mut ob.id) {
        return false;
    }
    ob.sock = ident::identify(sk, &mut ob.id.lport, &mut ob.ino);
    if !filter::socket_passes(&ob.id) {
        return false;
    }
    if in_send {
        record_sender(ob.sock, ob.id.lport, &mut ob.sender);
    } else {
        sender_of(ob.sock, ob.hook, &mut ob.sender);
    }
    filter::sender_passes(ob.sender.tgid, &ob.sender.comm)
}

/// Whether the filters keep a socket (recording its sender when `in_send`).
#[inline(always)]
pub fn socket_kept(sk: u64, in_send: bool) -> bool {
    if !kernel::ready() {
        return false;
    }
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = 0;
    admit(ob, sk, in_send) && (!filter::has_iface_filter() || ob.sender.iface_seen)
}

/// A socket-level event (no skb); false if filtered out.
#[inline(always)]
pub fn socket_event(hook: Hook, sk: u64, in_send: bool, x: Extra) -> bool {
    if !kernel::ready() {
        return false;
    }
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = hook as u8;
    if !admit(ob, sk, in_send) {
        return false;
    }
    // A socket event has no interface: with an interface filter, keep the sockets that have sent
    // through that interface.
    if filter::has_iface_filter() && !ob.sender.iface_seen {
        return false;
    }
    emit(ob, &x);
    true
}

/// Where an skb event's interface comes from.
pub enum Dev {
    /// Read `skb->dev`.
    FromSkb,
    /// The hook passes the device.
    Given(u64),
    /// The skb is not on a device yet (e.g. a write-queue skb).
    None,
}

/// An skb-level event; false if filtered out. `sk` is the owning socket; `read_skb` is false
/// when the skb may already be gone (its length then comes from `len`).
#[inline(always)]
pub fn skb_event(
    hook: Hook,
    skb: u64,
    sk: u64,
    dev: Dev,
    read_skb: bool,
    len: u32,
    x: Extra,
) -> bool {
    let Some(scratch) = Scratch::take() else {
        return false;
    };
    let ob = scratch.get();
    ob.hook = hook as u8;
    if !admit(ob, sk, false) {
        return false;
    }
    let dev = match dev {
        Dev::FromSkb => kernel::skb_dev(skb),
        Dev::Given(d) => d,
        Dev::None => 0,
    };
    let v = &mut ob.skb;
    kernel::device(dev, &mut v.ifindex, &mut v.ifname);
    if !filter::iface_passes(&v.ifname) {
        return false;
    }
    if filter::has_iface_filter() {
        mark_iface_seen(ob.sock);
    }
    v.skb = skb;
    if read_skb {
        let (l, t) = kernel::skb_sizes(skb);
        v.len = l;
        v.truesize = t;
    } else {
        v.len = len;
        v.truesize = 0;
    }
    ob.has_skb = true;
    emit(ob, &x);
    true
}
