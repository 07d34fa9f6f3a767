//! `serve`'s sink: one scrape's numbers as OpenMetrics text, through the Prometheus project's
//! Rust client (`prometheus-client`). The in-kernel log2 histograms become Prometheus
//! histograms whose bucket bounds are the slots' own: slot `s` holds integer values up to
//! `2^s - 1` (ns or bytes), so `le` is that bound in seconds or bytes and no sample is ever
//! counted under a bound it exceeds. [`Scrape::families`] is the one list of families that
//! this text and the protobuf exposition (`metrics_proto`, with native histograms) both show.

use std::collections::BTreeMap;

use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};
use sockmem_common::hist::{HistKind, SLOTS};

use crate::{
    attach::stats::HookCost,
    pipeline::{
        groups::GroupGauges,
        histogram::{kind_name, kind_unit, Completeness, Histogram, Unit as HistUnit},
    },
};

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`classic_text`]'s.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The last slot given a bucket of its own: times up to 2^36 ns (68.7 s), sizes up to 2^32
/// bytes (4 GiB); larger values are counted in `+Inf` only. A fixed set, so every scrape has
/// the same buckets (what `rate()` and `histogram_quantile()` need).
fn last_slot(unit: HistUnit) -> usize {
    match unit {
        HistUnit::Nanoseconds => 36,
        HistUnit::Bytes => 32,
    }
}

/// `(le, count in this bucket)` pairs; the encoder makes them cumulative.
pub fn buckets(h: &Histogram) -> Vec<(f64, u64)> {
    let unit = kind_unit(h.kind);
    let last = last_slot(unit).min(SLOTS - 1);
    // Divided, not multiplied by 1e-9: a quotient of exact numbers is the double nearest the
    // true bound, which prints short (`3e-9`, not `3.0000000000000006e-9`).
    let per_unit = match unit {
        HistUnit::Nanoseconds => 1e9,
        HistUnit::Bytes => 1.0,
    };
    let mut out: Vec<(f64, u64)> = (0..=last)
        .map(|s| (((1u64 << s) - 1) as f64 / per_unit, h.slots[s]))
        .collect();
    out.push((f64::MAX, h.slots[last + 1..].iter().sum()));
    out
}

/// One histogram series: a kind and its labels.
#[derive(Debug)]
pub struct HistSeries {
    pub labels: Vec<(&'static str, String)>,
    pub hist: Histogram,
}

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Scrape {
    /// The label the sender's group goes under (`comm` or `cgroup`).
    pub group_label: &'static str,
    /// Per kind, its series.
    pub hists: BTreeMap<HistKind, Vec<HistSeries>>,
    pub gauges: BTreeMap<String, GroupGauges>,
    /// (group, reason) → drops.
    pub drops: BTreeMap<(String, String), u64>,
    pub lost_events: u64,
    pub events: u64,
    pub bpf: Vec<HookCost>,
    /// Per hook, the programs' runs the kernel skipped; `None` when they could not be read.
    pub bpf_missed: Option<BTreeMap<String, u64>>,
    pub completeness: Completeness,
    pub tracked_sockets: u64,
    pub untracked_sockets: u64,
    pub histogram_keys: u64,
}

fn help(kind: HistKind) -> &'static str {
    match kind {
        HistKind::SendmsgTime => "sendmsg start to return, per call (log2 buckets)",
        HistKind::SendBlocked => {
            "time a sender slept inside a send system call, per call that slept"
        }
        HistKind::QdiscSojourn => "qdisc enqueue to dequeue of the same skb",
        HistKind::DriverTime => "hand-off to the driver to the socket getting the skb's bytes back",
        HistKind::BelowTcp => "dev_queue_xmit to the socket getting the skb's bytes back",
        HistKind::WmemQueued => "sk_wmem_queued sampled at every event",
        HistKind::WmemAlloc => "sk_wmem_alloc sampled at every event",
    }
}

