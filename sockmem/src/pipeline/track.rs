//! Per-socket state in userspace: the change of each counter since the socket's previous event.

use std::collections::{HashMap, HashSet};

use sockmem_common::Hook;

use crate::pipeline::decode::Event;

/// How much each counter moved since the same socket's previous event. A socket's first event
/// counts from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub wmem_queued: i64,
    pub wmem_alloc: i64,
}

/// Keyed by socket id (`Event::sock_id`), which survives the kernel's reuse of addresses.
#[derive(Default)]
pub struct SocketTracker {
    last: HashMap<u64, (i32, i32)>,
    /// Every id seen (8 bytes a socket: 40,000 short connections are 320 KB).
    seen: HashSet<u64>,
}

impl SocketTracker {
    pub fn observe(&mut self, e: &Event) -> Deltas {
        // A socket being freed has no counters: nothing moved that can be said.
        self.seen.insert(e.sock_id);
        if e.freed {
            self.last.remove(&e.sock_id);
            return Deltas::default();
        }
        let (q, a) = if e.hook == Hook::SockDestroy {
            self.last.remove(&e.sock_id)
        } else {
            self.last.insert(e.sock_id, (e.wmem_queued, e.wmem_alloc))
        }
        .unwrap_or((0, 0));
        Deltas {
            wmem_queued: e.wmem_queued as i64 - q as i64,
            wmem_alloc: e.wmem_alloc as i64 - a as i64,
        }
    }

    /// Sockets seen since the start, destroyed ones included.
    pub fn sockets(&self) -> u64 {
        self.seen.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::{tests::raw_event, Event};

    fn event(sock: u64, hook: Hook, q: i32, a: i32) -> Event {
        let mut raw = raw_event(hook);
        raw.sock_id = sock;
        raw.wmem_queued = q;
        raw.wmem_alloc = a;
        Event::from_raw(&raw).unwrap()
    }

    #[test]
    fn deltas_are_per_socket() {
        let mut t = SocketTracker::default();
        let d = t.observe(&event(1, Hook::TcpSendmsg, 100, 0));
        assert_eq!(
            d,
            Deltas {
                wmem_queued: 100,
                wmem_alloc: 0
            }
        );
        let d = t.observe(&event(2, Hook::TcpSendmsg, 50, 0));
        assert_eq!(d.wmem_queued, 50);
        let d = t.observe(&event(1, Hook::DevQueueXmit, 300, 200));
        assert_eq!(
            d,
            Deltas {
                wmem_queued: 200,
                wmem_alloc: 200
            }
        );
        let d = t.observe(&event(1, Hook::TcpAck, 100, 0));
        assert_eq!(
            d,
            Deltas {
                wmem_queued: -200,
                wmem_alloc: -200
            }
        );
        assert_eq!(t.sockets(), 2);
        t.observe(&event(1, Hook::SockDestroy, 0, 0));
        assert_eq!(t.sockets(), 2, "destroyed sockets still count as seen");
        // Same kernel address, new socket id: a new socket, counted from zero.
        let d = t.observe(&event(3, Hook::TcpSendmsg, 10, 0));
        assert_eq!(d.wmem_queued, 10);
        assert_eq!(t.sockets(), 3);
    }

    #[test]
    fn a_freed_socket_moves_nothing() {
        let mut t = SocketTracker::default();
        t.observe(&event(1, Hook::DevQueueXmit, 300, 200));
        let mut raw = raw_event(Hook::SkbFree);
        (raw.sock_id, raw.wmem_queued, raw.wmem_alloc) = (1, 0, 0);
        raw.flags |= sockmem_common::event::FLAG_SOCK_FREED;
        let e = Event::from_raw(&raw).unwrap();
        assert!(e.freed);
        assert_eq!(t.observe(&e), Deltas::default());
    }
}
