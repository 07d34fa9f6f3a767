//! Integration tests of `sockmem report` and `sockmem trace --time`.
//!
//! One recorded run serves every test (made by the first test that needs it): `record` with a
//! port filter, then one TCP transfer of a known size over a veth with a tbf qdisc
//! (198.18.197.0/24), its socket held open until `record` has stopped. The report's figures are
//! held against the flow's own byte count and against the replayed events (`trace --input
//! --json --kernel-addrs`), computed here independently. Must run as root on a kernel with BTF.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const PORT: u16 = 27101;
const BYTES: u64 = 1024 * 1024;

struct Recorded {
    path: PathBuf,
    /// The replay of every recorded event, with kernel addresses (skbs paired by address).
    replay: JsonTrace,
    /// A live `trace --json --time wall` of the same run.
    live_wall: JsonTrace,
    /// The transfer's sending socket.
    key: SockKey,
    /// Wall clock (µs since the epoch) before the traffic started and after `record` stopped.
    wall_before_us: u64,
    wall_after_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros() as u64
}

fn recorded() -> &'static Recorded {
    static RUN: OnceLock<Recorded> = OnceLock::new();
    RUN.get_or_init(|| {
        let pair = NetnsPair::with_tbf("rpt", 197);
        let path = tmp_path("report.smrec");
        let port = PORT.to_string();
        let p = path.to_str().expect("a UTF-8 temporary path");
        let mut wall_before_us = 0;
        let (flow, outs) = traced_by(
            &[
                &["record", "-o", p, "-P", &port],
                &["trace", "--json", "--time", "wall", "-P", &port],
            ],
            || {
                wall_before_us = now_us();
                let opts = TcpFlowOpts::bytes(BYTES).hold_open();
                let flow = TcpFlow::start(&pair, PORT, "smrpt-tx", opts);
                flow.wait_received(BYTES, IO_TIMEOUT);
                flow
            },
        );
        let wall_after_us = now_us();
        let transfer = flow.finish_transfer();
        let replay = sockmem(&["trace", "--input", p, "--json", "--kernel-addrs"]);
        replay.assert_no_panic();
        replay.assert_success();
        Recorded {
            path,
            replay: replay.json(),
            live_wall: outs[1].json(),
            key: transfer.key,
            wall_before_us,
            wall_after_us,
        }
    })
}

/// `sockmem <args>` to completion (no program is loaded: seconds at most), checked to succeed.
fn sockmem(args: &[&str]) -> CmdOutput {
    let out = run_sockmem(args, Duration::from_secs(120));
    out.assert_no_panic();
    out.assert_success();
    out
}

/// `report FILE --json <extra>`.
fn report(r: &Recorded, extra: &[&str]) -> Value {
    let mut args = vec!["report", r.path.to_str().expect("UTF-8"), "--json"];
    args.extend_from_slice(extra);
    let out = sockmem(&args);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "expected one JSON document from {args:?}: {e}\n{}",
            out.describe()
        )
    })
}

