//! sockmem's eBPF programs: one thin entry point per hook and attach mechanism, each calling a
//! hook-independent handler in `handlers.rs`.
#![no_std]
#![no_main]

mod filter;
mod handlers;
mod kernel;

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use sockmem_common::{
    hist::{counter, Hist, HistKey},
    inflight::{SendStart, SkbTrack},
    Config, Hook,
};

/// Filled by the loader (offsets from BTF, filters) before any program is attached.
#[no_mangle]
static CONFIG: Config = unsafe { core::mem::zeroed() };

/// `[0]` = 1 while the programs should work; set by userspace once every hook is attached.
#[map]
static RUNNING: Array<u32> = Array::with_max_entries(1, 0);

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

/// Histograms (`sockmem hist`), summed over CPUs in userspace.
#[map]
static HISTS: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per-CPU scratch for what a handler observed, one slot per nesting level.
#[map]
static SCRATCH: PerCpuArray<handlers::Observed> = PerCpuArray::with_max_entries(4, 0);

/// The socket whose `tcp_wfree` runs on this CPU (see `handlers::tcp_wfree`).
#[map]
static IN_TCP_WFREE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 1 while this CPU runs a softirq (see `handlers::softirq`).
#[map]
static IN_SOFTIRQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// How many scratch slots are in use on this CPU.
#[map]
static SCRATCH_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Never written: the zeroed value new histograms are created from.
#[map]
static ZERO_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

/// How complete the histograms are (see `sockmem_common::hist::counter`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `sk_stream_wait_memory` calls in progress, keyed by thread id.
#[map]
static WAITS: LruHashMap<u32, SendStart> = LruHashMap::with_max_entries(16384, 0);

/// `sk_wmem_queued` at `tcp_ack` entry, per CPU.
#[map]
static ACK_STASH: PerCpuArray<AckStash> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct AckStash {
    pub sk: u64,
    pub wmem_queued: i64,
}

#[repr(C)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// 1 once an skb of this socket passed the interface filter.
    pub iface_seen: u32,
    pub _pad: u32,
}

// ---- tracepoint backend (raw tracepoints: arguments are the tracepoint's TP_PROTO) ----

