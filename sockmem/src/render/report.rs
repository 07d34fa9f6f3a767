//! `report`'s output: an aligned table (busiest first) with a title that says what the recording
//! was, or one JSON document; `--hist` through `hist`'s own renderer.

use std::io::{self, Write};

use serde::Serialize;

use super::{
    hist::{human, json_parts, write_text},
    time::{wall, Clock},
};
use crate::{
    cli::{GroupBy, TimeMode},
    pipeline::{
        histogram::Unit,
        report::{Row, Summary},
    },
    recording::format::{ClockAnchor, Header, RecordedFilters, Trailer},
};

/// What the report is of.
pub struct Context<'a> {
    pub file: &'a str,
    pub header: &'a Header,
    pub trailer: &'a Trailer,
    pub group_by: GroupBy,
    /// The filters applied to the recorded events here.
    pub filters: RecordedFilters,
    /// Events the filters passed.
    pub events: u64,
}

impl Context<'_> {
    fn lost(&self) -> u64 {
        self.trailer.lost_per_cpu.iter().sum()
    }

    fn clock(&self) -> Clock {
        Clock {
            mode: TimeMode::Wall,
            anchor: self.header.anchor,
        }
    }

    fn warning(&self) -> Option<String> {
        let lost = self.lost();
        if self.trailer.truncated {
            return Some(
                "the recording is truncated (its `record` was killed): read up to where it \
                 ends; events lost to a full ring buffer are not known, so every figure here \
                 may undercount"
                    .to_owned(),
            );
        }
        (lost > 0).then(|| {
            format!(
                "the recording lost {lost} events (its ring buffer was full): every figure \
                 here undercounts"
            )
        })
    }
}

