//! Integration tests of `sockmem record` and `sockmem trace --input`.
//!
//! One traced run serves every test (it is made by the first test that needs it): a `record`
//! and a live `trace --json` started together with the same port filter, then one TCP transfer
//! over a veth with a tbf qdisc (198.18.191.0/24), its socket held open while both are stopped
//! with SIGTERM (so both snapshot it at exit). The replay
//! must print the live run's events; damaged copies of the recording must give clear errors.
//! Must run as root on a kernel with BTF.

mod support;

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

const PORT: u16 = 27001;
const BYTES: u64 = 1024 * 1024;

struct Recorded {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The live `trace --json` of the same run.
    live: JsonTrace,
    /// The transfer's sending socket.
    key: SockKey,
    /// The interface its skbs left by.
    tx_if: String,
    /// Events in the recording, as `record` said at exit.
    recorded_events: u64,
}

fn recorded() -> &'static Recorded {
    static RUN: OnceLock<Recorded> = OnceLock::new();
    RUN.get_or_init(|| {
        let pair = NetnsPair::with_tbf("rec", 191);
        let path = tmp_path("run.smrec");
        let port = PORT.to_string();
        let p = path.to_str().expect("a UTF-8 temporary path");
        // The sender's socket stays open until both have stopped: both snapshot it at exit.
        let (flow, outs) = traced_by(
            &[
                &["record", "-o", p, "-P", &port],
                &["trace", "--json", "-P", &port],
            ],
            || {
                let opts = TcpFlowOpts::bytes(BYTES).hold_open();
                let flow = TcpFlow::start(&pair, PORT, "smrec-tx", opts);
                flow.wait_received(BYTES, IO_TIMEOUT);
                flow
            },
        );
        let transfer = flow.finish_transfer();
        let (record, live) = (&outs[0], &outs[1]);
        let recorded_events = record
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("sockmem: recorded ")?.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "expected `sockmem: recorded N events` on record's stderr: {}",
                    record.describe()
                )
            });
        let bytes = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "expected the recording at {} after record exited: {e}",
                path.display()
            )
        });
        Recorded {
            path,
            bytes,
            live: live.json(),
            key: transfer.key,
            tx_if: pair.tx_if.clone(),
            recorded_events,
        }
    })
}

/// `sockmem <args>` to completion (a replay loads no program: seconds at most).
fn sockmem(args: &[&str]) -> CmdOutput {
    run_sockmem(args, Duration::from_secs(120))
}

/// `trace --input <file> --json <extra>`, checked to succeed.
fn replay(file: &Path, extra: &[&str]) -> JsonTrace {
    let mut args = vec!["trace", "--input", file.to_str().expect("UTF-8"), "--json"];
    args.extend_from_slice(extra);
    let out = sockmem(&args);
    out.assert_no_panic();
    out.assert_success();
    out.json()
}

/// `trace --input <file> --json <filters>` where the filters let nothing through: exit code 1 and
/// a line naming them, as `report`, `plot` and `export` (tests/report.rs); the output is
/// written all the same.
fn replay_matching_nothing(file: &Path, filters: &[&str]) -> JsonTrace {
    let mut args = vec!["trace", "--input", file.to_str().expect("UTF-8"), "--json"];
    args.extend_from_slice(filters);
    let out = sockmem(&args);
    out.assert_no_panic();
    out.assert_code(1);
    let named = format!("matches the filters {}", filters.join(" "));
    assert!(out.stderr.contains(&named), "{}", out.describe());
    out.json()
}

/// What of an event two sockmems tracing the same run agree on exactly: everything but the
/// times (each program reads the clock itself: `ts_ns`, `time_s`, and the durations between its
/// own readings, with the `info` text showing them), the socket id (each sockmem numbers the
/// sockets it sees) and the counters (see [`replay_equals_the_live_trace`]).
fn identity(e: &Value) -> String {
    let mut m = e.as_object().expect("an event object").clone();
    for k in [
        "ts_ns",
        "time_s",
        "sock",
        "duration_ns",
        "info",
        "wmem_queued",
        "wmem_alloc",
        "sndbuf",
        "wmem_queued_delta",
        "wmem_alloc_delta",
    ]
    .into_iter()
    .chain(ATTRIBUTION)
    {
        m.remove(k);
    }
    Value::Object(m).to_string()
}

