//! Integration tests of `sockmem hist` against real traffic.
//!
//! Like `trace.rs` they need root and a kernel with BTF; each test builds its own pair of
//! network namespaces (198.18.110-121.0/24, one subnet per test, ports 22xxx) and checks what
//! the in-kernel histograms say against what the test knows or the kernel itself reports
//! (`tc -s qdisc`, the veth's own counters, the sender's own clock).

mod support;

use std::time::{Duration, Instant};
use std::{fs, thread};
use support::*;

const MIB: u64 = 1024 * 1024;

/// Starts `sockmem hist <args> --ready-file ..` and waits until it is attached.
fn start_hist(args: &[&str]) -> Tracer {
    Tracer::start(&hist_args(args))
}

/// `["hist", args...]`.
fn hist_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["hist"];
    all.extend_from_slice(args);
    all
}

/// The one JSON document with `per` that a `sockmem hist --json` run printed.
fn hist_doc(out: &CmdOutput, per: &str) -> HistDoc {
    HistDoc::parse(&out.stdout, per)
        .unwrap_or_else(|e| panic!("bad `sockmem hist --json` output ({e}): {}", out.describe()))
}

/// SIGTERM, exit 0, no panic, one JSON document with `per`.
fn stop_hist_json(t: Tracer, per: &str) -> HistDoc {
    hist_doc(&t.stop_checked(), per)
}

/// `sockmem hist <args>` attached, then `traffic`, then stopped: see [`traced`].
fn hist_traced<T>(args: &[&str], per: &str, traffic: impl FnOnce() -> T) -> (T, HistDoc) {
    let (t, out) = traced(&hist_args(args), traffic);
    (t, hist_doc(&out, per))
}

/// Hooks the qdisc and skb checks need.
const QDISC_HOOKS: [&str; 3] = ["dev_queue_xmit", "qdisc_enqueue", "qdisc_dequeue"];
/// Hooks `sendmsg_time` needs (`tcp:tcp_sendmsg_locked` is a 6.12+ tracepoint).
const SENDMSG_HOOKS: [&str; 2] = ["tcp_sendmsg", "sendmsg_ret"];
/// The `--per pid` key of samples with no known sender.
const UNKNOWN_SENDER: &str = "(unknown sender)";