#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn tp_tcp_sendmsg_locked(ctx: RawTracePointContext) -> i32 {
    handlers::tcp_sendmsg(ctx.arg(0), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn tp_sock_send_length(ctx: RawTracePointContext) -> i32 {
    handlers::sendmsg_return(ctx.arg(0), ctx.arg::<u64>(1) as i32);
    0
}

// ---- execution context (not hooks: they tell softirq from process context) ----

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn tp_softirq_entry(_ctx: RawTracePointContext) -> i32 {
    handlers::softirq(true);
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn tp_softirq_exit(_ctx: RawTracePointContext) -> i32 {
    handlers::softirq(false);
    0
}

#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn tp_net_dev_queue(ctx: RawTracePointContext) -> i32 {
    handlers::dev_queue_xmit(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "qdisc_enqueue")]
pub fn tp_qdisc_enqueue(ctx: RawTracePointContext) -> i32 {
    handlers::qdisc_enqueue(ctx.arg(2));
    0
}

#[raw_tracepoint(tracepoint = "qdisc_dequeue")]
pub fn tp_qdisc_dequeue(ctx: RawTracePointContext) -> i32 {
    // qdisc_dequeue(qdisc, txq, packets, skb): `skb` heads a list of `packets` skbs.
    handlers::qdisc_dequeue_list(ctx.arg(3), ctx.arg::<u64>(2) as u32);
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

// ---- fentry / fexit backend (BTF trampolines: arguments are the function's) ----

/// The return value of an fexit program's function (0 if the helper is unavailable). The
/// functions here return `int`: callers truncate to `i32`, as the upper half is not defined.
#[inline(always)]
fn ret(ctx: &FExitContext) -> i64 {
    ctx.ret::<i64>().unwrap_or(0)
}

#[fentry(function = "tcp_sendmsg")]
pub fn fentry_tcp_sendmsg(ctx: FEntryContext) -> i32 {
    handlers::tcp_sendmsg(ctx.arg(0), ctx.arg(1));
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn fexit_tcp_sendmsg(ctx: FExitContext) -> i32 {
    handlers::sendmsg_return(ctx.arg(0), ret(&ctx) as i32);
    0
}

#[fexit(function = "udp_sendmsg")]
pub fn fexit_udp_sendmsg(ctx: FExitContext) -> i32 {
    handlers::sendmsg_return(ctx.arg(0), ret(&ctx) as i32);
    0
}

#[fexit(function = "udpv6_sendmsg")]
pub fn fexit_udpv6_sendmsg(ctx: FExitContext) -> i32 {
    handlers::sendmsg_return(ctx.arg(0), ret(&ctx) as i32);
    0
}

#[fentry(function = "__dev_queue_xmit")]
pub fn fentry_dev_queue_xmit(ctx: FEntryContext) -> i32 {
    handlers::dev_queue_xmit(ctx.arg(0));
    0
}

#[fexit(function = "dev_qdisc_enqueue")]
pub fn fexit_dev_qdisc_enqueue(ctx: FExitContext) -> i32 {
    handlers::qdisc_enqueue_result(ctx.arg(0), ret(&ctx) as i32);
    0
}

#[fentry(function = "sch_direct_xmit")]
pub fn fentry_sch_direct_xmit(ctx: FEntryContext) -> i32 {
    handlers::qdisc_dequeue_list(ctx.arg(0), u32::MAX);
    0
}

#[fentry(function = "dev_hard_start_xmit")]
pub fn fentry_dev_hard_start_xmit(ctx: FEntryContext) -> i32 {
    handlers::driver_xmit_list(ctx.arg(0), ctx.arg(1));
    0
}

#[fentry(function = "tcp_rcv_established")]
pub fn fentry_tcp_rcv_established(ctx: FEntryContext) -> i32 {
    handlers::tcp_ack(ctx.arg(0));
    0
}

#[fentry(function = "__tcp_retransmit_skb")]
pub fn fentry_tcp_retransmit_skb(ctx: FEntryContext) -> i32 {
    handlers::tcp_retransmit(ctx.arg(0), ctx.arg(1));
    0
}

#[fentry(function = "tcp_v4_destroy_sock")]
pub fn fentry_tcp_v4_destroy_sock(ctx: FEntryContext) -> i32 {
    handlers::sock_destroy(ctx.arg(0));
    0
}

#[fentry(function = "__tcp_transmit_skb")]
pub fn fentry_tcp_transmit_skb(ctx: FEntryContext) -> i32 {
    handlers::wmem_charge(ctx.arg(0), ctx.arg(1));
    0
}

#[fentry(function = "skb_set_owner_w")]
pub fn fentry_skb_set_owner_w(ctx: FEntryContext) -> i32 {
    handlers::wmem_charge(ctx.arg(1), ctx.arg(0));
    0
}

#[fentry(function = "tcp_wfree")]
pub fn fentry_tcp_wfree(ctx: FEntryContext) -> i32 {
    handlers::tcp_wfree(ctx.arg(0));
    0
}

#[fexit(function = "tcp_wfree")]
pub fn fexit_tcp_wfree(_ctx: FExitContext) -> i32 {
    handlers::tcp_wfree_done();
    0
}

#[fentry(function = "sk_free")]
pub fn fentry_sk_free(ctx: FEntryContext) -> i32 {
    handlers::tsq_reference_released(ctx.arg(0));
    0
}

#[fentry(function = "sock_wfree")]
pub fn fentry_sock_wfree(ctx: FEntryContext) -> i32 {
    handlers::wmem_release(ctx.arg(0));
    0
}

#[fentry(function = "__sock_wfree")]
pub fn fentry_sock_wfree_inner(ctx: FEntryContext) -> i32 {
    handlers::wmem_release(ctx.arg(0));
    0
}

#[fentry(function = "tcp_ack")]
pub fn fentry_tcp_ack(ctx: FEntryContext) -> i32 {
    handlers::ack_enter(ctx.arg(0));
    0
}

#[fexit(function = "tcp_ack")]
pub fn fexit_tcp_ack(_ctx: FExitContext) -> i32 {
    handlers::ack_exit();
    0
}

#[fentry(function = "sk_stream_wait_memory")]
pub fn fentry_sk_stream_wait_memory(ctx: FEntryContext) -> i32 {
    handlers::wait_enter(ctx.arg(0));
    0
}

#[fexit(function = "sk_stream_wait_memory")]
pub fn fexit_sk_stream_wait_memory(ctx: FExitContext) -> i32 {
    handlers::wait_exit(ret(&ctx) as i32 as i64);
    0
}

// ---- kprobe / kretprobe backend (arguments from registers; returns need an entry stash) ----

#[kprobe]
pub fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> i32 {
    if let (Some(sk), Some(msg)) = (ctx.arg(0), ctx.arg(1)) {
        handlers::tcp_sendmsg(sk, msg);
    }
    0
}

/// Attached to every `*_sendmsg` whose return is traced: remembers the socket per thread.
#[kprobe]
pub fn kprobe_sendmsg_enter(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::sendmsg_enter(sk);
    }
    0
}

#[kretprobe]
pub fn kretprobe_sendmsg(ctx: RetProbeContext) -> i32 {
    handlers::sendmsg_return_of_thread(ctx.ret::<i64>());
    0
}

#[kprobe]
pub fn kprobe_dev_queue_xmit(ctx: ProbeContext) -> i32 {
    if let Some(skb) = ctx.arg(0) {
        handlers::dev_queue_xmit(skb);
    }
    0
}

#[kprobe]
pub fn kprobe_dev_qdisc_enqueue(ctx: ProbeContext) -> i32 {
    if let Some(skb) = ctx.arg(0) {
        handlers::qdisc_enqueue(skb);
    }
    0
}

#[kprobe]
pub fn kprobe_sch_direct_xmit(ctx: ProbeContext) -> i32 {
    if let Some(skb) = ctx.arg(0) {
        handlers::qdisc_dequeue_list(skb, u32::MAX);
    }
    0
}

#[kprobe]
pub fn kprobe_dev_hard_start_xmit(ctx: ProbeContext) -> i32 {
    if let (Some(skb), Some(dev)) = (ctx.arg(0), ctx.arg(1)) {
        handlers::driver_xmit_list(skb, dev);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_rcv_established(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::tcp_ack(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_retransmit_skb(ctx: ProbeContext) -> i32 {
    if let (Some(sk), Some(skb)) = (ctx.arg(0), ctx.arg(1)) {
        handlers::tcp_retransmit(sk, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_v4_destroy_sock(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::sock_destroy(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_transmit_skb(ctx: ProbeContext) -> i32 {
    if let (Some(sk), Some(skb)) = (ctx.arg(0), ctx.arg(1)) {
        handlers::wmem_charge(sk, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_skb_set_owner_w(ctx: ProbeContext) -> i32 {
    if let (Some(skb), Some(sk)) = (ctx.arg(0), ctx.arg(1)) {
        handlers::wmem_charge(sk, skb);
    }
    0
}

/// Attached to `sock_wfree` and `__sock_wfree`.
#[kprobe]
pub fn kprobe_wfree(ctx: ProbeContext) -> i32 {
    if let Some(skb) = ctx.arg(0) {
        handlers::wmem_release(skb);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_wfree(ctx: ProbeContext) -> i32 {
    if let Some(skb) = ctx.arg(0) {
        handlers::tcp_wfree(skb);
    }
    0
}

#[kretprobe]
pub fn kretprobe_tcp_wfree(_ctx: RetProbeContext) -> i32 {
    handlers::tcp_wfree_done();
    0
}

#[kprobe]
pub fn kprobe_sk_free(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::tsq_reference_released(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_ack(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::ack_enter(sk);
    }
    0
}

#[kretprobe]
pub fn kretprobe_tcp_ack(_ctx: RetProbeContext) -> i32 {
    handlers::ack_exit();
    0
}

#[kprobe]
pub fn kprobe_sk_stream_wait_memory(ctx: ProbeContext) -> i32 {
    if let Some(sk) = ctx.arg(0) {
        handlers::wait_enter(sk);
    }
    0
}

#[kretprobe]
pub fn kretprobe_sk_stream_wait_memory(ctx: RetProbeContext) -> i32 {
    handlers::wait_exit(ctx.ret::<i64>() as i32 as i64);
    0
}

// Only for the real target: checked for the host (`cargo clippy --workspace`), this crate shares
// its dependency graph with userspace, whose std brings its own panic handler.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
