//! Integration tests of `sockmem why`: per socket, the window's time by limiting cause.
//!
//! Each scenario builds its own pair of network namespaces (198.18.200-209.0/24, ports 270xx),
//! starts `sockmem why --json` (ready file first), then makes one cause hold by construction
//! (a receiver that stops reading, a small `SO_SNDBUF`, a slow `tbf`, a bulk flow ahead of a
//! small one, a sender that sleeps, UDP into a small queue, a bulk flow whose TX queue is read), and checks what `why` says against
//! what the kernel itself says over the same window: `ss -tinm` (tcp_info's chrono timers
//! busy / rwnd_limited / sndbuf_limited, pacing rate, skmem), `tc -s qdisc` (backlog, drops)
//! and the flows' own counts. Every TCP flow runs CUBIC (set per route, whatever the host's
//! default: BBR paces by itself, and the qdisc would then not be where the bytes wait).
//!
//! Root and BTF needed. Each scenario's traffic lasts at most ~4 s.

mod support;

use serde_json::Value;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// The most one skb below TCP can hold in `ss`'s `t` (truesize): 64 KiB of GSO data plus the
/// skb's own overhead (68096 for a 64 KiB skb on 6.1).
const ONE_SKB_TRUESIZE: u64 = 72 * 1024;

/// `--interval` of every run (the default, said explicitly so the bounds below can use it).
const INTERVAL_MS: u64 = 20;

/// The longest a kernel tick can be (HZ = 100; Debian and this host run 250): tcp_info's
/// chrono timers count jiffies.
const TICK_MS: f64 = 10.0;

/// How far `why`'s tcp timers may fall outside the bounds `ss` sets (see [`check_tcp_timers`]):
/// two ticks (the chrono timers count whole jiffies, at either end of the window), one
/// `--interval` (the last tcp_info reading of the window may come up to an interval before the
/// last `ss` reading), 1 ms (`ss` prints whole ms). Measured on the host (HZ 250, 6 runs of
/// the file): why's timers came within -36..+48 ms of `ss`'s value at the last reading, and
/// inside the bounds by at least 41 ms below and 58 ms above (the bounds themselves are wide:
/// from the steady reading on, and up to exit).
const TIMER_SLACK_MS: f64 = 2.0 * TICK_MS + INTERVAL_MS as f64 + 1.0;

/// One `sockmem why` run around some traffic.
struct WhyRun {
    /// stdout/stderr of each command run, in the order given.
    outs: Vec<CmdOutput>,
    /// When the last had exited.
    exited: Instant,
}

impl WhyRun {
    /// The `--json` document of the first command, with every document's invariants checked.
    fn doc(&self) -> WhyDoc {
        let d = WhyDoc::parse(&self.outs[0].stdout).unwrap_or_else(|e| {
            panic!("bad `why --json` output ({e}): {}", self.outs[0].describe())
        });
        d.check_invariants();
        d
    }
}

/// `sockmem <args> --interval 20` (unless `args` give one) for each of `cmds` (each starting
/// with "why"), all attached
/// (ready files) before `traffic` runs; then SIGTERM to each, in order, each checked to exit 0
/// without a panic (after the last, `exited`). The traffic's flows are still running when the window ends: `traffic`
/// returns them, the caller ends them.
fn why_around<T>(cmds: &[&[&str]], traffic: impl FnOnce() -> T) -> (T, WhyRun) {
    let interval = INTERVAL_MS.to_string();
    let tracers: Vec<Tracer> = cmds
        .iter()
        .map(|args| {
            let mut a = args.to_vec();
            if !a.contains(&"--interval") {
                a.extend_from_slice(&["--interval", &interval]);
            }
            Tracer::start(&a)
        })
        .collect();
    let t = traffic();
    let outs = tracers.into_iter().map(Tracer::stop_checked).collect();
    let exited = Instant::now();
    (t, WhyRun { outs, exited })
}

/// Why `cause` cannot be judged for `sock`, if `why` says it cannot (its `missing` list).
fn missing_why(sock: &Value, cause: &str) -> Option<String> {
    sock["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m.get("cause").and_then(Value::as_str) == Some(cause))
        .map(|m| m.to_string())
}

/// The header's entry of the first of `sendmsg_ret` (send calls and bytes) and `send_blocked`
/// (sends that slept) that is not attached, if one is not.
fn send_hooks_missing(doc: &WhyDoc) -> Option<String> {
    ["sendmsg_ret", "send_blocked"]
        .into_iter()
        .find(|h| !doc.hook_attached(h))
        .map(|h| {
            doc.hook(h)
                .map(|e| e.to_string())
                .unwrap_or_else(|| format!("no {h:?} entry in the document's hooks"))
        })
}

/// Asserts `cause` is the socket's dominant cause with at least `min_share` of its window,
/// unless `why` names the cause as missing on this kernel/backend (then prints why and returns
/// false: the caller skips what depends on it).
fn assert_dominant(test: &str, sock: &Value, cause: &str, min_share: f64) -> bool {
    if let Some(why) = missing_why(sock, cause) {
        eprintln!("SKIP {test}: dominance of {cause}: why says it cannot see it here: {why}");
        return false;
    }
    assert_eq!(
        dominant(sock),
        cause,
        "{test}: expected {cause} to dominate, got shares {}; socket: {}",
        shares(sock),
        brief(sock)
    );
    let share = share_of(sock, cause);
    assert!(
        share >= min_share,
        "{test}: expected {cause}'s share >= {min_share}, got {share:.3} (shares {})",
        shares(sock)
    );
    true
}

/// A tcp_info timer: its name in `ss`, its field in `why`'s `tcp`, its value in a reading.
type Timer = (&'static str, &'static str, fn(&TcpInfo) -> u64);

/// Holds `why`'s tcp timers of a socket against `ss -tinm` readings of it: `steady`, taken
/// once the flow was in the state under test, and `last`, taken just before SIGTERM. The
/// socket was created after `why` was ready, so its timers were 0 when its window began, and
/// its window ended between `last` (less one `--interval`) and `exited`. So each timer's delta
/// over the window is at least its growth from `steady` to `last`, and at most its value at
/// `last` plus the time from `last` to `exited` (a timer grows at most as fast as the clock),
/// both ± [`TIMER_SLACK_MS`]. Returns the margins (got - lower, upper - got) in ms, per timer.
fn check_tcp_timers(
    test: &str,
    sock: &Value,
    steady: &TcpInfoAt,
    last: &TcpInfoAt,
    exited: Instant,
) -> Vec<(&'static str, f64, f64)> {
    let tcp = &sock["tcp"];
    // From the earliest the last reading can have been taken: ss's own run time counts.
    let after_last = (exited - last.asked).as_secs_f64() * 1e3;
    let timers: [Timer; 3] = [
        ("busy", "busy_s", |i| i.busy_ms),
        ("rwnd_limited", "rwnd_limited_s", |i| i.rwnd_limited_ms),
        ("sndbuf_limited", "sndbuf_limited_s", |i| {
            i.sndbuf_limited_ms
        }),
    ];
    let mut margins = Vec::new();
    for (name, field, get) in timers {
        let got = f64_of(tcp, field) * 1e3;
        let lower = get(&last.info).saturating_sub(get(&steady.info)) as f64 - TIMER_SLACK_MS;
        let upper = get(&last.info) as f64 + after_last + TIMER_SLACK_MS;
        eprintln!(
            "{test}: tcp {name}: why {got:.1} ms; ss {} ms at steady, {} ms at last, {after_last:.0} \
             ms from last to exit: bounds [{lower:.1}, {upper:.1}]",
            get(&steady.info),
            get(&last.info)
        );
        assert!(
            lower <= got && got <= upper,
            "{test}: expected why's tcp.{field} ({got:.1} ms) within [{lower:.1}, {upper:.1}] ms: \
             at least ss's {name} growth from the steady reading ({} ms) to the last one ({} \
             ms), at most its last value plus the {after_last:.0} ms until exit, ± \
             {TIMER_SLACK_MS} ms; tcp: {tcp}",
            get(&steady.info),
            get(&last.info)
        );
        margins.push((name, got - lower, upper - got));
    }
    margins
}

// ---------------------------------------------------------------------------------------------
// 1. The receiver stops reading: receiver window
// ---------------------------------------------------------------------------------------------

/// A receiver that accepts and never reads; the sender writes (nonblocking) until its writes
/// fail for 500 ms, then holds the socket open: the receive window is zero and the sender's
/// queue is full, unsent, for the rest of the window. `why` must say the receiver window
/// dominates, with the queue at `ss`'s `w` (near `tb`, the send buffer) and nothing below TCP
/// (`t` 0), the zero window seen and timed, and its tcp timers as `ss` counts them. A second
/// `why` without `--json` watches the same window: the text form names the same cause.
#[test]
fn receiver_window_dominates_when_the_receiver_stops_reading() {
    const T: &str = "receiver_window_dominates_when_the_receiver_stops_reading";
    const P: u16 = 27001;
    let pair = NetnsPair::new("wrwnd", 200);
    pair.tx_congctl("cubic");
    let p = P.to_string();
    let ((flow, steady, last), run) = why_around(
        &[
            &["why", "--json", "-P", &p, "--tcp"],
            &["why", "-P", &p, "--tcp"],
        ],
        || {
            let flow = StalledTcp::start(&pair, P, "smtx-wrwnd");
            let (written, mem) = flow.wait_stable(&pair);
            let steady = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            thread::sleep(Duration::from_millis(1500));
            let last = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            eprintln!(
                "{T}: wrote {written} B; ss at stable {mem:?}; steady {steady:?}; last {last:?}"
            );
            (flow, steady, last)
        },
    );
    let lport = flow.key.lport;
    flow.finish();
    let m = last.info.skmem;
    // Premises, by construction: the queue holds about a send buffer, nothing is below TCP,
    // the window is zero.
    assert!(
        m.w * 2 >= m.tb && m.t == 0,
        "premise: expected ss to show the sender's queue >= half its send buffer and nothing \
         below TCP, got {m:?}"
    );
    assert_eq!(
        last.info.snd_wnd.unwrap_or(0),
        0,
        "premise: expected a zero send window in ss: {last:?}"
    );

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    assert_eq!(get_str(sock, "protocol"), "tcp");
    assert_dominant(T, sock, "receiver_window", 0.5);

    let c = &sock["counters"];
    assert_eq!(
        u64_of(c, "sndbuf"),
        m.tb,
        "expected why's sndbuf to be ss's tb (the buffer no longer changes once stalled): {c}"
    );
    let (qmax, qmean) = (u64_of(c, "queued_max"), f64_of(c, "queued_mean"));
    assert!(
        qmax >= m.w && qmax <= m.w + 64 * 1024,
        "expected why's queued_max within [ss w {} , w + 64 KiB] (the queue reached w and stayed \
         there), got {qmax}: {c}",
        m.w
    );
    assert!(
        qmean >= 0.5 * m.w as f64,
        "expected why's queued_mean >= half of ss's w ({}) (full for most of the window), got \
         {qmean:.0}: {c}",
        m.w
    );
    let amean = f64_of(c, "alloc_mean");
    assert!(
        amean <= 0.05 * qmean,
        "expected why's alloc_mean near 0 (<= 5% of queued_mean {qmean:.0}: nothing can leave \
         through a zero window), got {amean:.0}: {c}"
    );

    let tcp = &sock["tcp"];
    assert_eq!(
        u64_of(tcp, "snd_wnd_min"),
        0,
        "expected why's snd_wnd_min 0 (ss shows a zero window): {tcp}"
    );
    let zero_s = f64_of(tcp, "zero_window_s");
    let zero_at_least = (last.at - steady.at).as_secs_f64() - TIMER_SLACK_MS / 1e3;
    assert!(
        zero_s >= zero_at_least,
        "expected why's zero_window_s >= {zero_at_least:.3} s (the window was zero from the steady \
         ss reading to the last one), got {zero_s}: {tcp}"
    );
    check_tcp_timers(T, sock, &steady, &last, run.exited);

    // The text form of the same window.
    let text = &run.outs[1].stdout;
    assert!(
        text.contains(&format!(":{lport}"))
            && (text.contains("receiver_window")
                || text.contains("receiver window")
                || text.contains("receiver-window")),
        "expected `why` (text) to name the socket (:{lport}) and its dominant cause (receiver \
         window); got:\n{}",
        tail(text, 3000)
    );
    // Its sizes in the units of every human-readable output (IEC): the send buffer as ss's tb.
    let shown = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("counters: "))
        .and_then(|l| l.split("sndbuf ").nth(1))
        .and_then(parse_human_bytes);
    let Some((sndbuf, within)) = shown else {
        panic!(
            "expected `why` (text) to show the sndbuf in B, KiB or MiB; got:\n{}",
            tail(text, 3000)
        )
    };
    assert!(
        (sndbuf - m.tb as f64).abs() <= within,
        "expected `why` (text) to show the sndbuf as ss's tb {} (±{within}), got {sndbuf}:\n{}",
        m.tb,
        tail(text, 3000)
    );
}

