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
        .expect("probe --json output to have a \"hooks\" array")
}

/// The reason code of an unavailable backend (`probe --json`'s `code`).
fn code<'a>(hook: &'a Value, backend: &str) -> Option<&'a str> {
    hook["backends"]
        .as_array()
        .expect("each probed hook to have a \"backends\" array")
        .iter()
        .find(|b| b["backend"] == backend)
        .and_then(|b| b["code"].as_str())
}

fn status<'a>(hook: &'a Value, backend: &str) -> (&'a str, &'a str) {
    let b = hook["backends"]
        .as_array()
        .expect("each probed hook to have a \"backends\" array")
        .iter()
        .find(|b| b["backend"] == backend)
        .unwrap_or_else(|| panic!("hook {hook} lacks backend {backend}"));
    (
        b["status"]
            .as_str()
            .expect("each backend of a hook to have a string \"status\""),
        b["detail"]
            .as_str()
            .expect("each backend of a hook to have a string \"detail\""),
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
    // Every kernel of the matrix has the softirq tracepoints sender attribution relies on.
    let softirq_tp = Path::new("/sys/kernel/tracing/events/irq/softirq_entry").exists()
        || Path::new("/sys/kernel/debug/tracing/events/irq/softirq_entry").exists();
    if softirq_tp {
        assert_eq!(
            p["softirq_tracked"].as_bool(),
            Some(true),
            "expected softirq tracking where irq:softirq_entry exists: {}",
            p["softirq_reason"]
        );
    }
    for h in hooks(&p) {
        let name = h["hook"]
            .as_str()
            .expect("each probed hook to have a string \"hook\" name");
        let statuses: Vec<(&str, &str)> = BACKENDS.iter().map(|b| status(h, b)).collect();
        // Every backend that was tried says why not, or what it attached to.
        for (b, (s, detail)) in BACKENDS.iter().zip(&statuses) {
            assert!(
                ["chosen", "available", "unavailable", "n/a"].contains(s),
                "{name}/{b}: expected status chosen, available, unavailable or n/a, got {s}"
            );
            assert!(
                !detail.is_empty(),
                "{name}/{b} ({s}): expected an explanation, got none"
            );
            if *b == "kprobe" && !kprobe_pmu && *s != "n/a" {
                assert_eq!(
                    *s, "unavailable",
                    "{name}: expected kprobe unavailable without a kprobe PMU, got {s} ({detail})"
                );
                assert_eq!(
                    code(h, b),
                    Some("kprobes_unsupported"),
                    "{name}: expected the kprobe reason code kprobes_unsupported ({detail})"
                );
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
            "{name}: expected one backend chosen if any works, none otherwise: {statuses:?}"
        );
    }
    // The packet path has tracepoints on every kernel sockmem supports.
    for must in ["dev_queue_xmit", "qdisc_enqueue", "driver_xmit", "skb_free"] {
        let h = hooks(&p)
            .iter()
            .find(|h| h["hook"] == must)
            .unwrap_or_else(|| panic!("expected probe to list hook {must}"));
        assert!(
            h["chosen"].is_string(),
            "expected {must} to attach somehow: {h}"
        );
    }
}

#[test]
fn trace_uses_the_backends_probe_chooses() {
    let p = probe();
    let out = run_sockmem(
        &["trace", "--json", "--duration", "0.5", "--port", "21401"],
        Duration::from_secs(120),
    );
    out.assert_no_panic();
    out.assert_success();
    let trace = out.json();
    let attached = trace.attached_hooks();
    for h in hooks(&p) {
        let name = h["hook"]
            .as_str()
            .expect("each probed hook to have a string \"hook\" name");
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
        let applicable: Vec<&Value> = hooks(&p)
            .iter()
            .filter(|h| status(h, backend).0 != "n/a")
            .collect();
        let unavailable: Vec<&str> = applicable
            .iter()
            .filter(|h| status(h, backend).0 == "unavailable")
            .map(|h| {
                h["hook"]
                    .as_str()
                    .expect("each probed hook to have a string \"hook\" name")
            })
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
        if unavailable.len() == applicable.len() {
            // Nowhere available: the error names every hook and why, as probe does.
            out.assert_code(1);
            assert!(
                out.stderr
                    .contains(&format!("backend `{backend}` is not available"))
                    && out.stderr.contains("sockmem probe"),
                "--backend {backend}: expected a clear error, got: {}",
                out.describe()
            );
            for hook in &unavailable {
                let (_, why) = status(
                    hooks(&p)
                        .iter()
                        .find(|h| h["hook"] == *hook)
                        .expect("the unavailable hook among the probed ones"),
                    backend,
                );
                assert!(
                    out.stderr.contains(&format!("  {hook}: {why}")),
                    "--backend {backend}: the error should give probe's reason for {hook} ({why}): {}",
                    out.describe()
                );
            }
            continue;
        }
        out.assert_success();
        let attached = out.json().attached_hooks();
        for h in hooks(&p) {
            let name = h["hook"]
                .as_str()
                .expect("each probed hook to have a string \"hook\" name");
            let got = attached
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.as_str());
            let expected = match status(h, backend).0 {
                // Hooks without this backend keep their own choice.
                "n/a" => h["chosen"].as_str(),
                "unavailable" => None,
                _ => Some(backend),
            };
            assert_eq!(
                got, expected,
                "--backend {backend}: expected hook {name} attached via {expected:?}, got {got:?}"
            );
            if expected.is_none() {
                assert!(
                    out.stderr.contains(&format!("hook `{name}` unavailable")),
                    "--backend {backend}: stderr should say {name} is unavailable: {}",
                    out.describe()
                );
            }
        }
    }
}

/// The same transfer seen through every backend this kernel offers, at once: at the hooks where
/// the backends observe the same moment, the same skb must show the same length and counters.
#[test]
fn backends_agree_on_the_same_transfer() {
    const P: u16 = 21403;
    // Hooks every backend observes at the same moment (function entry, or the tracepoint at its
    // top). Not qdisc_enqueue: the kprobe sees every attempt, the others successful enqueues only.
    const COMPARED: [&str; 2] = ["dev_queue_xmit", "driver_xmit"];
    let p = probe();
    let usable: Vec<&str> = BACKENDS
        .iter()
        .copied()
        .filter(|b| {
            COMPARED.iter().all(|hook| {
                let h = hooks(&p)
                    .iter()
                    .find(|h| h["hook"] == *hook)
                    .unwrap_or_else(|| panic!("expected probe to list hook {hook}"));
                matches!(status(h, b).0, "chosen" | "available")
            })
        })
        .collect();
    if usable.len() < 2 {
        eprintln!(
            "backends_agree: skipped: this kernel offers only {usable:?} for {COMPARED:?} \
             (kprobes: {}), nothing to compare",
            p["kprobes"]
        );
        return;
    }
    let pair = NetnsPair::with_tbf("agree", 103);
    // Every tracer attached (Tracer::start_on waits for its ready file) before the traffic.
    let tracers: Vec<(&str, Tracer)> = usable
        .iter()
        .map(|b| {
            // Skbs are matched across backends by their kernel address.
            let args = [
                "trace",
                "--json",
                "--kernel-addrs",
                "--port",
                &P.to_string(),
            ];
            (*b, Tracer::start_on(&args, Some(b)))
        })
        .collect();
    let key = tcp_transfer(&pair, P, "smtx-agree", 2 * 1024 * 1024).key;
    std::thread::sleep(SETTLE);

    // (hook, skb) → the (len, wmem_queued, wmem_alloc) seen each time.
    type Seen = std::collections::BTreeMap<(String, String), Vec<(u64, i64, i64)>>;
    let mut seen: Vec<(&str, Seen)> = Vec::new();
    for (b, t) in tracers {
        let trace = t.stop_checked().json();
        assert_eq!(
            trace.summary_u64("lost"),
            0,
            "{b}: expected no lost events (a comparison of the backends needs every event)"
        );
        let mut m = Seen::new();
        for ev in trace.events_for(&key) {
            let h = hook(ev);
            if COMPARED.contains(&h) {
                let skb = get_opt_str(ev, "skb")
                    .expect("every dev_queue_xmit and driver_xmit event to carry its skb")
                    .to_owned();
                m.entry((h.to_owned(), skb)).or_default().push((
                    get_opt_u64(ev, "len").unwrap_or(0),
                    get_i64(ev, "wmem_queued"),
                    get_i64(ev, "wmem_alloc"),
                ));
            }
        }
        seen.push((b, m));
    }
    let (base_name, base) = &seen[0];
    for (name, other) in &seen[1..] {
        // Observations of one skb are compared as multisets: a probe can miss a firing (the
        // kernel skips a BPF program that would nest in another on the same CPU), which would
        // shift an in-order comparison.
        let (mut compared, mut same_len, mut same_counters) = (0, 0, 0);
        let mut differing = Vec::new();
        for (k, a) in base {
            let Some(b) = other.get(k) else { continue };
            compared += a.len().min(b.len());
            same_len += multiset_common(a.iter().map(|x| x.0), b.iter().map(|y| y.0));
            let common = multiset_common(a.iter().copied(), b.iter().copied());
            same_counters += common;
            if common < a.len().min(b.len()) && differing.len() < 3 {
                differing.push(format!("{k:?}: {a:?} vs {b:?}"));
            }
        }
        eprintln!(
            "backends_agree: {base_name} vs {name}: {compared} skb observations in common, \
             {same_len} same length, {same_counters} same counters"
        );
        assert!(
            compared >= 50,
            "{base_name} vs {name}: expected >= 50 skb observations in common, got {compared}"
        );
        assert!(
            same_len * 100 >= compared * 98,
            "{base_name} vs {name}: expected equal lengths for >= 98% of {compared} observations, \
             got {same_len}, e.g. {differing:?}"
        );
        // Another CPU may process an ACK between two backends' probes of one skb; allow 5%.
        assert!(
            same_counters * 100 >= compared * 95,
            "{base_name} vs {name}: expected equal counters for >= 95% of {compared} \
             observations, got {same_counters}, e.g. {differing:?}"
        );
    }
}

/// How many items two sequences have in common, counting repeats.
fn multiset_common<T: Ord>(a: impl Iterator<Item = T>, b: impl Iterator<Item = T>) -> usize {
    let mut counts = std::collections::BTreeMap::new();
    for x in a {
        *counts.entry(x).or_insert(0usize) += 1;
    }
    let mut common = 0;
    for y in b {
        if let Some(n) = counts.get_mut(&y) {
            if *n > 0 {
                *n -= 1;
                common += 1;
            }
        }
    }
    common
}
