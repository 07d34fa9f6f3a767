//! Integration tests of `sockmem trace` against real traffic.
//!
//! They must run as root on a kernel with BTF. Each test builds its own pair of network
//! namespaces joined by a veth (198.18.X.0/24, X distinct per test, names unique per process),
//! sends traffic from named threads of this process and checks what sockmem reports against
//! what the test knows (thread ids, names, ports) and what the kernel itself reports (`ss`, `tc`).
//! The filters have their own file, `filters.rs`.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const MIB: u64 = 1024 * 1024;

/// Hooks whose events concern one skb on the way down to the driver.
const SKB_OWNER_HOOKS: [&str; 3] = ["qdisc_enqueue", "qdisc_dequeue", "driver_xmit"];

/// The earliest `ts_ns` of an event owned by a seen `sendmsg` (u64::MAX if none).
fn first_send_owned(evs: &[&Value]) -> u64 {
    evs.iter()
        .filter(|e| get_str(e, "owner") == "sendmsg")
        .map(|e| get_u64(e, "ts_ns"))
        .min()
        .unwrap_or(u64::MAX)
}

/// Checks an event's `owner` and says whether it is "unknown". Softirq work on a socket before
/// its first seen `sendmsg` (the handshake's last ACK, a first datagram sent once ARP resolves)
/// has no sender to name: "unknown", with no pid or comm, never the interrupted task's; and
/// once the first `sendmsg` is seen (give or take [`stamp_delay_ns`]) every event names it.
fn owner_unknown(ev: &Value, first_send_ts: u64, evs: &[&Value]) -> bool {
    let h = hook(ev);
    match get_str(ev, "owner") {
        "sendmsg" | "current" => false,
        "unknown" => {
            // null, as a socket line has an unknown sender.
            assert!(
                ev["tgid"].is_null() && ev["pid"].is_null() && ev["comm"].is_null(),
                "expected pid, tgid and comm null on an event with owner \"unknown\": {ev}"
            );
            assert!(
                // `<=`: a coarse clock (4 ms in some VMs) gives both the same time.
                get_u64(ev, "ts_ns") <= first_send_ts.saturating_add(stamp_delay_ns())
                    && !h.starts_with("tcp_sendmsg")
                    && h != "sendmsg_ret",
                "expected owner \"unknown\" only on softirq events before the first sendmsg \
                 (at ts_ns {first_send_ts}, {} ms allowed for the stamp), got: {ev}\nthe flow's events per sock id: {}",
                stamp_delay_ns() / 1_000_000,
                owners_per_sock(evs)
            );
            true
        }
        other => {
            panic!("expected owner \"sendmsg\", \"current\" or \"unknown\", got {other:?}: {ev}")
        }
    }
}

/// Asserts pid/tgid/comm of `ev` are those of the thread `who`.
fn assert_owner(ev: &Value, who: &ThreadInfo) {
    let h = hook(ev);
    assert_eq!(
        get_u64(ev, "tgid"),
        u64::from(who.tgid),
        "expected tgid {} (this test process) on a {h} event, got {}: {ev}",
        who.tgid,
        get_u64(ev, "tgid")
    );
    assert_eq!(
        get_u64(ev, "pid"),
        u64::from(who.tid),
        "expected pid {} (tid of sender thread {:?}) on a {h} event, got {}: {ev}",
        who.tid,
        who.comm,
        get_u64(ev, "pid")
    );
    assert_eq!(
        get_str(ev, "comm"),
        who.comm,
        "expected comm {:?} (the sender thread) on a {h} event, got {:?}: {ev}",
        who.comm,
        get_str(ev, "comm")
    );
}

/// Whether some stderr line starts with "sockmem: ".
fn has_sockmem_prefix(stderr: &str) -> bool {
    stderr.lines().any(|l| l.starts_with("sockmem: "))
}

