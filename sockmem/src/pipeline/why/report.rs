//! The analysis as numbers and words, per socket and in total: what the text and JSON sinks
//! print (`--json` is this, serialized).

use serde::Serialize;
use sockmem_common::Hook;

use super::{cause::Cause, Analyzer, Refusals, Watched};
use crate::pipeline::decode::Protocol;

#[derive(Debug, Serialize)]
pub struct WhyReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub kernel: String,
    pub window_s: f64,
    pub interval_ms: u64,
    pub hooks: Vec<serde_json::Value>,
    pub sockets: Vec<SocketWhy>,
    pub total: TotalWhy,
    /// Matched sockets that lived too briefly (or without a file) to be sampled twice.
    pub unsampled_sockets: usize,
    /// Matched sockets that had nothing to send (receivers, idle connections): not reported.
    pub idle_sockets: usize,
    pub memory_pressure: Pressure,
    pub lost_events: u64,
    /// Skbs seen entering a qdisc and never leaving it within 10 s (lost or unseen dequeues).
    pub stale_qdisc_skbs: u64,
    /// What each cause is judged from (hooks, and the kernel's tcp_info through sock_diag).
    pub causes_need: std::collections::BTreeMap<&'static str, &'static str>,
}

/// What each cause is judged from; a missing input is named in each socket's `missing`.
const CAUSES_NEED: [(Cause, &str); 9] = [
    (
        Cause::Application,
        "tcp_info busy timer (sock_diag, 4.10+); UDP: send_blocked",
    ),
    (
        Cause::SendBuffer,
        "tcp_info sndbuf-limited timer; send_blocked (raw_syscalls:sys_enter, sched:sched_switch, sendmsg_ret)",
    ),
    (
        Cause::ReceiverWindow,
        "tcp_info snd_wnd (5.4+), unacked, snd_mss and the rwnd-limited timer",
    ),
    (Cause::CongestionWindow, "tcp_info snd_cwnd and unacked"),
    (
        Cause::Qdisc,
        "qdisc_enqueue and qdisc_dequeue (every backend), skb_drop; the TSQ limit's inputs",
    ),
    (
        Cause::Device,
        "qdisc_enqueue/qdisc_dequeue (bytes past the qdisc), driver_done (time in the driver)",
    ),
    (
        Cause::Tsq,
        "skb truesize (skb events), tcp_info pacing rate, net.ipv4.tcp_limit_output_bytes in the socket's namespace",
    ),
    (
        Cause::Paced,
        "tcp_info pacing rate, max pacing rate (SO_MAX_PACING_RATE) and notsent bytes",
    ),
    (Cause::Sending, "tcp_info busy timer: busy with no limit binding"),
];

#[derive(Debug, Serialize)]
pub struct Pressure {
    /// Sampled time TCP was under memory pressure (`/proc/net/protocols`).
    pub tcp_s: f64,
    pub udp_s: f64,
    /// The matched sockets' `sock_exceed_buf_limit` events (receivers too): the protocol's
    /// memory limit refused them memory.
    pub refused: Refusals,
    /// Why `sock_exceed_buf_limit` is not attached (refusals then not counted).
    pub refused_not_seen: Option<String>,
}