/// Filters that let no recorded event through end every command that reads a recording the
/// same way: exit code 1 (grep's "no match"; 2 is for usage errors) and one `sockmem:` line
/// naming the filters, before `report`, `plot` or `export` writes anything.
#[test]
fn filters_that_match_nothing_fail_alike_in_every_reader() {
    let r = recorded();
    let rec = r.path.to_str().expect("UTF-8");
    let recorded_events = r.replay.events.len();
    // A port and a protocol the recorded flow has not: the transfer is TCP on PORT.
    let (svg, json) = (tmp_path("nomatch.svg"), tmp_path("nomatch.json"));
    let (svg, json) = (svg.to_str().expect("UTF-8"), json.to_str().expect("UTF-8"));
    let nothing = ["-P", "1", "--udp"];
    for command in [
        &["report", rec][..],
        &["report", rec, "--json"],
        &["report", rec, "--hist"],
        &["trace", "--input", rec],
        &["trace", "--input", rec, "--json"],
        &["plot", rec, "-o", svg],
        &["export", rec, "--perfetto", json],
    ] {
        let args: Vec<&str> = command.iter().chain(&nothing).copied().collect();
        let out = run_sockmem(&args, Duration::from_secs(120));
        out.assert_no_panic();
        out.assert_code(1);
        let said: Vec<&str> = out.stderr.lines().collect();
        assert!(
            said.len() == 1
                && said[0].starts_with("sockmem: ")
                && said[0].contains("--port 1 --udp")
                && said[0].contains(&recorded_events.to_string()),
            "{args:?}: expected one `sockmem:` line naming the filters and the recording's \
             {recorded_events} events, got {}",
            out.describe()
        );
        if command[0] != "trace" {
            assert!(out.stdout.is_empty(), "{args:?}: wrote {:?}", out.stdout);
        }
    }
    assert!(
        !Path::new(svg).exists() && !Path::new(json).exists(),
        "no image or export from a run that matched nothing"
    );
    // The same filters, one matching: the flow's port.
    let port = PORT.to_string();
    let out = sockmem(&["report", rec, "-P", "1", "-P", &port]);
    assert!(out.stdout.contains(&format!(":{PORT}")), "{}", out.stdout);
}

/// Whether a sendmsg hook attached: without one (tracepoints on 6.1) no socket's sender is
/// known.
fn knows_senders(r: &Recorded) -> bool {
    r.replay.is_attached("tcp_sendmsg") || r.replay.is_attached("sendmsg_ret")
}

fn rows(doc: &Value) -> &Vec<Value> {
    doc["rows"].as_array().expect("`rows` is an array")
}

/// The report's row of the socket `key`.
fn row_of<'a>(doc: &'a Value, key: &SockKey) -> &'a Value {
    rows(doc)
        .iter()
        .find(|r| key.matches(r))
        .unwrap_or_else(|| panic!("expected a row for {key} in the report: {doc:#}"))
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("expected a number `{field}` in {v}"))
}

