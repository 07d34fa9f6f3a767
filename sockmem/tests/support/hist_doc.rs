//! `sockmem hist --json` output: one document of histograms, checked for its shape.

use serde_json::Value;

use super::{get_str, get_u64, tail};

/// `sockmem hist --json` output: one pretty-printed JSON document.
#[derive(Debug)]
pub struct HistDoc {
    pub doc: Value,
}

/// The kinds every `totals` array must hold, in order.
pub const HIST_KINDS: [&str; 7] = [
    "sendmsg_time",
    "send_blocked",
    "qdisc_sojourn",
    "driver_time",
    "below_tcp",
    "wmem_queued",
    "wmem_alloc",
];

impl HistDoc {
    /// Parses the document and checks its shape: `type` "hist", the `per` asked for, one total
    /// per kind in [`HIST_KINDS`] order, a `completeness` object, a `hooks` array.
    pub fn parse(text: &str, per: &str) -> Result<HistDoc, String> {
        let doc: Value = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "not one JSON document ({e}); output ends:\n{}",
                tail(text, 2000)
            )
        })?;
        let field = |f: &str| {
            doc.get(f)
                .ok_or_else(|| format!("no {f:?} in the document"))
        };
        if field("type")?.as_str() != Some("hist") {
            return Err(format!("\"type\" is {}, expected \"hist\"", field("type")?));
        }
        if field("per")?.as_str() != Some(per) {
            return Err(format!("\"per\" is {}, expected {per:?}", field("per")?));
        }
        let names: Vec<&str> = field("totals")?
            .as_array()
            .ok_or("\"totals\" is not an array")?
            .iter()
            .map(|h| h.get("name").and_then(Value::as_str).unwrap_or("?"))
            .collect();
        if names != HIST_KINDS {
            return Err(format!(
                "expected totals named {HIST_KINDS:?} in that order, got {names:?}"
            ));
        }
        field("histograms")?
            .as_array()
            .ok_or("\"histograms\" is not an array")?;
        field("completeness")?
            .as_object()
            .ok_or("\"completeness\" is not an object")?;
        field("hooks")?
            .as_array()
            .ok_or("\"hooks\" is not an array")?;
        Ok(HistDoc { doc })
    }

    /// Every keyed histogram (`--per`), of every kind.
    pub fn histograms(&self) -> &Vec<Value> {
        self.doc["histograms"]
            .as_array()
            .expect("\"histograms\" to be an array (checked by parse)")
    }

    /// The total histogram of kind `name`.
    pub fn total(&self, name: &str) -> &Value {
        self.doc["totals"]
            .as_array()
            .expect("\"totals\" to be an array (checked by parse)")
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("expected a total named {name:?}, there is none"))
    }

    /// The keyed histograms of kind `name`.
    pub fn keyed(&self, name: &str) -> Vec<&Value> {
        self.histograms()
            .iter()
            .filter(|h| h["name"] == name)
            .collect()
    }

    /// The keyed histogram of kind `name` with key `key`, if any.
    pub fn keyed_one(&self, name: &str, key: &str) -> Option<&Value> {
        self.keyed(name).into_iter().find(|h| h["key"] == key)
    }

    /// The keys of the keyed histograms of kind `name`.
    pub fn keys(&self, name: &str) -> Vec<String> {
        self.keyed(name)
            .iter()
            .map(|h| get_str(h, "key").to_string())
            .collect()
    }

    pub fn completeness(&self, field: &str) -> u64 {
        get_u64(&self.doc["completeness"], field)
    }

    /// The `hooks` entry of `hook`.
    pub fn hook(&self, hook: &str) -> &Value {
        self.doc["hooks"]
            .as_array()
            .expect("\"hooks\" to be an array (checked by parse)")
            .iter()
            .find(|h| h["hook"] == hook)
            .unwrap_or_else(|| {
                panic!(
                    "expected hook {hook:?} in the hooks list, got {}",
                    self.doc["hooks"]
                )
            })
    }

    pub fn hook_attached(&self, hook: &str) -> bool {
        self.hook(hook).get("attached").and_then(Value::as_bool) == Some(true)
    }

    /// Why `hook` is not attached (empty if it is, or if no reason was given).
    pub fn hook_reason(&self, hook: &str) -> String {
        self.hook(hook)
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub fn completeness_line(&self) -> String {
        self.doc["completeness"].to_string()
    }

    /// Program runs the kernel skipped (their samples are missing); panics unless the document
    /// says (sockmem could read them).
    pub fn missed(&self) -> u64 {
        self.doc["missed"].as_u64().unwrap_or_else(|| {
            panic!(
                "expected the hist document to say how many runs the kernel skipped (\"missed\"), \
                 got {}",
                self.doc["missed"]
            )
        })
    }
}

/// `count`, `sum`, `max`, ... of a histogram object.
pub fn hist_u64(h: &Value, field: &str) -> u64 {
    get_u64(h, field)
}

pub fn hist_f64(h: &Value, field: &str) -> f64 {
    h.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a number in {h}"))
}

/// One line for messages: `name[key]: count N mean .. p50 .. p90 .. p99 .. max ..` (ns or bytes).
pub fn hist_brief(h: &Value) -> String {
    format!(
        "{}[{}]: count {} sum {} mean {:.0} p50 {} p90 {} p99 {} max {} ({})",
        get_str(h, "name"),
        get_str(h, "key"),
        get_u64(h, "count"),
        get_u64(h, "sum"),
        hist_f64(h, "mean"),
        get_u64(h, "p50"),
        get_u64(h, "p90"),
        get_u64(h, "p99"),
        get_u64(h, "max"),
        get_str(h, "unit"),
    )
}