/// Who an event is attributed to: each set of programs keeps its own owners map, and at the
/// start of a connection one set can know the sender of an skb the other does not yet (a
/// 6.12 tracepoint cell: 3 dequeues `unknown` live, attributed in the replay). Compared apart.
const ATTRIBUTION: [&str; 6] = ["owner", "pid", "tgid", "comm", "cgroup", "cgroup_id"];

fn attribution(e: &Value) -> Vec<Value> {
    ATTRIBUTION.iter().map(|k| e[*k].clone()).collect()
}

fn counters(e: &Value) -> (Value, Value, Value) {
    (
        e["wmem_queued"].clone(),
        e["wmem_alloc"].clone(),
        e["sndbuf"].clone(),
    )
}

/// How far events may sit from their live twin (see [`replay_equals_the_live_trace`]).
const MAX_DISPLACEMENT: usize = 32;

/// How the replay orders the events both traces have, against the live order.
struct Order {
    /// Events out of order: how many would have to move to put the rest in live order.
    moved: usize,
    /// Events more than [`MAX_DISPLACEMENT`] places from their live place (a 6.1 kprobe cell
    /// of the VM matrix put one 68 places off: a kretprobe's event, reserved when the blocked
    /// call returned, in another order relative to the other CPU's events in each ring).
    far: usize,
}

/// `places`: each event's place in the replay, in live order, for the events both traces have.
/// Places are counted among those events: an event only one trace has (a program
/// skipped by the recursion guard in one of the two sets) shifts every later index by one, which
/// is no disorder (a 6.12/fentry CI cell: 1176 of 1622 events "elsewhere" by raw index, 3 with
/// other counters).
fn order(places: &[usize]) -> Order {
    let mut by_replay: Vec<usize> = (0..places.len()).collect();
    by_replay.sort_by_key(|&k| places[k]);
    let mut replay_rank = vec![0; places.len()];
    for (rank, &k) in by_replay.iter().enumerate() {
        replay_rank[k] = rank;
    }
    let far = (0..places.len())
        .filter(|&k| k.abs_diff(replay_rank[k]) > MAX_DISPLACEMENT)
        .count();
    // Longest run already in order (longest increasing subsequence of replay places, in live
    // order): everything else moved.
    let mut tails: Vec<usize> = Vec::new();
    for &j in places {
        let at = tails.partition_point(|&t| t < j);
        match tails.get_mut(at) {
            Some(t) => *t = j,
            None => tails.push(j),
        }
    }
    Order {
        moved: places.len() - tails.len(),
        far,
    }
}

/// The measure itself: a missing event is no disorder, a swapped or far-moved one is.
#[test]
fn order_counts_disorder_not_missing_events() {
    let shifted: Vec<usize> = (0..100).map(|i| i + usize::from(i > 3)).collect();
    let o = order(&shifted);
    assert_eq!((o.moved, o.far), (0, 0));
    let mut swapped: Vec<usize> = (0..100).collect();
    swapped.swap(10, 11);
    let o = order(&swapped);
    assert_eq!((o.moved, o.far), (1, 0));
    // The live trace's event 60 replayed 50 places earlier: one moved, one far (the events
    // between shift by one).
    let late: Vec<usize> = (0..100)
        .map(|i| match i {
            10..60 => i + 1,
            60 => 10,
            _ => i,
        })
        .collect();
    let o = order(&late);
    assert_eq!((o.moved, o.far), (1, 1));
}

