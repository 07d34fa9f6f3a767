//! JSON lines: a header, one object per event, a summary.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use serde::Serialize;

use super::{
    time::{wall, write_wall, Clock},
    write_info, write_ip, Finish, RunInfo, Sink, Summary,
};
use crate::{
    attach::stats::HookCost,
    cli::TimeMode,
    kernel::sock_diag::SockMem,
    pipeline::{
        decode::{Event, Owner},
        snapshot::Snapshot,
        track::{Deltas, SocketState},
    },
    recording::format::ClockAnchor,
};

pub struct JsonSink<W: Write> {
    out: W,
    /// Output `sk`/`skb` kernel addresses (`--kernel-addrs`).
    kernel_addrs: bool,
    /// The event line being written, and its `info` text: reused, so an event costs no
    /// allocation.
    line: Vec<u8>,
    info: String,
    /// The header's clock anchor and `--time`: `wall` adds a `wall` field to events and
    /// snapshots.
    clock: Option<Clock>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, kernel_addrs: bool) -> Self {
        JsonSink {
            out,
            kernel_addrs,
            line: Vec::with_capacity(1024),
            info: String::with_capacity(128),
            clock: None,
        }
    }

    /// The clock anchor goes into the header; `--time wall` adds `wall` to events and
    /// snapshots (`ts_ns` and `time_s` are always there).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    fn wall_clock(&self) -> Option<Clock> {
        self.clock.filter(|c| c.mode == TimeMode::Wall)
    }

    fn line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }
}

#[derive(Serialize)]
struct JsonHook<'a> {
    hook: &'a str,
    backend: &'a str,
    attach: &'a str,
    attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Header<'a> {
    r#type: &'static str,
    version: &'static str,
    kernel: &'a str,
    ring_size: u32,
    hooks: Vec<JsonHook<'a>>,
    /// `--time`: how the text shows times (JSON events always carry `ts_ns` and `time_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'static str>,
    /// CLOCK_REALTIME and CLOCK_MONOTONIC read together at time 0: an event's wall time is
    /// `realtime_ns + ts_ns - monotonic_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<ClockAnchor>,
}

/// The kernel's counters as `ss -m` names them (`skmem:(r,rb,t,tb,f,w,o,bl,d)`).
#[derive(Serialize)]
struct Skmem {
    r: u32,
    rb: u32,
    t: u32,
    tb: u32,
    f: u32,
    w: u32,
    o: u32,
    bl: u32,
    d: u32,
}

#[derive(Serialize)]
struct LastCounters {
    wmem_queued: i32,
    wmem_alloc: i32,
}

#[derive(Serialize)]
struct JsonSnapshot<'a> {
    r#type: &'static str,
    time_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    wall: Option<String>,
    sock: u64,
    ino: u64,
    netns: &'a str,
    proto: &'static str,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    state: &'static str,
    skmem: Skmem,
    /// The socket's last event's counters (`null`: no event read them).
    last_event: Option<LastCounters>,
    /// `agrees`, `explained` or `differs`.
    agreement: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSocket<'a> {
    r#type: &'static str,
    sock: u64,
    ino: u64,
    proto: &'static str,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    pid: Option<u32>,
    comm: Option<&'a str>,
    events: u64,
    wmem_queued: Option<i32>,
    wmem_queued_max: i32,
    wmem_alloc: Option<i32>,
    wmem_alloc_max: i32,
    sndbuf: i32,
    destroyed: bool,
    /// The last snapshot's `w`, `t`, `tb` and agreement, where one was taken.
    snapshot: Option<serde_json::Value>,
}

fn skmem(k: &SockMem) -> Skmem {
    Skmem {
        r: k.rmem_alloc,
        rb: k.rcvbuf,
        t: k.wmem_alloc,
        tb: k.sndbuf,
        f: k.fwd_alloc,
        w: k.wmem_queued,
        o: k.optmem,
        bl: k.backlog,
        d: k.drops,
    }
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    r#type: &'static str,
    events: u64,
    lost: u64,
    lost_per_cpu: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_per_hook: Option<&'a BTreeMap<String, u64>>,
    sockets: u64,
    elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bpf_stats: Option<&'a [HookCost]>,
}

