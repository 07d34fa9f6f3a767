//! `sockmem trace --json` output: header, events and summary, the socket an event belongs to,
//! and field getters that say which field was missing.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;

use super::{emulated, tail};

/// A socket's 4-tuple as sockmem prints it (local end first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockKey {
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
}

impl SockKey {
    pub fn new(local: SocketAddr, remote: SocketAddr) -> SockKey {
        SockKey {
            laddr: local.ip().to_string(),
            lport: local.port(),
            raddr: remote.ip().to_string(),
            rport: remote.port(),
        }
    }

    /// Whether `ev` is an event of this socket (same local and remote address and port).
    pub fn matches(&self, ev: &Value) -> bool {
        ev.get("laddr").and_then(Value::as_str) == Some(self.laddr.as_str())
            && ev.get("lport").and_then(Value::as_u64) == Some(u64::from(self.lport))
            && ev.get("raddr").and_then(Value::as_str) == Some(self.raddr.as_str())
            && ev.get("rport").and_then(Value::as_u64) == Some(u64::from(self.rport))
    }
}

impl fmt::Display for SockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.laddr, self.lport, self.raddr, self.rport
        )
    }
}

/// `sockmem trace --json` output: the header line, the event lines (in output order), the
/// `snapshot` lines (the kernel's view of each traced socket still open: every `--snapshot SECS`
/// among the events, and at exit), the `socket` lines (the exit table: one per socket seen)
/// and the summary line.
#[derive(Debug)]
pub struct JsonTrace {
    pub header: Value,
    pub events: Vec<Value>,
    pub snapshots: Vec<Value>,
    pub sockets: Vec<Value>,
    pub summary: Value,
}

