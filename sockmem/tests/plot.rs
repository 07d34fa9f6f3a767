//! Integration tests of `sockmem plot` and `sockmem export --perfetto`, on one recording of real
//! traffic: a TCP transfer (256 KiB, a 32 KiB `SO_SNDBUF`) through a 20 mbit tbf between two
//! namespaces (198.18.213.0/24), so that both counters move and the sender blocks. Each output
//! is held against the recording's own events, as `trace --input --json` replays them.
//! Must run as root on a kernel with BTF (to record); plotting and exporting need neither.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

const PORT: u16 = 27301;
const BYTES: u64 = 256 * 1024;

struct Recorded {
    path: PathBuf,
    /// The recording as `trace --input --json` prints it.
    replay: JsonTrace,
    /// The transfer's sending socket, and its id.
    key: SockKey,
    sock: u64,
}

fn recorded() -> &'static Recorded {
    static RUN: OnceLock<Recorded> = OnceLock::new();
    RUN.get_or_init(|| {
        let pair = NetnsPair::new("plot", 213);
        pair.add_tbf("20mbit");
        let path = tmp_path("plot.smrec");
        let port = PORT.to_string();
        let p = path.to_str().expect("a UTF-8 temporary path");
        // Snapshots every 50 ms: the plot draws the TSQ limit from them.
        let rec = ["record", "-o", p, "-P", &port, "--snapshot", "0.05"];
        let (flow, outs) = traced_by(&[&rec], || {
            let opts = TcpFlowOpts::bytes(BYTES).sndbuf(32 * 1024);
            let flow = TcpFlow::start(&pair, PORT, "smplot-tx", opts);
            flow.wait_received(BYTES, IO_TIMEOUT);
            flow
        });
        let transfer = flow.finish_transfer();
        outs[0].assert_success();
        let out = sockmem(&["trace", "--input", p, "--json"]);
        out.assert_success();
        let replay = out.json();
        let sock = replay.sock_of(&transfer.key);
        Recorded {
            path,
            replay,
            key: transfer.key,
            sock,
        }
    })
}

