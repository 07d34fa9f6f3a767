//! The kernel's own view of the traced sockets in `sockmem trace`: `snapshot` lines (sock_diag,
//! what `ss -tm` reads) at exit and every `--snapshot SECS`, held against the socket's last
//! event; the exit table (`socket` lines) of every socket seen. Checked against `ss` run in the
//! socket's namespace, and against what the test's own threads did.
//!
//! Root, BTF, real traffic between two network namespaces (198.18.177-181.0/24, ports 250xx).

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const MIB: u64 = 1024 * 1024;

/// The `skmem` object of a snapshot line as [`SkMem`].
fn skmem_of(snap: &Value) -> SkMem {
    let m = &snap["skmem"];
    let f = |k: &str| get_u64(m, k);
    SkMem {
        r: f("r"),
        rb: f("rb"),
        t: f("t"),
        tb: f("tb"),
        f: f("f"),
        w: f("w"),
        o: f("o"),
        bl: f("bl"),
        d: f("d"),
    }
}

/// The shape every snapshot line has: the agreement is one of three words, with a note exactly
/// when it is not "agrees"; `last_event` is null or both counters.
fn check_snapshot_shape(snap: &Value) {
    let agreement = get_str(snap, "agreement");
    assert!(
        ["agrees", "explained", "differs"].contains(&agreement),
        "expected agreement agrees|explained|differs: {snap}"
    );
    assert_eq!(
        snap.get("note").and_then(Value::as_str).is_some(),
        agreement != "agrees",
        "expected a note exactly when the snapshot does not agree: {snap}"
    );
    match &snap["last_event"] {
        Value::Null => {}
        l => {
            get_i64(l, "wmem_queued");
            get_i64(l, "wmem_alloc");
        }
    }
    skmem_of(snap);
}

/// A stalled sender (its receiver never reads) while `sockmem trace --json` runs; the tracer is
/// stopped with the connection still open and stalled, then `ss` reads the socket.
struct StalledRun {
    key: SockKey,
    sender: ThreadInfo,
    /// `ss` once the sender's queue was stable, before the tracer stopped.
    stable: SkMem,
    /// `ss` right after the tracer exited.
    after: SkMem,
    /// `ss -e`'s inode of the sender's socket.
    ino: u64,
    out: CmdOutput,
}

/// Runs a stalled sender under `sockmem <args>` and keeps it stalled for `hold` after its queue
/// is stable.
fn stalled_run(
    pair: &NetnsPair,
    port: u16,
    name: &str,
    args: &[&str],
    hold: Duration,
) -> StalledRun {
    let ((st, stable), out) = traced(args, || {
        let st = StalledTcp::start(pair, port, name);
        let (_, stable) = st.wait_stable(pair);
        thread::sleep(hold);
        (st, stable)
    });
    let key = st.key.clone();
    let after = ss_skmem(&pair.tx_ns, key.lport, port);
    let ino = ss_ino(&pair.tx_ns, "-t", key.lport, port);
    let sender = st.sender.clone();
    st.finish();
    StalledRun {
        key,
        sender,
        stable,
        after,
        ino,
        out,
    }
}

