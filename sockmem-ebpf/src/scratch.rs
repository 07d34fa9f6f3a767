//! Per-CPU scratch slots: what one hook observed, built in place (the BPF stack cannot hold it
//! next to the rest of the path).

use sockmem_common::HistKey;

use crate::{
    kernel::SocketId,
    maps::{SCRATCH, SCRATCH_DEPTH},
    sender::Sender,
};

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
    pub id: SocketId,
    pub sender: Sender,
    pub skb: SkbView,
    /// The histogram key being updated (`hist`).
    pub key: HistKey,
}

/// A scratch slot for one handler; slots stack per CPU, because a program can be interrupted
/// by a softirq that runs another one.
pub struct Scratch(*mut Observed);

impl Scratch {
    #[inline(always)]
    pub fn take() -> Option<Scratch> {
        let depth = SCRATCH_DEPTH.get_ptr_mut(0)?;
        let d = unsafe { *depth };
        let Some(slot) = SCRATCH.get_ptr_mut(d) else {
            crate::diag::scratch_exhausted(d);
            return None;
        };
        unsafe { *depth = d + 1 };
        Some(Scratch(slot))
    }

    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut Observed {
        // SAFETY: a map value of this CPU, owned by this handler until `drop`.
        unsafe { &mut *self.0 }
    }
}

impl Drop for Scratch {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(depth) = SCRATCH_DEPTH.get_ptr_mut(0) {
            unsafe { *depth = (*depth).saturating_sub(1) };
        }
    }
}
