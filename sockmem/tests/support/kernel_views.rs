//! What the kernel itself says, to check sockmem against: `ss -tm` (socket memory),
//! `tc -s qdisc` (the qdisc's counters), `/proc/net/dev` (the device's), read once or sampled.

use serde_json::Value;
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::threads::recv_setup;
use super::{join_timeout, ns_checked, spawn_in_netns, HOLD_TIMEOUT, THREAD_TIMEOUT};

/// `ss -m`'s `skmem:(r..,rb..,t..,tb..,f..,w..,o..,bl..,d..)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkMem {
    /// sk_rmem_alloc
    pub r: u64,
    /// sk_rcvbuf
    pub rb: u64,
    /// sk_wmem_alloc minus 1
    pub t: u64,
    /// sk_sndbuf
    pub tb: u64,
    /// sk_forward_alloc
    pub f: u64,
    /// sk_wmem_queued
    pub w: u64,
    /// sk_omem_alloc
    pub o: u64,
    /// backlog length
    pub bl: u64,
    /// drops
    pub d: u64,
}

/// The time until the socket's persist timer (zero-window probe) fires, from `ss -tno`'s
/// `timer:(persist,...)`, in any state (a sender that closed probes on in FIN-WAIT-1); `None`
/// without one.
pub fn persist_timer_left(ns: &str, lport: u16, rport: u16) -> Option<Duration> {
    let filter = format!("( sport = :{lport} and dport = :{rport} )");
    let out = ns_checked(ns, "ss", &["-tnoH", "state", "all", &filter]);
    ss_timer(out.split("timer:(persist,").nth(1)?.split(',').next()?)
}

/// An `ss -o` timer as iproute2's `print_ms_timer` writes it: `1min2sec`, `12sec`, `800ms`, and
/// between 1 and 10 s with milliseconds `3.200ms` (3.2 s: the dot stands for `sec`).
fn ss_timer(t: &str) -> Option<Duration> {
    let t = t.replace('.', "sec");
    let mut left = 0.0;
    let mut rest = t.as_str();
    for (unit, secs) in [("min", 60.0), ("sec", 1.0), ("ms", 1e-3)] {
        if let Some((n, r)) = rest.split_once(unit) {
            left += n.parse::<f64>().ok()? * secs;
            rest = r;
        }
    }
    Some(Duration::from_secs_f64(left))
}

/// Parses the first `skmem:(...)` in `text`.
pub fn parse_skmem(text: &str) -> Result<SkMem, String> {
    let start = text
        .find("skmem:(")
        .ok_or_else(|| format!("no \"skmem:(\" in {text:?}"))?
        + "skmem:(".len();
    let end = text[start..]
        .find(')')
        .ok_or_else(|| format!("unterminated skmem in {text:?}"))?
        + start;
    let mut m = SkMem::default();
    let mut seen = 0;
    for item in text[start..end].split(',') {
        let split = item
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| format!("skmem item {item:?} has no number"))?;
        let (k, v) = item.split_at(split);
        let v: u64 = v
            .parse()
            .map_err(|e| format!("skmem item {item:?}: bad number: {e}"))?;
        let slot = match k {
            "r" => &mut m.r,
            "rb" => &mut m.rb,
            "t" => &mut m.t,
            "tb" => &mut m.tb,
            "f" => &mut m.f,
            "w" => &mut m.w,
            "o" => &mut m.o,
            "bl" => &mut m.bl,
            "d" => &mut m.d,
            _ => continue, // fields of newer ss versions
        };
        *slot = v;
        seen += 1;
    }
    if seen < 9 {
        return Err(format!(
            "expected the 9 skmem fields r,rb,t,tb,f,w,o,bl,d, found {seen} in {:?}",
            &text[start..end]
        ));
    }
    Ok(m)
}

/// The kernel's memory counters of the established TCP socket with local port `lport` and
/// remote port `rport` in namespace `ns`
/// (`ss -tmnH state established '( sport = :L and dport = :R )'`). Panics unless exactly one
/// socket matches.
pub fn ss_skmem(ns: &str, lport: u16, rport: u16) -> SkMem {
    ss_skmem_in(ns, "established", lport, rport)
}

