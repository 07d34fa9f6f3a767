//! `sockmem probe` and `--backend`: the choice of attach mechanism per hook, checked against
//! the running kernel (real loads and attaches, no mocks).

mod support;

use std::{path::Path, time::Duration};

use serde_json::Value;
use support::*;

const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];

fn probe() -> Value {
    let out = run_sockmem(&["probe", "--json"], Duration::from_secs(120));
    out.assert_no_panic();
    out.assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("probe --json: {e}: {}", out.stdout))
}

fn hooks(p: &Value) -> &Vec<Value> {
    p["hooks"]
        .as_array()
        .expect("probe output has a hooks array")
}

fn status<'a>(hook: &'a Value, backend: &str) -> (&'a str, &'a str) {
    let b = hook["backends"]
        .as_array()
        .expect("hook has backends")
        .iter()
        .find(|b| b["backend"] == backend)
        .unwrap_or_else(|| panic!("hook {hook} lacks backend {backend}"));
    (
        b["status"].as_str().expect("status"),
        b["detail"].as_str().expect("detail"),
    )
}

#[test]
fn probe_explains_every_hook_and_chooses_the_best_available() {
    let p = probe();
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    assert_eq!(
        p["kprobes"].as_bool(),
        Some(kprobe_pmu),
        "expected probe's kprobe support to match the kprobe PMU's presence ({kprobe_pmu}): {p}"
    );
    for h in hooks(&p) {
        let name = h["hook"].as_str().expect("hook name");
        let statuses: Vec<(&str, &str)> = BACKENDS.iter().map(|b| status(h, b)).collect();
        // Every backend that was tried says why not, or what it attached to.
        for (b, (s, detail)) in BACKENDS.iter().zip(&statuses) {
            assert!(
                ["chosen", "available", "unavailable", "n/a"].contains(s),
                "{name}/{b}: unexpected status {s}"
            );
            assert!(!detail.is_empty(), "{name}/{b} ({s}) has no explanation");
            if *b == "kprobe" && !kprobe_pmu && *s != "n/a" {
                assert_eq!(*s, "unavailable", "{name}: kprobe without a kprobe PMU");
                assert!(detail.contains("CONFIG_KPROBES"), "{name}: {detail}");
            }
        }
        // The chosen backend is the first one that works, in the order fentry, kprobe, tracepoint.
        let first_ok = BACKENDS
            .iter()
            .zip(&statuses)
            .find(|(_, (s, _))| *s == "chosen" || *s == "available")
            .map(|(b, _)| *b);
        assert_eq!(
            h["chosen"].as_str(),
            first_ok,
            "{name}: expected the first working backend {first_ok:?} chosen, got {}",
            h["chosen"]
        );
        let chosen = statuses.iter().filter(|(s, _)| *s == "chosen").count();
        assert_eq!(
            chosen,
            usize::from(first_ok.is_some()),
            "{name}: {statuses:?}"
        );
    }
    // The packet path has tracepoints on every kernel sockmem supports.
    for must in ["dev_queue_xmit", "qdisc_enqueue", "driver_xmit", "skb_free"] {
        let h = hooks(&p).iter().find(|h| h["hook"] == must).expect(must);
        assert!(
            h["chosen"].is_string(),
            "expected {must} to attach somehow: {h}"
        );
    }
}

#[test]
fn trace_uses_the_backends_probe_chooses() {
    let p = probe();
    let ready = tmp_path("ready");
    let out = run_sockmem(
        &[
            "trace",
            "--json",
            "--duration",
            "0.5",
            "--port",
            "21401",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    out.assert_no_panic();
    out.assert_success();
    let trace = out.json();
    let attached = trace.attached_hooks();
    for h in hooks(&p) {
        let name = h["hook"].as_str().unwrap();
        let from_trace = attached
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_str());
        assert_eq!(
            from_trace,
            h["chosen"].as_str(),
            "{name}: trace attached via {from_trace:?}, probe chose {}",
            h["chosen"]
        );
    }
}

#[test]
fn forcing_a_backend_uses_it_or_explains_why_not() {
    let p = probe();
    for backend in BACKENDS {
        let unavailable: Vec<&str> = hooks(&p)
            .iter()
            .filter(|h| status(h, backend).0 == "unavailable")
            .map(|h| h["hook"].as_str().unwrap())
            .collect();
        let out = run_sockmem(
            &[
                "trace",
                "--json",
                "--duration",
                "0.3",
                "--backend",
                backend,
                "--port",
                "21402",
            ],
            Duration::from_secs(120),
        );
        out.assert_no_panic();
        if unavailable.is_empty() {
            out.assert_success();
            for (hook, got) in out.json().attached_hooks() {
                let h = hooks(&p)
                    .iter()
                    .find(|h| h["hook"] == hook.as_str())
                    .unwrap();
                // Hooks without this backend keep their own choice.
                let expected = if status(h, backend).0 == "n/a" {
                    h["chosen"].as_str().unwrap().to_owned()
                } else {
                    backend.to_owned()
                };
                assert_eq!(got, expected, "--backend {backend}: hook {hook}");
            }
        } else {
            out.assert_code(1);
            assert!(
                out.stderr
                    .contains(&format!("backend `{backend}` is not available"))
                    && out.stderr.contains("sockmem probe"),
                "--backend {backend}: expected a clear error, got: {}",
                out.describe()
            );
            for hook in unavailable {
                assert!(
                    out.stderr.contains(&format!("  {hook}: ")),
                    "--backend {backend}: the error should name hook {hook}: {}",
                    out.describe()
                );
            }
        }
    }
}