impl<W: Finish> Sink for JsonSink<W> {
    fn header(&mut self, info: &RunInfo) -> io::Result<()> {
        let hooks = info
            .hooks
            .iter()
            .map(|h| JsonHook {
                hook: h.hook,
                backend: &h.backend,
                attach: &h.attach,
                attached: h.unavailable.is_none(),
                reason: h.unavailable.as_deref(),
            })
            .collect();
        self.line(&Header {
            r#type: "header",
            version: env!("CARGO_PKG_VERSION"),
            kernel: &info.kernel,
            ring_size: info.ring_size,
            hooks,
            time: self.clock.map(|c| c.mode.name()),
            clock: self.clock.map(|c| c.anchor),
        })
    }

    fn event(&mut self, e: &Event, d: Deltas, time_s: f64) -> io::Result<()> {
        // Written by hand, field by field, into a reused buffer (serde for each value, so
        // numbers and strings come out exactly as serde writes them): the derived `Serialize`
        // of a struct holding formatted strings cost several allocations per event.
        // `tests::reference_event` is the same object through serde, and a test holds the two
        // against each other.
        let skb = e.skb.as_ref();
        let l = &mut self.line;
        l.clear();
        macro_rules! field {
            ($key:literal, $value:expr) => {
                l.extend_from_slice(concat!(",\"", $key, "\":").as_bytes());
                serde_json::to_writer(&mut *l, &$value)?;
            };
        }
        // Our own words, which need no escaping.
        macro_rules! word {
            ($key:literal, $value:expr) => {
                l.extend_from_slice(concat!(",\"", $key, "\":\"").as_bytes());
                l.extend_from_slice($value.as_bytes());
                l.push(b'"');
            };
        }
        l.extend_from_slice(b"{\"type\":\"event\"");
        field!("ts_ns", e.ts_ns);
        field!("time_s", time_s);
        if let Some(c) = self.clock.filter(|c| c.mode == TimeMode::Wall) {
            l.extend_from_slice(b",\"wall\":\"");
            write_wall(l, c.wall_ns(e.ts_ns));
            l.push(b'"');
        }
        field!("cpu", e.cpu);
        // No sender to name (softirq before any `sendmsg`): null, as the socket lines have it,
        // not pid 0 and an empty name.
        if e.owner == Owner::Unknown {
            l.extend_from_slice(b",\"pid\":null,\"tgid\":null,\"comm\":null");
        } else {
            field!("pid", e.pid);
            field!("tgid", e.tgid);
            field!("comm", e.comm.as_str());
        }
        word!("owner", e.owner.name());
        word!("hook", e.hook.name());
        field!("sock", e.sock_id);
        field!("ino", e.ino);
        field!("cgroup_id", e.cgroup_id);
        field!("cgroup", e.cgroup_name());
        field!("netns_ino", e.netns_ino);
        field!("netns", e.netns_name());
        if self.kernel_addrs {
            write!(l, ",\"sk\":\"{:#x}\"", e.sk)?;
            if let Some(s) = skb {
                write!(l, ",\"skb\":\"{:#x}\"", s.skb)?;
            }
        }
        field!("has_skb", skb.is_some());
        word!("family", if e.local.is_ipv4() { "ipv4" } else { "ipv6" });
        word!("proto", e.protocol.name());
        l.extend_from_slice(b",\"laddr\":\"");
        write_ip(l, e.local.ip())?;
        l.push(b'"');
        field!("lport", e.local.port());
        l.extend_from_slice(b",\"raddr\":\"");
        write_ip(l, e.remote.ip())?;
        l.push(b'"');
        field!("rport", e.remote.port());
        field!("wmem_queued", (!e.freed).then_some(e.wmem_queued));
        field!("wmem_queued_delta", d.wmem_queued);
        field!("wmem_alloc", (!e.freed).then_some(e.wmem_alloc));
        field!("wmem_alloc_delta", d.wmem_alloc);
        field!("sndbuf", (!e.freed).then_some(e.sndbuf));
        field!("len", skb.map(|s| s.len));
        field!("truesize", skb.map(|s| s.truesize));
        field!("ifindex", skb.map(|s| s.ifindex).filter(|&i| i != 0));
        field!(
            "iface",
            skb.map(|s| s.iface.as_str()).filter(|s| !s.is_empty())
        );
        field!("value", e.value);
        field!("duration_ns", e.duration_ns);
        self.info.clear();
        write_info(&mut self.info, e).map_err(io::Error::other)?;
        field!("info", self.info.as_str());
        l.extend_from_slice(b"}\n");
        self.out.write_all(l)
    }

