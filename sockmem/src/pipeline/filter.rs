//! The command-line filters applied in userspace, to sockets already seen. `why` reads every
//! socket's qdisc events (another socket's bytes ahead in a qdisc are part of the answer), so
//! it decides here which sockets it reports.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::Path,
};

use anyhow::{anyhow, Context as _};

use crate::{
    cli::{FilterArgs, IpNet, UsageError},
    kernel::cgroups,
    pipeline::decode::{Event, Protocol},
};

/// `-p`/`-c`/`-P`/`-a`/`--tcp`/`--udp`/`--cgroup`/`--netns` as a predicate on a socket (the
/// interface filter stays in the kernel: it is about skbs, which every command wants cut there).
#[derive(Clone, Debug, Default)]
pub struct SocketFilter {
    pid: Option<u32>,
    comm: Option<String>,
    ports: Vec<u16>,
    nets: Vec<IpNet>,
    protocol: Option<Protocol>,
    /// `--cgroup`, as a path from the cgroup2 root (`/a/b`): matched against the path events
    /// were named with, so that a recording is filtered by the names it was made with.
    cgroup: Option<String>,
    netns: Option<NetnsMatch>,
}

/// `--netns` after the fact: an inode (given, or a namespace file's here), or an `ip netns`
/// name as the events were named.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NetnsMatch {
    Inode(u32),
    Name(String),
}