/// The exit snapshot of a stalled sender is what `ss -tm` shows in its namespace right after
/// sockmem exits (w, t, tb; the receiver does not read, so nothing moves), in agreement with
/// its last event or with a reason ("explained": a hook this kernel lacks), never "differs".
/// Its identity (4-tuple, inode, namespace, state) is the socket's. The exit table's line of
/// the socket holds the same snapshot, a largest queue at least the snapshot's, the socket's
/// send buffer (`ss` tb), its sender (this process's thread) and its event count.
#[test]
fn exit_snapshot_of_a_stalled_sender_is_what_ss_shows() {
    const P: u16 = 25001;
    let pair = NetnsPair::new("snex", 177);
    let r = stalled_run(
        &pair,
        P,
        "smtx-snex",
        &["trace", "--json", "-P", &P.to_string()],
        Duration::from_millis(600),
    );
    let trace = r.out.json();
    trace.assert_summary_counts_events();
    let key = &r.key;
    eprintln!(
        "stalled: ss stable {:?}, after exit {:?}, ino {}",
        r.stable, r.after, r.ino
    );
    assert_eq!(
        (r.after.w, r.after.t),
        (r.stable.w, r.stable.t),
        "premise: expected the stalled sender's queue not to move ({:?} then {:?})",
        r.stable,
        r.after
    );
    let sock = trace.sock_of(key);
    let snaps = trace.snapshots_of(sock);
    assert_eq!(
        snaps.len(),
        1,
        "expected exactly one snapshot of {key} (at exit; no --snapshot), got {}",
        snaps.len()
    );
    let snap = snaps[0];
    eprintln!("stalled: exit snapshot {snap}");
    check_snapshot_shape(snap);
    let k = skmem_of(snap);
    assert_eq!(
        (k.w, k.t, k.tb),
        (r.after.w, r.after.t, r.after.tb),
        "expected the exit snapshot's skmem w, t, tb to be what ss shows for {key} right after: \
         {:?}; snapshot {snap}",
        r.after
    );
    assert_ne!(
        get_str(snap, "agreement"),
        "differs",
        "expected the exit snapshot of a stalled sender to agree with its last event, or say why \
         not: {snap}\nstderr:\n{}",
        tail(&r.out.stderr, 2000)
    );
    assert!(
        !r.out.stderr.contains("differ"),
        "expected no \"differ\" warning on stderr, got:\n{}",
        tail(&r.out.stderr, 2000)
    );
    assert_eq!(
        (
            get_str(snap, "laddr"),
            get_u64(snap, "lport"),
            get_str(snap, "raddr"),
            get_u64(snap, "rport"),
        ),
        (
            key.laddr.as_str(),
            u64::from(key.lport),
            key.raddr.as_str(),
            u64::from(key.rport)
        ),
        "expected the snapshot's 4-tuple to be the socket's {key}: {snap}"
    );
    assert_eq!(
        (
            get_u64(snap, "ino"),
            get_str(snap, "netns"),
            get_str(snap, "state"),
            get_str(snap, "proto")
        ),
        (r.ino, pair.tx_ns.as_str(), "ESTAB", "tcp"),
        "expected the snapshot to name the socket's inode (ss -e), namespace, state: {snap}"
    );
    let evs = trace.events_of_sock(sock);
    let last = evs.last().expect("events of the stalled sender");
    let last_ts = last["time_s"].as_f64().unwrap_or(f64::MAX);
    assert!(
        snap["time_s"].as_f64().unwrap_or(0.0) >= last_ts,
        "expected the exit snapshot after the socket's last event ({last_ts} s): {snap}"
    );
    assert_eq!(
        (
            snap["last_event"]["wmem_queued"].as_i64(),
            snap["last_event"]["wmem_alloc"].as_i64()
        ),
        (last["wmem_queued"].as_i64(), last["wmem_alloc"].as_i64()),
        "expected the snapshot's last_event to be the socket's last event's counters: {snap} / \
         {last}"
    );

    let row = trace.socket_line(sock);
    eprintln!("stalled: socket line {row}");
    assert!(
        get_i64(row, "wmem_queued_max") >= k.w as i64,
        "expected the socket line's wmem_queued_max >= the snapshot's w {}: {row}",
        k.w
    );
    let max_seen = evs
        .iter()
        .filter_map(|e| e["wmem_queued"].as_i64())
        .max()
        .unwrap_or(0);
    assert_eq!(
        get_i64(row, "wmem_queued_max"),
        max_seen,
        "expected the socket line's wmem_queued_max to be the largest wmem_queued of its events: \
         {row}"
    );
    assert_eq!(
        (
            get_u64(row, "events"),
            get_i64(row, "sndbuf"),
            row["destroyed"].as_bool(),
            get_str(row, "proto"),
            get_u64(row, "ino")
        ),
        (
            evs.len() as u64,
            r.after.tb as i64,
            Some(false),
            "tcp",
            r.ino
        ),
        "expected the socket line to count the socket's events, show its send buffer (ss tb), \
         not destroyed, its inode: {row}"
    );
    let expected_snapshot = serde_json::json!({
        "w": k.w, "t": k.t, "tb": k.tb, "state": "ESTAB", "agreement": get_str(snap, "agreement"),
    });
    assert_eq!(
        row["snapshot"], expected_snapshot,
        "expected the socket line to carry the exit snapshot: {row}"
    );
    if trace.is_attached("sendmsg_ret") || trace.is_attached("tcp_sendmsg") {
        assert_eq!(
            (row["pid"].as_u64(), row["comm"].as_str()),
            (Some(u64::from(r.sender.tgid)), Some(r.sender.comm.as_str())),
            "expected the socket line to name the sender (this process, its thread's comm): {row}"
        );
    }
}

