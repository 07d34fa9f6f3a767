//! `sockmem demo <scenario>`: each demo builds its own network, runs a sender and a receiver,
//! records the run with `sockmem record` (a child process), then says what the two counters
//! did, with the numbers that show it, held against the kernel's own view (sock_diag, `tc -s`).

pub mod lab;
pub mod scenario;
pub mod traffic;

use std::path::Path;

use anyhow::Context as _;

use crate::{
    cli::{FilterArgs, GroupBy},
    pipeline::{
        filter::EventFilter,
        report::{Collector, Row},
    },
    recording,
};

/// What the recording says about the demo's sender socket(s): those with the demo's port as
/// their remote port, summed up as `sockmem report` sums them.
#[derive(Debug, Default)]
pub struct SenderFacts {
    /// The sender sockets' row (their ids, in the order first seen, are what the plot draws).
    pub row: Row,
    /// Events the recording lost (ring buffer full).
    pub lost: u64,
}

impl SenderFacts {
    pub fn qdisc_drops(&self) -> u64 {
        self.row
            .drops
            .iter()
            .filter(|(r, _)| r.starts_with("QDISC"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// `report`'s figures of the sockets sending to `port`, from the recording.
pub fn sender_facts(path: &Path, port: u16) -> anyhow::Result<SenderFacts> {
    let mut reader = recording::open(path)?;
    let mut filter = EventFilter::new(&FilterArgs {
        port: vec![port],
        ..FilterArgs::default()
    })?;
    let mut collector = Collector::new(false);
    collector
        .read(&mut reader, &mut filter)
        .with_context(|| format!("reading the recording `{}`", path.display()))?;
    let mut senders: Vec<Row> = collector
        .finish(GroupBy::Socket, false)
        .rows
        .into_iter()
        .filter(|r| r.remote.is_some_and(|a| a.port() == port))
        .collect();
    senders.sort_by_key(|r| (r.first_ns, r.sock));
    let mut senders = senders.into_iter();
    let row = senders
        .next()
        .map(|first| {
            senders.fold(first, |mut all, r| {
                all.merge(&r);
                all
            })
        })
        .unwrap_or_default();
    Ok(SenderFacts {
        row,
        lost: reader.trailer().lost_per_cpu.iter().sum(),
    })
}
