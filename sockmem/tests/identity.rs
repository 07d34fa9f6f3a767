//! Socket identity in `sockmem trace --json`: every socket gets its own `sock` id (also when the
//! kernel reuses a `struct sock` address for the next connection), its `ino` is the inode
//! number `ss -e` shows, the summary counts every socket seen, and kernel addresses (`sk`,
//! `skb`) appear only with `--kernel-addrs`.
//!
//! Root, BTF, real traffic between two network namespaces (198.18.170-173.0/24, ports 230xx),
//! as in `trace.rs`.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// `n` TCP connections, one after the other, from thread `sender_name` in the sender namespace
/// to one listener on rx_addr:`port`: each connects, writes `bytes`, closes; the receiver reads
/// each to EOF, then closes its end. Returns each client socket's 4-tuple, in order, and the
/// bytes the receiver read from each.
fn sequential_connections(
    pair: &NetnsPair,
    port: u16,
    sender_name: &str,
    n: usize,
    bytes: usize,
) -> (Vec<SockKey>, Vec<u64>) {
    let addr = pair.rx_sockaddr(port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = spawn_in_netns(&format!("smrx-{port}"), &pair.rx_ns, move || {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("receiver: bind {addr}: {e}"));
        let _ = ready_tx.send(());
        let mut got = Vec::new();
        for i in 0..n {
            listener
                .set_nonblocking(true)
                .expect("the listener made nonblocking");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut s = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            Instant::now() < deadline,
                            "receiver on {addr}: connection {i} not accepted within 20 s"
                        );
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("receiver on {addr}: accept: {e}"),
                }
            };
            s.set_nonblocking(false).expect("a blocking socket");
            s.set_read_timeout(Some(IO_TIMEOUT))
                .expect("a read timeout set on the socket");
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => total += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("receiver on {addr}: connection {i}: read: {e}"),
                }
            }
            got.push(total);
        }
        got
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the receiver to listen within 20 s");
    let tx = spawn_in_netns(sender_name, &pair.tx_ns, move || {
        let mut keys = Vec::new();
        let data = vec![0x42u8; bytes];
        for i in 0..n {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("sender: connection {i} to {addr}: {e}"));
            s.set_write_timeout(Some(IO_TIMEOUT))
                .expect("a write timeout set on the socket");
            keys.push(SockKey::new(
                s.local_addr().expect("a local address"),
                s.peer_addr().expect("a peer address"),
            ));
            s.write_all(&data)
                .unwrap_or_else(|e| panic!("sender: connection {i}: write: {e}"));
            drop(s);
        }
        keys
    });
    let keys = join_timeout(tx, THREAD_TIMEOUT, "sequential sender");
    let got = join_timeout(rx, THREAD_TIMEOUT, "sequential receiver");
    (keys, got)
}

/// One line per event: time, sk (if present), hook, 4-tuple, counters (for messages).
fn brief_events(evs: &[&Value], max: usize) -> String {
    let mut lines: Vec<String> = evs
        .iter()
        .take(max)
        .map(|e| {
            format!(
                "{:.6} sock {} sk {} {:<14} {}:{} > {}:{} q={} a={} owner={} comm={}",
                e["time_s"].as_f64().unwrap_or(-1.0),
                e["sock"],
                e.get("sk").and_then(Value::as_str).unwrap_or("-"),
                hook(e),
                get_str(e, "laddr"),
                get_u64(e, "lport"),
                get_str(e, "raddr"),
                get_u64(e, "rport"),
                e["wmem_queued"],
                e["wmem_alloc"],
                e["owner"],
                e["comm"]
            )
        })
        .collect();
    if evs.len() > max {
        lines.push(format!("... {} more", evs.len() - max));
    }
    lines.join("\n")
}

