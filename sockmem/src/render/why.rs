//! `why`'s output: a block per socket (dominant cause first, a bar per cause, the numbers
//! behind them), or the report as one JSON document.

use std::io::{self, Write};

use crate::pipeline::why::report::{sock_text, CauseShare, SocketWhy, WhyReport};
use crate::render::{human_bytes, human_us};

pub fn write_json(out: &mut dyn Write, r: &WhyReport) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, r)?;
    writeln!(out)
}

const BAR: usize = 30;

fn write_causes(out: &mut dyn Write, causes: &[CauseShare]) -> io::Result<()> {
    for c in causes.iter().filter(|c| c.share >= 0.0005) {
        let n = (c.share * BAR as f64).round() as usize;
        writeln!(
            out,
            "  {:<18} {:>6.1}%  {:>8.3} s  |{:<BAR$}|",
            c.cause,
            c.share * 100.0,
            c.s,
            "@".repeat(n.min(BAR))
        )?;
    }
    Ok(())
}

fn write_socket(out: &mut dyn Write, s: &SocketWhy) -> io::Result<()> {
    let who = match (&s.pid, &s.comm) {
        (Some(p), Some(c)) => format!("pid {p} ({c})"),
        _ => "sender unknown".into(),
    };
    writeln!(
        out,
        "{} {} > {}  sock {} ino {}  {who}{}  watched {:.2} s",
        s.protocol,
        s.local,
        s.remote,
        sock_text(s.sock),
        s.ino,
        s.netns
            .as_deref()
            .map(|n| format!("  netns {n}"))
            .unwrap_or_default(),
        s.window_s
    )?;
    write_causes(out, &s.causes)?;
    writeln!(out, "  => {}: {}", s.dominant, s.reading)?;
    let c = &s.counters;
    writeln!(
        out,
        "  counters: queued mean {} (max {}), alloc mean {} (max {}), sndbuf {}",
        human_bytes(c.queued_mean),
        human_bytes(c.queued_max as f64),
        human_bytes(c.alloc_mean),
        human_bytes(c.alloc_max as f64),
        human_bytes(c.sndbuf as f64)
    )?;
    writeln!(
        out,
        "  send: {} calls, {}; {} slept for {:.3} s{}",
        s.send.calls,
        human_bytes(s.send.bytes as f64),
        s.send.blocked_calls,
        s.send.blocked_s,
        match s.send.asleep_at_start {
            0 => String::new(),
            1 => " (1 call asleep since before the run, counted from its start)".to_owned(),
            n => format!(" ({n} calls asleep since before the run, counted from its start)"),
        }
    )?;
    if s.send.refused_memory > 0 {
        writeln!(
            out,
            "  memory refused {} time(s) by the protocol's limit (sock_exceed_buf_limit)",
            s.send.refused_memory
        )?;
    }
    if let Some(t) = &s.tcp {
        writeln!(
            out,
            "  tcp (the kernel's timers, as ss -ti): busy {:.3} s, rwnd-limited {:.3} s, \
             sndbuf-limited {:.3} s; zero window {:.3} s; cwnd mean {:.1}, in flight {:.1}{}",
            t.busy_s,
            t.rwnd_limited_s,
            t.sndbuf_limited_s,
            t.zero_window_s,
            t.cwnd_mean,
            t.in_flight_mean,
            t.snd_wnd_min
                .map(|w| format!(", smallest window {}", human_bytes(w as f64)))
                .unwrap_or_default()
        )?;
        let rate =
            |r: Option<f64>| r.map_or("unlimited".to_string(), |r| format!("{}/s", human_bytes(r)));
        writeln!(
            out,
            "  pacing: rate {}, cap (SO_MAX_PACING_RATE) {}; acknowledged {}",
            rate(t.pacing_rate.map(|r| r as f64)),
            rate(t.max_pacing_rate.map(|r| r as f64)),
            t.achieved_rate
                .map_or("not read".to_string(), |r| format!("{}/s", human_bytes(r)))
        )?;
    }
    if let Some(t) = &s.tsq {
        let inner = format!(
            "max(2 x truesize {}, pacing rate {}/s >> {})",
            human_bytes(t.truesize as f64),
            human_bytes(t.pacing_rate as f64),
            t.pacing_shift
        );
        let formula = if t.capped {
            format!(
                "min({inner}, tcp_limit_output_bytes {})",
                human_bytes(t.limit_output_bytes as f64)
            )
        } else {
            format!(
                "{inner} (paced by {}: tcp_limit_output_bytes does not cap it before 6.16)",
                t.congestion.as_deref().unwrap_or("?")
            )
        };
        writeln!(
            out,
            "  tsq: limit {} = {formula}; within one skb of the limit (alloc + truesize > \
             limit) {:.3} s",
            human_bytes(t.limit as f64),
            t.throttled_s
        )?;
    }
    let q = &s.qdisc;
    if q.skbs > 0 || !q.drop_reasons.is_empty() {
        write!(
            out,
            "  qdisc: {} skbs, sojourn mean {}, p99 {}, max {}; {} ahead on average",
            q.skbs,
            human_us(q.sojourn_mean_us),
            human_us(q.sojourn_p99_us),
            human_us(q.sojourn_max_us),
            human_bytes(q.ahead_bytes_mean)
        )?;
        for a in q.ahead.iter().take(3) {
            let who = if a.sock == s.sock {
                "itself".to_string()
            } else {
                match (&a.pid, &a.comm) {
                    (Some(p), Some(c)) => format!("pid {p} ({c}) sock {}", a.describe()),
                    _ => format!("sock {}", a.describe()),
                }
            };
            write!(out, "; {:.0}% {who}", a.share * 100.0)?;
        }
        if !q.drop_reasons.is_empty() {
            let reasons: Vec<String> = q
                .drop_reasons
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            write!(
                out,
                "; {} qdisc drops (every drop: {})",
                q.drops,
                reasons.join(", ")
            )?;
        }
        writeln!(out)?;
    }
    let d = &s.device;
    if d.skbs > 0 {
        writeln!(
            out,
            "  device: {} skbs, driver time mean {}, p99 {}, max {}",
            d.skbs,
            human_us(d.mean_us),
            human_us(d.p99_us),
            human_us(d.max_us)
        )?;
    }
    if d.tx_queue.handoffs > 0 {
        writeln!(out, "  device: {}", d.tx_queue.describe())?;
    }
    writeln!(out)
}