#[derive(Debug, Serialize, Clone)]
pub struct CauseShare {
    pub cause: &'static str,
    pub s: f64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct TotalWhy {
    pub window_s: f64,
    pub dominant: Option<&'static str>,
    pub causes: Vec<CauseShare>,
}

#[derive(Debug, Serialize)]
pub struct SocketWhy {
    /// Its id; a socket with no event yet has only a stand-in (`null` in JSON, as in `top`).
    #[serde(serialize_with = "event_sock_id")]
    pub sock: u64,
    pub ino: u64,
    pub protocol: &'static str,
    pub local: String,
    pub remote: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub netns: Option<String>,
    pub window_s: f64,
    pub dominant: &'static str,
    pub reading: String,
    pub causes: Vec<CauseShare>,
    pub counters: Counters,
    pub send: SendWhy,
    pub tcp: Option<TcpWhy>,
    pub tsq: Option<TsqWhy>,
    pub qdisc: QdiscWhy,
    pub device: DeviceWhy,
    pub missing: Vec<Missing>,
}

#[derive(Debug, Serialize)]
pub struct Counters {
    pub queued_mean: f64,
    pub queued_max: u64,
    pub alloc_mean: f64,
    pub alloc_max: u64,
    pub sndbuf: u64,
}

#[derive(Debug, Serialize)]
pub struct SendWhy {
    pub calls: u64,
    pub bytes: u64,
    pub blocked_calls: u64,
    /// Time asleep in send calls, within the socket's window.
    pub blocked_s: f64,
    /// Of `blocked_calls`, those already asleep as the run started (found in `/proc`: no event
    /// tells of such a call until it returns), counted from the run's start.
    pub asleep_at_start: u64,
    /// Times the protocol refused the socket memory to send (`sock_exceed_buf_limit`).
    pub refused_memory: u64,
}

#[derive(Debug, Serialize)]
pub struct TcpWhy {
    pub busy_s: f64,
    pub rwnd_limited_s: f64,
    pub sndbuf_limited_s: f64,
    pub zero_window_s: f64,
    pub cwnd_mean: f64,
    pub in_flight_mean: f64,
    pub snd_wnd_min: Option<u32>,
    /// The last pacing rate read, B/s (`None`: unlimited).
    pub pacing_rate: Option<u64>,
    /// `SO_MAX_PACING_RATE`'s cap, B/s (`None`: none).
    pub max_pacing_rate: Option<u64>,
    /// Bytes acknowledged over the window / the window, B/s (`None`: tcp_info lacks it).
    pub achieved_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct TsqWhy {
    pub limit: u64,
    /// Whether `limit_output_bytes` caps it (always from 6.16; before, only unpaced sockets).
    pub capped: bool,
    /// The congestion control (`bbr` paces).
    pub congestion: Option<String>,
    pub limit_output_bytes: u64,
    pub pacing_rate: u64,
    pub pacing_shift: u32,
    pub truesize: u64,
    pub throttled_s: f64,
}

#[derive(Debug, Serialize)]
pub struct AheadOwner {
    #[serde(serialize_with = "event_sock_id")]
    pub sock: u64,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The socket's addresses, from its events (it may be outside the filters).
    pub local: Option<String>,
    pub remote: Option<String>,
    pub bytes: u64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct QdiscWhy {
    pub skbs: u64,
    pub sojourn_mean_us: f64,
    pub sojourn_p99_us: f64,
    pub sojourn_max_us: f64,
    pub ahead_bytes_mean: f64,
    pub ahead: Vec<AheadOwner>,
    /// Drops in or at the qdisc.
    pub drops: u64,
    /// Every drop of the socket's skbs (qdisc or not), by the kernel's reason.
    pub drop_reasons: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct DeviceWhy {
    pub skbs: u64,
    pub mean_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The TX queue at the hand-offs: stopped by the driver / BQL, BQL's limit and inflight.
    pub tx_queue: super::txq::TxQueueSeen,
}

#[derive(Debug, Serialize, Clone)]
pub struct Missing {
    pub cause: &'static str,
    pub why: String,
}

/// What the report needs to know of the run besides the analysis.
pub struct RunFacts<'a> {
    pub kernel: String,
    pub window_s: f64,
    pub interval_ms: u64,
    pub hooks: Vec<serde_json::Value>,
    /// Why a hook is not attached (`None`: it is).
    pub unavailable: &'a dyn Fn(Hook) -> Option<String>,
    pub netns_label: &'a dyn Fn(u64) -> Option<String>,
    pub lost_events: u64,
}

const S: f64 = 1e9;

impl WhyReport {
    pub fn build(a: &Analyzer, run: &RunFacts) -> WhyReport {
        let sockets: Vec<SocketWhy> = a
            .reported()
            .into_iter()
            .map(|w| socket_why(a, w, run))
            .collect();
        let mut sums = [0f64; Cause::ALL.len()];
        for w in a.reported() {
            for (c, t) in w.causes() {
                sums[c.index()] += t as f64;
            }
        }
        let window: f64 = sums.iter().sum();
        let mut causes: Vec<CauseShare> = Cause::ALL
            .iter()
            .filter(|c| sums[c.index()] > 0.0)
            .map(|&c| CauseShare {
                cause: c.name(),
                s: sums[c.index()] / S,
                share: sums[c.index()] / window,
            })
            .collect();
        causes.sort_by(|a, b| b.share.total_cmp(&a.share));
        WhyReport {
            kind: "why",
            kernel: run.kernel.clone(),
            window_s: run.window_s,
            interval_ms: run.interval_ms,
            hooks: run.hooks.clone(),
            total: TotalWhy {
                window_s: window / S,
                dominant: causes.first().map(|c| c.cause),
                causes,
            },
            sockets,
            unsampled_sockets: a.unsampled(),
            idle_sockets: a.idle(),
            memory_pressure: Pressure {
                tcp_s: a.pressure_ns.0 as f64 / S,
                udp_s: a.pressure_ns.1 as f64 / S,
                refused: a.refusals,
                refused_not_seen: (run.unavailable)(Hook::SockExceedBufLimit),
            },
            lost_events: run.lost_events,
            stale_qdisc_skbs: a.stale_skbs,
            causes_need: CAUSES_NEED.iter().map(|(c, n)| (c.name(), *n)).collect(),
        }
    }
}

fn socket_why(a: &Analyzer, w: &Watched, run: &RunFacts) -> SocketWhy {
    let window = w.window_ns as f64;
    let causes: Vec<CauseShare> = w
        .causes()
        .into_iter()
        .map(|(c, t)| CauseShare {
            cause: c.name(),
            s: t as f64 / S,
            share: t as f64 / window,
        })
        .collect();
    let dominant = w.causes()[0].0;
    let sojourn = &w.qdisc.sojourn_ns;
    let device = &w.device_ns;
    let mut ahead: Vec<AheadOwner> = w
        .qdisc
        .ahead
        .iter()
        .map(|(&s, &b)| {
            let other = a.socket(s);
            let owner = other.and_then(|o| o.id.sender);
            AheadOwner {
                sock: s,
                pid: owner.map(|(p, _)| p),
                comm: owner.map(|(_, c)| c.to_string()),
                local: other.map(|o| o.id.local.to_string()),
                remote: other.map(|o| o.id.remote.to_string()),
                bytes: b,
                share: b as f64 / w.qdisc.ahead_total.max(1) as f64,
            }
        })
        .collect();
    ahead.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.sock.cmp(&y.sock)));
    ahead.truncate(10);
    let tcp = (w.id.protocol == Protocol::Tcp).then(|| TcpWhy {
        busy_s: w.tcp.busy_ns as f64 / S,
        rwnd_limited_s: w.tcp.rwnd_limited_ns as f64 / S,
        sndbuf_limited_s: w.tcp.sndbuf_limited_ns as f64 / S,
        zero_window_s: w.tcp.zero_window_ns as f64 / S,
        cwnd_mean: w.tcp.cwnd_area / window,
        in_flight_mean: w.tcp.in_flight_area / window,
        snd_wnd_min: w.tcp.snd_wnd_min,
        pacing_rate: w.tcp.pacing_rate,
        max_pacing_rate: w.tcp.max_pacing_rate,
        achieved_rate: w.tcp.bytes_acked.map(|b| b as f64 / (window / S)),
    });
    let tsq = w.tsq.map(|t| TsqWhy {
        limit: t.limit,
        capped: t.capped,
        congestion: w.congestion.clone(),
        limit_output_bytes: t.limit_output_bytes,
        pacing_rate: t.pacing_rate,
        pacing_shift: t.pacing_shift,
        truesize: t.truesize,
        throttled_s: w.throttled_ns as f64 / S,
    });
    let mut out = SocketWhy {
        sock: w.id.sock_id,
        ino: w.id.ino,
        protocol: w.id.protocol.name(),
        local: w.id.local.to_string(),
        remote: w.id.remote.to_string(),
        pid: w.id.sender.map(|(p, _)| p),
        comm: w.id.sender.map(|(_, c)| c.to_string()),
        netns: w.netns.and_then(|n| (run.netns_label)(n)),
        window_s: window / S,
        dominant: dominant.name(),
        reading: String::new(),
        causes,
        counters: Counters {
            queued_mean: w.queued_area / window,
            queued_max: w.queued_max,
            alloc_mean: w.alloc_area / window,
            alloc_max: w.alloc_max,
            sndbuf: w.sndbuf,
        },
        send: SendWhy {
            calls: w.send.calls,
            bytes: w.send.bytes,
            blocked_calls: w.send.blocked_calls,
            blocked_s: w.sleeps.in_window_ns as f64 / S,
            asleep_at_start: w.send.asleep_at_start,
            refused_memory: w.refused[0],
        },
        tcp,
        tsq,
        qdisc: QdiscWhy {
            skbs: sojourn.count(),
            sojourn_mean_us: sojourn.mean() / 1e3,
            sojourn_p99_us: sojourn.percentile(0.99) as f64 / 1e3,
            sojourn_max_us: sojourn.max() as f64 / 1e3,
            ahead_bytes_mean: w.qdisc.ahead_total as f64 / w.qdisc.enqueues.max(1) as f64,
            ahead,
            drops: w.qdisc.drops,
            drop_reasons: w.drops.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        },
        device: DeviceWhy {
            skbs: device.count(),
            mean_us: device.mean() / 1e3,
            p99_us: device.percentile(0.99) as f64 / 1e3,
            max_us: device.max() as f64 / 1e3,
            tx_queue: w.txq.clone(),
        },
        missing: missing(w, run),
    };
    out.reading = reading(&out, dominant);
    out
}

/// What this socket's answer could not include, and why: never a silent zero.
fn missing(w: &Watched, run: &RunFacts) -> Vec<Missing> {
    let mut m = Vec::new();
    let hook = |h: Hook| (run.unavailable)(h).map(|why| format!("hook `{}`: {why}", h.name()));
    for h in [Hook::QdiscEnqueue, Hook::QdiscDequeue] {
        if let Some(why) = hook(h) {
            m.push(Missing {
                cause: "qdisc",
                why: format!(
                    "{why}; qdisc sojourn and bytes ahead are not measured, and time at the \
                     TSQ limit is `tsq`, not split into qdisc and device"
                ),
            });
        }
    }
    if let Some(why) = hook(Hook::DriverDone) {
        m.push(Missing {
            cause: "device",
            why: format!("{why}; time in the driver is not measured"),
        });
    }
    if let Some(why) = hook(Hook::SendmsgReturn) {
        m.push(Missing {
            cause: "send_buffer",
            why: format!("{why}; send calls and bytes are not counted, nor sends that slept"),
        });
    }
    if let Some(why) = hook(Hook::SendBlocked) {
        m.push(Missing {
            cause: "send_buffer",
            why: format!("{why}; sends that slept are not counted"),
        });
    }
    if let Some(why) = hook(Hook::SkbDrop) {
        m.push(Missing {
            cause: "qdisc",
            why: format!("{why}; drops are not counted"),
        });
    }
    if w.id.protocol == Protocol::Tcp {
        if !w.tcp.has_timers {
            m.push(Missing {
                cause: "application",
                why: "tcp_info has no busy/rwnd-limited/sndbuf-limited timers (kernel before \
                      4.10): every interval is judged by the socket's state alone"
                    .into(),
            });
        }
        if !w.tcp.has_snd_wnd {
            m.push(Missing {
                cause: "receiver_window",
                why: "tcp_info has no tcpi_snd_wnd (kernel before 5.4): the receiver window is \
                      judged by the rwnd-limited timer only"
                    .into(),
            });
        }
        if w.tsq.is_none() {
            m.push(Missing {
                cause: "tsq",
                why: "no TSQ limit: no skb of this socket was seen with its truesize, or \
                      net.ipv4.tcp_limit_output_bytes was unreadable in its namespace"
                    .into(),
            });
        }
        m.push(Missing {
            cause: "sending",
            why: "pacing is told only where tcp_info's pacing rate sits at SO_MAX_PACING_RATE's \
                  cap (`paced`); \
                  sk_pacing_status and a pacing qdisc's departure times are not read: BBR's own \
                  pacing and fq's below the cap count as `sending`; the TSQ limit takes BBR as \
                  the only pacer (not the fq qdisc) and the default pacing shift (10)"
                .into(),
        });
    }
    if let Some(why) = hook(Hook::DriverXmit) {
        m.push(Missing {
            cause: "device",
            why: format!("{why}; the TX queue's state and BQL are not read"),
        });
    } else if w.txq.handoffs == 0 && w.device_ns.count() > 0 {
        m.push(Missing {
            cause: "device",
            why: "the TX queue is not in this kernel's BTF (`net_device._tx`, \
                  `sk_buff.queue_mapping`, `netdev_queue.state` or `netdev_queue_state_t`): \
                  whether the driver or BQL stopped it is not read"
                .into(),
        });
    } else if w.txq.handoffs > 0 && w.txq.bql_read == 0 {
        m.push(Missing {
            cause: "device",
            why: "BQL is not in this kernel (no `netdev_queue.dql`): its limit and inflight \
                  are not read"
                .into(),
        });
    }
    if let Some(why) = hook(Hook::SockExceedBufLimit) {
        m.push(Missing {
            cause: "memory_pressure",
            why: format!(
                "{why}; refusals of memory by the protocol's limits are not counted, only its \
                 global pressure flag is sampled (memory_pressure)"
            ),
        });
    }
    m
}

/// A socket's id as the outputs show it: the one its events gave, none (`null`) for the
/// stand-in of a socket seen only by sock_diag (`2^63 + inode`, an internal key).
fn event_sock_id<S: serde::Serializer>(sock: &u64, s: S) -> Result<S::Ok, S::Error> {
    shown_sock_id(*sock).serialize(s)
}

/// See [`event_sock_id`].
pub fn shown_sock_id(sock: u64) -> Option<u64> {
    (!crate::pipeline::seed::is_seeded(sock)).then_some(sock)
}

/// `256`, or `-` for a socket with no event (see [`event_sock_id`]).
pub fn sock_text(sock: u64) -> String {
    shown_sock_id(sock).map_or_else(|| "-".to_owned(), |id| id.to_string())
}

impl AheadOwner {
    /// `256 (10.0.0.1:5000 > 10.0.0.2:80)`: its id, and its addresses where seen.
    pub fn describe(&self) -> String {
        match (&self.local, &self.remote) {
            (Some(l), Some(r)) => format!("{} ({l} > {r})", sock_text(self.sock)),
            _ => sock_text(self.sock),
        }
    }
}

/// `QDISC_DROP 12, QDISC_OVERLIMIT 3`, most first.
fn drop_reasons(reasons: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = reasons.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The readings are human-readable text: byte sizes as every output shows them.
fn bytes(b: f64) -> String {
    crate::render::human_bytes(b)
}

/// Times in the one format of every human-readable output.
fn us(v: f64) -> String {
    crate::render::human_us(v)
}

/// One sentence on the dominant cause, with the numbers behind it.
fn reading(s: &SocketWhy, dominant: Cause) -> String {
    let share = s
        .causes
        .first()
        .map(|c| c.share * 100.0)
        .unwrap_or_default();
    let c = &s.counters;
    match dominant {
        Cause::Application => format!(
            "{share:.0}% of the time nothing was waiting to be sent: the application is not \
             writing faster (queued mean {}, {} sends)",
            bytes(c.queued_mean),
            s.send.calls
        ),
        Cause::SendBuffer => format!(
            "{share:.0}% of the time the sender waited for send-buffer memory ({} sends slept \
             {:.2} s) with no limit further down: sndbuf {} is too small for this path \
             (SO_SNDBUF, net.ipv4.tcp_wmem)",
            s.send.blocked_calls,
            s.send.blocked_s,
            bytes(c.sndbuf as f64)
        ),
        Cause::ReceiverWindow => format!(
            "{share:.0}% of the time the receiver's window was closed or full (zero window {:.2} \
             s, smallest {}): the peer is not reading fast enough; the bytes wait in the write \
             queue (queued mean {} of sndbuf {}), not below TCP (alloc mean {})",
            s.tcp.as_ref().map(|t| t.zero_window_s).unwrap_or_default(),
            s.tcp
                .as_ref()
                .and_then(|t| t.snd_wnd_min)
                .map(|w| bytes(w as f64))
                .unwrap_or_else(|| "unknown".into()),
            bytes(c.queued_mean),
            bytes(c.sndbuf as f64),
            bytes(c.alloc_mean)
        ),
        Cause::CongestionWindow => format!(
            "{share:.0}% of the time packets in flight filled the congestion window (cwnd mean \
             {:.1}, in flight {:.1}): the path's capacity or losses set the pace",
            s.tcp.as_ref().map(|t| t.cwnd_mean).unwrap_or_default(),
            s.tcp.as_ref().map(|t| t.in_flight_mean).unwrap_or_default()
        ),
        Cause::Qdisc => {
            let who = s
                .qdisc
                .ahead
                .iter()
                .find(|a| a.sock != s.sock)
                .filter(|a| a.share >= 0.05)
                .map(|a| {
                    format!(
                        "; {:.0}% of the bytes ahead were {}",
                        a.share * 100.0,
                        match (&a.pid, &a.comm) {
                            (Some(p), Some(c)) => {
                                format!("pid {p}'s ({c}, socket {})", a.describe())
                            }
                            _ => format!("socket {}'s", a.describe()),
                        }
                    )
                })
                .unwrap_or_default();
            // UDP: not writable (alloc at least half the buffer, `sock_writeable`), or not.
            let udp_full = c.alloc_mean * 2.0 >= c.sndbuf as f64;
            let dropped = match s.qdisc.drops {
                0 => String::new(),
                n if s.protocol == "udp" && !udp_full => format!(
                    "; the qdisc dropped {n} of its skbs at its limit ({}) while the send \
                     buffer was not full (alloc mean {} of sndbuf {}): the sender outruns the \
                     path and its datagrams are lost, not waiting",
                    drop_reasons(&s.qdisc.drop_reasons),
                    bytes(c.alloc_mean),
                    bytes(c.sndbuf as f64)
                ),
                n => format!(
                    "; the qdisc dropped {n} of its skbs ({})",
                    drop_reasons(&s.qdisc.drop_reasons)
                ),
            };
            format!(
                "{share:.0}% of the time its bytes sat in the qdisc{}: each skb waited {} on \
                 average (p99 {}) behind {} of queue{who}{dropped}",
                match &s.tsq {
                    // Held there by TSQ for most of that time.
                    Some(t) if t.throttled_s * 2.0 >= s.causes[0].s => format!(
                        " held within one skb (truesize {}) of TCP Small Queues' limit ({})",
                        bytes(t.truesize as f64),
                        bytes(t.limit as f64)
                    ),
                    None if s.protocol == "udp" && udp_full => format!(
                        " with the send buffer too full to write (alloc mean {} >= half of \
                         sndbuf {})",
                        bytes(c.alloc_mean),
                        bytes(c.sndbuf as f64)
                    ),
                    _ => String::new(),
                },
                us(s.qdisc.sojourn_mean_us),
                us(s.qdisc.sojourn_p99_us),
                bytes(s.qdisc.ahead_bytes_mean)
            )
        }
        Cause::Device => format!(
            "{share:.0}% of the time its bytes were past the qdisc, in the device's hands \
             (alloc mean {}; driver time mean {}, p99 {}; {}): the device or its completions \
             are slow",
            bytes(c.alloc_mean),
            us(s.device.mean_us),
            us(s.device.p99_us),
            s.device.tx_queue.describe()
        ),
        Cause::Tsq => format!(
            "{share:.0}% of the time TCP Small Queues held it back (alloc within one skb of \
             the limit: alloc + truesize {} > limit {}; alloc max {})",
            s.tsq
                .as_ref()
                .map(|t| bytes(t.truesize as f64))
                .unwrap_or_default(),
            s.tsq
                .as_ref()
                .map(|t| bytes(t.limit as f64))
                .unwrap_or_default(),
            bytes(c.alloc_max as f64)
        ),
        Cause::Paced => {
            let t = s.tcp.as_ref();
            let rate = |r: Option<f64>| r.map(|r| format!("{}/s", bytes(r))).unwrap_or_default();
            format!(
                "{share:.0}% of the time its pacing rate held it back: capped at {} \
                 (SO_MAX_PACING_RATE), {} acknowledged on average, with unsent bytes waiting",
                rate(t.and_then(|t| t.max_pacing_rate).map(|r| r as f64)),
                rate(t.and_then(|t| t.achieved_rate))
            )
        }
        Cause::Sending => format!(
            "{share:.0}% of the time data was moving with no limit binding when sampled: the \
             socket sends as fast as the path lets it (or pacing holds it)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_with_no_event_shows_no_id() {
        let seeded = AheadOwner {
            sock: crate::pipeline::seed::SEEDED | 621_851,
            pid: None,
            comm: None,
            local: Some("10.0.0.1:5000".into()),
            remote: Some("10.0.0.2:80".into()),
            bytes: 1,
            share: 1.0,
        };
        assert_eq!(seeded.describe(), "- (10.0.0.1:5000 > 10.0.0.2:80)");
        let json = serde_json::to_value(&seeded).unwrap();
        assert!(json["sock"].is_null(), "{json}");
        let seen = AheadOwner {
            sock: 256,
            ..seeded
        };
        assert_eq!(seen.describe(), "256 (10.0.0.1:5000 > 10.0.0.2:80)");
        assert_eq!(serde_json::to_value(&seen).unwrap()["sock"], 256);
        assert_eq!(sock_text(crate::pipeline::seed::SEEDED | 7), "-");
    }
}
