//! Command-line options. Parsing and value validation only (no syscalls): every bad value is a
//! clap error, which exits with code 2.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use sockmem_common::{
    config::{FILTER_NETS, FILTER_PORTS},
    Filter, Net, Per,
};

use crate::attach::hooks::Backend;

const EXAMPLES: &str = "\
EXAMPLES:
    sockmem trace                         # every send-side change of every TCP/UDP socket
    sockmem trace -P 5201 -d 10           # sockets with port 5201 at either end, for 10 s
    sockmem trace -c iperf3 --tcp         # TCP sockets written by processes named iperf3
    sockmem trace -i eth0 --json -o t.jsonl   # JSON lines, one per event, into t.jsonl
    sockmem trace --input run.smrec -P 5201   # replay a recording (`sockmem record`)
    sockmem trace --cgroup /system.slice/nginx.service   # that service's sockets (and below)
    sockmem trace --netns blue            # sockets of the `ip netns` namespace blue";

#[derive(Debug, Parser)]
#[command(
    name = "sockmem",
    version,
    about = "Where do a socket's send bytes sit, and for how long? Live sk_wmem_queued / sk_wmem_alloc tracing.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one line per change of a socket's send-side memory, per hook.
    #[command(after_help = EXAMPLES)]
    Trace(TraceArgs),
    /// Aggregate latencies and counter values in the kernel, then print histograms.
    #[command(after_help = HIST_EXAMPLES)]
    Hist(HistArgs),
    /// Per socket, where the time went: which limit (application, send buffer, receiver or
    /// congestion window, TCP Small Queues, qdisc, device) held its bytes back, with the
    /// numbers behind it.
    #[command(after_help = WHY_EXAMPLES)]
    Why(WhyArgs),
    /// A live table of sockets, refreshed from the events: bytes queued and in flight, their
    /// rates, time asleep in sends, qdisc sojourn, drops. Plain lines when not on a terminal.
    #[command(after_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// Record every event (as `trace` sees them) and the kernel's view of the traced sockets
    /// to a file, for `trace --input` (and later analysis) elsewhere.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Sum up a recording per socket (or process, command, interface): sender, lifetime,
    /// counters, bytes sent, time blocked, qdisc sojourn, drops; `--hist` for `hist`'s
    /// histograms built from the recorded events.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Build a small network, run a sender and a receiver, record them, and show what the two
    /// counters did (`--list`: the demos).
    Demo(DemoArgs),
    /// Show, for the running kernel, which backend each hook can use and why others cannot.
    Probe(ProbeArgs),
    /// Draw a recording: per socket, sk_wmem_queued and sk_wmem_alloc over time, with sendmsg
    /// calls, time blocked and drops (SVG or PNG).
    #[command(after_help = PLOT_EXAMPLES)]
    Plot(PlotArgs),
    /// Convert a recording for other tools: Chrome trace-event JSON for Perfetto.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Run as a Prometheus exporter: `hist`'s histograms (read from the kernel on each scrape),
    /// gauges of bytes waiting, and counters of calls, blocked time, drops, lost events and
    /// sockmem's own BPF time, as OpenMetrics text on `/metrics`; `/healthz`.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
}

const SERVE_EXAMPLES: &str = "\
EXAMPLES:
    sockmem serve --listen 127.0.0.1:9464            # then: curl 127.0.0.1:9464/metrics
    sockmem serve --listen [::]:9464 --top-n 20 -P 443

