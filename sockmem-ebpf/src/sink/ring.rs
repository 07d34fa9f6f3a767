//! `trace`: one `SockEvent` per admitted event, written in place in the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
};
use sockmem_common::{
    event::{FLAG_HAS_SKB, FLAG_OWNER_FROM_SEND, FLAG_OWNER_UNKNOWN, FLAG_SOCK_FREED},
    SockEvent,
};

use super::Extra;
use crate::{
    kernel::{self, SendMemory},
    maps::{EVENTS, LOST},
    scratch::Observed,
};

/// Wake the reader once this share of the ring (1/WAKE_AT_FRACTION) holds unread data.
const WAKE_AT_FRACTION: u64 = 8;
/// The ring space one event takes: the record and its 8-byte header, rounded up to 8.
const RECORD_BYTES: u64 = (core::mem::size_of::<SockEvent>() as u64 + 8 + 7) & !7;

/// Whether this submit should wake the reader. The kernel's default wakes it for the first
/// record after every drain, a wake-up every few events at full rate; instead the reader drains
/// on a short timer (`trace`'s loop) and is woken early only as the ring fills past the mark.
/// Only the few records just past it wake (several CPUs may pass it at once): a reader that
/// lags behind is not woken again by every event, and its timer drains the ring anyway.
#[inline(always)]
fn wakeup_flag() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let mark = wake_mark();
    if avail >= mark && avail < mark + 4 * RECORD_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The ring's size / [`WAKE_AT_FRACTION`], asked once: the size is fixed at load, and a
/// `bpf_ringbuf_query` is a helper call per event. Whichever CPU asks first writes it (all
/// write the same value).
static mut WAKE_MARK: u64 = 0;

#[inline(always)]
fn wake_mark() -> u64 {
    let at = core::ptr::addr_of_mut!(WAKE_MARK);
    // SAFETY: a global of this object (its `.bss`); a racing write stores the same value.
    let mut mark = unsafe { core::ptr::read_volatile(at) };
    if mark == 0 {
        mark = EVENTS.query(BPF_RB_RING_SIZE as u64) / WAKE_AT_FRACTION;
        unsafe { core::ptr::write_volatile(at, mark) };
    }
    mark
}

/// Reserves, fills in place and submits one event; counts a failed reserve as lost.
#[inline(always)]
pub fn submit(ob: &mut Observed, x: &Extra) {
    let (sk, id, sender) = (ob.sk, &ob.id, &ob.sender);
    let Some(mut entry) = EVENTS.reserve::<SockEvent>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            unsafe { *lost += 1 };
        }
        return;
    };
    let mem: SendMemory = kernel::send_memory(sk);
    let mut flags = x.flags;
    if sender.from_send {
        flags |= FLAG_OWNER_FROM_SEND;
    }
    if sender.unknown {
        flags |= FLAG_OWNER_UNKNOWN;
    }
    let freed = mem.freed();
    if freed {
        flags |= FLAG_SOCK_FREED;
    }
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved ring-buffer slot of the right size and alignment; every
    // field is written before submit.
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).sk = sk;
        (*e).sock_id = ob.sock;
        (*e).ino = ob.ino;
        (*e).value = x.value;
        (*e).aux = x.aux;
        (*e).duration_ns = x.duration_ns;
        (*e).cgroup_id = sender.cgroup_id;
        (*e).netns_ino = ob.netns_ino;
        (*e).tgid = sender.tgid;
        (*e).pid = sender.pid;
        (*e).cpu = bpf_get_smp_processor_id();
        if freed {
            (*e).wmem_queued = 0;
            (*e).wmem_alloc = 0;
            (*e).sndbuf = 0;
        } else {
            (*e).wmem_queued = mem.wmem_queued;
            (*e).wmem_alloc = mem.wmem_alloc + x.alloc_adjust;
            (*e).sndbuf = mem.sndbuf;
        }
        (*e).lport = id.lport;
        (*e).rport = id.rport;
        (*e).family = id.family;
        (*e).protocol = id.protocol;
        (*e).hook = ob.hook;
        (*e)._pad = [0; 7];
        (*e).comm = sender.comm;
        (*e).laddr = id.laddr;
        (*e).raddr = id.raddr;
        if ob.has_skb {
            let s = &ob.skb;
            (*e).skb = s.skb;
            (*e).skb_len = s.len;
            (*e).skb_truesize = s.truesize;
            (*e).ifindex = s.ifindex;
            (*e).ifname = s.ifname;
            flags |= FLAG_HAS_SKB;
        } else {
            (*e).skb = 0;
            (*e).skb_len = 0;
            (*e).skb_truesize = 0;
            (*e).ifindex = 0;
            (*e).ifname = [0; 16];
        }
        (*e).flags = flags;
    }
    entry.submit(wakeup_flag());
}
