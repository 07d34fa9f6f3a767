//! `sockmem demo <scenario>`: each demo builds its own network, runs a sender and a receiver,
//! records the run with `sockmem record` (a child process), then says what the two counters
//! did, with the numbers that show it, held against the kernel's own view (sock_diag, `tc -s`).

pub mod lab;
pub mod scenario;
pub mod traffic;

use std::{collections::HashMap, path::Path};

use anyhow::Context as _;
use sockmem_common::Hook;

use crate::{
    pipeline::{decode::Event, why::samples::Samples},
    recording::{self, reader::Item},
};

/// What the recording says about the demo's sender socket(s): those with the demo's port as
/// their remote port.
#[derive(Debug, Default)]
pub struct SenderFacts {
    /// The sender sockets' ids (what the plot draws).
    pub sock_ids: Vec<u64>,
    pub events: u64,
    pub queued_max: i64,
    pub alloc_max: i64,
    pub queued_last: i64,
    pub alloc_last: i64,
    pub sndbuf: i64,
    pub truesize_max: u64,
    pub sendmsg_calls: u64,
    pub blocked_calls: u64,
    pub blocked_ns: u64,
    pub drops: HashMap<String, u64>,
    pub sojourn_ns: Samples,
    pub lost: u64,
    /// `sk_wmem_alloc` over time: each value with how long it held (until the socket's next
    /// event).
    alloc_held: Vec<(i64, u64)>,
    last_ts: Option<u64>,
}

impl SenderFacts {
    /// The value `sk_wmem_alloc` stayed at or below for a `p` share of the time.
    pub fn alloc_over_time(&self, p: f64) -> i64 {
        let mut v = self.alloc_held.clone();
        v.sort_unstable();
        let total: u64 = v.iter().map(|(_, d)| d).sum();
        let mut acc = 0;
        for (a, d) in &v {
            acc += d;
            if acc as f64 >= p * total as f64 {
                return *a;
            }
        }
        0
    }

    pub fn qdisc_drops(&self) -> u64 {
        self.drops
            .iter()
            .filter(|(r, _)| r.starts_with("QDISC"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads the recording's events of the sockets sending to `port`.
pub fn sender_facts(path: &Path, port: u16) -> anyhow::Result<SenderFacts> {
    let what = || format!("reading the recording `{}`", path.display());
    let mut r = recording::open(path)?;
    let drop_names: HashMap<u64, String> = r
        .trailer()
        .enums
        .iter()
        .filter(|e| e.hook == Hook::SkbDrop.name())
        .flat_map(|e| e.values.iter().cloned())
        .collect();
    let mut f = SenderFacts {
        lost: r.trailer().lost_per_cpu.iter().sum(),
        ..SenderFacts::default()
    };
    let mut enqueued: HashMap<u64, u64> = HashMap::new();
    while let Some(item) = r.next_item().with_context(what)? {
        let Item::Event(bytes) = item else { continue };
        let Ok(e) = Event::decode(bytes) else {
            continue;
        };
        if e.remote.port() != port {
            continue;
        }
        f.events += 1;
        if !f.sock_ids.contains(&e.sock_id) {
            f.sock_ids.push(e.sock_id);
        }
        if let (Some(last), Some(prev)) = (f.last_ts, f.alloc_held.last_mut()) {
            prev.1 = e.ts_ns.saturating_sub(last);
        }
        f.last_ts = Some(e.ts_ns);
        if !e.freed {
            f.alloc_held.push((i64::from(e.wmem_alloc), 0));
            f.queued_max = f.queued_max.max(i64::from(e.wmem_queued));
            f.alloc_max = f.alloc_max.max(i64::from(e.wmem_alloc));
            f.queued_last = i64::from(e.wmem_queued);
            f.alloc_last = i64::from(e.wmem_alloc);
            if e.sndbuf > 0 {
                f.sndbuf = i64::from(e.sndbuf);
            }
        }
        match e.hook {
            Hook::DevQueueXmit | Hook::WmemCharge => {
                if let Some(s) = &e.skb {
                    f.truesize_max = f.truesize_max.max(u64::from(s.truesize));
                }
            }
            Hook::SendmsgReturn => f.sendmsg_calls += 1,
            Hook::SendBlocked => {
                f.blocked_calls += 1;
                f.blocked_ns += e.duration_ns;
            }
            Hook::QdiscEnqueue => {
                if let Some(s) = &e.skb {
                    enqueued.insert(s.skb, e.ts_ns);
                }
            }
            Hook::QdiscDequeue => {
                if let Some(since) = e.skb.as_ref().and_then(|s| enqueued.remove(&s.skb)) {
                    f.sojourn_ns.push(e.ts_ns.saturating_sub(since));
                }
            }
            Hook::SkbDrop => {
                if let Some(s) = &e.skb {
                    enqueued.remove(&s.skb);
                }
                let reason = drop_names
                    .get(&(e.value as u64))
                    .cloned()
                    .unwrap_or_else(|| e.value.to_string());
                *f.drops.entry(reason).or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(f)
}
