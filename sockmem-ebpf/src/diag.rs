//! Rare conditions worth a line under `sockmem … --debug`, through aya-log. Userspace sets
//! `AYA_LOG_LEVEL` to off unless `--debug`, so a disabled call costs a global read, and none of
//! these runs per event.
//!
//! aya-log-ebpf 0.2 writes to its own ring buffer and ignores the context argument; the handlers
//! have no context at hand, so they pass `&()`. Each is a BPF function of its own to keep the
//! formatting code out of the callers' stack frames.

use aya_log_ebpf::debug;

#[inline(never)]
pub fn new_sender(tgid: u32, lport: u16) {
    debug!(
        &(),
        "first sendmsg seen on socket with local port {} by pid {}", lport, tgid
    );
}

#[inline(never)]
pub fn scratch_exhausted(depth: u32) {
    debug!(
        &(),
        "scratch slots exhausted at nesting depth {}: event not seen", depth
    );
}

#[inline(never)]
pub fn list_cut(max: u32) {
    debug!(
        &(),
        "skb list longer than {} skbs: the rest is not followed", max
    );
}

#[inline(never)]
pub fn hist_full() {
    debug!(&(), "histogram map full: a sample was dropped");
}

#[inline(never)]
pub fn stale_skb(skb: u64) {
    debug!(
        &(),
        "skb {:x} freed with another buffer than the one followed: entry dropped", skb
    );
}