/// A sender stalled by a receiver that stopped reading well before `why` starts: its queue is
/// full and stable and its next zero-window probe is seconds away (`ss`'s persist timer), so
/// it makes no event while `why` runs. `why` must still watch it, from its first interval
/// (sock_diag names every socket there is), and say the receiver window dominates, with the
/// queue at `ss`'s `w` and its holder's pid.
#[test]
fn receiver_window_dominates_for_a_sender_stalled_before_the_run() {
    const T: &str = "receiver_window_dominates_for_a_sender_stalled_before_the_run";
    const P: u16 = 27002;
    const RUN: Duration = Duration::from_millis(1500);
    let pair = NetnsPair::new("wrwnd0", 220);
    pair.tx_congctl("cubic");
    let flow = StalledTcp::start(&pair, P, "smtx-wrwnd0");
    let lport = flow.key.lport;
    let (written, mem) = flow.wait_stable(&pair);
    // Probes back off (0.2, 0.4, 0.8, 1.6, 3.2 s...): wait for a gap longer than the run and
    // `why`'s start (loading the programs: seconds on a loaded machine).
    let quiet = RUN + Duration::from_secs(5);
    let mut left = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            left = persist_timer_left(&pair.tx_ns, lport, P);
            left.is_some_and(|l| l >= quiet)
        }),
        "premise: expected the stalled sender's persist timer to reach {quiet:?} within 30 s, \
         last {left:?}"
    );
    let p = P.to_string();
    let (last, run) = why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
        thread::sleep(RUN);
        ss_tcp_info_at(&pair.tx_ns, lport, P)
    });
    eprintln!("{T}: wrote {written} B; ss at stable {mem:?}; persist {left:?}; last {last:?}");
    let after = persist_timer_left(&pair.tx_ns, lport, P);
    flow.finish();
    let m = last.info.skmem;
    assert!(
        m.w == mem.w && m.w * 2 >= m.tb && m.t == 0,
        "premise: expected ss's queue unchanged ({mem:?}), >= half the send buffer, nothing \
         below TCP; got {m:?}"
    );
    eprintln!("{T}: persist timer after the run: {after:?}");

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    // A socket with no event during the run has no id of its own: `null`, never the internal
    // stand-in (2^63 + its inode).
    assert!(
        sock["sock"].is_null() || sock["sock"].as_u64().is_some_and(|id| id < 1 << 63),
        "sock {} is not an event's id: {}",
        sock["sock"],
        brief(sock)
    );
    let (window, run_window) = (f64_of(sock, "window_s"), doc.window_s());
    // 3 intervals on the host; an emulated VM (6.1/kprobe: 1.828 of 1.900 s) starts watching
    // later: 10% of the run there.
    let slack = if emulated() {
        (3.0 * INTERVAL_MS as f64 / 1e3).max(0.1 * run_window)
    } else {
        3.0 * INTERVAL_MS as f64 / 1e3
    };
    assert!(
        window >= run_window - slack,
        "expected the stalled socket watched the whole run ({run_window:.3} s) less 3 \
         intervals, got {window:.3} s"
    );
    assert_dominant(T, sock, "receiver_window", 0.8);
    let c = &sock["counters"];
    let qmean = f64_of(c, "queued_mean");
    assert!(
        (qmean - m.w as f64).abs() <= 0.02 * m.w as f64,
        "expected why's queued_mean within 2% of ss's w {} (unchanged over the run), got \
         {qmean:.0}: {c}",
        m.w
    );
    assert_eq!(
        sock["pid"].as_u64(),
        Some(u64::from(flow_tgid())),
        "expected the socket's holder (this test process) named: {}",
        brief(sock)
    );
}

/// A blocking sender asleep in one long write (`SO_SNDTIMEO` longer than the run) behind a
/// receiver that stopped reading, from before `why` starts until after it ends: /proc says its
/// thread is in the send call on the socket, asleep (`wchan`), before and after, and the
/// sender's own count of returned writes does not move. No event tells of that call's sleep
/// while `why` runs; `why` must still count it asleep over the whole window (the sender's
/// clock: asleep all along) and say so on its `send` line, as one call asleep since before the
/// run.
#[test]
fn a_sender_asleep_in_send_before_the_run_is_counted_asleep() {
    const T: &str = "a_sender_asleep_in_send_before_the_run_is_counted_asleep";
    const P: u16 = 27003;
    const RUN: Duration = Duration::from_millis(2000);
    let pair = NetnsPair::new("wasl0", 224);
    pair.tx_congctl("cubic");
    // Longer than loading the programs and the run (an emulated VM takes a minute to attach).
    let sndtimeo = Duration::from_secs(if emulated() { 110 } else { 20 });
    let flow = BlockingStalledTcp::start(&pair, P, "smtx-wasl0", sndtimeo);
    let asleep = flow.wait_asleep_in_send(Duration::from_secs(40));
    let returned = flow.writes_returned();
    let p = P.to_string();
    let (still, run) = why_around(
        &[
            &["why", "--json", "-P", &p, "--tcp"],
            &["why", "-P", &p, "--tcp"],
        ],
        || {
            thread::sleep(RUN);
            asleep_in_send(flow.sender.tgid, flow.sender.tid)
        },
    );
    let returned_after = flow.writes_returned();
    let lport = flow.key.lport;
    flow.stop_writing(sndtimeo + Duration::from_secs(20));
    flow.finish();
    eprintln!("{T}: asleep {asleep:?} before, {still:?} at the end");
    assert!(
        still.as_ref() == Some(&asleep) && returned_after == returned,
        "premise: expected the sender asleep in the same send call all along ({asleep:?}), got \
         {still:?} at the end, {} write(s) returned meanwhile",
        returned_after - returned
    );

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    let send = &sock["send"];
    let (window, blocked) = (f64_of(sock, "window_s"), f64_of(send, "blocked_s"));
    eprintln!("{T}: asleep {blocked:.4} s of a {window:.4} s window: {send}");
    assert_eq!(
        (
            u64_of(send, "asleep_at_start"),
            u64_of(send, "blocked_calls")
        ),
        (1, 1),
        "expected one call, asleep since before the run: {send}"
    );
    // The window runs from the first sample to the last, the sleep from the start (just before
    // the first sample) to the last: the same span (measured: equal to the ns); 1 ms.
    let slack = 1e-3;
    assert!(
        blocked >= window - slack && blocked <= window + slack,
        "expected the sender asleep the whole window ({window:.3} s) within {slack} s, got \
         {blocked:.3} s: {send}"
    );
    assert_eq!(
        sock["pid"].as_u64(),
        Some(u64::from(flow_tgid())),
        "expected the socket's holder (this test process) named: {}",
        brief(sock)
    );
    let text = &run.outs[1].stdout;
    let line = text
        .lines()
        .skip_while(|l| !l.contains(&format!(":{lport} > ")))
        .find(|l| l.trim_start().starts_with("send:"))
        .unwrap_or_else(|| panic!("no send line for the socket: {}", tail(text, 3000)));
    assert!(
        line.contains("1 slept for") && line.contains("1 call asleep since before the run"),
        "expected the text's send line to say the call asleep since before the run: {line}"
    );
}

