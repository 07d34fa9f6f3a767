//! What a dump says of a socket, and which sockets to ask for.

use std::{collections::BTreeSet, fmt, net::SocketAddr};

use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use serde::{Deserialize, Serialize};

use super::TcpInfoSubset;

/// Address family of a socket. Recordings' snapshots name it as `Display` does (`ipv4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub(super) fn af(self) -> u8 {
        match self {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        }
    }

    pub(super) fn from_af(af: u8) -> Option<Family> {
        match af {
            AF_INET => Some(Family::Ipv4),
            AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// Transport protocol of a socket. Recordings' snapshots name it as `Display` does (`tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    pub(super) fn ipproto(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One socket as sock_diag reports it. A recording's snapshot frames hold it as JSON, fields
/// in this order (recording format 2): a change here is a change of the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockMem {
    /// Inode number of the socket (`ss -e`'s `ino:`).
    pub ino: u64,
    pub family: Family,
    pub protocol: Protocol,
    pub local: SocketAddr,
    /// Unspecified address and port 0 when not connected (listeners, unconnected UDP).
    pub remote: SocketAddr,
    /// `sk_state`, the kernel's TCP state numbering (also for UDP: 7 = TCP_CLOSE unconnected,
    /// 1 = TCP_ESTABLISHED connected). [`SockMem::state_name`] names it as `ss` does.
    pub state: u8,
    /// `r`: `sk_rmem_alloc`, bytes of receive-queue skbs.
    pub rmem_alloc: u32,
    /// `rb`: `sk_rcvbuf`.
    pub rcvbuf: u32,
    /// `t`: `sk_wmem_alloc` less its initial 1: truesize of skbs handed down the stack and not yet
    /// freed (qdisc, driver, clones awaiting TX completion).
    pub wmem_alloc: u32,
    /// `tb`: `sk_sndbuf`.
    pub sndbuf: u32,
    /// `f`: `sk_forward_alloc`, memory charged to the socket and not used yet.
    pub fwd_alloc: u32,
    /// `w`: `sk_wmem_queued`, truesize of the send queue (TCP: write queue and retransmit queue).
    pub wmem_queued: u32,
    /// `o`: `sk_omem_alloc`, option memory.
    pub optmem: u32,
    /// `bl`: `sk_backlog.len`.
    pub backlog: u32,
    /// `d`: `sk_drops`.
    pub drops: u32,
    /// Socket cookie (`ss -e`'s `sk:` in hex; `bpf_get_socket_cookie()`).
    pub cookie: u64,
    /// Owner uid (`ss -e`'s `uid:`).
    pub uid: u32,
    /// The `struct tcp_info` subset; `None` for UDP.
    pub tcp: Option<TcpInfoSubset>,
}

impl SockMem {
    /// The state as `ss` prints it (`ESTAB`, `LISTEN`, `UNCONN` for unconnected UDP, ...).
    pub fn state_name(&self) -> &'static str {
        match (self.protocol, self.state) {
            (Protocol::Udp, 7) => "UNCONN",
            (_, 1) => "ESTAB",
            (_, 2) => "SYN-SENT",
            (_, 3) => "SYN-RECV",
            (_, 4) => "FIN-WAIT-1",
            (_, 5) => "FIN-WAIT-2",
            (_, 6) => "TIME-WAIT",
            (_, 7) => "CLOSE",
            (_, 8) => "CLOSE-WAIT",
            (_, 9) => "LAST-ACK",
            (_, 10) => "LISTEN",
            (_, 11) => "CLOSING",
            (_, 12) => "NEW-SYN-RECV",
            _ => "UNKNOWN",
        }
    }
}

/// Which sockets [`dump`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFilter {
    /// Protocols to dump (one kernel request per protocol and family).
    pub protocols: Vec<Protocol>,
    /// Address families to dump.
    pub families: Vec<Family>,
    /// Keep only sockets with these inode numbers; `None` keeps all.
    pub inodes: Option<BTreeSet<u64>>,
}

impl Default for DumpFilter {
    fn default() -> DumpFilter {
        DumpFilter::all()
    }
}

impl DumpFilter {
    /// TCP and UDP, IPv4 and IPv6, every inode.
    pub fn all() -> DumpFilter {
        DumpFilter {
            protocols: Protocol::ALL.to_vec(),
            families: Family::ALL.to_vec(),
            inodes: None,
        }
    }

    /// Only `protocols`, both families, every inode.
    pub fn protocols(protocols: &[Protocol]) -> DumpFilter {
        DumpFilter {
            protocols: protocols.to_vec(),
            ..DumpFilter::all()
        }
    }

    /// Keeps only the sockets with these inode numbers.
    pub fn with_inodes(mut self, inodes: impl IntoIterator<Item = u64>) -> DumpFilter {
        self.inodes = Some(inodes.into_iter().collect());
        self
    }

    pub(super) fn keeps(&self, ino: u64) -> bool {
        self.inodes.as_ref().is_none_or(|set| set.contains(&ino))
    }
}