/// Self-test of the support code; needs root but not a working sockmem.
#[test]
fn support_selftest() {
    // Parsers, on fixed text.
    let m = parse_skmem("\t skmem:(r1,rb2,t3,tb4,f5,w6,o7,bl8,d9)")
        .expect("a complete skmem:(...) to parse");
    assert_eq!(
        m,
        SkMem {
            r: 1,
            rb: 2,
            t: 3,
            tb: 4,
            f: 5,
            w: 6,
            o: 7,
            bl: 8,
            d: 9
        },
        "expected r1,rb2,t3,tb4,f5,w6,o7,bl8,d9 mapped to the fields of the same names"
    );
    assert!(
        parse_skmem("skmem:(r1,rb2)").is_err(),
        "expected a truncated skmem:(r1,rb2) to be refused"
    );
    assert_eq!(
        parse_qdisc_sent(
            "qdisc tbf 8001: root refcnt 2 rate 200Mbit burst 32Kb lat 50ms\n \
             Sent 123456 bytes 789 pkt (dropped 0, overlimits 3 requeues 0)\n"
        ),
        Ok((123456, 789)),
        "expected tc's \"Sent 123456 bytes 789 pkt\" read as (bytes, packets)"
    );

    // JSON splitting, socket selection and the delta checker, on a synthetic trace.
    let ev = |sock: u64, lport: u16, q: i64, dq: i64| {
        serde_json::json!({"type":"event","hook":"tcp_sendmsg","sock":sock,"laddr":"198.18.0.1",
            "lport":lport,"raddr":"198.18.0.2","rport":5000,"wmem_queued":q,
            "wmem_queued_delta":dq})
        .to_string()
    };
    let text = [
        r#"{"type":"header","hooks":[{"hook":"tcp_sendmsg"}]}"#.to_string(),
        ev(0x101, 40000, 100, 100),
        ev(0x201, 40001, 50, 50),
        ev(0x101, 40000, 300, 200),
        ev(0x101, 40000, 0, -300),
        r#"{"type":"summary","events":4,"lost":0,"lost_per_cpu":[0,0]}"#.to_string(),
    ]
    .join("\n");
    let t = JsonTrace::parse(&text).expect("the synthetic trace to parse");
    t.assert_summary_counts_events();
    assert_eq!(
        t.header_hooks(),
        vec!["tcp_sendmsg".to_string()],
        "expected the header's hooks array read"
    );
    let key = SockKey {
        laddr: "198.18.0.1".into(),
        lport: 40000,
        raddr: "198.18.0.2".into(),
        rport: 5000,
    };
    let mine = t.events_for(&key);
    assert_eq!(
        mine.len(),
        3,
        "expected events_for to pick the 3 events of sk 0xffff1 (lport 40000)"
    );
    assert_eq!(
        check_deltas(&mine, "wmem_queued", "wmem_queued_delta"),
        Ok(3),
        "expected the 3 consistent deltas of one socket accepted"
    );
    let all: Vec<&Value> = t.events.iter().collect();
    assert_eq!(
        check_deltas(&all, "wmem_queued", "wmem_queued_delta"),
        Ok(4),
        "expected the deltas of two interleaved sockets checked per socket and accepted"
    );
    let bad = text.replace("\"wmem_queued_delta\":200", "\"wmem_queued_delta\":250");
    let t = JsonTrace::parse(&bad).expect("the synthetic trace with a wrong delta to parse");
    let all: Vec<&Value> = t.events.iter().collect();
    assert!(
        check_deltas(&all, "wmem_queued", "wmem_queued_delta").is_err(),
        "expected a wrong delta (250 for 100 -> 300) to be found"
    );
    assert!(
        JsonTrace::parse(&text.replace("summary", "event")).is_err(),
        "expected a trace without a summary line to be refused"
    );
    // Snapshot lines come among the events, the socket lines (exit table) after them all.
    let snapshot = r#"{"type":"snapshot","sock":257,"skmem":{"w":100}}"#.to_string();
    let socket = r#"{"type":"socket","sock":257,"lport":40000}"#.to_string();
    let summary = r#"{"type":"summary","events":2,"lost":0,"lost_per_cpu":[0,0]}"#.to_string();
    let header = r#"{"type":"header","hooks":[]}"#.to_string();
    let tables = [
        header.clone(),
        ev(257, 40000, 100, 100),
        snapshot.clone(),
        ev(257, 40000, 0, -100),
        socket.clone(),
        summary.clone(),
    ]
    .join("\n");
    let t = JsonTrace::parse(&tables).expect("a trace with snapshot and socket lines to parse");
    t.assert_summary_counts_events();
    assert_eq!(
        (t.events.len(), t.snapshots_of(257).len(), t.sockets.len()),
        (2, 1, 1),
        "expected the snapshot and socket lines split from the events"
    );
    assert_eq!(
        t.socket_line(257)["lport"],
        40000,
        "expected the socket line of sock 257"
    );
    let late = [header, socket, ev(257, 40000, 0, 0), summary].join("\n");
    assert!(
        JsonTrace::parse(&late).is_err(),
        "expected an event after the socket lines to be refused"
    );

    // The clock's granularity: tens of ns on a host, a few ms in an emulated VM.
    let step = clock_step();
    assert!(
        step > Duration::ZERO && step < Duration::from_millis(50),
        "expected CLOCK_MONOTONIC to step by more than 0 and less than 50 ms, got {step:?}"
    );
    eprintln!("selftest: CLOCK_MONOTONIC steps by {step:?}");

    // The command runner kills on timeout.
    let t0 = Instant::now();
    let r = try_run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(300));
    assert!(
        r.is_err(),
        "expected sleep 30 to be killed after a 300 ms timeout"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "expected the 300 ms timeout to end sleep 30 within 10 s, it took {:?}",
        t0.elapsed()
    );

    // The tracer runner: ready file, SIGTERM, output capture (a stand-in process).
    let ready = tmp_path("selftest-ready");
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        // `wait` returns as soon as a trapped signal arrives (a foreground child would delay
        // the trap until it exits).
        r#"trap 'echo bye; kill $! 2>/dev/null; exit 0' TERM; echo hello; echo to-stderr >&2;
           sleep 0.3; touch "$1"; sleep 30 & wait $!; exit 3"#,
        "bash",
    ])
    .arg(&ready);
    let spawned = Instant::now();
    let tr = Tracer::spawn(cmd, ready.clone());
    let (not_yet, seen) = tr.ready_between();
    assert!(
        spawned <= not_yet && not_yet < seen && seen - spawned >= Duration::from_millis(300),
        "expected the ready file (touched 0.3 s after the start) between the last poll that did \
         not find it and the first that did, got them {:?} and {:?} after the start",
        not_yet - spawned,
        seen - spawned
    );
    let out = tr.stop();
    out.assert_success();
    assert_eq!(
        out.stdout, "hello\nbye\n",
        "expected the stand-in's stdout, the trap's output included"
    );
    assert_eq!(out.stderr, "to-stderr\n", "expected the stand-in's stderr");
    assert!(
        !ready.exists(),
        "expected the ready file removed after the run"
    );

    let (tx_ns, rx_ns);
    {
        let pair = NetnsPair::with_tbf("self", 100);
        tx_ns = pair.tx_ns.clone();
        rx_ns = pair.rx_ns.clone();
        let list = netns_list();
        assert!(
            list.contains(&tx_ns) && list.contains(&rx_ns),
            "expected {tx_ns} and {rx_ns} in ip netns list, got {list:?}"
        );
        let qdisc = ns_checked(&tx_ns, "tc", &["qdisc", "show", "dev", &pair.tx_if]);
        assert!(
            qdisc.contains("tbf"),
            "expected a tbf qdisc on {}, got {qdisc}",
            pair.tx_if
        );

        // TCP bulk through tbf.
        let (bytes0, _) = pair.tx_qdisc_sent();
        let total = 4 * MIB;
        let t0 = Instant::now();
        let flow = TcpFlow::start(&pair, 21001, "smtx-self", TcpFlowOpts::bytes(total));
        let s = flow.sender.clone();
        assert_eq!(
            s.tgid,
            std::process::id(),
            "expected the sender thread's tgid to be this process's pid"
        );
        assert_ne!(
            s.tid, s.tgid,
            "expected the sender to be a thread other than the main one"
        );
        assert_eq!(
            s.comm, "smtx-self",
            "expected the sender's comm to be its thread name"
        );
        assert_eq!(
            flow.key.laddr,
            pair.tx_addr.to_string(),
            "expected the sender socket's local address on the sender side"
        );
        assert_eq!(
            flow.key.raddr,
            pair.rx_addr.to_string(),
            "expected the sender socket's remote address on the receiver side"
        );
        assert_eq!(
            flow.key.rport, 21001,
            "expected the sender socket's remote port to be the receiver's"
        );
        assert!(
            flow.key.lport != 0 && flow.key.lport != 21001,
            "expected an ephemeral local port on the sender socket, got {}",
            flow.key.lport
        );
        let r = flow.finish();
        let took = t0.elapsed();
        assert_eq!(
            r,
            FlowResult {
                sent: total,
                received: total
            },
            "expected the 4 MiB transfer written and read in full"
        );
        let (bytes1, pkts1) = pair.tx_qdisc_sent();
        eprintln!(
            "selftest: {total} bytes in {took:?}; tbf sent {} bytes {pkts1} pkt",
            bytes1 - bytes0
        );
        assert!(
            bytes1 - bytes0 >= total,
            "expected the tbf qdisc to have sent >= {total} bytes, it reports {} ({pkts1} pkt)",
            bytes1 - bytes0
        );
        // 4 MiB at 200 Mbit/s is ~168 ms: tbf really shapes.
        assert!(
            took >= Duration::from_millis(100),
            "expected >= 100 ms for {total} bytes through tbf 200mbit, took {took:?}"
        );

        // UDP, and a thread name longer than 15 bytes.
        let u = udp_flow(&pair, 21003, "smtx-0123456789abcdef", 200, 1000);
        assert_eq!(
            u.sender.comm, "smtx-0123456789",
            "expected the comm to be the thread name cut to 15 bytes"
        );
        assert_eq!(u.sent, 200, "expected all 200 datagrams sent");
        assert!(
            u.received > 0 && u.received <= 200,
            "expected 1..=200 of the 200 datagrams received, got {}",
            u.received
        );
        assert_eq!(
            u.key.raddr,
            pair.rx_addr.to_string(),
            "expected the UDP socket's remote address on the receiver side"
        );
        assert_eq!(
            u.key.rport, 21003,
            "expected the UDP socket's remote port to be the receiver's"
        );

        // Stalled receiver: ss sees queued send memory on the sender and unread data on the
        // receiver.
        let st = StalledTcp::start(&pair, 21002, "smtx-selfst");
        let (written, m) = st.wait_stable(&pair);
        let lport = st.key.lport;
        eprintln!("selftest: stalled sender wrote {written} bytes; ss sender {m:?}");
        assert!(
            m.w > 0,
            "expected ss w > 0 on the stalled sender, got {m:?}"
        );
        assert!(
            m.tb > 0,
            "expected ss tb > 0 on the stalled sender, got {m:?}"
        );
        let rm = ss_skmem(&rx_ns, 21002, lport);
        assert!(
            rm.r > 0,
            "expected unread data (ss r > 0) on the stalled receiver, got {rm:?}"
        );
        let sent = st.finish();
        assert_eq!(
            sent, written,
            "expected the stalled sender to write nothing more once full ({written} bytes), it \
             wrote {sent} in all"
        );
    }
    let list = netns_list();
    assert!(
        !list.contains(&tx_ns) && !list.contains(&rx_ns),
        "expected {tx_ns} and {rx_ns} deleted on drop, ip netns list: {list:?}"
    );
}

