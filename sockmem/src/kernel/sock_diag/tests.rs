//! Parser tests on captured and constructed netlink messages (no root needed).
use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

use super::{tcp_info::tcpi, *};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_MULTI: u16 = 2;
const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_SKMEMINFO: u16 = 7;
const INET_DIAG_SHUTDOWN: u16 = 8;
const SEQ: u32 = 42;

// Captured on Linux 6.18 (x86_64, little endian) with a dump request of sequence number
// 42 in a fresh network namespace, where `ss -tmie` / `ss -uamie` showed at the same time:
//   ESTAB 1000 0 127.0.0.1:5001 127.0.0.1:43006 ino:99419 sk:f
//     skmem:(r1832,rb131072,t0,tb3939840,f2264,w0,o0,bl0,d0) ... rtt:0.017/0.008 ...
//     cwnd:10 ... snd_wnd:65536
//   UNCONN 1280 0 [::1]:5002 [::]:* ino:99420 sk:11
//     skmem:(r1280,rb212992,t0,tb212992,f2816,w0,o0,bl0,d0)
// The TCP message carries a 280-byte tcp_info (longer than the 232 bytes this file reads).
const CAPTURED_TCP4: &str = concat!(
    "c0010000140002002a0000004c090000020100001389a7fe7f000001000000000000000000000000",
    "7f000001000000000000000000000000000000000f0000000000000000000000e803000000000000",
    "000000005b840100050008000000000008000f00000000000c001500010000000000000006001600",
    "5200000028000700280700000000020000000000001e3c00d8080000000000000000000000000000",
    "000000001c010200010000000007aa01e01c0300409c000000800000e80300000000000000000000",
    "00000000000000000000000010040000000000001004000010040000ffff00001d12010011000000",
    "08000000ffffff7f0a000000cbff00000300000000000000cbff000000000000f08660d30c000000",
    "ffffffffffffffff0000000000000000e80300000000000001000000030000000000000011000000",
    "01000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "01000000000000000000000000000000000000000000000000000000000000000000000000000100",
    "00140100000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000",
);
const CAPTURED_DONE: &str = "14000000030002002a0000004c09000000000000";
const CAPTURED_UDP6: &str = concat!(
    "ac000000140002002a000000750900000a070000138a000000000000000000000000000000000001",
    "00000000000000000000000000000000000000001100000000000000000000000005000000000000",
    "000000005c840100050008000000000005000b000100000008000f00000000000c00150001000000",
    "0000000006001600100000002800070000050000004003000000000000400300000b000000000000",
    "000000000000000000000000",
);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// A netlink message: `struct nlmsghdr` + payload, padded to 4 bytes.
fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    pad4(&mut v);
    v
}

/// A netlink attribute: `struct nlattr` + value, padded to 4 bytes.
fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(value);
    pad4(&mut v);
    v
}

fn u32s(vals: &[u32]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(ip) => b[..4].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => b.copy_from_slice(&ip.octets()),
    }
    b
}

/// `struct inet_diag_msg` of a socket `local` → `remote`.
fn diag_msg(
    state: u8,
    local: SocketAddr,
    remote: SocketAddr,
    ino: u32,
    uid: u32,
    cookie: u64,
) -> Vec<u8> {
    let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut v = vec![family, state, 0, 0];
    v.extend_from_slice(&local.port().to_be_bytes());
    v.extend_from_slice(&remote.port().to_be_bytes());
    v.extend_from_slice(&ip_bytes(local.ip()));
    v.extend_from_slice(&ip_bytes(remote.ip()));
    v.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    v.extend_from_slice(&(cookie as u32).to_ne_bytes());
    v.extend_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    // expires, rqueue, wqueue, uid, inode
    v.extend_from_slice(&u32s(&[0, 0, 0, uid, ino]));
    assert_eq!(v.len(), 72);
    v
}

/// A SOCK_DIAG_BY_FAMILY message (sequence [`SEQ`]) for a socket with inode `ino`, uid
/// 1000, cookie `ino + 7`, the meminfo array `mem` and, if given, a tcp_info `info`.
fn sock_msg(ino: u32, mem: &[u32], info: Option<&[u8]>) -> Vec<u8> {
    let local = "10.0.0.1:1000".parse().unwrap();
    let remote = "10.0.0.2:2000".parse().unwrap();
    let mut p = diag_msg(1, local, remote, ino, 1000, u64::from(ino) + 7);
    p.extend(attr(INET_DIAG_SHUTDOWN, &[0]));
    p.extend(attr(INET_DIAG_SKMEMINFO, &u32s(mem)));
    if let Some(info) = info {
        p.extend(attr(INET_DIAG_INFO, info));
    }
    nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, SEQ, &p)
}