/// `sockmem <args>` to completion (no program is loaded: seconds at most).
fn sockmem(args: &[&str]) -> CmdOutput {
    let out = run_sockmem(args, Duration::from_secs(120));
    out.assert_no_panic();
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Per socket, the counters of its events that read them (`null` for a socket being freed), in
/// the recording's order.
fn readings(replay: &JsonTrace) -> BTreeMap<u64, Vec<(i64, i64, i64)>> {
    let mut m: BTreeMap<u64, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for e in &replay.events {
        let sock = get_u64(e, "sock");
        let entry = m.entry(sock).or_default();
        if !e["wmem_queued"].is_null() {
            entry.push((
                get_i64(e, "wmem_queued"),
                get_i64(e, "wmem_alloc"),
                get_i64(e, "sndbuf"),
            ));
        }
    }
    m.retain(|_, v| !v.is_empty());
    m
}

/// The `points` of a polyline.
fn vertices(node: &roxmltree::Node) -> Vec<(f64, f64)> {
    node.attribute("points")
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').expect("x,y");
            (x.parse().expect("a number"), y.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn the_svg_has_both_series_of_each_socket() {
    let r = recorded();
    let out_path = tmp_path("plot.svg");
    let out = sockmem(&["plot", path_str(&r.path), "-o", path_str(&out_path)]);
    out.assert_success();
    let svg = fs::read_to_string(&out_path).expect("the SVG written");
    let doc = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|e| panic!("expected the SVG to parse as XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let socks = readings(&r.replay);
    assert!(
        socks.contains_key(&r.sock) && socks.len() <= 6,
        "expected the sender's socket {} among at most 6 sockets with readings: {:?}",
        r.sock,
        socks.keys()
    );
    let height = 40 + 300 * socks.len();
    assert_eq!(
        (root.attribute("width"), root.attribute("height")),
        (Some("1200"), Some(height.to_string().as_str())),
        "expected 1200 × (40 + 300 per panel)"
    );
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_owned())
        .collect();
    for label in [
        "sk_wmem_queued",
        "sk_wmem_alloc",
        "sk_sndbuf",
        "sendmsg call",
    ] {
        assert_eq!(
            texts.iter().filter(|t| t.as_str() == label).count(),
            socks.len(),
            "expected the legend label {label} once per panel"
        );
    }
    for (sock, rs) in &socks {
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("sock {sock} · tcp "))),
            "expected a panel titled `sock {sock} · tcp ...`"
        );
        for series in ["sk_wmem_queued", "sk_wmem_alloc"] {
            let lines: Vec<_> = doc
                .descendants()
                .filter(|n| {
                    n.has_tag_name("polyline")
                        && n.attribute("class") == Some(&format!("series {series}"))
                        && n.attribute("data-sock") == Some(&sock.to_string())
                })
                .collect();
            assert_eq!(lines.len(), 1, "expected one {series} line for sock {sock}");
            let line = lines[0];
            // Its events' readings and its snapshots'.
            let k = rs.len() + r.replay.snapshots_of(*sock).len();
            assert_eq!(
                line.attribute("data-readings"),
                Some(k.to_string().as_str())
            );
            // A step line: each reading a vertex, a corner before every reading but the first,
            // and the last value held on to the socket's end. Above 5000 readings, a few per
            // pixel column.
            let v = vertices(&line);
            if k <= 5000 {
                assert!(
                    v.len() == 2 * k - 1 || v.len() == 2 * k,
                    "expected {series} of sock {sock} to step through its {k} readings: {} \
                     vertices",
                    v.len()
                );
            } else {
                assert!(
                    v.len() < 2 * k && v.len() <= 2 * 4 * 1200 + 1,
                    "expected {series} of sock {sock} thinned per pixel column: {} vertices \
                     for {} readings",
                    v.len(),
                    k
                );
            }
            assert!(
                v.windows(2).all(|w| w[0].0 <= w[1].0),
                "time runs left to right"
            );
        }
        // The counters moved, so the lines are not flat.
        let queued_max = rs.iter().map(|r| r.0).max().unwrap_or(0);
        if *sock == r.sock {
            assert!(
                queued_max > 0,
                "expected the sender's sk_wmem_queued to grow"
            );
        }
    }
    // The TSQ limit: one step line for the sender, through the snapshots taken after it
    // handed its first skb down (TSQ weighs that skb's truesize), at most one per snapshot.
    let first_xmit = r
        .replay
        .events_of_sock(r.sock)
        .iter()
        .find(|e| hook(e) == "dev_queue_xmit")
        .and_then(|e| e["time_s"].as_f64());
    let snapshots_after: usize = r
        .replay
        .snapshots_of(r.sock)
        .iter()
        .filter(|s| first_xmit.is_some_and(|t| s["time_s"].as_f64().is_some_and(|ts| ts > t)))
        .count();
    let tsq: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("polyline")
                && n.attribute("class") == Some("series tsq_limit")
                && n.attribute("data-sock") == Some(&r.sock.to_string())
        })
        .collect();
    if snapshots_after == 0 {
        eprintln!("no snapshot of the sender after its first skb: no TSQ line to check");
    } else {
        assert_eq!(tsq.len(), 1, "expected a TSQ limit line for the sender");
        let k: usize = tsq[0]
            .attribute("data-readings")
            .and_then(|v| v.parse().ok())
            .expect("data-readings");
        assert!(
            (1..=r.replay.snapshots_of(r.sock).len()).contains(&k),
            "expected the TSQ line through 1..={} snapshots, got {k}",
            r.replay.snapshots_of(r.sock).len()
        );
        let n = vertices(&tsq[0]).len();
        assert!(n == 2 * k - 1 || n == 2 * k, "a step line: {n} vertices");
    }
    let _ = fs::remove_file(&out_path);
}

