//! The hook-independent event path: identify the socket → resolve the sender → filter → sink.
//! Nothing is reserved in the ring buffer before the filters pass.

use crate::{
    filter, ident,
    kernel::{self, SocketId},
    needs,
    scratch::{Observed, Scratch},
    sender::{mark_iface_seen, record_sender, sender_of},
    sink::{emit, Extra},
};
use sockmem_common::{
    inflight::{SockIdent, VERDICT_FAIL, VERDICT_PASS},
    Hook,
};

/// Identifies a socket and its sender into `ob` and applies every filter but the interface's
/// (none with `unfiltered`); false if filtered out. `in_send` is true in the sender's `sendmsg`
/// context (the sender is then recorded). `skb` (0 for socket events) is the datagram an
/// unconnected UDP socket is judged by.
#[inline(always)]
fn admit(ob: &mut Observed, sk: u64, in_send: bool, skb: u64, unfiltered: bool) -> bool {
    ob.sk = sk;
    ob.has_skb = false;
    if !kernel::socket_id(sk, &mut ob.id) {
        return false;
    }
    let Some(e) = ident::identify(sk, &mut ob.id) else {
        return false;
    };
    // SAFETY: a map value, valid for this program's run.
    let e = unsafe { &mut *e };
    ob.sock = e.id;
    ob.ino = e.ino;
    ob.netns_ino = e.netns_ino;
    if !filter::netns_passes(e.netns_ino) && !unfiltered {
        return false;
    }
    if !socket_verdict(e, sk, &mut ob.id, skb) && !unfiltered {
        return false;
    }
    if needs::addresses() {
        kernel::socket_addrs(sk, &mut ob.id);
    }
    if !needs::sender() {
        ob.sender.unknown = true;
        return true;
    }
    if in_send {
        record_sender(ob.sock, ob.id.lport, &mut ob.sender);
    } else {
        sender_of(ob.sock, ob.hook, &mut ob.sender);
    }
    unfiltered || filter::sender_passes(ob.sender.tgid, &ob.sender.comm, ob.sender.in_cgroup)
}

/// The socket filters' verdict, decided once per socket (again if it connects later).
/// An unconnected UDP socket has no remote end: with a port or address filter each datagram is
/// judged by its headers (and shown with them), and the socket's own events pass once one of
/// its datagrams has.
#[inline(always)]
fn socket_verdict(e: &mut SockIdent, sk: u64, id: &mut SocketId, skb: u64) -> bool {
    if id.protocol == kernel::IPPROTO_UDP && id.rport == 0 && filter::has_endpoint_filter() {
        if skb == 0 {
            return e.datagram_passed != 0;
        }
        if !kernel::datagram_endpoints(skb, id) || !filter::socket_passes(id) {
            return false;
        }
        e.datagram_passed = 1;
        return true;
    }
    let ports = (id.lport as u32) << 16 | id.rport as u32;
    if e.verdict == 0 || e.verdict_ports != ports {
        kernel::socket_addrs(sk, id);
        e.verdict = if filter::socket_passes(id) {
            VERDICT_PASS
        } else {
            VERDICT_FAIL
        };
        e.verdict_ports = ports;
    }
    e.verdict == VERDICT_PASS
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
    admit(ob, sk, in_send, 0, false) && (!filter::has_iface_filter() || ob.sender.iface_seen)
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
    if !admit(ob, sk, in_send, 0, false) {
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
    // An skb that may be gone (`driver_done`) is not judged by its headers (they may be another
    // datagram's by now): its socket's verdict stands.
    let unfiltered = needs::every_socket(hook);
    if !admit(ob, sk, false, if read_skb { skb } else { 0 }, unfiltered) {
        return false;
    }
    // But an unconnected UDP socket's event still shows the datagram's destination where the
    // headers can be read, as its other skb events do.
    if !read_skb && ob.id.protocol == kernel::IPPROTO_UDP && ob.id.rport == 0 {
        let _ = kernel::datagram_endpoints(skb, &mut ob.id);
    }
    let v = &mut ob.skb;
    if needs::device() {
        let dev = match dev {
            Dev::FromSkb => kernel::skb_dev(skb),
            Dev::Given(d) => d,
            Dev::None => 0,
        };
        kernel::device(dev, &mut v.ifindex, &mut v.ifname);
        if !filter::iface_passes(&v.ifname) {
            return false;
        }
        if filter::has_iface_filter() {
            mark_iface_seen(ob.sock);
        }
    } else {
        v.ifindex = 0;
        v.ifname = [0; 16];
    }
    v.skb = skb;
    if read_skb && needs::skb_sizes() {
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