/// The `p` quantile as sockmem takes it: the value at rank ceil(n·p) of the sorted values.
fn quantile(mut v: Vec<u64>, p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Sojourns (ns) of the skbs of `sock` (every socket: `None`): each `qdisc_enqueue` paired with
/// the next `qdisc_dequeue` of the same skb address and socket.
fn sojourns(events: &[Value], sock: Option<u64>) -> Vec<u64> {
    let mut waiting: HashMap<(String, u64), u64> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let (Some(skb), s) = (e.get("skb").and_then(Value::as_str), get_u64(e, "sock")) else {
            continue;
        };
        if sock.is_some_and(|want| want != s) {
            continue;
        }
        let key = (skb.to_owned(), s);
        match hook(e) {
            "qdisc_enqueue" => {
                waiting.insert(key, get_u64(e, "ts_ns"));
            }
            "qdisc_dequeue" => {
                if let Some(t0) = waiting.remove(&key) {
                    out.push(get_u64(e, "ts_ns") - t0);
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn per_socket_figures_equal_the_flow_and_the_replay() {
    let r = recorded();
    let doc = report(r, &[]);
    assert_eq!(
        r.replay.summary_u64("lost"),
        0,
        "expected the recording to lose no event (the figures below would undercount)"
    );
    assert_eq!(doc["complete"], true, "{doc:#}");
    assert_eq!(num(&doc, "events") as usize, r.replay.events.len());
    let row = row_of(&doc, &r.key);
    let sock = r.replay.sock_of(&r.key);
    let events = r.replay.events_of_sock(sock);
    assert_eq!(num(row, "events") as usize, events.len(), "{row}");
    if knows_senders(r) {
        assert_eq!(row["pid"], std::process::id(), "{row}");
    }
    // Maxima of the counters over the socket's replayed events.
    for (field, max_field) in [
        ("wmem_queued", "wmem_queued_max"),
        ("wmem_alloc", "wmem_alloc_max"),
    ] {
        let max = events
            .iter()
            .filter_map(|e| e[field].as_i64())
            .max()
            .expect("events that read the counters");
        assert_eq!(row[max_field].as_i64(), Some(max), "{max_field}: {row}");
        let last = events.iter().rev().find_map(|e| e[field].as_i64());
        assert_eq!(row[field].as_i64(), last, "last {field}: {row}");
    }
    if r.replay.is_attached("sendmsg_ret") {
        let rets: Vec<&&Value> = events.iter().filter(|e| hook(e) == "sendmsg_ret").collect();
        assert_eq!(num(row, "calls") as usize, rets.len(), "{row}");
        assert_eq!(
            num(row, "bytes_sent"),
            BYTES,
            "expected the report's bytes sent to be the {BYTES} bytes the flow wrote: {row}"
        );
    } else {
        eprintln!(
            "report: no sendmsg_ret hook on this kernel/backend: bytes and calls not checked"
        );
    }
    let blocked: u64 = events
        .iter()
        .filter(|e| hook(e) == "send_blocked")
        .map(|e| get_u64(e, "duration_ns"))
        .sum();
    assert_eq!(num(row, "blocked_ns"), blocked, "{row}");
    let mine = sojourns(&r.replay.events, Some(sock));
    let qdisc = &row["qdisc"];
    assert_eq!(num(qdisc, "skbs") as usize, mine.len(), "{row}");
    if r.replay.is_attached("qdisc_enqueue") && r.replay.is_attached("qdisc_dequeue") {
        assert!(
            !mine.is_empty(),
            "expected skbs of {} through the tbf qdisc",
            r.key
        );
        let (p50, p99) = (quantile(mine.clone(), 0.5), quantile(mine.clone(), 0.99));
        assert_eq!(
            (num(qdisc, "p50_ns"), num(qdisc, "p99_ns")),
            (p50, p99),
            "expected the qdisc sojourn p50/p99 computed from the replayed events: {row}"
        );
        eprintln!(
            "report: {} skbs through the qdisc, sojourn p50 {p50} ns, p99 {p99} ns",
            mine.len()
        );
    }
    let first = events.first().map(|e| get_u64(e, "ts_ns"));
    assert_eq!(row["first_ns"].as_u64(), first, "{row}");
    // The text: a table with the socket's row, its sent bytes in words.
    let text = sockmem(&["report", r.path.to_str().expect("UTF-8")]).stdout;
    let sent = if r.replay.is_attached("sendmsg_ret") {
        "1MiB"
    } else {
        "0B"
    };
    assert!(
        text_row(&text, &r.key).is_some_and(|l| l.contains(sent)),
        "expected a text row for {} with {sent} sent:\n{text}",
        r.key
    );
}

#[test]
fn groups_sum_their_sockets() {
    let r = recorded();
    let sockets = report(r, &[]);
    let by_pid = report(r, &["--group-by", "pid"]);
    for field in ["bytes_sent", "calls", "events", "blocked_ns", "drops"] {
        let sum = |d: &Value| rows(d).iter().map(|row| num(row, field)).sum::<u64>();
        assert_eq!(
            sum(&by_pid),
            sum(&sockets),
            "expected --group-by pid's {field} to add up to the sockets'"
        );
    }
    let sock = r.replay.sock_of(&r.key);
    let group = rows(&by_pid)
        .iter()
        .find(|g| {
            g["socks"]
                .as_array()
                .is_some_and(|s| s.contains(&Value::from(sock)))
        })
        .unwrap_or_else(|| panic!("expected a group holding socket {sock}: {by_pid:#}"));
    if knows_senders(r) {
        assert_eq!(group["pid"], std::process::id(), "{group}");
    }
    let members: Vec<&Value> = rows(&sockets)
        .iter()
        .filter(|row| group["socks"].as_array().unwrap().contains(&row["sock"]))
        .collect();
    for field in ["bytes_sent", "calls", "events"] {
        let sum: u64 = members.iter().map(|m| num(m, field)).sum();
        assert_eq!(num(group, field), sum, "{field}: {group}");
    }
    // A filter after the fact that leaves nothing is an error (exit code 1):
    // `filters_that_match_nothing_fail_alike_in_every_reader`.
}

#[test]
fn hist_counts_equal_the_replayed_events() {
    let r = recorded();
    let doc = report(r, &["--hist"]);
    let totals = doc["hist"]["totals"].as_array().expect("hist totals");
    let count = |name: &str| {
        totals
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| num(t, "count"))
            .unwrap_or_else(|| panic!("expected a `{name}` histogram: {:#}", doc["hist"]))
    };
    let ev = &r.replay.events;
    let hooked = |h: &'static str| ev.iter().filter(move |e| hook(e) == h);
    let want = [
        (
            "sendmsg_time",
            hooked("sendmsg_ret")
                .filter(|e| get_u64(e, "duration_ns") > 0)
                .count(),
        ),
        ("send_blocked", hooked("send_blocked").count()),
        ("qdisc_sojourn", sojourns(ev, None).len()),
        (
            "wmem_queued",
            ev.iter().filter(|e| !e["wmem_queued"].is_null()).count(),
        ),
        (
            "wmem_alloc",
            ev.iter().filter(|e| !e["wmem_alloc"].is_null()).count(),
        ),
    ];
    for (name, n) in want {
        assert_eq!(
            count(name) as usize,
            n,
            "expected @{name}'s count to be the number of corresponding replayed events"
        );
    }
    // Each skb's transmit side is counted once at most.
    assert!(count("below_tcp") as usize <= hooked("dev_queue_xmit").count());
    assert!(count("driver_time") as usize <= hooked("driver_xmit").count());
    eprintln!(
        "report --hist: {} sendmsg_time, {} qdisc_sojourn, {} driver_time, {} below_tcp samples",
        count("sendmsg_time"),
        count("qdisc_sojourn"),
        count("driver_time"),
        count("below_tcp")
    );
    // The text goes through hist's renderer.
    let text = sockmem(&["report", r.path.to_str().expect("UTF-8"), "--hist"]).stdout;
    assert!(
        text.contains("@wmem_queued (bytes)") && text.contains("count "),
        "expected hist's text blocks:\n{text}"
    );
}

/// `2026-12-01T02:40:12.123456Z` → µs since the epoch.
fn parse_wall(s: &str) -> u64 {
    let bad = || panic!("expected an ISO 8601 UTC time with microseconds, got {s:?}");
    if s.len() != 27 || !s.ends_with('Z') {
        bad();
    }
    let n = |a: usize, b: usize| -> i64 { s[a..b].parse().unwrap_or_else(|_| bad()) };
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // H. Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    (secs * 1_000_000 + n(20, 26)) as u64
}

#[test]
fn wall_clock_times_fall_within_the_run() {
    let r = recorded();
    let p = r.path.to_str().expect("UTF-8");
    let out = sockmem(&["trace", "--input", p, "--json", "--time", "wall"]).json();
    assert_eq!(out.header["time"], "wall", "{}", out.header);
    assert!(
        out.header["clock"]["realtime_ns"].is_u64() && out.header["clock"]["monotonic_ns"].is_u64(),
        "expected the clock anchor in the header: {}",
        out.header
    );
    assert!(!out.events.is_empty());
    let (lo, hi) = (r.wall_before_us, r.wall_after_us);
    for e in &out.events {
        assert!(
            e["ts_ns"].is_u64(),
            "every event keeps its monotonic ts_ns: {e}"
        );
        let t = parse_wall(get_str(e, "wall"));
        assert!(
            lo <= t && t <= hi,
            "expected every event's wall time within the run ({lo}..={hi} µs), got {t}: {e}"
        );
    }
    // Live too, from the anchor `trace` reads as it starts.
    let live = &r.live_wall;
    assert_eq!(live.header["time"], "wall", "{}", live.header);
    assert!(!live.events.is_empty());
    for e in &live.events {
        let t = parse_wall(get_str(e, "wall"));
        assert!(
            lo <= t && t <= hi,
            "expected every live event's wall time within the run ({lo}..={hi} µs), got {t}: {e}"
        );
    }
    // The same instants in the text, and the raw monotonic ns.
    let text = sockmem(&["trace", "--input", p, "--time", "wall"]).stdout;
    let mut lines = text.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("TIME(UTC)")),
        "{text}"
    );
    let first = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(first, get_str(&out.events[0], "wall"), "{text}");
    let mono = sockmem(&["trace", "--input", p, "--time", "mono"]).stdout;
    let first = mono
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next());
    assert_eq!(
        first,
        Some(get_u64(&out.events[0], "ts_ns").to_string().as_str()),
        "{mono}"
    );
    // The report's lifetimes from the same anchor.
    let doc = report(r, &[]);
    let row = row_of(&doc, &r.key);
    for f in ["first_wall", "last_wall"] {
        let t = parse_wall(row[f].as_str().unwrap_or_default());
        assert!(lo <= t && t <= hi, "{f} {t} outside {lo}..={hi}: {row}");
    }
}

/// The text table's row of socket `key`: its local end, then its remote one (the receiver's
/// row has both the other way round, and may come first).
fn text_row<'a>(text: &'a str, key: &SockKey) -> Option<&'a str> {
    let local = format!("{}:{} ", key.laddr, key.lport);
    let remote = format!("{}:{} ", key.raddr, key.rport);
    text.lines()
        .find(|l| l.find(&local).is_some_and(|i| l[i..].contains(&remote)))
}