#[test]
fn replay_equals_the_live_trace() {
    let r = recorded();
    let out = replay(&r.path, &[]);
    out.assert_summary_counts_events();
    assert_eq!(
        out.summary_u64("events"),
        r.recorded_events,
        "expected the replay's summary to count every recorded event"
    );
    assert_eq!(
        out.attached_hooks(),
        r.live.attached_hooks(),
        "expected the replay's header to list the hooks and backends the live trace had"
    );
    let live = r.live.events_for(&r.key);
    let replayed = out.events_for(&r.key);
    assert!(
        live.len() >= 10,
        "expected the live trace to see the transfer's socket {}, got {} events",
        r.key,
        live.len()
    );
    assert_eq!(
        (r.live.summary_u64("lost"), out.summary_u64("lost")),
        (0, 0),
        "expected neither the live trace nor the recording to lose events"
    );
    // Two sockmems on one run are two sets of programs, each firing at every hook: the same
    // events, with the same hooks, values, senders, CPUs and skbs. But each program reads the
    // socket's counters itself, a few microseconds after the other, while another CPU may
    // change them (an ACK frees, a completion uncharges); and two events on two CPUs (or a
    // softirq arriving between the two programs) may reach the two ring buffers in either
    // order. So: every live event has its replayed twin (its k-th occurrence the k-th), near its
    // place, and nearly always with the same counters; the replay's own deltas follow its own
    // order. (That the replay prints what a live `trace` prints for the same records, byte for
    // byte, is `recording::replay`'s unit test.)
    // Nearly the same count: a 6.12 kprobe cell of the VM matrix once had one event more in
    // the live trace (2195 vs 2194): a kretprobe instance one of the two sets missed.
    // Under emulation (6.1/fentry under TCG) the replay lacked 18 of 1145: an fentry program
    // is skipped when it would nest on its CPU (the kernel's recursion guard, per program), and
    // the two sets' programs nest at different moments; so 2% there.
    let slack = match emulated() {
        true => (live.len() / 50).max(1),
        false => (live.len() / 500).max(1),
    };
    assert!(
        live.len().abs_diff(replayed.len()) <= slack,
        "expected the replay to have the live trace's {} events of {} (±{slack}), got {}",
        live.len(),
        r.key,
        replayed.len()
    );
    let mut twins: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (j, e) in replayed.iter().enumerate() {
        twins.entry(identity(e)).or_default().push_back(j);
    }
    // Each live event's place in the replay, in live order.
    let mut places: Vec<usize> = Vec::with_capacity(live.len());
    let (mut counters_differ, mut owners_differ) = (0, 0);
    let mut missing = 0;
    for (i, e) in live.iter().enumerate() {
        let Some(j) = twins.get_mut(&identity(e)).and_then(VecDeque::pop_front) else {
            missing += 1;
            assert!(
                missing <= slack,
                "expected live event #{i} of {} in the replay (more than {slack} missing): {e}",
                r.key
            );
            continue;
        };
        places.push(j);
        counters_differ += usize::from(counters(e) != counters(replayed[j]));
        owners_differ += usize::from(attribution(e) != attribution(replayed[j]));
    }
    let Order { moved, far } = order(&places);
    eprintln!(
        "record: {} events of {}: {missing} missing from the replay, {moved} out of order, {far} \
         more than {MAX_DISPLACEMENT} places off, {counters_differ} with other counters, \
         {owners_differ} attributed otherwise",
        live.len(),
        r.key
    );
    assert!(
        owners_differ * 50 <= live.len().max(50),
        "expected at most 2% of the {} events (at least 1) attributed otherwise than live, got \
         {owners_differ}",
        live.len()
    );
    assert!(
        far * 50 <= live.len().max(50),
        "expected at most 2% of the {} events (at least 1) more than {MAX_DISPLACEMENT} places \
         from where the live trace has them, got {far}",
        live.len()
    );
    assert!(
        moved * 20 <= live.len() && counters_differ * 20 <= live.len(),
        "expected at most 5% of the {} events out of order or with other counters than live, \
         got {moved} and {counters_differ}",
        live.len()
    );
    check_deltas(&replayed, "wmem_queued", "wmem_queued_delta")
        .and_then(|_| check_deltas(&replayed, "wmem_alloc", "wmem_alloc_delta"))
        .unwrap_or_else(|e| panic!("expected the replay's deltas to follow its order: {e}"));
    let hooks = hook_counts(replayed.iter().copied());
    for h in ["tcp_sendmsg", "qdisc_enqueue", "qdisc_dequeue"] {
        assert!(
            hooks.contains_key(h) || !r.live.is_attached(h),
            "expected {h} events for {} in the replay: {hooks:?}",
            r.key
        );
    }
    // The snapshot at exit: the idle socket as the kernel reported it to each.
    let snaps = out.snapshots_of(out.sock_of(&r.key));
    let live_snaps = r.live.snapshots_of(r.live.sock_of(&r.key));
    let (Some(snap), Some(live_snap)) = (snaps.last(), live_snaps.last()) else {
        panic!(
            "expected an exit snapshot of {} in the replay ({}) and live ({})",
            r.key,
            snaps.len(),
            live_snaps.len()
        )
    };
    for f in ["ino", "state", "agreement"] {
        assert_eq!(
            snap[f], live_snap[f],
            "expected the replayed snapshot's {f} to be the live one's\nlive:   {live_snap}\n\
             replay: {snap}"
        );
    }
    for f in ["w", "t", "tb"] {
        assert_eq!(
            snap["skmem"][f], live_snap["skmem"][f],
            "expected the replayed snapshot's skmem {f} to be the live one's (an idle socket)\n\
             live:   {live_snap}\nreplay: {snap}"
        );
    }
    // The exit table has the socket, as the live one does.
    let row = out.socket_line(out.sock_of(&r.key));
    let live_row = r.live.socket_line(r.live.sock_of(&r.key));
    // Its event count within the events' slack above (6.12/tracepoint: 2635 vs 2637).
    let (events, live_events) = (get_u64(row, "events"), get_u64(live_row, "events"));
    assert!(
        events.abs_diff(live_events) as usize <= slack,
        "expected the replay's socket line to count the live one's events (±{slack})\nlive:   \
         {live_row}\nreplay: {row}"
    );
    for f in ["destroyed", "pid", "comm"] {
        assert_eq!(
            row[f], live_row[f],
            "expected the replay's socket line {f} to be the live one's\nlive:   {live_row}\nreplay: {row}"
        );
    }
}