/// `02:40:12.123456`: the time of day of an instant (UTC; the title has the date).
fn time_of_day(c: &Clock, ts_ns: u64) -> String {
    wall(c.wall_ns(ts_ns))[11..26].to_owned()
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

/// Cells of a table, padded to the widest in each column: text left, numbers right.
fn write_table(out: &mut impl Write, rows: &[Vec<String>], left: &[bool]) -> io::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            if c + 1 == cols && left[c] {
                line.push_str(cell);
            } else if left[c] {
                line.push_str(&format!("{cell:<w$} "));
            } else {
                line.push_str(&format!("{cell:>w$} "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub fn write_report_text(out: &mut impl Write, ctx: &Context, s: &Summary) -> io::Result<()> {
    let h = ctx.header;
    let clock = ctx.clock();
    writeln!(
        out,
        "sockmem report of `{}`: {:.1} s recorded from {} with sockmem {} on kernel {}; {} of {} \
         events, {} sockets",
        ctx.file,
        ctx.trailer.elapsed_s,
        wall(h.anchor.realtime_ns),
        h.sockmem_version,
        h.kernel,
        ctx.events,
        ctx.trailer.events,
        s.rows.iter().map(|r| r.sock_ids.len()).sum::<usize>(),
    )?;
    if let Some(w) = ctx.warning() {
        writeln!(out, "WARNING: {w}")?;
    }
    writeln!(out)?;
    let by_socket = ctx.group_by == GroupBy::Socket;
    let mut head: Vec<&str> = match ctx.group_by {
        GroupBy::Socket => vec!["SOCK", "PID", "COMM", "PROTO", "LOCAL", "REMOTE"],
        GroupBy::Pid => vec!["PROCESS", "SOCKS"],
        GroupBy::Comm => vec!["COMM", "SOCKS"],
        GroupBy::Iface => vec!["IFACE", "SOCKS"],
        GroupBy::Cgroup => vec!["CGROUP", "SOCKS"],
        GroupBy::Netns => vec!["NETNS", "SOCKS"],
    };
    let key_cols = head.len();
    head.extend([
        "FIRST(UTC)",
        "LAST(UTC)",
        "EVENTS",
        "CALLS",
        "SENT",
        "BLOCKED",
        "QUEUED",
        "MAX_Q",
        "ALLOC",
        "MAX_A",
        "SNDBUF",
        "QDISC_N",
        "QDISC_P50",
        "QDISC_P99",
        "DROPS",
    ]);
    let mut cells = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in &s.rows {
        let mut c: Vec<String> = if by_socket {
            vec![
                or_dash(r.sock),
                or_dash(r.pid),
                or_dash(r.comm.as_deref()),
                or_dash(r.protocol),
                or_dash(r.local),
                or_dash(r.remote),
            ]
        } else {
            vec![r.key.clone(), r.sock_ids.len().to_string()]
        };
        let sojourn = |p: f64| match r.sojourn.count() {
            0 => "-".to_owned(),
            _ => human(r.sojourn.percentile(p), Unit::Nanoseconds),
        };
        c.extend([
            time_of_day(&clock, r.first_ns),
            time_of_day(&clock, r.last_ns),
            r.events.to_string(),
            r.calls.to_string(),
            human(r.bytes_sent, Unit::Bytes),
            human(r.blocked_ns, Unit::Nanoseconds),
            or_dash(r.wmem_queued),
            r.wmem_queued_max.to_string(),
            or_dash(r.wmem_alloc),
            r.wmem_alloc_max.to_string(),
            r.sndbuf.to_string(),
            r.sojourn.count().to_string(),
            sojourn(0.5),
            sojourn(0.99),
            r.drops_total().to_string(),
        ]);
        cells.push(c);
    }
    let left: Vec<bool> = (0..cells[0].len())
        .map(|i| match by_socket {
            true => (2..key_cols).contains(&i),
            false => i == 0,
        })
        .collect();
    write_table(out, &cells, &left)?;
    if let Some(note) = qdisc_note(s) {
        writeln!(out, "{note}")?;
    }
    for r in s.rows.iter().filter(|r| !r.drops.is_empty()) {
        let reasons: Vec<String> = r.drops.iter().map(|(k, n)| format!("{n} {k}")).collect();
        writeln!(out, "drops of {}: {}", r.key, reasons.join(", "))?;
    }
    if let Some(hist) = &s.hist {
        writeln!(out)?;
        let per = match ctx.group_by {
            GroupBy::Socket if hist.histograms.iter().all(|h| h.label.is_empty()) => {
                "in total".to_owned()
            }
            g => format!("per {}", g.name()),
        };
        let title = format!("histograms {per}, built from the recorded events");
        // A recording does not keep the runs the kernel skipped.
        write_text(out, &title, hist, None)?;
    }
    Ok(())
}

/// Said under the table when some qdisc events paired with nothing: the percentiles are of
/// QDISC_N skbs only.
fn qdisc_note(s: &Summary) -> Option<String> {
    let q = s.qdisc;
    q.unpaired().then(|| {
        format!(
            "qdisc: QDISC_P50/P99 are of the QDISC_N skbs whose enqueue and dequeue paired by \
             address ({} in all); {} of {} enqueues and {} of {} dequeues paired with nothing \
             (a qdisc that splits GSO skbs, like tbf, dequeues segments at new addresses; an \
             skb dropped in it or still queued has no dequeue; a bypassed qdisc shows only \
             dequeues)",
            q.pairs,
            q.enqueues.saturating_sub(q.pairs),
            q.enqueues,
            q.dequeues.saturating_sub(q.pairs),
            q.dequeues
        )
    })
}

#[derive(Serialize)]
struct JsonQdiscPairs {
    enqueues: u64,
    dequeues: u64,
    pairs: u64,
    /// Enqueues and dequeues that paired with nothing.
    unpaired_enqueues: u64,
    unpaired_dequeues: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize)]
struct JsonQdisc {
    skbs: u64,
    mean_ns: f64,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sock: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    laddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rport: Option<u16>,
    /// The sender, where every socket of the row has the same one.
    pid: Option<u32>,
    comm: Option<&'a str>,
    iface: Option<&'a str>,
    /// The sender's cgroup path and the socket's namespace, where every socket of the row has
    /// the same.
    cgroup: Option<&'a str>,
    netns: Option<&'a str>,
    socks: &'a [u64],
    events: u64,
    first_ns: u64,
    last_ns: u64,
    first_s: f64,
    last_s: f64,
    first_wall: String,
    last_wall: String,
    lifetime_s: f64,
    wmem_queued: Option<i64>,
    wmem_queued_max: i64,
    wmem_alloc: Option<i64>,
    wmem_alloc_max: i64,
    sndbuf: i64,
    bytes_sent: u64,
    calls: u64,
    blocked_calls: u64,
    blocked_ns: u64,
    qdisc: JsonQdisc,
    drops: u64,
    drop_reasons: &'a std::collections::BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destroyed: Option<bool>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    r#type: &'static str,
    file: &'a str,
    version: &'static str,
    recorded_with: &'a str,
    kernel: &'a str,
    elapsed_s: f64,
    /// CLOCK_REALTIME and CLOCK_MONOTONIC read together as the recording started.
    clock: ClockAnchor,
    start_wall: String,
    group_by: &'static str,
    /// Applied here, to the recorded events.
    filters: &'a RecordedFilters,
    /// Applied in the kernel while recording.
    recorded_filters: &'a RecordedFilters,
    recorded_events: u64,
    events: u64,
    lost_events: u64,
    /// No event was lost: the figures count everything that happened.
    complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    rows: Vec<JsonRow<'a>>,
    /// How the rows' `qdisc` sojourns were sampled, every socket in total.
    qdisc_pairing: JsonQdiscPairs,
    #[serde(skip_serializing_if = "Option::is_none")]
    hist: Option<serde_json::Value>,
}

fn json_row<'a>(r: &'a Row, clock: &Clock) -> JsonRow<'a> {
    let rel = |ts: u64| ts.saturating_sub(clock.anchor.monotonic_ns) as f64 / 1e9;
    let have = r.sojourn.count() > 0;
    JsonRow {
        key: &r.key,
        sock: r.sock,
        ino: r.ino,
        proto: r.protocol,
        laddr: r.local.map(|a| a.ip().to_string()),
        lport: r.local.map(|a| a.port()),
        raddr: r.remote.map(|a| a.ip().to_string()),
        rport: r.remote.map(|a| a.port()),
        pid: r.pid,
        comm: r.comm.as_deref(),
        iface: r.iface.as_deref(),
        cgroup: r.cgroup.as_deref(),
        netns: r.netns.as_deref(),
        socks: &r.sock_ids,
        events: r.events,
        first_ns: r.first_ns,
        last_ns: r.last_ns,
        first_s: rel(r.first_ns),
        last_s: rel(r.last_ns),
        first_wall: wall(clock.wall_ns(r.first_ns)),
        last_wall: wall(clock.wall_ns(r.last_ns)),
        lifetime_s: r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9,
        wmem_queued: r.wmem_queued,
        wmem_queued_max: r.wmem_queued_max,
        wmem_alloc: r.wmem_alloc,
        wmem_alloc_max: r.wmem_alloc_max,
        sndbuf: r.sndbuf,
        bytes_sent: r.bytes_sent,
        calls: r.calls,
        blocked_calls: r.blocked_calls,
        blocked_ns: r.blocked_ns,
        qdisc: JsonQdisc {
            skbs: r.sojourn.count(),
            mean_ns: r.sojourn.mean(),
            p50_ns: have.then(|| r.sojourn.percentile(0.5)),
            p99_ns: have.then(|| r.sojourn.percentile(0.99)),
            max_ns: have.then(|| r.sojourn.max()),
        },
        drops: r.drops_total(),
        drop_reasons: &r.drops,
        destroyed: r.sock.map(|_| r.destroyed),
    }
}

pub fn write_report_json(out: &mut impl Write, ctx: &Context, s: &Summary) -> io::Result<()> {
    let h = ctx.header;
    let clock = ctx.clock();
    let lost = ctx.lost();
    let doc = JsonReport {
        r#type: "report",
        file: ctx.file,
        version: env!("CARGO_PKG_VERSION"),
        recorded_with: &h.sockmem_version,
        kernel: &h.kernel,
        elapsed_s: ctx.trailer.elapsed_s,
        clock: h.anchor,
        start_wall: wall(h.anchor.realtime_ns),
        group_by: ctx.group_by.name(),
        filters: &ctx.filters,
        recorded_filters: &h.filters,
        recorded_events: ctx.trailer.events,
        events: ctx.events,
        lost_events: lost,
        complete: lost == 0 && !ctx.trailer.truncated,
        warning: ctx.warning(),
        rows: s.rows.iter().map(|r| json_row(r, &clock)).collect(),
        qdisc_pairing: JsonQdiscPairs {
            enqueues: s.qdisc.enqueues,
            dequeues: s.qdisc.dequeues,
            pairs: s.qdisc.pairs,
            unpaired_enqueues: s.qdisc.enqueues.saturating_sub(s.qdisc.pairs),
            unpaired_dequeues: s.qdisc.dequeues.saturating_sub(s.qdisc.pairs),
            note: qdisc_note(s),
        },
        hist: s.hist.as_ref().map(json_parts),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{report::QdiscPairs, why::samples::Samples};
    use crate::recording::format::ClockAnchor;

    fn ctx<'a>(header: &'a Header, trailer: &'a Trailer, by: GroupBy) -> Context<'a> {
        Context {
            file: "run.smrec",
            header,
            trailer,
            group_by: by,
            filters: RecordedFilters::default(),
            events: 7,
        }
    }

    fn header() -> Header {
        Header {
            sockmem_version: "0.1.0".into(),
            kernel: "6.18.0-test".into(),
            ring_size: 1 << 22,
            hooks: Vec::new(),
            filters: RecordedFilters::default(),
            event_size: 176,
            anchor: ClockAnchor {
                realtime_ns: 1_796_092_812_000_000_000,
                monotonic_ns: 5_000_000_000,
            },
            snapshot_every_s: None,
        }
    }

    fn row(key: &str, bytes: u64) -> Row {
        let mut sojourn = Samples::default();
        sojourn.push(1500);
        Row {
            key: key.into(),
            sock: Some(0x301),
            protocol: Some("tcp"),
            local: Some("198.18.0.1:40000".parse().unwrap()),
            remote: Some("198.18.0.2:5201".parse().unwrap()),
            pid: Some(100),
            comm: Some("python3".into()),
            sock_ids: vec![0x301],
            events: 7,
            first_ns: 5_250_000_000,
            last_ns: 6_000_000_000,
            bytes_sent: bytes,
            sojourn,
            drops: [("QDISC_DROP".to_owned(), 2)].into_iter().collect(),
            ..Row::default()
        }
    }

    #[test]
    fn text_is_a_table_and_says_when_events_were_lost() {
        let (h, mut t) = (header(), Trailer::default());
        t.lost_per_cpu = vec![0, 12];
        let s = Summary {
            rows: vec![row("a", 1 << 20), row("b", 10)],
            qdisc: QdiscPairs {
                enqueues: 14,
                dequeues: 900,
                pairs: 2,
            },
            hist: None,
        };
        let mut buf = Vec::new();
        write_report_text(&mut buf, &ctx(&h, &t, GroupBy::Socket), &s).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("2026-12-01T02:40:12.000000Z"), "{text}");
        assert!(
            lines[1].starts_with("WARNING: the recording lost 12 events"),
            "{text}"
        );
        assert!(lines[3].starts_with("SOCK"), "{text}");
        // Every row as long as the header, columns aligned.
        let sent = lines[3].find("SENT").unwrap() + 4;
        assert_eq!(&lines[4][sent - 5..sent], " 1MiB", "{text}");
        assert!(lines[4].contains("02:40:12.250000"), "{text}");
        assert!(text.contains("drops of a: 2 QDISC_DROP"), "{text}");
        // The percentiles' sample count beside them, and the unpaired said.
        let n = lines[3].find("QDISC_N").unwrap() + "QDISC_N".len();
        assert_eq!(&lines[4][n - 2..n], " 1", "{text}");
        assert!(
            text.contains("12 of 14 enqueues and 898 of 900 dequeues paired with nothing"),
            "{text}"
        );
    }

    #[test]
    fn json_says_when_events_were_lost() {
        let (h, mut t) = (header(), Trailer::default());
        t.lost_per_cpu = vec![3, 4];
        let s = Summary {
            rows: Vec::new(),
            qdisc: QdiscPairs::default(),
            hist: None,
        };
        let mut buf = Vec::new();
        write_report_json(&mut buf, &ctx(&h, &t, GroupBy::Pid), &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            (&v["complete"], &v["lost_events"]),
            (&false.into(), &7.into())
        );
        assert!(
            v["warning"].as_str().unwrap().contains("undercounts"),
            "{v}"
        );
        assert_eq!(v["group_by"], "pid");
    }

    #[test]
    fn json_is_one_document() {
        let (h, t) = (header(), Trailer::default());
        let s = Summary {
            rows: vec![row("a", 100)],
            qdisc: QdiscPairs::default(),
            hist: None,
        };
        let mut buf = Vec::new();
        write_report_json(&mut buf, &ctx(&h, &t, GroupBy::Socket), &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["type"], "report");
        assert_eq!(v["complete"], true);
        assert!(v.get("warning").is_none());
        let r = &v["rows"][0];
        assert_eq!(r["bytes_sent"], 100);
        assert_eq!(r["first_wall"], "2026-12-01T02:40:12.250000Z");
        assert_eq!(r["first_s"], 0.25);
        assert_eq!(r["qdisc"]["p99_ns"], 1500);
        assert_eq!(r["drop_reasons"]["QDISC_DROP"], 2);
        assert_eq!(r["lport"], 40000);
    }
}
