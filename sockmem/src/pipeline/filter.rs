//! The command-line filters applied in userspace, to sockets already seen. `why` reads every
//! socket's qdisc events (another socket's bytes ahead in a qdisc are part of the answer), so
//! it decides here which sockets it reports.

use std::net::{IpAddr, SocketAddr};

use crate::{
    cli::{FilterArgs, IpNet},
    pipeline::decode::Protocol,
};

/// `-p`/`-c`/`-P`/`-a`/`--tcp`/`--udp` as a predicate on a socket (the interface filter stays
/// in the kernel: it is about skbs, which every command wants cut there).
#[derive(Clone, Debug, Default)]
pub struct SocketFilter {
    pid: Option<u32>,
    comm: Option<String>,
    ports: Vec<u16>,
    nets: Vec<IpNet>,
    protocol: Option<Protocol>,
}

/// What a socket filter looks at.
pub struct SocketFacts<'a> {
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The sender (tgid, comm), once an event named it.
    pub sender: Option<(u32, &'a str)>,
}

impl SocketFilter {
    pub fn new(f: &FilterArgs) -> SocketFilter {
        SocketFilter {
            pid: f.pid,
            comm: f.comm.clone(),
            ports: f.port.clone(),
            nets: f.addr.clone(),
            protocol: match (f.tcp, f.udp) {
                (true, _) => Some(Protocol::Tcp),
                (_, true) => Some(Protocol::Udp),
                _ => None,
            },
        }
    }

    /// Whether the filter needs the sender to decide (pid, comm).
    pub fn needs_sender(&self) -> bool {
        self.pid.is_some() || self.comm.is_some()
    }

    pub fn matches(&self, s: &SocketFacts) -> bool {
        if self.protocol.is_some_and(|p| p != s.protocol) {
            return false;
        }
        if !self.ports.is_empty()
            && !self
                .ports
                .iter()
                .any(|&p| s.local.port() == p || s.remote.port() == p)
        {
            return false;
        }
        if !self.nets.is_empty()
            && !self
                .nets
                .iter()
                .any(|n| contains(n, s.local.ip()) || contains(n, s.remote.ip()))
        {
            return false;
        }
        if self.needs_sender() {
            let Some((tgid, comm)) = s.sender else {
                return false;
            };
            if self.pid.is_some_and(|p| p != tgid) {
                return false;
            }
            if self.comm.as_deref().is_some_and(|c| !comm.starts_with(c)) {
                return false;
            }
        }
        true
    }
}

/// An IPv4 network also holds the IPv4-mapped IPv6 form of its addresses, and the other way
/// round, as in the kernel filter.
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let (addr, prefix) = match (net.addr, unmap(net.addr)) {
        (IpAddr::V6(_), IpAddr::V4(v4)) if net.prefix >= 96 => (IpAddr::V4(v4), net.prefix - 96),
        (a, _) => (a, net.prefix),
    };
    let ip = unmap(ip);
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    };
    let ((a, width), (b, width_b)) = (bits(addr), bits(ip));
    if width != width_b {
        return false;
    }
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str, prefix: u8) -> IpNet {
        IpNet {
            addr: s.parse().unwrap(),
            prefix,
        }
    }

    #[test]
    fn networks_match_plain_and_mapped_addresses() {
        let v4 = net("10.0.0.0", 24);
        assert!(contains(&v4, "10.0.0.7".parse().unwrap()));
        assert!(contains(&v4, "::ffff:10.0.0.7".parse().unwrap()));
        assert!(!contains(&v4, "10.0.1.7".parse().unwrap()));
        let mapped = net("::ffff:10.0.0.0", 120);
        assert!(contains(&mapped, "10.0.0.9".parse().unwrap()));
        assert!(!contains(&mapped, "10.0.9.9".parse().unwrap()));
        let v6 = net("fd00::", 64);
        assert!(contains(&v6, "fd00::1".parse().unwrap()));
        assert!(!contains(&v6, "10.0.0.1".parse().unwrap()));
        assert!(contains(&net("0.0.0.0", 0), "192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn sender_filters_wait_for_a_sender() {
        let f = SocketFilter {
            comm: Some("iperf".into()),
            ..SocketFilter::default()
        };
        let facts = |sender| SocketFacts {
            protocol: Protocol::Tcp,
            local: "10.0.0.1:1".parse().unwrap(),
            remote: "10.0.0.2:2".parse().unwrap(),
            sender,
        };
        assert!(!f.matches(&facts(None)));
        assert!(f.matches(&facts(Some((5, "iperf3")))));
        assert!(!f.matches(&facts(Some((5, "curl")))));
    }
}