fn done(seq: u32, code: i32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &code.to_ne_bytes())
}

fn dump_of(family: Family, protocol: Protocol, filter: &DumpFilter) -> Dump<'_> {
    Dump {
        family,
        protocol,
        seq: SEQ,
        filter,
    }
}

/// Parses `buf` as one datagram of an IPv4 `protocol` dump with the default filter.
fn parse(protocol: Protocol, buf: &[u8]) -> (Result<Progress, SockDiagError>, Vec<SockMem>) {
    let filter = DumpFilter::all();
    let mut out = Vec::new();
    let r = dump_of(Family::Ipv4, protocol, &filter).parse_datagram(buf, &mut out);
    (r, out)
}

fn u64_slot(off: usize) -> u64 {
    ((off as u64) << 32) | off as u64
}

/// A tcp_info of `len` bytes where every u32 field read here holds its own byte offset and
/// every u64 field read here holds [`u64_slot`] of its offset.
fn tcp_info_bytes(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for off in (0..len.saturating_sub(3)).step_by(4) {
        b[off..off + 4].copy_from_slice(&(off as u32).to_ne_bytes());
    }
    for off in [
        tcpi::PACING_RATE,
        tcpi::MAX_PACING_RATE,
        tcpi::BYTES_ACKED,
        tcpi::DELIVERY_RATE,
        tcpi::BUSY_TIME,
        tcpi::RWND_LIMITED,
        tcpi::SNDBUF_LIMITED,
    ] {
        if off + 8 <= len {
            b[off..off + 8].copy_from_slice(&u64_slot(off).to_ne_bytes());
        }
    }
    b
}

#[test]
fn captured_tcp_message_matches_what_ss_printed() {
    let mut buf = hex(CAPTURED_TCP4);
    buf.extend(hex(CAPTURED_DONE));
    let (r, out) = parse(Protocol::Tcp, &buf);
    assert_eq!(r.unwrap(), Progress::Done);
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(s.ino, 99419);
    assert_eq!(s.family, Family::Ipv4);
    assert_eq!(s.protocol, Protocol::Tcp);
    assert_eq!(s.local, "127.0.0.1:5001".parse::<SocketAddr>().unwrap());
    assert_eq!(s.remote, "127.0.0.1:43006".parse::<SocketAddr>().unwrap());
    assert_eq!((s.state, s.state_name()), (1, "ESTAB"));
    assert_eq!(s.cookie, 0xf);
    assert_eq!(s.uid, 0);
    let skmem = [
        s.rmem_alloc,
        s.rcvbuf,
        s.wmem_alloc,
        s.sndbuf,
        s.fwd_alloc,
        s.wmem_queued,
        s.optmem,
        s.backlog,
        s.drops,
    ];
    assert_eq!(skmem, [1832, 131072, 0, 3939840, 2264, 0, 0, 0, 0]);
    let t = s.tcp.as_ref().expect("tcp_info");
    assert_eq!(t.info_len, 280);
    assert_eq!((t.rtt, t.rttvar), (Some(17), Some(8)));
    assert_eq!(t.snd_cwnd, Some(10));
    assert_eq!(t.snd_wnd, Some(65536));
    assert_eq!(t.unacked, Some(0));
    assert_eq!(t.notsent_bytes, Some(0));
    assert!(t.busy_time.is_some() && t.rwnd_limited.is_some() && t.sndbuf_limited.is_some());
}

#[test]
fn captured_udp6_message_matches_what_ss_printed() {
    let mut buf = hex(CAPTURED_UDP6);
    buf.extend(hex(CAPTURED_DONE));
    let filter = DumpFilter::all();
    let mut out = Vec::new();
    let r = dump_of(Family::Ipv6, Protocol::Udp, &filter).parse_datagram(&buf, &mut out);
    assert_eq!(r.unwrap(), Progress::Done);
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(s.ino, 99420);
    assert_eq!(s.family, Family::Ipv6);
    assert_eq!(s.protocol, Protocol::Udp);
    assert_eq!(s.local, "[::1]:5002".parse::<SocketAddr>().unwrap());
    assert_eq!(s.remote, "[::]:0".parse::<SocketAddr>().unwrap());
    assert_eq!(s.state_name(), "UNCONN");
    assert_eq!(s.cookie, 0x11);
    assert_eq!(
        (
            s.rmem_alloc,
            s.rcvbuf,
            s.wmem_alloc,
            s.sndbuf,
            s.fwd_alloc,
            s.wmem_queued
        ),
        (1280, 212992, 0, 212992, 2816, 0)
    );
    assert_eq!(s.tcp, None);
}

