//! Time a socket's sender spent asleep in send calls, put under the sampled intervals it fell
//! in: one accounting for TCP (is an interval send-buffer-limited?) and UDP (how much of the
//! window the sender waited).
//!
//! `send_blocked` gives a call's total time asleep, reported when the call returns, and
//! `sendmsg_ret` right after gives the call's length: the sleeps are spread over the whole call
//! (a long write sleeps many times between copies), which may span many samples. An interval
//! whose cause depends on that time stays pending until the calls over it have returned.

use std::collections::VecDeque;

/// A sampled interval whose cause is `send_buffer` or `sending` by its time asleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub from: u64,
    pub to: u64,
    /// The kernel's busy time put under the interval.
    pub busy: u64,
    /// Time asleep in send calls within `[from, to]` known so far.
    pub asleep: u64,
}

impl Pending {
    /// Asleep at least half the busy time: the send buffer held the sender back.
    pub fn send_buffer_limited(&self) -> bool {
        self.busy > 0 && self.asleep * 2 >= self.busy
    }
}

/// Pending intervals kept per socket at most (about 40 s of 20 ms samples): an older one is
/// judged by what is known of it then (a single call asleep for longer is not seen in it).
const MAX_PENDING: usize = 2048;

#[derive(Clone, Debug, Default)]
pub struct Sleeps {
    /// A call's time asleep (`send_blocked`: end, time) waiting for its length (`sendmsg_ret`).
    reported: Option<(u64, u64)>,
    pending: VecDeque<Pending>,
    /// The window so far: from the first sample to the last.
    window: Option<(u64, u64)>,
    /// Time asleep after the last sample (the interval still open).
    open_ns: u64,
    /// Time asleep within the window.
    pub in_window_ns: u64,
    /// Calls asleep as the run started (thread id, the run's start): asleep until they return.
    asleep_at_start: Vec<(u32, u64)>,
}

impl Sleeps {
    /// `send_blocked`: a call that ended at `end_ns` slept `asleep_ns` in all.
    pub fn blocked(&mut self, end_ns: u64, asleep_ns: u64) {
        if let Some((end, ns)) = self.reported.replace((end_ns, asleep_ns)) {
            // Its return was lost: the sleeps end where the call did.
            self.spread(end.saturating_sub(ns), end, ns);
        }
    }

    /// Thread `tid` was asleep in a send call at `start_ns`, the run's start.
    pub fn asleep_since(&mut self, tid: u32, start_ns: u64) {
        self.asleep_at_start.push((tid, start_ns));
    }

    /// Thread `tid`'s call returned (or reported its sleep) at `end_ns`: where it was asleep at
    /// the start, asleep all the while since (not the whole span it reports, which began before
    /// the run); gives that time.
    pub fn woke(&mut self, tid: u32, end_ns: u64) -> Option<u64> {
        let i = self.asleep_at_start.iter().position(|(t, _)| *t == tid)?;
        let (_, from) = self.asleep_at_start.swap_remove(i);
        let ns = end_ns.saturating_sub(from);
        self.spread(from, end_ns, ns);
        Some(ns)
    }

    /// `sendmsg_ret` at `end_ns` after a call of `call_ns` (0 where not known).
    pub fn returned(&mut self, end_ns: u64, call_ns: u64) {
        if let Some((_, ns)) = self.reported.take() {
            self.spread(end_ns.saturating_sub(call_ns.max(ns)), end_ns, ns);
        }
    }

    /// Puts `ns` asleep, evenly spread over `[a, b]`, under the intervals it overlaps.
    fn spread(&mut self, a: u64, b: u64, ns: u64) {
        let len = b.saturating_sub(a).max(1);
        let part = |from: u64, to: u64| {
            let o = b.min(to).saturating_sub(a.max(from));
            (u128::from(ns) * u128::from(o) / u128::from(len)) as u64
        };
        let Some((first, last)) = self.window else {
            return;
        };
        self.in_window_ns += part(first, last);
        self.open_ns += part(last, u64::MAX);
        for p in self.pending.iter_mut().rev() {
            if p.to <= a {
                break;
            }
            p.asleep = (p.asleep + part(p.from, p.to)).min(p.to - p.from);
        }
    }

    /// A sample at `now_ns` closes the interval since the previous one: its time asleep known
    /// so far (at most its length).
    pub fn close(&mut self, now_ns: u64) -> u64 {
        let (first, last) = self.window.unwrap_or((now_ns, now_ns));
        self.window = Some((first, now_ns));
        let asleep = std::mem::take(&mut self.open_ns).min(now_ns.saturating_sub(last));
        self.in_window_ns += asleep;
        asleep
    }