/// A series' labels.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family as every exposition shows it (OpenMetrics text, classic text, protobuf).
pub struct Family<'a> {
    /// Without unit or `_total`: prometheus-client appends them (see [`Family::full_name`]).
    pub name: String,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub points: Points<'a>,
}

pub enum Points<'a> {
    Counter(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, i64)>),
    /// Values in the series' histograms divided by `per_unit` give the unit's (ns to s).
    Histogram {
        per_unit: f64,
        series: &'a [HistSeries],
    },
}

impl Family<'_> {
    /// The name samples go under in Prometheus, as the text shows it: `<name>_<unit>`, then
    /// `_total` for counters (a histogram's `_bucket`, `_count` and `_sum` come on top).
    pub fn full_name(&self) -> String {
        let mut n = self.name.clone();
        if let Some(u) = &self.unit {
            n.push('_');
            n.push_str(u.as_str());
        }
        if let Points::Counter(_) = self.points {
            n.push_str("_total");
        }
        n
    }
}

fn counter(
    name: &str,
    help: &'static str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Family<'static> {
    Family {
        name: name.to_owned(),
        help,
        unit,
        points: Points::Counter(series.into_iter().collect()),
    }
}

fn gauge(
    name: &str,
    help: &'static str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (Labels, i64)>,
) -> Family<'static> {
    Family {
        name: name.to_owned(),
        help,
        unit,
        points: Points::Gauge(series.into_iter().collect()),
    }
}