#[test]
fn tcp_bulk_events_from_every_hook() {
    const P: u16 = 21101;
    const P2: u16 = 21102;
    let pair = NetnsPair::with_tbf("bulk", 101);
    let total = 8 * MIB;
    let (Transfer { sender, key, .. }, out) =
        traced(&["trace", "--json", "--port", &P.to_string()], || {
            let flow = TcpFlow::start(&pair, P, "smtx-bulk", TcpFlowOpts::bytes(total));
            let other = TcpFlow::start(&pair, P2, "smtx-bulk2", TcpFlowOpts::bytes(2 * MIB));
            other.finish_transfer();
            flow.finish_transfer()
        });
    let trace = out.json();
    trace.assert_summary_counts_events();
    let lost = trace.summary_u64("lost");

    let evs = trace.events_for(&key);
    let counts = hook_counts(evs.iter().copied());
    let header_hooks = trace.header_hooks();
    eprintln!(
        "bulk: {} events in all, {lost} lost; sender {key} (tid {}): {counts:?}",
        trace.events.len(),
        sender.tid
    );
    // The skb path has tracepoints on every kernel; the sendmsg and counter-change hooks only
    // where the kernel offers a way in (see `sockmem probe`).
    let mut wanted = vec![
        "dev_queue_xmit",
        "qdisc_enqueue",
        "qdisc_dequeue",
        "driver_xmit",
        "tcp_ack",
    ];
    for h in [
        "tcp_sendmsg",
        "sendmsg_ret",
        "wmem_charge",
        "wmem_release",
        "tcp_ack_freed",
    ] {
        if trace.is_attached(h) {
            wanted.push(h);
        } else {
            eprintln!("bulk: hook {h} not attached on this kernel/backend, not checked");
        }
    }
    for h in wanted {
        let n = counts.get(h).copied().unwrap_or(0);
        assert!(
            n >= 1,
            "expected >= 1 {h} event for the sender socket {key}, got {n}; its events per hook: \
             {counts:?}; {} events in all, {lost} lost",
            trace.events.len()
        );
        assert!(
            header_hooks.iter().any(|x| x == h),
            "expected hook {h} listed in the header, header lists {header_hooks:?}"
        );
    }
    // Without a sendmsg hook nothing tells the sender apart from whoever runs the softirq.
    let sender_known = trace.is_attached("tcp_sendmsg") || trace.is_attached("sendmsg_ret");
    if !sender_known {
        eprintln!("bulk: no sendmsg hook on this kernel/backend: sender attribution not checked");
    }
    for ev in evs.iter().filter(|e| hook(e) == "wmem_charge") {
        let (v, truesize) = (get_i64(ev, "value"), get_opt_u64(ev, "truesize"));
        assert_eq!(
            Some(v as u64),
            truesize,
            "expected a wmem_charge value equal to the skb truesize, got {v} and {truesize:?}: {ev}"
        );
    }
    for ev in evs.iter().filter(|e| hook(e) == "wmem_release") {
        let v = get_i64(ev, "value");
        if has_skb(ev) {
            assert!(
                v < 0,
                "expected a negative wmem_release value, got {v}: {ev}"
            );
        } else {
            // TCP Small Queues' deferred reference: no bytes, the counter drops by 1.
            assert!(
                v == 0 && get_str(ev, "info") == "tsq reference dropped",
                "expected an skb-less wmem_release to be the TSQ reference (value 0), got: {ev}"
            );
        }
    }
    if trace.is_attached("tcp_ack_freed") {
        let freed: i64 = evs
            .iter()
            .filter(|e| hook(e) == "tcp_ack_freed")
            .map(|e| get_i64(e, "value"))
            .sum();
        assert!(
            freed < 0,
            "expected ACKs to free write-queue bytes in all (sum of tcp_ack_freed values < 0), got {freed}"
        );
    }

    let first_send_ts = first_send_owned(&evs);
    for ev in &evs {
        assert_eq!(get_str(ev, "proto"), "tcp", "expected proto tcp: {ev}");
        assert_eq!(get_str(ev, "family"), "ipv4", "expected family ipv4: {ev}");
        let h = hook(ev);
        let unknown = owner_unknown(ev, first_send_ts, &evs);
        if sender_known && !unknown && (h == "tcp_sendmsg" || SKB_OWNER_HOOKS.contains(&h)) {
            assert_owner(ev, &sender);
        }
        if SKB_OWNER_HOOKS.contains(&h) {
            assert_eq!(
                get_opt_str(ev, "iface"),
                Some(pair.tx_if.as_str()),
                "expected iface {:?} (sender veth) on a {h} event, got {:?}: {ev}",
                pair.tx_if,
                get_opt_str(ev, "iface")
            );
            assert!(
                get_opt_u64(ev, "ifindex").is_some(),
                "expected an ifindex on {h}: {ev}"
            );
            assert!(has_skb(ev), "expected an skb on {h}: {ev}");
            let len = get_opt_u64(ev, "len");
            assert!(
                matches!(len, Some(l) if l > 0),
                "expected len > 0 on a {h} event, got {len:?}: {ev}"
            );
        }
        if h == "sendmsg_ret" {
            let v = get_i64(ev, "value");
            assert!(
                v > 0 && v <= 64 * 1024,
                "expected sendmsg_ret value in 1..=65536 (bytes of one 64 KiB write), got {v}: {ev}"
            );
        }
    }
    if lost == 0 && trace.is_attached("sendmsg_ret") {
        let returned: i64 = evs
            .iter()
            .filter(|e| hook(e) == "sendmsg_ret")
            .map(|e| get_i64(e, "value"))
            .sum();
        assert_eq!(
            returned, total as i64,
            "expected the sendmsg_ret values to add up to the {total} bytes written, got {returned}"
        );
    }

    let max_queued = evs
        .iter()
        // Events read from a socket already being freed carry no counters (null).
        .filter_map(|e| e["wmem_queued"].as_i64())
        .max()
        .unwrap_or(0);
    assert!(
        max_queued > 0,
        "expected wmem_queued > 0 on some event of {key}, max was {max_queued}"
    );
    let socks: BTreeSet<u64> = evs.iter().map(|e| get_u64(e, "sock")).collect();
    assert_eq!(
        socks.len(),
        1,
        "expected 1 socket id for the sender socket {key}, got {}: {socks:?}",
        socks.len()
    );
    assert!(
        evs.iter()
            .all(|e| e.get("sk").is_none() && e.get("skb").is_none()),
        "expected no kernel addresses without --kernel-addrs"
    );
    let n =
        check_deltas(&evs, "wmem_queued", "wmem_queued_delta").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        n > 0,
        "expected the wmem_queued deltas of {key} checked on some events, checked {n}"
    );
    check_deltas(&evs, "wmem_alloc", "wmem_alloc_delta").unwrap_or_else(|e| panic!("{e}"));

    let p2 = trace.with_port(P2);
    assert_eq!(
        p2.len(),
        0,
        "expected 0 events with port {P2} (tracer filters --port {P}), got {}:\n{}",
        p2.len(),
        first_few(&p2, 3)
    );
}