    /// Keeps an interval until the calls over it have returned; gives back the oldest when
    /// too many are kept.
    pub fn defer(&mut self, p: Pending) -> Option<Pending> {
        self.pending.push_back(p);
        (self.pending.len() > MAX_PENDING)
            .then(|| self.pending.pop_front())
            .flatten()
    }

    /// The end of the run: the intervals still pending, with all that is known of them.
    pub fn drain(&mut self) -> Vec<Pending> {
        if let Some((end, ns)) = self.reported.take() {
            self.spread(end.saturating_sub(ns), end, ns);
        }
        // Calls asleep since the start that never returned: asleep to the last sample.
        if let Some((_, last)) = self.window {
            for (_, from) in std::mem::take(&mut self.asleep_at_start) {
                self.spread(from, last, last.saturating_sub(from));
            }
        }
        self.pending.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Samples every 20 ms; one write lasting 70 ms slept 56 ms in short sleeps: each interval
    /// it covers gets 80% asleep, however late the call reports.
    #[test]
    fn a_long_call_is_spread_over_the_intervals_it_spans() {
        let mut s = Sleeps::default();
        assert_eq!(s.close(0), 0);
        let mut kept = Vec::new();
        for t in [20, 40, 60] {
            let asleep = s.close(t * MS);
            assert_eq!(asleep, 0, "the call has not returned yet");
            kept.push(Pending {
                from: (t - 20) * MS,
                to: t * MS,
                busy: 20 * MS,
                asleep,
            });
        }
        for p in kept {
            assert!(s.defer(p).is_none());
        }
        s.blocked(75 * MS, 56 * MS);
        s.returned(75 * MS, 70 * MS);
        let last = s.close(80 * MS);
        assert_eq!(
            last,
            12 * MS,
            "15 of the call's 70 ms fall after the 60 ms sample"
        );
        let judged = s.drain();
        let asleep: Vec<u64> = judged.iter().map(|p| p.asleep / MS).collect();
        assert_eq!(asleep, vec![12, 16, 16]);
        assert!(judged.iter().all(Pending::send_buffer_limited));
        assert_eq!(s.in_window_ns, 56 * MS);
    }

    #[test]
    fn sleeps_outside_the_window_do_not_count() {
        let mut s = Sleeps::default();
        s.blocked(5 * MS, 4 * MS);
        s.returned(5 * MS, 5 * MS);
        s.close(10 * MS);
        // Half of this call is before the first sample... none of the first call is.
        s.blocked(14 * MS, 4 * MS);
        s.returned(14 * MS, 8 * MS);
        assert_eq!(s.close(20 * MS), 2 * MS);
        assert_eq!(s.in_window_ns, 2 * MS);
    }

    #[test]
    fn a_lost_return_keeps_the_sleep_at_the_end_of_the_call() {
        let mut s = Sleeps::default();
        s.close(0);
        s.blocked(30 * MS, 15 * MS);
        s.blocked(35 * MS, MS);
        s.returned(35 * MS, 2 * MS);
        assert_eq!(s.close(40 * MS), 16 * MS);
    }

    #[test]
    fn short_sleeps_in_a_busy_interval_are_not_the_send_buffer() {
        let p = Pending {
            from: 0,
            to: 20 * MS,
            busy: 20 * MS,
            asleep: 9 * MS,
        };
        assert!(!p.send_buffer_limited());
        let p = Pending { busy: 12 * MS, ..p };
        assert!(p.send_buffer_limited(), "asleep 9 of 12 ms busy");
    }

    /// A call asleep at the start (0) that returns at 50 ms having reported a sleep of 10 s:
    /// asleep from the start, not the 10 s; one that never returns, to the last sample.
    #[test]
    fn a_call_asleep_at_the_start_counts_from_the_start() {
        let mut s = Sleeps::default();
        s.asleep_since(7, 0);
        s.asleep_since(8, 0);
        s.close(0);
        let mut kept = Vec::new();
        for t in [20, 40, 60, 80] {
            let asleep = s.close(t * MS);
            assert_eq!(asleep, 0, "not returned yet");
            kept.push(Pending {
                from: (t - 20) * MS,
                to: t * MS,
                busy: 20 * MS,
                asleep,
            });
        }
        for p in kept {
            assert!(s.defer(p).is_none());
        }
        assert_eq!(s.woke(9, 50 * MS), None, "another thread's call");
        assert_eq!(s.woke(7, 50 * MS), Some(50 * MS));
        assert_eq!(s.woke(7, 55 * MS), None, "counted once");
        let judged = s.drain();
        let asleep: Vec<u64> = judged.iter().map(|p| p.asleep / MS).collect();
        assert_eq!(
            asleep,
            vec![20, 20, 20, 20],
            "one call or the other asleep throughout"
        );
        assert_eq!(s.in_window_ns, 130 * MS);
    }
}
