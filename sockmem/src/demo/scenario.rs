//! The demos: what each builds and runs, and the verdict each checks on the recording.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    lab::{self, Lab},
    sender_facts,
    traffic::{self, Sent},
    SenderFacts,
};
use crate::{
    attach::loader,
    kernel::{
        sampler::read_sysctl_in,
        sock_diag::{dump_in, DumpFilter, Protocol, SockMem},
    },
    pipeline::why::tsq::{caps_paced, TsqLimit},
};

/// The port every demo's receiver listens on.
pub const PORT: u16 = 5299;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    StalledReceiver,
    Tsq,
    UdpSndbuf,
    QdiscBacklog,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::StalledReceiver,
        Scenario::Tsq,
        Scenario::UdpSndbuf,
        Scenario::QdiscBacklog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::StalledReceiver => "stalled-receiver",
            Scenario::Tsq => "tsq",
            Scenario::UdpSndbuf => "udp-sndbuf",
            Scenario::QdiscBacklog => "qdisc-backlog",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Scenario::StalledReceiver => {
                "a TCP receiver that accepts and never reads: the window closes, the sender's \
                 bytes pile up in its write queue (sk_wmem_queued near sk_sndbuf) while nothing \
                 sits below TCP (sk_wmem_alloc near 0) - the answer to the question that \
                 started sockmem"
            }
            Scenario::Tsq => {
                "a TCP bulk flow through a 20 Mbit/s tbf: TCP Small Queues holds sk_wmem_alloc \
                 at its limit (about two skbs' truesize at this rate) while sk_wmem_queued grows \
                 far past it"
            }
            Scenario::UdpSndbuf => {
                "a UDP sender into a 2 Mbit/s tbf: UDP has no write queue (sk_wmem_queued stays \
                 0); small datagrams fill the send buffer (sk_wmem_alloc reaches sk_sndbuf, \
                 sends block), then large ones overflow the qdisc (drops)"
            }
            Scenario::QdiscBacklog => {
                "a TCP bulk flow into a 10 Mbit/s tbf with a 30 KiB queue: skbs wait in the qdisc \
                 (sojourn) and some are dropped there, as `tc -s` counts"
            }
        }
    }

    pub fn by_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    fn qdisc(self) -> &'static [&'static str] {
        match self {
            Scenario::StalledReceiver => &["pfifo", "limit", "1000"],
            Scenario::Tsq => &["tbf", "rate", "20mbit", "burst", "64kb", "limit", "4mb"],
            Scenario::UdpSndbuf => &["tbf", "rate", "2mbit", "burst", "16kb", "limit", "26kb"],
            Scenario::QdiscBacklog => &["tbf", "rate", "10mbit", "burst", "16kb", "limit", "30kb"],
        }
    }
}

/// What a run measured: the recording's view, the traffic's own counts, the kernel's.
pub struct Outcome {
    pub facts: SenderFacts,
    pub sent: Sent,
    /// The sender socket near the end, as `ss -tm`/sock_diag show it.
    pub kernel: Option<SockMem>,
    pub tc_drops: u64,
    pub tsq: Option<TsqLimit>,
}

/// Builds the lab, records the traffic, and returns what was measured. `recording` is where
/// the recording goes.
pub fn run(s: Scenario, secs: f64, recording: &Path) -> anyhow::Result<Outcome> {
    lab::catch_stops();
    let lab = Lab::new()?;
    lab.qdisc(s.qdisc())?;
    let drops_before = lab.qdisc_drops()?;
    let mut recorder = Recorder::start(recording, secs)?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    // Receivers outlive the senders: a receiver closing first would reset the connection.
    let rx_until = until + Duration::from_millis(500);
    let to = SocketAddr::from((lab.rx_addr, PORT));
    let (sent, kernel) = match s {
        Scenario::UdpSndbuf => {
            let rx = traffic::udp_receiver(lab.rx_netns(), lab.rx_addr, PORT, rx_until)?;
            // Small datagrams fill the buffer (truesize counts, not bytes); then half a second
            // of large ones, ~2000 a second, overflow the qdisc's byte limit (it passes ~170 a
            // second; at full speed the recorder's ring would overflow first).
            let switch = until
                .checked_sub(Duration::from_millis(500))
                .unwrap_or(until)
                .max(start);
            let tx = traffic::udp_sender(
                lab.tx_netns(),
                to,
                32 << 10,
                vec![
                    (200, switch, Duration::ZERO),
                    (1472, until, Duration::from_micros(500)),
                ],
            );
            let kernel = sample_before(&lab, Protocol::Udp, until);
            let sent = join(tx)?;
            join(rx)?;
            (sent, kernel)
        }
        _ => {
            let reads = s != Scenario::StalledReceiver;
            let rx = traffic::tcp_receiver(lab.rx_netns(), lab.rx_addr, PORT, reads, rx_until)?;
            let tx = traffic::tcp_sender(lab.tx_netns(), to, 64 << 10, None, until);
            let kernel = sample_before(&lab, Protocol::Tcp, until);
            let sent = join(tx)?;
            join(rx)?;
            (sent, kernel)
        }
    };
    let tc_drops = lab.qdisc_drops()?.saturating_sub(drops_before);
    recorder.stop()?;
    if lab::stopped() {
        bail!(
            "interrupted; the partial recording is in `{}`",
            recording.display()
        );
    }
    let facts = sender_facts(recording, PORT)?;
    let tsq = match (s, &kernel) {
        (Scenario::Tsq, Some(k)) => tsq_limit(&lab, k, facts.row.truesize_max),
        _ => None,
    };
    Ok(Outcome {
        facts,
        sent,
        kernel,
        tc_drops,
        tsq,
    })
}