/// `--snapshot 1`: over a stalled run of ~4 s, a snapshot line of the sender socket every
/// second (and one at exit), in time order among the events; those taken once the queue was
/// stable show what `ss` showed then.
#[test]
fn periodic_snapshots_every_second() {
    const P: u16 = 25002;
    let pair = NetnsPair::new("snper", 178);
    let r = stalled_run(
        &pair,
        P,
        "smtx-snper",
        &["trace", "--json", "--snapshot", "1", "-P", &P.to_string()],
        Duration::from_millis(3500),
    );
    let trace = r.out.json();
    let sock = trace.sock_of(&r.key);
    let snaps = trace.snapshots_of(sock);
    let times: Vec<f64> = snaps
        .iter()
        .map(|s| s["time_s"].as_f64().unwrap_or(-1.0))
        .collect();
    let ws: Vec<u64> = snaps.iter().map(|s| skmem_of(s).w).collect();
    eprintln!(
        "periodic: {} snapshots of {} at {times:?} s, w {ws:?}; ss stable {:?}; summary {}",
        snaps.len(),
        r.key,
        r.stable,
        trace.summary
    );
    for s in &snaps {
        check_snapshot_shape(s);
    }
    // Ticks at 1, 2, 3 (4) s after the start, and the one at exit. The run holds the stall
    // for 3.5 s, so at least three are periodic even if a tick comes late.
    assert!(
        snaps.len() >= 3,
        "expected >= 3 snapshot lines of the stalled sender (every second over a ~4 s run, and \
         at exit), got {}: times {times:?}",
        snaps.len()
    );
    for w in times.windows(2) {
        assert!(
            w[1] > w[0] && (w[1] - w[0] >= 0.5 || w[1] == *times.last().unwrap()),
            "expected periodic snapshots about 1 s apart, in time order: {times:?}"
        );
    }
    let at_stable = ws.iter().filter(|&&w| w == r.stable.w).count();
    assert!(
        at_stable >= 2,
        "expected >= 2 snapshots (periodic and exit) with w {} (ss, once the queue was stable), \
         got w {ws:?}",
        r.stable.w
    );
}

