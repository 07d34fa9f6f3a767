//! What this run's output, keys and filters use: the event path reads only that. A `hist`
//! without `--per` needs neither addresses, nor the device, nor the sender of an event, and each
//! is a few kernel reads or a map lookup per event.

use core::ptr::read_volatile;

use sockmem_common::{
    config::{MODE_HIST, MODE_WHY},
    hist::Per,
    Hook,
};

use crate::{filter, kernel::config};

#[inline(always)]
fn per(p: Per) -> bool {
    unsafe { read_volatile(&config().per) == p as u32 }
}

/// `trace` shows every field.
#[inline(always)]
pub fn everything() -> bool {
    unsafe { read_volatile(&config().mode) != MODE_HIST }
}

/// The socket's addresses: shown by `trace`, keyed by `hist --per socket` (the address filters
/// read them where they decide, once per socket).
#[inline(always)]
pub fn addresses() -> bool {
    everything() || per(Per::Socket)
}

/// The skb's device: shown by `trace`, keyed by `--per iface` and `--per cgroup-iface`,
/// filtered by `--iface`.
#[inline(always)]
pub fn device() -> bool {
    everything() || per(Per::Iface) || per(Per::CgroupIface) || filter::has_iface_filter()
}

/// The skb's length and truesize: shown by `trace` only.
#[inline(always)]
pub fn skb_sizes() -> bool {
    everything()
}

/// The sending process: shown by `trace`, keyed by `--per pid` and the cgroup splits,
/// filtered by `--pid`/`--comm`/`--cgroup`, and kept with it is whether the socket sent
/// through the `--iface` interface.
#[inline(always)]
pub fn sender() -> bool {
    everything()
        || per(Per::Pid)
        || per(Per::Cgroup)
        || per(Per::CgroupIface)
        || filter::has_sender_filter()
        || filter::has_iface_filter()
}

/// `why`: whose bytes are in a qdisc is part of the answer, so the qdisc events of sockets the
/// filters leave out still go to the ring buffer (userspace reports only the filtered ones).
#[inline(always)]
pub fn every_socket(hook: Hook) -> bool {
    matches!(
        hook,
        Hook::QdiscEnqueue | Hook::QdiscDequeue | Hook::SkbDrop
    ) && unsafe { read_volatile(&config().mode) == MODE_WHY }
}

/// `why`: the TX queue's state and BQL at the hand-off to the driver (a few kernel reads that
/// `trace`, `hist` and `serve` do not pay).
#[inline(always)]
pub fn tx_queue() -> bool {
    unsafe { read_volatile(&config().mode) == MODE_WHY }
}
