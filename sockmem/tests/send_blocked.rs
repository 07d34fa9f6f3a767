//! `send_blocked`: the time a sender sleeps inside a send system call, TCP and UDP, against the
//! sender's own clock. A `send_blocked` event (`duration_ns` = time asleep, `value` = sleeps)
//! comes with the `sendmsg_ret` of the same call (`duration_ns` = the whole call); `hist`'s
//! `send_blocked` histogram counts the same calls.
//!
//! Root, BTF, real traffic between two network namespaces (198.18.174-176.0/24, ports 240xx).

mod support;

use serde_json::Value;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::*;

/// `EAGAIN` as `sendmsg` returns it: a blocking send whose `SO_SNDTIMEO` expired.
const EAGAIN_RET: i64 = -(libc::EAGAIN as i64);

/// The header's entry of the first of `send_blocked` and `sendmsg_ret` (which reports it) that
/// is not attached, if one is not.
fn not_attached(trace: &JsonTrace) -> Option<String> {
    ["send_blocked", "sendmsg_ret"]
        .into_iter()
        .find(|h| !trace.is_attached(h))
        .map(|hook| {
            trace.header["hooks"]
                .as_array()
                .and_then(|hs| hs.iter().find(|h| h["hook"] == hook))
                .map(|h| h.to_string())
                .unwrap_or_else(|| format!("no {hook:?} entry in the header's hooks"))
        })
}

/// One send call as sockmem saw it: its `sendmsg_ret` and the `send_blocked` just before it
/// (same socket, after the previous call's return), if any.
struct SeenCall<'a> {
    ret: &'a Value,
    blocked: Option<&'a Value>,
}

/// The socket's calls in order, from its events (in output order).
fn seen_calls<'a>(evs: &[&'a Value]) -> Vec<SeenCall<'a>> {
    let mut calls = Vec::new();
    let mut pending: Option<&Value> = None;
    for e in evs {
        match hook(e) {
            "send_blocked" => {
                assert!(
                    pending.is_none(),
                    "expected at most one send_blocked per call, before its sendmsg_ret; got two \
                     in a row: {} then {e}",
                    pending.map(|p| p.to_string()).unwrap_or_default()
                );
                pending = Some(e);
            }
            "sendmsg_ret" => calls.push(SeenCall {
                ret: e,
                blocked: pending.take(),
            }),
            _ => {}
        }
    }
    assert!(
        pending.is_none(),
        "expected every send_blocked followed by its sendmsg_ret, the last one is not: {}",
        pending.map(|p| p.to_string()).unwrap_or_default()
    );
    calls
}

fn ns(d: Duration) -> i64 {
    d.as_nanos() as i64
}

fn ms(n: i64) -> String {
    format!("{:.3} ms", n as f64 / 1e6)
}

/// One send call as the sender measured it: its duration by the sender's clock and the
/// thread's scheduler accounting over it.
#[derive(Clone, Copy, Debug)]
struct Measured {
    took: Duration,
    sched: SchedStat,
}

/// How far past its upper bound a call's `send_blocked` may be: the thread's CPU time and the
/// time sockmem counts as asleep overlap at the edges of each sleep (the scheduler's bookkeeping
/// brackets the tracepoint), and the clock steps (tens of ns on a host, ms in an emulated VM).
/// Measured over 60 host runs of both tests (about 7,000 calls) while a VM test matrix kept
/// both cores busy: time asleep exceeded `took - cpu` by at most 0.17 ms (0.08 ms in the last
/// 20 runs), except in the calls of the over-count described in the report (1.2 ms). 1 ms is 6x
/// the worst seen and under a tenth of the shortest sleep these tests cause (~11 ms).
const SLACK: Duration = Duration::from_millis(1);

/// The least share of a call's time off the CPU and not runnable (`took - cpu - run_delay`) that
/// `send_blocked` must count as asleep. The rest can be stolen time: this host is a VM, and
/// while the hypervisor runs another guest the thread is neither running, runnable nor asleep
/// in its own kernel's accounting (`CONFIG_PARAVIRT_TIME_ACCOUNTING` keeps steal out of its CPU
/// time; steal is only counted per CPU, in 10 ms ticks). Measured over the same 60 runs: time
/// asleep was at least 95% of it in all but 3 calls, the lowest 79% (34.4 of 43.7 ms: 9.3 ms
/// stolen). Half is 2.4x the largest shortfall seen; a send_blocked that missed a whole sleep
/// fails anyway (the sleeps check).
const ASLEEP_SHARE: f64 = 0.5;