#[test]
fn the_png_is_a_png_of_the_requested_size() {
    let r = recorded();
    let out_path = tmp_path("plot.png");
    let sock = r.sock.to_string();
    let out = sockmem(&[
        "plot",
        path_str(&r.path),
        "-o",
        path_str(&out_path),
        "--socket",
        &sock,
    ]);
    out.assert_success();
    let bytes = fs::read(&out_path).expect("the PNG written");
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("expected a valid PNG: {e}"));
    let (w, h) = (reader.info().width, reader.info().height);
    assert_eq!((w, h), (1200, 340), "one panel: 1200 × (40 + 300)");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut buf).expect("the image decodes");
    let pixels = &buf[..frame.buffer_size()];
    // Not blank: the lines' colours are there.
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(3).collect();
    assert!(
        distinct.len() > 20,
        "expected a drawing, got {} colours",
        distinct.len()
    );
    assert!(
        pixels.chunks(3).any(|p| p == [31, 119, 180]),
        "expected the sk_wmem_queued line's blue"
    );
    // At most one panel: the others are said to be left out.
    let one = tmp_path("one.png");
    let out = sockmem(&[
        "plot",
        path_str(&r.path),
        "-o",
        path_str(&one),
        "--panels",
        "1",
    ]);
    out.assert_success();
    let left_out = readings(&r.replay).len() - 1;
    if left_out > 0 {
        assert!(
            out.stderr.contains(&format!("{left_out} more not shown")),
            "expected the sockets left out counted: {}",
            out.describe()
        );
    }
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&one);
}

#[test]
fn the_perfetto_export_has_the_recordings_counters_and_calls() {
    let r = recorded();
    let out_path = tmp_path("perfetto.json");
    let out = sockmem(&[
        "export",
        path_str(&r.path),
        "--perfetto",
        path_str(&out_path),
    ]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&fs::read_to_string(&out_path).expect("written"))
        .unwrap_or_else(|e| panic!("expected the export to parse as JSON: {e}"));
    let evs = doc["traceEvents"].as_array().expect("traceEvents");
    let counter = |name: &str| -> Vec<i64> {
        evs.iter()
            .filter(|e| e["ph"] == "C" && e["name"] == name)
            .map(|e| e["args"]["bytes"].as_i64().expect("a byte count"))
            .collect()
    };
    let rs = &readings(&r.replay)[&r.sock];
    let want = |f: fn(&(i64, i64, i64)) -> i64| rs.iter().map(f).collect::<Vec<_>>();
    assert_eq!(
        counter(&format!("sock {} sk_wmem_queued", r.sock)),
        want(|r| r.0),
        "expected sk_wmem_queued as the recording's events read it"
    );
    assert_eq!(
        counter(&format!("sock {} sk_wmem_alloc", r.sock)),
        want(|r| r.1),
        "expected sk_wmem_alloc as the recording's events read it"
    );
    // Time runs forward, in µs since the start.
    let ts: Vec<f64> = evs
        .iter()
        .filter(|e| e["ph"] == "C")
        .filter_map(|e| e["ts"].as_f64())
        .collect();
    assert!(ts.iter().all(|t| *t >= 0.0));
    // One sendmsg slice per sendmsg_ret.
    let returns = r
        .replay
        .events
        .iter()
        .filter(|e| hook(e) == "sendmsg_ret")
        .count();
    let slices = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "sendmsg")
        .count();
    assert_eq!(slices, returns, "expected a sendmsg slice per sendmsg_ret");
    if r.replay.is_attached("sendmsg_ret") {
        assert!(returns > 0, "expected sendmsg calls in the transfer");
    }
    // Grouped by process: the sender's, named.
    let sender = r
        .replay
        .events_for(&r.key)
        .iter()
        .find(|e| get_opt_str(e, "owner") == Some("sendmsg"))
        .map(|e| get_u64(e, "tgid"));
    if let Some(pid) = sender {
        assert!(
            evs.iter().any(|e| e["ph"] == "M"
                && e["name"] == "process_name"
                && e["pid"] == pid
                && e["args"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("smplot-tx"))),
            "expected process_name metadata for the sender {pid}"
        );
        assert!(
            evs.iter()
                .filter(|e| e["ph"] == "C" && e["pid"] == pid)
                .count()
                >= 2 * rs.len(),
            "expected the sender's counters under its process"
        );
    }
    assert!(
        evs.iter().any(|e| e["ph"] == "M"
            && e["name"] == "thread_name"
            && e["args"]["name"]
                .as_str()
                .is_some_and(|n| n.contains(&format!(":{PORT}")))),
        "expected tracks named by the socket's 4-tuple"
    );
    let _ = fs::remove_file(&out_path);
}

