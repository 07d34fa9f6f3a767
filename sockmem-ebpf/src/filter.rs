//! In-kernel filters: events that fail them never take ring-buffer space.

use core::ptr::read_volatile;

use crate::kernel::{config, SocketId, AF_INET};

#[inline(always)]
fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        if a[i] == 0 {
            return true;
        }
        i += 1;
    }
    true
}

/// Filters on the socket itself: protocol, port and address (either end).
#[inline(always)]
pub fn socket_passes(id: &SocketId) -> bool {
    let f = &config().filter;
    let protocol = unsafe { read_volatile(&f.protocol) };
    if protocol != 0 && protocol != id.protocol {
        return false;
    }
    let port = unsafe { read_volatile(&f.port) };
    if port != 0 && port != id.lport && port != id.rport {
        return false;
    }
    let family = unsafe { read_volatile(&f.addr_family) } as u16;
    if family != 0 {
        if family != id.family {
            return false;
        }
        let addr: [u8; 16] = unsafe { read_volatile(&f.addr) };
        let len = if family == AF_INET { 4 } else { 16 };
        let mut l = true;
        let mut r = true;
        let mut i = 0;
        while i < len {
            l &= id.laddr[i] == addr[i];
            r &= id.raddr[i] == addr[i];
            i += 1;
        }
        if !l && !r {
            return false;
        }
    }
    true
}

/// Filters on the sending process.
#[inline(always)]
pub fn sender_passes(tgid: u32, comm: &[u8; 16]) -> bool {
    let f = &config().filter;
    let want = unsafe { read_volatile(&f.tgid) };
    if want != 0 && want != tgid {
        return false;
    }
    let want: [u8; 16] = unsafe { read_volatile(&f.comm) };
    want[0] == 0 || eq16(&want, comm)
}

/// Whether an interface filter is set at all.
#[inline(always)]
pub fn has_iface_filter() -> bool {
    unsafe { read_volatile(&config().filter.ifname[0]) != 0 }
}

#[inline(always)]
pub fn iface_passes(name: &[u8; 16]) -> bool {
    let want: [u8; 16] = unsafe { read_volatile(&config().filter.ifname) };
    want[0] == 0 || eq16(&want, name)
}