/// A CPU-time clock this coarse (see `cpu_clock_step`) bounds calls by their context switches
/// and duration instead of their CPU time.
const COARSE_CPU_CLOCK: Duration = Duration::from_millis(1);

/// What one call's check found, for the totals.
#[derive(Default)]
struct CallBounds {
    asleep: i64,
    lower: i64,
    upper: i64,
    /// How far the time asleep went past the call's time off the CPU (`took - cpu`), and how
    /// far it fell short of that less the time runnable (neither with slack or share).
    over: i64,
    under: i64,
    /// Time asleep as a share of the time off the CPU and not runnable, for calls that slept.
    share: Option<f64>,
}

/// `assert!` that hands the failure back (as `Err`) instead of panicking.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// How many calls of one run may fail their bounds (all are printed). Measured over 60 runs
/// (~7,000 calls) on the host: about 1 call in 1,500 shows no sleep although the sender slept
/// (or over-counts by ~1 ms), in ~10% of runs, TCP and UDP alike; its cause is not found yet
/// (see the notes on issue #9). One a run keeps every other call held to the bounds.
const MAX_ODD_CALLS: usize = 1;

fn assert_odd_calls(what: &str, odd: &[String]) {
    for why in odd {
        eprintln!("{what}: odd call: {why}");
    }
    assert!(
        odd.len() <= MAX_ODD_CALLS,
        "{what}: expected at most {MAX_ODD_CALLS} call outside its bounds, got {}:\n{}",
        odd.len(),
        odd.join("\n")
    );
}