/// Twenty short connections, one after the other, from one client to one server port: each
/// client socket is its own `sock` in `trace` (20 distinct ids, one per 4-tuple, even where the
/// kernel hands the next connection the same `struct sock`, which `--kernel-addrs` shows), and
/// its own key in `hist --per socket`; the summary's `sockets` counts every one, destroyed ones
/// included. Witness: the client's own 4-tuples (`getsockname`/`getpeername`) and the bytes the
/// server read from each.
#[test]
fn sequential_connections_are_distinct_sockets() {
    const P: u16 = 23001;
    const N: usize = 20;
    const BYTES: usize = 48 * 1024;
    let pair = NetnsPair::new("seq", 170);
    let p = P.to_string();
    let ((keys, got), outs) = traced_by(
        &[
            &["trace", "--json", "--kernel-addrs", "-P", &p],
            &["hist", "--json", "--per", "socket", "-P", &p],
        ],
        || sequential_connections(&pair, P, "smtx-seq", N, BYTES),
    );
    assert_eq!(
        got,
        vec![BYTES as u64; N],
        "premise: expected the server to read {BYTES} bytes from each of the {N} connections"
    );
    let lports: BTreeSet<u16> = keys.iter().map(|k| k.lport).collect();
    assert_eq!(
        lports.len(),
        N,
        "premise: expected {N} distinct client ports, got {keys:?}"
    );
    let trace = outs[0].json();
    trace.assert_summary_counts_events();

    // Each client 4-tuple: exactly one socket id, and no two share one.
    let mut sock_of_key: BTreeMap<u64, SockKey> = BTreeMap::new();
    for k in &keys {
        let sock = trace.sock_of(k);
        if let Some(other) = sock_of_key.insert(sock, k.clone()) {
            panic!("expected a socket id of its own for each connection; {k} and {other} both carry sock {sock}");
        }
    }
    // Every event on the client side (remote port P) belongs to one of those 20 sockets, and
    // a socket's events never show two local ports.
    let mut client_socks: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for e in &trace.events {
        if get_u64(e, "rport") == u64::from(P) {
            client_socks
                .entry(get_u64(e, "sock"))
                .or_default()
                .insert(get_u64(e, "lport"));
        }
    }
    for (sock, ports) in &client_socks {
        let nonzero: Vec<&u64> = ports.iter().filter(|p| **p != 0).collect();
        assert!(
            nonzero.len() == 1,
            "expected the client-side events of sock {sock} to show exactly one local port, got \
             {ports:?}"
        );
    }
    assert_eq!(
        client_socks.keys().copied().collect::<BTreeSet<u64>>(),
        sock_of_key.keys().copied().collect::<BTreeSet<u64>>(),
        "expected the client-side socket ids to be exactly those of the {N} connections"
    );

    // Kernel addresses, asked for: `sk` on every event, `skb` exactly on the events with one.
    for e in &trace.events {
        assert!(
            e.get("sk").and_then(Value::as_str).is_some(),
            "expected \"sk\" on every event with --kernel-addrs: {e}"
        );
        assert_eq!(
            e.get("skb").and_then(Value::as_str).is_some(),
            has_skb(e),
            "expected \"skb\" exactly on events with has_skb true (--kernel-addrs): {e}"
        );
    }
    let mut sk_of_sock: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for e in &trace.events {
        let sock = get_u64(e, "sock");
        if sock_of_key.contains_key(&sock) {
            sk_of_sock
                .entry(sock)
                .or_default()
                .insert(get_str(e, "sk").to_string());
        }
    }
    for (sock, sks) in &sk_of_sock {
        assert_eq!(
            sks.len(),
            1,
            "expected one kernel address for sock {sock}, got {sks:?}"
        );
    }
    // How often the kernel handed a `struct sock` address to another socket during the run
    // (the case socket ids exist for): addresses that carried more than one id.
    let mut socks_at: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for e in &trace.events {
        socks_at
            .entry(get_str(e, "sk"))
            .or_default()
            .insert(get_u64(e, "sock"));
    }
    let reused = socks_at.values().filter(|ids| ids.len() > 1).count();
    eprintln!(
        "sequential: {N} connections, {} client socket ids; {} kernel addresses in all, {reused} \
         of them reused for another socket id; summary {}",
        sock_of_key.len(),
        socks_at.len(),
        trace.summary
    );

    // The summary counts every socket seen: the 20 clients, the 20 accepted sockets on the
    // server side, destroyed or not.
    let all_socks: BTreeSet<u64> = trace.events.iter().map(|e| get_u64(e, "sock")).collect();
    let sockets = trace.summary_u64("sockets");
    assert_eq!(
        sockets,
        all_socks.len() as u64,
        "expected the summary's sockets to count every socket id the events show ({}), got \
         {sockets}",
        all_socks.len()
    );
    assert!(
        sockets >= N as u64,
        "expected the summary to count >= {N} sockets (one per connection), got {sockets}"
    );
    assert_eq!(
        trace.sockets.len() as u64,
        sockets,
        "expected one \"socket\" line per socket seen ({sockets}), got {}",
        trace.sockets.len()
    );

    // No socket id is shared by two sockets: a client socket's id never shows on an event of
    // another 4-tuple, the server side's accepted sockets included (one can be given a
    // destroyed client's `struct sock`, before it has a file).
    for (sock, key) in &sock_of_key {
        let foreign: Vec<&Value> = trace
            .events_of_sock(*sock)
            .into_iter()
            .filter(|e| !key.matches(e) && get_u64(e, "lport") != 0)
            .collect();
        assert!(
            foreign.is_empty(),
            "expected every event of sock {sock} to be of connection {key}; {} are of another \
             socket (sk, hook, 4-tuple):\n{}",
            foreign.len(),
            brief_events(&trace.events_of_sock(*sock), 40)
        );
    }

    // hist --per socket: one key per client socket, not one for all of them.
    let doc = HistDoc::parse(&outs[1].stdout, "socket")
        .unwrap_or_else(|e| panic!("bad hist --json output ({e}): {}", outs[1].describe()));
    let labels = doc.keys("wmem_queued");
    let client_labels: Vec<&String> = labels
        .iter()
        .filter(|l| l.ends_with(&format!(" > {}:{P} tcp", pair.rx_addr)))
        .collect();
    eprintln!(
        "sequential: hist --per socket has {} wmem_queued keys, {} of them client sockets",
        labels.len(),
        client_labels.len()
    );
    for k in &keys {
        let label = format!("{}:{} > {}:{} tcp", k.laddr, k.lport, k.raddr, k.rport);
        let n = labels.iter().filter(|l| **l == label).count();
        assert_eq!(
            n, 1,
            "expected exactly one hist --per socket key {label:?} (connection {k}), got {n}; \
             client keys: {client_labels:?}"
        );
    }
    assert!(
        client_labels.len() >= N,
        "expected >= {N} client socket keys in hist --per socket, got {}",
        client_labels.len()
    );

    // The socket lines show each client's own 4-tuple, and destroyed as sock_destroy said.
    for (sock, key) in &sock_of_key {
        let row = trace.socket_line(*sock);
        let destroyed_event = trace
            .events_of_sock(*sock)
            .iter()
            .any(|e| hook(e) == "sock_destroy");
        assert_eq!(
            row["destroyed"].as_bool(),
            Some(destroyed_event),
            "expected the socket line of {key} (sock {sock}) to say destroyed exactly when a \
             sock_destroy event was seen ({destroyed_event}): {row}"
        );
        assert_eq!(
            (get_str(row, "laddr"), get_u64(row, "lport")),
            (key.laddr.as_str(), u64::from(key.lport)),
            "expected the socket line of sock {sock} to show its local end {key}: {row}"
        );
    }
}

