//! Per-socket state in userspace: the change of each counter since the socket's previous event,
//! and what the exit table and snapshots need to know of each socket.

use std::collections::HashMap;

use sockmem_common::Hook;

use crate::pipeline::{decode::Event, identity::SocketIdentity};

/// How much each counter moved since the same socket's previous event. A socket's first event
/// counts from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub wmem_queued: i64,
    pub wmem_alloc: i64,
}

/// What is known of one socket from its events: identity, sender, and its counters' last and
/// largest values (the exit table, the snapshot's comparison).
#[derive(Clone, Debug)]
pub struct SocketState {
    pub id: SocketIdentity,
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub last_hook: Hook,
    /// The last counters read (`None` until an event read them).
    pub last: Option<(i32, i32)>,
    pub max_queued: i32,
    pub max_alloc: i32,
    pub sndbuf: i32,
    pub destroyed: bool,
}

/// Keyed by socket id (`Event::sock_id`), which survives the kernel's reuse of addresses. Every
/// socket seen stays (about 200 bytes each: 40,000 short connections are 8 MB).
#[derive(Default)]
pub struct SocketTracker {
    sockets: HashMap<u64, SocketState>,
}

impl SocketTracker {
    pub fn observe(&mut self, e: &Event) -> Deltas {
        let s = self
            .sockets
            .entry(e.sock_id)
            .or_insert_with(|| SocketState {
                id: SocketIdentity::from_event(e),
                events: 0,
                first_ns: e.ts_ns,
                last_ns: e.ts_ns,
                last_hook: e.hook,
                last: None,
                max_queued: 0,
                max_alloc: 0,
                sndbuf: 0,
                destroyed: false,
            });
        s.events += 1;
        s.last_ns = e.ts_ns;
        s.last_hook = e.hook;
        s.id.observe(e);
        if e.hook == Hook::SockDestroy {
            s.destroyed = true;
        }
        // A socket being freed has no counters: nothing moved that can be said.
        if e.freed {
            return Deltas::default();
        }
        let (q, a) = s
            .last
            .replace((e.wmem_queued, e.wmem_alloc))
            .unwrap_or((0, 0));
        s.max_queued = s.max_queued.max(e.wmem_queued);
        s.max_alloc = s.max_alloc.max(e.wmem_alloc);
        s.sndbuf = e.sndbuf;
        Deltas {
            wmem_queued: e.wmem_queued as i64 - q as i64,
            wmem_alloc: e.wmem_alloc as i64 - a as i64,
        }
    }

    /// Sockets seen since the start, destroyed ones included.
    pub fn sockets(&self) -> u64 {
        self.sockets.len() as u64
    }

    /// Every socket seen, in the order they were first seen.
    pub fn states(&self) -> Vec<&SocketState> {
        let mut v: Vec<&SocketState> = self.sockets.values().collect();
        v.sort_by_key(|s| (s.first_ns, s.id.sock_id));
        v
    }

    pub fn get(&self, sock_id: u64) -> Option<&SocketState> {
        self.sockets.get(&sock_id)
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
        let one = t.get(1).expect("socket 1 is known");
        assert!(one.destroyed);
        assert_eq!((one.max_queued, one.max_alloc, one.events), (300, 200, 4));
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
