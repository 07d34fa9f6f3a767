//! Sinks: where decoded events go. Each writes to any `io::Write`, so tests render into a
//! `Vec<u8>`.

use std::{
    collections::BTreeMap,
    fmt,
    io::{self, Write as _},
    net::IpAddr,
};

use sockmem_common::{registry::Field, Hook};

use crate::attach::stats::HookCost;
use crate::pipeline::{
    decode::Event,
    snapshot::Snapshot,
    track::{Deltas, SocketState},
};

pub mod background;
pub mod bitmap;
pub mod hist;
pub mod json;
pub mod metrics;
pub mod metrics_proto;
pub mod perfetto;
pub mod plot;
pub mod report;
pub mod text;
pub mod time;
pub mod top;
pub mod why;

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
    /// Programs the kernel did not run (one already running on that CPU), per hook:
    /// `attach::stats::missed`; `None` where not known (a replay: recordings do not keep it; a
    /// count that could not be read).
    pub missed_per_hook: Option<BTreeMap<String, u64>>,
    /// Sockets seen, destroyed ones included.
    pub sockets: u64,
    pub elapsed_s: f64,
    /// `--stats`: the programs' cost per hook.
    pub bpf_stats: Option<Vec<HookCost>>,
}

/// The end of the exit line's loss count: the hooks whose programs the kernel did not run
/// (another was running on that CPU), which lose events as surely as a full ring; empty when
/// none was skipped.
pub fn missed_note(per_hook: Option<&BTreeMap<String, u64>>) -> String {
    match missed_runs(per_hook) {
        Some((total, hooks)) => format!(
            ", {total} not run by the kernel ({hooks}: a program was already running on that CPU)"
        ),
        None => String::new(),
    }
}

/// The runs the kernel skipped in all, and per hook as `hook n, hook n`; `None` when none was
/// (or it is not known).
pub fn missed_runs(per_hook: Option<&BTreeMap<String, u64>>) -> Option<(u64, String)> {
    let per_hook = per_hook.filter(|m| !m.is_empty())?;
    let hooks: Vec<String> = per_hook.iter().map(|(h, n)| format!("{h} {n}")).collect();
    Some((per_hook.values().sum(), hooks.join(", ")))
}

/// An output that needs a last step once everything is written (a file is put in place).
pub trait Finish: io::Write {
    fn finish(self) -> io::Result<()>;
}

impl Finish for &mut Vec<u8> {
    fn finish(self) -> io::Result<()> {
        Ok(())
    }
}

pub trait Sink {
    fn header(&mut self, info: &RunInfo) -> io::Result<()>;
    /// `time_s` is seconds since tracing started.
    fn event(&mut self, e: &Event, d: Deltas, time_s: f64) -> io::Result<()>;
    /// The kernel's own view of a traced socket (`--snapshot`, and at exit).
    fn snapshot(&mut self, s: &Snapshot, st: &SocketState, time_s: f64) -> io::Result<()>;
    /// At exit: every socket seen, with its last snapshot where there is one.
    fn sockets(&mut self, table: &[(&SocketState, Option<&Snapshot>)]) -> io::Result<()>;
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Flushes and completes the output (see [`Finish`]).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// `trace`'s sink, live or replaying: JSON lines or text, times as `clock` says.
pub fn trace_sink<W: Finish + 'static>(
    out: W,
    json: bool,
    kernel_addrs: bool,
    clock: time::Clock,
) -> Box<dyn Sink> {
    if json {
        Box::new(json::JsonSink::new(out, kernel_addrs).with_clock(clock))
    } else {
        Box::new(text::TextSink::new(out).with_clock(clock))
    }
}

/// The hook-specific part of an event in words, e.g. `ret=65536 took=1.2ms`: the fields the
/// hook's registry entry names, with their names.
#[cfg(test)]
pub fn describe(e: &Event) -> String {
    let mut s = String::new();
    let _ = write_info(&mut s, e);
    s
}

/// [`describe`] into `out`: the sinks reuse one buffer for it, so no allocation per event.
pub fn write_info<W: fmt::Write>(out: &mut W, e: &Event) -> fmt::Result {
    if e.tsq_reference {
        return out.write_str("tsq reference dropped");
    }
    let spec = e.hook.spec();
    let mut w = Words { out, first: true };
    if e.send_start {
        w.next()?.write_str("start")?;
    }
    w.field(spec.value, e.value, |o| match &e.value_name {
        Some(name) => o.write_str(name),
        None => write!(o, "{}", e.value),
    })?;
    if let Some(at) = &e.location {
        write!(w.next()?, "at={at}")?;
    }
    if e.hook == Hook::SockExceedBufLimit {
        // `aux`: the protocol's pages in use when it refused.
        write!(w.next()?, "allocated={}", e.aux)?;
    }
    w.field(spec.duration, e.duration_ns as i64, |o| {
        write_human_ns(o, e.duration_ns)
    })
}