/// This process: it holds every test flow's sockets.
fn flow_tgid() -> u32 {
    std::process::id()
}

// ---------------------------------------------------------------------------------------------
// 2. A small send buffer on a fast path: send buffer
// ---------------------------------------------------------------------------------------------

/// `SO_SNDBUF` 16 KiB (32 KiB in the kernel), 64 KiB writes, a veth without a qdisc on the data
/// path and a receiver that reads everything at once; its ACKs come back through `tbf rate
/// 64kbit` on the receiver's veth, so that each wait for memory lasts milliseconds (about 6
/// MB/s get through). On a bare veth the ACKs free the buffer within microseconds: the sender
/// spends about as long copying and runnable as asleep (measured 35-55% asleep), and no cause
/// would be known to dominate. Here the sender is off the CPU 99.6% of the time and asleep
/// 98.5-98.7% (its own scheduler accounting, idle host; 55-70% asleep with both cores busy),
/// with the window open, cwnd far above what is in flight and nothing below TCP (`ss`). `why`
/// must say the send buffer dominates, with its 32 KiB buffer, count the flow's writes and bytes
/// (all within the window), time blocked agreeing with the sender's own time asleep, and its
/// tcp timers as `ss` counts them. (This kernel's own `sndbuf_limited` timer stays at 0 here:
/// it starts only when data is pushed after SOCK_NOSPACE is set, and a full 64 KiB skb leaves
/// before; so it is not a witness of this state.)
#[test]
fn send_buffer_dominates_with_a_small_sndbuf() {
    const T: &str = "send_buffer_dominates_with_a_small_sndbuf";
    const P: u16 = 27011;
    const CHUNK: usize = 64 * 1024;
    let pair = NetnsPair::new("wsbuf", 201);
    pair.tx_congctl("cubic");
    ns_checked(
        &pair.rx_ns,
        "tc",
        &[
            "qdisc",
            "replace",
            "dev",
            &pair.rx_if,
            "root",
            "tbf",
            "rate",
            "64kbit",
            "burst",
            "4kb",
            "latency",
            "1s",
        ],
    );
    let p = P.to_string();
    let ((flow, steady, last, sched, sent_last, writes_last), run) =
        why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
            let flow = TcpFlow::start(
                &pair,
                P,
                "smtx-wsbuf",
                TcpFlowOpts::until_stopped()
                    .sndbuf(16 * 1024)
                    .chunk(CHUNK)
                    .hold_open(),
            );
            thread::sleep(Duration::from_millis(700));
            let steady = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            let k0 = SchedStat::of_thread(flow.sender.tid).expect("the sender's schedstat");
            thread::sleep(Duration::from_millis(2000));
            let k1 = SchedStat::of_thread(flow.sender.tid).expect("the sender's schedstat");
            let (sent, writes) = (flow.sent(), flow.writes());
            let last = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            (flow, steady, last, k1.since(&k0), sent, writes)
        });
    let (sent_after, writes_after) = (flow.sent(), flow.writes());
    let lport = flow.key.lport;
    let r = flow.finish();
    assert!(
        r.sent > 0 && r.received == r.sent,
        "premise: the flow delivered {r:?}"
    );
    let span = (last.at - steady.at).as_secs_f64();
    let off_cpu = span - sched.cpu.as_secs_f64();
    let asleep = off_cpu - sched.run_delay.unwrap_or_default().as_secs_f64();
    eprintln!(
        "{T}: sender off CPU {:.3}, asleep {:.3} of {span:.3} s ({} voluntary switches); steady \
         {steady:?}\nlast {last:?}",
        off_cpu / span,
        asleep / span,
        sched.voluntary
    );
    assert_eq!(
        last.info.skmem.tb,
        32 * 1024,
        "premise: expected SO_SNDBUF 16 KiB to give a 32 KiB send buffer in ss: {last:?}"
    );
    // Off the CPU: asleep waiting for memory, or woken and waiting for a CPU (on a loaded
    // machine: measured asleep 0.55-0.70 of the span with both cores busy, 0.86-0.96 idle).
    // In the VM matrix, 6.1 showed a moment of rwnd-limited (12 of 3176 ms busy) and one skb
    // below TCP at the last reading (t 1656; and once t 68096 = w: the whole queue, one 64 KiB
    // skb with its overhead): the premise is "mostly", not "never".
    assert!(
        off_cpu >= 0.8 * span
            && last.info.rwnd_limited_ms * 20 <= last.info.busy_ms.max(1)
            && last.info.skmem.t <= ONE_SKB_TRUESIZE,
        "premise: expected the sender off the CPU (in write, waiting: nothing else sleeps) most \
         of the time ({off_cpu:.3} of {span:.3} s), hardly rwnd-limited, at most an skb below \
         TCP: {last:?}"
    );

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    // On the host send_buffer dominates (0.9+ in every run). In emulated VMs (6.12 under TCG)
    // it once read send_buffer 0.16, sending 0.74: a write outlasted the 20 ms samples, and
    // without `tcp:tcp_sendmsg_locked` (before 6.18) its sleeps counted only in the interval
    // where it returned. `why` now spreads a call's sleeps over the whole call (reproduced on
    // the host by ignoring that tracepoint: old accounting sending 0.53, send_buffer 0.41 here,
    // 0.81 / 0.15 with the long writes of the next test). Emulated, the share may be lower
    // (slower copies), but send_buffer must still dominate.
    assert_dominant(T, sock, "send_buffer", if emulated() { 0.3 } else { 0.5 });
    let c = &sock["counters"];
    assert_eq!(
        u64_of(c, "sndbuf"),
        32 * 1024,
        "expected why's sndbuf 32 KiB: {c}"
    );
    // Not checked: queued_max against the send buffer. 6.18 keeps the write queue within it
    // plus one skb; 6.1 let it reach 275-727 kB with sndbuf 32 KiB in the VM matrix.
    if let Some(why) = send_hooks_missing(&doc) {
        eprintln!("SKIP {T}: send counts: {why}");
    } else {
        let s = &sock["send"];
        let (calls, bytes) = (u64_of(s, "calls"), u64_of(s, "bytes"));
        assert!(
            writes_last <= calls && calls <= writes_after + 1,
            "expected why's send calls between the flow's writes done at the last ss reading \
             ({writes_last}) and after exit ({writes_after}) + the one in progress, got {calls}: \
             {s}"
        );
        assert!(
            sent_last <= bytes && bytes <= sent_after + CHUNK as u64,
            "expected why's send bytes between the flow's bytes written at the last ss reading \
             ({sent_last}) and after exit ({sent_after}) + one write, got {bytes}: {s}"
        );
        let (blocked, blocked_s) = (u64_of(s, "blocked_calls"), f64_of(s, "blocked_s"));
        let window = f64_of(sock, "window_s");
        assert!(
            blocked > 0 && blocked <= calls && blocked_s <= window,
            "expected blocked calls in (0, calls] and blocked time at most the window {window} \
             s: {s}"
        );
        // The sender was asleep for `asleep` of the `span` between the two ss readings, all of
        // it inside the window; sockmem counts a sleep until the thread is back on a CPU, so
        // the runnable time after each wakeup may count too, and outside the span the sender
        // can be asleep at most the rest of the window. Measured on the host: blocked 2.69 s of
        // a 2.71 s window, the sender asleep 1.99 s of the 2.01 s span.
        // The span's ends are known only to the time each ss call took (0.2 s each in a 6.1
        // VM cell, where the bound was 10 ms short without them).
        let run_delay = sched.run_delay.unwrap_or_default().as_secs_f64();
        let ss_calls = ((steady.at - steady.asked) + (last.at - last.asked)).as_secs_f64();
        let at_most =
            asleep + run_delay + (window - span).max(0.0) + ss_calls + TIMER_SLACK_MS / 1e3;
        assert!(
            blocked_s >= 0.8 * asleep && blocked_s <= at_most,
            "expected why's time blocked in sendmsg ({blocked_s:.3} s) to cover at least 80% of \
             the sender's own time asleep between the ss readings ({asleep:.3} s of {span:.3} \
             s), and at most that plus its time runnable ({run_delay:.3} s) and the rest of the \
             window ({window:.3} s): at most {at_most:.3} s: {s}"
        );
    }
    check_tcp_timers(T, sock, &steady, &last, run.exited);
}

