//! `sockmem demo`: each demo builds its own network, runs its traffic, records it, and checks
//! its claims against the kernel's view (sock_diag, `tc -s`); here each must hold, the numbers
//! it prints must agree with each other, and its recording must replay.

mod support;

use std::{path::Path, process::Command, time::Duration};

use support::*;

const DEMO_TIMEOUT: Duration = Duration::from_secs(240);

fn sockmem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockmem"))
}

/// Runs one demo for `secs` into `dir`; returns its stdout.
fn run_demo(name: &str, dir: &Path) -> String {
    let out = run_with_timeout(
        sockmem().args(["demo", name, "-d", "3", "-o"]).arg(dir),
        DEMO_TIMEOUT,
    );
    out.assert_no_panic();
    assert!(
        out.stdout.contains(&format!("{name}: as expected")),
        "demo {name} did not show what it should:\n{}\n{}",
        out.stdout,
        out.describe()
    );
    out.assert_success();
    out.stdout
}

/// The first number after `prefix` in `text` (commas and units not included).
fn number_after(text: &str, prefix: &str) -> f64 {
    let rest = text
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{prefix}` in:\n{text}"))
}

/// The byte size after `prefix` in `text` as the demo prints it: the bytes, and how far from
/// them it may be.
fn bytes_after(text: &str, prefix: &str) -> (f64, f64) {
    let rest = text
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
    parse_human_bytes(rest.trim_start())
        .unwrap_or_else(|| panic!("no byte size (B, KiB, MiB) after `{prefix}` in:\n{text}"))
}

/// The recording replays, and its largest counters for the demo's sender are `(queued, alloc)`.
fn replayed_maxima(rec: &Path) -> (i64, i64) {
    let out = run_with_timeout(
        sockmem()
            .args(["trace", "--json", "-P", "5299", "--input"])
            .arg(rec),
        DEMO_TIMEOUT,
    );
    out.assert_success();
    let trace = out.json();
    let mut max = (0, 0);
    for e in trace.with_port(5299) {
        // A socket being freed reads no counters (null).
        if get_u64(e, "rport") != 5299 || e["wmem_queued"].is_null() {
            continue;
        }
        max.0 = max.0.max(get_i64(e, "wmem_queued"));
        max.1 = max.1.max(get_i64(e, "wmem_alloc"));
    }
    max
}

#[test]
fn list_names_every_demo_and_an_unknown_one_is_refused() {
    let out = run_with_timeout(sockmem().args(["demo", "--list"]), DEMO_TIMEOUT);
    out.assert_success();
    for name in ["stalled-receiver", "tsq", "udp-sndbuf", "qdisc-backlog"] {
        assert!(out.stdout.contains(name), "{}", out.describe());
    }
    let out = run_with_timeout(sockmem().args(["demo", "no-such-demo"]), DEMO_TIMEOUT);
    out.assert_no_panic();
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("no demo `no-such-demo`"),
        "{}",
        out.describe()
    );
}

#[test]
fn stalled_receiver_queues_in_the_write_queue_not_below() {
    let dir = tempdir("stalled");
    let text = run_demo("stalled-receiver", &dir);
    // The demo's figure and the kernel's (sock_diag) one, both printed.
    let (shown, within) = bytes_after(&text, "sk_wmem_queued reaches");
    let (queued, alloc) = replayed_maxima(&dir.join("stalled-receiver.smrec"));
    assert!(
        (queued as f64 - shown).abs() <= within,
        "replayed max queued {queued} vs the demo's {shown} bytes (±{within}):\n{text}"
    );
    // Sent but refused by the closed window: a few skbs once, none waiting.
    assert!(alloc < queued / 4, "alloc {alloc} vs queued {queued}");
}

#[test]
fn tsq_holds_alloc_at_its_limit() {
    let dir = tempdir("tsq");
    let text = run_demo("tsq", &dir);
    let (peak, within) = bytes_after(&text, "(peak");
    let (_, alloc) = replayed_maxima(&dir.join("tsq.smrec"));
    assert!(
        (alloc as f64 - peak).abs() <= within,
        "replayed max alloc {alloc} vs the demo's peak {peak} bytes (±{within}):\n{text}"
    );
}

#[test]
fn udp_sndbuf_blocks_and_drops() {
    let dir = tempdir("udp");
    let text = run_demo("udp-sndbuf", &dir);
    let ours = number_after(&text, "the qdisc dropped");
    let tc = number_after(&text, "(tc -s:");
    assert_eq!(ours, tc, "{text}");
    let (queued, _) = replayed_maxima(&dir.join("udp-sndbuf.smrec"));
    assert_eq!(queued, 0, "UDP has no write queue");
}

#[test]
fn qdisc_backlog_sojourn_and_drops() {
    let dir = tempdir("qdisc");
    let text = run_demo("qdisc-backlog", &dir);
    // tc also counts the segments tbf cut GSO skbs into; sockmem the skbs it followed.
    let (ours, tc) = (
        number_after(&text, "the qdisc dropped"),
        number_after(&text, "(tc -s:"),
    );
    assert!(ours <= tc, "{text}");
    assert!(number_after(&text, "p99") >= 1.0, "{text}");
}

/// A fresh directory under the target dir (kept for inspection; replaced on the next run).
fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the demo's directory");
    d
}