/// [`ss_skmem`] of a socket in `state` (an `ss` state or group: `all`, `fin-wait-1`).
pub fn ss_skmem_in(ns: &str, state: &str, lport: u16, rport: u16) -> SkMem {
    let filter = format!("( sport = :{lport} and dport = :{rport} )");
    let out = ns_checked(ns, "ss", &["-tmnH", "state", state, &filter]);
    let n = out.matches("skmem:(").count();
    assert_eq!(
        n, 1,
        "expected exactly 1 socket {lport}->{rport} in ss output, found {n}:\n{out}"
    );
    parse_skmem(&out).unwrap_or_else(|e| panic!("ss output: {e}"))
}

/// Parses the first `ino:N` of an `ss -e` socket line.
pub fn parse_ss_ino(text: &str) -> Result<u64, String> {
    let start = text
        .find(" ino:")
        .ok_or_else(|| format!("no \" ino:\" in {text:?}"))?
        + " ino:".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .map_err(|e| format!("ino:{digits:?} is not a number ({e}) in {text:?}"))
}

/// The inode number `ss -e` shows (`ino:`) for the one socket of protocol `proto` ("-t" or
/// "-u") with local port `lport` and remote port `rport` in namespace `ns`, in any state. Panics
/// unless exactly one socket matches.
pub fn ss_ino(ns: &str, proto: &str, lport: u16, rport: u16) -> u64 {
    let filter = format!("( sport = :{lport} and dport = :{rport} )");
    let flags = format!("{proto}aneH");
    let out = ns_checked(ns, "ss", &[&flags, &filter]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly 1 socket {lport}->{rport} in `ss {flags}` of {ns}, found {}:\n{out}",
        lines.len()
    );
    parse_ss_ino(lines[0]).unwrap_or_else(|e| panic!("ss output: {e}"))
}

/// Reads `ss` every `interval` until `w` is > 0 and equal in two consecutive reads; panics after
/// `timeout`.
pub fn wait_ss_stable(
    ns: &str,
    lport: u16,
    rport: u16,
    interval: Duration,
    timeout: Duration,
) -> SkMem {
    let deadline = Instant::now() + timeout;
    let mut prev = ss_skmem(ns, lport, rport);
    loop {
        thread::sleep(interval);
        let cur = ss_skmem(ns, lport, rport);
        if cur.w > 0 && cur.w == prev.w {
            return cur;
        }
        assert!(
            Instant::now() < deadline,
            "expected ss w of {lport}->{rport} to be > 0 and stable within {timeout:?}; last two \
             reads w={} then w={}",
            prev.w,
            cur.w
        );
        prev = cur;
    }
}

/// `tc -s qdisc show dev <dev>` in namespace `ns`: (bytes, packets) of the first (root) qdisc's
/// `Sent N bytes M pkt`.
pub fn qdisc_sent(ns: &str, dev: &str) -> (u64, u64) {
    let out = ns_checked(ns, "tc", &["-s", "qdisc", "show", "dev", dev]);
    parse_qdisc_sent(&out).unwrap_or_else(|e| panic!("tc -s qdisc output: {e}\n{out}"))
}

pub fn parse_qdisc_sent(text: &str) -> Result<(u64, u64), String> {
    let i = text.find("Sent ").ok_or("no \"Sent \"")?;
    let words: Vec<&str> = text[i..].split_whitespace().take(5).collect();
    if words.len() < 5 || words[2] != "bytes" || words[4] != "pkt" {
        return Err(format!("unexpected stats format: {words:?}"));
    }
    let bytes = words[1]
        .parse()
        .map_err(|e| format!("bytes {:?}: {e}", words[1]))?;
    let pkts = words[3]
        .parse()
        .map_err(|e| format!("pkts {:?}: {e}", words[3]))?;
    Ok((bytes, pkts))
}

