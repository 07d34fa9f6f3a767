//! The kernel's own view of a socket: its memory counters and TCP state read through netlink
//! `NETLINK_SOCK_DIAG` (`INET_DIAG`, `SOCK_DIAG_BY_FAMILY` dumps).
//!
//! This is the "settled truth" for the sockets sockmem traces. It is the very source `ss` reads:
//! `ss -tmi` sends the same `inet_diag_req_v2` dump request with `idiag_ext` asking for
//! `INET_DIAG_SKMEMINFO` (printed as `skmem:(r,rb,t,tb,f,w,o,bl,d)`) and `INET_DIAG_INFO`
//! (`struct tcp_info`, printed as `rtt:`, `cwnd:`, `busy:`, `rwnd_limited:`, ...), and `-e`
//! prints the header's `uid`, `ino` and cookie (`sk:`). So for a socket that is not moving,
//! [`SockMem`] and `ss -tmie` show the same numbers; [`SockMem`]'s memory fields are named as `ss`
//! names them in the comments (`r` = [`SockMem::rmem_alloc`], `t` = [`SockMem::wmem_alloc`], `w` =
//! [`SockMem::wmem_queued`], ...). The kernel fills `SK_MEMINFO` in `sock_diag_put_meminfo()`:
//! `t` is `sk_wmem_alloc_get()` (one less than the raw `sk_wmem_alloc` refcount, which starts at
//! 1), `w` is `sk_wmem_queued`.
//!
//! What it gives: [`dump`] lists every TCP and UDP socket, IPv4 and IPv6, of the *calling
//! thread's* network namespace (a netlink socket belongs to the namespace it was created in), with
//! its inode number (the key sockmem keeps per socket), socket cookie (the same number as the
//! eBPF helper `bpf_get_socket_cookie()`), addresses, state, owner uid, the nine `SK_MEMINFO`
//! counters and, for TCP, a subset of `struct tcp_info` ([`TcpInfoSubset`]). TIME_WAIT and
//! request (NEW_SYN_RECV) mini-sockets are not dumped: they have no memory accounting.
//!
//! Traced sockets often live in another network namespace (containers, and every integration test
//! of this project, which runs its traffic in namespaces made with `ip netns add`). A dump only
//! sees its own namespace, so [`dump_in`] and [`SockDiag::open_in`] take a namespace file
//! (`/run/netns/NAME`, `/proc/PID/ns/net`): a short-lived helper thread enters it with
//! `setns(CLONE_NEWNET)` (CAP_SYS_ADMIN), opens the netlink socket there and ends; the socket
//! keeps answering for that namespace, and the caller's threads never change namespace.
//!
//! Netlink framing, the request and the `inet_diag_msg` header are handled by the rust-netlink
//! crates (`netlink-sys`, `netlink-packet-core`, `netlink-packet-sock-diag`); `struct tcp_info`
//! is decoded here, field by field against the attribute's length, since the kernel's struct
//! grows over time (append-only) and the crate's typed decoder wants a fixed size.
//!
//! Sync and cheap (one dump of ~100 sockets takes well under a millisecond): meant to be called
//! at exit and every few seconds.

// Used by the trace snapshot and exit table (wired by the caller) and by tests/sock_diag.rs,
// which includes this file with `#[path]` (the crate has no library target).
#![allow(dead_code)]

use std::{
    fmt,
    fs::File,
    io,
    net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// How long one `recv` on the netlink socket may block before the dump is given up.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: the kernel fills dump datagrams up to 32 KiB when the reader offers that much.
const RECV_BUF: usize = 64 * 1024;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket")]
    Socket(#[source] io::Error),
    #[error("cannot open network namespace `{}`", path.display())]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot enter network namespace `{}` (setns(CLONE_NEWNET) needs CAP_SYS_ADMIN and a \
         network namespace file)",
        path.display()
    )]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the helper thread that enters network namespace `{}`", path.display())]
    SpawnHelper {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the helper thread that enters network namespace `{}` panicked", path.display())]
    HelperPanicked { path: PathBuf },
    #[error("cannot send the {protocol} {family} sock_diag dump request")]
    Send {
        family: Family,
        protocol: Protocol,
        #[source]
        source: io::Error,
    },
    #[error("cannot receive the {protocol} {family} sock_diag dump (or it stalled)")]
    Recv {
        family: Family,
        protocol: Protocol,
        #[source]
        source: io::Error,
    },
    /// `NLMSG_ERROR`, or `NLMSG_DONE` with a negative errno. ENOENT: the kernel has no
    /// `tcp_diag`/`udp_diag` (CONFIG_INET_TCP_DIAG / CONFIG_INET_UDP_DIAG, possibly a module
    /// that could not be loaded).
    #[error(
        "the kernel refused the {protocol} {family} sock_diag dump{}",
        refusal_hint(source)
    )]
    Refused {
        family: Family,
        protocol: Protocol,
        #[source]
        source: io::Error,
    },
    #[error("malformed sock_diag message in the {protocol} {family} dump")]
    Decode {
        family: Family,
        protocol: Protocol,
        #[source]
        source: DecodeError,
    },
    #[error("sock_diag datagram of {len} bytes does not fit the {cap}-byte buffer")]
    Truncated { len: usize, cap: usize },
}

