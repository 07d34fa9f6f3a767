//! The kernel's own view of chosen sockets, many times a second: sock_diag (what `ss -tmi`
//! reads) in whichever network namespace each socket lives, and the per-namespace sysctls that
//! decide their limits.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::kernel::{
    netns::{self, Netns},
    sock_diag::{DumpFilter, Protocol, SockDiag, SockMem},
};

/// How often the list of network namespaces is read again when a socket is not where it was.
const NAMESPACES_EVERY: Duration = Duration::from_secs(1);

/// One socket as the kernel reported it, and where.
#[derive(Clone, Debug)]
pub struct Sampled {
    pub netns: u64,
    pub mem: SockMem,
}

/// What is known of a socket to find it again: its inode while it has a file; and, for a TCP
/// socket, its namespace and addresses, which still find it once its process has closed it
/// with bytes left to send (an orphan: FIN-WAIT-1 or later, `ino:0` in `ss -e`, the bytes
/// still held until the peer takes them or the kernel gives up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoughtSocket {
    /// 0 when it was never seen with a file.
    pub ino: u64,
    /// Its namespace's inode; 0 when not known (then every namespace is searched).
    pub netns: u64,
    /// `Some` for TCP.
    pub tcp_addresses: Option<(SocketAddr, SocketAddr)>,
}

impl SoughtSocket {
    /// Whether `s` is this socket: the same inode, or, without a file, the same TCP addresses
    /// (only one socket holds a TCP 4-tuple in a namespace at a time).
    pub fn is(&self, s: &Sampled) -> bool {
        if s.mem.ino != 0 {
            return s.mem.ino == self.ino;
        }
        s.mem.protocol == Protocol::Tcp
            && (self.netns == 0 || self.netns == s.netns)
            && self.tcp_addresses == Some((s.mem.local, s.mem.remote))
    }
}

/// Keeps a sock_diag socket open in each namespace that holds a watched socket.
pub struct SocketSampler {
    namespaces: Vec<Netns>,
    read_at: Option<Instant>,
    diags: HashMap<u64, SockDiag>,
    /// Socket inode → its namespace's inode.
    home: HashMap<u64, u64>,
    limit_output_bytes: HashMap<u64, Option<u64>>,
}

impl Default for SocketSampler {
    fn default() -> Self {
        SocketSampler::new()
    }
}

impl SocketSampler {
    pub fn new() -> SocketSampler {
        SocketSampler {
            namespaces: Vec::new(),
            read_at: None,
            diags: HashMap::new(),
            home: HashMap::new(),
            limit_output_bytes: HashMap::new(),
        }
    }

    /// The sockets `inodes` that still exist, each once. A socket not found in its namespace is
    /// looked for in all of them (it is new, or its namespace is); one found nowhere is closed.
    pub fn sample(&mut self, inodes: &BTreeSet<u64>) -> Vec<Sampled> {
        let mut out = Vec::new();
        let mut by_ns: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut homeless: BTreeSet<u64> = BTreeSet::new();
        for &ino in inodes {
            match self.home.get(&ino) {
                Some(&ns) => by_ns.entry(ns).or_default().push(ino),
                None => {
                    homeless.insert(ino);
                }
            }
        }
        for (ns, inos) in by_ns {
            let found = self.dump_inodes(ns, inos.iter().copied());
            for ino in inos {
                if !found.iter().any(|s| s.mem.ino == ino) {
                    self.home.remove(&ino);
                    homeless.insert(ino);
                }
            }
            out.extend(found);
        }
        if homeless.is_empty() {
            return out;
        }
        for fresh in [false, true] {
            self.read_namespaces(fresh);
            let namespaces: Vec<u64> = self.namespaces.iter().map(|n| n.inode).collect();
            for ns in namespaces {
                if homeless.is_empty() {
                    break;
                }
                for s in self.dump_inodes(ns, homeless.iter().copied()) {
                    homeless.remove(&s.mem.ino);
                    self.home.insert(s.mem.ino, ns);
                    out.push(s);
                }
            }
            if homeless.is_empty() {
                break;
            }
        }
        out
    }

    /// The `sought` sockets that still exist: by inode ([`sample`](Self::sample)), then the
    /// TCP ones not found so among the sockets without a file of their namespace (or of all,
    /// when it is not known).
    pub fn find(&mut self, sought: &[SoughtSocket]) -> Vec<Sampled> {
        let inodes: BTreeSet<u64> = sought.iter().map(|s| s.ino).filter(|&i| i != 0).collect();
        let mut out = self.sample(&inodes);
        let orphans: Vec<&SoughtSocket> = sought
            .iter()
            .filter(|s| s.tcp_addresses.is_some() && !out.iter().any(|f| s.is(f)))
            .collect();
        if orphans.is_empty() {
            return out;
        }
        self.read_namespaces(false);
        let namespaces: BTreeSet<u64> = if orphans.iter().any(|s| s.netns == 0) {
            self.namespaces.iter().map(|n| n.inode).collect()
        } else {
            orphans.iter().map(|s| s.netns).collect()
        };
        let tcp = DumpFilter::protocols(&[Protocol::Tcp]).with_inodes([0]);
        for ns in namespaces {
            out.extend(
                self.dump(ns, &tcp)
                    .into_iter()
                    .filter(|f| orphans.iter().any(|s| s.is(f))),
            );
        }
        out
    }

