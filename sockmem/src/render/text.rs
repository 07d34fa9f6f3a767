//! Aligned text, one line per event (the default).

use std::{
    io::{self, Write},
    net::SocketAddr,
};

use super::{
    time::{write_wall, Clock},
    write_info, write_ip, Finish, RunInfo, Sink, Summary,
};
use crate::cli::TimeMode;
use crate::pipeline::{
    decode::{Event, Owner},
    snapshot::Snapshot,
    track::{Deltas, SocketState},
};

pub struct TextSink<W: Write> {
    out: W,
    /// Reused for each event line, so an event costs no allocation.
    line: Vec<u8>,
    cell: String,
    /// `--time wall|mono`; `None`: seconds since the start.
    clock: Option<Clock>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> Self {
        TextSink {
            out,
            line: Vec::with_capacity(512),
            cell: String::with_capacity(128),
            clock: None,
        }
    }

    /// Times as `clock.mode` says (`trace --time`).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock).filter(|c| c.mode != TimeMode::Rel);
        self
    }

    fn mode(&self) -> TimeMode {
        self.clock.map(|c| c.mode).unwrap_or_default()
    }
}

/// The time cell of an event at `ts_ns` (`time_s` after the start).
fn time_cell(l: &mut Vec<u8>, clock: Option<Clock>, ts_ns: u64, time_s: f64) {
    let mode = clock.map(|c| c.mode).unwrap_or_default();
    let (_, width) = Clock::column(mode);
    match clock {
        Some(c) if mode == TimeMode::Wall => {
            cell(l, width, Left, |l| write_wall(l, c.wall_ns(ts_ns)))
        }
        Some(_) if mode == TimeMode::Mono => cell(l, width, Right, |l| int(l, ts_ns)),
        _ => {
            // `{:>11.6}`: microseconds, rounded.
            let us = (time_s * 1e6).round() as u64;
            cell(l, width, Right, |l| {
                int(l, us / 1_000_000);
                l.push(b'.');
                let frac = us % 1_000_000;
                let digits = itoa::Buffer::new().format(frac).len();
                l.extend(std::iter::repeat_n(b'0', 6 - digits));
                int(l, frac);
            });
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// What `f` writes, padded to `width` columns as `{:<width$}`/`{:>width$}` would, and the space
/// after it.
fn cell(l: &mut Vec<u8>, width: usize, align: Align, f: impl FnOnce(&mut Vec<u8>)) {
    let start = l.len();
    f(l);
    // Columns are characters: count the bytes that start one.
    let n = l[start..].iter().filter(|&&b| b & 0xC0 != 0x80).count();
    if n < width {
        let pad = width - n;
        l.resize(l.len() + pad, b' ');
        if align == Right {
            l[start..].rotate_right(pad);
        }
    }
    l.push(b' ');
}

fn int(l: &mut Vec<u8>, v: impl itoa::Integer) {
    l.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// As `SocketAddr`'s `Display` writes it (sockmem's addresses have no IPv6 scope).
fn socket_addr(l: &mut Vec<u8>, a: SocketAddr) {
    if a.is_ipv6() {
        l.push(b'[');
    }
    // Writing to a Vec cannot fail.
    let _ = write_ip(l, a.ip());
    l.extend_from_slice(if a.is_ipv6() { b"]:" } else { b":" });
    int(l, a.port());
}

/// How many sockets the text exit table lists.
const SOCKET_ROWS: usize = 50;

/// PID and COMM columns for a socket: its last `sendmsg` caller, or `-`.
fn sender_columns(st: &SocketState) -> (String, String) {
    match &st.id.sender {
        Some((tgid, comm)) => (tgid.to_string(), comm.to_string()),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

fn with_delta(value: i32, delta: i64) -> String {
    format!("{value}({delta:+})")
}

impl<W: Finish> Sink for TextSink<W> {
    // The header uses the event line's widths with literal titles, so columns line up.
    #[allow(clippy::write_literal)]
    fn header(&mut self, _info: &RunInfo) -> io::Result<()> {
        let (title, width) = Clock::column(self.mode());
        let title = match self.mode() {
            TimeMode::Wall => format!("{title:<width$}"),
            _ => format!("{title:>width$}"),
        };
        writeln!(
            self.out,
            "{} {:>3} {:>7} {:<15} {:<14} {:<5} {:<21} {:<21} {:>16} {:>14} {:>8} {:>6} {:<10} {}",
            title,
            "CPU",
            "PID",
            "COMM",
            "HOOK",
            "PROTO",
            "LOCAL",
            "REMOTE",
            "QUEUED(Δ)",
            "ALLOC(Δ)",
            "SNDBUF",
            "LEN",
            "IFACE",
            "INFO"
        )
    }

    fn event(&mut self, e: &Event, d: Deltas, time_s: f64) -> io::Result<()> {
        // The header's widths, one cell at a time, each padded by hand: through `write!` and
        // `{:>16}` the line cost more than everything else sockmem does with an event.
        let l = &mut self.line;
        l.clear();
        time_cell(l, self.clock, e.ts_ns, time_s);
        cell(l, 3, Right, |l| int(l, e.cpu));
        // In softirq before the socket's first `sendmsg`: no process to name.
        match e.owner {
            Owner::Unknown => {
                cell(l, 7, Right, |l| l.push(b'-'));
                cell(l, 15, Left, |l| l.push(b'-'));
            }
            _ => {
                cell(l, 7, Right, |l| int(l, e.tgid));
                cell(l, 15, Left, |l| l.extend_from_slice(e.comm.as_bytes()));
            }
        }
        cell(l, 14, Left, |l| {
            l.extend_from_slice(e.hook.name().as_bytes())
        });
        cell(l, 5, Left, |l| {
            l.extend_from_slice(e.protocol.name().as_bytes())
        });
        cell(l, 21, Left, |l| socket_addr(l, e.local));
        cell(l, 21, Left, |l| socket_addr(l, e.remote));
        for (value, delta, width) in [
            (e.wmem_queued, d.wmem_queued, 16),
            (e.wmem_alloc, d.wmem_alloc, 14),
        ] {
            cell(l, width, Right, |l| {
                if e.freed {
                    l.push(b'-');
                } else {
                    int(l, value);
                    l.extend_from_slice(if delta < 0 { b"(" } else { b"(+" });
                    int(l, delta);
                    l.push(b')');
                }
            });
        }
        cell(l, 8, Right, |l| match e.freed {
            true => l.push(b'-'),
            false => int(l, e.sndbuf),
        });
        match &e.skb {
            Some(s) => {
                cell(l, 6, Right, |l| int(l, s.len));
                cell(l, 10, Left, |l| match s.iface.is_empty() {
                    true => l.push(b'-'),
                    false => l.extend_from_slice(s.iface.as_bytes()),
                });
            }
            None => {
                cell(l, 6, Right, |l| l.push(b'-'));
                cell(l, 10, Left, |l| l.push(b'-'));
            }
        }
        self.cell.clear();
        write_info(&mut self.cell, e).map_err(io::Error::other)?;
        l.extend_from_slice(self.cell.as_bytes());
        // Where the bytes belong, last: the sender's cgroup and the socket's namespace.
        if !self.cell.is_empty() {
            l.push(b' ');
        }
        l.extend_from_slice(b"cg=");
        match e.cgroup_name() {
            Some(c) => l.extend_from_slice(c.as_bytes()),
            None => l.push(b'-'),
        }
        l.extend_from_slice(b" ns=");
        match e.netns_name() {
            Some(n) => l.extend_from_slice(n.as_bytes()),
            None => l.push(b'-'),
        }
        l.push(b'\n');
        self.out.write_all(l)
    }

    fn snapshot(&mut self, s: &Snapshot, st: &SocketState, time_s: f64) -> io::Result<()> {
        let k = &s.kernel;
        let (tgid, comm) = sender_columns(st);
        let (last_q, last_a) = s.last.unwrap_or((0, 0));
        let mut info = format!("{} {} ss:", s.agreement.word(), k.state_name());
        for (name, v) in [
            ("r", k.rmem_alloc),
            ("rb", k.rcvbuf),
            ("f", k.fwd_alloc),
            ("d", k.drops),
        ] {
            info.push_str(&format!(" {name}={v}"));
        }
        if let Some(note) = s.agreement.note() {
            info.push_str(&format!(": {note}"));
        }
        let mut time = Vec::new();
        let ts_ns = self.clock.map(|c| c.mono_ns(time_s)).unwrap_or_default();
        time_cell(&mut time, self.clock, ts_ns, time_s);
        writeln!(
            self.out,
            "{}{:>3} {:>7} {:<15} {:<14} {:<5} {:<21} {:<21} {:>16} {:>14} {:>8} {:>6} {:<10} {}",
            String::from_utf8_lossy(&time),
            "-",
            tgid,
            comm,
            "snapshot",
            st.id.protocol.name(),
            st.id.local.to_string(),
            st.id.remote.to_string(),
            with_delta(k.wmem_queued as i32, k.wmem_queued as i64 - last_q as i64),
            with_delta(k.wmem_alloc as i32, k.wmem_alloc as i64 - last_a as i64),
            k.sndbuf,
            "-",
            "-",
            info,
        )
    }

    fn sockets(&mut self, table: &[(&SocketState, Option<&Snapshot>)]) -> io::Result<()> {
        if table.is_empty() {
            return Ok(());
        }
        writeln!(self.out)?;
        writeln!(
            self.out,
            "{:>8} {:>9} {:>7} {:<15} {:<5} {:<21} {:<21} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} SNAPSHOT",
            "SOCK", "INO", "PID", "COMM", "PROTO", "LOCAL", "REMOTE", "EVENTS", "QUEUED", "MAX_Q",
            "ALLOC", "MAX_A", "SNDBUF"
        )?;
        // The busiest first; a run over many short connections lists the rest in --json.
        let mut rows: Vec<&(&SocketState, Option<&Snapshot>)> = table.iter().collect();
        rows.sort_by_key(|(s, _)| std::cmp::Reverse((s.max_queued.max(s.max_alloc), s.events)));
        for (st, snap) in rows.iter().take(SOCKET_ROWS) {
            let (tgid, comm) = sender_columns(st);
            let (q, a) = st
                .last
                .map(|(q, a)| (q.to_string(), a.to_string()))
                .unwrap_or(("-".into(), "-".into()));
            let snapshot = match snap {
                Some(s) => format!(
                    "w={} t={} {} {}",
                    s.kernel.wmem_queued,
                    s.kernel.wmem_alloc,
                    s.kernel.state_name(),
                    s.agreement.word()
                ),
                None if st.destroyed => "destroyed".to_owned(),
                None => "-".to_owned(),
            };
            writeln!(
                self.out,
                "{:>8} {:>9} {:>7} {:<15} {:<5} {:<21} {:<21} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {}",
                st.id.sock_id,
                st.id.ino,
                tgid,
                comm,
                st.id.protocol.name(),
                st.id.local.to_string(),
                st.id.remote.to_string(),
                st.events,
                q,
                st.max_queued,
                a,
                st.max_alloc,
                st.sndbuf,
                snapshot
            )?;
        }
        if rows.len() > SOCKET_ROWS {
            writeln!(
                self.out,
                "({} more sockets; --json lists every one)",
                rows.len() - SOCKET_ROWS
            )?;
        }
        Ok(())
    }

    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        // The text summary line goes to stderr (see `trace`).
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::tests::raw_event;
    use sockmem_common::{event::FLAG_HAS_SKB, Hook};

    /// The event line as `format!` with the header's widths writes it: what `event` must equal.
    fn reference_line(e: &Event, d: Deltas, time_s: f64) -> String {
        let (len, iface) = match &e.skb {
            Some(s) => (
                s.len.to_string(),
                if s.iface.is_empty() {
                    "-".to_owned()
                } else {
                    s.iface.to_string()
                },
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let counter = |value: i32, delta: i64| match e.freed {
            true => "-".to_owned(),
            false => with_delta(value, delta),
        };
        // In softirq before the socket's first `sendmsg`: no process to name.
        let (tgid, comm) = match e.owner {
            Owner::Unknown => ("-".to_owned(), "-"),
            _ => (e.tgid.to_string(), e.comm.as_str()),
        };
        format!(
            "{:>11.6} {:>3} {:>7} {:<15} {:<14} {:<5} {:<21} {:<21} {:>16} {:>14} {:>8} {:>6} {:<10} {}",
            time_s,
            e.cpu,
            tgid,
            comm,
            e.hook.name(),
            e.protocol.name(),
            e.local.to_string(),
            e.remote.to_string(),
            counter(e.wmem_queued, d.wmem_queued),
            counter(e.wmem_alloc, d.wmem_alloc),
            if e.freed { "-".to_owned() } else { e.sndbuf.to_string() },
            len,
            iface,
            super::super::describe(e),
        ) + &attribution_suffix(e)
    }

    /// What follows INFO: ` cg=PATH ns=NAME` (` ` only after a nonempty INFO).
    fn attribution_suffix(e: &Event) -> String {
        let info = super::super::describe(e);
        let cg = e.cgroup_name().map(|c| c.into_owned());
        let ns = e.netns_name().map(|n| n.into_owned());
        format!(
            "{}cg={} ns={}",
            if info.is_empty() { "" } else { " " },
            cg.as_deref().unwrap_or("-"),
            ns.as_deref().unwrap_or("-"),
        )
    }

    #[test]
    fn event_lines_equal_the_formatted_reference() {
        use sockmem_common::event::{FLAG_OWNER_UNKNOWN, FLAG_SOCK_FREED};
        let mut cases = Vec::new();
        for hook in [Hook::SendmsgReturn, Hook::SkbFree, Hook::TcpSendmsg] {
            for flags in [
                0,
                FLAG_HAS_SKB,
                FLAG_HAS_SKB | FLAG_SOCK_FREED,
                FLAG_OWNER_UNKNOWN,
            ] {
                let mut raw = raw_event(hook);
                raw.flags = flags;
                raw.skb_len = 1448;
                raw.value = -11;
                raw.duration_ns = 12_345;
                cases.push(raw);
                raw.ifname[..4].copy_from_slice(b"eth0");
                raw.comm[..3].copy_from_slice(b"\xff\xfeA");
                cases.push(raw);
                raw.family = libc::AF_INET6 as u16;
                raw.laddr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
                raw.raddr = "::ffff:10.0.0.1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets();
                raw.wmem_alloc = -3;
                cases.push(raw);
                raw.cgroup_id = 4242;
                raw.netns_ino = 4026531840;
                cases.push(raw);
            }
        }
        for (i, raw) in cases.iter().enumerate() {
            let mut e = Event::from_raw(raw).unwrap();
            if i % 2 == 0 && e.cgroup_id != 0 {
                e.cgroup = Some("/a/b c".into());
                e.netns = Some("blue".into());
            }
            for time_s in [0.0, 1.234_567_4, 0.000_000_6, 12_345.5, 1e6 + 0.25] {
                let d = Deltas {
                    wmem_queued: -5,
                    wmem_alloc: 7,
                };
                let mut buf = Vec::new();
                TextSink::new(&mut buf).event(&e, d, time_s).unwrap();
                let want = reference_line(&e, d, time_s) + "\n";
                assert_eq!(String::from_utf8(buf).unwrap(), want);
            }
        }
    }

    #[test]
    fn one_aligned_line_per_event() {
        let mut buf = Vec::new();
        let mut sink = TextSink::new(&mut buf);
        sink.header(&RunInfo::default()).unwrap();
        let mut raw = raw_event(Hook::QdiscEnqueue);
        raw.flags = FLAG_HAS_SKB;
        raw.skb_len = 1448;
        raw.ifname[..5].copy_from_slice(b"veth0");
        let e = Event::from_raw(&raw).unwrap();
        let d = Deltas {
            wmem_queued: 0,
            wmem_alloc: 4608,
        };
        sink.event(&e, d, 0.25).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("    TIME(s) CPU     PID COMM"),
            "{}",
            lines[0]
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "0.250000",
                "0",
                "100",
                "sender",
                "qdisc_enqueue",
                "tcp",
                "198.18.0.1:40000",
                "198.18.0.2:5201",
                "65536(+0)",
                "4608(+4608)",
                "87040",
                "1448",
                "veth0",
                "cg=-",
                "ns=-"
            ]
        );
        // The QUEUED column ends at the same place on both lines.
        let end = |l: &str, pat: &str| l.find(pat).unwrap() + pat.len();
        assert_eq!(
            end(lines[0], "QUEUED(Δ)") - "Δ".len() + 1,
            end(lines[1], "65536(+0)")
        );
    }

    #[test]
    fn wall_and_monotonic_time_columns() {
        use crate::{recording::format::ClockAnchor, render::time::Clock};
        let mut raw = raw_event(Hook::TcpAck);
        raw.ts_ns = 7_250_000_000;
        let e = Event::from_raw(&raw).unwrap();
        let anchor = ClockAnchor {
            realtime_ns: 1_796_092_812_000_000_000,
            monotonic_ns: 7_000_000_000,
        };
        for (mode, title, time) in [
            (TimeMode::Wall, "TIME(UTC)", "2026-12-01T02:40:12.250000Z"),
            (TimeMode::Mono, "TIME(ns)", "7250000000"),
            (TimeMode::Rel, "TIME(s)", "0.250000"),
        ] {
            let mut buf = Vec::new();
            let mut sink = TextSink::new(&mut buf).with_clock(Clock { mode, anchor });
            sink.header(&RunInfo::default()).unwrap();
            sink.event(&e, Deltas::default(), 0.25).unwrap();
            let text = String::from_utf8(buf).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[0].split_whitespace().next(), Some(title), "{text}");
            assert_eq!(lines[1].split_whitespace().next(), Some(time), "{text}");
            // The CPU column ends at the same place on both lines.
            let cpu_end = lines[0].find("CPU").unwrap() + 3;
            assert_eq!(&lines[1][cpu_end - 1..cpu_end], "0", "{text}");
        }
    }
}