/// QDISC_P50/P99 come with the number of skbs they are of (QDISC_N, the JSON `qdisc.skbs`),
/// and the report says how many of the recording's own `qdisc_enqueue`/`qdisc_dequeue` events
/// paired with nothing (the tbf here splits GSO skbs, whose segments dequeue at new addresses).
#[test]
fn the_qdisc_percentiles_say_how_many_skbs_they_are_of() {
    let r = recorded();
    let doc = report(r, &[]);
    let count = |h: &str| r.replay.events.iter().filter(|e| hook(e) == h).count() as u64;
    let (enq, deq) = (count("qdisc_enqueue"), count("qdisc_dequeue"));
    let pairing = &doc["qdisc_pairing"];
    let pairs: u64 = rows(&doc)
        .iter()
        .map(|row| num(&row["qdisc"], "skbs"))
        .sum();
    assert_eq!(
        (
            num(pairing, "enqueues"),
            num(pairing, "dequeues"),
            num(pairing, "pairs")
        ),
        (enq, deq, pairs),
        "expected the pairing counted from the recording's events: {pairing}"
    );
    let unpaired = enq > pairs || deq > pairs;
    assert_eq!(
        num(pairing, "unpaired_enqueues") + num(pairing, "unpaired_dequeues"),
        (enq - pairs) + (deq - pairs),
        "{pairing}"
    );
    eprintln!("report: {enq} enqueues, {deq} dequeues, {pairs} paired");

    let text = sockmem(&["report", r.path.to_str().expect("UTF-8")]).stdout;
    let lines: Vec<&str> = text.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.starts_with("SOCK"))
        .unwrap_or_else(|| panic!("expected a table:\n{text}"));
    // Right-aligned: the count ends where its heading does.
    let end = lines[head].find("QDISC_N").expect("a QDISC_N column") + "QDISC_N".len();
    let line =
        text_row(&text, &r.key).unwrap_or_else(|| panic!("expected a row for {}:\n{text}", r.key));
    let n = line[..end]
        .rsplit(' ')
        .next()
        .and_then(|w| w.parse::<u64>().ok());
    let want = num(&row_of(&doc, &r.key)["qdisc"], "skbs");
    assert_eq!(n, Some(want), "expected QDISC_N {want} in {line:?}\n{text}");
    let said = format!(
        "{} of {enq} enqueues and {} of {deq} dequeues paired with nothing",
        enq - pairs,
        deq - pairs
    );
    assert_eq!(
        text.contains(&said),
        unpaired,
        "expected `{said}` said exactly when some paired with nothing:\n{text}"
    );
}