pub(super) fn short(line: &str) -> &str {
    match line.char_indices().nth(300) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

impl JsonTrace {
    /// Every non-empty line must be a JSON object with a string `type`: first `header`, last
    /// `summary`; between them `event` and `snapshot` lines, then the `socket` lines (the exit
    /// table comes after every event and snapshot).
    pub fn parse(text: &str) -> Result<JsonTrace, String> {
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("line {}: not JSON ({e}): {}", i + 1, short(line)))?;
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {}: no string \"type\": {}", i + 1, short(line)))?
                .to_string();
            lines.push((i + 1, ty, v));
        }
        if lines.len() < 2 {
            return Err(format!(
                "expected at least a header and a summary line, got {} JSON lines; output:\n{}",
                lines.len(),
                tail(text, 2000)
            ));
        }
        let (_, first_ty, header) = lines.remove(0);
        if first_ty != "header" {
            return Err(format!(
                "first line has type {first_ty:?}, expected \"header\""
            ));
        }
        let (n, last_ty, summary) = lines.pop().unwrap();
        if last_ty != "summary" {
            return Err(format!(
                "last line ({n}) has type {last_ty:?}, expected \"summary\" (did sockmem exit \
                 cleanly?)"
            ));
        }
        let mut events = Vec::with_capacity(lines.len());
        let mut snapshots = Vec::new();
        let mut sockets = Vec::new();
        for (n, ty, v) in lines {
            match ty.as_str() {
                "event" | "snapshot" if !sockets.is_empty() => {
                    return Err(format!(
                        "line {n} has type {ty:?} after a \"socket\" line (the exit table comes \
                         last, before the summary): {}",
                        short(&v.to_string())
                    ))
                }
                "event" => events.push(v),
                "snapshot" => snapshots.push(v),
                "socket" => sockets.push(v),
                _ => {
                    return Err(format!(
                        "line {n} has type {ty:?}, expected \"event\", \"snapshot\" or \
                         \"socket\": {}",
                        short(&v.to_string())
                    ))
                }
            }
        }
        Ok(JsonTrace {
            header,
            events,
            snapshots,
            sockets,
            summary,
        })
    }

    /// Events of one socket, in output order.
    pub fn events_for(&self, key: &SockKey) -> Vec<&Value> {
        self.events.iter().filter(|e| key.matches(e)).collect()
    }

    /// The socket ids (`sock`) of the events of one 4-tuple.
    pub fn socks_of(&self, key: &SockKey) -> BTreeSet<u64> {
        self.events_for(key)
            .iter()
            .map(|e| get_u64(e, "sock"))
            .collect()
    }

    /// Events of one socket id, in output order.
    pub fn events_of_sock(&self, sock: u64) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| get_u64(e, "sock") == sock)
            .collect()
    }

    /// `snapshot` lines of one socket id, in output order (the last one is taken at exit).
    pub fn snapshots_of(&self, sock: u64) -> Vec<&Value> {
        self.snapshots
            .iter()
            .filter(|e| get_u64(e, "sock") == sock)
            .collect()
    }

    /// The `socket` line (exit table) of one socket id; panics unless there is exactly one.
    pub fn socket_line(&self, sock: u64) -> &Value {
        let rows: Vec<&Value> = self
            .sockets
            .iter()
            .filter(|e| get_u64(e, "sock") == sock)
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "expected exactly 1 \"socket\" line for sock {sock}, got {}: {rows:?}",
            rows.len()
        );
        rows[0]
    }

    /// The one socket id of a 4-tuple's events; panics unless there is exactly one.
    pub fn sock_of(&self, key: &SockKey) -> u64 {
        let socks = self.socks_of(key);
        assert_eq!(
            socks.len(),
            1,
            "expected the events of {key} to carry exactly 1 socket id, got {socks:?} ({} events)",
            self.events_for(key).len()
        );
        *socks.iter().next().expect("one socket id")
    }

    /// Events whose local or remote port is `port`.
    pub fn with_port(&self, port: u16) -> Vec<&Value> {
        self.events.iter().filter(|e| has_port(e, port)).collect()
    }

    /// Hook names listed in the header's `hooks` array.
    pub fn header_hooks(&self) -> Vec<String> {
        self.header
            .get("hooks")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("header has no \"hooks\" array: {}", self.header))
            .iter()
            .map(|h| {
                h.get("hook")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("header hook entry without \"hook\": {h}"))
                    .to_string()
            })
            .collect()
    }

    /// Hooks the header says are attached, with the backend each got.
    pub fn attached_hooks(&self) -> Vec<(String, String)> {
        self.header
            .get("hooks")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("header has no \"hooks\" array: {}", self.header))
            .iter()
            .filter(|h| h.get("attached").and_then(Value::as_bool) == Some(true))
            .map(|h| {
                let field = |f: &str| h.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                (field("hook"), field("backend"))
            })
            .collect()
    }

    pub fn is_attached(&self, hook: &str) -> bool {
        self.attached_hooks().iter().any(|(h, _)| h == hook)
    }

    pub fn summary_u64(&self, field: &str) -> u64 {
        self.summary
            .get(field)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| {
                panic!(
                    "summary field {field:?} missing or not a u64: {}",
                    self.summary
                )
            })
    }

    /// Asserts the summary's `events` equals the number of event lines.
    pub fn assert_summary_counts_events(&self) {
        let n = self.summary_u64("events");
        assert_eq!(
            n,
            self.events.len() as u64,
            "summary says {n} events, expected the {} event lines printed",
            self.events.len()
        );
    }
}

/// The first `n` events, one a line (for messages).
pub fn first_few(evs: &[&Value], n: usize) -> String {
    evs.iter()
        .take(n)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn has_port(ev: &Value, port: u16) -> bool {
    let p = Some(u64::from(port));
    ev.get("lport").and_then(Value::as_u64) == p || ev.get("rport").and_then(Value::as_u64) == p
}

pub fn hook(ev: &Value) -> &str {
    get_str(ev, "hook")
}

pub fn get_str<'a>(ev: &'a Value, field: &str) -> &'a str {
    ev.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a string in {ev}"))
}

/// A string field that may be `null`.
pub fn get_opt_str<'a>(ev: &'a Value, field: &str) -> Option<&'a str> {
    match ev.get(field) {
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        _ => panic!("field {field:?} missing or neither string nor null in {ev}"),
    }
}

pub fn get_u64(ev: &Value, field: &str) -> u64 {
    ev.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an unsigned integer in {ev}"))
}