/// The same send-buffer-limited sender as above, with 256 KiB writes sampled every 5 ms: each
/// write lasts about 40 ms (at ~6 MB/s) and sleeps many times between copies, so one call spans
/// some 8 samples. This is the emulated VMs' case made on purpose: there, 64 KiB writes outlast
/// the 20 ms samples, and on kernels whose `tcp_sendmsg` tracepoint is missing (6.1, 6.12) a
/// call's sleeps used to count only in the interval where it returned (`send_buffer` 0.16,
/// `sending` 0.74 on 6.12 under TCG). `why` spreads each call's time asleep over the whole call
/// and judges each interval by it against its busy time: the send buffer must dominate here
/// too, with the time blocked within what the sender's own scheduler accounting allows.
#[test]
fn send_buffer_dominates_when_each_write_spans_many_samples() {
    const T: &str = "send_buffer_dominates_when_each_write_spans_many_samples";
    const P: u16 = 27017;
    const CHUNK: usize = 256 * 1024;
    let pair = NetnsPair::new("wsbufl", 207);
    pair.tx_congctl("cubic");
    ns_checked(
        &pair.rx_ns,
        "tc",
        &[
            "qdisc",
            "replace",
            "dev",
            &pair.rx_if,
            "root",
            "tbf",
            "rate",
            "64kbit",
            "burst",
            "4kb",
            "latency",
            "1s",
        ],
    );
    let p = P.to_string();
    let ((flow, span, sched, writes), run) = why_around(
        &[&["why", "--json", "-P", &p, "--tcp", "--interval", "5"]],
        || {
            let flow = TcpFlow::start(
                &pair,
                P,
                "smtx-wsbufl",
                TcpFlowOpts::until_stopped()
                    .sndbuf(16 * 1024)
                    .chunk(CHUNK)
                    .hold_open(),
            );
            thread::sleep(Duration::from_millis(500));
            let t0 = Instant::now();
            let k0 = SchedStat::of_thread(flow.sender.tid).expect("the sender's schedstat");
            let w0 = flow.writes();
            thread::sleep(Duration::from_millis(2000));
            let k1 = SchedStat::of_thread(flow.sender.tid).expect("the sender's schedstat");
            let writes = flow.writes() - w0;
            (flow, t0.elapsed().as_secs_f64(), k1.since(&k0), writes)
        },
    );
    let lport = flow.key.lport;
    let r = flow.finish();
    assert!(
        r.sent > 0 && r.received == r.sent,
        "premise: the flow delivered {r:?}"
    );
    let off_cpu = span - sched.cpu.as_secs_f64();
    let run_delay = sched.run_delay.unwrap_or_default().as_secs_f64();
    let asleep = off_cpu - run_delay;
    eprintln!(
        "{T}: sender off CPU {:.3}, asleep {:.3} of {span:.3} s; {writes} writes of {CHUNK} \
         bytes ({:.1} ms each)",
        off_cpu / span,
        asleep / span,
        span * 1e3 / writes.max(1) as f64
    );
    // Each write must outlast several samples (else this is the other test's case). Under TCG
    // the sender copies on a slow emulated CPU (6.1: off CPU 1.24 of 2.02 s): the premise cannot
    // be built there, and the small-sndbuf test covers that machine.
    let built = off_cpu >= 0.8 * span && writes > 0 && span * 1e3 / writes as f64 >= 20.0;
    if !built && emulated() {
        eprintln!("{T}: premise not reachable on an emulated CPU; skipped");
        return;
    }
    assert!(
        built,
        "premise: expected the sender off the CPU most of the time ({off_cpu:.3} of {span:.3} \
         s) and each write to last 20 ms or more ({writes} writes)"
    );
    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    if let Some(why) = send_hooks_missing(&doc) {
        // Without `send_blocked` the sleeps are not seen: the kernel's timer alone decides.
        eprintln!("SKIP {T}: {why}");
        return;
    }
    assert_dominant(T, sock, "send_buffer", 0.5);
    let s = &sock["send"];
    let (blocked_s, window) = (f64_of(s, "blocked_s"), f64_of(sock, "window_s"));
    // Under emulation the clocks of the sender's schedstat and the programs' timestamps drift
    // apart by more than the host's slack (6.12/kprobe: 54 ms over in a 3 s window; 6.1/kprobe:
    // 2.440 s blocked in a 2.464 s window, 12 ms over a 5% allowance): 10% there.
    let emulated_slack = if emulated() { 0.10 * window } else { 0.0 };
    let at_most =
        asleep + run_delay + (window - span).max(0.0) + TIMER_SLACK_MS / 1e3 + emulated_slack;
    assert!(
        blocked_s >= 0.8 * asleep && blocked_s <= at_most,
        "expected why's time blocked in sendmsg ({blocked_s:.3} s) to cover at least 80% of the \
         sender's own time asleep ({asleep:.3} s of {span:.3} s) and at most {at_most:.3} s: {s}"
    );
}