#[test]
fn udp_flow_events() {
    const P: u16 = 21201;
    let pair = NetnsPair::with_tbf("udp", 102);
    let (r, out) = traced(
        &["trace", "--json", "--udp", "--port", &P.to_string()],
        || udp_flow(&pair, P, "smtx-udp", 2000, 1200),
    );
    assert_eq!(r.sent, 2000, "expected 2000 datagrams sent, got {}", r.sent);
    assert!(
        r.received > 0,
        "expected the receiver to get datagrams, got {}",
        r.received
    );
    let trace = out.json();
    trace.assert_summary_counts_events();

    let not_udp: Vec<&Value> = trace
        .events
        .iter()
        .filter(|e| get_str(e, "proto") != "udp")
        .collect();
    assert_eq!(
        not_udp.len(),
        0,
        "expected 0 non-UDP events under --udp, got {}:\n{}",
        not_udp.len(),
        first_few(&not_udp, 3)
    );
    // An skb freed after its socket was (the sender closed first) carries no counters: null.
    for ev in &trace.events {
        let queued = &ev["wmem_queued"];
        assert!(
            queued == 0 || (queued.is_null() && ev["sndbuf"].is_null()),
            "expected wmem_queued 0 on every UDP event (null where the socket was freed): {ev}"
        );
    }

    let evs = trace.events_for(&r.key);
    let counts = hook_counts(evs.iter().copied());
    eprintln!(
        "udp: {} events in all, {} datagrams received; sender {}: {counts:?}",
        trace.events.len(),
        r.received,
        r.key
    );
    for h in [
        "dev_queue_xmit",
        "qdisc_enqueue",
        "qdisc_dequeue",
        "driver_xmit",
    ] {
        let n = counts.get(h).copied().unwrap_or(0);
        assert!(
            n >= 1,
            "expected >= 1 {h} event for the UDP sender socket {}, got {n}; per hook: {counts:?}",
            r.key
        );
    }
    // Dequeue can run from the qdisc's timer in softirq: only a sendmsg hook names the sender.
    let sender_known = trace.is_attached("sendmsg_ret");
    if !sender_known {
        eprintln!("udp: no sendmsg hook on this kernel/backend: sender attribution not checked");
    }
    let first_send_ts = first_send_owned(&evs);
    for ev in &evs {
        let h = hook(ev);
        let unknown = owner_unknown(ev, first_send_ts, &evs);
        if sender_known && !unknown && (h == "dev_queue_xmit" || SKB_OWNER_HOOKS.contains(&h)) {
            assert_owner(ev, &r.sender);
        }
        if h == "dev_queue_xmit" || SKB_OWNER_HOOKS.contains(&h) {
            assert_eq!(
                get_opt_str(ev, "iface"),
                Some(pair.tx_if.as_str()),
                "expected iface {:?} on a {h} event, got {:?}: {ev}",
                pair.tx_if,
                get_opt_str(ev, "iface")
            );
        }
    }
    let max_alloc = evs
        .iter()
        // Events read from a socket already being freed carry no counters (null).
        .filter_map(|e| e["wmem_alloc"].as_i64())
        .max()
        .unwrap_or(0);
    assert!(
        max_alloc > 0,
        "expected wmem_alloc > 0 on some event of {}, max was {max_alloc} over {} events",
        r.key,
        evs.len()
    );
}

