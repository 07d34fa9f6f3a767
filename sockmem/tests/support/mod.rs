//! Shared pieces of the `sockmem` integration tests, one module per concern:
//!
//! - [`process`]: run a command with a timeout and capture what it said ([`CmdOutput`]).
//! - [`netns`]: [`NetnsPair`], two network namespaces joined by a veth pair (198.18.X.1 sender
//!   side, 198.18.X.2 receiver side), optionally with a `tbf` qdisc on the sender's veth;
//!   removed on drop.
//! - [`threads`]: traffic threads of the test process itself, each moved into a namespace with
//!   `setns(CLONE_NEWNET)`, what the kernel calls them ([`ThreadInfo`]), and their scheduler
//!   accounting around one call ([`SchedStat`]: CPU time, runnable time, context switches).
//! - [`flows`]: [`TcpFlow`] (bulk or continuous; optionally from a dual-stack AF_INET6 socket to
//!   `::ffff:<v4>`), [`udp_flow`] (connected), [`udp_sendto_flow`] and
//!   [`udp_sendto_alternating`] (unconnected); [`stalled`]: [`StalledTcp`] and
//!   [`BlockingStalledTcp`] (the receiver never reads).
//! - [`tracer`]: [`Tracer`] runs `sockmem trace|hist ... --ready-file F`, waits for F (every
//!   program attached), stops it with SIGTERM (or waits for `--duration`), returns its exit
//!   status and output; [`Traced`] is the common opening of a test: tracer ready, then traffic,
//!   then stop.
//! - [`json`]: [`JsonTrace`], the `trace --json` output split into header, events, snapshot
//!   lines, socket lines (the exit table) and summary, with field getters; [`hist_doc`]:
//!   [`HistDoc`], the `hist --json` document.
//! - [`why_doc`]: [`WhyDoc`], the `why --json` document, with the checks every document passes.
//! - [`tcp_info`]: `ss -tinm` ([`ss_tcp_info`]: the chrono timers busy / rwnd_limited /
//!   sndbuf_limited, pacing rate), and the per-namespace knobs of the `why` tests (route
//!   congestion control, tbf with a byte limit, sysctls, IPv6 off); [`side_flows`]: a bulk TCP
//!   sender in a process of its own ([`ChildTcpSender`]) and a UDP sender that times every send
//!   ([`udp_phases`]).
//! - [`cgroups`]: cgroup v2 directories a test makes ([`CgroupDir`]) and a TCP sender in a
//!   forked process that moves itself into one before it connects ([`CgroupSender`]).
//! - [`kernel_views`]: what the kernel itself reports, to check sockmem against: `ss -tm`
//!   ([`ss_skmem`]), `ss -e` ([`ss_ino`]), `tc -s qdisc` ([`qdisc_sent`], [`QdiscStats`],
//!   [`QdiscSampler`]), `/proc/net/dev`.
//!
//! Every wait is bounded; on timeout the helpers panic with a message saying what did not happen.
// Each test binary uses a part of the support code.
#![allow(dead_code)]

use std::time::Duration;

pub mod cgroups;
pub mod flows;
pub mod hist_doc;
pub mod json;
pub mod kernel_views;
pub mod netns;
pub mod process;
pub mod side_flows;
pub mod stalled;
pub mod tcp_info;
pub mod threads;
pub mod tracer;
pub mod why_doc;

// Each test binary uses a part of what is re-exported.
#[allow(unused_imports)]
pub use {
    cgroups::*, flows::*, hist_doc::*, json::*, kernel_views::*, netns::*, process::*,
    side_flows::*, stalled::*, tcp_info::*, threads::*, tracer::*, why_doc::*,
};

/// How long `sockmem trace` may take to attach everything and write its ready file.
/// Attaching every program takes seconds under an emulated (TCG) VM, and over a minute there
/// when the machine running the VMs is loaded (65 s seen in a VM matrix run).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `sockmem` may take to exit after SIGTERM (or after its `--duration`).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout given to every socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout for short helper commands (`ip`, `tc`, `ss`, usage-error runs of `sockmem`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long joining a traffic thread may take.
pub const THREAD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a socket may be held open (stalled or hold-open flows) before its thread gives up.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause after the traffic before stopping a tracer, so that the last skbs are through the qdisc
/// and the last ACKs are in.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Whether this machine is emulated by qemu (its CPU model says so): the VM matrix's TCG
/// guests, where timing bounds are looser and some CPU-bound premises cannot be built.
pub fn emulated() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("QEMU"))
}

/// A byte size as sockmem's human-readable output shows it (`320.2KiB`, `1.1MiB`, `512B`, IEC
/// binary units) at the start of `s`: the bytes, and how far from them it may be (half of its
/// last digit). `None` when `s` starts with no such size (`320.2 kB` is none).
pub fn parse_human_bytes(s: &str) -> Option<(f64, f64)> {
    let digits = s.len()
        - s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len();
    let n: f64 = s[..digits].parse().ok()?;
    let unit = &s[digits..];
    let scale = [
        ("KiB", 1024.0),
        ("MiB", 1024.0 * 1024.0),
        ("GiB", 1024f64.powi(3)),
    ]
    .into_iter()
    .find(|(name, _)| unit.starts_with(name))
    .map(|(_, scale)| scale)
    .or_else(|| {
        // Plain bytes: `B` not followed by more letters.
        let rest = unit.strip_prefix('B')?;
        (!rest.starts_with(|c: char| c.is_ascii_alphabetic())).then_some(1.0)
    })?;
    let half_digit = if s[..digits].contains('.') { 0.05 } else { 0.5 };
    Some((n * scale, half_digit * scale))
}
