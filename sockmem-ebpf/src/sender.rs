//! Who an event is attributed to: the last process that called `sendmsg` on the socket, the
//! current task where that is the socket's user, or nobody.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
};
use sockmem_common::Hook;

use crate::{
    filter,
    maps::{Owner, IN_SOFTIRQ, OWNERS},
};

/// The process an event is attributed to.
#[repr(C)]
pub struct Sender {
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// cgroup v2 id; 0 when unknown.
    pub cgroup_id: u64,
    /// In the `--cgroup` cgroup or below it (true without `--cgroup`).
    pub in_cgroup: bool,
    pub from_send: bool,
    pub iface_seen: bool,
    /// In softirq with no `sendmsg` seen: the current task is not the sender.
    pub unknown: bool,
}

#[inline(always)]
pub fn current_task(s: &mut Sender) {
    task(bpf_get_current_pid_tgid(), s);
}

/// The task `pid_tgid` (the current one) as the sender.
#[inline(always)]
fn task(pid_tgid: u64, s: &mut Sender) {
    s.tgid = (pid_tgid >> 32) as u32;
    s.pid = pid_tgid as u32;
    s.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    s.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    s.in_cgroup = filter::current_in_cgroup();
    s.from_send = false;
    s.iface_seen = false;
    s.unknown = false;
}

/// The socket's last `sendmsg` caller as the sender.
#[inline(always)]
fn fill_from_owner(o: &Owner, s: &mut Sender) {
    s.tgid = o.tgid;
    s.pid = o.pid;
    s.comm = o.comm;
    s.cgroup_id = o.cgroup_id;
    s.in_cgroup = o.in_cgroup != 0;
    s.from_send = true;
    s.iface_seen = o.iface_seen != 0;
    s.unknown = false;
}

/// In `sendmsg` (process context) the current task is the sender: remember it for the skb events
/// that fire later in softirq, where "current" is whoever happened to be running.
#[inline(always)]
pub fn record_sender(sock: u64, lport: u16, s: &mut Sender) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A cheap helper (no map, no probe read): read at every send, so that a thread moved to
    // another cgroup is attributed to the new one from its next send on.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let mut iface_seen = 0;
    match unsafe { OWNERS.get(sock) } {
        // The thread that sent last time: its entry stands, and no map update or comm read is
        // needed on every send (a thread that renames itself keeps its old name until another
        // thread sends on the socket).
        Some(o)
            if o.pid == pid_tgid as u32
                && o.tgid == (pid_tgid >> 32) as u32
                && o.cgroup_id == cgroup_id =>
        {
            fill_from_owner(o, s);
            return;
        }
        Some(prev) => iface_seen = prev.iface_seen,
        None => crate::diag::new_sender((pid_tgid >> 32) as u32, lport),
    }
    task(pid_tgid, s);
    s.from_send = true;
    s.iface_seen = iface_seen != 0;
    let owner = Owner {
        tgid: s.tgid,
        pid: s.pid,
        comm: s.comm,
        iface_seen,
        in_cgroup: u32::from(s.in_cgroup),
        cgroup_id: s.cgroup_id,
    };
    let _ = OWNERS.insert(sock, owner, BPF_ANY as u64);
}

#[inline(always)]
pub fn sender_of(sock: u64, hook: u8, s: &mut Sender) {
    match unsafe { OWNERS.get(sock) } {
        Some(o) => fill_from_owner(o, s),
        // Above the qdisc, in process context, the current task is the socket's user. In
        // softirq it is whoever was interrupted, and below the qdisc whoever ran the qdisc
        // (often another socket's sender): name nobody rather than the wrong process.
        None if in_softirq() || below_qdisc(hook) => {
            s.tgid = 0;
            s.pid = 0;
            s.comm = [0; 16];
            s.cgroup_id = 0;
            // Nobody to judge: passes unless a cgroup is asked for.
            s.in_cgroup = !filter::has_cgroup_filter();
            s.from_send = false;
            s.iface_seen = false;
            s.unknown = true;
        }
        None => current_task(s),
    }
}

/// Hooks that run wherever the device queue is serviced (any socket's sender may be the
/// current task), not in the path of the socket's own transmit: `runs: BelowQdisc` in the
/// registry.
#[inline(always)]
fn below_qdisc(hook: u8) -> bool {
    hook < 32 && Hook::BELOW_QDISC & (1 << hook) != 0
}

/// Whether this CPU is running a softirq (tracked by the `irq:softirq_*` programs).
#[inline(always)]
fn in_softirq() -> bool {
    matches!(IN_SOFTIRQ.get(0), Some(&n) if n != 0)
}

/// `irq:softirq_entry` / `softirq_exit`. Softirqs do not nest on one CPU, so a flag suffices.
#[inline(always)]
fn set_softirq(entering: bool) {
    if let Some(f) = IN_SOFTIRQ.get_ptr_mut(0) {
        unsafe { *f = u32::from(entering) };
    }
}

#[inline(always)]
pub fn softirq_entry() {
    set_softirq(true);
}

#[inline(always)]
pub fn softirq_exit() {
    set_softirq(false);
}

#[inline(always)]
pub fn mark_iface_seen(sock: u64) {
    if let Some(o) = OWNERS.get_ptr_mut(sock) {
        unsafe { (*o).iface_seen = 1 };
    }
}