    /// Every TCP and UDP socket with a file, in every network namespace (named ones and those
    /// of processes): the sockets that exist before the run, which may never make an event (a
    /// sender stalled by its receiver). Each found is remembered where it lives.
    pub fn sample_all(&mut self) -> Vec<Sampled> {
        self.read_namespaces(true);
        let namespaces: Vec<u64> = self.namespaces.iter().map(|n| n.inode).collect();
        let mut out = Vec::new();
        for ns in namespaces {
            for s in self.dump(ns, &DumpFilter::all()) {
                if s.mem.ino != 0 {
                    self.home.insert(s.mem.ino, ns);
                    out.push(s);
                }
            }
        }
        out
    }

    /// Reads the list of network namespaces again when `now`, or when it is older than
    /// [`NAMESPACES_EVERY`].
    fn read_namespaces(&mut self, now: bool) {
        if now || self.read_at.is_none_or(|t| t.elapsed() > NAMESPACES_EVERY) {
            self.namespaces = netns::all();
            self.read_at = Some(Instant::now());
        }
    }

    fn dump_inodes(&mut self, ns: u64, inodes: impl IntoIterator<Item = u64>) -> Vec<Sampled> {
        self.dump(ns, &DumpFilter::all().with_inodes(inodes))
    }

    fn dump(&mut self, ns: u64, filter: &DumpFilter) -> Vec<Sampled> {
        if !self.diags.contains_key(&ns) {
            let Some(n) = self.namespaces.iter().find(|n| n.inode == ns) else {
                return Vec::new();
            };
            let diag = if n.label == "this" {
                SockDiag::open()
            } else {
                SockDiag::open_in(&n.path)
            };
            match diag {
                Ok(d) => {
                    self.diags.insert(ns, d);
                }
                Err(_) => return Vec::new(),
            }
        }
        let Some(diag) = self.diags.get_mut(&ns) else {
            return Vec::new();
        };
        match diag.dump(filter) {
            Ok(found) => found
                .into_iter()
                .map(|mem| Sampled { netns: ns, mem })
                .collect(),
            // The namespace went away with its last process: forget it.
            Err(_) => {
                self.diags.remove(&ns);
                Vec::new()
            }
        }
    }

    /// How users know the namespace (`this`, a name, `pid N`).
    pub fn label(&self, ns: u64) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|n| n.inode == ns)
            .map(|n| n.label.as_str())
    }

    /// `net.ipv4.tcp_limit_output_bytes` in namespace `ns` (a per-namespace sysctl).
    pub fn limit_output_bytes(&mut self, ns: u64) -> Option<u64> {
        if let Some(v) = self.limit_output_bytes.get(&ns) {
            return *v;
        }
        let v = self
            .namespaces
            .iter()
            .find(|n| n.inode == ns)
            .and_then(|n| read_sysctl_in(&n.path, "net/ipv4/tcp_limit_output_bytes").ok())
            .and_then(|s| s.trim().parse().ok());
        self.limit_output_bytes.insert(ns, v);
        v
    }
}

/// Reads `/proc/sys/<name>` as seen from the network namespace `netns`: a helper thread enters
/// it (net sysctls answer for the reading thread's namespace) and ends.
pub fn read_sysctl_in(netns: &Path, name: &str) -> io::Result<String> {
    let file = File::open(netns)?;
    let path = format!("/proc/sys/{name}");
    thread::Builder::new()
        .name("sysctl-netns".into())
        .spawn(move || {
            // SAFETY: setns on a valid, open file descriptor; only this thread moves.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            std::fs::read_to_string(path)
        })?
        .join()
        .map_err(|_| io::Error::other("the sysctl reading thread panicked"))?
}

/// Whether TCP and UDP are under memory pressure now (`/proc/net/protocols`' `press` column;
/// the pressure flags are global, not per namespace).
pub fn memory_pressure() -> (bool, bool) {
    let Ok(text) = std::fs::read_to_string("/proc/net/protocols") else {
        return (false, false);
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (false, false);
    };
    let Some(col) = header.split_whitespace().position(|c| c == "press") else {
        return (false, false);
    };
    let mut tcp = false;
    let mut udp = false;
    for l in lines {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let on = cols.get(col) == Some(&"yes");
        match cols.first() {
            Some(&"TCP") | Some(&"TCPv6") => tcp |= on,
            Some(&"UDP") | Some(&"UDPv6") => udp |= on,
            _ => {}
        }
    }
    (tcp, udp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sysctl_in_own_namespace_matches_proc() {
        let direct = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_limit_output_bytes");
        let via = super::read_sysctl_in(
            std::path::Path::new("/proc/self/ns/net"),
            "net/ipv4/tcp_limit_output_bytes",
        );
        if let (Ok(d), Ok(v)) = (direct, via) {
            assert_eq!(d, v);
        }
    }
}
