//! `serve`'s protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages, what a Prometheus run with `--enable-feature=native-histograms` asks for first.
//! Each histogram series carries both its native form (schema 0: power-of-2 buckets, as the
//! in-kernel log2 slots are) and the classic buckets of the text, so one scrape serves a
//! Prometheus that keeps either; counters and gauges are the text's, same names and labels.
//!
//! Encoded here because `prometheus-client` (0.23) cannot: its `protobuf` feature writes the
//! OpenMetrics data model (`openmetrics.MetricSet`, classic buckets only, built with protoc),
//! not Prometheus's own `MetricFamily`, the only format that carries native histograms. The few
//! messages are written out below with prost's derive macros, field numbers as in Prometheus's
//! `metrics.proto` (prometheus/client_model), only the fields we fill.
//!
//! Slots and native buckets, exactly. Slot `s ≥ 1` holds the integers `[2^(s-1), 2^s)`; slot 0
//! the value 0. A schema-0 native bucket `i` holds `(2^(i-1), 2^i]` of the metric's unit, and
//! the zero bucket `[0, zero_threshold]`.
//! - Bytes: slot `s` is bucket `i = s`. The conventions differ at one value per slot: the
//!   lower bound `2^(s-1)` itself, which natively belongs to bucket `s-1`, is counted one
//!   bucket up (an exact power-of-2 size is shown in `(2^(s-1), 2^s]`, at most twice its
//!   value; every other integer is where the native convention puts it).
//! - Nanoseconds, exposed in seconds: 1 ns is 2^-29.897 s, not a power of 2, so no schema puts
//!   a bucket boundary on the slots' ns boundaries. Slot `s` (`[2^(s-1), 2^s)` ns) overlaps
//!   native buckets `s-31`..`s-29`; it goes to `i = s - 30`, `(2^(s-31), 2^(s-30)]` s =
//!   `(0.931·2^(s-1), 0.931·2^s]` ns, the bucket that holds 86% of its range. That is the
//!   slot's range scaled by 2^30/10^9 = 1/1.0737: a quantile read from the native histogram
//!   is 6.9% below the same interpolation on the slot's own bounds (what `hist` and the
//!   classic buckets give), a constant factor far inside the 2× of a log2 bucket. Samples in a
//!   slot's top 7% (`[0.931·2^s, 2^s)` ns) are counted one native bucket below theirs.

use prost::Message;
use sockmem_common::hist::SLOTS;

use super::metrics::{buckets, Family, Points, Scrape};
use crate::pipeline::histogram::{kind_unit, Histogram as SlotHistogram, Unit as HistUnit};

