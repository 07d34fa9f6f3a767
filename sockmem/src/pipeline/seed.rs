//! The sockets that exist as a run starts: one sock_diag dump of every network namespace (what
//! `ss` reads) and the process holding each (`/proc/*/fd`). A socket stalled since before the
//! run (a sender behind a zero window) makes few events or none, so `why`, `top` and `serve`
//! take it from here, under a stand-in identity ([`SEEDED`] over its inode) until its first
//! event gives it the one events carry.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use crate::{
    cli::FilterArgs,
    kernel::{
        cgroups, owners,
        sampler::{Sampled, SocketSampler},
        sock_diag::Protocol as DiagProtocol,
    },
    pipeline::{
        decode::{Name, Protocol},
        filter::{SocketFacts, SocketFilter},
        names::Names,
    },
};

/// The bit that marks a stand-in identity (event identities are small counters).
pub const SEEDED: u64 = 1 << 63;

/// `sk_state` of a listener.
pub const TCP_LISTEN: u8 = 10;

/// Whether `sock_id` is a stand-in identity, not yet one an event gave.
pub fn is_seeded(sock_id: u64) -> bool {
    sock_id & SEEDED != 0
}

/// One socket there before the run, with what is known of it without an event.
#[derive(Clone, Debug)]
pub struct Existing {
    /// [`SEEDED`] over its inode.
    pub sock_id: u64,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The process holding it open (tgid, comm), where one was found: a stand-in for the
    /// sender, whom only a `sendmsg` names.
    pub holder: Option<(u32, Name)>,
    /// The holder's cgroup v2 (id, path).
    pub cgroup: Option<(u64, Arc<str>)>,
    /// Its namespace's inode and `ip netns` name.
    pub netns_ino: u32,
    pub netns: Option<Arc<str>>,
    /// The dump's record (counters as `ss -tm` shows them: `w`, `t`, `tb`).
    pub sampled: Sampled,
    /// The holder's threads asleep inside a send call on it as the run starts: no event tells
    /// of such a sleep until the call returns, so it is counted from the run's start.
    pub asleep_in_send: Vec<u32>,
}

impl Existing {
    pub fn ino(&self) -> u64 {
        self.sampled.mem.ino
    }

    /// Holds bytes on their way out (`w` or `t`): what `top` shows of a socket before its events.
    pub fn holds_send_bytes(&self) -> bool {
        self.sampled.mem.wmem_queued > 0 || self.sampled.mem.wmem_alloc > 0
    }

    /// What the user's socket filters look at.
    pub fn facts(&self) -> SocketFacts<'_> {
        SocketFacts {
            protocol: self.protocol,
            local: self.local,
            remote: self.remote,
            sender: self.holder.as_ref().map(|(t, c)| (*t, c.as_str())),
            cgroup: self.cgroup.as_ref().map(|(_, p)| &**p),
            netns: (self.netns_ino, self.netns.as_deref()),
        }
    }
}

/// Every TCP and UDP socket with a file in every namespace but listeners (they send nothing),
/// named as events are (`names`: the namespace's `ip netns` name).
pub fn existing(sampler: &mut SocketSampler, names: &Names) -> Vec<Existing> {
    let samples: Vec<Sampled> = sampler
        .sample_all()
        .into_iter()
        .filter(|s| s.mem.ino != 0 && s.mem.state != TCP_LISTEN)
        .collect();
    let inodes: BTreeSet<u64> = samples.iter().map(|s| s.mem.ino).collect();
    let holders = owners::socket_owners(&inodes);
    let mount = cgroups::cgroup2_mount();
    let mut cgroup_of = std::collections::HashMap::new();
    let mut asleep_of = std::collections::HashMap::new();
    samples
        .into_iter()
        .map(|s| {
            let m = &s.mem;
            let holder = holders.get(&m.ino);
            let cgroup = holder.and_then(|(tgid, _)| {
                cgroup_of
                    .entry(*tgid)
                    .or_insert_with(|| {
                        cgroups::of_process(mount.as_deref(), *tgid)
                            .map(|(id, path)| (id, Arc::from(path)))
                    })
                    .clone()
            });
            let asleep_in_send = holder
                .map(|(tgid, _)| {
                    let asleep: &Vec<(u32, u64)> = asleep_of
                        .entry(*tgid)
                        .or_insert_with(|| owners::asleep_in_send(*tgid));
                    asleep
                        .iter()
                        .filter(|(_, ino)| *ino == m.ino)
                        .map(|(tid, _)| *tid)
                        .collect()
                })
                .unwrap_or_default();
            Existing {
                sock_id: SEEDED | m.ino,
                protocol: match m.protocol {
                    DiagProtocol::Tcp => Protocol::Tcp,
                    DiagProtocol::Udp => Protocol::Udp,
                },
                local: m.local,
                remote: m.remote,
                holder: holder.map(|(tgid, comm)| (*tgid, Name::new(comm.as_bytes()))),
                cgroup,
                // The namespace's inode as events carry it (what --netns compares).
                netns_ino: s.netns as u32,
                netns: names.netns.borrow_mut().named(s.netns),
                sampled: s,
                asleep_in_send,
            }
        })
        .collect()
}

/// The sockets holding send bytes as the run starts that the user's filters keep: what `top`
/// and `serve` follow before their first events. None under `--iface`, which keeps sockets
/// that sent an skb through it, which no dump says.
pub fn holding_send_bytes(filters: &FilterArgs, names: &Names) -> anyhow::Result<Vec<Existing>> {
    if filters.iface.is_some() {
        return Ok(Vec::new());
    }
    let filter = SocketFilter::new(filters)?;
    Ok(existing(&mut SocketSampler::new(), names)
        .into_iter()
        .filter(|x| x.holds_send_bytes() && filter.matches(&x.facts()))
        .collect())
}

#[cfg(test)]
impl Existing {
    /// A TCP socket `ino` held by pid 42 (`holder`, in `/holders`) with `w` and `t` as given.
    pub fn example(ino: u64, queued: u32, alloc: u32) -> Existing {
        use crate::kernel::sock_diag::{Family, SockMem};
        let (local, remote) = (
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:5201".parse().unwrap(),
        );
        Existing {
            sock_id: SEEDED | ino,
            protocol: Protocol::Tcp,
            local,
            remote,
            holder: Some((42, Name::new(b"holder"))),
            cgroup: Some((1234, Arc::from("/holders"))),
            netns_ino: 4026531840,
            netns: None,
            sampled: Sampled {
                netns: 4026531840,
                mem: SockMem {
                    ino,
                    family: Family::Ipv4,
                    protocol: DiagProtocol::Tcp,
                    local,
                    remote,
                    state: 1,
                    rmem_alloc: 0,
                    rcvbuf: 131072,
                    wmem_alloc: alloc,
                    sndbuf: 87040,
                    fwd_alloc: 0,
                    wmem_queued: queued,
                    optmem: 0,
                    backlog: 0,
                    drops: 0,
                    cookie: 1,
                    uid: 0,
                    tcp: None,
                },
            },
            asleep_in_send: Vec::new(),
        }
    }
}
