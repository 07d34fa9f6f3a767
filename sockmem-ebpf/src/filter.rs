//! In-kernel filters: events that fail them never take ring-buffer space. A socket's verdict on
//! the socket filters is cached with its identity (`ident`), so the lists below run once per
//! socket, not per event.

use core::ptr::read_volatile;

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

/// Whether a process id or command name filter is set.
#[inline(always)]
pub fn has_sender_filter() -> bool {
    let f = &config().filter;
    unsafe { read_volatile(&f.tgid) != 0 || read_volatile(&f.comm_len) != 0 }
}

/// The process id filter alone (where the command name is not at hand).
#[inline(always)]
pub fn sender_pid_passes(tgid: u32) -> bool {
    let want = unsafe { read_volatile(&config().filter.tgid) };
    want == 0 || want == tgid
}

/// Filters on the sending process: its tgid, and a prefix of its command name.
#[inline(always)]
pub fn sender_passes(tgid: u32, comm: &[u8; 16]) -> bool {
    let f = &config().filter;
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
