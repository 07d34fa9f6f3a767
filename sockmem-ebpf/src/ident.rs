//! Socket identity that survives address reuse. A `struct sock` address is reused as soon as the
//! socket is freed, and no hook sees every protocol's sockets freed on every backend, so the
//! address alone would merge sockets (and hand one socket's sender to the next). Instead each
//! socket gets an id the first time it is seen, remembered with its inode number: at the same
//! address, another nonzero inode is another socket. Every per-socket map is keyed by that id.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_smp_processor_id};
use sockmem_common::inflight::SockIdent;

use crate::{
    kernel::{self, SocketId},
    maps::{NEXT_SOCK_ID, SOCKETS},
};

/// A new id: this CPU's counter, with the CPU in the low byte (unique without atomics).
#[inline(always)]
fn next_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64 & 0xff;
    match NEXT_SOCK_ID.get_ptr_mut(0) {
        Some(n) => unsafe {
            *n += 1;
            (*n << 8) | cpu
        },
        None => 0,
    }
}

/// The entry of the socket at `sk` (created at first sight: new id, inode number, ports), or
/// `None` when the map has no room or the socket is neither TCP nor UDP. Fills `id.protocol`,
/// and a zero local port from what was seen before (TCP clears it before `tcp_destroy_sock`).
#[inline(always)]
pub fn identify(sk: u64, id: &mut SocketId) -> Option<*mut SockIdent> {
    let now_ino = kernel::sock_ino(sk);
    let found = SOCKETS.get_ptr_mut(sk);
    // The same nonzero inode is the same socket: its protocol is the entry's, and the
    // `sk_protocol` read (~50 ns) is left to sockets not known yet, or without a file.
    let known = match found {
        // SAFETY: a map value, valid for this program's run.
        Some(e) => now_ino != 0 && unsafe { (*e).ino } == now_ino,
        None => false,
    };
    match found {
        Some(e) if known => id.protocol = unsafe { (*e).protocol },
        _ => {
            id.protocol = kernel::sk_protocol(sk);
            if !kernel::followed_protocol(id.protocol) {
                return None;
            }
        }
    }
    if let Some(e) = found {
        // SAFETY: as above.
        let e_ref = unsafe { &mut *e };
        if same_socket(e_ref, now_ino, id) {
            if e_ref.ino == 0 {
                e_ref.ino = now_ino;
            }
            if id.lport == 0 {
                id.lport = e_ref.lport;
            } else {
                e_ref.lport = id.lport;
            }
            if id.rport != 0 {
                e_ref.rport = id.rport;
            }
            return Some(e);
        }
    }
    let fresh = SockIdent {
        id: next_id(),
        ino: now_ino,
        lport: id.lport,
        rport: id.rport,
        verdict_ports: 0,
        protocol: id.protocol,
        verdict: 0,
        datagram_passed: 0,
        _pad: [0; 1],
        netns_ino: kernel::sock_netns(sk),
    };
    let _ = SOCKETS.insert(sk, fresh, BPF_ANY as u64);
    SOCKETS.get_ptr_mut(sk)
}

/// Whether what is seen at an address now can be the socket the entry describes.
#[inline(always)]
fn same_socket(e: &SockIdent, ino: u64, id: &SocketId) -> bool {
    let agree = |then: u64, now: u64| then == 0 || now == 0 || then == now;
    e.protocol == id.protocol
        && agree(e.ino, ino)
        && agree(e.lport as u64, id.lport as u64)
        && agree(e.rport as u64, id.rport as u64)
}
