//! The settled truth: the kernel's own counters of the traced sockets (sock_diag, what `ss -tm`
//! reads), held against what their last events said.

use std::collections::{BTreeSet, HashMap};

use sockmem_common::Hook;

use crate::{
    kernel::{
        netns,
        sampler::read_sysctl_in,
        sock_diag::{DumpFilter, SockDiag, SockMem},
    },
    pipeline::track::{SocketState, SocketTracker},
};

/// One traced socket as the kernel reports it now.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub sock_id: u64,
    pub kernel: SockMem,
    /// The network namespace it was found in (`this`, a name, `pid N`).
    pub netns: String,
    /// The last event's `(wmem_queued, wmem_alloc)`, if one read them.
    pub last: Option<(i32, i32)>,
    pub agreement: Agreement,
    /// `net.ipv4.tcp_limit_output_bytes` in that namespace (TCP sockets; TSQ's cap).
    pub limit_output_bytes: Option<u64>,
}

/// How the snapshot compares with the socket's last event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    Same,
    /// Different, for a reason sockmem knows (said in words).
    Explained(String),
    /// Different, and nothing sockmem knows explains it.
    Differs(String),
}

impl Agreement {
    pub fn word(&self) -> &'static str {
        match self {
            Agreement::Same => "agrees",
            Agreement::Explained(_) => "explained",
            Agreement::Differs(_) => "differs",
        }
    }

    pub fn note(&self) -> Option<&str> {
        match self {
            Agreement::Same => None,
            Agreement::Explained(s) | Agreement::Differs(s) => Some(s),
        }
    }
}

