//! `#[repr(C)]` records shared by the eBPF programs and userspace.
//!
//! Every type here crosses the kernel boundary as raw bytes, so each has explicit padding and a
//! size assertion: a layout change on one side without the other fails to compile.
#![no_std]

// clap's `ValueEnum` derive (userspace only) names `std`.
#[cfg(feature = "user")]
extern crate std;

pub mod config;
pub mod event;
pub mod hist;
pub mod inflight;
pub mod registry;

pub use config::{Config, FieldOffsets, Filter, Net};
pub use event::SockEvent;
pub use hist::{Hist, HistKey, HistKind, Per};
pub use registry::{Backend, Hook, HookSpec, Stage};

/// Names of the maps and globals, shared so that the loader cannot drift from the programs.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const CONFIG: &str = "CONFIG";
    pub const HISTS: &str = "HISTS";
    pub const TOTAL_HISTS: &str = "TOTAL_HISTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SKBS: &str = "SKBS";
    pub const SENDS: &str = "SENDS";
    /// The data section holding the `RUNNING` switch (a map of its own).
    pub const RUNNING: &str = ".data.running";
}
