//! The `sendmsg` call: data copied into the write queue, blocking for memory, the return.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid};
use sockmem_common::{event::FLAG_SEND_START, hist::counter, inflight::SendStart, HistKind, Hook};

use crate::{
    kernel::{self, now},
    maps::{count, SENDS, WAITS},
    observe::{socket_event, socket_kept},
    sink::Extra,
};

#[inline(always)]
pub fn tcp_sendmsg(sk: u64, msg: u64) {
    let starting = !send_ongoing(sk);
    let mut x = Extra::value(kernel::msg_left(msg));
    if starting {
        x.flags = FLAG_SEND_START;
    }
    if socket_event(Hook::TcpSendmsg, sk, true, x) && starting {
        send_started(sk);
    }
}

/// Whether this thread is already inside a `sendmsg` on `sk` (a later chunk of the same call).
#[inline(always)]
fn send_ongoing(sk: u64) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    matches!(unsafe { SENDS.get(tid) }, Some(s) if s.sk == sk)
}

/// Remembers when this thread's `sendmsg` on `sk` started (only for sockets the filters keep).
#[inline(always)]
fn send_started(sk: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = SendStart { sk, ts_ns: now() };
    if SENDS.insert(tid, start, BPF_ANY as u64).is_ok() {
        count(counter::SEND_STARTED);
    }
}

/// Entry of any `*_sendmsg` (kprobe backend): only remembers the start for the return probe.
#[inline(always)]
pub fn sendmsg_enter(sk: u64) {
    if !send_ongoing(sk) && socket_kept(sk, true) {
        send_started(sk);
    }
}

/// Return of a `*_sendmsg` where only the return value is known (kretprobe).
#[inline(always)]
pub fn sendmsg_return_of_thread(ret: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(s) = unsafe { SENDS.get(tid) } {
        sendmsg_return(s.sk, ret);
    }
}

#[inline(always)]
pub fn sendmsg_return(sk: u64, ret: u64) {
    // `int` returns: the upper half is not defined.
    let ret = ret as i32;
    let tid = bpf_get_current_pid_tgid() as u32;
    let mut duration = 0;
    // Matched is not "took > 0": a coarse clock (some VMs) can give a real call 0 ns.
    let mut matched = false;
    if let Some(s) = unsafe { SENDS.get(tid) } {
        if s.sk == sk {
            duration = now().saturating_sub(s.ts_ns);
            matched = true;
        }
        let _ = SENDS.remove(tid);
    }
    let mut x = Extra::timed(ret as i64, duration);
    if matched {
        x = x.with_sample(HistKind::SendmsgTime, duration);
    }
    if socket_event(Hook::SendmsgReturn, sk, true, x) {
        count(if matched {
            counter::SEND_MATCHED
        } else {
            counter::SEND_UNMATCHED
        });
    }
}

/// `sk_stream_wait_memory` entry: the sender is about to sleep for send-buffer space.
#[inline(always)]
pub fn wait_enter(sk: u64) {
    if !kernel::ready() {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let start = SendStart { sk, ts_ns: now() };
    let _ = WAITS.insert(tid, start, BPF_ANY as u64);
}

#[inline(always)]
pub fn wait_exit(ret: u64) {
    let ret = ret as i32 as i64;
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(s) = (unsafe { WAITS.get(tid) }) else {
        return;
    };
    let (sk, ts) = (s.sk, s.ts_ns);
    let _ = WAITS.remove(tid);
    let waited = now().saturating_sub(ts);
    let x = Extra::timed(ret, waited).with_sample(HistKind::SendBlocked, waited);
    socket_event(Hook::SendBlocked, sk, true, x);
}
