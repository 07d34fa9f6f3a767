//! `sockmem export --perfetto`: a recording as Chrome trace-event JSON (the "JSON Object
//! Format"), which Perfetto (ui.perfetto.dev: Open trace file) and chrome://tracing open.
//!
//! - A process per sender (`pid` = the sender's tgid; 0 for sockets no event named a sender),
//!   named by `process_name` metadata (`"M"`).
//! - Per socket, counter tracks (`"C"`, `args.bytes`): `sock ID sk_wmem_queued`,
//!   `sock ID sk_wmem_alloc` and `sock ID sk_sndbuf`, one value per event that read them.
//! - Per socket, two threads named by its 4-tuple (`thread_name`): `sendmsg` with a slice (`"X"`)
//!   per `sendmsg` call (its `sendmsg_ret`: return value in `args.ret`), and `blocked` with a
//!   slice per `send_blocked` (time asleep in a send call, `args.sleeps`).
//! - Per skb, async slices (`"b"`/`"e"`, one id each, so that overlapping skbs do not nest):
//!   `qdisc sock ID` from `qdisc_enqueue` to `qdisc_dequeue` (paired by skb address), `driver
//!   sock ID` for the time in the driver (`driver_done`).
//!
//! Timestamps and durations are in microseconds since the recording started.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::pipeline::timeline::{SocketTimeline, Span, Timeline};

/// Thread ids of the per-socket tracks start here: above any real pid (`pid_max` ≤ 2^22), so
/// that no track is taken for a process's main thread.
const TID_BASE: u64 = 10_000_000;

pub struct Counts {
    pub events: u64,
    pub processes: usize,
}

/// Writes the whole trace to `out`.
pub fn write(t: &Timeline, out: &mut impl Write) -> io::Result<Counts> {
    let mut w = EventWriter {
        out,
        first: true,
        events: 0,
    };
    w.out.write_all(b"{\"traceEvents\":[\n")?;
    let us = |ns: u64| t.rel_ns(ns) as f64 / 1e3;
    let pid_of = |s: &SocketTimeline| s.sender.as_ref().map_or(0, |(tgid, _)| *tgid);
    let mut processes: Vec<u32> = Vec::new();
    for s in &t.sockets {
        let pid = pid_of(s);
        if !processes.contains(&pid) {
            processes.push(pid);
            let name = match &s.sender {
                Some((tgid, comm)) => format!("{comm} ({tgid})"),
                None => "sockets without a known sender".to_owned(),
            };
            w.event(json!({"ph": "M", "name": "process_name", "pid": pid,
                           "args": {"name": name}}))?;
        }
    }
    let mut async_id = 0u64;
    for (i, s) in t.sockets.iter().enumerate() {
        let pid = pid_of(s);
        let track = format!("sock {} {}", s.sock_id, s.four_tuple());
        let (sendmsg_tid, blocked_tid) = (TID_BASE + 2 * i as u64, TID_BASE + 2 * i as u64 + 1);
        for (tid, what, order) in [
            (sendmsg_tid, "sendmsg", 2 * i),
            (blocked_tid, "blocked", 2 * i + 1),
        ] {
            w.event(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                           "args": {"name": format!("{track}: {what}")}}),
            )?;
            w.event(
                json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                           "args": {"sort_index": order}}),
            )?;
        }
        // The events' readings: a counter track holds each until the next anyway.
        for r in s.readings.iter().filter(|r| !r.snapshot) {
            for (counter, v) in [
                ("sk_wmem_queued", r.queued),
                ("sk_wmem_alloc", r.alloc),
                ("sk_sndbuf", r.sndbuf),
            ] {
                w.event(
                    json!({"ph": "C", "name": format!("sock {} {counter}", s.sock_id),
                               "pid": pid, "ts": us(r.ts_ns), "args": {"bytes": v}}),
                )?;
            }
        }
        let slice = |name: &str, tid: u64, sp: &Span, args: Value| {
            json!({"ph": "X", "name": name, "cat": "socket", "pid": pid, "tid": tid,
                   "ts": us(sp.start_ns), "dur": (sp.end_ns - sp.start_ns) as f64 / 1e3,
                   "args": args})
        };
        for c in &s.sendmsg {
            w.event(slice("sendmsg", sendmsg_tid, c, json!({"ret": c.value})))?;
        }
        for b in &s.blocked {
            w.event(slice(
                "blocked in send",
                blocked_tid,
                b,
                json!({"sleeps": b.value}),
            ))?;
        }
        for (cat, spans) in [("qdisc", &s.qdisc), ("driver", &s.driver)] {
            let name = format!("{cat} sock {}", s.sock_id);
            for sp in spans {
                async_id += 1;
                let id = format!("{async_id:#x}");
                w.event(
                    json!({"ph": "b", "cat": cat, "name": name, "id": id, "pid": pid,
                               "tid": sendmsg_tid, "ts": us(sp.start_ns),
                               "args": {"len": sp.value}}),
                )?;
                w.event(
                    json!({"ph": "e", "cat": cat, "name": name, "id": id, "pid": pid,
                               "tid": sendmsg_tid, "ts": us(sp.end_ns)}),
                )?;
            }
        }
        for d in &s.drops {
            w.event(
                json!({"ph": "i", "s": "t", "name": "skb drop", "cat": "socket",
                           "pid": pid, "tid": sendmsg_tid, "ts": us(d.ts_ns),
                           "args": {"reason": d.reason}}),
            )?;
        }
    }
    let events = w.events;
    let other = json!({"kernel": t.kernel, "tool": "sockmem",
                       "version": env!("CARGO_PKG_VERSION")});
    write!(
        out_of(w),
        "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{other}}}\n"
    )?;
    Ok(Counts {
        events,
        processes: processes.len(),
    })
}