/// TSQ's limit for the sender, as the kernel computes it (the demo's sender is cubic: not
/// paced, so `tcp_limit_output_bytes` caps it on every kernel).
fn tsq_limit(lab: &Lab, k: &SockMem, truesize: u64) -> Option<TsqLimit> {
    let lob = read_sysctl_in(&lab.tx_netns(), "net/ipv4/tcp_limit_output_bytes")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let t = k.tcp.as_ref()?;
    let paced = t.congestion.as_deref() == Some("bbr");
    let capped = caps_paced(&loader::kernel_release()) || !paced;
    Some(TsqLimit::new(lob, t.pacing_rate?, truesize, capped))
}

/// The sender socket as the kernel reports it, shortly before the traffic ends.
fn sample_before(lab: &Lab, protocol: Protocol, until: Instant) -> Option<SockMem> {
    let at = until.checked_sub(Duration::from_millis(300))?;
    while Instant::now() < at && !lab::stopped() {
        thread::sleep(Duration::from_millis(20));
    }
    dump_in(&lab.tx_netns(), &DumpFilter::protocols(&[protocol]))
        .ok()?
        .into_iter()
        .find(|s| s.remote.port() == PORT)
}

fn join<T>(h: thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a traffic thread panicked"))?
}

/// `sockmem record` of the demo's port, as a child process.
struct Recorder {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Recorder {
    fn start(path: &Path, secs: f64) -> anyhow::Result<Recorder> {
        let exe = std::env::current_exe().context("finding sockmem's own executable")?;
        let ready = path.with_extension("ready");
        let stderr = path.with_extension("stderr");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(exe)
            // Snapshots every 200 ms: the plot draws TSQ's limit from them.
            .args(["record", "-P", &PORT.to_string(), "--snapshot", "0.2", "-d"])
            .arg(format!("{}", secs + 30.0))
            .arg("-o")
            .arg(path)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).context("creating the recorder's log")?)
            .spawn()
            .context("starting `sockmem record`")?;
        let mut r = Recorder { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "`sockmem record` ended ({status}) before it was ready: {}",
                    std::fs::read_to_string(&r.stderr)
                        .unwrap_or_default()
                        .trim()
                );
            }
            if Instant::now() > deadline || lab::stopped() {
                let _ = r.child.kill();
                bail!("`sockmem record` was not ready within 60 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(r)
    }

    /// SIGTERM: it ends its file and exits.
    fn stop(&mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().context("waiting for `sockmem record`")?;
        if !status.success() {
            bail!(
                "`sockmem record` failed ({status}): {}",
                std::fs::read_to_string(&self.stderr)
                    .unwrap_or_default()
                    .trim()
            );
        }
        let _ = std::fs::remove_file(&self.stderr);
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

use std::fs::File;

/// One checked claim of a verdict.
pub struct Claim {
    pub holds: bool,
    pub text: String,
}

fn claim(holds: bool, text: String) -> Claim {
    Claim { holds, text }
}

/// A byte count as every human-readable output shows it.
fn bytes(b: i64) -> String {
    crate::render::human_bytes(b as f64)
}

/// What the demo shows, each claim with its numbers.
pub fn verdict(s: Scenario, o: &Outcome) -> Vec<Claim> {
    let f = &o.facts.row;
    let k = o.kernel.as_ref();
    let mut v = Vec::new();
    if f.events == 0 {
        v.push(claim(
            false,
            "the recording has no event of the sender socket".into(),
        ));
        return v;
    }
    match s {
        Scenario::StalledReceiver => {
            v.push(claim(
                f.wmem_queued_max * 2 >= f.sndbuf,
                format!(
                    "sk_wmem_queued reaches {} of sk_sndbuf {} (sock_diag near the end: w {})",
                    bytes(f.wmem_queued_max),
                    bytes(f.sndbuf),
                    k.map(|k| bytes(i64::from(k.wmem_queued)))
                        .unwrap_or_else(|| "?".into())
                ),
            ));
            let alloc_p90 = f.alloc_held.at_or_below_for(0.9);
            v.push(claim(
                alloc_p90 * 100 <= f.wmem_queued_max.max(1)
                    && k.is_none_or(|k| {
                        u64::from(k.wmem_alloc) * 100 <= u64::from(k.wmem_queued).max(1)
                    }),
                format!(
                    "sk_wmem_alloc is at most {} nine tenths of the time (sock_diag near the end: \
                     t {}): nothing waits below TCP",
                    bytes(alloc_p90),
                    k.map(|k| bytes(i64::from(k.wmem_alloc)))
                        .unwrap_or_else(|| "?".into())
                ),
            ));
        }
        Scenario::Tsq => {
            let (p50, p90) = (
                f.alloc_held.at_or_below_for(0.5),
                f.alloc_held.at_or_below_for(0.9),
            );
            if let Some(t) = &o.tsq {
                // Over time, not at its peak: a retransmit may double the limit for a moment.
                v.push(claim(
                    // The median between half the limit and one skb past it (TCP sends while
                    // under the limit); nine tenths of the time within twice the limit plus
                    // one skb (a retransmission doubles the limit).
                    (p50 as u64 * 2 >= t.limit && p50 as u64 <= t.limit + t.truesize)
                        && p90 as u64 <= 2 * t.limit + t.truesize,
                    format!(
                        "sk_wmem_alloc stays at TCP Small Queues' limit: at most {} half of the \
                         time, {} 90% (peak {}); the limit is {} = min(max(2 x truesize {}, \
                         pacing rate {} B/s >> {}), tcp_limit_output_bytes {})",
                        bytes(p50),
                        bytes(p90),
                        bytes(f.wmem_alloc_max),
                        bytes(t.limit as i64),
                        bytes(t.truesize as i64),
                        t.pacing_rate,
                        t.pacing_shift,
                        bytes(t.limit_output_bytes as i64)
                    ),
                ));
                v.push(claim(
                    f.wmem_queued_max as u64 >= 2 * t.limit,
                    format!(
                        "sk_wmem_queued grows to {}, {:.1}x the TSQ limit: the write queue holds \
                         what TSQ keeps out of the qdisc",
                        bytes(f.wmem_queued_max),
                        f.wmem_queued_max as f64 / t.limit.max(1) as f64
                    ),
                ));
            } else {
                v.push(claim(
                    false,
                    "the TSQ limit could not be computed (no sock_diag sample or sysctl)".into(),
                ));
            }
        }
        Scenario::UdpSndbuf => {
            v.push(claim(
                f.wmem_queued_max == 0,
                format!(
                    "sk_wmem_queued stays {} (UDP has no write queue)",
                    f.wmem_queued_max
                ),
            ));
            v.push(claim(
                f.wmem_alloc_max * 10 >= f.sndbuf * 9,
                format!(
                    "sk_wmem_alloc reaches {} of sk_sndbuf {}",
                    bytes(f.wmem_alloc_max),
                    bytes(f.sndbuf)
                ),
            ));
            v.push(claim(
                f.blocked_calls > 0 && o.sent.slow_calls > 0,
                format!(
                    "sends blocked: {} by sockmem's send_blocked ({:.2} s asleep), {} by the \
                     sender's own clock",
                    f.blocked_calls,
                    f.blocked_ns as f64 / 1e9,
                    o.sent.slow_calls
                ),
            ));
            v.push(claim(
                o.facts.qdisc_drops() > 0 && o.facts.qdisc_drops() == o.tc_drops,
                format!(
                    "the qdisc dropped {} datagrams (tc -s: {})",
                    o.facts.qdisc_drops(),
                    o.tc_drops
                ),
            ));
        }
        Scenario::QdiscBacklog => {
            v.push(claim(
                f.sojourn.count() > 0 && f.sojourn.percentile(0.99) >= 1_000_000,
                format!(
                    "{} skbs waited in the qdisc: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    f.sojourn.count(),
                    f.sojourn.percentile(0.5) as f64 / 1e6,
                    f.sojourn.percentile(0.99) as f64 / 1e6,
                    f.sojourn.max() as f64 / 1e6
                ),
            ));
            // tbf cuts GSO skbs larger than its burst into segments and counts their drops;
            // sockmem follows the skbs the socket handed down (equal on 6.18, 3 of 9 on a
            // 6.12 VM).
            v.push(claim(
                // No drop at all is possible: an emulated VM's sender may not fill the queue.
                o.facts.qdisc_drops() <= o.tc_drops,
                format!(
                    "the qdisc dropped {} of its skbs (tc -s: {}, counting the segments tbf \
                     cut them into)",
                    o.facts.qdisc_drops(),
                    o.tc_drops
                ),
            ));
        }
    }
    if o.facts.lost > 0 {
        v.push(claim(
            false,
            format!(
                "{} events were lost (ring buffer full): the figures undercount",
                o.facts.lost
            ),
        ));
    }
    v
}
