//! Who is in each qdisc: every followed skb between its `qdisc_enqueue` and `qdisc_dequeue`
//! events, with its socket and bytes. At each enqueue, the bytes already queued (and whose they
//! are) is what the new skb waits behind.

use std::collections::{HashMap, VecDeque};

/// One skb waiting in a qdisc.
#[derive(Clone, Copy, Debug)]
struct Queued {
    sock_id: u64,
    bytes: u64,
    /// The skb's length as it entered (a GSO skb is longer than each segment cut from it).
    len: u32,
    since_ns: u64,
}

/// The skbs in one device's root qdisc, by skb address.
#[derive(Default, Debug)]
pub struct QdiscQueue {
    skbs: HashMap<u64, Queued>,
    /// Bytes queued per socket (the sum of `skbs` by socket).
    by_socket: HashMap<u64, u64>,
    /// Each socket's skbs in the order they came.
    order: HashMap<u64, VecDeque<u64>>,
}

/// What an enqueue found ahead of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ahead {
    /// (socket id, bytes) of every socket with bytes queued.
    pub by_socket: Vec<(u64, u64)>,
}

impl QdiscQueue {
    /// An skb of `len` bytes entered the qdisc, weighing `bytes`; returns who was there before
    /// it.
    pub fn enqueue(&mut self, skb: u64, sock_id: u64, bytes: u64, len: u32, ts_ns: u64) -> Ahead {
        let ahead = Ahead {
            by_socket: self
                .by_socket
                .iter()
                .filter(|(_, &b)| b > 0)
                .map(|(&s, &b)| (s, b))
                .collect(),
        };
        // An address seen again without its dequeue (a lost event, or freed by a qdisc reset):
        // the old entry is gone.
        self.remove(skb);
        self.skbs.insert(
            skb,
            Queued {
                sock_id,
                bytes,
                len,
                since_ns: ts_ns,
            },
        );
        *self.by_socket.entry(sock_id).or_default() += bytes;
        self.order.entry(sock_id).or_default().push_back(skb);
        ahead
    }

    /// An skb left the qdisc (dequeued, or dropped from it): its socket and time inside.
    pub fn dequeue(&mut self, skb: u64, ts_ns: u64) -> Option<(u64, u64)> {
        let q = self.remove(skb)?;
        Some((q.sock_id, ts_ns.saturating_sub(q.since_ns)))
    }

    /// An skb of `sock_id` (`len` bytes long) that never entered left the qdisc: a segment of
    /// a GSO skb the qdisc cut up (tbf does when an skb exceeds its burst), if the socket's
    /// oldest skb is longer than it. Its bytes come off that skb, which leaves when none are
    /// left: its socket and time inside. Otherwise it is an skb queued before the run (or whose
    /// enqueue was lost), and nothing queued is its: taking its bytes off the next skb would
    /// make that one leave early, its own dequeue then take the one after, and so on, the
    /// model short of the first skbs' bytes for as long as the socket keeps a queue.
    pub fn dequeue_segment(
        &mut self,
        sock_id: u64,
        bytes: u64,
        len: u32,
        ts_ns: u64,
    ) -> Option<(u64, u64)> {
        let &oldest = self.order.get(&sock_id)?.front()?;
        let q = self.skbs.get_mut(&oldest)?;
        if q.len <= len {
            return None;
        }
        let taken = bytes.min(q.bytes);
        q.bytes -= taken;
        if let Some(b) = self.by_socket.get_mut(&sock_id) {
            *b = b.saturating_sub(taken);
        }
        if q.bytes > 0 {
            return None;
        }
        self.dequeue(oldest, ts_ns)
    }