#[test]
fn stalled_receiver_queued_matches_sock_diag() {
    const P: u16 = 21401;
    let pair = NetnsPair::with_tbf("stal", 104);
    let ((st, written, m), out) = traced(&["trace", "--json", "--port", &P.to_string()], || {
        let st = StalledTcp::start(&pair, P, "smtx-stal");
        let (written, m) = st.wait_stable(&pair);
        (st, written, m)
    });
    let key = st.key.clone();
    let after = ss_skmem(&pair.tx_ns, key.lport, P);
    let sent = st.finish();
    assert_eq!(
        sent, written,
        "expected the stalled sender to write nothing more once full ({written} bytes), it wrote \
         {sent} in all"
    );
    assert_eq!(
        after.w, m.w,
        "premise: ss w should stay put while the receiver does not read: {} then {}",
        m.w, after.w
    );
    let trace = out.json();
    let evs = trace.events_for(&key);
    let last = evs.last().unwrap_or_else(|| {
        panic!(
            "expected events for the stalled sender {key}, got none of {}",
            trace.events.len()
        )
    });
    eprintln!(
        "stalled: {} events of {key}; ss {m:?}; last event {last}",
        evs.len()
    );
    assert!(m.w > 0, "expected ss w > 0, got {m:?}");
    assert_eq!(
        get_i64(last, "wmem_queued"),
        m.w as i64,
        "expected the last traced wmem_queued of {key} to equal ss w {}, got {}: {last}",
        m.w,
        get_i64(last, "wmem_queued")
    );
    let sndbuf = get_i64(last, "sndbuf");
    assert!(
        sndbuf > 0,
        "expected sndbuf > 0 on the last event, got {sndbuf}: {last}"
    );
    assert_eq!(
        sndbuf, m.tb as i64,
        "expected the last traced sndbuf to equal ss tb {}, got {sndbuf}",
        m.tb
    );
}

