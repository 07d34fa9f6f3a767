//! The send call: data copied into the write queue, the sender asleep inside the call, the
//! return.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid};
use sockmem_common::{
    event::FLAG_SEND_START,
    hist::counter,
    inflight::{SendCall, SendStart},
    HistKind, Hook,
};

use crate::{
    filter,
    kernel::{self, now},
    maps::{count, SENDS, SEND_CALLS},
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
/// A thread's entry stays between calls (`sk` 0: none in progress) and is reused in place: an
/// insert and a delete per call cost more than the rest of the call's bookkeeping.
#[inline(always)]
fn send_started(sk: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let t = now();
    if let Some(s) = SENDS.get_ptr_mut(tid) {
        unsafe {
            (*s).sk = sk;
            (*s).ts_ns = t;
        }
        count(counter::SEND_STARTED);
        return;
    }
    let start = SendStart { sk, ts_ns: t };
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
        if s.sk != 0 {
            sendmsg_return(s.sk, ret);
        }
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
    if let Some(s) = SENDS.get_ptr_mut(tid) {
        unsafe {
            if (*s).sk == sk {
                duration = now().saturating_sub((*s).ts_ns);
                matched = true;
            }
            (*s).sk = 0;
        }
    }
    // The system call's own start (`send_blocked`'s programs): the whole call, also for UDP
    // where no backend sees `udp_sendmsg` begin, and the time it slept.
    let call = take_send_call(tid);
    if !matched && call.start_ns != 0 {
        duration = now().saturating_sub(call.start_ns);
        matched = true;
    }
    let mut x = Extra::timed(ret as i64, duration);
    if matched {
        x = x.with_sample(HistKind::SendmsgTime, duration);
    }
    if call.blocked_ns > 0 {
        let b = Extra::timed(call.sleeps as i64, call.blocked_ns)
            .with_sample(HistKind::SendBlocked, call.blocked_ns);
        socket_event(Hook::SendBlocked, sk, true, b);
    }
    if socket_event(Hook::SendmsgReturn, sk, true, x) {
        count(if matched {
            counter::SEND_MATCHED
        } else {
            counter::SEND_UNMATCHED
        });
    }
}

/// `raw_syscalls:sys_enter`: a thread enters a system call that may send on a socket; from now
/// until its `sendmsg` returns, the time it sleeps is counted (`sched_switch`). Runs on every
/// system call, so it returns at once for any other call and for senders the filters exclude.
#[inline(always)]
pub fn syscall_enter(id: u64) {
    if !kernel::ready() || !kernel::is_send_syscall(id as u32) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::sender_pid_passes((pid_tgid >> 32) as u32) {
        return;
    }
    let tid = pid_tgid as u32;
    let t = now();
    // Reset in place where the thread has an entry: an LRU insert allocates a new element.
    if let Some(c) = SEND_CALLS.get_ptr_mut(tid) {
        unsafe {
            (*c).start_ns = t;
            (*c).sleep_start_ns = 0;
            (*c).blocked_ns = 0;
            (*c).sleeps = 0;
        }
        return;
    }
    let call = SendCall {
        start_ns: t,
        sleep_start_ns: 0,
        blocked_ns: 0,
        sleeps: 0,
        _pad: 0,
    };
    let _ = SEND_CALLS.insert(tid, call, BPF_ANY as u64);
}

/// `sched:sched_switch`: the current thread leaves the CPU (asleep when `prev_state` is not
/// running: preemption is not blocking) and `next` comes back.
#[inline(always)]
pub fn sched_switch(next: u64, prev_state: u64) {
    if !kernel::ready() {
        return;
    }
    let t = now();
    if prev_state as u32 != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        if let Some(c) = SEND_CALLS.get_ptr_mut(tid) {
            unsafe {
                if (*c).start_ns != 0 {
                    (*c).sleep_start_ns = t;
                }
            }
        }
    }
    if let Some(c) = SEND_CALLS.get_ptr_mut(kernel::task_pid(next)) {
        unsafe {
            if (*c).sleep_start_ns != 0 {
                (*c).blocked_ns += t.saturating_sub((*c).sleep_start_ns);
                (*c).sleeps += 1;
                (*c).sleep_start_ns = 0;
            }
        }
    }
}

/// The current thread's send call as `sendmsg` returns (all zero when there is none),
/// consumed: later returns in the same call start from zero. Plain values rather than an
/// `Option` of a tuple, whose unset payload the verifier rejects as uninitialised.
#[inline(always)]
fn take_send_call(tid: u32) -> SendCall {
    let mut taken = SendCall {
        start_ns: 0,
        sleep_start_ns: 0,
        blocked_ns: 0,
        sleeps: 0,
        _pad: 0,
    };
    if let Some(c) = SEND_CALLS.get_ptr_mut(tid) {
        unsafe {
            if (*c).start_ns != 0 {
                taken.start_ns = (*c).start_ns;
                taken.blocked_ns = (*c).blocked_ns;
                taken.sleeps = (*c).sleeps;
                (*c).start_ns = 0;
                (*c).blocked_ns = 0;
                (*c).sleeps = 0;
            }
        }
    }
    taken
}