#[test]
fn meminfo_array_maps_to_the_names_ss_prints() {
    // SK_MEMINFO_RMEM_ALLOC .. SK_MEMINFO_DROPS = r, rb, t, tb, f, w, o, bl, d.
    let msg = sock_msg(5, &[11, 12, 13, 14, 15, 16, 17, 18, 19], None);
    let (r, out) = parse(Protocol::Udp, &msg);
    assert_eq!(r.unwrap(), Progress::More);
    let s = &out[0];
    assert_eq!(s.rmem_alloc, 11, "r");
    assert_eq!(s.rcvbuf, 12, "rb");
    assert_eq!(s.wmem_alloc, 13, "t");
    assert_eq!(s.sndbuf, 14, "tb");
    assert_eq!(s.fwd_alloc, 15, "f");
    assert_eq!(s.wmem_queued, 16, "w");
    assert_eq!(s.optmem, 17, "o");
    assert_eq!(s.backlog, 18, "bl");
    assert_eq!(s.drops, 19, "d");
    assert_eq!((s.ino, s.uid, s.cookie), (5, 1000, 12));
    assert_eq!(s.tcp, None);

    // A later kernel appending a tenth counter: the nine known ones are unchanged.
    let msg = sock_msg(6, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], None);
    let (r, out) = parse(Protocol::Udp, &msg);
    r.unwrap();
    assert_eq!((out[0].rmem_alloc, out[0].drops), (1, 9));
}

#[test]
fn tcp_info_fields_are_read_only_where_the_kernel_struct_reaches() {
    // 2.6-era struct (ends at tcpi_total_retrans): no 64-bit rates, no chrono fields.
    let t = TcpInfoSubset::parse(&tcp_info_bytes(104));
    assert_eq!(t.info_len, 104);
    assert_eq!(t.snd_mss, Some(tcpi::SND_MSS as u32));
    assert_eq!(t.unacked, Some(tcpi::UNACKED as u32));
    assert_eq!(t.rtt, Some(tcpi::RTT as u32));
    assert_eq!(t.rttvar, Some(tcpi::RTTVAR as u32));
    assert_eq!(t.snd_cwnd, Some(tcpi::SND_CWND as u32));
    assert_eq!(t.pacing_rate, None);
    assert_eq!(t.notsent_bytes, None);
    assert_eq!(t.delivery_rate, None);
    assert_eq!(t.busy_time, None);
    assert_eq!(t.snd_wnd, None);

    // 4.9: up to tcpi_delivery_rate.
    let t = TcpInfoSubset::parse(&tcp_info_bytes(168));
    assert_eq!(t.pacing_rate, Some(u64_slot(tcpi::PACING_RATE)));
    assert_eq!(t.max_pacing_rate, Some(u64_slot(tcpi::MAX_PACING_RATE)));
    assert_eq!(t.bytes_acked, Some(u64_slot(tcpi::BYTES_ACKED)));
    assert_eq!(t.notsent_bytes, Some(tcpi::NOTSENT_BYTES as u32));
    assert_eq!(t.delivery_rate, Some(u64_slot(tcpi::DELIVERY_RATE)));
    assert_eq!(
        (t.busy_time, t.rwnd_limited, t.sndbuf_limited),
        (None, None, None)
    );

    // One byte short of the end of tcpi_snd_wnd.
    let t = TcpInfoSubset::parse(&tcp_info_bytes(231));
    assert_eq!(t.sndbuf_limited, Some(u64_slot(tcpi::SNDBUF_LIMITED)));
    assert_eq!(t.snd_wnd, None);

    // 5.4 (232) and longer, newer structs (6.18 sends 280): every field.
    for len in [232, 280, 400] {
        let t = TcpInfoSubset::parse(&tcp_info_bytes(len));
        assert_eq!(t.info_len, len);
        assert_eq!(t.busy_time, Some(u64_slot(tcpi::BUSY_TIME)));
        assert_eq!(t.rwnd_limited, Some(u64_slot(tcpi::RWND_LIMITED)));
        assert_eq!(t.sndbuf_limited, Some(u64_slot(tcpi::SNDBUF_LIMITED)));
        assert_eq!(t.snd_wnd, Some(tcpi::SND_WND as u32));
    }

    // Through a whole message: a short tcp_info gives a TCP socket with partial info.
    let msg = sock_msg(7, &[0; 9], Some(&tcp_info_bytes(104)));
    let (r, out) = parse(Protocol::Tcp, &msg);
    r.unwrap();
    let t = out[0].tcp.as_ref().expect("tcp_info");
    assert_eq!(
        (t.info_len, t.rtt, t.busy_time),
        (104, Some(tcpi::RTT as u32), None)
    );
    // An empty tcp_info: every field None, no panic.
    assert_eq!(TcpInfoSubset::parse(&[]), TcpInfoSubset::default());
}