/// `SO_MAX_PACING_RATE` 2 MB/s on a sender that writes as fast as it can over a bare veth
/// (CUBIC; `SO_SNDBUF` 32 KiB, 64 KiB in the kernel, so that what it writes tracks what leaves): TCP paces itself to
/// the cap, the path could take far more. `why` must say `paced` dominates, with the cap as `ss`
/// shows it (its pacing rate, in bytes) and an acknowledged rate that agrees with the sender's
/// own count of bytes written per second over the span between two `ss` readings, which must
/// itself be the cap's (witness: 0.7-1.05 of 2 MB/s; headers count in the pacing, not in the
/// payload).
#[test]
fn paced_dominates_under_a_max_pacing_rate() {
    const T: &str = "paced_dominates_under_a_max_pacing_rate";
    const P: u16 = 27018;
    const RATE: u64 = 2_000_000;
    let pair = NetnsPair::new("wpace", 209);
    pair.tx_congctl("cubic");
    let p = P.to_string();
    let ((flow, steady, last, sent_span), run) =
        why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
            let flow = TcpFlow::start(
                &pair,
                P,
                "smtx-wpace",
                TcpFlowOpts::until_stopped()
                    .sndbuf(32 * 1024)
                    .max_pacing_rate(RATE),
            );
            thread::sleep(Duration::from_millis(700));
            let steady = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            let s0 = flow.sent();
            thread::sleep(Duration::from_millis(2000));
            let last = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            let s1 = flow.sent();
            (flow, steady, last, s1 - s0)
        });
    let lport = flow.key.lport;
    let r = flow.finish();
    assert!(
        r.sent > 0 && r.received == r.sent,
        "premise: the flow delivered {r:?}"
    );
    let span = (last.at - steady.at).as_secs_f64();
    let written_rate = sent_span as f64 / span;
    eprintln!("{T}: written {written_rate:.0} B/s over {span:.3} s; last {last:?}");
    assert_eq!(
        last.info.pacing_rate,
        Some(RATE),
        "premise: expected ss's pacing rate at the cap: {last:?}"
    );
    let at_cap = written_rate >= 0.7 * RATE as f64 && written_rate <= 1.05 * RATE as f64;
    if !at_cap && emulated() {
        // 6.1 under TCG wrote 0.69 MB/s against a 2 MB/s cap: the emulated sender, not the
        // pacer, set the rate, so `paced` is not the answer there.
        eprintln!("{T}: the emulated sender did not reach the cap; skipped");
        return;
    }
    assert!(
        at_cap,
        "premise: expected the sender to write at the cap {RATE} B/s, got {written_rate:.0}"
    );

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    assert_dominant(T, sock, "paced", 0.5);
    let tcp = &sock["tcp"];
    assert_eq!(
        u64_of(tcp, "max_pacing_rate"),
        RATE,
        "expected why's max_pacing_rate the cap: {tcp}"
    );
    let achieved = f64_of(tcp, "achieved_rate");
    assert!(
        (achieved - written_rate).abs() <= 0.25 * written_rate,
        "expected why's acknowledged rate ({achieved:.0} B/s) within 25% of the rate the sender \
         wrote at ({written_rate:.0} B/s): {tcp}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A slow tbf with a deep queue: qdisc, and the TSQ limit
// ---------------------------------------------------------------------------------------------

/// `tcp_limit_output_bytes` set in the sender's namespace to a value neither this host's nor
/// Debian's default (it must be read per namespace), above what binds here.
const LIMIT_OUTPUT_BYTES: u64 = 3 << 20;

/// A bulk flow through `tbf rate 20mbit burst 256kb latency 1s`: CUBIC's window grows far past
/// what the tbf drains, TCP Small Queues keeps about two skbs below TCP, and they wait in the
/// tbf. `why` must say the qdisc dominates; its TSQ limit must be the kernel's formula
/// `min(max(2 * truesize, pacing_rate >> pacing_shift), tcp_limit_output_bytes)` with the
/// namespace's sysctl, shift 10, a pacing rate within what `ss` showed over the window, and the
/// truesize it reports (the kernel uses the truesize of the skb at hand; the test has no other
/// view of it); `ss`'s `t` must never exceed that limit by more than one skb. Its mean qdisc
/// sojourn must agree with Little's law from `tc` (L / λ), the bytes ahead must be its own, no
/// drops (as `tc` says), and its tcp timers as `ss` counts them.
#[test]
fn qdisc_dominates_behind_a_slow_tbf() {
    const T: &str = "qdisc_dominates_behind_a_slow_tbf";
    const P: u16 = 27021;
    let pair = NetnsPair::new("wqdisc", 202);
    pair.disable_ipv6();
    pair.tx_congctl("cubic");
    pair.tx_sysctl_set(
        "net.ipv4.tcp_limit_output_bytes",
        &LIMIT_OUTPUT_BYTES.to_string(),
    );
    let lob: u64 = pair
        .tx_sysctl("net.ipv4.tcp_limit_output_bytes")
        .parse()
        .expect("a number");
    assert_eq!(
        lob, LIMIT_OUTPUT_BYTES,
        "premise: the namespace's sysctl set"
    );
    pair.set_tbf("20mbit", "256kb", "1s");
    let p = P.to_string();
    let ((flow, readings, samples), run) =
        why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
            let sampler = QdiscSampler::start(&pair.tx_ns, &pair.tx_if, Duration::from_millis(20));
            let flow = TcpFlow::start(
                &pair,
                P,
                "smtx-wqdisc",
                TcpFlowOpts::until_stopped().hold_open(),
            );
            thread::sleep(Duration::from_millis(1000));
            // ss every 250 ms: the pacing rate's range, the bytes below TCP.
            let mut readings = vec![ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P)];
            while readings.len() < 12 {
                thread::sleep(Duration::from_millis(250));
                readings.push(ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P));
            }
            (flow, readings, sampler.finish())
        });
    let lport = flow.key.lport;
    let r = flow.finish();
    assert!(r.sent > 0, "premise: the flow wrote {r:?}");
    let (steady, last) = (&readings[0], &readings[readings.len() - 1]);
    let pacing: Vec<u64> = readings.iter().filter_map(|r| r.info.pacing_rate).collect();
    let alloc: Vec<u64> = readings.iter().map(|r| r.info.skmem.t).collect();
    let (pmin, pmax) = (
        *pacing.iter().min().expect("ss shows pacing_rate"),
        *pacing.iter().max().expect("ss shows pacing_rate"),
    );
    eprintln!(
        "{T}: ss pacing_rate {pmin}..{pmax} B/s, t (alloc) {alloc:?}, cwnd {:?}",
        readings.iter().map(|r| r.info.cwnd).collect::<Vec<_>>()
    );
    assert!(
        readings.iter().all(|r| r.info.cc == "cubic"),
        "premise: expected CUBIC (route congctl): {last:?}"
    );
    // tc over the same span: time-averaged backlog (bytes), departure rate (bytes/s), drops.
    let (first_s, last_s) = (samples[0], samples[samples.len() - 1]);
    let span = (last_s.at - first_s.at).as_secs_f64();
    let mut l_bytes = 0.0;
    let mut busy_time = 0.0;
    for w in samples.windows(2) {
        let dt = (w[1].at - w[0].at).as_secs_f64();
        l_bytes += w[0].q.backlog as f64 * dt;
        if w[0].q.backlog > 0 {
            busy_time += dt;
        }
    }
    l_bytes /= span;
    let lambda = (last_s.q.sent_bytes - first_s.q.sent_bytes) as f64 / span;
    let w_us = l_bytes / lambda * 1e6;
    let drops = last_s.q.drops - first_s.q.drops;
    eprintln!(
        "{T}: tc over {span:.2} s ({} samples): L {l_bytes:.0} B, λ {lambda:.0} B/s, W = L/λ \
         {w_us:.0} us, backlog > 0 {:.3} of the time, drops {drops}",
        samples.len(),
        busy_time / span
    );

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    let qdisc_seen = assert_dominant(T, sock, "qdisc", 0.5);

    // TSQ: the limit and its inputs.
    let tsq = &sock["tsq"];
    if let Some(why) = missing_why(sock, "tsq") {
        eprintln!("SKIP {T}: TSQ limit: {why}");
    } else {
        let limit = u64_of(tsq, "limit");
        let truesize = u64_of(tsq, "truesize");
        let rate = u64_of(tsq, "pacing_rate");
        let shift = u64_of(tsq, "pacing_shift");
        assert_eq!(
            u64_of(tsq, "limit_output_bytes"),
            LIMIT_OUTPUT_BYTES,
            "expected why's limit_output_bytes to be the sender namespace's sysctl: {tsq}"
        );
        assert_eq!(shift, 10, "expected the default pacing shift 10: {tsq}");
        // CUBIC on a tbf is not paced: the cap applies on every kernel. ss names the
        // congestion control too.
        assert_eq!(
            tsq.get("capped").and_then(Value::as_bool),
            Some(true),
            "expected the limit capped by limit_output_bytes (an unpaced CUBIC socket): {tsq}"
        );
        assert_eq!(
            tsq.get("congestion").and_then(Value::as_str),
            Some(last.info.cc.as_str()),
            "expected why's congestion control to be ss's: {tsq}"
        );
        let formula = |p: u64| (2 * truesize).max(p >> shift).min(LIMIT_OUTPUT_BYTES);
        assert_eq!(
            limit,
            formula(rate),
            "expected why's TSQ limit to be min(max(2 * truesize {truesize}, pacing_rate {rate} >> \
             {shift}), limit_output_bytes {LIMIT_OUTPUT_BYTES}) = {}: {tsq}",
            formula(rate)
        );
        // The pacing rate `why` used, against ss's over the window (the rate moves with srtt;
        // measured: within ss's range of 12 readings, which spans < 1%, in 6 of 6 runs).
        assert!(
            rate as f64 >= 0.5 * pmin as f64 && rate as f64 <= 2.0 * pmax as f64,
            "expected why's pacing_rate within [0.5 x, 2 x] of ss's range {pmin}..{pmax} B/s, got \
             {rate}: {tsq}"
        );
        assert!(
            (formula(pmin)..=formula(pmax)).contains(&limit) || formula(pmin) == formula(pmax),
            "expected the TSQ limit {limit} within the formula over ss's pacing range: {}..{}",
            formula(pmin),
            formula(pmax)
        );
        // truesize: one skb of at most 64 KiB of data, and its overhead.
        assert!(
            (1448..=2 * 65536).contains(&truesize),
            "expected a truesize of one skb (MSS .. 128 KiB), got {truesize}: {tsq}"
        );
        // ss's t (sk_wmem_alloc) stays within the limit plus the skb TSQ lets through
        // (measured: t = 131984 = the limit in every reading of 6 runs).
        for a in &alloc {
            assert!(
                *a <= limit + truesize,
                "expected ss's t (bytes below TCP) never above the TSQ limit {limit} by more than \
                 an skb ({truesize}); ss showed {alloc:?}"
            );
        }
        let throttled = f64_of(tsq, "throttled_s");
        assert!(
            throttled > 0.0,
            "expected time TSQ-throttled (the qdisc holds the bytes), got {throttled}: {tsq}"
        );
        // What "throttled" means, said as it is: alloc with one more skb past the limit (ss's
        // t sits at or just under the limit, not at it and beyond).
        let reading = get_str(sock, "reading");
        if reading.contains("Small Queues") {
            assert!(
                reading.contains("within one skb (truesize"),
                "expected the reading to say alloc was within one skb of TSQ's limit, got: \
                 {reading}"
            );
        }
    }

    if qdisc_seen {
        let q = &sock["qdisc"];
        let soj = f64_of(q, "sojourn_mean_us");
        let ratio = soj / w_us;
        eprintln!("{T}: why sojourn mean {soj:.0} us / Little W {w_us:.0} us = {ratio:.3}");
        // Measured on the host (6 runs): 0.927-0.936 (why counts truesize, tc's backlog the
        // packets' length, a few % apart). ±40% as hist.rs's Little's-law test: an emulated VM
        // samples tc far more coarsely (0.89-1.15 there for hist).
        assert!(
            (0.6..=1.4).contains(&ratio),
            "expected why's mean qdisc sojourn {soj:.0} us within ±40% of Little's law from tc \
             (L {l_bytes:.0} B / λ {lambda:.0} B/s = {w_us:.0} us), got ratio {ratio:.3}: {q}"
        );
        assert!(
            f64_of(q, "sojourn_max_us") >= f64_of(q, "sojourn_p99_us")
                && f64_of(q, "sojourn_p99_us") >= 0.0,
            "expected sojourn max >= p99: {q}"
        );
        let ahead = q["ahead"].as_array().expect("an ahead list");
        let own = ahead
            .iter()
            .find(|a| a.get("sock") == sock.get("sock"))
            .unwrap_or_else(|| panic!("expected the socket itself in its ahead list: {q}"));
        assert!(
            f64_of(own, "share") >= 0.9,
            "expected the bytes ahead of this socket's skbs to be its own (alone in the tbf), got \
             {own}"
        );
        assert_eq!(
            u64_of(q, "drops"),
            drops,
            "expected why's qdisc drops to equal tc's ({drops}): {q}"
        );
    }
    check_tcp_timers(T, sock, steady, last, run.exited);
}

// ---------------------------------------------------------------------------------------------
// 4. A small flow behind a bulk flow of another process: whose bytes are ahead
// ---------------------------------------------------------------------------------------------