/// The root qdisc's statistics as `tc -s -j qdisc show` reports them. Units as the kernel
/// keeps them: `sent_pkts` counts GSO segments (`gso_segs` per skb), `qlen` counts skbs, bytes
/// are `qdisc_pkt_len` (GSO headers of every segment included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QdiscStats {
    pub kind_is_noqueue: bool,
    pub sent_bytes: u64,
    pub sent_pkts: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub requeues: u64,
    /// Bytes waiting in the qdisc.
    pub backlog: u64,
    /// skbs waiting in the qdisc.
    pub qlen: u64,
}

/// Parses the root qdisc (the first entry with `"root": true`, else the first) of
/// `tc -s -j qdisc show dev X`.
pub fn parse_qdisc_stats_json(text: &str) -> Result<QdiscStats, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let arr = v.as_array().ok_or("not a JSON array")?;
    let q = arr
        .iter()
        .find(|q| q.get("root").and_then(Value::as_bool) == Some(true))
        .or_else(|| arr.first())
        .ok_or("no qdisc in the array")?;
    let n = |f: &str| -> Result<u64, String> {
        q.get(f)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("qdisc field {f:?} missing or not a u64 in {q}"))
    };
    Ok(QdiscStats {
        kind_is_noqueue: q.get("kind").and_then(Value::as_str) == Some("noqueue"),
        sent_bytes: n("bytes")?,
        sent_pkts: n("packets")?,
        drops: n("drops")?,
        overlimits: n("overlimits")?,
        requeues: n("requeues")?,
        backlog: n("backlog")?,
        qlen: n("qlen")?,
    })
}

/// `(tx_bytes, tx_packets)` of `dev` in a `/proc/net/dev` text. veth counts one packet per
/// skb handed to it (a GSO skb is one packet here, unlike the qdisc's `Sent .. pkt`).
pub fn parse_proc_net_dev_tx(text: &str, dev: &str) -> Result<(u64, u64), String> {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != dev {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 10 {
            return Err(format!("short /proc/net/dev line for {dev}: {line:?}"));
        }
        let p = |i: usize| -> Result<u64, String> {
            f[i].parse()
                .map_err(|e| format!("/proc/net/dev field {i} {:?}: {e}", f[i]))
        };
        return Ok((p(8)?, p(9)?));
    }
    Err(format!("no line for {dev} in /proc/net/dev"))
}

/// One reading of a qdisc and of its device's transmit counters, taken by [`QdiscSampler`].
#[derive(Clone, Copy, Debug)]
pub struct QdiscSample {
    pub at: Instant,
    pub q: QdiscStats,
    /// The device's `tx_bytes` / `tx_packets` (`/proc/net/dev` of the namespace).
    pub dev_tx_bytes: u64,
    pub dev_tx_packets: u64,
}

/// Reads the qdisc's statistics and the device's `/proc/net/dev` line every `interval` from a
/// thread inside the namespace. One long-lived `tc -s -j -batch -` started from that thread
/// (so it inherits the namespace) answers a `qdisc show dev X` per reading: no process is
/// started per reading, which would disturb what is measured; `/proc/thread-self/net/dev` is
/// the thread's own namespace's.
pub struct QdiscSampler {
    stop: Arc<AtomicBool>,
    h: Option<JoinHandle<Vec<QdiscSample>>>,
    what: String,
}

