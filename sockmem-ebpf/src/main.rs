//! sockmem's eBPF programs. The data path, top to bottom:
//!
//! - `entry`: entry points generated from the hook registry (`sockmem_common::registry`), one per
//!   program and attach mechanism, each calling its handler in `hooks/` (one module per stage:
//!   `send`, `qdisc`, `driver`, `wmem`, `tcp`);
//! - `skbs`: skbs followed below the transport;
//! - `observe`: the hook-independent path: identify the socket (`kernel`, `ident`), attribute it
//!   (`sender`), filter (`filter`), then hand it to a sink;
//! - `sink`: the ring buffer (`trace`) or the histograms (`hist`);
//! - `maps`, `scratch`: shared state, per-CPU scratch slots; `diag`: `--debug` lines.
#![no_std]
#![no_main]

#[macro_use]
mod entry;
mod diag;
mod filter;
mod hooks;
mod ident;
mod kernel;
mod maps;
mod needs;
mod observe;
mod scratch;
mod sender;
mod sink;
mod skbs;

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};

sockmem_common::hook_registry!(entry_points);

// Only for the real target: checked for the host (`cargo clippy --workspace`), this crate shares
// its dependency graph with userspace, whose std brings its own panic handler.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