/// Holds one call's `send_blocked` (and `sendmsg_ret`) against the sender's measurement of it.
///
/// sockmem counts a sleep from the switch off the CPU to the switch back on: time asleep plus
/// the wait for a CPU after the wakeup. So the time asleep is at most the call's time off the
/// CPU (`took - cpu`: asleep, or runnable and waiting; [`SLACK`]) and at least that less all
/// the time runnable (`run_delay`: wakeup waits and preemptions), less what the hypervisor stole
/// ([`ASLEEP_SHARE`]). Its `value` (sleeps) is the kernel's count of the thread's voluntary
/// context switches in the call: a call in which the thread slept has a `send_blocked`, one in
/// which it did not has none. `sendmsg_ret`'s whole-call time is at least the time asleep and
/// at most the sender's measurement.
fn check_call(
    i: usize,
    m: &Measured,
    seen: &SeenCall,
    step: Duration,
    cpu_step: Duration,
) -> Result<CallBounds, String> {
    let edge = ns(SLACK) + ns(step);
    let took = ns(m.took);
    let off_cpu = took - ns(m.sched.cpu);
    // Off the CPU and not runnable: asleep (steal aside).
    let not_runnable = m.sched.run_delay.map(|r| off_cpu - ns(r));
    let (lower, upper) = if cpu_step >= COARSE_CPU_CLOCK {
        // CPU and runnable times in ticks (an emulated VM: a 0.5 ms call showed 6.5 ms on a
        // CPU): only the context switches are exact. A call with no voluntary switch did not
        // sleep; one that did slept at most its own duration.
        match m.sched.voluntary {
            0 => (0, 0),
            _ => (i64::MIN / 2, took + edge),
        }
    } else {
        let lower = match not_runnable {
            Some(n) => (n as f64 * ASLEEP_SHARE) as i64 - edge,
            None => i64::MIN / 2,
        };
        // The scheduler's accounting and sockmem's timestamps bracket each switch: the time
        // between them counts as CPU time and as asleep. Microseconds on a host; under
        // emulation the switch path (every loaded set's programs) is far slower and the host
        // may pause the vCPU inside it: a 6.12/fentry VM (2026-12-01) had two UDP calls of a
        // run asleep 1.4 ms past `took - cpu` (2.2 ms on a CPU, 29.4 ms asleep, in 30.2 ms).
        // There the call's own duration bounds it, as with a coarse CPU clock.
        let upper = if emulated() { took } else { off_cpu };
        (lower, upper + edge)
    };
    let whole = get_u64(seen.ret, "duration_ns") as i64;
    check!(
        whole <= took + ns(step),
        "call {i}: expected sendmsg_ret's duration ({}) at most the sender's own measurement of \
         the call ({}) plus a clock step ({step:?}): {}",
        ms(whole),
        ms(took),
        seen.ret
    );
    let (asleep, sleeps) = match seen.blocked {
        Some(b) => (get_u64(b, "duration_ns") as i64, get_u64(b, "value")),
        None => (0, 0),
    };
    let shown = seen
        .blocked
        .map(|b| b.to_string())
        .unwrap_or_else(|| format!("no send_blocked before {}", seen.ret));
    check!(
        lower <= asleep && asleep <= upper,
        "call {i}: the sender measured {} in the call, {} of it on a CPU and {} runnable ({} and \
         {} voluntary/involuntary context switches): expected send_blocked's time asleep between \
         {} and {}, got {}: {shown}",
        ms(took),
        ms(ns(m.sched.cpu)),
        m.sched
            .run_delay
            .map(|r| ms(ns(r)))
            .unwrap_or_else(|| "? (no schedstat)".into()),
        m.sched.voluntary,
        m.sched.involuntary,
        ms(lower.max(0)),
        ms(upper),
        ms(asleep)
    );
    check!(
        sleeps == m.sched.voluntary,
        "call {i}: expected send_blocked's sleeps to be the kernel's count of the sender's \
         voluntary context switches in the call ({}), got {sleeps}: {shown}",
        m.sched.voluntary
    );
    check!(
        whole >= asleep,
        "call {i}: expected sendmsg_ret's whole call ({}) to last at least its time asleep ({}): \
         {} / {shown}",
        ms(whole),
        ms(asleep),
        seen.ret
    );
    Ok(CallBounds {
        asleep,
        lower,
        upper,
        over: asleep - off_cpu,
        under: not_runnable.map(|n| n - asleep).unwrap_or(0),
        share: not_runnable
            .filter(|&n| sleeps > 0 && n > 0)
            .map(|n| asleep as f64 / n as f64),
    })
}

