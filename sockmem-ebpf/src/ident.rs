//! Socket identity that survives address reuse. A `struct sock` address is reused as soon as the
//! socket is freed, and no hook sees every protocol's sockets freed on every backend, so the
//! address alone would merge sockets (and hand one socket's sender to the next). Instead each
//! socket gets an id the first time it is seen, remembered with its inode number: at the same
//! address, another nonzero inode is another socket. Every per-socket map is keyed by that id.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_smp_processor_id};
use sockmem_common::inflight::SockIdent;

use crate::{
    kernel,
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

/// The entry of the socket at `sk` (created at first sight: new id, inode number, local
/// port), or `None` when the map has no room. Fills a zero `lport` from what was seen before
/// (TCP clears it before `tcp_destroy_sock`).
#[inline(always)]
pub fn identify(sk: u64, lport: &mut u16) -> Option<*mut SockIdent> {
    let now_ino = kernel::sock_ino(sk);
    if let Some(e) = SOCKETS.get_ptr_mut(sk) {
        // SAFETY: a map value, valid for this program's run.
        unsafe {
            if now_ino == 0 || (*e).ino == 0 || (*e).ino == now_ino {
                if (*e).ino == 0 {
                    (*e).ino = now_ino;
                }
                if *lport == 0 {
                    *lport = (*e).lport;
                } else {
                    (*e).lport = *lport;
                }
                return Some(e);
            }
        }
    }
    let fresh = SockIdent {
        id: next_id(),
        ino: now_ino,
        lport: *lport,
        verdict_rport: 0,
        verdict: 0,
        datagram_passed: 0,
        _pad: 0,
    };
    let _ = SOCKETS.insert(sk, fresh, BPF_ANY as u64);
    SOCKETS.get_ptr_mut(sk)
}

/// The id already given to the socket at `sk`, if any.
#[inline(always)]
pub fn known(sk: u64) -> Option<u64> {
    unsafe { SOCKETS.get(sk) }.map(|e| e.id)
}