/// Space-separated words.
struct Words<'a, W> {
    out: &'a mut W,
    first: bool,
}

impl<W: fmt::Write> Words<'_, W> {
    fn next(&mut self) -> Result<&mut W, fmt::Error> {
        if !self.first {
            self.out.write_char(' ')?;
        }
        self.first = false;
        Ok(self.out)
    }

    fn field(
        &mut self,
        f: Field,
        raw: i64,
        shown: impl FnOnce(&mut W) -> fmt::Result,
    ) -> fmt::Result {
        match f {
            Field::Hidden => Ok(()),
            Field::NamedIfNonzero(_) if raw == 0 => Ok(()),
            Field::Named(name) | Field::NamedIfNonzero(name) | Field::Enum(name, ..) => {
                let o = self.next()?;
                o.write_str(name)?;
                o.write_char('=')?;
                shown(o)
            }
            Field::Choice(nonzero, zero) => {
                self.next()?
                    .write_str(if raw != 0 { nonzero } else { zero })
            }
        }
    }
}

/// An address as `Display` writes it; IPv4 (the common case) without the formatting machinery,
/// which cost more than the rest of the event line.
pub fn write_ip(l: &mut Vec<u8>, ip: IpAddr) -> io::Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    l.push(b'.');
                }
                if octet >= 100 {
                    l.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    l.push(b'0' + octet / 10 % 10);
                }
                l.push(b'0' + octet % 10);
            }
            Ok(())
        }
        IpAddr::V6(_) => write!(l, "{ip}"),
    }
}

/// The units of byte sizes in every human-readable output: IEC binary ones, because socket
/// buffers, truesizes and ring sizes are powers of two (a 64 KiB skb reads `64KiB`, not
/// `65.5 kB`). JSON keeps the raw integers.
const BYTE_UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];

/// A byte size with the unit that suits it: `512B`, `1.5KiB`, `64KiB`, `2MiB`, `-40KiB`. Whole
/// numbers of a unit are shown without a fraction, others to a tenth.
pub fn human_bytes(v: f64) -> String {
    // As shown: bytes whole, larger units to a tenth; `1023.97KiB` would read as `1024.0KiB`.
    let shown = |n: f64, power: usize| match power {
        0 => n.round(),
        _ => (n * 10.0).round() / 10.0,
    };
    let mut power = 0;
    while power + 1 < BYTE_UNITS.len() && shown(v.abs() / unit_bytes(power), power) >= 1024.0 {
        power += 1;
    }
    let n = shown(v / unit_bytes(power), power);
    if n.fract() == 0.0 {
        format!("{n:.0}{}", BYTE_UNITS[power])
    } else {
        format!("{n:.1}{}", BYTE_UNITS[power])
    }
}

/// A byte size in a given unit (0 B, 1 KiB, 2 MiB, 3 GiB), to a hundredth at most: the ticks
/// of a plot's axis, which share one unit so that `1500KiB` does not read as a rounded
/// `1.5MiB` beside `1000KiB`.
pub fn bytes_in_unit(v: f64, power: usize) -> String {
    let power = power.min(BYTE_UNITS.len() - 1);
    let text = format!("{:.2}", v / unit_bytes(power));
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "0" | "-0" => "0B".to_owned(),
        t => format!("{t}{}", BYTE_UNITS[power]),
    }
}

/// Bytes in the `power`th of [`BYTE_UNITS`].
pub fn unit_bytes(power: usize) -> f64 {
    (1u64 << (10 * power)) as f64
}

/// A duration in the largest unit it has one of (`641ns`, `147.2us`, `9.6ms`, `2.50s`): the
/// one duration format of the human-readable outputs (trace, top, why), so that a value reads
/// in the same unit wherever and whenever it is shown.
pub fn human_ns(ns: u64) -> String {
    let mut s = String::new();
    let _ = write_human_ns(&mut s, ns);
    s
}

fn write_human_ns<W: fmt::Write>(out: &mut W, ns: u64) -> fmt::Result {
    // Compared as shown (to a tenth): 999.96us would read `1000.0us`, so it is `1.0ms`.
    let below_1000 = |v: f64| (v * 10.0).round() < 10_000.0;
    let (us, ms) = (ns as f64 / 1e3, ns as f64 / 1e6);
    if ns < 1_000 {
        write!(out, "{ns}ns")
    } else if below_1000(us) {
        write!(out, "{us:.1}us")
    } else if below_1000(ms) {
        write!(out, "{ms:.1}ms")
    } else {
        write!(out, "{:.2}s", ns as f64 / 1e9)
    }
}