/// A TCP sender with `SO_SNDTIMEO` 200 ms writes into a receiver that never reads: once the
/// buffers are full each write sleeps ~200 ms and returns EAGAIN (or a partial count). Each of
/// its calls is one `sendmsg_ret` (in order, with the call's result as `value`) and each call
/// in which it slept has a `send_blocked`, within the bounds the sender's own clock and
/// scheduler accounting set (see [`check_call`]). A simultaneous `hist` counts as many
/// `send_blocked` samples as `trace` shows events.
#[test]
fn tcp_send_blocked_is_the_senders_blocked_time() {
    const P: u16 = 24001;
    let pair = NetnsPair::new("sbtcp", 174);
    let sndtimeo = Duration::from_millis(200);
    let p = P.to_string();
    let ((flow, records), outs) = traced_by(
        &[
            &["trace", "--json", "-P", &p],
            &["hist", "--json", "-P", &p],
        ],
        || {
            let flow = BlockingStalledTcp::start(&pair, P, "smtx-sbtcp", sndtimeo);
            flow.wait_blocked(5, Duration::from_secs(60));
            let records = flow.stop_writing(Duration::from_secs(20));
            (flow, records)
        },
    );
    let (key, sender) = (flow.key.clone(), flow.sender.clone());
    flow.finish();
    let trace = outs[0].json();
    let doc = HistDoc::parse(&outs[1].stdout, "total")
        .unwrap_or_else(|e| panic!("bad hist --json output ({e}): {}", outs[1].describe()));
    if let Some(why) = not_attached(&trace) {
        eprintln!(
            "SKIP tcp_send_blocked_is_the_senders_blocked_time: send_blocked or sendmsg_ret not attached: {why}"
        );
        return;
    }
    assert_eq!(
        trace.summary_u64("lost"),
        0,
        "premise: expected no lost events (the calls are matched one by one)"
    );
    let (step, cpu_step) = (clock_step(), cpu_clock_step());
    let evs = trace.events_for(&key);
    let calls = seen_calls(&evs);
    let in_trace = trace
        .events
        .iter()
        .filter(|e| hook(e) == "send_blocked")
        .count() as u64;
    let in_hist = hist_u64(doc.total("send_blocked"), "count");
    eprintln!(
        "tcp: {} writes ({} slept), {} sendmsg_ret and {} send_blocked events of {key}; hist {}; \
         clock steps {step:?}, CPU {cpu_step:?}",
        records.len(),
        records.iter().filter(|r| r.sched.voluntary > 0).count(),
        calls.len(),
        calls.iter().filter(|c| c.blocked.is_some()).count(),
        hist_brief(doc.total("send_blocked"))
    );
    assert_eq!(
        calls.len(),
        records.len(),
        "expected one sendmsg_ret per write() of the sender {key} ({} writes), got {}",
        records.len(),
        calls.len()
    );
    let mut margins = Vec::new();
    let mut odd: Vec<String> = Vec::new();
    let mut slept_calls = 0;
    for (i, (rec, seen)) in records.iter().zip(&calls).enumerate() {
        let ret = get_i64(seen.ret, "value");
        let expected_ret = rec.wrote.map(|n| n as i64).unwrap_or(EAGAIN_RET);
        assert_eq!(
            ret, expected_ret,
            "call {i}: expected sendmsg_ret value {expected_ret} (what write() returned: {:?}), \
             got {ret}: {}",
            rec.wrote, seen.ret
        );
        assert_eq!(
            get_u64(seen.ret, "pid"),
            u64::from(sender.tid),
            "call {i}: expected the sender thread's tid on sendmsg_ret: {}",
            seen.ret
        );
        let m = Measured {
            took: rec.took,
            sched: rec.sched,
        };
        match check_call(i, &m, seen, step, cpu_step) {
            Ok(b) => margins.push(b),
            Err(why) => odd.push(why),
        }
        slept_calls += usize::from(seen.blocked.is_some());
    }
    print_margins("tcp", &margins);
    assert_odd_calls("tcp", &odd);
    let blocking = records.iter().filter(|r| r.took >= sndtimeo / 2).count();
    assert!(
        blocking >= 5 && slept_calls + odd.len() >= blocking,
        "expected >= 5 writes that blocked ~{sndtimeo:?}, each with a send_blocked; got {blocking} \
         such writes and {slept_calls} send_blocked events"
    );
    assert_eq!(
        in_hist, in_trace,
        "expected hist's send_blocked count to equal the send_blocked events of the \
         simultaneous trace ({in_trace}), got {in_hist}"
    );
}

/// Prints how far the calls' time asleep went past their bounds before the slack (negative:
/// inside them), and its least share of the time asleep for sure.
fn print_margins(what: &str, margins: &[CallBounds]) {
    let over = margins.iter().map(|m| m.over).max().unwrap_or(0);
    let under = margins.iter().map(|m| m.under).max().unwrap_or(0);
    let share = margins
        .iter()
        .filter_map(|m| m.share)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "{what}: over {} calls, time asleep at most {} past took - cpu, at most {} short of \
         took - cpu - run_delay, at least {share:.3} of it (slack {SLACK:?}, share \
         {ASLEEP_SHARE})",
        margins.len(),
        ms(over),
        ms(under)
    );
}

/// What a [`udp_blocking_sender`] did.
struct UdpBlocking {
    sender: ThreadInfo,
    key: SockKey,
    /// Each `send()` call as the sender measured it.
    calls: Vec<Measured>,
    /// The sending loop's wall time.
    wall: Duration,
    received: u64,
}

fn set_sndbuf(s: &UdpSocket, bytes: i32) {
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_SNDBUF, {bytes}): {}",
        io::Error::last_os_error()
    );
}