/// Two senders share `tbf rate 10mbit burst 256kb latency 1s`: a bulk flow from another
/// process (`cat`, see [`ChildTcpSender`]) and a small-message flow of this process (200-byte
/// writes, TCP_NODELAY, every 10 ms). The small flow's skbs queue behind the bulk flow's: the
/// top of its `ahead` list must be the bulk socket, with the child's pid and command name, with
/// at least half of the bytes ahead; the mean bytes ahead must agree with `tc`'s time-averaged
/// backlog (the small flow's writes come at times unrelated to the queue's state).
#[test]
fn qdisc_wait_is_attributed_to_the_bulk_flow_ahead() {
    const T: &str = "qdisc_wait_is_attributed_to_the_bulk_flow_ahead";
    const BULK: u16 = 27031;
    const SMALL: u16 = 27032;
    let pair = NetnsPair::new("wahead", 203);
    pair.disable_ipv6();
    pair.tx_congctl("cubic");
    pair.set_tbf("10mbit", "256kb", "1s");
    let ((bulk, small, samples), run) = why_around(
        &[&["why", "--json", "-a", "198.18.203.0/24", "--tcp"]],
        || {
            let bulk = ChildTcpSender::start(&pair, BULK);
            thread::sleep(Duration::from_millis(500));
            let sampler = QdiscSampler::start(&pair.tx_ns, &pair.tx_if, Duration::from_millis(20));
            let small = TcpFlow::start(
                &pair,
                SMALL,
                "smtx-wahead",
                TcpFlowOpts::until_stopped()
                    .chunk(200)
                    .write_gap(Duration::from_millis(10))
                    .nodelay()
                    .hold_open(),
            );
            thread::sleep(Duration::from_millis(3000));
            (bulk, small, sampler.finish())
        },
    );
    let (bulk_pid, bulk_lport) = (bulk.pid, bulk.lport);
    let small_lport = small.key.lport;
    let small_r = small.finish();
    let bulk_read = bulk.finish();
    assert!(
        small_r.sent > 0 && bulk_read > 0,
        "premise: both flows moved data: small {small_r:?}, bulk read {bulk_read}"
    );
    let (first_s, last_s) = (samples[0], samples[samples.len() - 1]);
    let span = (last_s.at - first_s.at).as_secs_f64();
    let mut l_bytes = 0.0;
    for w in samples.windows(2) {
        l_bytes += w[0].q.backlog as f64 * (w[1].at - w[0].at).as_secs_f64();
    }
    l_bytes /= span;
    eprintln!("{T}: tc mean backlog {l_bytes:.0} B over {span:.2} s");

    let doc = run.doc();
    let bulk_sock = doc.socket_at(bulk_lport, BULK);
    let small_sock = doc.socket_at(small_lport, SMALL);
    eprintln!(
        "{T}: bulk {}\nsmall {}",
        brief(bulk_sock),
        brief(small_sock)
    );
    assert_eq!(
        get_opt_u64(bulk_sock, "pid"),
        Some(u64::from(bulk_pid)),
        "expected the bulk socket's pid to be the child's: {}",
        brief(bulk_sock)
    );
    assert_eq!(
        get_opt_str(bulk_sock, "comm"),
        Some("cat"),
        "expected the bulk socket's comm to be the child's (cat): {}",
        brief(bulk_sock)
    );
    if let Some(why) = missing_why(small_sock, "qdisc") {
        eprintln!("SKIP {T}: qdisc attribution: {why}");
        return;
    }
    let q = &small_sock["qdisc"];
    assert!(
        u64_of(q, "skbs") > 0,
        "expected the small flow's skbs through the qdisc: {q}"
    );
    let ahead = q["ahead"].as_array().expect("an ahead list");
    let top = ahead
        .first()
        .unwrap_or_else(|| panic!("expected bytes ahead of the small flow's skbs: {q}"));
    assert_eq!(
        top.get("sock"),
        bulk_sock.get("sock"),
        "expected the bulk socket on top of the small flow's ahead list: {q}"
    );
    assert_eq!(
        get_opt_u64(top, "pid"),
        Some(u64::from(bulk_pid)),
        "expected the child's pid on the top entry: {top}"
    );
    assert_eq!(get_opt_str(top, "comm"), Some("cat"), "top entry: {top}");
    let share = f64_of(top, "share");
    assert!(
        share >= 0.5,
        "expected the bulk flow to own at least half of the bytes ahead of the small flow, got \
         {share}: {q}"
    );
    let share_sum: f64 = ahead.iter().map(|a| f64_of(a, "share")).sum();
    assert!(
        share_sum <= 1.0 + SHARE_SUM_TOLERANCE,
        "expected the ahead shares to add up to at most 1, got {share_sum}: {q}"
    );
    let ahead_mean = f64_of(q, "ahead_bytes_mean");
    let ratio = ahead_mean / l_bytes;
    eprintln!(
        "{T}: why ahead_bytes_mean {ahead_mean:.0} / tc mean backlog {l_bytes:.0} = {ratio:.3}"
    );
    // Measured on the host (6 runs): 0.967-0.972. ±40% as for Little's law in hist.rs: an
    // emulated VM samples tc far more coarsely.
    assert!(
        (0.6..=1.4).contains(&ratio),
        "expected the small flow's mean bytes ahead {ahead_mean:.0} within ±40% of tc's \
         time-averaged backlog {l_bytes:.0} B, got ratio {ratio:.3}: {q}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A sender that writes little and sleeps: application
// ---------------------------------------------------------------------------------------------

/// 100-byte writes every 50 ms on a veth without a qdisc: the socket has nothing to send almost
/// all the time. `why` must say the application dominates, count every write, none blocked,
/// and its tcp timers as `ss` counts them (busy only for the instants a write is in flight).
#[test]
fn application_dominates_when_the_sender_sleeps() {
    const T: &str = "application_dominates_when_the_sender_sleeps";
    const P: u16 = 27041;
    const CHUNK: usize = 100;
    let pair = NetnsPair::new("wapp", 204);
    pair.tx_congctl("cubic");
    let p = P.to_string();
    let ((flow, steady, last, writes_last), run) =
        why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
            let flow = TcpFlow::start(
                &pair,
                P,
                "smtx-wapp",
                TcpFlowOpts::until_stopped()
                    .chunk(CHUNK)
                    .write_gap(Duration::from_millis(50))
                    .hold_open(),
            );
            thread::sleep(Duration::from_millis(300));
            let steady = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            thread::sleep(Duration::from_millis(2500));
            let writes = flow.writes();
            let last = ss_tcp_info_at(&pair.tx_ns, flow.key.lport, P);
            (flow, steady, last, writes)
        });
    let writes_after = flow.writes();
    let lport = flow.key.lport;
    let r = flow.finish();
    assert!(r.sent > 0 && r.received == r.sent, "premise: {r:?}");
    eprintln!("{T}: steady {steady:?}\nlast {last:?}");

    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    assert_dominant(T, sock, "application", 0.8);
    if let Some(why) = send_hooks_missing(&doc) {
        eprintln!("SKIP {T}: send counts: {why}");
    } else {
        let s = &sock["send"];
        let calls = u64_of(s, "calls");
        assert!(
            writes_last <= calls && calls <= writes_after + 1,
            "expected why's send calls between the flow's writes at the last ss reading \
             ({writes_last}) and after exit ({writes_after}), got {calls}: {s}"
        );
        assert_eq!(
            u64_of(s, "bytes"),
            calls * CHUNK as u64,
            "expected {CHUNK} bytes per call: {s}"
        );
        // None waits for memory (100 bytes into an empty buffer). Under emulation a call can
        // still sleep briefly on the socket's lock while softirq holds it for an ACK
        // (6.12/fentry under TCG: 1 call, 2 ms): a few ms at most there.
        let (blocked, blocked_s) = (u64_of(s, "blocked_calls"), f64_of(s, "blocked_s"));
        assert!(
            blocked == 0 || (emulated() && blocked <= 2 && blocked_s <= 0.01),
            "expected no call to wait for memory (100 bytes into an empty buffer): {s}"
        );
    }
    let c = &sock["counters"];
    assert!(
        u64_of(c, "queued_max") <= 16 * 1024,
        "expected at most a few small skbs ever queued: {c}"
    );
    check_tcp_timers(T, sock, &steady, &last, run.exited);
}

// ---------------------------------------------------------------------------------------------
// 6. UDP into a small, slow queue: send buffer and qdisc drops
// ---------------------------------------------------------------------------------------------

/// A connected UDP socket with `SO_SNDBUF` 24 KiB (48 KiB in the kernel) sends as fast as it
/// can into `tbf rate 200kbit burst 16kb limit 26kb`: first 200-byte datagrams, whose truesize
/// fills the send buffer before their bytes fill the tbf (the sender sleeps in `send`), then
/// 1472-byte datagrams, whose bytes fill the tbf first (it drops, the sender never waits).
/// The send buffer sits between the two: below the tbf's limit times the small datagrams'
/// truesize-to-bytes ratio (2.1 on 6.1, 3.2 on 6.18), above it times the large ones' (1.5).
/// With 64 KiB, 6.1 never slept in the VM matrix: its tbf dropped first.
/// `why` must say the send buffer or the qdisc dominates, count every send and byte, the
/// sends that slept as the sender's own scheduler counts do, the tbf's drops as `tc` does, and
/// see the socket's memory reach its send buffer.
#[test]
fn udp_into_a_small_queue_blocks_and_drops() {
    const T: &str = "udp_into_a_small_queue_blocks_and_drops";
    const P: u16 = 27051;
    let pair = NetnsPair::new("wudp", 205);
    pair.disable_ipv6();
    // 200 kbit/s: slow enough that even a sender in an emulated VM (~550 datagrams a second
    // on 6.1 under TCG) overruns it; at 2 Mbit/s that one never filled anything.
    pair.set_tbf_limit("200kbit", "16kb", "26kb");
    let p = P.to_string();
    let ((res, drops), run) = why_around(&[&["why", "--json", "-P", &p, "--udp"]], || {
        let before = pair.tx_qdisc_stats();
        let res = udp_phases(
            &pair,
            P,
            "smtx-wudp",
            24 * 1024,
            &[
                (200, Duration::from_millis(1500)),
                (1472, Duration::from_millis(1500)),
            ],
        );
        let after = pair.tx_qdisc_stats();
        (res, after.drops - before.drops)
    });
    eprintln!("{T}: {res:?}, tc drops {drops}");
    assert!(
        res.per_phase[0].1 > 0 && drops > 0,
        "premise: expected sends that slept in the first phase and tc drops in the second, got \
         {res:?}, drops {drops}"
    );

    let doc = run.doc();
    let sock = doc.socket_at(res.lport, P);
    eprintln!("{T}: {}", brief(sock));
    assert_eq!(get_str(sock, "protocol"), "udp");
    let d = dominant(sock);
    if let Some(why) = send_hooks_missing(&doc) {
        // Without send_blocked (6.1 tracepoints) time asleep in sends cannot be told from the
        // application's, and the drop phase's share depends on how fast an emulated sender
        // goes (0.39 in one VM run, 0 in the next): nothing to judge the causes by.
        eprintln!("SKIP {T}: dominance: {why} (shares {})", shares(sock));
    } else {
        assert!(
            d == "send_buffer" || d == "qdisc",
            "expected send_buffer or qdisc to dominate, got {d}: shares {}",
            shares(sock)
        );
    }
    let c = &sock["counters"];
    let sndbuf = u64_of(c, "sndbuf");
    assert_eq!(sndbuf, 48 * 1024, "expected SO_SNDBUF 24 KiB doubled: {c}");
    let amax = u64_of(c, "alloc_max");
    assert!(
        amax as f64 >= 0.9 * sndbuf as f64 && amax <= sndbuf + 4096,
        "expected the socket's memory below UDP to reach its send buffer ({sndbuf}) (sends \
         slept waiting for it), got alloc_max {amax}: {c}"
    );
    if let Some(why) = send_hooks_missing(&doc) {
        eprintln!("SKIP {T}: send counts: {why}");
    } else {
        let s = &sock["send"];
        assert_eq!(
            (u64_of(s, "calls"), u64_of(s, "bytes")),
            (res.sends, res.bytes),
            "expected why to count every send and byte of the flow: {s}"
        );
        let blocked = u64_of(s, "blocked_calls");
        // Measured on the host (8 runs): equal every time (49-70 sends that slept). As in
        // send_blocked.rs, an odd call can be missed or over-counted.
        let tol = (res.slept / 50).max(2);
        assert!(
            blocked.abs_diff(res.slept) <= tol,
            "expected why's blocked sends within ±{tol} of the sends in which the sender slept \
             ({}), got {blocked}: {s}",
            res.slept
        );
    }
    if let Some(why) = missing_why(sock, "qdisc") {
        eprintln!("SKIP {T}: qdisc drops: {why}");
    } else {
        let q = &sock["qdisc"];
        // Measured: equal in 8 of 8 runs (4387-30646 drops; IPv6 is off: nothing else
        // goes through that tbf).
        assert_eq!(
            u64_of(q, "drops"),
            drops,
            "expected why's qdisc drops to equal tc's drops over the flow ({drops}): {q}"
        );
    }
    assert!(
        sock["tcp"].is_null() && sock["tsq"].is_null(),
        "expected no tcp/tsq for UDP"
    );
}