    fn snapshot(&mut self, s: &Snapshot, st: &SocketState, time_s: f64) -> io::Result<()> {
        let k = &s.kernel;
        let wall = self
            .wall_clock()
            .map(|c| wall(c.wall_ns(c.mono_ns(time_s))));
        self.line(&JsonSnapshot {
            r#type: "snapshot",
            time_s,
            wall,
            sock: s.sock_id,
            ino: k.ino,
            netns: &s.netns,
            proto: st.id.protocol.name(),
            laddr: k.local.ip().to_string(),
            lport: k.local.port(),
            raddr: k.remote.ip().to_string(),
            rport: k.remote.port(),
            state: k.state_name(),
            skmem: skmem(k),
            last_event: s.last.map(|(q, a)| LastCounters {
                wmem_queued: q,
                wmem_alloc: a,
            }),
            agreement: s.agreement.word(),
            note: s.agreement.note(),
        })
    }

    fn sockets(&mut self, table: &[(&SocketState, Option<&Snapshot>)]) -> io::Result<()> {
        for (st, snap) in table {
            self.line(&JsonSocket {
                r#type: "socket",
                sock: st.id.sock_id,
                ino: st.id.ino,
                proto: st.id.protocol.name(),
                laddr: st.id.local.ip().to_string(),
                lport: st.id.local.port(),
                raddr: st.id.remote.ip().to_string(),
                rport: st.id.remote.port(),
                pid: st.id.sender.as_ref().map(|s| s.0),
                comm: st.id.sender.as_ref().map(|s| s.1.as_str()),
                events: st.events,
                wmem_queued: st.last.map(|l| l.0),
                wmem_queued_max: st.max_queued,
                wmem_alloc: st.last.map(|l| l.1),
                wmem_alloc_max: st.max_alloc,
                sndbuf: st.sndbuf,
                destroyed: st.destroyed,
                snapshot: snap.map(|s| {
                    serde_json::json!({
                        "w": s.kernel.wmem_queued, "t": s.kernel.wmem_alloc,
                        "tb": s.kernel.sndbuf, "state": s.kernel.state_name(),
                        "agreement": s.agreement.word(),
                    })
                }),
            })?;
        }
        Ok(())
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line(&JsonSummary {
            r#type: "summary",
            events: s.events,
            lost: s.lost,
            lost_per_cpu: &s.lost_per_cpu,
            missed: s.missed_per_hook.as_ref().map(|m| m.values().sum()),
            missed_per_hook: s.missed_per_hook.as_ref(),
            sockets: s.sockets,
            elapsed_s: s.elapsed_s,
            bpf_stats: s.bpf_stats.as_deref(),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::Hook;
    use std::net::IpAddr;

    #[derive(Serialize)]
    struct JsonEvent<'a> {
        r#type: &'static str,
        ts_ns: u64,
        time_s: f64,
        cpu: u32,
        pid: Option<u32>,
        tgid: Option<u32>,
        comm: Option<&'a str>,
        owner: &'static str,
        hook: &'static str,
        /// The socket's identity while sockmem runs.
        sock: u64,
        /// The socket's inode number, as `ss -e` shows it (`ino:`); 0 when unknown.
        ino: u64,
        /// The sender's cgroup v2 id; 0 when the sender is unknown.
        cgroup_id: u64,
        /// Its path under the cgroup2 root; `null` when the sender is unknown.
        cgroup: Option<String>,
        netns_ino: u32,
        /// The `ip netns` name, or `ino:N`; `null` when not read.
        netns: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sk: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skb: Option<String>,
        /// Whether the event carries an skb.
        has_skb: bool,
        family: &'static str,
        proto: &'static str,
        laddr: String,
        lport: u16,
        raddr: String,
        rport: u16,
        /// `null` when the socket was being freed (nothing to read).
        wmem_queued: Option<i32>,
        wmem_queued_delta: i64,
        wmem_alloc: Option<i32>,
        wmem_alloc_delta: i64,
        sndbuf: Option<i32>,
        len: Option<u32>,
        truesize: Option<u32>,
        ifindex: Option<u32>,
        iface: Option<&'a str>,
        value: i64,
        duration_ns: u64,
        info: String,
    }

    /// The event object as the derived `Serialize` writes it: what `JsonSink::event` must equal.
    fn reference_event(e: &Event, d: Deltas, time_s: f64, kernel_addrs: bool) -> String {
        let skb = e.skb.as_ref();
        let known = e.owner != Owner::Unknown;
        serde_json::to_string(&JsonEvent {
            r#type: "event",
            ts_ns: e.ts_ns,
            time_s,
            cpu: e.cpu,
            pid: known.then_some(e.pid),
            tgid: known.then_some(e.tgid),
            comm: known.then_some(e.comm.as_str()),
            owner: e.owner.name(),
            hook: e.hook.name(),
            sock: e.sock_id,
            ino: e.ino,
            cgroup_id: e.cgroup_id,
            cgroup: e.cgroup_name().map(|c| c.into_owned()),
            netns_ino: e.netns_ino,
            netns: e.netns_name().map(|n| n.into_owned()),
            sk: kernel_addrs.then(|| format!("{:#x}", e.sk)),
            skb: skb
                .filter(|_| kernel_addrs)
                .map(|s| format!("{:#x}", s.skb)),
            has_skb: skb.is_some(),
            family: if e.local.is_ipv4() { "ipv4" } else { "ipv6" },
            proto: e.protocol.name(),
            laddr: e.local.ip().to_string(),
            lport: e.local.port(),
            raddr: e.remote.ip().to_string(),
            rport: e.remote.port(),
            wmem_queued: (!e.freed).then_some(e.wmem_queued),
            wmem_queued_delta: d.wmem_queued,
            wmem_alloc: (!e.freed).then_some(e.wmem_alloc),
            wmem_alloc_delta: d.wmem_alloc,
            sndbuf: (!e.freed).then_some(e.sndbuf),
            len: skb.map(|s| s.len),
            truesize: skb.map(|s| s.truesize),
            ifindex: skb.map(|s| s.ifindex).filter(|&i| i != 0),
            iface: skb.map(|s| s.iface.as_str()).filter(|s| !s.is_empty()),
            value: e.value,
            duration_ns: e.duration_ns,
            info: super::super::describe(e),
        })
        .expect("serializable")
    }

    #[test]
    fn hand_written_events_equal_serde_s() {
        use sockmem_common::event::{FLAG_HAS_SKB, FLAG_OWNER_UNKNOWN, FLAG_SOCK_FREED};
        let mut cases = Vec::new();
        for hook in [
            Hook::SendmsgReturn,
            Hook::SkbFree,
            Hook::TcpSendmsg,
            Hook::DriverDone,
        ] {
            for flags in [
                0,
                FLAG_HAS_SKB,
                FLAG_HAS_SKB | FLAG_SOCK_FREED,
                FLAG_HAS_SKB | FLAG_OWNER_UNKNOWN,
            ] {
                let mut raw = raw_event(hook);
                raw.flags = flags;
                raw.skb = 0xffff_8880_0000_1000;
                raw.skb_len = 1448;
                raw.ifindex = 3;
                raw.ifname[..4].copy_from_slice(b"eth0");
                raw.value = -11;
                raw.duration_ns = 12_345;
                cases.push(raw);
            }
        }
        // A command name with what JSON must escape, and one that is not UTF-8.
        let mut raw = raw_event(Hook::TcpAck);
        raw.comm[..7].copy_from_slice(b"a\"b\\c\n\x01");
        cases.push(raw);
        let mut raw = raw_event(Hook::TcpAck);
        raw.comm[..3].copy_from_slice(b"\xff\xfeA");
        raw.family = libc::AF_INET6 as u16;
        raw.laddr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        cases.push(raw);
        for raw in &cases {
            let e = Event::from_raw(raw).unwrap();
            for (kernel_addrs, time_s) in [(false, 0.0), (true, 1.5), (false, 1_234.000_001_5)] {
                let d = Deltas {
                    wmem_queued: -5,
                    wmem_alloc: 7,
                };
                let mut buf = Vec::new();
                JsonSink::new(&mut buf, kernel_addrs)
                    .event(&e, d, time_s)
                    .unwrap();
                let text = String::from_utf8(buf).expect("UTF-8");
                assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
                let _: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
                // The same keys, values and order as serde writes them.
                assert_eq!(
                    text.trim_end(),
                    reference_event(&e, d, time_s, kernel_addrs)
                );
            }
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "198.18.0.1",
            "fd00::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut l = Vec::new();
            write_ip(&mut l, ip).unwrap();
            assert_eq!(String::from_utf8(l).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn every_line_is_a_json_object() {
        let mut buf = Vec::new();
        let mut sink = JsonSink::new(&mut buf, false);
        sink.header(&RunInfo {
            kernel: "6.18".into(),
            ring_size: 4096,
            hooks: vec![super::super::HookLine {
                hook: "tcp_ack",
                backend: "tracepoint".into(),
                attach: "tcp:tcp_probe".into(),
                unavailable: None,
            }],
        })
        .unwrap();
        let e = Event::from_raw(&raw_event(Hook::SendmsgReturn)).unwrap();
        sink.event(
            &e,
            Deltas {
                wmem_queued: -5,
                wmem_alloc: 3,
            },
            1.5,
        )
        .unwrap();
        sink.summary(&Summary {
            events: 1,
            lost: 2,
            lost_per_cpu: vec![2, 0],
            ..Default::default()
        })
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON"))
            .collect();
        assert_eq!(lines[0]["type"], "header");
        assert_eq!(lines[0]["hooks"][0]["attach"], "tcp:tcp_probe");
        let ev = &lines[1];
        assert_eq!(ev["hook"], "sendmsg_ret");
        assert_eq!(ev["laddr"], "198.18.0.1");
        assert_eq!(ev["rport"], 5201);
        assert_eq!(ev["wmem_queued_delta"], -5);
        assert_eq!(ev["wmem_alloc_delta"], 3);
        assert!(ev["len"].is_null() && ev["iface"].is_null());
        assert_eq!(ev["sock"], 0x301);
        assert_eq!(ev["ino"], 123_456);
        assert!(
            ev.get("sk").is_none() && ev.get("skb").is_none(),
            "kernel addresses only on request: {ev}"
        );
        assert_eq!(lines[2]["lost"], 2);
        assert_eq!(lines[2]["lost_per_cpu"][0], 2);
    }

    #[test]
    fn kernel_addresses_on_request_and_no_counters_of_a_freed_socket() {
        let mut buf = Vec::new();
        let mut sink = JsonSink::new(&mut buf, true);
        let mut raw = raw_event(Hook::SkbFree);
        raw.flags |= sockmem_common::event::FLAG_SOCK_FREED | sockmem_common::event::FLAG_HAS_SKB;
        raw.skb = 0xffff_8880_0000_1000;
        let e = Event::from_raw(&raw).unwrap();
        sink.event(&e, Deltas::default(), 0.0).unwrap();
        let ev: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(ev["sk"], "0xffff888012345678");
        assert_eq!(ev["skb"], "0xffff888000001000");
        assert!(
            ev["wmem_alloc"].is_null() && ev["wmem_queued"].is_null(),
            "{ev}"
        );
    }

    #[test]
    fn the_header_carries_the_anchor_and_wall_time_is_added() {
        use crate::render::time::Clock;
        let anchor = ClockAnchor {
            realtime_ns: 1_796_092_812_000_000_000,
            monotonic_ns: 7_000_000_000,
        };
        let mut raw = raw_event(Hook::TcpAck);
        raw.ts_ns = 7_000_001_000;
        let e = Event::from_raw(&raw).unwrap();
        for mode in [TimeMode::Rel, TimeMode::Wall, TimeMode::Mono] {
            let mut buf = Vec::new();
            let mut sink = JsonSink::new(&mut buf, false).with_clock(Clock { mode, anchor });
            sink.header(&RunInfo::default()).unwrap();
            sink.event(&e, Deltas::default(), 0.000_001).unwrap();
            let lines: Vec<serde_json::Value> = String::from_utf8(buf)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).expect("valid JSON"))
                .collect();
            assert_eq!(lines[0]["time"], mode.name());
            assert_eq!(lines[0]["clock"]["monotonic_ns"], 7_000_000_000u64);
            assert_eq!(
                lines[0]["clock"]["realtime_ns"],
                1_796_092_812_000_000_000u64
            );
            assert_eq!(lines[1]["ts_ns"], 7_000_001_000u64);
            assert_eq!(lines[1]["time_s"], 0.000_001);
            match mode {
                TimeMode::Wall => assert_eq!(lines[1]["wall"], "2026-12-01T02:40:12.000001Z"),
                _ => assert!(lines[1].get("wall").is_none()),
            }
        }
    }
}