/// A connected UDP socket with `SO_SNDBUF` = `sndbuf` sends `count` datagrams of `size` bytes
/// with BLOCKING `send()` (a `sendto` system call) through the sender veth's qdisc; once the
/// socket's send memory is all in the qdisc, a call sleeps until the qdisc has let enough out.
/// Every call is timed, with the thread's scheduler accounting around it.
fn udp_blocking_sender(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    count: usize,
    size: usize,
    sndbuf: i32,
) -> UdpBlocking {
    let addr = pair.rx_sockaddr(port);
    let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let d = done.clone();
    let rx = spawn_in_netns(&format!("smrx-{port}"), &pair.rx_ns, move || {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("UDP receiver: bind {addr}: {e}"));
        force_rcvbuf(&s, 8 << 20);
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 65536];
        let mut got = 0u64;
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(90);
        while got < count as u64 && Instant::now() < deadline {
            match s.recv_from(&mut buf) {
                Ok(_) => {
                    got += 1;
                    last = Instant::now();
                }
                Err(_) => {
                    if d.load(Ordering::SeqCst) && last.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                }
            }
        }
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the UDP receiver to be bound within 20 s");
    let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("UDP sender: bind {local}: {e}"));
        set_sndbuf(&s, sndbuf);
        s.connect(addr)
            .unwrap_or_else(|e| panic!("UDP sender: connect {addr}: {e}"));
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("a write timeout");
        let key = SockKey::new(s.local_addr().expect("a local address"), addr);
        let buf = vec![0x77u8; size];
        let mut calls = Vec::with_capacity(count);
        let t0 = Instant::now();
        for i in 0..count {
            let before = SchedStat::before_call();
            let c0 = Instant::now();
            let r = s.send(&buf);
            let took = c0.elapsed();
            let sched = SchedStat::after_call().since(&before);
            calls.push(Measured { took, sched });
            match r {
                Ok(n) => assert_eq!(n, size, "expected whole datagrams"),
                Err(e) => panic!("UDP sender to {addr}: datagram {i}: {e}"),
            }
        }
        (ThreadInfo::current(), key, calls, t0.elapsed())
    });
    let (sender, key, calls, wall) = join_timeout(tx, THREAD_TIMEOUT, "UDP blocking sender");
    done.store(true, Ordering::SeqCst);
    let received = join_timeout(rx, THREAD_TIMEOUT, "UDP receiver");
    UdpBlocking {
        sender,
        key,
        calls,
        wall,
        received,
    }
}