#[test]
fn wmem_alloc_returns_to_zero_after_drain() {
    const P: u16 = 21501;
    let pair = NetnsPair::with_tbf("drain", 105);
    let outfile = tmp_path("drain.jsonl");
    let outfile_s = outfile
        .to_str()
        .expect("the temporary path to be UTF-8")
        .to_string();
    let args = [
        "trace",
        "--json",
        "--port",
        &P.to_string(),
        "-o",
        &outfile_s,
    ];
    let ((flow, m), _) = traced(&args, || {
        // Held open: the socket is still there, drained, when ss reads it and sockmem stops.
        let flow = TcpFlow::start(
            &pair,
            P,
            "smtx-drain",
            TcpFlowOpts::bytes(4 * MIB).hold_open(),
        );
        flow.wait_sender_done(Duration::from_secs(60));
        flow.wait_received(4 * MIB, Duration::from_secs(60));
        thread::sleep(Duration::from_millis(200));
        let m = ss_skmem(&pair.tx_ns, flow.key.lport, P);
        (flow, m)
    });
    let key = flow.finish_transfer().key;
    let text = fs::read_to_string(&outfile)
        .unwrap_or_else(|e| panic!("expected output file {outfile_s} (-o): {e}"));
    let _ = fs::remove_file(&outfile);
    let trace = JsonTrace::parse(&text).unwrap_or_else(|e| panic!("bad JSON in {outfile_s}: {e}"));
    let evs = trace.events_for(&key);
    let last = evs.last().unwrap_or_else(|| {
        panic!(
            "expected events for {key} in {outfile_s}, got none of {}",
            trace.events.len()
        )
    });
    let max_alloc = evs
        .iter()
        // Events read from a socket already being freed carry no counters (null).
        .filter_map(|e| e["wmem_alloc"].as_i64())
        .max()
        .unwrap_or(0);
    eprintln!(
        "drain: {} events of {key}, max wmem_alloc {max_alloc}; ss {m:?}; last {last}",
        evs.len()
    );
    assert!(
        max_alloc > 0,
        "expected wmem_alloc > 0 on some event of {key} during the transfer, max was {max_alloc}"
    );
    // Each event reads the kernel's counter as it runs: the last one shows the drained 0 unless
    // a later one never reached the ring, lost (ring full) or not run by the kernel (a program
    // already running on that CPU: 6.12/fentry once ended on a dequeue with 105952 bytes below
    // TCP while ss said t 0).
    let lost = trace.summary_u64("lost");
    let missed = trace.summary_u64("missed");
    let tail: Vec<String> = evs[evs.len().saturating_sub(12)..]
        .iter()
        .map(|e| {
            format!(
                "{} cpu {} ts {} alloc {} queued {} owner {} {}",
                hook(e),
                e["cpu"],
                e["ts_ns"],
                e["wmem_alloc"],
                e["wmem_queued"],
                get_str(e, "owner"),
                e["info"]
            )
        })
        .collect();
    assert_eq!(lost, 0, "expected no event lost with a 16 MiB ring");
    if missed == 0 {
        assert_eq!(
            get_i64(last, "wmem_alloc"),
            0,
            "expected wmem_alloc 0 on the last event of {key} (all sent and acked; no event \
             lost or missed): {last}\nthe last events:\n{}",
            tail.join("\n")
        );
    } else {
        eprintln!(
            "drain: {missed} events not run by the kernel ({}): the last event's counter is not \
             checked; the last events:\n{}",
            trace.summary["missed_per_hook"],
            tail.join("\n")
        );
    }
    assert_eq!(m.t, 0, "expected ss t 0 on the drained sender, got {m:?}");
}