/// [`human_ns`] of microseconds (the unit `why`'s report keeps its times in).
pub fn human_us(us: f64) -> String {
    human_ns((us * 1e3).round().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_in_iec_units() {
        assert_eq!(human_bytes(0.0), "0B");
        assert_eq!(human_bytes(952.4), "952B");
        assert_eq!(human_bytes(1023.6), "1KiB");
        assert_eq!(human_bytes(1536.0), "1.5KiB");
        assert_eq!(human_bytes(65536.0), "64KiB");
        assert_eq!(human_bytes(-40960.0), "-40KiB");
        assert_eq!(human_bytes(1_048_570.0), "1MiB");
        assert_eq!(human_bytes(4.0 * 1024.0 * 1024.0), "4MiB");
        assert_eq!(human_bytes(3.0 * (1u64 << 30) as f64), "3GiB");
        assert_eq!(human_bytes(5.0 * (1u64 << 40) as f64), "5120GiB");
        assert_eq!(bytes_in_unit(1500.0 * 1024.0, 1), "1500KiB");
        assert_eq!(bytes_in_unit(97.5 * 1024.0, 1), "97.5KiB");
        assert_eq!(bytes_in_unit(2.5 * 1024.0 * 1024.0, 2), "2.5MiB");
        assert_eq!(bytes_in_unit(200.0, 0), "200B");
        assert_eq!(bytes_in_unit(0.0, 2), "0B");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(0), "0ns");
        assert_eq!(human_ns(512), "512ns");
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(1_000), "1.0us");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(999_940), "999.9us");
        // The unit switches at one of it, as shown: no `1000.0us`, no `9637.6us`.
        assert_eq!(human_ns(999_960), "1.0ms");
        assert_eq!(human_ns(9_637_600), "9.6ms");
        assert_eq!(human_ns(12_100_000), "12.1ms");
        assert_eq!(human_ns(45_600_000), "45.6ms");
        assert_eq!(human_ns(211_635_800), "211.6ms");
        assert_eq!(human_ns(999_960_000), "1.00s");
        assert_eq!(human_ns(12_000_000_000), "12.00s");
        assert_eq!(human_us(7625.0), "7.6ms");
        assert_eq!(human_us(9590.0), "9.6ms");
        assert_eq!(human_us(641.26), "641.3us");
        assert_eq!(human_us(0.4), "400ns");
        assert_eq!(human_us(0.0), "0ns");
    }

    #[test]
    fn info_text_names_the_fields_the_registry_declares() {
        use sockmem_common::{
            event::{FLAG_SEND_START, FLAG_TSQ_REFERENCE},
            Hook,
        };

        use crate::pipeline::decode::tests::raw_event;
        let info = |hook: Hook, value: i64, duration_ns: u64, flags: u8| {
            let mut raw = raw_event(hook);
            (raw.value, raw.duration_ns, raw.flags) = (value, duration_ns, flags);
            describe(&Event::from_raw(&raw).expect("a valid record"))
        };
        let cases = [
            (
                info(Hook::TcpSendmsg, 65536, 0, FLAG_SEND_START),
                "start left=65536",
            ),
            (info(Hook::TcpSendmsg, 1000, 0, 0), "left=1000"),
            (
                info(Hook::SendmsgReturn, 65536, 147_200, 0),
                "ret=65536 took=147.2us",
            ),
            (info(Hook::SendmsgReturn, -11, 0, 0), "ret=-11"),
            (
                info(Hook::SendBlocked, 2, 25_000_000, 0),
                "sleeps=2 took=25.0ms",
            ),
            (info(Hook::DriverDone, 0, 641, 0), "rc=0 in_driver=641ns"),
            (info(Hook::SkbFree, 1, 12_200, 0), "charged after=12.2us"),
            (info(Hook::SkbFree, 0, 12_200, 0), "orphaned after=12.2us"),
            (info(Hook::SkbDrop, 2, 900, 0), "reason=2 after=900ns"),
            (info(Hook::QdiscEnqueue, 0, 0, 0), ""),
            (info(Hook::WmemRelease, -2304, 0, 0), ""),
            (
                info(Hook::WmemRelease, 0, 0, FLAG_TSQ_REFERENCE),
                "tsq reference dropped",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