#[test]
fn replay_filters_apply_after_the_fact() {
    let r = recorded();
    let all = replay(&r.path, &[]);
    let none = replay_matching_nothing(&r.path, &["--port", "1"]);
    assert_eq!(
        none.events.len(),
        0,
        "expected no event for port 1 in a recording of port {PORT}"
    );
    assert_eq!(none.summary_u64("events"), 0);
    let on_iface = replay(&r.path, &["--iface", &r.tx_if]);
    on_iface.assert_summary_counts_events();
    assert!(
        !on_iface.events.is_empty() && on_iface.events.len() <= all.events.len(),
        "expected some but not more of the {} events through {}, got {}",
        all.events.len(),
        r.tx_if,
        on_iface.events.len()
    );
    for e in &on_iface.events {
        if has_skb(e) {
            assert_eq!(
                get_opt_str(e, "iface"),
                Some(r.tx_if.as_str()),
                "expected only skbs on {} under --iface: {e}",
                r.tx_if
            );
        }
    }
    let tcp_only = replay_matching_nothing(&r.path, &["--udp"]);
    assert_eq!(tcp_only.events.len(), 0, "a TCP transfer has no UDP events");
    // Text output too, and without root: no program is loaded.
    let copy = std::env::temp_dir().join(format!("sockmem-rec-{}.smrec", std::process::id()));
    fs::write(&copy, &r.bytes).expect("a copy of the recording in the temporary directory");
    let as_nobody = unprivileged(&["trace", "--input", copy.to_str().expect("UTF-8")]);
    let _ = fs::remove_file(&copy);
    as_nobody.assert_no_panic();
    as_nobody.assert_success();
    let lines = as_nobody.stdout.lines().count();
    assert!(
        lines > all.events.len(),
        "expected a text header, one line per event and the socket table as an unprivileged \
         user, got {lines} lines for {} events: {}",
        all.events.len(),
        as_nobody.describe()
    );
}

/// `sockmem <args>` as user nobody.
fn unprivileged(args: &[&str]) -> CmdOutput {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut cmd = match setpriv {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sockmem_bin(),
            ]);
            c
        }
        None => {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", sockmem_bin()]);
            c
        }
    };
    cmd.args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

/// `trace --input` of `bytes`: exit code 1, no panic, one `sockmem:` message containing every
/// one of `words`.
fn assert_refused(what: &str, bytes: &[u8], words: &[&str]) {
    let f = tmp_path(what);
    fs::write(&f, bytes).expect("writing a damaged copy");
    let out = sockmem(&["trace", "--input", f.to_str().expect("UTF-8"), "--json"]);
    let _ = fs::remove_file(&f);
    out.assert_no_panic();
    out.assert_code(1);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("sockmem: ") && words.iter().all(|w| l.contains(w))),
        "{what}: expected a `sockmem: ` line with {words:?}, got {}",
        out.describe()
    );
}

#[test]
fn damaged_or_foreign_files_are_clear_errors() {
    let r = recorded();
    let b = &r.bytes;
    // The frame after the header (layout in README: magic, u16 version, then kind u8 + u32
    // length + payload) gets a kind no version has.
    let header_len = u32::from_le_bytes(b[11..15].try_into().expect("4 bytes")) as usize;
    // Cut inside the header: nothing is readable. (Cut later: read up to where it ends, see
    // `a_killed_record_leaves_a_readable_recording`.)
    assert_refused(
        "truncated",
        &b[..15 + header_len - 3],
        &["truncated before its header ended"],
    );
    let mut corrupt = b.clone();
    corrupt[15 + header_len] = 0xee;
    assert_refused(
        "corrupt",
        &corrupt,
        &["corrupt recording", "frame kind 238"],
    );
    // Not a recording at all.
    let json = r.live.header.to_string();
    assert_refused("foreign", json.as_bytes(), &["not a sockmem recording"]);
    assert_refused("empty", b"", &["not a sockmem recording", "empty"]);
    let out = sockmem(&["trace", "--input", "/nonexistent/run.smrec"]);
    out.assert_no_panic();
    out.assert_code(1);
    assert!(
        out.stderr.contains("/nonexistent/run.smrec"),
        "expected the missing file named: {}",
        out.describe()
    );
}