#[test]
fn tiny_ring_buffer_reports_loss() {
    const P: u16 = 21601;
    let pair = NetnsPair::new("ring", 106); // no tbf: as fast as the veth goes
    let total = 64 * MIB;
    let args = [
        "trace",
        "--json",
        "--ring-size",
        "4096",
        "--port",
        &P.to_string(),
    ];
    let (_, out) = traced(&args, || tcp_transfer(&pair, P, "smtx-ring", total));
    let trace = out.json();
    trace.assert_summary_counts_events();
    let lost = trace.summary_u64("lost");
    eprintln!(
        "ring: {} events, {lost} lost; summary {}",
        trace.events.len(),
        trace.summary
    );
    assert!(
        lost > 0,
        "expected lost > 0 with a 4096-byte ring and {total} bytes of TCP, got {lost} ({} events)",
        trace.events.len()
    );
    let per_cpu: u64 = trace
        .summary
        .get("lost_per_cpu")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("summary has no lost_per_cpu array: {}", trace.summary))
        .iter()
        .map(|v| {
            v.as_u64()
                .unwrap_or_else(|| panic!("lost_per_cpu entry {v} not a u64"))
        })
        .sum();
    assert_eq!(
        per_cpu, lost,
        "expected lost_per_cpu to add up to lost {lost}, got {per_cpu}"
    );
    let n = lost.to_string();
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("lost") && l.contains(&n)),
        "expected a stderr line with \"lost\" and the count {n}, stderr:\n{}",
        tail(&out.stderr, 2000)
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let long_comm = "abcdefghijklmnop"; // 16 bytes: comm holds 15
    let cases: [&[&str]; 4] = [
        &["trace", "--port", "70000"],
        &["trace", "--addr", "nonsense"],
        &["trace", "--ring-size", "1000"],
        &["trace", "--comm", long_comm],
    ];
    for args in cases {
        let out = run_sockmem(args, CMD_TIMEOUT);
        out.assert_usage_error(args);
    }

    let out = run_sockmem(
        &["trace", "--btf", "/nonexistent/vmlinux", "--duration", "2"],
        Duration::from_secs(60),
    );
    out.assert_no_panic();
    out.assert_code(1);
    assert!(
        out.stderr.to_lowercase().contains("btf"),
        "expected stderr to mention BTF, got {}",
        out.describe()
    );
    assert!(
        has_sockmem_prefix(&out.stderr),
        "expected a stderr line starting \"sockmem: \", got {}",
        out.describe()
    );
}

