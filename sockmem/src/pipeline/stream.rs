//! Reads events from the BPF ring buffer with tokio, and the per-CPU count of lost events.

use std::io;

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use sockmem_common::names;
use tokio::io::{unix::AsyncFd, Interest};

/// Records handed over per [`EventStream::drain`] call.
pub const DRAIN_AT_MOST: u64 = 1 << 16;

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    /// Must be called inside a tokio runtime context (it registers with the reactor).
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<EventStream> {
        let map = ebpf
            .take_map(names::EVENTS)
            .ok_or_else(|| anyhow!("map `{}` missing from the eBPF object", names::EVENTS))?;
        let ring = RingBuf::try_from(map).context("opening the event ring buffer")?;
        // SAFETY: the RingBuf owns the map's fd, which stays open and the same until the
        // AsyncFd (and with it the RingBuf) is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("registering the ring buffer with tokio")?;
        Ok(EventStream { ring })
    }

    /// Waits until the ring buffer has data.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands the records now in the ring buffer to `f`, at most [`DRAIN_AT_MOST`] of them: a
    /// ring filled faster than it is read must not keep the caller from its other work (the
    /// next call goes on where this one stopped).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < DRAIN_AT_MOST {
            let Some(item) = ring.next() else { break };
            n += 1;
            f(&item)?;
        }
        Ok(n)
    }
}

/// The kernel-side count of ring-buffer reserve failures, per CPU.
pub struct LossCounter {
    map: PerCpuArray<MapData, u64>,
}

impl LossCounter {
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<LossCounter> {
        let map = ebpf
            .take_map(names::LOST)
            .ok_or_else(|| anyhow!("map `{}` missing from the eBPF object", names::LOST))?;
        Ok(LossCounter {
            map: PerCpuArray::try_from(map).context("opening the lost-event counters")?,
        })
    }

    pub fn per_cpu(&self) -> anyhow::Result<Vec<u64>> {
        let values = self
            .map
            .get(&0, 0)
            .context("reading the lost-event counters")?;
        Ok(values.iter().copied().collect())
    }
}