/// A held-open connection: every event of the client socket carries the inode number that
/// `ip netns exec NS ss -tine` shows for it (`ino:`), and so do its exit snapshot and socket
/// line. The accepted socket on the server side had no file when first seen (it is created in
/// softirq, before `accept()`): its events carry 0 or its own `ss` inode, never another.
/// Without `--kernel-addrs`, no event has `sk` or `skb`.
#[test]
fn inode_is_what_ss_shows() {
    const P: u16 = 23002;
    let pair = NetnsPair::new("ino", 171);
    let bytes = MIB;
    let ((flow, client_ino, server_ino), out) =
        traced(&["trace", "--json", "-P", &P.to_string()], || {
            let flow = TcpFlow::start(&pair, P, "smtx-ino", TcpFlowOpts::bytes(bytes).hold_open());
            flow.wait_sender_done(Duration::from_secs(60));
            flow.wait_received(bytes, Duration::from_secs(60));
            let client_ino = ss_ino(&pair.tx_ns, "-t", flow.key.lport, P);
            let server_ino = ss_ino(&pair.rx_ns, "-t", P, flow.key.lport);
            (flow, client_ino, server_ino)
        });
    let key = flow.key.clone();
    flow.finish_transfer();
    let trace = out.json();
    trace.assert_summary_counts_events();
    eprintln!("ino: client {key} ino {client_ino} (ss), server ino {server_ino} (ss)");
    assert!(
        client_ino != 0 && server_ino != 0 && client_ino != server_ino,
        "premise: expected two distinct non-zero inodes from ss, got {client_ino} and \
         {server_ino}"
    );

    let evs = trace.events_for(&key);
    assert!(
        !evs.is_empty(),
        "expected events of the client socket {key}"
    );
    let wrong: Vec<&Value> = evs
        .iter()
        .copied()
        .filter(|e| get_u64(e, "ino") != client_ino)
        .collect();
    assert!(
        wrong.is_empty(),
        "expected every event of {key} to carry ino {client_ino} (ss -tine), {} of {} do not:\n{}",
        wrong.len(),
        evs.len(),
        first_few(&wrong, 3)
    );
    let sock = trace.sock_of(&key);
    let row = trace.socket_line(sock);
    assert_eq!(
        get_u64(row, "ino"),
        client_ino,
        "expected the socket line of {key} to carry ino {client_ino}: {row}"
    );
    let snaps = trace.snapshots_of(sock);
    let exit = snaps.last().unwrap_or_else(|| {
        panic!("expected an exit snapshot of the still open client socket {key}, got none")
    });
    assert_eq!(
        get_u64(exit, "ino"),
        client_ino,
        "expected the exit snapshot of {key} to carry ino {client_ino}: {exit}"
    );

    let server_key = SockKey {
        laddr: key.raddr.clone(),
        lport: key.rport,
        raddr: key.laddr.clone(),
        rport: key.lport,
    };
    let server_evs = trace.events_for(&server_key);
    let server_inos: BTreeSet<u64> = server_evs.iter().map(|e| get_u64(e, "ino")).collect();
    eprintln!(
        "ino: {} events of the server socket, inos {server_inos:?}",
        server_evs.len()
    );
    assert!(
        server_inos.iter().all(|&i| i == 0 || i == server_ino),
        "expected the accepted socket's events to carry ino 0 (no file when first seen) or \
         {server_ino} (ss -tine), got {server_inos:?}"
    );

    let with_addrs: Vec<&Value> = trace
        .events
        .iter()
        .filter(|e| e.get("sk").is_some() || e.get("skb").is_some())
        .collect();
    assert!(
        with_addrs.is_empty(),
        "expected no \"sk\" or \"skb\" without --kernel-addrs, {} events have one:\n{}",
        with_addrs.len(),
        first_few(&with_addrs, 3)
    );
    assert!(
        trace.events.iter().any(has_skb),
        "expected some events to say has_skb true (the data skbs)"
    );
}

