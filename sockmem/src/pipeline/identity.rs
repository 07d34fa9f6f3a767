//! Which socket an event is about and who sends on it, as every per-socket table (`track`,
//! `live_sockets`, `why`) keeps it; and the rule that names a socket's sender.

use std::net::SocketAddr;

use crate::pipeline::{
    decode::{Event, Name, Owner, Protocol},
    seed::Existing,
};

/// A socket's identity and sender, from its events (or, for a socket there before the run, from
/// sock_diag until its first event: [`SocketIdentity::from_existing`]).
#[derive(Clone, Debug)]
pub struct SocketIdentity {
    /// The identity events carry; a seeded socket's stand-in until its first event (the table
    /// holding it swaps it in).
    pub sock_id: u64,
    pub ino: u64,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The last sender named by an event ([`sender_named`]); a seeded socket's holder until
    /// then.
    pub sender: Option<(u32, Name)>,
}

/// The sender an event names, by the rule trace's table, report, plot, export, top and serve
/// follow (`why` has its own: [`Analyzer::observe`](crate::pipeline::why::Analyzer::observe)):
/// the task that called `sendmsg` on the socket (the programs keep naming it in softirq). A task
/// that merely ran when a hook fired (`Owner::Current`: a receiver's `recvmsg`, a close) is not
/// a sender, so a socket nobody sent on has none; the last caller wins, as a socket can change
/// hands.
pub fn sender_named(e: &Event) -> Option<(u32, Name)> {
    (e.owner == Owner::Sendmsg).then_some((e.tgid, e.comm))
}

impl SocketIdentity {
    /// As the socket's first event gives it: no sender until [`observe`](Self::observe) names
    /// one.
    pub fn from_event(e: &Event) -> SocketIdentity {
        SocketIdentity {
            sock_id: e.sock_id,
            ino: e.ino,
            protocol: e.protocol,
            local: e.local,
            remote: e.remote,
            sender: None,
        }
    }

    /// A socket there before the run: its stand-in id, and the process holding it standing in
    /// for the sender.
    pub fn from_existing(x: &Existing) -> SocketIdentity {
        SocketIdentity {
            sock_id: x.sock_id,
            ino: x.ino(),
            protocol: x.protocol,
            local: x.local,
            remote: x.remote,
            sender: x.holder,
        }
    }

    /// What one event of the socket adds: its inode where none was known, its addresses, the
    /// sender it names.
    pub fn observe(&mut self, e: &Event) {
        if self.ino == 0 {
            self.ino = e.ino;
        }
        // A port of 0 is a socket not bound yet, or TCP's teardown: keep what was seen.
        if e.local.port() != 0 {
            self.local = e.local;
        }
        if e.remote.port() != 0 {
            self.remote = e.remote;
        }
        if let Some(sender) = sender_named(e) {
            self.sender = Some(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::{event::FLAG_OWNER_FROM_SEND, Hook};

    /// An event of socket 1 by `tgid`, from its `sendmsg` or not, with its inode and ports.
    fn event(tgid: u32, sendmsg: bool, ino: u64, ports: u16) -> Event {
        let mut raw = raw_event(Hook::TcpSendmsg);
        (raw.sock_id, raw.tgid, raw.ino) = (1, tgid, ino);
        (raw.lport, raw.rport) = (ports, ports);
        if sendmsg {
            raw.flags |= FLAG_OWNER_FROM_SEND;
        }
        Event::from_raw(&raw).unwrap()
    }

    #[test]
    fn the_inode_is_kept_ports_of_zero_change_nothing_and_the_last_sender_wins() {
        let first = event(7, false, 0, 5000);
        let mut id = SocketIdentity::from_event(&first);
        id.observe(&first);
        assert_eq!(
            (id.ino, id.sender),
            (0, None),
            "a task that merely ran is no sender"
        );

        id.observe(&event(8, true, 77, 5001));
        assert_eq!(
            (id.ino, id.local.port(), id.remote.port()),
            (77, 5001, 5001)
        );
        assert_eq!(id.sender.map(|s| s.0), Some(8));

        id.observe(&event(9, true, 78, 0));
        assert_eq!(
            (id.ino, id.local.port(), id.remote.port()),
            (77, 5001, 5001)
        );
        assert_eq!(id.sender.map(|s| s.0), Some(9), "the last sender wins");
    }
}