pub fn write_text(out: &mut dyn Write, r: &WhyReport) -> io::Result<()> {
    writeln!(
        out,
        "sockmem why: {:.1} s on kernel {}, sampled every {} ms; {} socket(s)",
        r.window_s,
        r.kernel,
        r.interval_ms,
        r.sockets.len()
    )?;
    writeln!(out)?;
    for s in &r.sockets {
        write_socket(out, s)?;
    }
    if r.sockets.is_empty() {
        writeln!(out, "no matching socket sent anything while watched")?;
    } else {
        writeln!(
            out,
            "total over {} socket(s), {:.2} s of socket time:",
            r.sockets.len(),
            r.total.window_s
        )?;
        write_causes(out, &r.total.causes)?;
    }
    if r.unsampled_sockets > 0 {
        writeln!(
            out,
            "{} more matching socket(s) lived too briefly to be sampled twice",
            r.unsampled_sockets
        )?;
    }
    // Said once for all sockets (JSON has them per socket).
    let mut missing: Vec<(&str, &str)> = r
        .sockets
        .iter()
        .flat_map(|s| s.missing.iter().map(|m| (m.cause, m.why.as_str())))
        .collect();
    missing.sort();
    missing.dedup();
    for (cause, why) in missing {
        writeln!(out, "not measured ({cause}): {why}")?;
    }
    if r.idle_sockets > 0 {
        writeln!(
            out,
            "{} more matching socket(s) had nothing to send (receivers, idle connections)",
            r.idle_sockets
        )?;
    }
    let p = &r.memory_pressure;
    if p.tcp_s > 0.0 || p.udp_s > 0.0 {
        writeln!(
            out,
            "memory pressure: TCP {:.3} s, UDP {:.3} s",
            p.tcp_s, p.udp_s
        )?;
    }
    let f = &p.refused;
    if f.total() > 0 {
        writeln!(
            out,
            "memory refused by the protocol's limit (sock_exceed_buf_limit): TCP {} send, {} \
             receive; UDP {} send, {} receive",
            f.tcp_send, f.tcp_recv, f.udp_send, f.udp_recv
        )?;
    }
    if r.lost_events > 0 {
        writeln!(
            out,
            "{} events lost (ring buffer full): qdisc and send figures undercount",
            r.lost_events
        )?;
    }
    Ok(())
}