#[test]
fn ipv4_and_ipv6_addresses_and_ports() {
    let filter = DumpFilter::all();
    let cases = [
        ("192.0.2.1:443", "198.51.100.7:51000"),
        ("0.0.0.0:8080", "0.0.0.0:0"),
        ("[2001:db8::1]:443", "[fe80::1:2:3:4]:65535"),
        ("[::ffff:192.0.2.9]:80", "[::ffff:198.51.100.1]:1"),
    ];
    for (local, remote) in cases {
        let local: SocketAddr = local.parse().unwrap();
        let remote: SocketAddr = remote.parse().unwrap();
        let mut p = diag_msg(1, local, remote, 9, 0, 0);
        p.extend(attr(INET_DIAG_SKMEMINFO, &u32s(&[0; 9])));
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, SEQ, &p);
        let family = if local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let mut out = Vec::new();
        dump_of(family, Protocol::Tcp, &filter)
            .parse_datagram(&buf, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].local, out[0].remote), (local, remote));
        assert_eq!(out[0].family, family);
    }
    // The builder writes addresses in network order, as the kernel does.
    let ip = ip_bytes(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(&ip[..4], &[0xc0, 0, 2, 1]);
    assert_eq!(ip_bytes(IpAddr::V6(Ipv6Addr::LOCALHOST))[15], 1);
}

#[test]
fn multi_part_dump_runs_until_nlmsg_done() {
    // Datagram 1: two sockets and a stale message of an older request (skipped).
    let mut d1 = sock_msg(1, &[1; 9], None);
    d1.extend(sock_msg(2, &[2; 9], None));
    let mut stale = sock_msg(3, &[3; 9], None);
    stale[8..12].copy_from_slice(&(SEQ - 1).to_ne_bytes());
    d1.extend(stale);
    // Datagram 2: one more socket and NLMSG_DONE.
    let mut d2 = sock_msg(4, &[4; 9], None);
    d2.extend(done(SEQ, 0));
    // A stale NLMSG_DONE does not end the dump.
    let d0 = done(SEQ - 1, 0);

    let filter = DumpFilter::all();
    let dump = dump_of(Family::Ipv4, Protocol::Udp, &filter);
    let mut out = Vec::new();
    assert_eq!(dump.parse_datagram(&d0, &mut out).unwrap(), Progress::More);
    assert_eq!(dump.parse_datagram(&d1, &mut out).unwrap(), Progress::More);
    assert_eq!(dump.parse_datagram(&d2, &mut out).unwrap(), Progress::Done);
    let inos: Vec<u64> = out.iter().map(|s| s.ino).collect();
    assert_eq!(inos, [1, 2, 4]);

    // The inode filter keeps only the asked-for sockets.
    let filter = DumpFilter::all().with_inodes([2, 4, 99]);
    let dump = dump_of(Family::Ipv4, Protocol::Udp, &filter);
    let mut out = Vec::new();
    dump.parse_datagram(&d1, &mut out).unwrap();
    dump.parse_datagram(&d2, &mut out).unwrap();
    let inos: Vec<u64> = out.iter().map(|s| s.ino).collect();
    assert_eq!(inos, [2, 4]);

    // A zero-length NLMSG_DONE (the kernel allows it) also ends the dump.
    let bare = nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &[]);
    let (r, _) = parse(Protocol::Udp, &bare);
    assert_eq!(r.unwrap(), Progress::Done);
}

#[test]
fn mini_sockets_without_meminfo_are_skipped() {
    let local = "10.0.0.1:1".parse().unwrap();
    let remote = "10.0.0.2:2".parse().unwrap();
    let p = diag_msg(6, local, remote, 0, 0, 0);
    let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, SEQ, &p);
    buf.extend(done(SEQ, 0));
    let (r, out) = parse(Protocol::Tcp, &buf);
    assert_eq!(r.unwrap(), Progress::Done);
    assert!(out.is_empty());
}