/// `socket` lines and the summary with connections that overlap: N held-open connections,
/// then all closed; the summary counts >= N sockets, and the addresses of every client 4-tuple
/// appear on a socket line.
#[test]
fn summary_counts_every_socket_seen() {
    const P0: u16 = 23010;
    const N: u16 = 5;
    let pair = NetnsPair::new("count", 172);
    let ports: Vec<String> = (0..N).map(|i| (P0 + i).to_string()).collect();
    let mut args = vec!["trace", "--json"];
    for p in &ports {
        args.extend(["-P", p.as_str()]);
    }
    let (keys, out) = traced(&args, || {
        let flows: Vec<TcpFlow> = (0..N)
            .map(|i| {
                TcpFlow::start(
                    &pair,
                    P0 + i,
                    &format!("smtx-cnt{i}"),
                    TcpFlowOpts::bytes(256 * KIB),
                )
            })
            .collect();
        flows
            .into_iter()
            .map(|f| f.finish_transfer().key)
            .collect::<Vec<SockKey>>()
    });
    let trace = out.json();
    let sockets = trace.summary_u64("sockets");
    eprintln!(
        "count: {N} connections; summary {}; {} socket lines",
        trace.summary,
        trace.sockets.len()
    );
    assert!(
        sockets >= u64::from(N),
        "expected the summary to count >= {N} sockets, got {sockets}"
    );
    for k in &keys {
        let sock = trace.sock_of(k);
        let row = trace.socket_line(sock);
        assert_eq!(
            (
                get_str(row, "raddr"),
                get_u64(row, "rport"),
                get_str(row, "proto")
            ),
            (k.raddr.as_str(), u64::from(k.rport), "tcp"),
            "expected the socket line of {k} to show its remote end: {row}"
        );
    }
}