/// If one of `hooks` is not attached in `doc`, prints why the test `test` is skipped (the
/// kernel feature that is missing, as sockmem reports it) and returns true.
fn skip_without(test: &str, doc: &HistDoc, hooks: &[&str]) -> bool {
    for h in hooks {
        if !doc.hook_attached(h) {
            eprintln!(
                "SKIP {test}: sockmem could not attach hook {h} on this kernel: {}",
                doc.hook_reason(h)
            );
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// 1. qdisc sojourn vs Little's law
// ---------------------------------------------------------------------------------------------

/// What one Little's-law run measured.
#[derive(Debug)]
struct LittleRun {
    rate: &'static str,
    /// sockmem: qdisc_sojourn total.
    count: u64,
    mean_ns: f64,
    p50_ns: u64,
    p99_ns: u64,
    unmatched: u64,
    duration_s: f64,
    /// tc: time-averaged backlog, skbs (`qlen`) and bytes.
    l_skbs: f64,
    l_bytes: f64,
    /// Departure rates over the sampled interval: skbs/s (veth tx_packets: one per skb),
    /// bytes/s (qdisc `Sent` bytes), GSO segments/s (qdisc `Sent .. pkt`).
    lambda_skbs: f64,
    lambda_bytes: f64,
    lambda_segs: f64,
    /// Little's law: W = L / λ, in ns.
    w_skbs_ns: f64,
    w_bytes_ns: f64,
    samples: usize,
    sampled_s: f64,
    max_qlen: u64,
    drops: u64,
    /// The document, for its hooks list.
    doc: HistDoc,
}

impl LittleRun {
    fn ratio(&self) -> f64 {
        self.mean_ns / self.w_skbs_ns
    }
}

/// How long the flow writes. sockmem and the `tc` sampler both see all of it, from an empty
/// queue to an empty queue (BBR's startup included).
const LITTLE_FLOW: Duration = Duration::from_secs(5);

/// tbf of `rate` (burst 256kb: TSO skbs of up to 64 KiB are never split, so every dequeue has
/// its enqueue) on the sender veth; sockmem hist attached, then a 20 ms `tc` sampler started,
/// then a bulk flow for [`LITTLE_FLOW`], stopped and drained before the sampler and sockmem
/// stop. Both see every skb of the flow from its enqueue to its dequeue, so Little's law holds
/// exactly over the sampled span (the queue is empty at both ends) and only the sampling of
/// `qlen` stands between the two sides; nothing depends on how long sockmem took to load.
fn little_run(pair: &NetnsPair, port: u16, rate: &'static str) -> LittleRun {
    pair.set_tbf(rate, "256kb", "200ms");
    let p = port.to_string();
    let tracer = start_hist(&["--json", "-P", &p, "--tcp"]);
    let sampler = QdiscSampler::start(&pair.tx_ns, &pair.tx_if, Duration::from_millis(20));
    let flow = TcpFlow::start(
        pair,
        port,
        &format!("smtx-{port}"),
        TcpFlowOpts::until_stopped().hold_open(),
    );
    thread::sleep(LITTLE_FLOW);
    flow.stop();
    flow.wait_sender_done(Duration::from_secs(30));
    flow.wait_received(flow.sent(), Duration::from_secs(30));
    pair.wait_tx_qdisc_empty();
    let samples = sampler.finish();
    let doc = stop_hist_json(tracer, "total");
    // The FIN leaves after sockmem stopped: no skb of the flow outside the sampled span.
    let r = flow.finish();
    assert!(
        r.received > 0 && r.received == r.sent,
        "expected the flow on port {port} to deliver everything it wrote, sent {} received {}",
        r.sent,
        r.received
    );

    let (first, last) = (samples[0], samples[samples.len() - 1]);
    assert!(
        samples.len() >= 20,
        "expected >= 20 tc samples over a {LITTLE_FLOW:?} flow, got {}",
        samples.len()
    );
    assert!(
        first.q.qlen == 0 && last.q.qlen == 0,
        "premise: expected an empty qdisc at the first and the last tc reading (the flow starts \
         after the first, drains before the last), got qlen {} and {}",
        first.q.qlen,
        last.q.qlen
    );
    let span = (last.at - first.at).as_secs_f64();
    // Time-weighted averages (left Riemann sum: each reading holds until the next).
    let (mut l_skbs, mut l_bytes) = (0.0, 0.0);
    for w in samples.windows(2) {
        let dt = (w[1].at - w[0].at).as_secs_f64();
        l_skbs += w[0].q.qlen as f64 * dt;
        l_bytes += w[0].q.backlog as f64 * dt;
    }
    l_skbs /= span;
    l_bytes /= span;
    let max_qlen = samples.iter().map(|s| s.q.qlen).max().unwrap_or(0);
    let lambda_skbs = (last.dev_tx_packets - first.dev_tx_packets) as f64 / span;
    let lambda_bytes = (last.q.sent_bytes - first.q.sent_bytes) as f64 / span;
    let lambda_segs = (last.q.sent_pkts - first.q.sent_pkts) as f64 / span;
    let soj = doc.total("qdisc_sojourn");
    LittleRun {
        rate,
        count: hist_u64(soj, "count"),
        mean_ns: hist_f64(soj, "mean"),
        p50_ns: hist_u64(soj, "p50"),
        p99_ns: hist_u64(soj, "p99"),
        unmatched: doc.completeness("qdisc_unmatched"),
        duration_s: hist_f64(&doc.doc, "duration_s"),
        l_skbs,
        l_bytes,
        lambda_skbs,
        lambda_bytes,
        lambda_segs,
        w_skbs_ns: l_skbs / lambda_skbs * 1e9,
        w_bytes_ns: l_bytes / lambda_bytes * 1e9,
        samples: samples.len(),
        sampled_s: span,
        max_qlen,
        drops: last.q.drops - first.q.drops,
        doc,
    }
}

fn print_little(r: &LittleRun) {
    eprintln!(
        "little {}: sockmem sojourn count {} mean {:.2} ms p50 {:.2} ms p99 {:.2} ms over \
         {:.2} s, qdisc_unmatched {}; tc {} samples over {:.2} s: L {:.2} skbs (max {}) / \
         {:.0} B, λ {:.1} skbs/s {:.0} B/s ({:.0} segs/s), W(skbs) {:.2} ms, W(bytes) {:.2} ms, \
         naive W(qlen/segs) {:.3} ms, drops {}; sockmem/W(skbs) = {:.3}; the veth's rate over \
         duration_s gives {:.0} skbs",
        r.rate,
        r.count,
        r.mean_ns / 1e6,
        r.p50_ns as f64 / 1e6,
        r.p99_ns as f64 / 1e6,
        r.duration_s,
        r.unmatched,
        r.samples,
        r.sampled_s,
        r.l_skbs,
        r.max_qlen,
        r.l_bytes,
        r.lambda_skbs,
        r.lambda_bytes,
        r.lambda_segs,
        r.w_skbs_ns / 1e6,
        r.w_bytes_ns / 1e6,
        r.l_skbs / r.lambda_segs * 1e3,
        r.drops,
        r.ratio(),
        r.lambda_skbs * r.duration_s,
    );
}

/// `mean sojourn (sockmem) / W (Little's law from tc)` must lie in
/// `[1 - LITTLE_TOLERANCE, 1 + LITTLE_TOLERANCE]`.
///
/// W = L / λ with both in skbs: L from tc's `qlen` (skbs), λ from the veth's `tx_packets`
/// (one per skb). tc's `Sent .. pkt` counts GSO *segments* (~20-40 per skb here), so
/// `qlen / (Sent pkt rate)` would be 20-40x too small; the byte version (backlog bytes / byte
/// rate) is a byte-weighted mean, printed for comparison only.
///
/// Measured first with the former design (flow started 2 s before sockmem, 3 s windows), on
/// the 2-core development VM (kernel 6.18, BBR, 20 ms sampling) over 22 runs, 14 alone and 8
/// alongside the other tests of this file: ratio at 40mbit 0.93 .. 1.30, at 400mbit 0.95 ..
/// 1.22; 31 of the 44 within ±5%, 42 within ±15%. The spread came from BBR's queue moving on a
/// scale of tens of ms (1 to 15 skbs) seen through ~150 samples, and from sockmem's window
/// starting up to a few hundred ms before the sampled one. ±40% keeps a margin over the worst
/// run seen (+30%) and still fails for any unit or skbs-vs-segments mistake, or a mean 1.7x
/// too large or too small.
///
/// The fast rate is 200mbit, not 400: in the TCG VMs a flow reaches only ~380 Mbit/s, so at
/// 400mbit tbf barely queued (L ≈ 1 skb) and tc's sampled L was off by up to 1.7x. At 200mbit
/// (2026-11-27): host L 1.4–1.6 skbs, ratio 1.00–1.01 (4 runs); VMs (6.1, 6.12 × 3 backends)
/// L 2.4–5.4 skbs, ratio 0.89–1.15, and 0.96–1.15 at 40mbit.
///
/// With the present design (the whole flow inside both windows, queue empty at both ends: the
/// window mismatch is gone, only the sampling of qlen is left), on the host (2 cores, kernel
/// 6.18) over 10 runs, 6 alone and 4 with both cores kept busy by two `yes > /dev/null`: ratio
/// 0.980–1.015 at 40mbit (L 2.1–2.7 skbs) and 0.978–1.030 at 200mbit (L 1.7–3.0 skbs). The
/// bound stays at ±40% until the VM matrix has printed ratios for this design: VMs sample tc
/// far more coarsely than the host.
const LITTLE_TOLERANCE: f64 = 0.40;

/// Under emulation the ratio may also run high, up to this: the host pauses a VM's vCPUs (two
/// VMs on two cores), the queue waits out the pause in wall-clock time (which sockmem's times
/// count) but no sampler inside the VM runs during it, so tc's sampled L misses the long
/// queues. 6.1/tracepoint, full matrix on a busy host (2026-12-01): 1.215 at 40mbit, 1.426 at
/// 200mbit with L 1.38 skbs, sockmem's p50 (3.77 ms) right at W (3.83 ms) and the mean pulled
/// up by the tail. Still far from a unit or skbs-vs-segments mistake (20-40x).
const LITTLE_EMULATED_HIGH: f64 = 2.0;

/// The flow starts after sockmem attached, so no skb of it was queued before; qdisc_unmatched
/// still holds a few (requeues): 0–4 against 770–1990 sojourn samples (at most 0.5%) in the 20
/// host runs measured for LITTLE_TOLERANCE. It must stay below this fraction of the count.
const UNMATCHED_MAX_FRACTION: f64 = 0.05;

#[test]
fn qdisc_sojourn_agrees_with_littles_law() {
    let pair = NetnsPair::new("little", 110);
    let slow = little_run(&pair, 22101, "40mbit");
    print_little(&slow);
    if skip_without(
        "qdisc_sojourn_agrees_with_littles_law",
        &slow.doc,
        &QDISC_HOOKS,
    ) {
        return;
    }
    let fast = little_run(&pair, 22102, "200mbit");
    print_little(&fast);

    for r in [&slow, &fast] {
        assert!(
            r.count > 0,
            "expected qdisc_sojourn samples at tbf {}, got count {}",
            r.rate,
            r.count
        );
        assert!(
            r.l_skbs > 0.0 && r.lambda_skbs > 0.0,
            "premise: expected a backlog and a departure rate at tbf {}, got L {:.3} skbs, λ \
             {:.1} skbs/s",
            r.rate,
            r.l_skbs,
            r.lambda_skbs
        );
        let lo = 1.0 - LITTLE_TOLERANCE;
        let hi = if emulated() {
            LITTLE_EMULATED_HIGH
        } else {
            1.0 + LITTLE_TOLERANCE
        };
        assert!(
            (lo..=hi).contains(&r.ratio()),
            "tbf {}: expected sockmem's mean qdisc sojourn {:.3} ms to equal Little's law W = L/λ \
             = {:.3} skbs / {:.1} skbs/s = {:.3} ms, the ratio within {lo:.2}..{hi:.2}, got {:.3}",
            r.rate,
            r.mean_ns / 1e6,
            r.l_skbs,
            r.lambda_skbs,
            r.w_skbs_ns / 1e6,
            r.ratio()
        );
        let bound = (r.count as f64 * UNMATCHED_MAX_FRACTION).ceil() as u64;
        assert!(
            r.unmatched <= bound,
            "tbf {}: expected qdisc_unmatched <= {bound} ({}% of the {} sojourn samples: a few \
             requeues), got {} (note: sockmem also counts dequeues of skbs \
             its filter excluded, e.g. other tests' tbf traffic; see \
             completeness_counts_only_filtered_traffic)",
            r.rate,
            UNMATCHED_MAX_FRACTION * 100.0,
            r.count,
            r.unmatched
        );
    }
    // The two rates must be told apart the way the witness tells them apart. A faster tbf
    // usually queues for less time, but not always: in a TCG VM (6.12/fentry, 2026-12-01) the
    // emulated sender, near its own limit at 200mbit, sent 68 KB skbs there against 20 KB at
    // 40mbit, and tc's W was 10.5 ms at 200mbit against 7.0 ms (sockmem: 10.7 and 7.3). So the
    // order is checked when tc's W differ by more than the per-rate tolerance allows.
    let (lo, hi) = (
        slow.w_skbs_ns.min(fast.w_skbs_ns),
        slow.w_skbs_ns.max(fast.w_skbs_ns),
    );
    if hi > lo * (1.0 + LITTLE_TOLERANCE) / (1.0 - LITTLE_TOLERANCE) {
        assert_eq!(
            fast.mean_ns < slow.mean_ns,
            fast.w_skbs_ns < slow.w_skbs_ns,
            "expected sockmem to order the mean qdisc sojourns at tbf {} and {} as Little's law \
             does: sockmem {:.3} ms vs {:.3} ms, W {:.3} ms vs {:.3} ms",
            fast.rate,
            slow.rate,
            fast.mean_ns / 1e6,
            slow.mean_ns / 1e6,
            fast.w_skbs_ns / 1e6,
            slow.w_skbs_ns / 1e6
        );
    } else {
        eprintln!(
            "little: W at tbf {} and {} within the tolerance of each other ({:.3} vs {:.3} ms): \
             their order is not checked",
            fast.rate,
            slow.rate,
            fast.w_skbs_ns / 1e6,
            slow.w_skbs_ns / 1e6
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. No qdisc
// ---------------------------------------------------------------------------------------------

#[test]
fn no_qdisc_means_bypass_and_no_sojourn() {
    const P: u16 = 22201;
    let pair = NetnsPair::new("noq", 111);
    let q = pair.tx_qdisc_stats();
    assert!(
        q.kind_is_noqueue,
        "premise: expected a fresh veth in a new namespace to have noqueue, tc says:\n{}",
        pair.tx_qdisc_show()
    );
    let before = pair.tx_dev_stats();
    let (_, doc) = hist_traced(&["--json", "-P", &P.to_string(), "--tcp"], "total", || {
        tcp_transfer(&pair, P, "smtx-noq", 8 * MIB)
    });
    let after = pair.tx_dev_stats();
    let dev_skbs = after.1 - before.1;

    if skip_without(
        "no_qdisc_means_bypass_and_no_sojourn",
        &doc,
        &[
            "dev_queue_xmit",
            "qdisc_enqueue",
            "qdisc_dequeue",
            "driver_xmit",
        ],
    ) {
        return;
    }
    let soj = doc.total("qdisc_sojourn");
    let below = doc.total("below_tcp");
    let driver = doc.total("driver_time");
    let bypass = doc.completeness("qdisc_bypass");
    eprintln!(
        "noqueue: {}; {}; {}; completeness {}; veth sent {dev_skbs} skbs",
        hist_brief(soj),
        hist_brief(below),
        hist_brief(driver),
        doc.completeness_line()
    );
    assert_eq!(
        hist_u64(soj, "count"),
        0,
        "expected no qdisc_sojourn samples on a noqueue veth, got {}",
        hist_brief(soj)
    );
    assert!(
        bypass > 0,
        "expected completeness.qdisc_bypass > 0 (skbs reached the driver without a qdisc), got \
         {bypass}: {}",
        doc.completeness_line()
    );
    // Every data skb of the sender went dev_queue_xmit -> driver without a qdisc: the bypass
    // count holds at least those (it also holds the receiver's ACKs, which match the port too).
    // A few of the veth's packets are not the socket's (ARP, IPv6 ND): 90% of them. (Host, 8
    // runs: bypass was 1.4–1.9x the veth's 173–269 skbs, the ACKs included.)
    assert!(
        bypass as f64 >= 0.9 * dev_skbs as f64,
        "expected qdisc_bypass >= 90% of the {dev_skbs} skbs the sender veth sent, got {bypass}"
    );
    assert!(
        hist_u64(below, "count") > 0 || hist_u64(driver, "count") > 0,
        "expected below_tcp or driver_time samples (the skbs were seen below TCP), got {} and {}",
        hist_brief(below),
        hist_brief(driver)
    );
}

/// On a veth the skb is orphaned in the driver's xmit (handed to the peer namespace): the socket
/// gets its bytes back there, long before the receiver frees the skb. `driver_time` must end
/// there, not when the receiver reads: bytes held in the receiver's queue for `HOLD` must not
/// show up as time in the driver.
#[test]
fn veth_driver_time_ends_where_the_socket_gets_its_bytes_back() {
    const P: u16 = 22219;
    const HOLD: Duration = Duration::from_millis(1500);
    let pair = NetnsPair::new("giveb", 190);
    let (held, doc) = hist_traced(&["--json", "-P", &P.to_string(), "--tcp"], "total", || {
        // The receiver reads on another CPU than the one that allocated the skbs (the sender's:
        // a veth receives in the sender's context), so the kernel defers their free to that
        // CPU, where `consume_skb` shows it: late frees that sockmem sees.
        // Held open: a connection whose bytes all fit in the buffers (as in the VMs) must not
        // be closing by the time `ss` looks at it.
        let opts = TcpFlowOpts::bytes(2 * MIB)
            .reader_waits(HOLD)
            .on_cpus(0, 1)
            .hold_open();
        let flow = TcpFlow::start(&pair, P, "smtx-giveb", opts);
        // The kernel's view: what waits unread in the receiver's queue, the most `ss` showed
        // before the receiver began to read. Watched, not read once at HOLD / 2: in a loaded
        // TCG VM (6.12/fentry) one look at 750 ms found r=0.
        let mut held = 0;
        wait_until(HOLD, || {
            held = held.max(ss_skmem(&pair.rx_ns, P, flow.key.lport).r);
            held >= 64 * 1024 || flow.received() > 0
        });
        let result = flow.finish();
        assert_eq!(result.received, result.sent, "the receiver read everything");
        held
    });
    if skip_without(
        "veth_driver_time_ends_where_the_socket_gets_its_bytes_back",
        &doc,
        &["driver_xmit", "driver_done"],
    ) {
        return;
    }
    let driver = doc.total("driver_time");
    let below = doc.total("below_tcp");
    eprintln!(
        "held in the receiver's queue: {held} bytes; {}; {}",
        hist_brief(driver),
        hist_brief(below)
    );
    assert!(
        held >= 64 * 1024,
        "premise: expected bytes to wait in the receiver's queue (ss r) while it did not read, \
         ss says r={held}"
    );
    assert!(
        hist_u64(driver, "count") > 0,
        "expected driver_time samples, got {}",
        hist_brief(driver)
    );
    // The receiver held bytes for ~HOLD; the veth's own xmit takes microseconds (milliseconds
    // under TCG). A third of HOLD separates the two by far on any machine.
    let bound = HOLD.as_nanos() as u64 / 3;
    for h in [driver, below] {
        assert!(
            hist_u64(h, "max") < bound,
            "expected the transmit side to end at the veth (max < {bound} ns), not when the \
             receiver read {HOLD:?} later: {}",
            hist_brief(h)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Stalled receiver: sendmsg time is blocking time
// ---------------------------------------------------------------------------------------------

#[test]
fn stalled_receiver_sendmsg_time_is_blocking() {
    const P: u16 = 22301;
    const SNDTIMEO: Duration = Duration::from_millis(300);
    const LONG_NS: u64 = 250_000_000;
    // Writes that slept for buffer space take ~300 ms, the others well under 1 ms: anything at or
    // above 2^27 ns (134 ms, a bucket bound) is a blocked write, on both sides.
    const BLOCKED_NS: u64 = 1 << 27;
    let pair = NetnsPair::new("stall", 112);
    let ((st, records), doc) =
        hist_traced(&["--json", "-P", &P.to_string(), "--tcp"], "total", || {
            let st = BlockingStalledTcp::start(&pair, P, "smtx-stall", SNDTIMEO);
            // At least the 3 blocked writes the checks below need, however slowly the buffers
            // fill, and 2 s of writing in all (~6 blocked writes on the host).
            let t0 = Instant::now();
            st.wait_blocked(3, Duration::from_secs(20));
            thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
            let records = st.stop_writing(Duration::from_secs(5));
            (st, records)
        });
    st.finish();
    if skip_without(
        "stalled_receiver_sendmsg_time_is_blocking",
        &doc,
        &SENDMSG_HOOKS,
    ) {
        return;
    }

    let long: Vec<&WriteRecord> = records
        .iter()
        .filter(|r| r.took >= Duration::from_nanos(BLOCKED_NS))
        .collect();
    let eagain = records.iter().filter(|r| r.wrote.is_none()).count();
    let send = doc.total("sendmsg_time");
    let blocked = doc.total("send_blocked");
    eprintln!(
        "stalled: {} writes, {} took >= 134 ms ({eagain} EAGAIN), longest {:?}; {}; {}",
        records.len(),
        long.len(),
        records.iter().map(|r| r.took).max().unwrap_or_default(),
        hist_brief(send),
        hist_brief(blocked)
    );
    assert!(
        long.len() >= 3 && long.len() * 100 > records.len(),
        "premise: expected >= 3 writes, and more than 1% of them, blocked for ~{SNDTIMEO:?} in \
         ~2 s; the sender saw {} of {} writes take >= 134 ms",
        long.len(),
        records.len()
    );
    // sockmem was attached before the connection existed and stopped after the last write: it
    // saw every write of this socket, once.
    assert_eq!(
        hist_u64(send, "count"),
        records.len() as u64,
        "expected one sendmsg_time sample per write the sender made ({}), got {}",
        records.len(),
        hist_brief(send)
    );
    let sock_long: u64 = send["buckets"]
        .as_array()
        .expect("sendmsg_time to have a \"buckets\" array")
        .iter()
        .filter(|b| get_u64(b, "lo") >= BLOCKED_NS)
        .map(|b| get_u64(b, "count"))
        .sum();
    assert_eq!(
        sock_long,
        long.len() as u64,
        "expected as many sendmsg_time samples >= 134 ms as writes the sender timed >= 134 ms \
         ({}), got {sock_long}: {}",
        long.len(),
        hist_brief(send)
    );
    let max = hist_u64(send, "max");
    assert!(
        max >= LONG_NS,
        "expected sendmsg_time max >= 250 ms (writes sleep ~{SNDTIMEO:?}), got {}",
        hist_brief(send)
    );
    let longest_write = records.iter().map(|r| r.took).max().unwrap_or_default();
    assert!(
        Duration::from_nanos(max) <= longest_write,
        "expected sendmsg_time max ({max} ns) <= the longest write the sender timed \
         ({longest_write:?}): the kernel's part of a write cannot be longer than the write"
    );
    // p99: the blocked writes are more than 1% of all writes (premise above), so the 99th
    // percentile falls in their bucket [268 ms, 537 ms), capped at max.
    assert!(
        hist_u64(send, "p99") >= LONG_NS,
        "expected sendmsg_time p99 >= 250 ms ({} of {} writes blocked ~300 ms), got {}",
        long.len(),
        records.len(),
        hist_brief(send)
    );
    if doc.hook_attached("send_blocked") {
        let (b, s) = (hist_u64(blocked, "sum"), hist_u64(send, "sum"));
        assert!(
            b as f64 >= 0.8 * s as f64,
            "expected send_blocked sum >= 80% of sendmsg_time sum ({s} ns), got {b} ns: {}",
            hist_brief(blocked)
        );
    } else {
        eprintln!(
            "stalled: send_blocked not attached ({}); checked sendmsg_time only",
            doc.hook_reason("send_blocked")
        );
        assert_eq!(
            hist_u64(blocked, "count"),
            0,
            "expected no send_blocked samples with the hook unattached, got {}",
            hist_brief(blocked)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. --per socket
// ---------------------------------------------------------------------------------------------

/// How far apart, beyond one clock step, two sockmem runs attached to the same hooks may time
/// one skb's qdisc sojourn. Each run reads the clock in its own program at the enqueue and at
/// the dequeue; the programs of one hook run one after the other, so the two readings differ
/// by the time in between (the first run's program work) or, on a clock coarser than that, by
/// 0 or 1 clock step. Per sample the sojourns then differ by at most one step plus this slack.
///
/// Measured on the host (2 cores, kernel 6.18, tbf 100mbit, 160–210 samples a run) over 20
/// runs, 10 alone and 10 with both cores kept busy by two `yes > /dev/null`: the sums differed
/// by 1.5–3.0 µs per sample alone and 0.8–2.1 µs loaded (0.002–0.012% of the sums; mean
/// sojourn 15–43 ms); the split run's sum was the smaller in all 20 (it attaches first, so its
/// programs run first). 20 µs is ~7x the worst seen, and on the host the bound is 0.05–0.13% of
/// the sum, 8–20x tighter than the former 1%. In the emulated (TCG) VMs of the test matrix the
/// clock steps by ~4 ms: there a run on a loaded machine failed the former 1% at 1.1%, i.e. a
/// few hundred µs per sample at these sojourns, well within one clock step.
const SUM_SLACK_PER_SAMPLE: Duration = Duration::from_micros(20);

/// The same slack where the machine is emulated (qemu TCG, the VM matrix), where one program
/// run takes far longer (a kprobe is an emulated int3 trap). Measured in the matrix of
/// 2026-11-30 (2 VMs on 2 cores): 6.12/kprobe differed by 50 µs per sample with a 256 ns clock
/// step, the five other kernel × backend cells within 20 µs; 250 µs is 5x the worst seen, still
/// a few % of these sums.
const SUM_SLACK_PER_SAMPLE_EMULATED: Duration = Duration::from_micros(250);

fn socket_label(k: &SockKey) -> String {
    format!("{}:{} > {}:{} tcp", k.laddr, k.lport, k.raddr, k.rport)
}

/// A [`TcpFlow`] of `bytes` that keeps its socket open (no FIN) until finished, once the
/// receiver has read every byte.
fn held_transfer(pair: &NetnsPair, port: u16, sender_name: &str, bytes: u64) -> TcpFlow {
    let flow = TcpFlow::start(
        pair,
        port,
        sender_name,
        TcpFlowOpts::bytes(bytes).hold_open(),
    );
    flow.wait_received(bytes, Duration::from_secs(30));
    flow
}

#[test]
fn per_socket_splits_two_flows() {
    const P1: u16 = 22401;
    const P2: u16 = 22402;
    let pair = NetnsPair::new("persk", 113);
    pair.set_tbf("100mbit", "256kb", "200ms");
    let rx = pair.rx_addr.to_string();
    // Both runs are attached before the first packet and stopped after the last one is through
    // the qdisc (the flows hold their sockets open: no FIN after the stop), so they see exactly
    // the same enqueues and dequeues: their qdisc_sojourn counts must be equal.
    let dev_before = pair.tx_dev_stats();
    let ((f1, f2), outs) = traced_by(
        &[
            &hist_args(&["--json", "--per", "socket", "-a", &rx]),
            &hist_args(&["--json", "-a", &rx]),
        ],
        || {
            let f1 = held_transfer(&pair, P1, "smtx-persk1", 4 * MIB);
            let f2 = held_transfer(&pair, P2, "smtx-persk2", 4 * MIB);
            pair.wait_tx_qdisc_empty();
            (f1, f2)
        },
    );
    let (split, whole) = (hist_doc(&outs[0], "socket"), hist_doc(&outs[1], "total"));
    let dev_skbs = pair.tx_dev_stats().1 - dev_before.1;
    let (k1, k2) = (f1.key.clone(), f2.key.clone());
    f1.finish();
    f2.finish();
    if skip_without("per_socket_splits_two_flows", &split, &QDISC_HOOKS) {
        return;
    }

    let keyed = split.keyed("qdisc_sojourn");
    for h in &keyed {
        eprintln!("per socket: {}", hist_brief(h));
    }
    let mut keys = split.keys("qdisc_sojourn");
    keys.sort();
    let mut expected = vec![socket_label(&k1), socket_label(&k2)];
    expected.sort();
    assert_eq!(
        keys,
        expected,
        "expected exactly the two sender sockets as qdisc_sojourn keys, got {} keys",
        keys.len()
    );
    for h in &keyed {
        assert!(
            hist_u64(h, "count") > 0,
            "expected samples for each flow, got {}",
            hist_brief(h)
        );
    }
    let sum: u64 = keyed.iter().map(|h| hist_u64(h, "count")).sum();
    let split_total = hist_u64(split.total("qdisc_sojourn"), "count");
    let whole_total = hist_u64(whole.total("qdisc_sojourn"), "count");
    eprintln!(
        "per socket: keyed sum {sum}, total {split_total}; un-split run total {whole_total}; \
         the sender veth sent {dev_skbs} skbs"
    );
    assert_eq!(
        sum, split_total,
        "expected the per-socket qdisc_sojourn counts to add up to the run's total {split_total}, \
         got {sum}"
    );
    assert_eq!(
        split_total, whole_total,
        "expected the --per socket run and the simultaneous un-split run to count the same \
         qdisc_sojourn samples (same skbs, same window): {split_total} vs {whole_total}"
    );
    // Every skb of the two sockets that left the qdisc went out on the veth, which also sent
    // a few packets of no socket (ARP, IPv6 neighbour discovery): the count is the veth's, up
    // to those (5–9 of them in the 20 host runs measured for SUM_SLACK_PER_SAMPLE).
    // Only the tracepoint sees exactly one dequeue per skb; `sch_direct_xmit` (fentry, kprobe)
    // also sees requeues and bypasses, so its count is not the veth's.
    let dequeue_backend = split.hook("qdisc_dequeue")["backend"]
        .as_str()
        .unwrap_or("");
    if dequeue_backend != "tracepoint" {
        eprintln!(
            "per socket: qdisc_dequeue via {dequeue_backend}: count not compared with the veth's"
        );
    }
    assert!(
        dequeue_backend != "tracepoint"
            || (split_total <= dev_skbs && split_total + 20 >= dev_skbs),
        "expected the qdisc_sojourn count {split_total} to equal the {dev_skbs} skbs the sender \
         veth sent during the run, less at most 20 packets of no socket"
    );
    // The sums agree too, sample by sample, up to how far apart the two runs' programs read
    // the clock at the enqueue and at the dequeue of one skb (see SUM_SLACK_PER_SAMPLE).
    let (s1, s2) = (
        hist_u64(split.total("qdisc_sojourn"), "sum"),
        hist_u64(whole.total("qdisc_sojourn"), "sum"),
    );
    let step = clock_step();
    let slack = if emulated() {
        SUM_SLACK_PER_SAMPLE_EMULATED
    } else {
        SUM_SLACK_PER_SAMPLE
    };
    let per_sample = step + slack;
    let allowed = split_total * per_sample.as_nanos() as u64;
    let diff = s1.abs_diff(s2);
    eprintln!(
        "per socket: qdisc_sojourn sums {s1} vs {s2} ns over {split_total} samples: differ by \
         {diff} ns = {:.4}% = {:.0} ns per sample; allowed {allowed} ns ({per_sample:?} per \
         sample: clock step {step:?} + {slack:?})",
        diff as f64 / s1.max(s2).max(1) as f64 * 100.0,
        diff as f64 / split_total.max(1) as f64
    );
    assert!(
        diff <= allowed,
        "expected the two runs' qdisc_sojourn sums to differ by at most {per_sample:?} per sample \
         ({allowed} ns over {split_total} samples), got {s1} vs {s2} ns: {diff} ns apart"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. --per pid, --per iface
// ---------------------------------------------------------------------------------------------

#[test]
fn per_pid_and_iface_labels() {
    const P: u16 = 22501;
    let pair = NetnsPair::new("perpi", 114);
    pair.set_tbf("100mbit", "256kb", "200ms");
    let p = P.to_string();
    let (flow, outs) = traced_by(
        &[
            &hist_args(&["--json", "--per", "pid", "-P", &p]),
            &hist_args(&["--json", "--per", "iface", "-P", &p]),
        ],
        || {
            let flow = held_transfer(&pair, P, "smtx-perpid", 4 * MIB);
            pair.wait_tx_qdisc_empty();
            flow
        },
    );
    let (by_pid, by_iface) = (hist_doc(&outs[0], "pid"), hist_doc(&outs[1], "iface"));
    let sender = flow.sender.clone();
    flow.finish();
    let needed: Vec<&str> = QDISC_HOOKS.iter().chain(&SENDMSG_HOOKS).copied().collect();
    if skip_without("per_pid_and_iface_labels", &by_pid, &needed) {
        return;
    }

    // --per pid: "<tgid> <comm>" of the thread that wrote.
    let label = format!("{} {}", sender.tgid, sender.comm);
    for kind in ["qdisc_sojourn", "sendmsg_time"] {
        let keys = by_pid.keys(kind);
        eprintln!("per pid {kind}: keys {keys:?}");
        let h = by_pid.keyed_one(kind, &label).unwrap_or_else(|| {
            panic!("expected a {kind} key {label:?} (sender thread's tgid and comm), got {keys:?}")
        });
        let total = hist_u64(by_pid.total(kind), "count");
        // The handshake's last ACK leaves in softirq before the first sendmsg: nobody to name.
        let unknown = by_pid
            .keyed_one(kind, UNKNOWN_SENDER)
            .map_or(0, |u| hist_u64(u, "count"));
        assert!(
            total > 0 && hist_u64(h, "count") + unknown == total && unknown <= 2,
            "expected every {kind} sample ({total}) under the sender {label:?} (only it sent on \
             port {P}) but at most 2 handshake skbs under {UNKNOWN_SENDER:?}; got {} and \
             {unknown} unknown",
            hist_brief(h)
        );
    }
    for h in by_pid.histograms() {
        let key = get_str(h, "key");
        let ok = key == UNKNOWN_SENDER
            || key
                .split_once(' ')
                .is_some_and(|(pid, comm)| pid.parse::<u32>().is_ok() && !comm.is_empty());
        assert!(
            ok,
            "expected every --per pid key to be \"<tgid> <comm>\" or {UNKNOWN_SENDER:?}, got {key:?}"
        );
    }

    // --per iface: qdisc samples on the sender veth, socket-level ones under "(no interface)".
    let keys = by_iface.keys("qdisc_sojourn");
    eprintln!(
        "per iface: qdisc_sojourn keys {keys:?}, sendmsg_time keys {:?}, driver_time keys {:?}",
        by_iface.keys("sendmsg_time"),
        by_iface.keys("driver_time")
    );
    assert_eq!(
        keys,
        vec![pair.tx_if.clone()],
        "expected the sender veth {:?} as the only qdisc_sojourn key",
        pair.tx_if
    );
    let h = by_iface
        .keyed_one("qdisc_sojourn", &pair.tx_if)
        .expect("a qdisc_sojourn histogram keyed by the sender veth (its key was checked above)");
    assert_eq!(
        hist_u64(h, "count"),
        hist_u64(by_iface.total("qdisc_sojourn"), "count"),
        "expected all qdisc_sojourn samples under {:?}",
        pair.tx_if
    );
    assert!(
        hist_u64(h, "count") > 0,
        "expected samples: {}",
        hist_brief(h)
    );
    assert_eq!(
        by_iface.keys("sendmsg_time"),
        vec!["(no interface)".to_string()],
        "expected sendmsg_time (a socket-level measure) only under \"(no interface)\""
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Text output, -o
// ---------------------------------------------------------------------------------------------

/// The `@kind` names of a text report, in order, with whether each said "no samples".
fn text_blocks(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter(|l| l.starts_with('@'))
        .map(|l| {
            let name: String = l[1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (name, l.ends_with(": no samples"))
        })
        .collect()
}

/// The `count N` of block `@kind` in a text report.
fn text_count(text: &str, kind: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&format!("@{kind} ")) || l.starts_with(&format!("@{kind}[")) {
            let next = lines.next()?;
            return next
                .strip_prefix("count ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok();
        }
    }
    None
}

#[test]
fn hist_text_output() {
    const P: u16 = 22601;
    let pair = NetnsPair::new("text", 115);
    pair.set_tbf("100mbit", "256kb", "200ms");
    let p = P.to_string();
    let file = tmp_path("hist.txt");
    let file_s = file
        .to_str()
        .expect("the temporary path to be UTF-8")
        .to_string();
    let (flow, outs) = traced_by(
        &[
            &hist_args(&["-P", &p]),
            &hist_args(&["-P", &p, "-o", &file_s]),
        ],
        || {
            let flow = held_transfer(&pair, P, "smtx-text", 4 * MIB);
            pair.wait_tx_qdisc_empty();
            flow
        },
    );
    flow.finish();
    let [a, b]: [CmdOutput; 2] = outs.try_into().expect("two tracers, two outputs");
    let text = a.stdout;
    let from_file = fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("expected the -o file {file_s} once sockmem exited: {e}"));
    let _ = fs::remove_file(&file);
    eprintln!("text output:\n{text}");

    let header = text.lines().next().unwrap_or("");
    assert!(
        header.starts_with("sockmem hist: "),
        "expected a first line \"sockmem hist: ...\", got {header:?}"
    );
    // The header lists the attached hooks ("qdisc_enqueue via tracepoint, ...").
    if let Some(h) = QDISC_HOOKS
        .iter()
        .find(|h| !header.contains(&format!("{h} via ")))
    {
        eprintln!(
            "SKIP hist_text_output: sockmem could not attach hook {h} on this kernel (its \
             stderr says why):\n{}",
            a.stderr
        );
        return;
    }
    // The qdisc_sojourn block: title, count line, rows "[lo, hi)  n |@@@ |".
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("@qdisc_sojourn ("))
        .unwrap_or_else(|| panic!("expected a \"@qdisc_sojourn (unit)\" block, got:\n{text}"));
    assert!(
        lines.get(at + 1).is_some_and(|l| l.starts_with("count ")
            && ["mean ", "p50 ", "p90 ", "p99 ", "max "]
                .iter()
                .all(|w| l.contains(w))),
        "expected a \"count .. mean .. p50 .. p90 .. p99 .. max ..\" line after the title, got {:?}",
        lines.get(at + 1)
    );
    let rows: Vec<&&str> = lines[at + 2..]
        .iter()
        .take_while(|l| l.starts_with('['))
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.contains(") ") && r.ends_with('|')),
        "expected \"[lo, hi)  count |...|\" rows under @qdisc_sojourn, got {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.contains("|@")),
        "expected at least one row with a bar \"|@\", got {rows:?}"
    );
    // A byte histogram's bounds are sizes as every human-readable output shows them (IEC:
    // `[64KiB, 128KiB)`), each row twice the one before.
    let at = lines
        .iter()
        .position(|l| l.starts_with("@wmem_queued ("))
        .unwrap_or_else(|| panic!("expected a \"@wmem_queued (bytes)\" block, got:\n{text}"));
    let bounds: Vec<(f64, f64)> = lines[at + 2..]
        .iter()
        .take_while(|l| l.starts_with('['))
        .map(|l| {
            let (lo, hi) = l[1..].split_once(", ").expect("a row `[lo, hi)`");
            let size = |s: &str| {
                parse_human_bytes(s).unwrap_or_else(|| panic!("expected B/KiB/MiB in {l:?}"))
            };
            (size(lo).0, size(hi).0)
        })
        .collect();
    assert!(
        !bounds.is_empty() && bounds.iter().all(|&(lo, hi)| hi == (2.0 * lo).max(1.0)),
        "expected @wmem_queued rows [lo, 2 lo) in B/KiB/MiB, got {bounds:?}:\n{text}"
    );
    let blocks = text_blocks(&text);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names, HIST_KINDS,
        "expected one block per kind, in order (no --per: totals only)"
    );
    let send_blocked_attached = header.contains("send_blocked via");
    if !send_blocked_attached {
        assert!(
            text.lines().any(|l| l == "@send_blocked: no samples"),
            "expected \"@send_blocked: no samples\" with send_blocked not attached (header: \
             {header:?})"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("sendmsg: ")),
        "expected the completeness lines at the end, got:\n{}",
        tail(&text, 600)
    );

    // -o: nothing on stdout, the same report in the file, complete at exit.
    assert!(
        b.stdout.trim().is_empty(),
        "expected nothing on stdout with -o, got {:?}",
        tail(&b.stdout, 500)
    );
    assert!(
        from_file.starts_with("sockmem hist: "),
        "expected the -o file to start with the header, got {:?}",
        from_file.chars().take(200).collect::<String>()
    );
    assert_eq!(
        text_blocks(&from_file),
        blocks,
        "expected the same blocks (kinds, with/without samples) in the -o file as on stdout"
    );
    let last = from_file.lines().last().unwrap_or("");
    assert!(
        from_file.ends_with('\n') && last.starts_with("sendmsg: "),
        "expected the -o file to end with the completeness line \"sendmsg: ...\\n\" (complete at \
         exit), it ends {:?}",
        tail(&from_file, 300)
    );
    let (c1, c2) = (
        text_count(&text, "qdisc_sojourn"),
        text_count(&from_file, "qdisc_sojourn"),
    );
    assert!(
        c1.is_some() && c1 == c2,
        "expected the same qdisc_sojourn count on stdout and in the file (same skbs), got {c1:?} \
         and {c2:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn hist_bad_input() {
    let cases: [&[&str]; 3] = [
        &["hist", "--per", "thread"],
        &["hist", "--duration", "0"],
        &["hist", "--port", "0"],
    ];
    for args in cases {
        let out = run_sockmem(args, CMD_TIMEOUT);
        out.assert_usage_error(args);
        assert!(
            out.stdout.trim().is_empty(),
            "expected no histograms on stdout for {args:?}, got {:?}",
            tail(&out.stdout, 300)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Completeness and window
// ---------------------------------------------------------------------------------------------

/// A filter that matches nothing must give empty histograms and a completeness report about
/// nothing: its counters describe the histograms printed, not the rest of the machine.
#[test]
fn completeness_counts_only_filtered_traffic() {
    const P_TRAFFIC: u16 = 22801;
    const P_FILTER: u16 = 22802;
    let pair = NetnsPair::new("compl", 116);
    pair.set_tbf("100mbit", "256kb", "200ms");
    let total = 4 * MIB;
    let (_, doc) = hist_traced(&["--json", "-P", &P_FILTER.to_string()], "total", || {
        tcp_transfer(&pair, P_TRAFFIC, "smtx-compl", total)
    });
    eprintln!("filtered out: completeness {}", doc.completeness_line());
    for kind in HIST_KINDS {
        let h = doc.total(kind);
        assert_eq!(
            hist_u64(h, "count"),
            0,
            "expected no {kind} samples with -P {P_FILTER} (traffic only on {P_TRAFFIC}), got {}",
            hist_brief(h)
        );
    }
    let fields = [
        "skbs_tracked",
        "skbs_freed",
        "skbs_in_flight",
        "skbs_lost",
        "qdisc_bypass",
        "qdisc_unmatched",
        "sends_started",
        "sends_matched",
        "sends_unmatched",
        "sends_in_flight",
        "hist_full",
        "lists_cut",
    ];
    let nonzero: Vec<String> = fields
        .iter()
        .filter(|f| doc.completeness(f) != 0)
        .map(|f| format!("{f}={}", doc.completeness(f)))
        .collect();
    assert!(
        nonzero.is_empty(),
        "expected every completeness counter 0 with -P {P_FILTER} matching no traffic ({} \
         bytes went through the tbf on port {P_TRAFFIC}), got {}",
        total,
        nonzero.join(", ")
    );
}

/// The histograms cover the window from the ready file to the stop, not the time the programs
/// took to attach: no more samples than skbs the veth sent in a bracket around that window.
///
/// The one test whose traffic starts before sockmem is ready: traffic while the programs load
/// is what it checks. The flow must therefore outlast the longest load (a VM matrix run on a
/// loaded machine took 65 s, and the flow's former 60 s bound ended it before the ready file
/// appeared): it writes until stopped, for up to READY_TIMEOUT plus a minute, and the test
/// checks that it was still writing through sockmem's whole window.
#[test]
fn samples_start_at_ready() {
    const P: u16 = 22901;
    let pair = NetnsPair::new("window", 117);
    pair.set_tbf("400mbit", "256kb", "200ms");
    let flow = TcpFlow::start(
        &pair,
        P,
        "smtx-window",
        TcpFlowOpts::until_stopped().for_at_most(READY_TIMEOUT + Duration::from_secs(60)),
    );
    thread::sleep(Duration::from_millis(500));
    let sampler = QdiscSampler::start(&pair.tx_ns, &pair.tx_if, Duration::from_millis(5));
    let spawned = Instant::now();
    let tracer = start_hist(&["--json", "-P", &P.to_string(), "--tcp"]);
    let (not_yet_ready, seen_ready) = tracer.ready_between();
    let sent_at_ready = flow.sent();
    thread::sleep(Duration::from_secs(2));
    let sent_before_stop = flow.sent();
    let doc = stop_hist_json(tracer, "total");
    let exited = Instant::now();
    let samples = sampler.finish();
    flow.finish();
    assert!(
        sent_before_stop > sent_at_ready,
        "premise: expected the flow to keep writing through sockmem's window (loading took \
         {:.1} s), it wrote {sent_at_ready} bytes by the ready file and {sent_before_stop} by \
         the stop",
        (seen_ready - spawned).as_secs_f64()
    );
    if skip_without("samples_start_at_ready", &doc, &QDISC_HOOKS) {
        return;
    }

    // The veth's skbs from a reading surely before the ready file (20 ms before the last poll
    // that did not find it) to a reading after the exit: every skb sockmem may count within its
    // window left in between.
    let before = samples
        .iter()
        .rev()
        .find(|s| s.at + Duration::from_millis(20) <= not_yet_ready)
        .expect("a qdisc reading 20 ms before the last poll that did not find the ready file");
    let after = samples
        .iter()
        .find(|s| s.at >= exited)
        .expect("a qdisc reading after sockmem exited");
    let at_spawn = samples
        .iter()
        .rev()
        .find(|s| s.at <= spawned)
        .expect("a qdisc reading before sockmem started");
    let window_skbs = after.dev_tx_packets - before.dev_tx_packets;
    let window_s = (after.at - before.at).as_secs_f64();
    let lambda = window_skbs as f64 / window_s;
    let since_spawn = after.dev_tx_packets - at_spawn.dev_tx_packets;
    let soj = doc.total("qdisc_sojourn");
    let count = hist_u64(soj, "count");
    let duration_s = hist_f64(&doc.doc, "duration_s");
    let rate = count as f64 / duration_s;
    eprintln!(
        "window: qdisc_sojourn count {count} in duration_s {duration_s:.3} = {rate:.0} skbs/s; \
         veth sent {window_skbs} skbs in {window_s:.3} s = {lambda:.0} skbs/s (from {:.0} ms \
         before the ready file was seen to after exit); {since_spawn} since sockmem was started \
         {:.3} s before ready; sockmem's count covers {:.3} s at the veth's rate",
        (seen_ready - before.at).as_secs_f64() * 1e3,
        (seen_ready - spawned).as_secs_f64(),
        count as f64 / lambda
    );
    assert!(
        count > 0,
        "expected qdisc_sojourn samples, got {}",
        hist_brief(soj)
    );
    assert!(
        count <= since_spawn,
        "expected at most the {since_spawn} skbs the veth sent since sockmem was started, got \
         {count}"
    );
    // The programs count from just before the ready file to the exit: within the readings'
    // bracket. (Not a rate: the flow is slower while the programs load, notably in VMs.)
    assert!(
        count <= window_skbs,
        "expected at most the {window_skbs} skbs the veth sent from {:.0} ms before the ready \
         file was seen to after sockmem exited, got {count}: its histograms hold samples from \
         before the ready file (from programs attached before it)",
        (seen_ready - before.at).as_secs_f64() * 1e3
    );
}

/// Samples keyed by interface may only name interfaces the filtered socket's skbs crossed. A
/// second namespace pair carries traffic the filter excludes, after the filtered flow is done.
#[test]
fn skb_samples_stay_with_their_socket() {
    const P: u16 = 22951;
    const P_OTHER: u16 = 22952;
    let mine = NetnsPair::new("own", 118);
    // The harness's tbf (burst 32kb) splits every TSO skb larger than 32 KiB into segments and
    // frees the original with consume_skb: the other flow's skbs are freed where sockmem sees it.
    let other = NetnsPair::with_tbf("other", 119);
    // Both flows at once, then the other one alone: skbs of the filtered flow that are freed
    // where no hook sees it (most, on a veth) leave their tracking entries behind, and the other
    // flow's skbs reuse those addresses.
    let (_, doc) = hist_traced(
        &["--json", "--per", "iface", "-P", &P.to_string()],
        "iface",
        || {
            let o = TcpFlow::start(&other, P_OTHER, "smtx-other", TcpFlowOpts::bytes(48 * MIB));
            tcp_transfer(&mine, P, "smtx-own", 8 * MIB);
            o.finish_transfer()
        },
    );
    eprintln!("own vs other: completeness {}", doc.completeness_line());
    let allowed = [
        mine.tx_if.clone(),
        mine.rx_if.clone(),
        "(no interface)".to_string(),
    ];
    let mut wrong = Vec::new();
    for h in doc.histograms() {
        eprintln!("own vs other: {}", hist_brief(h));
        if !allowed.iter().any(|a| a == get_str(h, "key")) {
            wrong.push(hist_brief(h));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected -P {P} histograms keyed only by the interfaces its skbs crossed {allowed:?}; \
         got samples on other interfaces (those of the flow on port {P_OTHER}, which the filter \
         excludes):\n{}",
        wrong.join("\n")
    );
}

/// The numbers in a `skbs: ...` completeness line, in order.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// On a veth most followed skbs end at the peer (their socket gets the bytes back there) and are
/// then freed where no hook sees it (merged into another skb on receive): the completeness lines
/// must not call those lost. They say how many skbs were timed, against the veth's own count of
/// packets sent (the witness), and whether any followed skb can lack a sample.
#[test]
fn completeness_says_whether_samples_are_missing() {
    const P: u16 = 22231;
    let pair = NetnsPair::new("compl", 121);
    let before = pair.tx_dev_stats();
    let (_, out) = traced(&hist_args(&["-P", &P.to_string(), "--tcp"]), || {
        tcp_transfer(&pair, P, "smtx-compl", 8 * MIB)
    });
    let dev_skbs = pair.tx_dev_stats().1 - before.1;
    out.assert_success();
    let text = out.stdout;
    let header = text.lines().next().unwrap_or("");
    if !header.contains("driver_xmit via") || !header.contains("dev_queue_xmit via") {
        eprintln!("SKIP completeness_says_whether_samples_are_missing: driver hooks missing");
        return;
    }
    let skbs: Vec<&str> = text.lines().filter(|l| l.starts_with("skbs: ")).collect();
    assert_eq!(
        skbs.len(),
        2,
        "expected two `skbs:` lines:\n{}",
        tail(&text, 800)
    );
    eprintln!("veth sent {dev_skbs} skbs; {}\n{}", skbs[0], skbs[1]);
    assert!(
        !text.contains(" lost "),
        "expected no skbs called lost (their samples are in):\n{}",
        tail(&text, 800)
    );
    // "skbs: T followed below the socket, F of them still in the map at the end; timed ...: D
    // driver_time and B below_tcp samples (...)"
    let (t, f, d, b) = match numbers(skbs[0])[..] {
        [t, f, d, b, ..] => (t, f, d, b),
        _ => panic!("expected T, F, D and B in {:?}", skbs[0]),
    };
    // The totals agree with the histograms' own counts.
    assert_eq!(text_count(&text, "driver_time"), Some(d), "{}", skbs[0]);
    assert_eq!(text_count(&text, "below_tcp"), Some(b), "{}", skbs[0]);
    // Every packet the veth sent was an skb that reached its driver and ended at the peer: a
    // few of them are not the socket's (ARP, IPv6 ND): 90% of them.
    assert!(
        d as f64 >= 0.9 * dev_skbs as f64,
        "expected driver_time samples for >= 90% of the {dev_skbs} packets the veth sent: {}",
        skbs[0]
    );
    let untimed = t.saturating_sub(d.max(b));
    assert_eq!(
        skbs[0].contains("(every one followed)"),
        untimed == 0,
        "expected `every one followed` exactly when no followed skb can lack a sample: {}",
        skbs[0]
    );
    assert!(
        untimed as f64 <= 0.1 * t as f64,
        "expected nearly every followed skb timed on a plain veth: {}",
        skbs[0]
    );
    // "skbs: S seen freed, N not (...)": with those in flight, every one followed.
    let (s, n) = match numbers(skbs[1])[..] {
        [s, n, ..] => (s, n),
        _ => panic!("expected S and N in {:?}", skbs[1]),
    };
    assert!(s + n + f >= t, "{}\n{}", skbs[0], skbs[1]);
}