Labels: iface and cgroup (the sender's cgroup v2 path), each the top N by traffic plus `other`.
SIGTERM or SIGINT end it (exit 0). SIGHUP re-reads the cgroup tree (names) and forgets at once
what it forgets every 10 s anyway (sockets silent for 2 minutes, in-kernel entries of cgroups
removed); the programs, filters and listen address stay as started. It never ends the process.";

const PLOT_EXAMPLES: &str = "\
EXAMPLES:
    sockmem plot run.smrec -o run.svg            # the 6 busiest sockets, one panel each
    sockmem plot run.smrec -o run.png -P 5201    # sockets with port 5201 at either end
    sockmem plot run.smrec -o one.svg --socket 3 # socket 3 (`sock` in `trace --json`)";

const EXPORT_EXAMPLES: &str = "\
EXAMPLES:
    sockmem export run.smrec --perfetto run.json   # open in ui.perfetto.dev or chrome://tracing
    sockmem export run.smrec --perfetto a.json -c iperf3";

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The recording (`sockmem record -o FILE`).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// The image to write: its extension, .svg or .png, chooses the format.
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: PathBuf,
    /// Which events to draw, as `trace --input` applies them.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Plot this socket (its id: `sock` in `trace --json`, `sock ID` in a plot's panels);
    /// repeat for several. Default: the busiest sockets (most events reading the counters).
    #[arg(long = "socket", value_name = "ID", value_parser = parse_sock_id)]
    pub sockets: Vec<u64>,
    /// At most this many panels (1 to 16) of the busiest sockets, when no --socket is given.
    #[arg(long, value_name = "N", default_value = "6", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub panels: u16,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The recording (`sockmem record -o FILE`).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Write Chrome trace-event JSON here (Perfetto and chrome://tracing open it).
    #[arg(long, value_name = "OUT.json")]
    pub perfetto: PathBuf,
    /// Which events to export, as `trace --input` applies them.
    #[command(flatten)]
    pub filters: FilterArgs,
}

/// A socket id: decimal, or hexadecimal with `0x`.
fn parse_sock_id(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a socket id (a number: `sock` in `trace --json`)"))
}

const RECORD_EXAMPLES: &str = "\
EXAMPLES:
    sockmem record -o run.smrec -P 5201 -d 10   # 10 s of the sockets with port 5201
    sockmem trace --input run.smrec --json      # the same run as `trace --json` printed it
    sockmem trace --input run.smrec -c iperf3   # only what processes named iperf3 sent";

const REPORT_EXAMPLES: &str = "\
EXAMPLES:
    sockmem report run.smrec                  # one row per socket, busiest first
    sockmem report run.smrec --group-by pid   # one row per sending process
    sockmem report run.smrec --group-by cgroup   # one row per sender's cgroup
    sockmem report run.smrec -P 5201 --hist   # the sockets with port 5201, and histograms
    sockmem report run.smrec --json -o r.json # one JSON document";

const HIST_EXAMPLES: &str = "\
EXAMPLES:
    sockmem hist -d 10                    # 10 s of every TCP/UDP socket, then histograms
    sockmem hist -d 10 --per socket -P 5201   # one block per socket with port 5201
    sockmem hist --per iface              # until Ctrl-C, split by interface
    sockmem hist --per cgroup -d 10       # one block per sender's cgroup (container)";

const WHY_EXAMPLES: &str = "\
EXAMPLES:
    sockmem why -P 5201 -d 10             # 10 s of the sockets with port 5201, then the answer
    sockmem why -c nginx --json -d 30     # one JSON document for nginx's sockets
    sockmem why -i eth0                   # until Ctrl-C, sockets sending through eth0";

const TOP_EXAMPLES: &str = "\
EXAMPLES:
    sockmem top                           # every TCP/UDP socket; keys: s sort, r reverse, / filter, q quit
    sockmem top -P 5201 --sort blocked    # sockets with port 5201, longest asleep in sends first
    sockmem top -d 10 > top.txt           # not a terminal: one block of lines per second
    sockmem top --json | jq .sockets      # one JSON object per refresh";

/// `top`'s column to sort by (largest first; `port`, `pid`: smallest first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// `sk_wmem_queued`.
    #[default]
    Queued,
    /// `sk_wmem_alloc`.
    Alloc,
    Sndbuf,
    /// Change of `sk_wmem_queued` per second.
    QueuedRate,
    /// Change of `sk_wmem_alloc` per second.
    AllocRate,
    /// Time asleep in send calls.
    Blocked,
    /// Qdisc sojourn p99.
    Sojourn,
    Drops,
    /// The local port.
    Port,
    Pid,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Queued => "queued",
            SortKey::Alloc => "alloc",
            SortKey::Sndbuf => "sndbuf",
            SortKey::QueuedRate => "queued-rate",
            SortKey::AllocRate => "alloc-rate",
            SortKey::Blocked => "blocked",
            SortKey::Sojourn => "sojourn",
            SortKey::Drops => "drops",
            SortKey::Port => "port",
            SortKey::Pid => "pid",
        }
    }

    /// The next key (`s` in `top`).
    pub fn next(self) -> SortKey {
        use clap::ValueEnum as _;
        let all = SortKey::value_variants();
        let i = all.iter().position(|&k| k == self).unwrap_or(0);
        all[(i + 1) % all.len()]
    }
}