/// What a socket filter looks at.
pub struct SocketFacts<'a> {
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The sender (tgid, comm), once an event named it.
    pub sender: Option<(u32, &'a str)>,
    /// The sender's cgroup path, once an event named it.
    pub cgroup: Option<&'a str>,
    /// The socket's namespace inode and `ip netns` name.
    pub netns: (u32, Option<&'a str>),
}

impl SocketFilter {
    /// Fails on a `--netns` path that is not a namespace file, or a `--cgroup` with `..`.
    pub fn new(f: &FilterArgs) -> anyhow::Result<SocketFilter> {
        Ok(SocketFilter {
            pid: f.pid,
            comm: f.comm.clone(),
            ports: f.port.clone(),
            nets: f.addr.clone(),
            protocol: match (f.tcp, f.udp) {
                (true, _) => Some(Protocol::Tcp),
                (_, true) => Some(Protocol::Udp),
                _ => None,
            },
            cgroup: f.cgroup.as_deref().map(cgroup_path).transpose()?,
            netns: f.netns.as_deref().map(netns_match).transpose()?,
        })
    }

    /// Whether the filter needs the sender to decide (pid, comm, cgroup).
    pub fn needs_sender(&self) -> bool {
        self.pid.is_some() || self.comm.is_some() || self.cgroup.is_some()
    }

    pub fn matches(&self, s: &SocketFacts) -> bool {
        if self.protocol.is_some_and(|p| p != s.protocol) {
            return false;
        }
        match &self.netns {
            Some(NetnsMatch::Inode(i)) if *i != s.netns.0 => return false,
            Some(NetnsMatch::Name(n)) if s.netns.1 != Some(n.as_str()) => return false,
            _ => {}
        }
        if let Some(want) = &self.cgroup {
            let target = cgroups::CgroupTarget {
                id: 0,
                level: 0,
                path: want.clone(),
            };
            if !s.cgroup.is_some_and(|c| target.holds(c)) {
                return false;
            }
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

/// Every command-line filter, the interface's included, applied to events after the fact (`trace
/// --input`) as the programs apply them while tracing (`sockmem-ebpf/src/observe.rs`):
///
/// - the socket filters on the event's own addresses, ports and protocol; an unconnected UDP
///   socket (no remote port) is judged by the datagram its skb events show, and its other events
///   pass once one of its datagrams has;
/// - `--pid`/`--comm` on the event's sender (its `tgid` and `comm`; an event whose sender is
///   unknown has neither, and fails them);
/// - `--iface` keeps skb events on that interface, and the socket events of sockets that have
///   sent an skb through it (seen earlier in the events).
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    socket: SocketFilter,
    iface: Option<String>,
    /// Sockets that have passed an skb event through `iface`.
    through_iface: HashSet<u64>,
    /// Unconnected UDP sockets one of whose datagrams has passed the socket filters.
    datagram_passed: HashSet<u64>,
}

impl EventFilter {
    pub fn new(f: &FilterArgs) -> anyhow::Result<EventFilter> {
        Ok(EventFilter {
            socket: SocketFilter::new(f)?,
            iface: f.iface.clone(),
            ..EventFilter::default()
        })
    }

    /// Whether the event passes. `--cgroup` and `--netns` names are matched as `Names::fill`
    /// named the event: fill it first.
    pub fn admits(&mut self, e: &Event) -> bool {
        let s = &self.socket;
        let cgroup = e.cgroup_name();
        let facts = SocketFacts {
            protocol: e.protocol,
            local: e.local,
            remote: e.remote,
            sender: Some((e.tgid, &e.comm)),
            cgroup: cgroup.as_deref(),
            netns: (e.netns_ino, e.netns.as_deref()),
        };
        let has_endpoint_filter = !s.ports.is_empty() || !s.nets.is_empty();
        let unconnected_udp = e.protocol == Protocol::Udp && e.remote.port() == 0;
        if unconnected_udp && has_endpoint_filter && e.skb.is_none() {
            // Its endpoints are not on the event: its datagrams decided.
            let judged = SocketFacts {
                local: "0.0.0.0:0".parse().expect("an address"),
                remote: "0.0.0.0:0".parse().expect("an address"),
                ..facts
            };
            let sender_ok = SocketFilter {
                ports: Vec::new(),
                nets: Vec::new(),
                ..s.clone()
            };
            if !self.datagram_passed.contains(&e.sock_id) || !sender_ok.matches(&judged) {
                return false;
            }
        } else if !s.matches(&facts) {
            return false;
        } else if e.protocol == Protocol::Udp && has_endpoint_filter && e.skb.is_some() {
            self.datagram_passed.insert(e.sock_id);
        }
        let Some(want) = &self.iface else {
            return true;
        };
        match &e.skb {
            Some(skb) if skb.iface.as_str() == want => {
                self.through_iface.insert(e.sock_id);
                true
            }
            Some(_) => false,
            None => self.through_iface.contains(&e.sock_id),
        }
    }
}

/// The error of a command that reads a recording (`report`, `plot`, `export`, `trace --input`)
/// when no recorded event passes the filters: one line naming them, exit code 1 as grep's "no
/// match" (a usage error would be 2). `recorded`: the recording's events.
pub fn nothing_matched(f: &FilterArgs, recorded: u64) -> anyhow::Error {
    match f.describe() {
        given if given.is_empty() => {
            anyhow!("the recording has no event to show ({recorded} recorded)")
        }
        given => anyhow!("no event of the recording's {recorded} matches the filters {given}"),
    }
}

/// `--cgroup` as a path from the cgroup2 root: an absolute path under this machine's cgroup2
/// mount loses the mount; `a/b` and `/a/b/` become `/a/b`.
fn cgroup_path(spec: &str) -> anyhow::Result<String> {
    let mut rel = spec;
    let mount = cgroups::cgroup2_mount();
    if let Some(m) = mount.as_deref().and_then(|m| m.to_str()) {
        if let Some(r) = spec.strip_prefix(m) {
            if r.is_empty() || r.starts_with('/') {
                rel = r;
            }
        }
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(UsageError(format!(
            "--cgroup {spec}: `..` is not allowed in a cgroup path"
        ))
        .into());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `--netns` after the fact: an inode number as given, a namespace file's inode (it must
/// exist here), or a name (`ino:N` is an inode as events show it).
fn netns_match(spec: &str) -> anyhow::Result<NetnsMatch> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let num = spec.strip_prefix("ino:").unwrap_or(spec);
    if digits(num) {
        return num.parse().map(NetnsMatch::Inode).map_err(|_| {
            UsageError(format!("--netns {spec}: not a namespace inode number")).into()
        });
    }
    if spec.contains('/') {
        let own = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
        let meta = std::fs::metadata(Path::new(spec))
            .map_err(|e| UsageError(format!("--netns {spec}: no network namespace there ({e})")))?;
        if meta.dev() != own.dev() {
            return Err(UsageError(format!("--netns {spec}: not a namespace file")).into());
        }
        return Ok(NetnsMatch::Inode(meta.ino() as u32));
    }
    Ok(NetnsMatch::Name(spec.to_owned()))
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
            cgroup: None,
            netns: (0, None),
        };
        assert!(!f.matches(&facts(None)));
        assert!(f.matches(&facts(Some((5, "iperf3")))));
        assert!(!f.matches(&facts(Some((5, "curl")))));
    }

    #[test]
    fn the_iface_filter_keeps_skbs_on_it_and_sockets_that_sent_through_it() {
        use crate::pipeline::decode::tests::raw_event;
        use sockmem_common::{event::FLAG_HAS_SKB, Hook};
        let ev = |sock: u64, iface: Option<&[u8]>| {
            let mut raw = raw_event(Hook::QdiscEnqueue);
            raw.sock_id = sock;
            if let Some(name) = iface {
                raw.flags |= FLAG_HAS_SKB;
                raw.ifname[..name.len()].copy_from_slice(name);
            }
            Event::from_raw(&raw).unwrap()
        };
        let mut f = EventFilter::new(&FilterArgs {
            iface: Some("veth0".into()),
            port: vec![5201],
            ..FilterArgs::default()
        })
        .unwrap();
        assert!(!f.admits(&ev(1, None)), "no skb through veth0 seen yet");
        assert!(!f.admits(&ev(1, Some(b"lo"))));
        assert!(f.admits(&ev(1, Some(b"veth0"))));
        assert!(f.admits(&ev(1, None)), "socket 1 has sent through veth0");
        assert!(!f.admits(&ev(2, None)));
        let mut other_port = raw_event(Hook::TcpAck);
        other_port.rport = 80;
        other_port.sock_id = 1;
        assert!(!f.admits(&Event::from_raw(&other_port).unwrap()));
    }

    #[test]
    fn cgroup_and_netns_filters_match_named_events() {
        use crate::pipeline::decode::tests::raw_event;
        use sockmem_common::Hook;
        let ev = |cgroup_id: u64, path: Option<&str>, netns_ino: u32, netns: Option<&str>| {
            let mut raw = raw_event(Hook::TcpAck);
            raw.cgroup_id = cgroup_id;
            raw.netns_ino = netns_ino;
            let mut e = Event::from_raw(&raw).unwrap();
            e.cgroup = path.map(std::sync::Arc::from);
            e.netns = netns.map(std::sync::Arc::from);
            e
        };
        let mut by_cgroup = EventFilter::new(&FilterArgs {
            cgroup: Some("a/b/".into()),
            ..FilterArgs::default()
        })
        .unwrap();
        assert!(by_cgroup.admits(&ev(5, Some("/a/b"), 1, None)));
        assert!(by_cgroup.admits(&ev(6, Some("/a/b/c"), 1, None)));
        assert!(!by_cgroup.admits(&ev(7, Some("/a/bc"), 1, None)));
        assert!(!by_cgroup.admits(&ev(0, None, 1, None)), "unknown sender");
        let mut by_name = EventFilter::new(&FilterArgs {
            netns: Some("blue".into()),
            ..FilterArgs::default()
        })
        .unwrap();
        assert!(by_name.admits(&ev(5, None, 9, Some("blue"))));
        assert!(!by_name.admits(&ev(5, None, 9, Some("red"))));
        let mut by_ino = EventFilter::new(&FilterArgs {
            netns: Some("ino:9".into()),
            ..FilterArgs::default()
        })
        .unwrap();
        assert!(by_ino.admits(&ev(5, None, 9, None)));
        assert!(!by_ino.admits(&ev(5, None, 10, None)));
        assert!(EventFilter::new(&FilterArgs {
            cgroup: Some("/a/../b".into()),
            ..FilterArgs::default()
        })
        .is_err());
        assert!(EventFilter::new(&FilterArgs {
            netns: Some("/etc/hostname".into()),
            ..FilterArgs::default()
        })
        .is_err());
    }
}