#[test]
fn nlmsg_error_and_failed_done_are_errors_carrying_the_errno() {
    // NLMSG_ERROR: the negative errno, then the header of the offending request.
    let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
    payload.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 0x301, SEQ, &[0; 56]));
    let buf = nlmsg(NLMSG_ERROR, 0, SEQ, &payload);
    let filter = DumpFilter::all();
    let mut out = Vec::new();
    let err = dump_of(Family::Ipv6, Protocol::Udp, &filter)
        .parse_datagram(&buf, &mut out)
        .unwrap_err();
    match &err {
        SockDiagError::Refused {
            family,
            protocol,
            source,
        } => {
            assert_eq!((*family, *protocol), (Family::Ipv6, Protocol::Udp));
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        e => panic!("expected Refused, got {e:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("the kernel refused the udp ipv6"), "{msg}");
    assert!(msg.contains("no sock_diag handler"), "{msg}");
    assert!(std::error::Error::source(&err).is_some());

    // An ACK (error code 0) is not an error.
    let mut ack = 0i32.to_ne_bytes().to_vec();
    ack.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 0x301, SEQ, &[0; 56]));
    let mut buf = nlmsg(NLMSG_ERROR, 0, SEQ, &ack);
    buf.extend(done(SEQ, 0));
    let (r, _) = parse(Protocol::Tcp, &buf);
    assert_eq!(r.unwrap(), Progress::Done);

    // NLMSG_DONE carrying a negative errno: the dump failed in the kernel.
    let (r, _) = parse(Protocol::Tcp, &done(SEQ, -libc::ENOBUFS));
    match r {
        Err(SockDiagError::Refused { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOBUFS))
        }
        r => panic!("expected Refused, got {r:?}"),
    }
}

#[test]
fn malformed_datagrams_are_decode_errors_not_panics() {
    let good = sock_msg(1, &[0; 9], None);
    let mut zero_len = good.clone();
    zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
    for (what, buf) in [
        ("cut header", good[..10].to_vec()),
        ("cut message", good[..good.len() - 8].to_vec()),
        ("zero length", zero_len),
        ("meminfo of 4 counters", sock_msg(1, &[0; 4], None)),
    ] {
        let (r, _) = parse(Protocol::Udp, &buf);
        assert!(
            matches!(r, Err(SockDiagError::Decode { .. })),
            "{what}: expected a decode error, got {r:?}"
        );
    }
}

#[test]
fn request_asks_for_skmeminfo_and_tcp_info_of_every_full_socket() {
    let req = request(Family::Ipv6, Protocol::Udp, 7);
    // nlmsghdr (16) + inet_diag_req_v2 (56).
    assert_eq!(req.len(), 72);
    let u16_at = |o: usize| u16::from_ne_bytes(req[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_ne_bytes(req[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 72);
    assert_eq!(u16_at(4), SOCK_DIAG_BY_FAMILY);
    assert_eq!(u16_at(6), 0x301, "NLM_F_REQUEST | NLM_F_DUMP");
    assert_eq!(u32_at(8), 7);
    assert_eq!((req[16], req[17]), (AF_INET6, IPPROTO_UDP));
    // idiag_ext: 1 << (INET_DIAG_INFO - 1) | 1 << (INET_DIAG_CONG - 1) |
    // 1 << (INET_DIAG_SKMEMINFO - 1).
    assert_eq!(req[18], (1 << 1) | (1 << 3) | (1 << 6));
    let states = u32_at(20);
    for st in 1..=11 {
        assert_eq!(
            states & (1 << st) != 0,
            st != 6,
            "state {st} in {states:#x}"
        );
    }
    let req = request(Family::Ipv4, Protocol::Tcp, 8);
    assert_eq!((req[16], req[17]), (AF_INET, IPPROTO_TCP));
}

#[test]
fn cookie_is_low_half_first() {
    let mut raw = [0u8; 8];
    raw[..4].copy_from_slice(&0x89ab_cdefu32.to_ne_bytes());
    raw[4..].copy_from_slice(&0x0123_4567u32.to_ne_bytes());
    assert_eq!(cookie(&raw), 0x0123_4567_89ab_cdef);
}

#[test]
fn filter_defaults_and_inode_set() {
    let f = DumpFilter::default();
    assert_eq!(f.protocols, [Protocol::Tcp, Protocol::Udp]);
    assert_eq!(f.families, [Family::Ipv4, Family::Ipv6]);
    assert!(f.keeps(1) && f.keeps(u64::MAX));
    let f = DumpFilter::protocols(&[Protocol::Tcp]).with_inodes([3]);
    assert_eq!(f.protocols, [Protocol::Tcp]);
    assert!(f.keeps(3) && !f.keeps(4));
}

#[test]
fn open_in_a_missing_namespace_file_is_an_open_error() {
    let err = SockDiag::open_in(Path::new("/nonexistent/sockmem/netns")).unwrap_err();
    assert!(matches!(err, SockDiagError::OpenNetns { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot open network namespace"),
        "{err}"
    );
}