#[test]
fn a_newer_format_version_is_refused_by_name() {
    let r = recorded();
    let mut newer = r.bytes.clone();
    let ours = u16::from_le_bytes([newer[8], newer[9]]);
    newer[8..10].copy_from_slice(&(ours + 1).to_le_bytes());
    assert_refused(
        "newer",
        &newer,
        &[
            "newer sockmem",
            &format!("format version {}", ours + 1),
            &format!("format version {ours}"),
        ],
    );
}

/// `record` killed with SIGKILL mid-run (no trailer written, the file not put in place): the
/// error for the missing file names what it left, and `report`, `trace --input` and `plot` read
/// that up to where it ends, warning what is missing. The transfer ended seconds before the
/// kill, so every byte it sent is in what was left (`record` hands its writes to the file at
/// least every second): the report's bytes sent are the flow's own count.
#[test]
fn a_killed_record_leaves_a_readable_recording() {
    use std::os::unix::process::ExitStatusExt as _;
    const KILLED_PORT: u16 = 27002;
    let pair = NetnsPair::new("reckil", 216);
    let path = tmp_path("killed.smrec");
    let p = path.to_str().expect("UTF-8");
    let port = KILLED_PORT.to_string();
    let tracer = Tracer::start(&["record", "-o", p, "-P", &port, "--snapshot", "0.2"]);
    let flow = TcpFlow::start(&pair, KILLED_PORT, "smkill-tx", TcpFlowOpts::bytes(BYTES));
    flow.wait_received(BYTES, IO_TIMEOUT);
    let transfer = flow.finish_transfer();
    std::thread::sleep(Duration::from_secs(3));
    tracer.signal(libc::SIGKILL);
    let out = tracer.wait(Duration::from_secs(20));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        out.describe()
    );
    assert!(!path.exists(), "a killed record puts no file in place");

    // The missing file's error points at what the run left.
    let missing = sockmem(&["report", p]);
    missing.assert_no_panic();
    missing.assert_code(1);
    let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
    let left = fs::read_dir(path.parent().expect("a directory"))
        .expect("the directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!(".{name}.sockmem-")))
        })
        .unwrap_or_else(|| panic!("expected the killed record's file beside {p}"));
    let l = left.to_str().expect("UTF-8");
    assert!(
        missing.stderr.contains("was killed") && missing.stderr.contains(l),
        "expected the error to name {l}: {}",
        missing.describe()
    );

    let report = sockmem(&["report", l, "--json"]);
    report.assert_no_panic();
    report.assert_success();
    for words in ["truncated", "NOT known"] {
        assert!(
            report.stderr.contains(words),
            "expected a warning with `{words}`: {}",
            report.describe()
        );
    }
    let doc: Value = serde_json::from_str(&report.stdout).expect("report --json");
    assert_eq!(doc["complete"], false, "losses are not known: {doc:#}");
    eprintln!(
        "killed record: {} events readable from {l}; stderr: {}",
        doc["events"],
        report.stderr.trim()
    );
    let trace = replay(&left, &[]);
    assert_eq!(
        doc["events"].as_u64(),
        Some(trace.events.len() as u64),
        "report and trace --input read the same prefix"
    );
    assert!(!trace.events_for(&transfer.key).is_empty());
    if trace.is_attached("sendmsg_ret") {
        let row = doc["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| transfer.key.matches(r))
            .unwrap_or_else(|| panic!("expected a row for {}: {doc:#}", transfer.key));
        assert_eq!(
            row["bytes_sent"].as_u64(),
            Some(BYTES),
            "expected the {BYTES} bytes the flow wrote, all recorded before the kill: {row}"
        );
    }
    let svg = tmp_path("killed.svg");
    let plot = sockmem(&["plot", l, "-o", svg.to_str().expect("UTF-8")]);
    plot.assert_no_panic();
    plot.assert_success();
    assert!(svg.exists(), "the plot of what was left");
    let _ = fs::remove_file(&left);
    let _ = fs::remove_file(&svg);
}
