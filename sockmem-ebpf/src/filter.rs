//! In-kernel filters: events that fail them never take ring-buffer space. A socket's verdict on
//! the socket filters is cached with its identity (`ident`), so the lists below run once per
//! socket, not per event.

use core::ptr::read_volatile;

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;

use sockmem_common::config::{FILTER_NETS, FILTER_PORTS};

use crate::kernel::{config, SocketId};

/// Filters on the socket itself: protocol, ports and addresses (either end).
#[inline(never)]
pub fn socket_passes(id: &SocketId) -> bool {
    let f = &config().filter;
    let protocol = unsafe { read_volatile(&f.protocol) };
    if protocol != 0 && protocol != id.protocol {
        return false;
    }
    let n = unsafe { read_volatile(&f.n_ports) } as usize;
    if n != 0 {
        let mut hit = false;
        let mut i = 0;
        while i < FILTER_PORTS {
            if i < n {
                let p = unsafe { read_volatile(&f.ports[i]) };
                hit |= p == id.lport || p == id.rport;
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    let n = unsafe { read_volatile(&f.n_nets) } as usize;
    if n != 0 {
        let mut hit = false;
        let mut i = 0;
        while i < FILTER_NETS {
            if i < n {
                let net = unsafe { read_volatile(&f.nets[i]) };
                hit |= net.contains(id.family, &id.laddr) || net.contains(id.family, &id.raddr);
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    true
}

/// Whether a port or address filter is set: unconnected UDP sockets are then judged per
/// datagram, from its headers.
#[inline(always)]
pub fn has_endpoint_filter() -> bool {
    let f = &config().filter;
    unsafe { read_volatile(&f.n_ports) != 0 || read_volatile(&f.n_nets) != 0 }
}

/// Whether a process id, command name or cgroup filter is set.
#[inline(always)]
pub fn has_sender_filter() -> bool {
    let f = &config().filter;
    unsafe {
        read_volatile(&f.tgid) != 0
            || read_volatile(&f.comm_len) != 0
            || read_volatile(&f.cgroup_id) != 0
    }
}

/// Whether `--cgroup` is set.
#[inline(always)]
pub fn has_cgroup_filter() -> bool {
    unsafe { read_volatile(&config().filter.cgroup_id) != 0 }
}

/// Whether the current task is in the `--cgroup` cgroup or one of its descendants (true
/// without `--cgroup`). Asked in the sender's own context (`sendmsg`, or an event above the
/// qdisc in process context) and carried with the sender to the events fired elsewhere.
///
/// The ancestor helper rather than a map of ids resolved at start: it is exact for cgroups
/// created after start (a container started later under the filtered slice) with no rescan,
/// and costs no map lookup. It is allowed for kprobe, tracepoint, raw tracepoint and
/// fentry/fexit programs on every kernel sockmem supports (`bpf_tracing_func_proto` since
/// 5.7; `bpf_base_func_proto` from 6.10). It returns 0 when the task's cgroup is above `level`.
#[inline(always)]
pub fn current_in_cgroup() -> bool {
    let f = &config().filter;
    let want = unsafe { read_volatile(&f.cgroup_id) };
    if want == 0 {
        return true;
    }
    let level = unsafe { read_volatile(&f.cgroup_level) };
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) == want }
}

/// The network namespace filter, on the namespace inode cached with the socket's identity.
#[inline(always)]
pub fn netns_passes(netns_ino: u32) -> bool {
    let want = unsafe { read_volatile(&config().filter.netns_ino) };
    want == 0 || want == netns_ino
}

/// The process id filter alone (where the command name is not at hand).
#[inline(always)]
pub fn sender_pid_passes(tgid: u32) -> bool {
    let want = unsafe { read_volatile(&config().filter.tgid) };
    want == 0 || want == tgid
}

/// Filters on the sending process: its tgid, a prefix of its command name, and its cgroup
/// (`in_cgroup`, decided where the sender was current).
#[inline(always)]
pub fn sender_passes(tgid: u32, comm: &[u8; 16], in_cgroup: bool) -> bool {
    let f = &config().filter;
    if !in_cgroup {
        return false;
    }
    let want = unsafe { read_volatile(&f.tgid) };
    if want != 0 && want != tgid {
        return false;
    }
    let len = unsafe { read_volatile(&f.comm_len) } as usize;
    let want: [u8; 16] = unsafe { read_volatile(&f.comm) };
    let mut i = 0;
    while i < 16 {
        if i < len && comm[i] != want[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether an interface filter is set at all.
#[inline(always)]
pub fn has_iface_filter() -> bool {
    unsafe { read_volatile(&config().filter.ifname[0]) != 0 }
}

#[inline(always)]
pub fn iface_passes(name: &[u8; 16]) -> bool {
    let want: [u8; 16] = unsafe { read_volatile(&config().filter.ifname) };
    if want[0] == 0 {
        return true;
    }
    let mut i = 0;
    while i < 16 {
        if want[i] != name[i] {
            return false;
        }
        if want[i] == 0 {
            return true;
        }
        i += 1;
    }
    true
}
