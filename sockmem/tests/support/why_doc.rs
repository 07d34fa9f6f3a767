//! `sockmem why --json`: ONE JSON document printed at exit (`"type":"why"`), per socket a
//! breakdown of its window by limiting cause. [`WhyDoc`] parses it, checks what holds for every
//! document (shares that add up, causes sorted and named for their protocol) and finds sockets.

use serde_json::Value;

use super::{get_str, tail};

/// Causes of a TCP socket's time, as `why` names them.
pub const TCP_CAUSES: [&str; 9] = [
    "application",
    "paced",
    "send_buffer",
    "receiver_window",
    "congestion_window",
    "tsq",
    "qdisc",
    "device",
    "sending",
];
/// Causes of a UDP socket's time.
pub const UDP_CAUSES: [&str; 4] = ["application", "send_buffer", "qdisc", "device"];

/// How far a socket's shares may add up away from 1 (rounding of the printed numbers).
pub const SHARE_SUM_TOLERANCE: f64 = 0.01;

/// The document of one `sockmem why --json` run.
#[derive(Debug)]
pub struct WhyDoc {
    pub doc: Value,
}

pub fn f64_of(v: &Value, field: &str) -> f64 {
    v.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a number in {v}"))
}

pub fn u64_of(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an unsigned integer in {v}"))
}

/// A socket entry shortened for messages (its causes, counters and timers, not its lists).
pub fn brief(sock: &Value) -> String {
    let mut s = sock.clone();
    if let Some(o) = s.as_object_mut() {
        if let Some(q) = o.get_mut("qdisc").and_then(Value::as_object_mut) {
            if let Some(a) = q.get_mut("ahead").and_then(Value::as_array_mut) {
                a.truncate(3);
            }
        }
    }
    let text = s.to_string();
    tail(&text, 3000).to_string()
}