/// Exit code 1, no panic, and a `sockmem:` line with every one of `words`.
fn assert_fails(args: &[&str], words: &[&str]) {
    let out = sockmem(args);
    out.assert_code(1);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("sockmem: ") && words.iter().all(|w| l.contains(w))),
        "{args:?}: expected a `sockmem: ` line with {words:?}, got {}",
        out.describe()
    );
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let r = recorded();
    let rec = path_str(&r.path);
    let svg = tmp_path("bad.svg");
    let svg = path_str(&svg);
    assert_fails(&["plot", rec, "-o", "/tmp/x.jpg"], &[".svg or .png"]);
    assert_fails(
        &["plot", rec, "-o", svg, "-P", "1"],
        &["matches the filters --port 1"],
    );
    assert_fails(
        &["plot", rec, "-o", svg, "--socket", "987654321"],
        &["socket 987654321", &r.sock.to_string()],
    );
    assert_fails(
        &["export", rec, "--perfetto", "/tmp/x.json", "-P", "1"],
        &["matches the filters --port 1"],
    );
    let foreign = tmp_path("foreign.smrec");
    fs::write(&foreign, "not a recording\n").expect("a file");
    assert_fails(
        &["plot", path_str(&foreign), "-o", svg],
        &["not a sockmem recording"],
    );
    assert_fails(
        &["export", path_str(&foreign), "--perfetto", "/tmp/x.json"],
        &["not a sockmem recording"],
    );
    let _ = fs::remove_file(&foreign);
    assert_fails(
        &["plot", "/nonexistent/run.smrec", "-o", svg],
        &["/nonexistent/run.smrec"],
    );
    assert!(!Path::new(svg).exists(), "no image from a failed run");
    let out = sockmem(&["plot", rec]);
    out.assert_usage_error(&["plot", rec]);
}

/// Numeric labels of an axis in an SVG (`0.50`, `0B`, `200KiB`, `1.5MiB`): (x, y, value).
fn axis_labels(doc: &roxmltree::Document) -> Vec<(f64, f64, f64)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| {
            let t = n.text()?.trim();
            let (num, mult) = [("KiB", 1024.0), ("MiB", 1024.0 * 1024.0), ("B", 1.0)]
                .into_iter()
                .find_map(|(unit, mult)| Some((t.strip_suffix(unit)?, mult)))
                .unwrap_or((t, 1.0));
            let v: f64 = num.parse().ok()?;
            let x: f64 = n.attribute("x")?.parse().ok()?;
            let y: f64 = n.attribute("y")?.parse().ok()?;
            Some((x, y, v * mult))
        })
        .collect()
}

