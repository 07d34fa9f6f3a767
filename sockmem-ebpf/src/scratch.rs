//! Per-CPU scratch slots: what one hook observed, built in place (the BPF stack cannot hold it
//! next to the rest of the path).

use sockmem_common::HistKey;

use crate::{kernel::SocketId, maps::SCRATCH, sender::Sender};

/// The skb part of an event.
#[repr(C)]
pub struct SkbView {
    pub skb: u64,
    pub len: u32,
    pub truesize: u32,
    pub ifindex: u32,
    pub ifname: [u8; 16],
}

/// What one hook observed, built in place in a per-CPU scratch slot (the BPF stack cannot hold
/// it next to the rest of the path).
#[repr(C)]
pub struct Observed {
    pub hook: u8,
    pub has_skb: bool,
    pub sk: u64,
    /// The socket's id (`ident`), and its inode number.
    pub sock: u64,
    pub ino: u64,
    /// The socket's network namespace inode (cached with its identity).
    pub netns_ino: u32,
    pub id: SocketId,
    pub sender: Sender,
    pub skb: SkbView,
    /// The histogram key being updated (`hist`).
    pub key: HistKey,
}

/// How deep handlers nest on one CPU: a task's, a softirq's over it, and room to spare.
pub const SLOTS: usize = 4;

/// One CPU's scratch: the slots, and how many are in use.
#[repr(C)]
pub struct CpuScratch {
    pub depth: u32,
    pub _pad: u32,
    pub slots: [Observed; SLOTS],
}

/// A scratch slot for one handler; slots stack per CPU, because a program can be interrupted
/// by a softirq that runs another one. Holds this CPU's scratch (one lookup per handler, the
/// depth beside the slots) and the slot.
pub struct Scratch {
    cpu: *mut CpuScratch,
    slot: *mut Observed,
}

impl Scratch {
    #[inline(always)]
    pub fn take() -> Option<Scratch> {
        let cpu = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: this CPU's map value, valid for this program's run.
        let d = unsafe { (*cpu).depth };
        let Some(slot) = (unsafe { (*cpu).slots.get_mut(d as usize) }) else {
            crate::diag::scratch_exhausted(d);
            return None;
        };
        let slot: *mut Observed = slot;
        unsafe { (*cpu).depth = d + 1 };
        Some(Scratch { cpu, slot })
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut Observed {
        // SAFETY: a map value of this CPU, owned by this handler until `drop`.
        unsafe { &mut *self.slot }
    }
}

impl Drop for Scratch {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: as in `take`; the program is still running.
        unsafe { (*self.cpu).depth = (*self.cpu).depth.saturating_sub(1) };
    }
}