/// A connected UDP sender, held open past the tracer's exit: its socket line says proto udp,
/// with its 4-tuple and event count, no write queue ever (UDP has none); its exit snapshot
/// says udp and ESTAB (connected) with the inode, send buffer and `t` that `ss -u` shows.
#[test]
fn udp_socket_in_the_exit_table_and_snapshot() {
    const P: u16 = 25003;
    const COUNT: u64 = 50;
    let pair = NetnsPair::new("snudp", 179);
    let addr = pair.rx_sockaddr(P);
    let local = SocketAddr::V4(SocketAddrV4::new(pair.tx_addr, 0));
    let release = Arc::new(AtomicBool::new(false));
    // The receiver: a bound socket (datagrams queue there unread).
    let (rx_tx, rx_rx) = mpsc::channel();
    let rel = release.clone();
    let rx = spawn_in_netns("smrx-snudp", &pair.rx_ns, move || {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let _ = rx_tx.send(());
        let deadline = Instant::now() + HOLD_TIMEOUT;
        while !rel.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        drop(s);
    });
    rx_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the UDP receiver bound");
    let ((key, sender, h), out) = traced(&["trace", "--json", "-P", &P.to_string()], || {
        let (info_tx, info_rx) = mpsc::channel();
        let rel = release.clone();
        let h = spawn_in_netns("smtx-snudp", &pair.tx_ns, move || {
            let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
            s.connect(addr)
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            let buf = [0x11u8; 800];
            for i in 0..COUNT {
                s.send(&buf)
                    .unwrap_or_else(|e| panic!("UDP send {i} to {addr}: {e}"));
            }
            let key = SockKey::new(s.local_addr().expect("a local address"), addr);
            let _ = info_tx.send((key, ThreadInfo::current()));
            let deadline = Instant::now() + HOLD_TIMEOUT;
            while !rel.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            drop(s);
        });
        let (key, sender) = info_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the UDP sender's datagrams sent");
        (key, sender, h)
    });
    let ss_line = ns_checked(
        &pair.tx_ns,
        "ss",
        &[
            "-uamneH",
            &format!("( sport = :{} and dport = :{P} )", key.lport),
        ],
    );
    release.store(true, Ordering::SeqCst);
    join_timeout(h, THREAD_TIMEOUT, "UDP sender");
    join_timeout(rx, THREAD_TIMEOUT, "UDP receiver");
    let ss_mem = parse_skmem(&ss_line).unwrap_or_else(|e| panic!("ss -uamne: {e}\n{ss_line}"));
    let ss_ino = parse_ss_ino(&ss_line).unwrap_or_else(|e| panic!("ss -uamne: {e}\n{ss_line}"));
    eprintln!("udp: ss {ss_mem:?} ino {ss_ino}: {}", ss_line.trim());

    let trace = out.json();
    let sock = trace.sock_of(&key);
    let evs = trace.events_of_sock(sock);
    let row = trace.socket_line(sock);
    eprintln!("udp: socket line {row}");
    assert_eq!(
        (
            get_str(row, "proto"),
            get_str(row, "laddr"),
            get_u64(row, "lport"),
            get_str(row, "raddr"),
            get_u64(row, "rport"),
            get_u64(row, "events"),
            get_i64(row, "wmem_queued_max"),
            get_u64(row, "ino"),
        ),
        (
            "udp",
            key.laddr.as_str(),
            u64::from(key.lport),
            key.raddr.as_str(),
            u64::from(key.rport),
            evs.len() as u64,
            0,
            ss_ino
        ),
        "expected the socket line of the UDP sender {key}: proto udp, its 4-tuple, its event \
         count, never a write queue, its inode (ss -e): {row}"
    );
    assert!(
        get_i64(row, "wmem_alloc_max") > 0,
        "expected the UDP sender's wmem_alloc_max > 0 (its datagrams were charged): {row}"
    );
    let snaps = trace.snapshots_of(sock);
    let snap = snaps.last().unwrap_or_else(|| {
        panic!("expected an exit snapshot of the UDP sender {key}, still open at exit")
    });
    eprintln!("udp: exit snapshot {snap}");
    check_snapshot_shape(snap);
    let k = skmem_of(snap);
    assert_eq!(
        (
            get_str(snap, "proto"),
            get_str(snap, "state"),
            get_u64(snap, "ino"),
            k.w,
            k.t,
            k.tb
        ),
        ("udp", "ESTAB", ss_ino, 0, ss_mem.t, ss_mem.tb),
        "expected the UDP sender's exit snapshot: proto udp, ESTAB (connected), its inode, no \
         write queue, t and tb as ss -u shows them ({ss_mem:?}): {snap}"
    );
    assert_ne!(
        get_str(snap, "agreement"),
        "differs",
        "expected the UDP sender's snapshot to agree with its last event or say why not: {snap}"
    );
    if trace.is_attached("sendmsg_ret") {
        assert_eq!(
            (row["pid"].as_u64(), row["comm"].as_str()),
            (Some(u64::from(sender.tgid)), Some(sender.comm.as_str())),
            "expected the socket line to name the UDP sender: {row}"
        );
    }
}

