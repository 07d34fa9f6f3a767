//! The TX queue a socket's skbs were handed to the driver on: its state (stopped by the driver,
//! or by BQL) and BQL's limit and bytes in flight, as `driver_xmit` reads them in `why` mode
//! (packed as `sockmem_common::event` documents next to `TXQ_READ`).

use serde::Serialize;
use sockmem_common::event::{TXQ_BQL_READ, TXQ_BQL_USED, TXQ_DRV_XOFF, TXQ_READ, TXQ_STACK_XOFF};

/// What the hand-offs of one socket saw of their TX queue.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxQueueSeen {
    /// Hand-offs whose queue was read.
    pub handoffs: u64,
    /// ... that found it stopped by the driver (`__QUEUE_STATE_DRV_XOFF`).
    pub driver_stopped: u64,
    /// ... that found it stopped by the stack, i.e. BQL (`__QUEUE_STATE_STACK_XOFF`).
    pub bql_stopped: u64,
    /// Hand-offs where the kernel has BQL and its counters were read.
    pub bql_read: u64,
    /// ... of which on a queue whose driver uses BQL (it has queued bytes through it).
    pub bql_used: u64,
    /// BQL's limit at the last hand-off on a queue using BQL, and its range over the run.
    pub bql_limit_last: Option<u32>,
    pub bql_limit_min: Option<u32>,
    pub bql_limit_max: Option<u32>,
    /// BQL's bytes in flight (queued, not completed) at the hand-offs: mean and max.
    pub bql_inflight_mean: Option<f64>,
    pub bql_inflight_max: Option<u32>,
    #[serde(skip)]
    inflight_sum: u64,
}

impl TxQueueSeen {
    /// One `driver_xmit` event's `value` and `aux`.
    pub fn add(&mut self, value: i64, aux: u64) {
        if value & TXQ_READ == 0 {
            return;
        }
        self.handoffs += 1;
        self.driver_stopped += u64::from(value & TXQ_DRV_XOFF != 0);
        self.bql_stopped += u64::from(value & TXQ_STACK_XOFF != 0);
        if value & TXQ_BQL_READ == 0 {
            return;
        }
        self.bql_read += 1;
        if value & TXQ_BQL_USED == 0 {
            return;
        }
        self.bql_used += 1;
        let (limit, inflight) = ((aux >> 32) as u32, aux as u32);
        self.bql_limit_last = Some(limit);
        self.bql_limit_min = Some(self.bql_limit_min.map_or(limit, |m| m.min(limit)));
        self.bql_limit_max = Some(self.bql_limit_max.map_or(limit, |m| m.max(limit)));
        self.bql_inflight_max = Some(self.bql_inflight_max.map_or(inflight, |m| m.max(inflight)));
        self.inflight_sum += u64::from(inflight);
        self.bql_inflight_mean = Some(self.inflight_sum as f64 / self.bql_used as f64);
    }

    /// One line for the reading: the queue's state and BQL, or what was not seen.
    pub fn describe(&self) -> String {
        if self.handoffs == 0 {
            return "TX queue not seen at a hand-off".into();
        }
        let mut s = format!(
            "TX queue stopped at {} of {} hand-offs by the driver, {} by BQL",
            self.driver_stopped, self.handoffs, self.bql_stopped
        );
        match (self.bql_limit_last, self.bql_inflight_max) {
            (Some(limit), Some(inflight)) => s.push_str(&format!(
                "; BQL limit {limit} B (range {}-{}), inflight max {inflight} B",
                self.bql_limit_min.unwrap_or(limit),
                self.bql_limit_max.unwrap_or(limit)
            )),
            _ if self.bql_read > 0 => s.push_str("; the driver does not use BQL"),
            _ => s.push_str("; BQL not in this kernel"),
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_state_and_bql() {
        let mut t = TxQueueSeen::default();
        t.add(0, 0); // not read: not counted
        t.add(TXQ_READ | TXQ_BQL_READ, 0); // a driver without BQL
        let used = TXQ_READ | TXQ_BQL_READ | TXQ_BQL_USED;
        t.add(used | TXQ_DRV_XOFF, (3000 << 32) | 1500);
        t.add(used | TXQ_STACK_XOFF, (6000 << 32) | 500);
        assert_eq!((t.handoffs, t.driver_stopped, t.bql_stopped), (3, 1, 1));
        assert_eq!((t.bql_read, t.bql_used), (3, 2));
        assert_eq!(t.bql_limit_last, Some(6000));
        assert_eq!((t.bql_limit_min, t.bql_limit_max), (Some(3000), Some(6000)));
        assert_eq!(t.bql_inflight_max, Some(1500));
        assert_eq!(t.bql_inflight_mean, Some(1000.0));
        assert!(
            t.describe().contains("BQL limit 6000 B"),
            "{}",
            t.describe()
        );
    }

    #[test]
    fn no_bql_is_said() {
        let mut t = TxQueueSeen::default();
        t.add(TXQ_READ, 0);
        assert!(t.describe().ends_with("BQL not in this kernel"));
        let mut t = TxQueueSeen::default();
        t.add(TXQ_READ | TXQ_BQL_READ, 0);
        assert!(t.describe().ends_with("the driver does not use BQL"));
    }
}