/// The linear map from pixels to values of an axis: from the labels that share the other
/// coordinate with the most others (the tick labels of one axis).
fn axis(labels: &[(f64, f64, f64)], along_x: bool) -> impl Fn(f64) -> f64 {
    let mut groups: BTreeMap<i64, Vec<(f64, f64)>> = BTreeMap::new();
    for &(x, y, v) in labels {
        let (key, pos) = if along_x { (y, x) } else { (x, y) };
        groups.entry(key.round() as i64).or_default().push((pos, v));
    }
    let ticks = groups
        .into_values()
        .max_by_key(Vec::len)
        .expect("axis labels");
    assert!(ticks.len() >= 2, "expected 2+ tick labels: {ticks:?}");
    let (a, b) = (ticks[0], ticks[ticks.len() - 1]);
    move |px| a.1 + (px - a.0) * (b.1 - a.1) / (b.0 - a.0)
}

/// The panel caption's sender: `comm (pid)`, or `None` for `no sendmsg seen`.
fn caption_sender(doc: &roxmltree::Document, sock: u64) -> Option<String> {
    let caption = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .find(|t| t.starts_with(&format!("sock {sock} · ")))
        .unwrap_or_else(|| panic!("expected a panel captioned `sock {sock} · ...`"));
    let who = caption.rsplit(" · ").next().expect("a sender part");
    (who != "no sendmsg seen").then(|| who.to_owned())
}