    fn remove(&mut self, skb: u64) -> Option<Queued> {
        let q = self.skbs.remove(&skb)?;
        if let Some(order) = self.order.get_mut(&q.sock_id) {
            if let Some(i) = order.iter().position(|&s| s == skb) {
                order.remove(i);
            }
            if order.is_empty() {
                self.order.remove(&q.sock_id);
            }
        }
        if let Some(b) = self.by_socket.get_mut(&q.sock_id) {
            *b = b.saturating_sub(q.bytes);
            if *b == 0 {
                self.by_socket.remove(&q.sock_id);
            }
        }
        Some(q)
    }

    /// Forgets skbs queued since before `before_ns`: their dequeue was lost (ring buffer full,
    /// or freed where no hook saw it), and kept they would count as ahead of every later skb.
    pub fn forget_older_than(&mut self, before_ns: u64) -> usize {
        let stale: Vec<u64> = self
            .skbs
            .iter()
            .filter(|(_, q)| q.since_ns < before_ns)
            .map(|(&skb, _)| skb)
            .collect();
        for skb in &stale {
            self.remove(*skb);
        }
        stale.len()
    }

    /// Bytes of this socket queued now.
    pub fn bytes_of(&self, sock_id: u64) -> u64 {
        self.by_socket.get(&sock_id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_sees_what_is_ahead_and_dequeue_gives_sojourn() {
        let mut q = QdiscQueue::default();
        assert!(q.enqueue(0xa, 1, 1000, 900, 100).by_socket.is_empty());
        q.enqueue(0xb, 1, 500, 400, 110);
        let mut ahead = q.enqueue(0xc, 2, 200, 100, 120).by_socket;
        ahead.sort();
        assert_eq!(ahead, vec![(1, 1500)]);
        assert_eq!(q.dequeue(0xa, 150), Some((1, 50)));
        assert_eq!(q.bytes_of(1), 500);
        assert_eq!(q.dequeue(0xa, 160), None);
        assert_eq!(q.dequeue(0xb, 170), Some((1, 60)));
        assert_eq!(q.bytes_of(1), 0);
        assert_eq!(q.bytes_of(2), 200);
    }

    #[test]
    fn segments_leave_from_the_oldest_skb_of_their_socket() {
        let mut q = QdiscQueue::default();
        q.enqueue(0xa, 1, 3000, 2900, 100);
        q.enqueue(0xb, 1, 1000, 900, 110);
        assert_eq!(q.dequeue_segment(1, 1500, 1450, 200), None);
        assert_eq!(q.bytes_of(1), 2500);
        assert_eq!(q.dequeue_segment(1, 1500, 1450, 300), Some((1, 200)));
        assert_eq!(q.bytes_of(1), 1000);
        assert_eq!(q.dequeue_segment(2, 1500, 1450, 300), None);
    }

    #[test]
    fn an_skb_queued_before_the_run_takes_nothing_when_it_leaves() {
        // Fragments of equal size: the one queued before the run is no piece of the next.
        let mut q = QdiscQueue::default();
        q.enqueue(0xb, 1, 2304, 1514, 110);
        assert_eq!(q.dequeue_segment(1, 2304, 1514, 120), None);
        assert_eq!(q.bytes_of(1), 2304);
        assert_eq!(q.dequeue(0xb, 130), Some((1, 20)));
    }

    #[test]
    fn stale_entries_are_forgotten() {
        let mut q = QdiscQueue::default();
        q.enqueue(0xa, 1, 1000, 900, 100);
        q.enqueue(0xb, 2, 1000, 900, 5_000);
        assert_eq!(q.forget_older_than(1_000), 1);
        assert_eq!(q.bytes_of(1), 0);
        assert_eq!(q.bytes_of(2), 1000);
    }

    #[test]
    fn an_address_reused_without_dequeue_replaces_the_old_entry() {
        let mut q = QdiscQueue::default();
        q.enqueue(0xa, 1, 1000, 900, 100);
        q.enqueue(0xa, 2, 300, 200, 200);
        assert_eq!(q.bytes_of(1), 0);
        assert_eq!(q.bytes_of(2), 300);
    }
}