/// The content type of [`encode`]'s bytes (as Prometheus asks for them).
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The zero bucket's half-width: client_golang's default (2^-128), far below 1 ns or 1 byte.
/// Non-zero, so that a histogram with no samples yet still parses as native (Prometheus
/// treats one without a threshold, zero count or spans as classic).
const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// 1 ns is in native bucket `s - 30` of seconds for slot `s` (see the module's doc).
const NS_SLOT_TO_SECONDS_BUCKET: i32 = -30;

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    /// Inclusive.
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    /// Gap to the previous span's end, or the first bucket's index.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// Always sent (0 is a value here, not "absent").
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each bucket's count minus the previous one's (the first's minus 0).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// `io.prometheus.client.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// A [`MetricType`]; always sent (COUNTER is 0).
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// The native bucket index of slot `s ≥ 1` (see the module's doc).
pub fn native_index(unit: HistUnit, s: usize) -> i32 {
    match unit {
        HistUnit::Bytes => s as i32,
        HistUnit::Nanoseconds => s as i32 + NS_SLOT_TO_SECONDS_BUCKET,
    }
}

/// One histogram series as a message: native and classic.
fn histogram(h: &SlotHistogram, per_unit: f64) -> Histogram {
    let unit = kind_unit(h.kind);
    // A run of populated slots is a span; empty slots between runs are the next span's offset.
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let (mut previous_count, mut previous_index) = (0i64, None::<i32>);
    for s in 1..SLOTS {
        let n = h.slots[s];
        if n == 0 {
            continue;
        }
        let i = native_index(unit, s);
        match (previous_index, spans.last_mut()) {
            (Some(p), Some(span)) if i == p + 1 => span.length += 1,
            (Some(p), _) => spans.push(BucketSpan {
                offset: i - p - 1,
                length: 1,
            }),
            (None, _) => spans.push(BucketSpan {
                offset: i,
                length: 1,
            }),
        }
        deltas.push(n as i64 - previous_count);
        previous_count = n as i64;
        previous_index = Some(i);
    }
    let mut cumulative = 0;
    let bucket = buckets(h)
        .into_iter()
        .map(|(le, n)| {
            cumulative += n;
            Bucket {
                cumulative_count: cumulative,
                upper_bound: if le == f64::MAX { f64::INFINITY } else { le },
            }
        })
        .collect();
    // The kernel adds to a slot and to the count in two steps, so a read in between can see
    // the slot's sample without the count's; Prometheus refuses a count below the buckets'.
    let in_slots: u64 = h.slots.iter().sum();
    Histogram {
        sample_count: h.count.max(in_slots),
        sample_sum: h.sum as f64 / per_unit,
        bucket,
        schema: Some(0),
        zero_threshold: ZERO_THRESHOLD,
        zero_count: h.slots[0],
        positive_span: spans,
        positive_delta: deltas,
    }
}

fn labels(labels: &[(&'static str, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(n, v)| LabelPair {
            name: (*n).to_owned(),
            value: v.clone(),
        })
        .collect()
}

/// One family as a message.
pub fn family(f: &Family) -> MetricFamily {
    let (kind, metric) = match &f.points {
        Points::Counter(series) => (
            MetricType::Counter,
            series
                .iter()
                .map(|(l, v)| Metric {
                    label: labels(l),
                    counter: Some(Counter { value: *v }),
                    ..Metric::default()
                })
                .collect(),
        ),
        Points::Gauge(series) => (
            MetricType::Gauge,
            series
                .iter()
                .map(|(l, v)| Metric {
                    label: labels(l),
                    gauge: Some(Gauge { value: *v as f64 }),
                    ..Metric::default()
                })
                .collect(),
        ),
        Points::Histogram { per_unit, series } => (
            MetricType::Histogram,
            series
                .iter()
                .map(|s| Metric {
                    label: labels(&s.labels),
                    histogram: Some(histogram(&s.hist, *per_unit)),
                    ..Metric::default()
                })
                .collect(),
        ),
    };
    MetricFamily {
        name: f.full_name(),
        help: f.help.to_owned(),
        r#type: Some(kind as i32),
        metric,
    }
}

/// The scrape as length-delimited `MetricFamily` messages.
pub fn encode(scrape: &Scrape) -> Vec<u8> {
    let mut out = Vec::new();
    for f in scrape.families() {
        // Writing to a Vec only fails for want of memory, which aborts before this.
        let _ = family(&f).encode_length_delimited(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::metrics::HistSeries;
    use sockmem_common::hist::{slot, HistKind};

    fn decode(mut bytes: &[u8]) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(MetricFamily::decode_length_delimited(&mut bytes).expect("a message"));
        }
        out
    }

    /// The native buckets' (lower, upper, count), from spans and deltas.
    fn native(h: &Histogram) -> Vec<(f64, f64, u64)> {
        let (mut out, mut i, mut count, mut d) = (Vec::new(), 0i32, 0i64, h.positive_delta.iter());
        for (k, span) in h.positive_span.iter().enumerate() {
            i = if k == 0 {
                span.offset
            } else {
                i + 1 + span.offset
            };
            for j in 0..span.length {
                let index = i + j as i32;
                count += d.next().expect("a delta per bucket");
                out.push((2f64.powi(index - 1), 2f64.powi(index), count as u64));
            }
            i += span.length as i32 - 1;
        }
        out
    }

    #[test]
    fn each_sample_lands_in_the_native_bucket_the_mapping_says() {
        let mut h = SlotHistogram::empty(HistKind::WmemQueued, String::new());
        let values = [0u64, 0, 3, 5, 6, 7, 1000, 1 << 20, (1 << 21) - 1];
        for v in values {
            h.slots[slot(v)] += 1;
            h.count += 1;
            h.sum += v;
        }
        let m = histogram(&h, 1.0);
        assert_eq!((m.sample_count, m.zero_count, m.schema), (9, 2, Some(0)));
        let b = native(&m);
        // Every non-zero value in its bucket but a power of 2 (1 << 20), one bucket up.
        for v in values
            .into_iter()
            .filter(|&v| v > 0 && !v.is_power_of_two())
        {
            let (lo, hi, _) = b
                .iter()
                .find(|(lo, hi, _)| *lo < v as f64 && v as f64 <= *hi)
                .unwrap_or_else(|| panic!("{v} in no bucket of {b:?}"));
            assert_eq!(slot(v) as i32, hi.log2() as i32, "{v}: ({lo}, {hi}]");
        }
        assert_eq!(
            b,
            vec![
                (2.0, 4.0, 1),
                (4.0, 8.0, 3),
                (512.0, 1024.0, 1),
                (1048576.0, 2097152.0, 2)
            ]
        );
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>() + m.zero_count, h.count);
    }

    #[test]
    fn nanosecond_slots_map_to_seconds_buckets_scaled_by_2_30_over_1e9() {
        let mut h = SlotHistogram::empty(HistKind::QdiscSojourn, String::new());
        // 1.5 ms: slot 21, [2^20, 2^21) ns.
        h.slots[slot(1_500_000)] = 4;
        h.count = 4;
        let b = native(&histogram(&h, 1e9));
        let (lo, hi, n) = b[0];
        assert_eq!(n, 4);
        let scale = 1e9 / (1u64 << 30) as f64;
        assert!(
            (lo * 1e9 / ((1u64 << 20) as f64 * scale) - 1.0).abs() < 1e-12,
            "{b:?}"
        );
        assert!(
            (hi * 1e9 / ((1u64 << 21) as f64 * scale) - 1.0).abs() < 1e-12,
            "{b:?}"
        );
        assert!(lo < 1.5e-3 && 1.5e-3 <= hi, "{b:?}");
    }

    #[test]
    fn families_match_the_text_and_empty_histograms_stay_native() {
        let mut h = SlotHistogram::empty(HistKind::SendmsgTime, String::new());
        h.slots[slot(2000)] = 1;
        h.count = 1;
        h.sum = 2000;
        let mut s = Scrape {
            group_label: "cgroup",
            lost_events: 3,
            ..Scrape::default()
        };
        let labels = vec![("iface", "eth0".to_owned()), ("cgroup", "/a".to_owned())];
        s.hists.insert(
            HistKind::SendmsgTime,
            vec![HistSeries {
                labels: labels.clone(),
                hist: h,
            }],
        );
        s.hists.insert(
            HistKind::WmemAlloc,
            vec![HistSeries {
                labels,
                hist: SlotHistogram::empty(HistKind::WmemAlloc, String::new()),
            }],
        );
        let families = decode(&encode(&s));
        let text =
            crate::render::metrics::classic_text(&crate::render::metrics::encode(s).unwrap());
        let text_names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, text_names);
        let lost = families
            .iter()
            .find(|f| f.name == "sockmem_lost_events_total")
            .unwrap();
        assert_eq!(lost.r#type, Some(MetricType::Counter as i32));
        assert_eq!(lost.metric[0].counter, Some(Counter { value: 3.0 }));
        let sendmsg = &families[0].metric[0];
        let m = sendmsg.histogram.as_ref().unwrap();
        assert_eq!(sendmsg.label[1].value, "/a");
        assert_eq!(m.bucket.last().unwrap().upper_bound, f64::INFINITY);
        assert_eq!(m.bucket.last().unwrap().cumulative_count, 1);
        assert!((m.sample_sum - 2e-6).abs() < 1e-18);
        let empty = families[1].metric[0].histogram.as_ref().unwrap();
        assert!(empty.zero_threshold > 0.0 && empty.positive_span.is_empty());
    }
}