/// Every panel names the socket's sender as `report` does (the same rule: the `sendmsg`
/// caller; `report`'s `-` is the plot's `no sendmsg seen`).
fn assert_senders_as_report(rec: &Path, svg: &str) {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses");
    let out = sockmem(&["report", path_str(rec), "--json"]);
    out.assert_success();
    let report: Value = serde_json::from_str(&out.stdout).expect("report --json");
    let panels: BTreeSet<u64> = doc
        .descendants()
        .filter_map(|n| n.attribute("data-sock"))
        .map(|s| s.parse().expect("a socket id"))
        .collect();
    assert!(!panels.is_empty(), "expected panels");
    for sock in panels {
        let row = report["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["sock"] == sock)
            .unwrap_or_else(|| panic!("expected a report row for sock {sock}"));
        let want = match (row["comm"].as_str(), row["pid"].as_u64()) {
            (Some(c), Some(p)) => Some(format!("{c} ({p})")),
            _ => None,
        };
        assert_eq!(
            caption_sender(&doc, sock),
            want,
            "sock {sock}: the plot and report name different senders (report row {row})"
        );
    }
}

#[test]
fn plot_and_report_name_the_same_senders() {
    let r = recorded();
    let out_path = tmp_path("senders.svg");
    sockmem(&["plot", path_str(&r.path), "-o", path_str(&out_path)]).assert_success();
    let svg = fs::read_to_string(&out_path).expect("the SVG written");
    assert_senders_as_report(&r.path, &svg);
    let _ = fs::remove_file(&out_path);
}

/// A sender whose receiver never reads: its bytes sit in the socket for the rest of the
/// recording with hardly an event. The plot holds the last value on to the recording's end
/// (the snapshots, every 0.2 s, read it too), at the value `ss -tmi` shows then; the receiver's
/// panel is not scaled to a TSQ limit it never neared.
#[test]
fn a_stalled_senders_bytes_are_held_to_the_end() {
    const STALLED_PORT: u16 = 27302;
    let pair = NetnsPair::new("plotst", 214);
    let path = tmp_path("stalled.smrec");
    let p = path_str(&path);
    let port = STALLED_PORT.to_string();
    let tracer = Tracer::start(&["record", "-o", p, "-P", &port, "--snapshot", "0.2"]);
    let flow = StalledTcp::start(&pair, STALLED_PORT, "smplot-stall");
    let (_, stable) = flow.wait_stable(&pair);
    std::thread::sleep(Duration::from_secs(3));
    let end = ss_skmem(&pair.tx_ns, flow.key.lport, STALLED_PORT);
    tracer.stop_checked();
    let key = flow.key.clone();
    flow.finish();
    assert_eq!(
        stable.w, end.w,
        "precondition: the stalled sender's sk_wmem_queued held (ss -tmi) over 3 s"
    );
    let replay = {
        let out = sockmem(&["trace", "--input", p, "--json"]);
        out.assert_success();
        out.json()
    };
    let sock = replay.sock_of(&key);
    let last_snapshot_s = replay
        .snapshots_of(sock)
        .iter()
        .map(|s| s["time_s"].as_f64().expect("time_s"))
        .fold(0.0, f64::max);
    assert!(
        last_snapshot_s > 2.0,
        "expected snapshots of the sender through the hold, the last at {last_snapshot_s} s"
    );

    let svg_path = tmp_path("stalled.svg");
    let id = sock.to_string();
    sockmem(&["plot", p, "-o", path_str(&svg_path), "--socket", &id]).assert_success();
    let svg = fs::read_to_string(&svg_path).expect("the SVG written");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
    let labels = axis_labels(&doc);
    let (secs, bytes) = (axis(&labels, true), axis(&labels, false));
    let series = |name: &str| -> Vec<(f64, f64)> {
        let line = doc
            .descendants()
            .find(|n| n.attribute("class") == Some(&format!("series {name}")))
            .unwrap_or_else(|| panic!("expected a {name} line"));
        vertices(&line)
    };
    let queued = series("sk_wmem_queued");
    let &(x_end, y_end) = queued.last().expect("vertices");
    // One pixel either way, and the axis labels' rounding.
    let px_s = (secs(1.0) - secs(0.0)).abs();
    assert!(
        secs(x_end) + 2.0 * px_s >= last_snapshot_s,
        "expected sk_wmem_queued drawn on to the recording's end (the last snapshot at \
         {last_snapshot_s:.2} s), it ends at {:.2} s",
        secs(x_end)
    );
    let px_bytes = (bytes(1.0) - bytes(0.0)).abs();
    let drawn = bytes(y_end);
    eprintln!(
        "stalled: ss w={} (stable {}), drawn {drawn:.0} B (1 px = {px_bytes:.0} B); line ends at \
         {:.3} s, last snapshot {last_snapshot_s:.3} s (1 px = {px_s:.4} s)",
        end.w,
        stable.w,
        secs(x_end)
    );
    assert!(
        (drawn - end.w as f64).abs() <= 2.0 * px_bytes + 0.01 * end.w as f64,
        "expected the held sk_wmem_queued at ss's w={} (±2 px = {:.0} B), drawn at {drawn:.0}",
        end.w,
        2.0 * px_bytes
    );
    // Held: the last second is one flat stretch.
    let flat_from = queued
        .iter()
        .rev()
        .take_while(|v| (v.1 - y_end).abs() < 0.5)
        .last()
        .expect("the last vertex")
        .0;
    assert!(
        secs(x_end) - secs(flat_from) >= 2.5,
        "expected sk_wmem_queued flat over the 3 s hold, flat for {:.2} s",
        secs(x_end) - secs(flat_from)
    );
    let sndbuf = series("sk_sndbuf");
    assert!(
        sndbuf.len() >= 2 && secs(sndbuf.last().unwrap().0) + 2.0 * px_s >= last_snapshot_s,
        "expected the sk_sndbuf line drawn to the end: {sndbuf:?}"
    );

    // Every socket: the receiver's panel is not scaled by a TSQ limit it never neared, and
    // both are named as `report` names them.
    let all = tmp_path("stalled-all.svg");
    sockmem(&["plot", p, "-o", path_str(&all)]).assert_success();
    let svg = fs::read_to_string(&all).expect("the SVG written");
    assert_senders_as_report(&path, &svg);
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
    for line in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series tsq_limit"))
    {
        let s = line.attribute("data-sock").expect("data-sock");
        assert_eq!(
            s, id,
            "only the sender neared its TSQ limit; a tsq_limit line for sock {s}"
        );
    }
    for f in [&path, &svg_path, &all] {
        let _ = fs::remove_file(f);
    }
}