/// An unsigned field that may be `null`.
pub fn get_opt_u64(ev: &Value, field: &str) -> Option<u64> {
    match ev.get(field) {
        Some(Value::Null) => None,
        Some(v) if v.as_u64().is_some() => v.as_u64(),
        _ => panic!("field {field:?} missing or neither unsigned integer nor null in {ev}"),
    }
}

pub fn get_i64(ev: &Value, field: &str) -> i64 {
    ev.get(field)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an integer in {ev}"))
}

/// Number of events per hook name.
pub fn hook_counts<'a, I: IntoIterator<Item = &'a Value>>(events: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(hook(e).to_string()).or_insert(0) += 1;
    }
    m
}

/// Checks, in output order and per socket (`sk`), that `delta_field` equals `value_field` minus
/// the previous event's `value_field` (the first event of a socket: the value itself). Returns
/// the number of events checked, or the first mismatch.
/// Whether an event carries an skb (`has_skb`).
pub fn has_skb(ev: &Value) -> bool {
    ev["has_skb"]
        .as_bool()
        .unwrap_or_else(|| panic!("expected a boolean has_skb in {ev}"))
}

pub fn check_deltas(
    events: &[&Value],
    value_field: &str,
    delta_field: &str,
) -> Result<usize, String> {
    let mut prev: HashMap<String, i64> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        // A socket being freed has no counters (null) and moves nothing (delta 0).
        if ev[value_field].is_null() {
            if get_i64(ev, delta_field) != 0 {
                return Err(format!(
                    "event #{i}: {value_field} null with a nonzero {delta_field}: {ev}"
                ));
            }
            continue;
        }
        let sk = get_u64(ev, "sock").to_string();
        let value = get_i64(ev, value_field);
        let delta = get_i64(ev, delta_field);
        let expected = value - prev.get(&sk).copied().unwrap_or(0);
        if delta != expected {
            return Err(format!(
                "event #{i} (hook {}, sock {sk}): expected {delta_field} == {expected} \
                 ({value_field} {value} minus previous {}), got {delta}; event: {ev}",
                hook(ev),
                prev.get(&sk)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none (first event)".to_string())
            ));
        }
        prev.insert(sk, value);
    }
    Ok(events.len())
}

/// How much later than its sender lookup an event may be stamped. The time is read when the
/// event is written, after the lookup, and an interrupt in between (its softirq work, or under
/// emulation the host pausing the vCPU) delays the stamp: a lookup that missed just before the
/// first `sendmsg` recorded its sender can carry a later time than that `sendmsg`'s event
/// (6.12/tracepoint VM: 2.5 ms, the first datagram's free on the receiver's CPU; µs here).
pub fn stamp_delay_ns() -> u64 {
    if emulated() {
        50_000_000
    } else {
        1_000_000
    }
}

/// Per sock id of `evs`: how many events, their first and last `ts_ns`, and per owner how many
/// and the first `ts_ns` (what a failed owner check needs to tell a late sender from an id
/// that changed).
pub fn owners_per_sock(evs: &[&Value]) -> String {
    /// Events, first and last `ts_ns`, and per owner/hook (events, first `ts_ns`).
    type PerSock = (u64, u64, u64, BTreeMap<String, (u64, u64)>);
    let mut per: BTreeMap<u64, PerSock> = BTreeMap::new();
    for e in evs {
        let ts = get_u64(e, "ts_ns");
        let s =
            per.entry(e["sock"].as_u64().unwrap_or(0))
                .or_insert((0, u64::MAX, 0, BTreeMap::new()));
        s.0 += 1;
        s.1 = s.1.min(ts);
        s.2 = s.2.max(ts);
        let o =
            s.3.entry(format!("{}/{}", get_str(e, "owner"), hook(e)))
                .or_insert((0, u64::MAX));
        o.0 += 1;
        o.1 = o.1.min(ts);
    }
    per.iter()
        .map(|(id, (n, first, last, owners))| {
            format!("sock {id}: {n} events, ts {first}..{last}, (count, first ts) per owner/hook {owners:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