fn refusal_hint(source: &io::Error) -> &'static str {
    if source.raw_os_error() == Some(libc::ENOENT) {
        " (no sock_diag handler for it in this kernel: CONFIG_INET_TCP_DIAG/CONFIG_INET_UDP_DIAG)"
    } else {
        ""
    }
}

/// An open `NETLINK_SOCK_DIAG` socket, bound to the network namespace it was opened in. Keep it
/// to dump repeatedly (every few seconds) without reopening.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockDiag")
            .field("fd", &self.socket.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

impl SockDiag {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<SockDiag, SockDiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
        socket.bind_auto().map_err(SockDiagError::Socket)?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(SockDiagError::Socket)?;
        set_recv_timeout(&socket, RECV_TIMEOUT).map_err(SockDiagError::Socket)?;
        Ok(SockDiag {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Opens the socket in the network namespace of `netns` (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`): a helper thread enters it, opens the socket and ends. Needs
    /// CAP_SYS_ADMIN. The calling thread stays in its own namespace.
    pub fn open_in(netns: &Path) -> Result<SockDiag, SockDiagError> {
        let path = netns.to_path_buf();
        let file = File::open(netns).map_err(|source| SockDiagError::OpenNetns {
            path: path.clone(),
            source,
        })?;
        let helper_path = path.clone();
        let helper = thread::Builder::new()
            .name("sock-diag-netns".into())
            .spawn(move || {
                // Only this thread changes namespace; it ends right after.
                // SAFETY: setns on a valid, open file descriptor.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(SockDiagError::EnterNetns {
                        path: helper_path,
                        source: io::Error::last_os_error(),
                    });
                }
                SockDiag::open()
            })
            .map_err(|source| SockDiagError::SpawnHelper {
                path: path.clone(),
                source,
            })?;
        helper
            .join()
            .map_err(|_| SockDiagError::HelperPanicked { path })?
    }

    /// Dumps the sockets `filter` asks for: one request per (protocol, family), each read to
    /// its `NLMSG_DONE`.
    pub fn dump(&mut self, filter: &DumpFilter) -> Result<Vec<SockMem>, SockDiagError> {
        let mut out = Vec::new();
        for &protocol in &filter.protocols {
            for &family in &filter.families {
                self.dump_one(family, protocol, filter, &mut out)?;
            }
        }
        Ok(out)
    }

    fn dump_one(
        &mut self,
        family: Family,
        protocol: Protocol,
        filter: &DumpFilter,
        out: &mut Vec<SockMem>,
    ) -> Result<(), SockDiagError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = request(family, protocol, seq);
        self.socket
            .send(&req, 0)
            .map_err(|source| SockDiagError::Send {
                family,
                protocol,
                source,
            })?;
        let dump = Dump {
            family,
            protocol,
            seq,
            filter,
        };
        loop {
            self.buf.clear();
            let len = self
                .socket
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|source| SockDiagError::Recv {
                    family,
                    protocol,
                    source,
                })?;
            if len > self.buf.len() {
                return Err(SockDiagError::Truncated {
                    len,
                    cap: self.buf.capacity(),
                });
            }
            if dump.parse_datagram(&self.buf, out)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// [`SockDiag::open`] then one [`SockDiag::dump`]: the calling thread's network namespace.
pub fn dump(filter: &DumpFilter) -> Result<Vec<SockMem>, SockDiagError> {
    SockDiag::open()?.dump(filter)
}

/// [`SockDiag::open_in`] then one [`SockDiag::dump`]: the network namespace of `netns`
/// (`/run/netns/NAME` or `/proc/PID/ns/net`).
pub fn dump_in(netns: &Path, filter: &DumpFilter) -> Result<Vec<SockMem>, SockDiagError> {
    SockDiag::open_in(netns)?.dump(filter)
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid fd and a correctly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `SOCK_DIAG_BY_FAMILY` dump request (`struct inet_diag_req_v2`) for one family and
/// protocol, asking for `SK_MEMINFO` and `tcp_info`, all states but TIME_WAIT (mini-sockets
/// without memory; NEW_SYN_RECV is not in the mask either).
fn request(family: Family, protocol: Protocol, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = match family {
        Family::Ipv4 => SocketId::new_v4(),
        Family::Ipv6 => SocketId::new_v6(),
    };
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: family.af(),
            protocol: protocol.ipproto(),
            extensions: ExtensionFlags::SKMEMINFO | ExtensionFlags::INFO | ExtensionFlags::CONG,
            states: StateFlags::all().difference(StateFlags::TIME_WAIT),
            socket_id,
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

/// One dump in progress: what was asked, to read its replies.
struct Dump<'a> {
    family: Family,
    protocol: Protocol,
    seq: u32,
    filter: &'a DumpFilter,
}

impl Dump<'_> {
    fn decode_error(&self, source: DecodeError) -> SockDiagError {
        SockDiagError::Decode {
            family: self.family,
            protocol: self.protocol,
            source,
        }
    }

    fn refused(&self, errno: i32) -> SockDiagError {
        SockDiagError::Refused {
            family: self.family,
            protocol: self.protocol,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Parses one datagram (one or more netlink messages) of the reply; adds the sockets kept by
    /// the filter to `out`. Messages of another sequence number (a stale reply) are skipped.
    fn parse_datagram(
        &self,
        buf: &[u8],
        out: &mut Vec<SockMem>,
    ) -> Result<Progress, SockDiagError> {
        let mut rest = buf;
        while !rest.is_empty() {
            if rest.len() < NLMSG_HDRLEN {
                return Err(self.decode_error(
                    format!("{} bytes left, less than a netlink header", rest.len()).into(),
                ));
            }
            let len = u32::from_ne_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(self.decode_error(
                    format!(
                        "netlink message length {len} with {} bytes left",
                        rest.len()
                    )
                    .into(),
                ));
            }
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rest[..len])
                .map_err(|e| self.decode_error(e))?;
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            if msg.header.sequence_number != self.seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::Done(done) if done.code < 0 => return Err(self.refused(-done.code)),
                NetlinkPayload::Done(_) => return Ok(Progress::Done),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        return Err(self.refused(-code.get()));
                    }
                    // An ACK: not asked for; nothing to do.
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(self.decode_error("netlink overrun".into()));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                    if let Some(sock) = self.sock_mem(&resp)? {
                        if self.filter.keeps(sock.ino) {
                            out.push(sock);
                        }
                    }
                }
                NetlinkPayload::Noop | NetlinkPayload::InnerMessage(_) => {}
                // `NetlinkPayload` is non-exhaustive.
                _ => {}
            }
        }
        Ok(Progress::More)
    }

    /// One `inet_diag_msg` as a [`SockMem`]; `None` without `INET_DIAG_SKMEMINFO`
    /// (mini-sockets).
    fn sock_mem(&self, resp: &InetResponse) -> Result<Option<SockMem>, SockDiagError> {
        let h = &resp.header;
        let family = Family::from_af(h.family)
            .ok_or_else(|| self.decode_error(format!("address family {}", h.family).into()))?;
        let id = &h.socket_id;
        let addr = |ip: IpAddr, port: u16| match ip {
            IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
        };
        let mut mem = None;
        let mut tcp: Option<TcpInfoSubset> = None;
        let mut congestion = None;
        for nla in &resp.nlas {
            match nla {
                Nla::MemInfo(m) => mem = Some(m),
                Nla::TcpInfo(bytes) if self.protocol == Protocol::Tcp => {
                    tcp = Some(TcpInfoSubset::parse(bytes))
                }
                Nla::Congestion(name) => congestion = Some(name.clone()),
                _ => {}
            }
        }
        if let Some(t) = tcp.as_mut() {
            t.congestion = congestion;
        }
        let Some(m) = mem else {
            return Ok(None);
        };
        // The crate's names for the SK_MEMINFO slots differ from the kernel's and `ss`'s:
        // receive_queue = RMEM_ALLOC (r), receive_queue_max = RCVBUF (rb),
        // bottom_send_queues = WMEM_ALLOC (t), send_queue_max = SNDBUF (tb),
        // cache = FWD_ALLOC (f), send_queue = WMEM_QUEUED (w), options = OPTMEM (o),
        // backlog_queue_length = BACKLOG (bl), drops = DROPS (d).
        Ok(Some(SockMem {
            ino: u64::from(h.inode),
            family,
            protocol: self.protocol,
            local: addr(id.source_address, id.source_port),
            remote: addr(id.destination_address, id.destination_port),
            state: h.state,
            rmem_alloc: m.receive_queue,
            rcvbuf: m.receive_queue_max,
            wmem_alloc: m.bottom_send_queues,
            sndbuf: m.send_queue_max,
            fwd_alloc: m.cache,
            wmem_queued: m.send_queue,
            optmem: m.options,
            backlog: m.backlog_queue_length,
            drops: m.drops,
            cookie: cookie(&id.cookie),
            uid: h.uid,
            tcp,
        }))
    }
}

/// `idiag_cookie[2]` (two native-endian u32, low half first) as the kernel's u64 cookie.
fn cookie(raw: &[u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes(raw[..4].try_into().expect("4 bytes"));
    let hi = u32::from_ne_bytes(raw[4..].try_into().expect("4 bytes"));
    u64::from(lo) | (u64::from(hi) << 32)
}

mod model;
mod tcp_info;
pub use model::{DumpFilter, Family, Protocol, SockMem};
pub use tcp_info::TcpInfoSubset;

#[cfg(test)]
mod tests;