/// How `trace` shows an event's time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeMode {
    /// Seconds since tracing started (since the recording started, with `--input`).
    #[default]
    Rel,
    /// Wall clock, UTC, ISO 8601 with microseconds (from a CLOCK_REALTIME/CLOCK_MONOTONIC
    /// anchor read at the start).
    Wall,
    /// The raw CLOCK_MONOTONIC nanoseconds the programs stamp (JSON `ts_ns`).
    Mono,
}

impl TimeMode {
    pub fn name(self) -> &'static str {
        match self {
            TimeMode::Rel => "rel",
            TimeMode::Wall => "wall",
            TimeMode::Mono => "mono",
        }
    }
}

/// `report --group-by`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One row per socket.
    #[default]
    Socket,
    /// Per sending process (tgid and comm).
    Pid,
    /// Per sending command name.
    Comm,
    /// Per interface the socket's skbs left by (the one most of them used).
    Iface,
    /// Per sender's cgroup v2 path.
    Cgroup,
    /// Per network namespace of the socket.
    Netns,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Socket => "socket",
            GroupBy::Pid => "pid",
            GroupBy::Comm => "comm",
            GroupBy::Iface => "iface",
            GroupBy::Cgroup => "cgroup",
            GroupBy::Netns => "netns",
        }
    }
}

/// How histograms are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PerArg {
    /// One histogram per socket (4-tuple).
    Socket,
    /// One per sending process (pid and comm).
    Pid,
    /// One per interface (skb events; socket-level ones go under "no interface").
    Iface,
    /// One per sender's cgroup v2 (its path; "(unknown sender)" before a socket's first seen
    /// sendmsg).
    Cgroup,
    /// One per network namespace of the socket (its `ip netns` name, or `ino:N`).
    Netns,
    /// One per sender's cgroup and interface together (`PATH IFACE`).
    CgroupIface,
}

impl PerArg {
    pub fn to_kernel(self) -> Per {
        match self {
            PerArg::Socket => Per::Socket,
            PerArg::Pid => Per::Pid,
            PerArg::Iface => Per::Iface,
            PerArg::Cgroup => Per::Cgroup,
            PerArg::Netns => Per::Netns,
            PerArg::CgroupIface => Per::CgroupIface,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PerArg::Socket => "socket",
            PerArg::Pid => "pid",
            PerArg::Iface => "iface",
            PerArg::Cgroup => "cgroup",
            PerArg::Netns => "netns",
            PerArg::CgroupIface => "cgroup-iface",
        }
    }
}

#[derive(Debug, Args)]
pub struct HistArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Aggregate for this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Split the histograms by socket, process, interface, cgroup or network namespace
    /// (default: one of each kind).
    #[arg(long, value_name = "KEY")]
    pub per: Option<PerArg>,
    /// One JSON document: buckets, counts and percentiles per key.
    #[arg(long)]
    pub json: bool,
    /// Write the histograms to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Address and port to serve on (`127.0.0.1:9464`, `[::]:9464`).
    #[arg(short = 'l', long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Label values kept per label (interfaces, sender groups), by traffic; the others are
    /// summed under `other`. Bounds the number of series.
    #[arg(long, value_name = "N", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub top_n: u32,
    /// Seconds without an event after which a socket leaves the gauges. One that held send
    /// bytes is looked up with sock_diag first and stays while the kernel still has it (a
    /// sender stalled by a zero window makes an event every 2 minutes at most).
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle: u64,
    /// Ring buffer size in bytes (events feed the gauges and drops): a power of two from 4096
    /// to 1G (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_size: u32,
    #[command(flatten)]
    pub session: SessionArgs,
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        // A host name would need a resolver and could name several addresses: IPs only.
        format!(
            "`{s}` is not an IP address and port (host names such as localhost are not \
             accepted; e.g. 127.0.0.1:9464, [::1]:9464 or [::]:9464)"
        )
    })
}

