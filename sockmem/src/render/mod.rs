//! Sinks: where decoded events go. Each writes to any `io::Write`, so tests render into a
//! `Vec<u8>`.

use std::io;

use crate::pipeline::{decode::Event, track::Deltas};

pub mod hist;
pub mod json;
pub mod text;

/// One hook as set up at start.
#[derive(Clone, Debug)]
pub struct HookLine {
    pub hook: &'static str,
    pub backend: String,
    pub attach: String,
    /// `None` when attached, else why not.
    pub unavailable: Option<String>,
}

/// What the run looks like, for the header.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub kernel: String,
    pub ring_size: u32,
    pub hooks: Vec<HookLine>,
}

/// Totals printed at exit.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub lost: u64,
    pub lost_per_cpu: Vec<u64>,
    pub sockets: usize,
    pub elapsed_s: f64,
}

pub trait Sink {
    fn header(&mut self, info: &RunInfo) -> io::Result<()>;
    /// `time_s` is seconds since tracing started.
    fn event(&mut self, e: &Event, d: Deltas, time_s: f64) -> io::Result<()>;
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// The hook-specific part of an event in words, e.g. `ret=65536 took=1.2ms`.
pub fn describe(e: &Event) -> String {
    use sockmem_common::Hook::*;
    match e.hook {
        TcpSendmsg if e.send_start => format!("start left={}", e.value),
        TcpSendmsg => format!("left={}", e.value),
        SendmsgReturn if e.duration_ns > 0 => {
            format!("ret={} took={}", e.value, human_ns(e.duration_ns))
        }
        SendmsgReturn => format!("ret={}", e.value),
        DriverDone => format!("rc={} in_driver={}", e.value, human_ns(e.duration_ns)),
        SkbFree => format!(
            "{} after={}",
            if e.value != 0 { "charged" } else { "orphaned" },
            human_ns(e.duration_ns)
        ),
        SkbDrop => format!("reason={} after={}", e.value, human_ns(e.duration_ns)),
        WmemRelease if e.tsq_reference => "tsq reference dropped".to_owned(),
        _ => String::new(),
    }
}

/// A duration with a unit that keeps 3 significant digits or so.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.1}us", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_ns(512), "512ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(45_600_000), "45.6ms");
        assert_eq!(human_ns(12_000_000_000), "12.00s");
    }
}
