//! Every program loads with the heaviest filters sockmem accepts, on every backend: the filters
//! run inside every hook, so a filter the verifier finds too complex would silently cost a hook
//! (an IPv6 `--addr` once made `qdisc_dequeue` "too large" on 6.18). `--strict` turns any such
//! load failure into an error, so the run itself is the check.

mod support;

use std::time::Duration;

use support::*;

/// The most of everything: eight address ranges (IPv4 ones count twice, also as IPv4-mapped
/// IPv6), eight ports, a protocol, a pid, a command name and an interface.
const HEAVY: &[&str] = &[
    "-a",
    "fd00::/64",
    "-a",
    "2001:db8::/32",
    "-a",
    "::ffff:198.18.0.1",
    "-a",
    "198.18.0.0/15",
    "-a",
    "10.0.0.0/8",
    "-P",
    "1",
    "-P",
    "2",
    "-P",
    "3",
    "-P",
    "4",
    "-P",
    "5",
    "-P",
    "6",
    "-P",
    "7",
    "-P",
    "8",
    "--tcp",
    "-c",
    "nosuchcommand",
    "-i",
    "lo",
];

fn run(command: &str) -> CmdOutput {
    let mut args = vec![command, "--strict", "--duration", "1"];
    args.extend_from_slice(HEAVY);
    let backend = test_backend();
    if let Some(b) = &backend {
        args.extend_from_slice(&["--backend", b]);
    }
    let out = run_sockmem(&args, Duration::from_secs(300));
    out.assert_no_panic();
    out
}

#[test]
fn trace_loads_every_hook_with_the_heaviest_filters() {
    let out = run("trace");
    out.assert_success();
    assert!(
        !out.stderr.contains("did not load"),
        "expected no load failure: {}",
        out.stderr
    );
}

#[test]
fn hist_loads_every_hook_with_the_heaviest_filters() {
    let out = run("hist");
    out.assert_success();
    assert!(
        !out.stderr.contains("did not load"),
        "expected no load failure: {}",
        out.stderr
    );
}