/// How the programs are loaded and attached; shared by `trace` and `hist`.
#[derive(Debug, Args, Clone, Default)]
pub struct SessionArgs {
    /// Attach through this backend only (default: the best each hook can get, in the order
    /// fentry, kprobe, tracepoint). Hooks without such an attach point keep theirs.
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<Backend>,
    /// Write this file once every program is attached (for scripts that start traffic then).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Read kernel types from this BTF file instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// Say which hooks were attached, how, and why others were not.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Forward the eBPF programs' diagnostic lines (aya-log) to stderr: rare conditions such as
    /// a socket's first sender, exhausted scratch slots or cut skb lists.
    #[arg(long)]
    pub debug: bool,
    /// At exit, what the programs cost: runs, BPF ns per run and total BPF time per hook (the
    /// kernel's BPF run-time statistics, enabled for this run only).
    #[arg(long)]
    pub stats: bool,
    /// Fail when a hook's program does not load although the kernel has its attach point
    /// (a verifier rejection, say), instead of warning and running without it.
    #[arg(long)]
    pub strict: bool,
}

/// Filters shared by every command. All of them apply in the kernel.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only sockets whose sender has this process id (tgid).
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only sockets whose sender's command name (thread comm, at most 15 bytes) starts with
    /// this (`python3` matches `python3.11`).
    #[arg(short = 'c', long, value_parser = parse_comm)]
    pub comm: Option<String>,
    /// Only sockets with this port at either end; repeat for any of several (at most 8).
    #[arg(short = 'P', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,
    /// Only sockets with an address in this network at either end: an address or CIDR
    /// (`10.0.0.2`, `10.0.0.0/24`, `fd00::/64`); repeat for any of several (at most 8). An IPv4
    /// network also matches IPv4-mapped IPv6 addresses (`::ffff:10.0.0.2`, dual-stack sockets),
    /// and an IPv4-mapped one the IPv4 addresses.
    #[arg(short = 'a', long, value_parser = parse_net)]
    pub addr: Vec<IpNet>,
    /// Only skbs on this interface (name), and sockets that sent through it.
    #[arg(short = 'i', long, value_parser = parse_ifname)]
    pub iface: Option<String>,
    /// Only TCP sockets.
    #[arg(long, conflicts_with = "udp")]
    pub tcp: bool,
    /// Only UDP sockets.
    #[arg(long)]
    pub udp: bool,
    /// Only sockets whose sender is in this cgroup v2 or below it: a path relative to the
    /// cgroup2 root as /proc/PID/cgroup shows it (`/system.slice/nginx.service`), or absolute
    /// under the cgroup2 mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Only sockets of this network namespace: an `ip netns` name, a namespace file
    /// (`/proc/PID/ns/net`, `/run/netns/NAME`) or its inode number.
    #[arg(long, value_name = "NAME|PATH|INODE")]
    pub netns: Option<String>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Stop after this many seconds (fractions allowed); default: until Ctrl-C or SIGTERM.
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON object per line (a header, the events, a summary).
    #[arg(long)]
    pub json: bool,
    /// How times are shown: `rel` seconds since the start, `wall` clock (UTC, ISO 8601 with
    /// microseconds), `mono` raw CLOCK_MONOTONIC ns. JSON events always carry `ts_ns` and
    /// `time_s`; `wall` adds `wall`; the header carries the clock anchor.
    #[arg(long, value_name = "WHEN", default_value = "rel")]
    pub time: TimeMode,
    /// Also output the kernel addresses of `struct sock` and `struct sk_buff` (JSON `sk`,
    /// `skb`). Off by default: they reveal the kernel's memory layout to whoever reads the
    /// output, and sockets are identified by `sock` (and `ino`) anyway.
    #[arg(long)]
    pub kernel_addrs: bool,
    /// Also every SECS, a `snapshot` line per traced socket still open: its counters as the
    /// kernel reports them (sock_diag, what `ss -tm` reads), against its last event. A snapshot
    /// is always taken at exit.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub snapshot: Option<Duration>,
    /// Write events to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Ring buffer size in bytes: a power of two from 4096 to 1G (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_ring_size)]
    pub ring_size: u32,
    /// Replay a recording (`sockmem record`) instead of tracing: no program is loaded, no root
    /// needed. The filters apply to the recorded events.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "duration", "snapshot", "ring_size", "backend", "ready_file", "btf", "debug", "stats",
        "strict",
    ])]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// The recording: written beside, and put in place when the run ends (also on Ctrl-C or
    /// SIGTERM).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this many seconds (fractions allowed); default: until Ctrl-C or SIGTERM.
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also every SECS, the kernel's view of each traced socket still open (sock_diag); one is
    /// always taken at exit.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub snapshot: Option<Duration>,
    /// Ring buffer size in bytes: a power of two from 4096 to 1G (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_size: u32,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording (`sockmem record -o FILE`).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Which sockets: the filters apply to the recorded events, as `trace --input` applies them.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// One row per socket (the default), sending process, command name or interface.
    #[arg(long, value_name = "KEY")]
    pub group_by: Option<GroupBy>,
    /// Also the histograms `sockmem hist` prints, built from the recorded events (one set per
    /// group with `--group-by`, else in total).
    #[arg(long)]
    pub hist: bool,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the report to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// Which sockets to report. Other sockets' qdisc events are still read: their bytes ahead
    /// in a qdisc are part of the answer.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Watch for this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the report to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Read each socket's state from the kernel (sock_diag, as `ss -tmi`) every MS
    /// milliseconds, 1 to 10000: the time between two samples goes under one cause.
    #[arg(long, value_name = "MS", default_value = "20", value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub interval: u64,
    /// Ring buffer size in bytes: a power of two from 4096 to 1G (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_size: u32,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Refresh every SECS seconds (fractions allowed, 0.1 to 60): rates, time asleep and the
    /// qdisc sojourn p99 are over this interval.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this many seconds (default: `q`, Ctrl-C or SIGTERM).
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The first sort key (`s` cycles through them, `r` reverses).
    #[arg(long, value_name = "KEY", default_value = "queued")]
    pub sort: SortKey,
    /// Not on a terminal: one JSON object per refresh instead of lines of text.
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in bytes: a power of two from 4096 to 1G (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_size: u32,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo to run: stalled-receiver, tsq, udp-sndbuf, qdisc-backlog.
    pub scenario: Option<String>,
    /// List the demos and what each shows.
    #[arg(long)]
    pub list: bool,
    /// Traffic for this many seconds.
    #[arg(short = 'd', long, value_name = "SECS", default_value = "5", value_parser = parse_duration)]
    pub duration: Duration,
    /// Where the recording (and the plot) go.
    #[arg(short = 'o', long, value_name = "DIR", default_value = "sockmem-demo")]
    pub output_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read kernel types from this BTF file instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
}

