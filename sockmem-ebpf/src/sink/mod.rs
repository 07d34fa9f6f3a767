//! Where an admitted event goes: the ring buffer (`trace`), the in-kernel histograms (`hist`),
//! or both (`serve`).

mod hist;
mod ring;

use sockmem_common::{
    config::{MODE_HIST, MODE_SERVE},
    HistKind,
};

use crate::{kernel, scratch::Observed};

/// A latency for a histogram: `(HistKind as u8, ns)`; kind 0 = none.
pub type Sample = (u8, u64);

/// The hook-specific part of an event.
#[derive(Clone, Copy)]
pub struct Extra {
    pub value: i64,
    /// See `SockEvent::aux`.
    pub aux: u64,
    pub duration_ns: u64,
    pub flags: u8,
    /// Added to the `sk_wmem_alloc` read, for hooks that run just before the change they report.
    pub alloc_adjust: i32,
    /// Latencies this event completes (histogram mode).
    pub samples: [Sample; 2],
}

impl Extra {
    #[inline(always)]
    pub const fn value(value: i64) -> Extra {
        Extra {
            value,
            aux: 0,
            duration_ns: 0,
            flags: 0,
            alloc_adjust: 0,
            samples: [(0, 0); 2],
        }
    }

    #[inline(always)]
    pub const fn timed(value: i64, duration_ns: u64) -> Extra {
        Extra {
            value,
            aux: 0,
            duration_ns,
            flags: 0,
            alloc_adjust: 0,
            samples: [(0, 0); 2],
        }
    }

    #[inline(always)]
    pub const fn with_sample(mut self, kind: HistKind, ns: u64) -> Extra {
        if self.samples[0].0 == 0 {
            self.samples[0] = (kind as u8, ns);
        } else {
            self.samples[1] = (kind as u8, ns);
        }
        self
    }
}

/// Writes one admitted event to the sink the configuration asks for. Not inlined: its own BPF
/// frame keeps each program's stack in bounds.
#[inline(never)]
pub fn emit(ob: &mut Observed, x: &Extra) {
    let mode = unsafe { core::ptr::read_volatile(&kernel::config().mode) };
    if mode == MODE_HIST || mode == MODE_SERVE {
        hist::aggregate(ob, x);
    }
    if mode != MODE_HIST {
        ring::submit(ob, x);
    }
}