/// Reads every live traced socket (by inode number) in every network namespace. Sockets without
/// a file (never seen with one) and destroyed ones cannot be asked for, and closed ones are
/// gone: they are left out.
pub fn take(
    tracker: &SocketTracker,
    attached: &dyn Fn(Hook) -> bool,
    now_ns: u64,
) -> Vec<Snapshot> {
    let wanted: HashMap<u64, &SocketState> = tracker
        .states()
        .into_iter()
        .filter(|s| s.id.ino != 0 && !s.destroyed)
        .map(|s| (s.id.ino, s))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let filter = DumpFilter::all().with_inodes(wanted.keys().copied());
    let mut found: BTreeSet<u64> = BTreeSet::new();
    let mut out = Vec::new();
    for ns in netns::all() {
        let diag = if ns.label == "this" {
            SockDiag::open()
        } else {
            SockDiag::open_in(&ns.path)
        };
        // A namespace that went away meanwhile has nothing to say.
        let Ok(sockets) = diag.and_then(|mut d| d.dump(&filter)) else {
            continue;
        };
        // Read once per namespace, and only where a traced TCP socket is.
        let mut lob: Option<Option<u64>> = None;
        for k in sockets {
            let Some(state) = wanted.get(&k.ino) else {
                continue;
            };
            if !found.insert(k.ino) {
                continue;
            }
            let limit_output_bytes = match k.tcp {
                Some(_) => *lob.get_or_insert_with(|| {
                    read_sysctl_in(&ns.path, "net/ipv4/tcp_limit_output_bytes")
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                }),
                None => None,
            };
            out.push(Snapshot {
                sock_id: state.id.sock_id,
                agreement: compare(state, &k, attached, now_ns),
                last: state.last,
                netns: ns.label.clone(),
                kernel: k,
                limit_output_bytes,
            });
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    out.sort_by_key(|s| s.sock_id);
    out
}

/// A socket whose last event is more recent than this may still have been moving.
const QUIET_NS: u64 = 500_000_000;

fn compare(
    s: &SocketState,
    k: &SockMem,
    attached: &dyn Fn(Hook) -> bool,
    now_ns: u64,
) -> Agreement {
    let Some((q, a)) = s.last else {
        return Agreement::Explained("no event read its counters".to_owned());
    };
    let (w, t) = (k.wmem_queued as i64, k.wmem_alloc as i64);
    let (dq, da) = (w - q as i64, t - a as i64);
    if dq == 0 && da == 0 {
        return Agreement::Same;
    }
    let numbers = format!("w {w} vs {q} at the last event, t {t} vs {a}");
    let quiet_for = now_ns.saturating_sub(s.last_ns);
    if quiet_for < QUIET_NS {
        return Agreement::Explained(format!(
            "still moving: its last event was {} ms before ({numbers})",
            quiet_for / 1_000_000
        ));
    }
    let mut why = Vec::new();
    if da != 0 {
        if attached(Hook::WmemRelease) {
            return Agreement::Differs(numbers);
        }
        why.push("sk_wmem_alloc falls in skb destructors, which no hook sees on this kernel");
    }
    if dq != 0 {
        if attached(Hook::TcpAckFreed) {
            return Agreement::Differs(numbers);
        }
        why.push(if s.last_hook == Hook::TcpAck {
            "the last event read sk_wmem_queued as an ACK arrived, before it freed anything \
             (no tcp_ack_freed on this kernel)"
        } else {
            "sk_wmem_queued falls as ACKs free the write queue, which no hook sees on this kernel"
        });
    }
    Agreement::Explained(format!("{} ({numbers})", why.join("; ")))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{
        kernel::sock_diag::{Family, Protocol as DiagProtocol},
        pipeline::{decode::Protocol, identity::SocketIdentity},
    };

    fn state(last: (i32, i32), hook: Hook, last_ns: u64) -> SocketState {
        let addr: SocketAddr = "198.18.0.1:4000".parse().unwrap();
        SocketState {
            id: SocketIdentity {
                sock_id: 1,
                ino: 7,
                protocol: Protocol::Tcp,
                local: addr,
                remote: addr,
                sender: None,
            },
            events: 3,
            first_ns: 0,
            last_ns,
            last_hook: hook,
            last: Some(last),
            max_queued: last.0,
            max_alloc: last.1,
            sndbuf: 87040,
            destroyed: false,
        }
    }

    fn kernel(w: u32, t: u32) -> SockMem {
        let addr: SocketAddr = "198.18.0.1:4000".parse().unwrap();
        SockMem {
            ino: 7,
            family: Family::Ipv4,
            protocol: DiagProtocol::Tcp,
            local: addr,
            remote: addr,
            state: 1,
            rmem_alloc: 0,
            rcvbuf: 0,
            wmem_alloc: t,
            sndbuf: 87040,
            fwd_alloc: 0,
            wmem_queued: w,
            optmem: 0,
            backlog: 0,
            drops: 0,
            cookie: 0,
            uid: 0,
            tcp: None,
        }
    }

    #[test]
    fn differences_are_explained_only_by_what_this_kernel_cannot_show() {
        let sec = 1_000_000_000;
        let all = |_: Hook| true;
        let tracepoints_only = |h: Hook| !matches!(h, Hook::WmemRelease | Hook::TcpAckFreed);
        let s = state((2000, 0), Hook::TcpAck, 0);
        assert_eq!(compare(&s, &kernel(2000, 0), &all, sec), Agreement::Same);
        // The tracepoint backend's last ACK reads the queue before freeing it.
        let a = compare(&s, &kernel(0, 0), &tracepoints_only, sec);
        assert!(
            matches!(&a, Agreement::Explained(w) if w.contains("as an ACK arrived")),
            "{a:?}"
        );
        // With tcp_ack_freed attached, nothing explains it.
        assert!(matches!(
            compare(&s, &kernel(0, 0), &all, sec),
            Agreement::Differs(_)
        ));
        // Recent activity explains anything.
        let busy = state((2000, 0), Hook::TcpAck, sec);
        assert!(matches!(
            compare(&busy, &kernel(0, 0), &all, sec + 1000),
            Agreement::Explained(w) if w.contains("still moving")
        ));
    }
}