impl Cli {
    /// Parses the command line; values that clap alone cannot judge (how many ports and
    /// networks fit the programs) are usage errors too, with clap's exit code 2.
    pub fn parse_valid() -> Cli {
        Cli::try_parse_valid_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_valid`] of `args`, its error returned.
    fn try_parse_valid_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        let filters = match &cli.command {
            Command::Trace(t) => Some(&t.filters),
            Command::Hist(h) => Some(&h.filters),
            Command::Why(w) => Some(&w.filters),
            Command::Top(t) => Some(&t.filters),
            Command::Record(r) => Some(&r.filters),
            Command::Plot(p) => Some(&p.filters),
            Command::Export(e) => Some(&e.filters),
            Command::Report(r) => Some(&r.filters),
            Command::Serve(s) => Some(&s.filters),
            Command::Probe(_) | Command::Demo(_) => None,
        };
        if let Some(Err(e)) = filters.map(FilterArgs::to_kernel) {
            // Said with the usage of the subcommand that was given, as clap says its own errors
            // (the top-level command's usage lists subcommands, not their options).
            let sub = matches
                .subcommand_name()
                .and_then(|name| cmd.find_subcommand_mut(name))
                .expect("a command with filters is a subcommand");
            return Err(sub.error(clap::error::ErrorKind::ValueValidation, e));
        }
        Ok(cli)
    }
}

/// A value given on the command line that this machine has no use for: an interface, cgroup
/// or network namespace that is not there. Only known once the machine is asked, so not a clap
/// error, but a usage error all the same: exit code 2, said as `sockmem: <option>: <why>`.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn parse_comm(s: &str) -> Result<String, String> {
    match s.len() {
        0 => Err("must not be empty".into()),
        1..=15 => Ok(s.to_owned()),
        n => Err(format!(
            "is {n} bytes; the kernel keeps at most 15 bytes of a command name"
        )),
    }
}

/// An address range from `--addr`: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("`/{p}`: the prefix length must be 0 to {max}")),
        },
    };
    Ok(IpNet { addr, prefix })
}

impl IpNet {
    /// The in-kernel ranges: an IPv4 network also as its IPv4-mapped IPv6 range.
    fn to_kernel(self) -> Vec<Net> {
        let range = |family: i32, bytes: [u8; 16], prefix: u32| {
            let mut mask = [0u8; 16];
            for (i, m) in mask.iter_mut().enumerate() {
                let bits = prefix.saturating_sub(8 * i as u32).min(8);
                *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            }
            let masked: [u8; 16] = std::array::from_fn(|i| bytes[i] & mask[i]);
            let (a0, a1) = sockmem_common::config::words(&masked);
            let (m0, m1) = sockmem_common::config::words(&mask);
            Net {
                addr: [a0, a1],
                mask: [m0, m1],
                family: family as u16,
                _pad: [0; 3],
            }
        };
        match self.addr {
            IpAddr::V4(a) => {
                let mut v4 = [0u8; 16];
                v4[..4].copy_from_slice(&a.octets());
                let mapped = a.to_ipv6_mapped().octets();
                vec![
                    range(libc::AF_INET, v4, self.prefix as u32),
                    range(libc::AF_INET6, mapped, 96 + self.prefix as u32),
                ]
            }
            // An IPv4-mapped range also matches the plain IPv4 addresses it maps.
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) if self.prefix >= 96 => {
                    let mut plain = [0u8; 16];
                    plain[..4].copy_from_slice(&v4.octets());
                    vec![
                        range(libc::AF_INET6, a.octets(), self.prefix as u32),
                        range(libc::AF_INET, plain, self.prefix as u32 - 96),
                    ]
                }
                _ => vec![range(libc::AF_INET6, a.octets(), self.prefix as u32)],
            },
        }
    }
}

fn parse_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ' ', '\0']) {
        return Err("is not a valid interface name (1 to 15 bytes, no '/' or spaces)".into());
    }
    Ok(s.to_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 31_536_000.0) {
        return Err("must be more than 0 and at most one year".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.1..=60.0).contains(&secs) {
        return Err("must be from 0.1 to 60 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1u64 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 65536, 64K, 4M)"))?;
    let bytes = n.saturating_mul(mult);
    if bytes < 4096 || !bytes.is_power_of_two() || bytes > 1 << 30 {
        return Err(format!(
            "{bytes} bytes: the ring buffer must be a power of two from 4096 (4K) to 1073741824 (1G)"
        ));
    }
    Ok(bytes as u32)
}

impl FilterArgs {
    /// The filters as options (`--port 5201 --tcp`), to name them in messages; empty when
    /// none is given.
    pub fn describe(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        let mut opt = |name: &str, value: &dyn std::fmt::Display| {
            words.push(format!("--{name} {value}"));
        };
        if let Some(p) = self.pid {
            opt("pid", &p);
        }
        if let Some(c) = &self.comm {
            opt("comm", c);
        }
        for p in &self.port {
            opt("port", p);
        }
        for n in &self.addr {
            opt("addr", &format!("{}/{}", n.addr, n.prefix));
        }
        if let Some(i) = &self.iface {
            opt("iface", i);
        }
        if let Some(c) = &self.cgroup {
            opt("cgroup", c);
        }
        if let Some(n) = &self.netns {
            opt("netns", n);
        }
        if self.tcp {
            words.push("--tcp".into());
        }
        if self.udp {
            words.push("--udp".into());
        }
        words.join(" ")
    }

    /// The in-kernel form of the filters; too many ports or networks is a usage error.
    pub fn to_kernel(&self) -> Result<Filter, String> {
        let mut f = Filter {
            tgid: self.pid.unwrap_or(0),
            protocol: match (self.tcp, self.udp) {
                (true, _) => libc::IPPROTO_TCP as u8,
                (_, true) => libc::IPPROTO_UDP as u8,
                _ => 0,
            },
            ..Filter::default()
        };
        if self.port.len() > FILTER_PORTS {
            return Err(format!(
                "--port given {} times: the kernel filter holds at most {FILTER_PORTS} ports",
                self.port.len()
            ));
        }
        for (slot, p) in f.ports.iter_mut().zip(&self.port) {
            *slot = *p;
        }
        f.n_ports = self.port.len() as u8;
        let nets: Vec<Net> = self.addr.iter().flat_map(|n| n.to_kernel()).collect();
        if nets.len() > FILTER_NETS {
            return Err(format!(
                "--addr gives {} address ranges: the kernel filter holds at most {FILTER_NETS} \
                 (an IPv4 --addr counts twice: also as IPv4-mapped IPv6)",
                nets.len()
            ));
        }
        for (slot, n) in f.nets.iter_mut().zip(&nets) {
            *slot = *n;
        }
        f.n_nets = nets.len() as u8;
        if let Some(c) = &self.comm {
            f.comm[..c.len()].copy_from_slice(c.as_bytes());
            f.comm_len = c.len() as u8;
        }
        if let Some(i) = &self.iface {
            f.ifname[..i.len()].copy_from_slice(i.as_bytes());
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{error::ErrorKind, CommandFactory};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sockmem").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["trace", "--port", "70000"][..],
            &["trace", "--port", "0"],
            &["trace", "--addr", "nonsense"],
            &["trace", "--ring-size", "1000"],
            &["trace", "--ring-size", "3M"],
            &["trace", "--ring-size", "2G"],
            &["trace", "--comm", "a-name-longer-than-15"],
            &["trace", "--iface", "a/b"],
            &["trace", "--duration", "0"],
            &["trace", "--duration", "soon"],
            &["trace", "--tcp", "--udp"],
            &["trace", "--pid", "0"],
            &["trace", "--backend", "uprobe"],
            &["hist", "--per", "thread"],
            &["hist", "--duration", "-1"],
            &["record"],
            &["record", "-o", "f", "--ring-size", "3M"],
            &["record", "-o", "f", "--json"],
            &["trace", "--input", "f", "--duration", "1"],
            &["trace", "--input", "f", "--backend", "kprobe"],
            &["trace", "--input", "f", "--ready-file", "r"],
            &["plot", "f"],
            &["plot", "f", "-o", "x.svg", "--socket", "three"],
            &["plot", "f", "-o", "x.svg", "--panels", "0"],
            &["export", "f"],
            &["trace", "--time", "utc"],
            &["report"],
            &["report", "f", "--group-by", "container"],
            &["hist", "--per", "cgroup-ifaces"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} should be rejected"));
            assert_ne!(err.kind(), ErrorKind::DisplayHelp);
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn filters_become_the_kernel_filter() {
        let cli = parse(&[
            "trace",
            "-p",
            "42",
            "-c",
            "iperf3",
            "-P",
            "5201",
            "-a",
            "10.1.2.3",
            "-i",
            "veth0",
            "--udp",
            "--ring-size",
            "64K",
            "-d",
            "1.5",
        ])
        .expect("valid arguments");
        let Command::Trace(t) = cli.command else {
            panic!("trace parses as Trace")
        };
        assert_eq!(t.ring_size, 65536);
        assert_eq!(t.duration, Some(Duration::from_millis(1500)));
        let f = t.filters.to_kernel().expect("fits the programs");
        assert_eq!(f.tgid, 42);
        assert_eq!((f.n_ports, f.ports[0]), (1, 5201));
        assert_eq!(f.protocol, 17);
        assert_eq!(f.n_nets, 2, "an IPv4 address and its IPv4-mapped IPv6 form");
        let v4 = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a);
            b
        };
        assert!(f.nets[0].contains(2, &v4([10, 1, 2, 3])));
        assert!(!f.nets[0].contains(2, &v4([10, 1, 2, 4])));
        assert!(
            !f.nets[0].contains(10, &v4([10, 1, 2, 3])),
            "family matters"
        );
        let mapped = "::ffff:10.1.2.3"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert!(f.nets[1].contains(10, &mapped), "dual-stack peer");
        assert_eq!((&f.comm[..7], f.comm_len), (&b"iperf3\0"[..], 6));
        assert_eq!(&f.ifname[..6], b"veth0\0");
    }

    #[test]
    fn cidr_ranges_and_repeated_values() {
        let cli = parse(&[
            "trace",
            "-a",
            "10.0.0.0/24",
            "-a",
            "fd00::/64",
            "-P",
            "80",
            "-P",
            "443",
        ])
        .expect("valid arguments");
        let Command::Trace(t) = cli.command else {
            panic!("trace parses as Trace")
        };
        let f = t.filters.to_kernel().expect("fits the programs");
        assert_eq!((f.n_ports, &f.ports[..2]), (2, &[80, 443][..]));
        assert_eq!(f.n_nets, 3);
        let v4 = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a);
            b
        };
        let in_any = |family, b: &[u8; 16]| f.nets[..3].iter().any(|n| n.contains(family, b));
        assert!(in_any(2, &v4([10, 0, 0, 200])));
        assert!(!in_any(2, &v4([10, 0, 1, 1])));
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert!(in_any(10, &v6("fd00::1234")));
        assert!(in_any(10, &v6("::ffff:10.0.0.9")));
        assert!(!in_any(10, &v6("fd00:0:0:1::1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "x/1"] {
            assert!(parse(&["trace", "-a", bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (1..=9)
            .flat_map(|p| ["-P".to_owned(), p.to_string()])
            .collect();
        let mut args = vec!["trace"];
        args.extend(many.iter().map(String::as_str));
        let Command::Trace(t) = parse(&args).expect("clap takes them").command else {
            panic!("trace parses as Trace")
        };
        assert!(t.filters.to_kernel().is_err(), "nine ports do not fit");
    }

    #[test]
    fn filters_too_many_for_the_kernel_are_said_with_the_subcommands_usage() {
        let nine_ports: Vec<String> = (1..=9).flat_map(|p| ["-P".into(), p.to_string()]).collect();
        for base in [
            &["trace"][..],
            &["hist"],
            &["why"],
            &["top"],
            &["record", "-o", "f"],
            &["serve", "--listen", "127.0.0.1:9464"],
            &["report", "f"],
            &["plot", "f", "-o", "x.svg"],
            &["export", "f", "--perfetto", "x.json"],
        ] {
            let args = std::iter::once("sockmem")
                .chain(base.iter().copied())
                .chain(nine_ports.iter().map(String::as_str));
            let err = Cli::try_parse_valid_from(args).expect_err("nine ports do not fit");
            assert_eq!(err.exit_code(), 2, "{base:?}");
            let text = err.render().to_string();
            assert!(
                text.contains("--port given 9 times")
                    && text.contains(&format!("Usage: sockmem {} ", base[0])),
                "{base:?}: expected the count and the subcommand's usage, got:\n{text}"
            );
        }
        let addrs: Vec<&str> = ["-a", "10.0.0.1", "-a", "10.0.0.2", "-a", "10.0.0.3"]
            .into_iter()
            .cycle()
            .take(10)
            .collect();
        let args = ["sockmem", "hist"].into_iter().chain(addrs);
        let text = Cli::try_parse_valid_from(args)
            .expect_err("five IPv4 ranges are ten in the kernel")
            .render()
            .to_string();
        assert!(text.contains("Usage: sockmem hist "), "{text}");
    }

    #[test]
    fn filters_are_described_as_options() {
        let cli = parse(&[
            "report",
            "f",
            "-P",
            "80",
            "-P",
            "443",
            "--tcp",
            "-a",
            "10.0.0.0/8",
        ])
        .expect("valid arguments");
        let Command::Report(r) = cli.command else {
            panic!("report parses as Report")
        };
        assert_eq!(
            r.filters.describe(),
            "--port 80 --port 443 --addr 10.0.0.0/8 --tcp"
        );
        assert_eq!(FilterArgs::default().describe(), "");
    }

    #[test]
    fn ring_sizes_up_to_the_limit_the_message_names() {
        for (arg, bytes) in [
            ("4096", 4096),
            ("4K", 4096),
            ("4M", 4 << 20),
            ("1G", 1 << 30),
        ] {
            assert_eq!(parse_ring_size(arg), Ok(bytes), "{arg}");
        }
        let err = parse_ring_size("2G").expect_err("above the limit");
        assert!(err.contains("1G"), "{err}");
    }

    #[test]
    fn ipv6_address_fills_all_sixteen_bytes() {
        let cli = parse(&["trace", "-a", "fd00::1", "--backend", "kprobe"]).expect("valid ipv6");
        let Command::Trace(t) = cli.command else {
            panic!("trace parses as Trace")
        };
        assert_eq!(t.session.backend, Some(Backend::Kprobe));
        let f = t.filters.to_kernel().expect("fits the programs");
        assert_eq!(f.n_nets, 1);
        let addr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert!(f.nets[0].contains(10, &addr));
        let mut other = addr;
        other[15] = 2;
        assert!(!f.nets[0].contains(10, &other), "a /128 is one address");
    }
}