/// A UDP sender with a 4 KB `SO_SNDBUF` (8 KB in the kernel) sends 100 datagrams of 1400 bytes
/// into a 1 mbit/s tbf on its veth: its socket memory stays in the qdisc, so many `send()`s
/// sleep (the socket is woken once half its buffer is free: ~35 ms, three datagrams' time on
/// the wire). Each call's `send_blocked` is within the bounds the sender's own clock and
/// scheduler accounting set (see [`check_call`]); in all they add up to the sender's time in
/// `send()` less its CPU time, up to the time it was runnable. A simultaneous `hist` counts as
/// many `send_blocked` samples.
#[test]
fn udp_send_blocked_is_the_senders_blocked_time() {
    const P: u16 = 24002;
    const COUNT: usize = 100;
    const SIZE: usize = 1400;
    let pair = NetnsPair::new("sbudp", 175);
    // An emulated sender under load (two VMs and more on two cores) sent too slowly to fill
    // even 8 KB into 1 mbit/s: 9 of 100 calls slept in a 6.1/fentry VM. A quarter of the rate
    // there (100 datagrams take ~4.4 s) keeps the buffer full however slow the sender is.
    let rate = if emulated() { "256kbit" } else { "1mbit" };
    pair.set_tbf(rate, "4kb", "500ms");
    let p = P.to_string();
    let (u, outs) = traced_by(
        &[
            &["trace", "--json", "--udp", "-P", &p],
            &["hist", "--json", "--udp", "-P", &p],
        ],
        || udp_blocking_sender(&pair, P, "smtx-sbudp", COUNT, SIZE, 4096),
    );
    let trace = outs[0].json();
    let doc = HistDoc::parse(&outs[1].stdout, "total")
        .unwrap_or_else(|e| panic!("bad hist --json output ({e}): {}", outs[1].describe()));
    if let Some(why) = not_attached(&trace) {
        eprintln!(
            "SKIP udp_send_blocked_is_the_senders_blocked_time: send_blocked or sendmsg_ret not attached: {why}"
        );
        return;
    }
    assert_eq!(
        u.received, COUNT as u64,
        "premise: expected the receiver to get all {COUNT} datagrams"
    );
    assert_eq!(
        trace.summary_u64("lost"),
        0,
        "premise: expected no lost events"
    );
    let (step, cpu_step) = (clock_step(), cpu_clock_step());
    let in_hist = hist_u64(doc.total("send_blocked"), "count");
    let evs = trace.events_for(&u.key);
    let calls = seen_calls(&evs);
    let in_send: Duration = u.calls.iter().map(|c| c.took).sum();
    let cpu: Duration = u.calls.iter().map(|c| c.sched.cpu).sum();
    let runnable: Option<Duration> = u.calls.iter().map(|c| c.sched.run_delay).sum();
    let slept = u.calls.iter().filter(|c| c.sched.voluntary > 0).count();
    eprintln!(
        "udp: {COUNT} sends in {:?}: {in_send:?} inside send(), {cpu:?} of it on a CPU, \
         {runnable:?} runnable; {slept} calls slept; {} sendmsg_ret, {} send_blocked events; \
         hist {}; clock steps {step:?}, CPU {cpu_step:?}",
        u.wall,
        calls.len(),
        calls.iter().filter(|c| c.blocked.is_some()).count(),
        hist_brief(doc.total("send_blocked"))
    );
    assert_eq!(
        calls.len(),
        COUNT,
        "expected one sendmsg_ret per send() of the UDP sender {} ({COUNT}), got {}",
        u.key,
        calls.len()
    );
    let mut margins = Vec::new();
    let mut odd: Vec<String> = Vec::new();
    let mut slept_calls = 0;
    let mut total = CallBounds::default();
    for (i, (m, seen)) in u.calls.iter().zip(&calls).enumerate() {
        assert_eq!(
            (get_str(seen.ret, "proto"), get_i64(seen.ret, "value")),
            ("udp", SIZE as i64),
            "call {i}: expected a udp sendmsg_ret of {SIZE} bytes: {}",
            seen.ret
        );
        assert_eq!(
            get_u64(seen.ret, "pid"),
            u64::from(u.sender.tid),
            "call {i}: expected the sender thread's tid on sendmsg_ret: {}",
            seen.ret
        );
        slept_calls += usize::from(seen.blocked.is_some());
        let b = match check_call(i, m, seen, step, cpu_step) {
            Ok(b) => b,
            Err(why) => {
                // Left out of the totals too: the bound below is for the calls that held.
                odd.push(why);
                continue;
            }
        };
        total.asleep += b.asleep;
        total.lower += b.lower.max(0);
        total.upper += b.upper;
        margins.push(b);
    }
    print_margins("udp", &margins);
    assert_odd_calls("udp", &odd);
    let expected = ns(in_send) - ns(cpu);
    eprintln!(
        "udp: asleep {} in all; the sender's time in send() less its CPU time {}: {} apart \
         (runnable meanwhile: {runnable:?})",
        ms(total.asleep),
        ms(expected),
        ms(total.asleep - expected)
    );
    // Each sleep lasts until half the buffer drained (several datagrams), so at most about a
    // third of the calls sleep; a slow sender (6.12 under TCG: 2.6 ms of CPU per call) finds
    // more room each time: 14 of 100 there.
    assert!(
        slept >= COUNT / 10,
        "premise: expected many of the {COUNT} send() calls to sleep for socket memory (8 KB of \
         send buffer into tbf {rate}), {slept} did"
    );
    assert!(
        total.lower <= total.asleep && total.asleep <= total.upper,
        "expected the send_blocked total ({}) to be the sender's time in send() less its CPU \
         time ({}), less at most its time runnable meanwhile ({runnable:?}): between {} and {}",
        ms(total.asleep),
        ms(expected),
        ms(total.lower),
        ms(total.upper)
    );
    assert_eq!(
        in_hist, slept_calls as u64,
        "expected hist's send_blocked count to equal the send_blocked events of the \
         simultaneous trace ({slept_calls}), got {in_hist}"
    );
}