impl Scrape {
    /// Every family of the scrape, in exposition order.
    pub fn families(&self) -> Vec<Family<'_>> {
        let mut out = Vec::new();
        for (kind, series) in &self.hists {
            let (unit, per_unit) = match kind_unit(*kind) {
                HistUnit::Nanoseconds => (Unit::Seconds, 1e9),
                HistUnit::Bytes => (Unit::Bytes, 1.0),
            };
            out.push(Family {
                name: format!("sockmem_{}", kind_name(*kind)),
                help: help(*kind),
                unit: Some(unit),
                points: Points::Histogram { per_unit, series },
            });
        }
        // Calls and time blocked are the histograms' own counts and sums, as counters too:
        // `rate(sockmem_sendmsg_calls_total[1m])` without knowing the histograms.
        let of = |k: HistKind| self.hists.get(&k).into_iter().flatten();
        out.push(counter(
            "sockmem_sendmsg_calls",
            "sendmsg calls whose start and return were seen",
            None,
            of(HistKind::SendmsgTime).map(|s| (s.labels.clone(), s.hist.count as f64)),
        ));
        out.push(counter(
            "sockmem_send_blocked_time",
            "time senders slept inside send system calls",
            Some(Unit::Seconds),
            of(HistKind::SendBlocked).map(|s| (s.labels.clone(), s.hist.sum as f64 / 1e9)),
        ));
        let g = self.group_label;
        out.push(gauge(
            "sockmem_queued",
            "sk_wmem_queued of the live sockets, summed: bytes in their write queues",
            Some(Unit::Bytes),
            self.gauges
                .iter()
                .map(|(v, x)| (vec![(g, v.clone())], x.queued)),
        ));
        out.push(gauge(
            "sockmem_alloc",
            "sk_wmem_alloc of the live sockets, summed: bytes below the transport (qdisc, driver)",
            Some(Unit::Bytes),
            self.gauges
                .iter()
                .map(|(v, x)| (vec![(g, v.clone())], x.alloc)),
        ));
        out.push(gauge(
            "sockmem_sockets",
            "live sockets followed",
            None,
            self.gauges
                .iter()
                .map(|(v, x)| (vec![(g, v.clone())], x.sockets as i64)),
        ));
        out.push(counter(
            "sockmem_drops",
            "followed skbs dropped, by the kernel's drop reason",
            None,
            self.drops
                .iter()
                .map(|((v, r), n)| (vec![(g, v.clone()), ("reason", r.clone())], *n as f64)),
        ));
        let one = |v: u64| [(Vec::new(), v as f64)];
        out.push(counter(
            "sockmem_lost_events",
            "events the ring buffer had no room for (the gauges and drops miss them)",
            None,
            one(self.lost_events),
        ));
        out.push(counter(
            "sockmem_events",
            "events read from the ring buffer",
            None,
            one(self.events),
        ));
        out.push(counter(
            "sockmem_bpf",
            "time sockmem's own eBPF programs ran, per hook (the kernel's BPF run-time statistics)",
            Some(Unit::Seconds),
            self.bpf
                .iter()
                .map(|c| (vec![("hook", c.hook.clone())], c.total_ns as f64 / 1e9)),
        ));
        out.push(counter(
            "sockmem_bpf_runs",
            "runs of sockmem's own eBPF programs, per hook",
            None,
            self.bpf
                .iter()
                .map(|c| (vec![("hook", c.hook.clone())], c.runs as f64)),
        ));
        if let Some(missed) = &self.bpf_missed {
            out.push(counter(
                "sockmem_bpf_missed_runs",
                "runs of sockmem's own eBPF programs the kernel skipped because a BPF program was \
                 already running on that CPU (what they would have seen is missing), per hook",
                None,
                missed
                    .iter()
                    .map(|(h, n)| (vec![("hook", h.clone())], *n as f64)),
            ));
        }
        let c = &self.completeness;
        out.push(counter(
            "sockmem_samples_dropped_map_full",
            "samples lost because the in-kernel map of histograms was full",
            None,
            one(c.hist_full),
        ));
        out.push(counter(
            "sockmem_qdisc_unmatched",
            "dequeues without a seen enqueue (e.g. GSO segments a qdisc cut)",
            None,
            one(c.qdisc_unmatched),
        ));
        out.push(gauge(
            "sockmem_tracked_sockets",
            "sockets the exporter follows for its gauges",
            None,
            [(Vec::new(), self.tracked_sockets as i64)],
        ));
        out.push(counter(
            "sockmem_untracked_sockets",
            "sockets not followed because the table was full",
            None,
            one(self.untracked_sockets),
        ));
        out.push(gauge(
            "sockmem_kernel_map_keys",
            "entries of the in-kernel map of histograms (interface x group x kind)",
            None,
            [(Vec::new(), self.histogram_keys as i64)],
        ));
        out
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in self.families() {
            let unit = f.unit.as_ref();
            match &f.points {
                Points::Histogram { per_unit, series } => {
                    let mut m =
                        enc.encode_descriptor(&f.name, f.help, unit, MetricType::Histogram)?;
                    for s in series.iter() {
                        m.encode_family(&s.labels)?.encode_histogram::<NoLabelSet>(
                            s.hist.sum as f64 / per_unit,
                            s.hist.count,
                            &buckets(&s.hist),
                            None,
                        )?;
                    }
                }
                Points::Counter(series) => {
                    let mut m =
                        enc.encode_descriptor(&f.name, f.help, unit, MetricType::Counter)?;
                    for (labels, v) in series {
                        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
                    }
                }
                Points::Gauge(series) => {
                    let mut m = enc.encode_descriptor(&f.name, f.help, unit, MetricType::Gauge)?;
                    for (labels, v) in series {
                        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The scrape as OpenMetrics text.
pub fn encode(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The same numbers in Prometheus's classic text format (0.0.4), for clients that do not ask
/// for OpenMetrics (curl, `promtool check metrics`): a counter's HELP and TYPE name the sample
/// (`_total`), and OpenMetrics' `# UNIT` and `# EOF` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// What `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Length-delimited `io.prometheus.client.MetricFamily` (with native histograms): what
    /// Prometheus asks for first when run with `--enable-feature=native-histograms`.
    Protobuf,
    /// What Prometheus asks for first otherwise.
    OpenMetrics,
    /// Classic text (0.0.4): curl, `promtool check metrics`, anything else.
    Text,
}

/// The format an `Accept` header prefers (highest `q`; on a tie the richer format). Text
/// unless the client names protobuf or OpenMetrics with `q > 0`.
pub fn negotiate(accept: Option<&str>) -> Format {
    let mut best = (0.0, Format::Text);
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut encoding) = (1.0, None, None);
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "proto" => proto = Some(v.to_owned()),
                "encoding" => encoding = Some(v.to_owned()),
                _ => {}
            }
        }
        let format = match media.as_str() {
            "application/vnd.google.protobuf"
                if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                    && encoding.as_deref() == Some("delimited") =>
            {
                Format::Protobuf
            }
            "application/openmetrics-text" => Format::OpenMetrics,
            "text/plain" | "text/*" | "*/*" => Format::Text,
            _ => continue,
        };
        let richer = |a: Format, b: Format| (a as u8) < (b as u8);
        if q > best.0 || (q == best.0 && q > 0.0 && richer(format, best.1)) {
            best = (q, format);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmem_common::hist::slot;

    #[test]
    fn accept_headers_pick_the_format() {
        // Prometheus 2.42 with --enable-feature=native-histograms, then without.
        let native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                      encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,\
                      application/openmetrics-text;version=0.0.1;q=0.75,\
                      text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let classic = "application/openmetrics-text;version=1.0.0,\
                       application/openmetrics-text;version=0.0.1;q=0.75,\
                       text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(native)), Format::Protobuf);
        assert_eq!(negotiate(Some(classic)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        // Other protobuf messages or encodings are not ours; q=0 refuses.
        let text_form = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                         encoding=text";
        assert_eq!(negotiate(Some(text_form)), Format::Text);
        let refused = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                       encoding=delimited;q=0,application/openmetrics-text;q=0.5";
        assert_eq!(negotiate(Some(refused)), Format::OpenMetrics);
        let text_first = "text/plain;version=0.0.4,application/openmetrics-text;q=0.5";
        assert_eq!(negotiate(Some(text_first)), Format::Text);
    }

    #[test]
    fn buckets_hold_each_value_under_its_bound() {
        let mut h = Histogram::empty(HistKind::WmemQueued, String::new());
        for v in [0u64, 1, 4095, 4096, 1 << 40] {
            h.slots[slot(v)] += 1;
            h.count += 1;
        }
        let b = buckets(&h);
        let under = |le: f64| -> u64 { b.iter().filter(|(l, _)| *l <= le).map(|x| x.1).sum() };
        assert_eq!(under(0.0), 1);
        assert_eq!(under(4095.0), 3, "{b:?}");
        assert_eq!(under(8191.0), 4);
        assert_eq!(b.last().unwrap(), &(f64::MAX, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), h.count);
    }

    #[test]
    fn text_has_histograms_counters_and_eof() {
        let mut h = Histogram::empty(HistKind::QdiscSojourn, String::new());
        h.slots[slot(1_000_000)] = 3;
        h.count = 3;
        h.sum = 3_000_000;
        let mut s = Scrape {
            group_label: "comm",
            lost_events: 7,
            ..Scrape::default()
        };
        s.hists.insert(
            HistKind::QdiscSojourn,
            vec![HistSeries {
                labels: vec![("iface", "eth0".into()), ("comm", "iperf3".into())],
                hist: h,
            }],
        );
        let text = encode(s).unwrap();
        assert!(
            text.contains("# TYPE sockmem_qdisc_sojourn_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("sockmem_qdisc_sojourn_seconds_count{iface=\"eth0\",comm=\"iperf3\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sockmem_qdisc_sojourn_seconds_bucket{le=\"+Inf\",iface=\"eth0\",comm=\"iperf3\"} 3"),
            "{text}"
        );
        assert!(text.contains("sockmem_lost_events_total{} 7.0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = classic_text(&text);
        assert!(
            classic.contains("# TYPE sockmem_lost_events_total counter"),
            "{classic}"
        );
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
    }
}