/// The accepted socket on the server side keeps its local port (the server's) on its
/// `sock_destroy` event, as on its other events: `-P <server port>` keeps it. Witness: the
/// server port the test listens on, the client's 4-tuple, and `ss` showing both ends gone.
#[test]
fn sock_destroy_of_an_accepted_socket_keeps_the_server_port() {
    const P: u16 = 25004;
    let pair = NetnsPair::new("sndes", 180);
    let p = P.to_string();
    let rx = pair.rx_addr.to_string();
    let (key, outs) = traced_by(
        &[
            &["trace", "--json", "-P", &p],
            &["trace", "--json", "-a", &rx],
        ],
        || {
            let t = tcp_transfer(&pair, P, "smtx-sndes", MIB);
            // Both ends closed: wait until neither namespace has a socket of the connection.
            let gone = wait_until(Duration::from_secs(20), || {
                let tx = ns_checked(&pair.tx_ns, "ss", &["-tanH", &format!("( dport = :{P} )")]);
                let rx = ns_checked(&pair.rx_ns, "ss", &["-tanH", &format!("( sport = :{P} )")]);
                !tx.lines()
                    .any(|l| !l.starts_with("TIME-WAIT") && !l.trim().is_empty())
                    && rx.trim().is_empty()
            });
            assert!(
                gone,
                "premise: expected both ends of the connection closed within 20 s"
            );
            t.key
        },
    );
    let server = SockKey {
        laddr: key.raddr.clone(),
        lport: key.rport,
        raddr: key.laddr.clone(),
        rport: key.lport,
    };
    for (i, out) in outs.iter().enumerate() {
        let trace = out.json();
        let destroys: Vec<&Value> = trace
            .events
            .iter()
            .filter(|e| hook(e) == "sock_destroy")
            .collect();
        eprintln!(
            "destroy ({}): {} sock_destroy events: {}",
            ["-P", "-a"][i],
            destroys.len(),
            destroys
                .iter()
                .map(|e| format!(
                    "{}:{} > {}:{}",
                    get_str(e, "laddr"),
                    get_u64(e, "lport"),
                    get_str(e, "raddr"),
                    get_u64(e, "rport")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let server_socks: BTreeSet<u64> = trace
            .events_for(&server)
            .iter()
            .map(|e| get_u64(e, "sock"))
            .collect();
        assert!(
            !server_socks.is_empty(),
            "expected events of the accepted socket {server}"
        );
        for sock in &server_socks {
            let d: Vec<&&Value> = destroys
                .iter()
                .filter(|e| get_u64(e, "sock") == *sock)
                .collect();
            assert!(
                !d.is_empty() && d.iter().all(|e| server.matches(e)),
                "expected a sock_destroy event of the accepted socket (sock {sock}) showing its \
                 own 4-tuple {server} (local port {P}) with {}, got: {d:?}; all sock_destroy \
                 events: {destroys:?}",
                ["-P", "-a"][i]
            );
        }
        let client_destroyed = destroys.iter().any(|e| key.matches(e));
        assert!(
            client_destroyed,
            "expected a sock_destroy event of the client socket {key}, got: {destroys:?}"
        );
    }
}

/// Text mode: the exit snapshot is a line with HOOK `snapshot` whose QUEUED and ALLOC columns
/// are `ss`'s w and t, and after the events comes the table of sockets (header SOCK INO ...),
/// with a row for the sender: its inode (ss -e), send buffer (ss tb), snapshot w and t.
#[test]
fn text_mode_snapshot_line_and_table() {
    const P: u16 = 25005;
    let pair = NetnsPair::new("sntxt", 181);
    let r = stalled_run(
        &pair,
        P,
        "smtx-sntxt",
        &["trace", "-P", &P.to_string()],
        Duration::from_millis(600),
    );
    let local = format!("{}:{}", r.key.laddr, r.key.lport);
    let remote = format!("{}:{}", r.key.raddr, r.key.rport);
    let lines: Vec<&str> = r.out.stdout.lines().collect();
    let snap_at: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(4) == Some(&"snapshot") && w.get(6) == Some(&local.as_str())
        })
        .map(|(i, _)| i)
        .collect();
    let table_at = lines
        .iter()
        .position(|l| l.split_whitespace().take(2).eq(["SOCK", "INO"]))
        .unwrap_or_else(|| {
            panic!(
                "expected a table header \"SOCK INO ...\" in the text output, stdout ends:\n{}",
                tail(&r.out.stdout, 3000)
            )
        });
    eprintln!(
        "text: snapshot lines at {snap_at:?}, table at line {table_at} of {}; ss {:?}",
        lines.len(),
        r.after
    );
    assert_eq!(
        snap_at.len(),
        1,
        "expected one snapshot line of {local} (at exit), got {}:\n{}",
        snap_at.len(),
        tail(&r.out.stdout, 3000)
    );
    let snap_line = lines[snap_at[0]];
    let cols: Vec<&str> = snap_line.split_whitespace().collect();
    // TIME CPU PID COMM HOOK PROTO LOCAL REMOTE QUEUED(Δ) ALLOC(Δ) SNDBUF LEN IFACE INFO...
    assert_eq!(
        (cols[6], cols[7]),
        (local.as_str(), remote.as_str()),
        "expected the snapshot line's LOCAL and REMOTE to be the sender's: {snap_line}"
    );
    let number = |c: &str| -> u64 {
        c.split('(')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected a number(delta) column, got {c:?} in {snap_line}"))
    };
    assert_eq!(
        (number(cols[8]), number(cols[9]), cols[10]),
        (r.after.w, r.after.t, r.after.tb.to_string().as_str()),
        "expected the snapshot line's QUEUED, ALLOC, SNDBUF to be ss's w, t, tb ({:?}): \
         {snap_line}",
        r.after
    );
    assert!(
        cols[13] == "agrees" || cols[13] == "explained",
        "expected the snapshot line's INFO to start with agrees or explained: {snap_line}"
    );
    assert!(
        snap_at[0] < table_at,
        "expected the snapshot line before the table"
    );
    assert_eq!(
        lines[table_at - 1].trim(),
        "",
        "expected an empty line before the table"
    );
    // After the header: one row per socket; the sender's has its local and remote end.
    let row = lines[table_at + 1..]
        .iter()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(5) == Some(&local.as_str()) && w.get(6) == Some(&remote.as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "expected a table row for {local} > {remote}, table:\n{}",
                lines[table_at..].join("\n")
            )
        });
    let c: Vec<&str> = row.split_whitespace().collect();
    // SOCK INO PID COMM PROTO LOCAL REMOTE EVENTS QUEUED MAX_Q ALLOC MAX_A SNDBUF SNAPSHOT
    assert_eq!(
        (c[1], c[4], c[12]),
        (
            r.ino.to_string().as_str(),
            "tcp",
            r.after.tb.to_string().as_str()
        ),
        "expected the table row's INO, PROTO, SNDBUF to be ss's inode, tcp, tb: {row}"
    );
    let want_snap = format!("w={} t={} ESTAB", r.after.w, r.after.t);
    assert!(
        row.contains(&want_snap),
        "expected the table row's SNAPSHOT column to read {want_snap:?} (ss): {row}"
    );
    let max_q: u64 = c[9]
        .parse()
        .unwrap_or_else(|e| panic!("MAX_Q {:?}: {e} in {row}", c[9]));
    assert!(
        max_q >= r.after.w,
        "expected MAX_Q >= ss w {}: {row}",
        r.after.w
    );
    if c[2] != "-" {
        assert_eq!(
            (c[2], c[3]),
            (r.sender.tgid.to_string().as_str(), r.sender.comm.as_str()),
            "expected the table row's PID and COMM to be the sender's: {row}"
        );
    }
}
