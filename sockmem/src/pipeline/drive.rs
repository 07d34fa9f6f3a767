//! The event loop every streaming command runs: drain the ring buffer into a [`Consumer`] until
//! the duration ends, Ctrl-C or SIGTERM, with a periodic call for the consumer's own work
//! (snapshots for `trace`, kernel samples for `why`, `top`'s refresh), lost events reported as
//! they happen.

use std::{io, time::Duration};

use tokio::time::{interval, sleep_until, MissedTickBehavior};

use crate::{
    pipeline::stream::{EventStream, LossCounter},
    session::{self, Session, Stops},
};

/// How often the ring buffer is drained when the programs do not wake the reader.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What a command does with the records, and at its own period.
pub trait Consumer {
    /// One ring-buffer record.
    fn record(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// After each batch of records.
    fn flush(&mut self) -> io::Result<()>;
    /// Every [`Drive::periodic`], after the ring is drained.
    fn periodic(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Every drain tick (about [`DRAIN_EVERY`]), events or not: a live display's keys. `false`
    /// ends the run as a stop signal does.
    fn poll(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

fn drain(stream: &mut EventStream, c: &mut dyn Consumer) -> io::Result<u64> {
    stream.drain(|b| c.record(b))
}

/// How long and how a command's loop runs.
pub struct Drive {
    pub duration: Option<Duration>,
    /// Calls [`Consumer::periodic`] this often (never when `None`).
    pub periodic: Option<Duration>,
    /// The output is standard output: end (as a broken pipe) when its reader leaves.
    pub watch_stdout: bool,
}

/// Monotonic nanoseconds, the clock of `bpf_ktime_get_ns()` and of every event's `ts_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Drive {
    /// Runs until the end of the run, then switches the programs off and hands the consumer
    /// what is still in the ring buffer: it was asked for.
    pub async fn run(
        &self,
        session: &mut Session,
        stream: &mut EventStream,
        losses: &LossCounter,
        stops: &mut Stops,
        consumer: &mut dyn Consumer,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now()
            + self
                .duration
                .unwrap_or(Duration::from_secs(100 * 365 * 86400));
        // The programs wake this loop only when the ring is filling up (see the eBPF sink's
        // `wakeup_flag`): at any other rate it drains on this timer, so events are handled
        // within about DRAIN_EVERY of happening, in large batches.
        let mut drain_tick = interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut periodic_tick = interval(self.periodic.unwrap_or(Duration::from_secs(3600)));
        periodic_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        periodic_tick.tick().await;
        let mut lost_seen = 0u64;
        loop {
            tokio::select! {
                r = stream.readable() => {
                    r?;
                    drain(stream, consumer)?;
                    consumer.flush()?;
                }
                _ = drain_tick.tick() => {
                    if drain(stream, consumer)? > 0 {
                        consumer.flush()?;
                    }
                    if !consumer.poll()? {
                        break;
                    }
                }
                _ = stops.recv() => break,
                _ = sleep_until(deadline) => break,
                _ = periodic_tick.tick(), if self.periodic.is_some() => {
                    drain(stream, consumer)?;
                    consumer.flush()?;
                    consumer.periodic()?;
                    consumer.flush()?;
                }
                _ = tick.tick() => {
                    // `sockmem trace | head -1` with nothing to print: notice the reader left.
                    if self.watch_stdout && session::stdout_reader_gone() {
                        return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
                    }
                    let total: u64 = losses.per_cpu().map(|v| v.iter().sum()).unwrap_or(0);
                    if total > lost_seen {
                        eprintln!(
                            "sockmem: lost {} events (ring buffer full, {total} so far); a larger --ring-size or narrower filters help",
                            total - lost_seen
                        );
                        lost_seen = total;
                    }
                }
            }
        }
        session.set_running(false)?;
        session.finish_debug_log().await;
        while drain(stream, consumer)? > 0 {
            consumer.flush()?;
        }
        Ok(())
    }
}