struct EventWriter<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    events: u64,
}

fn out_of<W: Write>(w: EventWriter<'_, W>) -> &mut W {
    w.out
}

impl<W: Write> EventWriter<'_, W> {
    fn event(&mut self, v: Value) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        self.events += 1;
        serde_json::to_writer(&mut *self.out, &v).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sockmem_common::{
        event::{FLAG_HAS_SKB, FLAG_OWNER_FROM_SEND},
        Hook,
    };

    use super::*;
    use crate::{
        cli::FilterArgs,
        pipeline::timeline::tests::{at, timeline},
    };

    #[test]
    fn a_trace_of_counters_slices_and_async_skb_spans_by_process() {
        let skb = |addr: u64| {
            move |r: &mut sockmem_common::SockEvent| {
                r.flags |= FLAG_HAS_SKB;
                r.skb = addr;
                r.skb_len = 1000;
            }
        };
        let t = timeline(
            &[
                at(Hook::TcpSendmsg, 1, |r| {
                    r.wmem_queued = 100;
                    r.flags |= FLAG_OWNER_FROM_SEND;
                }),
                at(Hook::QdiscEnqueue, 2, skb(1)),
                at(Hook::QdiscEnqueue, 3, skb(2)),
                at(Hook::QdiscDequeue, 4, skb(1)),
                at(Hook::QdiscDequeue, 5, skb(2)),
                at(Hook::SendmsgReturn, 6, |r| {
                    (r.value, r.duration_ns) = (10, 5_000_000)
                }),
                at(Hook::TcpSendmsg, 7, |r| {
                    (r.sock_id, r.tgid, r.lport) = (9, 200, 1);
                    r.flags |= FLAG_OWNER_FROM_SEND;
                }),
            ],
            &FilterArgs::default(),
        );
        let mut out = Vec::new();
        let counts = write(&t, &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).expect("valid JSON");
        let evs = doc["traceEvents"].as_array().unwrap();
        assert_eq!(counts.events as usize, evs.len());
        assert_eq!(counts.processes, 2);
        let of = |ph: &'static str| evs.iter().filter(move |e| e["ph"] == ph);
        let names: Vec<_> = of("M")
            .filter(|e| e["name"] == "process_name")
            .map(|e| {
                (
                    e["pid"].as_u64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, [(100, "sender (100)"), (200, "sender (200)")]);
        let queued: Vec<_> = of("C")
            .filter(|e| e["name"] == "sock 769 sk_wmem_queued")
            .map(|e| {
                (
                    e["ts"].as_f64().unwrap(),
                    e["args"]["bytes"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(queued.len(), 6);
        assert_eq!(queued[0], (1000.0, 100), "µs since the start");
        let sendmsg: Vec<_> = of("X").filter(|e| e["name"] == "sendmsg").collect();
        assert_eq!(sendmsg.len(), 1);
        assert_eq!(
            (sendmsg[0]["ts"].as_f64(), sendmsg[0]["dur"].as_f64()),
            (Some(1000.0), Some(5000.0))
        );
        // Overlapping skbs in the qdisc: async pairs, one id each.
        let mut spans: HashMap<String, (f64, f64)> = HashMap::new();
        for e in of("b") {
            spans.entry(e["id"].as_str().unwrap().into()).or_default().0 =
                e["ts"].as_f64().unwrap();
        }
        for e in of("e") {
            spans
                .get_mut(e["id"].as_str().unwrap())
                .expect("an end has its begin")
                .1 = e["ts"].as_f64().unwrap();
        }
        let mut spans: Vec<_> = spans.into_values().collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(spans, [(2000.0, 4000.0), (3000.0, 5000.0)]);
        assert!(of("M").any(|e| e["name"] == "thread_name"
            && e["args"]["name"] == "sock 769 tcp 198.18.0.1:40000 > 198.18.0.2:5201: sendmsg"));
    }
}
