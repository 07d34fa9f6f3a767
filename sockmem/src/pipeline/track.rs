//! Per-socket state in userspace: the change of each counter since the socket's previous event.

use std::collections::HashMap;

use sockmem_common::Hook;

use crate::pipeline::decode::Event;

/// How much each counter moved since the same socket's previous event. A socket's first event
/// counts from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub wmem_queued: i64,
    pub wmem_alloc: i64,
}

#[derive(Default)]
pub struct SocketTracker {
    last: HashMap<u64, (i32, i32)>,
}

impl SocketTracker {
    pub fn observe(&mut self, e: &Event) -> Deltas {
        let (q, a) = if e.hook == Hook::SockDestroy {
            self.last.remove(&e.sk)
        } else {
            self.last.insert(e.sk, (e.wmem_queued, e.wmem_alloc))
        }
        .unwrap_or((0, 0));
        Deltas {
            wmem_queued: e.wmem_queued as i64 - q as i64,
            wmem_alloc: e.wmem_alloc as i64 - a as i64,
        }
    }

    pub fn sockets(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::{tests::raw_event, Event};

    fn event(sk: u64, hook: Hook, q: i32, a: i32) -> Event {
        let mut raw = raw_event(hook);
        raw.sk = sk;
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
        assert_eq!(t.sockets(), 1);
    }
}