impl WhyDoc {
    /// The whole of stdout must be one JSON object of type `why` (whitespace around it allowed).
    pub fn parse(stdout: &str) -> Result<WhyDoc, String> {
        let doc: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
            format!(
                "stdout is not one JSON document ({e}); it ends with:\n{}",
                tail(stdout, 2000)
            )
        })?;
        if doc.get("type").and_then(Value::as_str) != Some("why") {
            return Err(format!(
                "expected \"type\":\"why\", got {}",
                tail(&doc.to_string(), 500)
            ));
        }
        for f in ["sockets", "hooks"] {
            if !doc.get(f).is_some_and(Value::is_array) {
                return Err(format!("no {f:?} array in {}", tail(&doc.to_string(), 500)));
            }
        }
        if !doc.get("total").is_some_and(Value::is_object) {
            return Err("no \"total\" object".into());
        }
        Ok(WhyDoc { doc })
    }

    pub fn window_s(&self) -> f64 {
        f64_of(&self.doc, "window_s")
    }

    pub fn interval_ms(&self) -> u64 {
        u64_of(&self.doc, "interval_ms")
    }

    pub fn sockets(&self) -> &[Value] {
        self.doc["sockets"].as_array().expect("checked in parse")
    }

    pub fn total(&self) -> &Value {
        &self.doc["total"]
    }

    /// The header's entry of `hook`, if listed.
    pub fn hook(&self, hook: &str) -> Option<&Value> {
        self.doc["hooks"]
            .as_array()
            .expect("checked in parse")
            .iter()
            .find(|h| h.get("hook").and_then(Value::as_str) == Some(hook))
    }

    pub fn hook_attached(&self, hook: &str) -> bool {
        self.hook(hook)
            .and_then(|h| h.get("attached"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// The sockets whose local port is `lport` and remote port `rport`.
    pub fn sockets_at(&self, lport: u16, rport: u16) -> Vec<&Value> {
        let ends = |v: &Value, f: &str, port: u16| {
            v.get(f)
                .and_then(Value::as_str)
                .is_some_and(|a| a.rsplit_once(':').map(|(_, p)| p) == Some(&port.to_string()))
        };
        self.sockets()
            .iter()
            .filter(|s| ends(s, "local", lport) && ends(s, "remote", rport))
            .collect()
    }

    /// The one socket with local port `lport` and remote port `rport`; panics unless there is
    /// exactly one.
    pub fn socket_at(&self, lport: u16, rport: u16) -> &Value {
        let found = self.sockets_at(lport, rport);
        assert_eq!(
            found.len(),
            1,
            "expected exactly 1 socket :{lport} -> :{rport} in the why document, got {}; \
             sockets: {:?}",
            found.len(),
            self.sockets()
                .iter()
                .map(|s| format!("{} -> {}", s["local"], s["remote"]))
                .collect::<Vec<_>>()
        );
        found[0]
    }

    /// The socket whose `sock` id is `sock`, if any.
    pub fn socket_by_id(&self, sock: u64) -> Option<&Value> {
        self.sockets()
            .iter()
            .find(|s| s.get("sock").and_then(Value::as_u64) == Some(sock))
    }

    /// What holds for every document: per socket (and the total) the causes are the ones of its
    /// protocol, each listed once, sorted by share descending, with `s` and `share` ≥ 0, shares
    /// adding up to 1 ± [`SHARE_SUM_TOLERANCE`], each share `s / window_s`; `dominant` is the
    /// first; `tcp` and `tsq` are objects for TCP and null for UDP; a `missing` list.
    pub fn check_invariants(&self) {
        let w = self.window_s();
        assert!(
            w > 0.0,
            "expected a positive window_s, got {w}: {}",
            tail(&self.doc.to_string(), 500)
        );
        for s in self.sockets() {
            let proto = get_str(s, "protocol");
            let allowed: &[&str] = match proto {
                "tcp" => &TCP_CAUSES,
                "udp" => &UDP_CAUSES,
                other => panic!("expected protocol \"tcp\" or \"udp\", got {other:?}: {s}"),
            };
            let sw = f64_of(s, "window_s");
            assert!(
                sw > 0.0 && sw <= w * 1.01 + 0.05,
                "expected the socket's window_s within (0, {w}] (the run's), got {sw}: {}",
                brief(s)
            );
            let what = format!("socket {} -> {}", s["local"], s["remote"]);
            check_causes(s, allowed, sw, &what);
            // Every cause of the protocol is listed (zero or not), unless named as missing.
            let missing: Vec<&str> = s["missing"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("cause").and_then(Value::as_str))
                .collect();
            for c in allowed {
                let listed = s["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x.get("cause").and_then(Value::as_str) == Some(c));
                assert!(
                    listed || missing.contains(c),
                    "{what}: expected cause {c:?} listed (every cause of {proto} is, zero or \
                     not) or named in \"missing\": {}",
                    brief(s)
                );
            }
            for f in ["tcp", "tsq"] {
                let v = s
                    .get(f)
                    .unwrap_or_else(|| panic!("no {f:?} in {}", brief(s)));
                // A TCP socket none of whose skbs was seen (stalled since before the run) has
                // no truesize to compute the TSQ limit from: then "missing" says so.
                let excused = f == "tsq" && proto == "tcp" && missing.contains(&"tsq");
                assert!(
                    v.is_object() == (proto == "tcp") || (excused && v.is_null()),
                    "expected {f:?} to be an object for TCP (or tsq named missing) and null for \
                     UDP ({proto}): {}",
                    brief(s)
                );
            }
            if let Some(tsq) = s.get("tsq").filter(|t| t.is_object()) {
                // TSQ's truesize term is the truesize of one of the socket's own skbs, each of
                // which was charged to sk_wmem_queued (and its clone to sk_wmem_alloc) whole.
                let c = &s["counters"];
                let most = u64_of(c, "queued_max").max(u64_of(c, "alloc_max"));
                let truesize = u64_of(tsq, "truesize");
                assert!(
                    truesize <= most,
                    "{what}: expected tsq.truesize ({truesize}) to be that of one of the \
                     socket's own skbs, so at most the most it ever had queued or below TCP \
                     ({most}); tsq {tsq}, counters {c}"
                );
            }
            for f in ["counters", "send", "qdisc", "device"] {
                assert!(
                    s.get(f).is_some_and(Value::is_object),
                    "expected an object {f:?} in {}",
                    brief(s)
                );
            }
            assert!(
                s.get("missing").is_some_and(Value::is_array),
                "expected a \"missing\" array in {}",
                brief(s)
            );
            let reading = get_str(s, "reading");
            assert!(
                !reading.trim().is_empty(),
                "expected a reading: {}",
                brief(s)
            );
        }
        let total = self.total();
        let tw = f64_of(total, "window_s");
        check_causes(total, &TCP_CAUSES, tw, "total");
    }
}

/// The checks of [`WhyDoc::check_invariants`] on one `causes` list.
fn check_causes(v: &Value, allowed: &[&str], window_s: f64, what: &str) {
    let causes = v
        .get("causes")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what}: no \"causes\" array in {}", brief(v)));
    assert!(!causes.is_empty(), "{what}: empty causes: {}", brief(v));
    let mut seen = Vec::new();
    let (mut sum_share, mut sum_s, mut prev) = (0.0, 0.0, f64::INFINITY);
    for c in causes {
        let name = get_str(c, "cause");
        assert!(
            allowed.contains(&name),
            "{what}: cause {name:?} is not one of {allowed:?}: {}",
            brief(v)
        );
        assert!(
            !seen.contains(&name),
            "{what}: cause {name:?} listed twice: {}",
            brief(v)
        );
        seen.push(name);
        let (s, share) = (f64_of(c, "s"), f64_of(c, "share"));
        assert!(
            s >= 0.0 && share >= 0.0,
            "{what}: negative time or share for {name}: {c}"
        );
        assert!(
            share <= prev + 1e-9,
            "{what}: causes not sorted by share descending ({name} has {share} after {prev}): {}",
            brief(v)
        );
        assert!(
            (share - s / window_s).abs() <= SHARE_SUM_TOLERANCE,
            "{what}: expected {name}'s share {share} to be its time {s} s over the window \
             {window_s} s ({:.4})",
            s / window_s
        );
        prev = share;
        sum_share += share;
        sum_s += s;
    }
    assert!(
        (sum_share - 1.0).abs() <= SHARE_SUM_TOLERANCE,
        "{what}: expected the shares to add up to 1 ± {SHARE_SUM_TOLERANCE}, got {sum_share}: {}",
        brief(v)
    );
    assert!(
        (sum_s - window_s).abs() <= SHARE_SUM_TOLERANCE * window_s,
        "{what}: expected the causes' times to add up to the window {window_s} s, got {sum_s} s"
    );
    let dominant = get_str(v, "dominant");
    assert_eq!(
        dominant,
        get_str(&causes[0], "cause"),
        "{what}: expected \"dominant\" to be the cause with the largest share: {}",
        brief(v)
    );
}

/// A socket's share of `cause` (0 if the cause is not listed: [`WhyDoc::check_invariants`]
/// checks the lists).
pub fn share_of(sock: &Value, cause: &str) -> f64 {
    sock["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c.get("cause").and_then(Value::as_str) == Some(cause))
        .map(|c| f64_of(c, "share"))
        .unwrap_or(0.0)
}

pub fn dominant(sock: &Value) -> &str {
    get_str(sock, "dominant")
}

/// `causes` as `name share, ...` (for messages).
pub fn shares(sock: &Value) -> String {
    sock["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {:.3}", c["cause"].as_str().unwrap_or("?"), c["share"]))
        .collect::<Vec<_>>()
        .join(", ")
}