/// `tc -s qdisc` of the sender's veth every 100 ms for `d`: the backlog (bytes, as skb
/// lengths) at each reading.
fn tc_backlogs(pair: &NetnsPair, d: Duration) -> Vec<u64> {
    let end = Instant::now() + d;
    let mut v = Vec::new();
    while Instant::now() < end {
        v.push(pair.tx_qdisc_stats().backlog);
        thread::sleep(Duration::from_millis(100));
    }
    v
}

/// A UDP sender that waits for room in poll() and sends nonblocking (an event loop, socat),
/// through a tbf slower than it: its send buffer stays at the kernel's writable threshold
/// (alloc >= sndbuf / 2) and its datagrams wait in the qdisc (`tc -s` shows a backlog at every
/// reading), yet it never sleeps in a send. `why` must say where its bytes waited (the qdisc),
/// not that the application was not writing.
#[test]
fn udp_sender_waiting_in_poll_is_held_by_its_buffer() {
    const T: &str = "udp_sender_waiting_in_poll_is_held_by_its_buffer";
    const P: u16 = 27052;
    let pair = NetnsPair::new("wudpp", 221);
    pair.disable_ipv6();
    // 8 Mbit/s with room for 2 s of queue: far more than a send buffer, nothing dropped.
    pair.set_tbf("8mbit", "16kb", "2s");
    let flow = UdpSender::start(&pair, P, "smtx-wudpp", 8192, UdpWait::InPoll);
    assert!(
        wait_until(Duration::from_secs(10), || flow.sends() > 100),
        "premise: expected the poll sender to send"
    );
    let p = P.to_string();
    let (backlogs, run) = why_around(&[&["why", "--json", "-P", &p, "--udp"]], || {
        tc_backlogs(&pair, Duration::from_secs(2))
    });
    let lport = flow.lport;
    let (sent, would_block, got) = flow.finish();
    let tc = pair.tx_qdisc_stats();
    eprintln!(
        "{T}: sent {sent}, would block {would_block}, received {got}; tc backlogs {backlogs:?}; \
         tc {tc:?}"
    );
    assert!(
        backlogs.iter().all(|&b| b > 0) && tc.drops == 0,
        "premise: expected tc to show a backlog at every reading and no drops: {backlogs:?}, \
         {tc:?}"
    );
    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    let c = &sock["counters"];
    let (amean, sndbuf) = (f64_of(c, "alloc_mean"), u64_of(c, "sndbuf"));
    // Under emulation the woken sender takes milliseconds to refill (see `most_app` below):
    // 0.92 of the threshold on 6.12/tracepoint in a clean-clone CI run, with `application`
    // at 0.27.
    let near = if emulated() { 0.8 } else { 0.95 };
    assert!(
        amean * 2.0 >= near * sndbuf as f64,
        "premise: expected alloc at the writable threshold (half of sndbuf {sndbuf}; {near} of \
         it), got mean {amean:.0}: {c}"
    );
    assert_eq!(
        u64_of(&sock["send"], "blocked_calls"),
        0,
        "premise: a nonblocking sender never sleeps in send"
    );
    let app = share_of(sock, "application");
    // Measured on the host (5 runs): 0 (qdisc 0.987-0.989, device 0.011-0.013); before the fix
    // 1.0. Under emulation the woken sender takes milliseconds to refill its buffer, and an
    // interval whose two samples both fall in that gap finds room the application has not
    // used: that is the application's time, CPU-starved (6.1/fentry under TCG: 0.144).
    let most_app = if emulated() { 0.3 } else { 0.1 };
    assert!(
        app <= most_app,
        "expected the poll sender not read as `application` (its buffer held it), got \
         {app:.3}: shares {}",
        shares(sock)
    );
    assert_dominant(T, sock, "qdisc", 0.9 - most_app);
}

/// The user's reproducer: a blocking and a poll UDP sender, 8192-byte datagrams (6 fragments
/// each), into one slow tbf. `tc -s` shows the qdisc's backlog at every reading well above
/// what both senders' buffers could hold outside it; the driver is a veth (microseconds). `why`
/// must put both sockets' held time in the qdisc, not in the device.
#[test]
fn udp_senders_behind_one_tbf_wait_in_the_qdisc_not_the_device() {
    const T: &str = "udp_senders_behind_one_tbf_wait_in_the_qdisc_not_the_device";
    const P: u16 = 27053;
    const Q: u16 = 27054;
    let pair = NetnsPair::new("wudpq", 222);
    pair.disable_ipv6();
    pair.set_tbf("8mbit", "16kb", "2s");
    let blocking = UdpSender::start(&pair, P, "smtx-wudpb", 8192, UdpWait::InSend);
    let polling = UdpSender::start(&pair, Q, "smtx-wudpq", 8192, UdpWait::InPoll);
    assert!(
        wait_until(Duration::from_secs(10), || blocking.sends() > 100
            && polling.sends() > 100),
        "premise: expected both senders to send"
    );
    let (p, q) = (P.to_string(), Q.to_string());
    let (backlogs, run) = why_around(&[&["why", "--json", "-P", &p, "-P", &q, "--udp"]], || {
        tc_backlogs(&pair, Duration::from_secs(2))
    });
    let (bport, qport) = (blocking.lport, polling.lport);
    let b = blocking.finish();
    let q2 = polling.finish();
    let tc = pair.tx_qdisc_stats();
    eprintln!("{T}: blocking {b:?}, poll {q2:?}; tc backlogs {backlogs:?}; tc {tc:?}");
    assert!(
        backlogs.iter().all(|&b| b > 0) && tc.drops == 0,
        "premise: expected tc to show a backlog at every reading and no drops: {backlogs:?}, \
         {tc:?}"
    );
    let doc = run.doc();
    for (lport, rport) in [(bport, P), (qport, Q)] {
        let sock = doc.socket_at(lport, rport);
        eprintln!("{T}: {}", brief(sock));
        let device = share_of(sock, "device");
        // Measured on the host (4 runs): device 0-0.021 (blocking), 0.011-0.052 (poll); before
        // the fix 0.76-0.90 (blocking): the model was short of what the qdisc held at start.
        assert!(
            device <= 0.15,
            "expected :{lport}'s time held in the qdisc, not the device (tc's backlog never \
             emptied: {backlogs:?}), got device {device:.3}: shares {}",
            shares(sock)
        );
        assert_dominant(T, sock, "qdisc", 0.8);
    }
}