impl QdiscSampler {
    /// Starts sampling; the first reading is taken before this returns.
    pub fn start(ns: &str, dev: &str, interval: Duration) -> QdiscSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let dev_s = dev.to_string();
        let (first_tx, first_rx) = mpsc::channel();
        let what = format!("qdisc sampler of {dev} in {ns}");
        let mut h = Some(spawn_in_netns("smqdisc-sample", ns, move || {
            let mut child = Command::new("tc")
                .args(["-s", "-j", "-batch", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start tc -batch: {e}"));
            // Killed (and reaped) however this thread ends.
            struct Reap(Child);
            impl Drop for Reap {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let mut stdin = child.stdin.take().expect("tc's stdin piped");
            let mut stdout = io::BufReader::new(child.stdout.take().expect("tc's stdout piped"));
            let _reap = Reap(child);
            let command = format!("qdisc show dev {dev_s}\n");
            let mut read = || -> QdiscSample {
                use io::BufRead;
                stdin
                    .write_all(command.as_bytes())
                    .and_then(|_| stdin.flush())
                    .unwrap_or_else(|e| panic!("writing to tc -batch: {e}"));
                let mut line = String::new();
                let n = stdout
                    .read_line(&mut line)
                    .unwrap_or_else(|e| panic!("reading from tc -batch: {e}"));
                assert!(n > 0, "tc -batch ended its output");
                let at = Instant::now();
                let q = parse_qdisc_stats_json(&line)
                    .unwrap_or_else(|e| panic!("tc -s -j qdisc output: {e}\n{line}"));
                let net_dev = fs::read_to_string("/proc/thread-self/net/dev")
                    .expect("read /proc/thread-self/net/dev");
                let (dev_tx_bytes, dev_tx_packets) = parse_proc_net_dev_tx(&net_dev, &dev_s)
                    .unwrap_or_else(|e| panic!("{e}:\n{net_dev}"));
                QdiscSample {
                    at,
                    q,
                    dev_tx_bytes,
                    dev_tx_packets,
                }
            };
            let mut samples = vec![read()];
            let _ = first_tx.send(());
            let start = Instant::now();
            let deadline = start + HOLD_TIMEOUT;
            let mut k: u32 = 1;
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let next = start + interval * k;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    // Behind schedule: skip the missed ticks.
                    k = ((now - start).as_nanos() / interval.as_nanos().max(1)) as u32;
                }
                k += 1;
                samples.push(read());
            }
            // One reading taken after the stop was asked for.
            samples.push(read());
            samples
        }));
        recv_setup(&first_rx, &mut h, &what);
        QdiscSampler { stop, h, what }
    }

    /// Stops sampling (after one last reading) and returns every reading, in time order.
    pub fn finish(mut self) -> Vec<QdiscSample> {
        self.stop.store(true, Ordering::SeqCst);
        join_timeout(
            self.h.take().expect("the sampler thread joined only once"),
            THREAD_TIMEOUT,
            &self.what,
        )
    }
}

impl Drop for QdiscSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The clock's granularity as this process sees it: the smallest step of `CLOCK_MONOTONIC`
/// between two successive readings, over at most 200 ms. The BPF programs' clock
/// (`bpf_ktime_get_ns`) reads the same clocksource. Tens of ns on a host; a few ms in an
/// emulated (TCG) VM whose clocksource is jiffies-based.
/// The smallest step of the calling thread's CPU-time clock (`CLOCK_THREAD_CPUTIME_ID`), read
/// in a busy loop: nanoseconds where the scheduler clock is fine, a tick (4 ms) in an emulated VM
/// without a stable TSC, where the kernel's CPU and runnable times are jiffies-based.
pub fn cpu_clock_step() -> Duration {
    let read = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let start = Instant::now();
    let mut prev = read();
    let mut steps = 0;
    let mut min = Duration::MAX;
    while steps < 20 && start.elapsed() < Duration::from_millis(300) {
        let now = read();
        if now > prev {
            min = min.min(now - prev);
            steps += 1;
            prev = now;
        }
    }
    if steps == 0 {
        Duration::from_millis(300)
    } else {
        min
    }
}

pub fn clock_step() -> Duration {
    let start = Instant::now();
    let mut prev = start;
    let mut steps = 0;
    let mut min = Duration::MAX;
    while steps < 50 && start.elapsed() < Duration::from_millis(200) {
        let now = Instant::now();
        if now > prev {
            min = min.min(now - prev);
            steps += 1;
            prev = now;
        }
    }
    assert!(
        steps > 0,
        "expected CLOCK_MONOTONIC to advance within 200 ms of readings, it did not"
    );
    min
}
