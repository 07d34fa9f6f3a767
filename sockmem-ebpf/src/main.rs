//! sockmem's eBPF programs: one thin entry point per hook and attach mechanism, each calling a
//! hook-independent handler in `handlers.rs`.
#![no_std]
#![no_main]

mod filter;
mod handlers;
mod kernel;

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use sockmem_common::{Config, Hook};

/// Filled by the loader (offsets from BTF, filters) before any program is attached.
#[no_mangle]
static CONFIG: Config = unsafe { core::mem::zeroed() };

/// Events to userspace; the loader resizes it (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Ring-buffer reserve failures, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The last process that called `sendmsg` on a socket, keyed by `struct sock *`.
#[map]
static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(16384, 0);

/// skbs seen at `dev_queue_xmit` that passed the filters, keyed by `struct sk_buff *`.
#[map]
static SKBS: LruHashMap<u64, SkbTrack> = LruHashMap::with_max_entries(65536, 0);

/// `sendmsg` calls in progress, keyed by thread id.
#[map]
static SENDS: LruHashMap<u32, SendStart> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// 1 once an skb of this socket passed the interface filter.
    pub iface_seen: u32,
    pub _pad: u32,
}

#[repr(C)]
pub struct SkbTrack {
    pub sk: u64,
    pub queued_ns: u64,
    pub xmit_ns: u64,
}

#[repr(C)]
pub struct SendStart {
    pub sk: u64,
    pub ts_ns: u64,
}

// ---- tracepoint backend (raw tracepoints: arguments are the tracepoint's TP_PROTO) ----

#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn tp_tcp_sendmsg_locked(ctx: RawTracePointContext) -> i32 {
    handlers::tcp_sendmsg(ctx.arg(0), ctx.arg::<u64>(3) as i32);
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn tp_sock_send_length(ctx: RawTracePointContext) -> i32 {
    handlers::sendmsg_return(ctx.arg(0), ctx.arg::<u64>(1) as i32);
    0
}

#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn tp_net_dev_queue(ctx: RawTracePointContext) -> i32 {
    handlers::dev_queue_xmit(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "qdisc_enqueue")]
pub fn tp_qdisc_enqueue(ctx: RawTracePointContext) -> i32 {
    handlers::qdisc(Hook::QdiscEnqueue, ctx.arg(2));
    0
}

#[raw_tracepoint(tracepoint = "qdisc_dequeue")]
pub fn tp_qdisc_dequeue(ctx: RawTracePointContext) -> i32 {
    handlers::qdisc(Hook::QdiscDequeue, ctx.arg(3));
    0
}

#[raw_tracepoint(tracepoint = "net_dev_start_xmit")]
pub fn tp_net_dev_start_xmit(ctx: RawTracePointContext) -> i32 {
    handlers::driver_xmit(ctx.arg(0), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "net_dev_xmit")]
pub fn tp_net_dev_xmit(ctx: RawTracePointContext) -> i32 {
    handlers::driver_done(
        ctx.arg(0),
        ctx.arg::<u64>(1) as i32,
        ctx.arg(2),
        ctx.arg::<u64>(3) as u32,
    );
    0
}

#[raw_tracepoint(tracepoint = "consume_skb")]
pub fn tp_consume_skb(ctx: RawTracePointContext) -> i32 {
    handlers::skb_freed(Hook::SkbFree, ctx.arg(0), 0);
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn tp_kfree_skb(ctx: RawTracePointContext) -> i32 {
    handlers::skb_freed(Hook::SkbDrop, ctx.arg(0), ctx.arg::<u64>(2) as u32);
    0
}

#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn tp_tcp_probe(ctx: RawTracePointContext) -> i32 {
    handlers::tcp_ack(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tp_tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    handlers::tcp_retransmit(ctx.arg(0), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tp_tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    handlers::sock_destroy(ctx.arg(0));
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