/// A blocking UDP sender of 8192-byte datagrams into `tbf limit 30000` shared with a second
/// UDP flow outside the filter: the qdisc drops most datagrams at its limit (`tc -s` counts
/// them) and the sender's buffer never fills (the dropped skbs free their memory at once). The
/// reading must say so (drops, buffer not full), not that the bytes sat there "with the send
/// buffer full"; the other flow's bytes ahead are named by its addresses and sender, in the
/// JSON and in the text.
#[test]
fn udp_drops_at_the_qdisc_limit_are_read_as_drops_and_the_socket_ahead_is_named() {
    const T: &str = "udp_drops_at_the_qdisc_limit_are_read_as_drops_and_the_socket_ahead_is_named";
    const P: u16 = 27055;
    const Q: u16 = 27056;
    let pair = NetnsPair::new("wudpd", 223);
    pair.disable_ipv6();
    pair.set_tbf_limit("8mbit", "16kb", "30000");
    let p = P.to_string();
    let ((flow, other, drops), run) = why_around(
        &[
            &["why", "--json", "-P", &p, "--udp"],
            &["why", "-P", &p, "--udp"],
        ],
        || {
            let before = pair.tx_qdisc_stats();
            let flow = UdpSender::start(&pair, P, "smtx-wudpd", 8192, UdpWait::InSend);
            let other = UdpSender::start(&pair, Q, "smtx-wudpo", 1472, UdpWait::InSend);
            thread::sleep(Duration::from_millis(2000));
            let after = pair.tx_qdisc_stats();
            (flow, other, after.drops - before.drops)
        },
    );
    let (lport, olport) = (flow.lport, other.lport);
    let sent = flow.finish();
    let osent = other.finish();
    eprintln!("{T}: sent {sent:?}, other {osent:?}, tc drops {drops}");
    assert!(drops > 0, "premise: expected tc to count drops");
    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    eprintln!("{T}: {}", brief(sock));
    let c = &sock["counters"];
    let (amean, sndbuf) = (f64_of(c, "alloc_mean"), u64_of(c, "sndbuf"));
    assert!(
        amean * 2.0 < sndbuf as f64,
        "premise: expected the send buffer far from full (drops free the memory), got alloc \
         mean {amean:.0} of sndbuf {sndbuf}: {c}"
    );
    let reading = get_str(sock, "reading");
    assert!(
        !reading.contains("buffer full") && !reading.contains("too full"),
        "expected the reading not to call the send buffer full (alloc mean {amean:.0} of \
         {sndbuf}): {reading}"
    );
    if dominant(sock) == "qdisc" && u64_of(&sock["qdisc"], "drops") > 0 {
        assert!(
            reading.contains("dropped") && reading.contains("not full"),
            "expected the reading to name the drops and the buffer not full: {reading}"
        );
    }
    if let Some(why) = missing_why(sock, "qdisc") {
        eprintln!("SKIP {T}: the socket ahead: {why}");
        return;
    }
    let ahead = sock["qdisc"]["ahead"].as_array().expect("an ahead list");
    let local = format!("{}:{olport}", pair.tx_addr);
    let remote = format!("{}:{Q}", pair.rx_addr);
    let o = ahead
        .iter()
        .find(|a| a["local"].as_str() == Some(local.as_str()))
        .unwrap_or_else(|| {
            panic!("expected the other flow ({local}) in the ahead list: {ahead:?}")
        });
    assert_eq!(o["remote"].as_str(), Some(remote.as_str()), "{o}");
    assert_eq!(
        o["pid"].as_u64(),
        Some(u64::from(flow_tgid())),
        "expected the other flow's sender named: {o}"
    );
    let text = &run.outs[1].stdout;
    assert!(
        text.contains(&format!("({local} > {remote})")),
        "expected the text to name the socket ahead by its addresses ({local} > {remote}): \
         {}",
        tail(text, 3000)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The device's TX queue: its state and BQL at each hand-off to the driver
// ---------------------------------------------------------------------------------------------

/// BQL as the kernel shows it for one TX queue: `(limit, inflight)` from
/// `/sys/class/net/<dev>/queues/tx-0/byte_queue_limits/`, or `None` where the kernel shows no
/// BQL for the device (no `CONFIG_BQL`, or, since 6.11, a driver that does not use it).
fn sysfs_bql(ns: &str, dev: &str) -> Option<(u64, u64)> {
    let dir = format!("/sys/class/net/{dev}/queues/tx-0/byte_queue_limits");
    let script = format!("cat {dir}/limit {dir}/inflight 2>/dev/null || true");
    let out = ns_checked(ns, "sh", &["-c", &script]);
    let mut v = out.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (v.next(), v.next()) {
        (Some(Some(limit)), Some(Some(inflight))) => Some((limit, inflight)),
        _ => None,
    }
}

/// A bulk TCP flow (paced) over a veth: `why` reads the TX queue at every hand-off of the socket's
/// skbs to the driver. Each hand-off is one skb the veth transmits, so the hand-offs are at
/// most the packets `/proc/net/dev` counts on it, and the flow's skbs are most of those (the
/// rest: ARP and neighbour discovery). BQL is held against sysfs: where the kernel shows none
/// for the veth (6.11+ hides it for drivers that do not use it, as veth), `why` must not say
/// it saw BQL in use; where the kernel shows it (6.1: every device) and `why` saw the driver
/// use it, the limit must be sysfs's. The queue's stopped counts cannot exceed the hand-offs;
/// a queue stopped at hand-off is rare by construction (the stack hands nothing to a stopped
/// queue), so they are printed, not asserted.
#[test]
fn device_reads_the_tx_queue_state_and_bql() {
    const T: &str = "device_reads_the_tx_queue_state_and_bql";
    const P: u16 = 27070;
    let pair = NetnsPair::new("wtxq", 206);
    pair.tx_congctl("cubic");
    let (_, pkts_before) = pair.tx_dev_stats();
    let p = P.to_string();
    let ((flow, bql_during), run) = why_around(&[&["why", "--json", "-P", &p, "--tcp"]], || {
        // Paced (20 MB/s): an unpaced veth flow hands over tens of thousands of skbs a second,
        // more than a debug build's ring buffer keeps up with (8 GB in 1.5 s: a third seen).
        let opts = TcpFlowOpts::until_stopped().max_pacing_rate(20_000_000);
        let flow = TcpFlow::start(&pair, P, "smtx-wtxq", opts);
        thread::sleep(Duration::from_millis(1500));
        let bql = sysfs_bql(&pair.tx_ns, &pair.tx_if);
        (flow, bql)
    });
    let lport = flow.key.lport;
    let r = flow.finish();
    let (_, pkts_after) = pair.tx_dev_stats();
    let pkts = pkts_after - pkts_before;
    assert!(r.sent > 0 && r.received == r.sent, "premise: {r:?}");
    let qdisc = pair.tx_qdisc_stats();
    let doc = run.doc();
    let sock = doc.socket_at(lport, P);
    let txq = &sock["device"]["tx_queue"];
    eprintln!(
        "{T}: sent {} B, veth tx packets {pkts}, qdisc requeues {}; sysfs BQL {bql_during:?}; \
         why's tx_queue {txq}",
        r.sent, qdisc.requeues
    );
    if !doc.hook_attached("driver_xmit") {
        eprintln!(
            "SKIP {T}: driver_xmit is not attached: {:?}",
            doc.hook("driver_xmit")
        );
        return;
    }
    let handoffs = u64_of(txq, "handoffs");
    if handoffs == 0 {
        let why = missing_why(sock, "device");
        assert!(
            why.as_deref().is_some_and(|w| w.contains("TX queue")),
            "{T}: no hand-off read the TX queue, and `why` does not name it missing: {}",
            brief(sock)
        );
        eprintln!("SKIP {T}: {why:?}");
        return;
    }
    // fentry's driver hook saw 539 of 1295 packets on 6.1 and 594 of 1304 on 6.12 (VM
    // matrix): a quarter at least, never more than the device sent.
    assert!(
        handoffs <= pkts && handoffs * 4 >= pkts,
        "{T}: expected the flow's hand-offs ({handoffs}) to be most of the packets the veth \
         sent ({pkts})"
    );
    let stopped = u64_of(txq, "driver_stopped") + u64_of(txq, "bql_stopped");
    assert!(stopped <= handoffs, "{T}: {txq}");
    let (bql_read, bql_used) = (u64_of(txq, "bql_read"), u64_of(txq, "bql_used"));
    assert!(bql_used <= bql_read && bql_read <= handoffs, "{T}: {txq}");
    if bql_read == 0 {
        let why = missing_why(sock, "device");
        assert!(
            why.as_deref().is_some_and(|w| w.contains("BQL")),
            "{T}: BQL was not read, and `why` does not name it missing: {}",
            brief(sock)
        );
        assert!(
            bql_during.is_none(),
            "{T}: sysfs shows BQL ({bql_during:?}) but `why` says the kernel has none"
        );
        eprintln!("SKIP {T}: BQL: {why:?}");
        return;
    }
    match bql_during {
        // The kernel hides BQL for this device: its driver does not use it.
        None => assert_eq!(bql_used, 0, "{T}: sysfs shows no BQL on the veth: {txq}"),
        Some((limit, inflight)) if bql_used == 0 => assert!(
            limit == 0 && inflight == 0,
            "{T}: `why` saw no bytes queued through BQL, sysfs shows limit {limit}, inflight \
             {inflight}"
        ),
        Some((limit, _)) => assert_eq!(
            txq["bql_limit_last"].as_u64(),
            Some(limit),
            "{T}: BQL limit: `why` against sysfs: {txq}"
        ),
    }
    assert!(
        missing_why(sock, "device").is_none(),
        "{T}: the TX queue and BQL were read, yet `why` names the device's inputs missing: {}",
        brief(sock)
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Bad input
// ---------------------------------------------------------------------------------------------

/// Bad options end with a non-zero exit and a message naming what is wrong, never a panic.
#[test]
fn bad_input_is_refused_with_a_message() {
    let cases: [(&[&str], &str); 3] = [
        (&["why", "--interval", "0"], "interval"),
        (&["why", "--interval", "abc"], "interval"),
        (&["why", "-i", "smnosuch0", "-d", "1"], "smnosuch0"),
    ];
    for (args, names) in cases {
        let out = run_sockmem(args, CMD_TIMEOUT);
        out.assert_usage_error(args);
        assert!(
            out.stderr.contains(names),
            "expected the message of {args:?} to name {names:?}: {}",
            out.describe()
        );
    }
}

/// The `ss -tinm` parser the tests rely on, on a line of `ss` 6.1.
#[test]
fn ss_tinm_parser_reads_the_timers() {
    let text = "0      1445104 198.18.209.1:52996 198.18.209.2:27999\n\t skmem:(r0,rb131072,\
                t25448,tb1880064,f2128,w1464240,o0,bl0,d0) cubic wscale:10,10 rto:224 \
                rtt:20.144/2.148 mss:1448 cwnd:30 ssthresh:160 pacing_rate 18976184bps \
                delivery_rate 19104432bps busy:2016ms rwnd_limited:12ms(0.6%) \
                sndbuf_limited:4ms(0.2%) unacked:17 snd_wnd:3976192";
    let i = parse_tcp_info(text).expect("parses");
    assert_eq!(i.cc, "cubic");
    assert_eq!(
        (i.busy_ms, i.rwnd_limited_ms, i.sndbuf_limited_ms),
        (2016, 12, 4)
    );
    assert_eq!(i.pacing_rate, Some(18976184 / 8));
    assert_eq!(
        (i.cwnd, i.unacked, i.snd_wnd),
        (Some(30), Some(17), Some(3976192))
    );
    assert_eq!(
        (i.skmem.t, i.skmem.w, i.skmem.tb),
        (25448, 1464240, 1880064)
    );
    // Timers ss leaves out when zero.
    let quiet = parse_tcp_info("skmem:(r0,rb1,t0,tb2,f0,w0,o0,bl0,d0) cubic cwnd:10 busy:4ms")
        .expect("parses");
    assert_eq!(
        (
            quiet.busy_ms,
            quiet.rwnd_limited_ms,
            quiet.sndbuf_limited_ms
        ),
        (4, 0, 0)
    );
}