/// Every filter's bad value is a usage error (exit code 2) in every command that loads the
/// programs, whether clap judges it (a port, a CIDR, more ports than the kernel filter holds:
/// said with the subcommand's usage) or only the machine can (an interface no namespace has:
/// said as `sockmem: --iface NAME: why`, before anything is attached). `--cgroup` and
/// `--netns`: tests/cgroup.rs.
#[test]
fn bad_filter_values_are_usage_errors_in_every_command() {
    let record_to = tmp_path("bad-filter.smrec");
    let record_to = record_to.to_str().expect("a UTF-8 temporary path");
    let commands: [&[&str]; 6] = [
        &["trace", "-d", "1"],
        &["hist", "-d", "1"],
        &["record", "-o", record_to, "-d", "1"],
        &["why", "-d", "1"],
        &["top", "-d", "1"],
        &["serve", "--listen", "127.0.0.1:0"],
    ];
    let nine_ports: Vec<String> = (1..=9).flat_map(|p| ["-P".into(), p.to_string()]).collect();
    let nine_ports: Vec<&str> = nine_ports.iter().map(String::as_str).collect();
    for command in commands {
        let name = command[0];
        for bad in [
            &["-P", "0"][..],
            &["-P", "70000"],
            &["-a", "10.0.0.0/33"],
            &["-a", "x"],
        ] {
            let args = joined(command, bad);
            run_sockmem(&args, CMD_TIMEOUT).assert_usage_error(&args);
        }

        let args = joined(command, &nine_ports);
        let out = run_sockmem(&args, CMD_TIMEOUT);
        out.assert_usage_error(&args);
        assert!(
            out.stderr.contains("--port given 9 times")
                && out.stderr.contains(&format!("Usage: sockmem {name} ")),
            "{name} with nine -P: expected the limit said with `sockmem {name}`'s usage, got {}",
            out.describe()
        );

        let args = joined(command, &["-i", "smnosuch0"]);
        let out = run_sockmem(&args, CMD_TIMEOUT);
        out.assert_usage_error(&args);
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("sockmem: --iface smnosuch0: ") && l.contains("lo"))
                && !out.stderr.contains("attached"),
            "{name} -i smnosuch0: expected `sockmem: --iface smnosuch0: ...` naming the \
             interfaces there are, before anything is attached, got {}",
            out.describe()
        );
    }
    assert!(
        !Path::new(record_to).exists(),
        "no recording from a refused run"
    );
}

fn joined<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

#[test]
fn sigterm_and_broken_pipe_end_cleanly() {
    const P: u16 = 21801;
    const P_PIPE: u16 = 21802;
    let pair = NetnsPair::with_tbf("term", 108);

    // Text mode, SIGTERM while traffic has been flowing.
    let (Transfer { key, .. }, out) = traced(&["trace", "--port", &P.to_string()], || {
        tcp_transfer(&pair, P, "smtx-term", 2 * MIB)
    });
    // Text mode: one line per event, showing the socket's ends as addr:port.
    let local = format!("{}:{}", key.laddr, key.lport);
    let remote = format!("{}:{}", key.raddr, key.rport);
    let lines = out
        .stdout
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.contains(&local.as_str()) && words.contains(&remote.as_str())
        })
        .count();
    assert!(
        lines >= 1,
        "expected >= 1 text line showing {local} and {remote} (the sender socket), got {lines}; \
         stdout {} bytes, ends:\n{}",
        out.stdout.len(),
        tail(&out.stdout, 1000)
    );

    // Reader goes away: `sockmem trace | head -n 3` must end, sockmem exiting 0.
    let ready = tmp_path("pipe-ready");
    // Arguments after the third (`--backend B` under `cargo xtask vm-test`) go to sockmem.
    let script = r#"bin="$1"; ready="$2"; port="$3"; shift 3
"$bin" trace --port "$port" --ready-file "$ready" "$@" | head -n 3
st=("${PIPESTATUS[@]}")
echo "sockmem_status=${st[0]} head_status=${st[1]}" >&2
exit "${st[0]}""#;
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script, "bash", sockmem_bin()])
        .arg(&ready)
        .arg(P_PIPE.to_string());
    if let Some(b) = test_backend() {
        cmd.arg("--backend").arg(b);
    }
    let pipeline = Tracer::spawn(cmd, ready);
    let flow = TcpFlow::start(&pair, P_PIPE, "smtx-pipe", TcpFlowOpts::until_stopped());
    let out = pipeline.wait(Duration::from_secs(30));
    let r = flow.finish();
    assert!(
        r.received > 0,
        "expected traffic on port {P_PIPE}, got {} bytes",
        r.received
    );
    out.assert_no_panic();
    assert!(
        out.stderr.contains("sockmem_status=0"),
        "expected sockmem's own exit status 0 after its reader went away, got {}",
        out.describe()
    );
    out.assert_success();
    let lines = out.stdout.lines().count();
    assert_eq!(
        lines, 3,
        "expected 3 lines from head -n 3, got {lines}:\n{}",
        out.stdout
    );
}

#[test]
fn not_root_is_a_clear_error() {
    let bin = sockmem_bin();
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut cmd = match setpriv {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        }
        None => {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", bin]);
            c
        }
    };
    cmd.args(["trace", "--duration", "2"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    out.assert_no_panic();
    out.assert_code(1);
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("root") || lower.contains("cap_bpf"),
        "expected stderr to mention root or CAP_BPF, got {}",
        out.describe()
    );
    assert!(
        has_sockmem_prefix(&out.stderr),
        "expected a stderr line starting \"sockmem: \", got {}",
        out.describe()
    );
}
