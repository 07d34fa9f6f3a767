//! How an event's time is shown (`trace --time`, `report`): seconds since the start, the wall
//! clock (UTC, ISO 8601 with microseconds) from a CLOCK_REALTIME/CLOCK_MONOTONIC anchor, or the
//! raw CLOCK_MONOTONIC nanoseconds the programs stamp.

use crate::{cli::TimeMode, recording::format::ClockAnchor};

/// The time mode and the anchor it is computed from (time 0 is `anchor.monotonic_ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub mode: TimeMode,
    pub anchor: ClockAnchor,
}

impl Clock {
    /// Wall-clock ns since the epoch of a CLOCK_MONOTONIC instant.
    pub fn wall_ns(&self, ts_ns: u64) -> u64 {
        let a = self.anchor;
        (a.realtime_ns as i128 + ts_ns as i128 - a.monotonic_ns as i128).max(0) as u64
    }

    /// The CLOCK_MONOTONIC instant `time_s` seconds after time 0.
    pub fn mono_ns(&self, time_s: f64) -> u64 {
        self.anchor
            .monotonic_ns
            .saturating_add((time_s * 1e9).round().max(0.0) as u64)
    }

    /// The time column's title and width in `trace`'s text.
    pub fn column(mode: TimeMode) -> (&'static str, usize) {
        match mode {
            TimeMode::Rel => ("TIME(s)", 11),
            TimeMode::Wall => ("TIME(UTC)", WALL_LEN),
            TimeMode::Mono => ("TIME(ns)", 16),
        }
    }
}

/// `2026-12-01T02:40:12.123456Z`.
pub const WALL_LEN: usize = 27;

/// (year, month, day) of a day number counted from 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe as i64 + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Wall-clock ns since the epoch as ISO 8601 in UTC with microseconds (rounded), into `out`.
pub fn write_wall(out: &mut Vec<u8>, wall_ns: u64) {
    let us = wall_ns.saturating_add(500) / 1000;
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:06}Z"
    );
}

/// [`write_wall`] as a string.
pub fn wall(wall_ns: u64) -> String {
    let mut v = Vec::with_capacity(WALL_LEN);
    write_wall(&mut v, wall_ns);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_iso_8601_utc_with_microseconds() {
        assert_eq!(wall(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-01 02:40:12.1234565 UTC, rounded to the microsecond.
        assert_eq!(
            wall(1_796_092_812_123_456_500),
            "2026-12-01T02:40:12.123457Z"
        );
        // A leap day, and the last microsecond of a year.
        assert_eq!(wall(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(
            wall(1_704_067_199_999_999_000),
            "2023-12-31T23:59:59.999999Z"
        );
        assert_eq!(wall(1_796_092_812_000_000_000).len(), WALL_LEN);
    }

    #[test]
    fn wall_and_mono_from_the_anchor() {
        let c = Clock {
            mode: TimeMode::Wall,
            anchor: ClockAnchor {
                realtime_ns: 1_000_000_000_000,
                monotonic_ns: 5_000_000_000,
            },
        };
        assert_eq!(c.wall_ns(5_000_000_000), 1_000_000_000_000);
        assert_eq!(c.wall_ns(6_500_000_000), 1_001_500_000_000);
        assert_eq!(
            c.wall_ns(4_000_000_000),
            999_000_000_000,
            "before the anchor"
        );
        assert_eq!(c.mono_ns(1.5), 6_500_000_000);
    }
}
