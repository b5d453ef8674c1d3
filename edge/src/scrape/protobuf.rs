//! The protobuf exposition format (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily;encoding=delimited`): varint-delimited `MetricFamily`
//! messages, read as Prometheus 2.42's `textparse.ProtobufParser` reads them.
//!
//! - Counters, gauges and untyped metrics are one sample each; a summary is `_count`, `_sum` and a
//!   `quantile` series per quantile; a classic histogram is `_count`, `_sum` and a `_bucket` series
//!   per bucket (`+Inf` added when missing). Magic label values are written as OpenMetrics writes
//!   floats (`1.0`, `0.25`, `+Inf`).
//! - A family whose first metric has native buckets, a zero bucket threshold or a zero count is a
//!   native histogram family: each metric is one histogram sample (float counts when the message
//!   carries float counts), compacted; a `GAUGE_HISTOGRAM` gets the gauge hint. With
//!   `classic` (`always_scrape_classic_histograms`) its classic series are kept as well.
//! - A timestamp of 0 means none.
//!
//! The samples are laid out as text (`name{labels}`) in one buffer so that the scrape loop sees the
//! same [`Entry`] values as for the text formats, with [`Entry::Histogram`] for native histograms.

use std::borrow::Cow;

use meridian_core::histogram::{CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span};
use prost::Message;

use super::parse::{Entry, MetricType, RawLabels};

/// The content type a target answers protobuf with.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.google.protobuf";

/// The `Accept` header Prometheus 2.42 sends with native histograms enabled: protobuf first.
pub const NATIVE_ACCEPT_HEADER: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `io.prometheus.client` messages (field numbers of the exposition format's `metrics.proto`).
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, tag = "1")]
        pub quantile: f64,
        #[prost(double, tag = "2")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, tag = "1")]
        pub cumulative_count: u64,
        #[prost(double, tag = "4")]
        pub cumulative_count_float: f64,
        #[prost(double, tag = "2")]
        pub upper_bound: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "4")]
        pub sample_count_float: f64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, tag = "5")]
        pub schema: i32,
        #[prost(double, tag = "6")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "7")]
        pub zero_count: u64,
        #[prost(double, tag = "8")]
        pub zero_count_float: f64,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "10")]
        pub negative_delta: Vec<i64>,
        #[prost(double, repeated, tag = "11")]
        pub negative_count: Vec<f64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "13")]
        pub positive_delta: Vec<i64>,
        #[prost(double, repeated, tag = "14")]
        pub positive_count: Vec<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Value>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Value>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Value>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
        #[prost(int64, tag = "6")]
        pub timestamp_ms: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub help: String,
        #[prost(int32, tag = "3")]
        pub r#type: i32,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const SUMMARY: i32 = 2;
    pub const UNTYPED: i32 = 3;
    pub const HISTOGRAM: i32 = 4;
    pub const GAUGE_HISTOGRAM: i32 = 5;
}

/// One entry laid out in the text buffer.
#[derive(Debug)]
enum Rec {
    Help {
        family: usize,
    },
    Type {
        family: usize,
        kind: MetricType,
    },
    Sample {
        /// `name{labels}` in the buffer, the name's end and the number of labels.
        series: (usize, usize),
        name_end: usize,
        labels: usize,
        value: Val,
        timestamp: Option<i64>,
    },
}

#[derive(Debug)]
enum Val {
    F(f64),
    H(Box<HistogramValue>),
}

/// A decoded protobuf exposition.
#[derive(Debug)]
pub struct Exposition {
    families: Vec<pb::MetricFamily>,
    text: String,
    recs: Vec<Rec>,
}

/// A float as OpenMetrics writes it: Go's `%v` with `.0` added to integers (`formatOpenMetricsFloat`).
fn om_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = meridian_core::promfmt::go_g(f, None);
    if s.contains(['e', '.']) { s } else { s + ".0" }
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Whether a histogram message has native parts (Prometheus 2.42's `isNativeHistogram`).
fn is_native(h: &pb::Histogram) -> bool {
    !h.negative_delta.is_empty()
        || !h.positive_delta.is_empty()
        || h.zero_count > 0
        || h.zero_threshold > 0.0
}

fn spans(v: &[pb::BucketSpan]) -> Vec<Span> {
    v.iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// The native histogram of a message, compacted, as 2.42's `Histogram()` makes it.
fn native(h: &pb::Histogram, gauge: bool) -> HistogramValue {
    let hint = if gauge {
        CounterResetHint::Gauge
    } else {
        CounterResetHint::Unknown
    };
    if h.sample_count_float > 0.0 || h.zero_count_float > 0.0 {
        let mut f = FloatHistogram {
            hint,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count_float,
            count: h.sample_count_float,
            sum: h.sample_sum,
            positive_spans: spans(&h.positive_span),
            negative_spans: spans(&h.negative_span),
            positive_buckets: h.positive_count.clone(),
            negative_buckets: h.negative_count.clone(),
            custom_values: Vec::new(),
        };
        f.compact();
        return HistogramValue::Float(f);
    }
    let mut i = Histogram {
        hint,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count,
        count: h.sample_count,
        sum: h.sample_sum,
        positive_spans: spans(&h.positive_span),
        negative_spans: spans(&h.negative_span),
        positive_buckets: h.positive_delta.clone(),
        negative_buckets: h.negative_delta.clone(),
    };
    i.compact();
    HistogramValue::Int(i)
}

/// A histogram within the job's `native_histogram_bucket_limit` and
/// `native_histogram_min_bucket_factor`: its resolution lowered until it is (Prometheus' limits);
/// an error when even schema −4 has too many buckets (the scrape fails, as in Prometheus).
pub(crate) fn limit_buckets(
    h: &HistogramValue,
    limit: u64,
    min_factor: f64,
) -> Result<HistogramValue, String> {
    let mut h = h.clone();
    let buckets = |h: &HistogramValue| match h {
        HistogramValue::Int(x) => x.positive_buckets.len() + x.negative_buckets.len(),
        HistogramValue::Float(x) => x.positive_buckets.len() + x.negative_buckets.len(),
    };
    let schema = |h: &HistogramValue| match h {
        HistogramValue::Int(x) => x.schema,
        HistogramValue::Float(x) => x.schema,
    };
    let reduce = |h: &mut HistogramValue, to: i32| match h {
        HistogramValue::Int(x) => x.reduce_resolution(to),
        HistogramValue::Float(x) => x.reduce_resolution(to),
    };
    // The growth factor from one bucket to the next is 2^(2^-schema).
    while min_factor > 1.0 && schema(&h) > -4 && 2f64.powf(2f64.powi(-schema(&h))) < min_factor {
        let to = schema(&h) - 1;
        reduce(&mut h, to);
    }
    if limit > 0 {
        while buckets(&h) as u64 > limit {
            if schema(&h) <= -4 {
                return Err(format!(
                    "histogram has {} buckets at schema -4, over native_histogram_bucket_limit {}",
                    buckets(&h),
                    limit
                ));
            }
            let to = schema(&h) - 1;
            reduce(&mut h, to);
        }
    }
    Ok(h)
}

impl Exposition {
    /// Decodes a body; errors name the message and what is wrong. `classic`: keep the classic
    /// series of native histograms too.
    pub fn decode(mut body: &[u8], classic: bool) -> Result<Exposition, String> {
        let mut families = Vec::new();
        let mut n = 0usize;
        while !body.is_empty() {
            n += 1;
            let mf = pb::MetricFamily::decode_length_delimited(&mut body)
                .map_err(|e| format!("protobuf message {n}: {e}"))?;
            if !mf.metric.is_empty() {
                families.push(mf);
            }
        }
        let mut out = Exposition {
            families: Vec::new(),
            text: String::new(),
            recs: Vec::new(),
        };
        for (fi, mf) in families.iter().enumerate() {
            out.lay_out(fi, mf, classic)?;
        }
        out.families = families;
        Ok(out)
    }

    fn lay_out(&mut self, fi: usize, mf: &pb::MetricFamily, classic: bool) -> Result<(), String> {
        if !super::parse::valid_metric_name(&mf.name) {
            return Err(format!("invalid metric name: {}", mf.name));
        }
        let kind = match mf.r#type {
            pb::COUNTER => MetricType::Counter,
            pb::GAUGE => MetricType::Gauge,
            pb::SUMMARY => MetricType::Summary,
            pb::UNTYPED => MetricType::Unknown,
            pb::HISTOGRAM => MetricType::Histogram,
            pb::GAUGE_HISTOGRAM => MetricType::GaugeHistogram,
            other => {
                return Err(format!(
                    "unknown metric type for metric {:?}: {other}",
                    mf.name
                ));
            }
        };
        self.recs.push(Rec::Help { family: fi });
        self.recs.push(Rec::Type { family: fi, kind });
        let hist_family = matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram);
        let native_family = hist_family && mf.metric[0].histogram.as_ref().is_some_and(is_native);
        for m in &mf.metric {
            for l in &m.label {
                if !meridian_core::relabel::is_valid_label_name(&l.name) {
                    return Err(format!("invalid label name: {}", l.name));
                }
            }
            let ts = (m.timestamp_ms != 0).then_some(m.timestamp_ms);
            let name = mf.name.as_str();
            match kind {
                MetricType::Counter | MetricType::Gauge | MetricType::Unknown => {
                    let v = match kind {
                        MetricType::Counter => m.counter.as_ref(),
                        MetricType::Gauge => m.gauge.as_ref(),
                        _ => m.untyped.as_ref(),
                    }
                    .map_or(0.0, |v| v.value);
                    self.sample(name, "", &m.label, None, Val::F(v), ts);
                }
                MetricType::Summary => {
                    let s = m.summary.clone().unwrap_or_default();
                    self.sample(
                        name,
                        "_count",
                        &m.label,
                        None,
                        Val::F(s.sample_count as f64),
                        ts,
                    );
                    self.sample(name, "_sum", &m.label, None, Val::F(s.sample_sum), ts);
                    for q in &s.quantile {
                        let label = ("quantile", om_float(q.quantile));
                        self.sample(name, "", &m.label, Some(label), Val::F(q.value), ts);
                    }
                }
                _ => {
                    let h = m.histogram.clone().unwrap_or_default();
                    if native_family {
                        let v = native(&h, kind == MetricType::GaugeHistogram);
                        self.sample(name, "", &m.label, None, Val::H(Box::new(v)), ts);
                        if !classic || h.bucket.is_empty() {
                            continue;
                        }
                    }
                    self.classic(name, &m.label, &h, ts);
                }
            }
        }
        Ok(())
    }

    /// A classic histogram's `_count`, `_sum` and `_bucket` series.
    fn classic(
        &mut self,
        name: &str,
        labels: &[pb::LabelPair],
        h: &pb::Histogram,
        ts: Option<i64>,
    ) {
        let count = if h.sample_count_float > 0.0 {
            h.sample_count_float
        } else {
            h.sample_count as f64
        };
        self.sample(name, "_count", labels, None, Val::F(count), ts);
        self.sample(name, "_sum", labels, None, Val::F(h.sample_sum), ts);
        let mut inf = false;
        for b in &h.bucket {
            let c = if b.cumulative_count_float > 0.0 {
                b.cumulative_count_float
            } else {
                b.cumulative_count as f64
            };
            inf |= b.upper_bound == f64::INFINITY;
            let le = ("le", om_float(b.upper_bound));
            self.sample(name, "_bucket", labels, Some(le), Val::F(c), ts);
        }
        if !inf {
            let le = ("le", "+Inf".to_owned());
            self.sample(name, "_bucket", labels, Some(le), Val::F(count), ts);
        }
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[pb::LabelPair],
        magic: Option<(&str, String)>,
        value: Val,
        timestamp: Option<i64>,
    ) {
        let start = self.text.len();
        self.text.push_str(name);
        self.text.push_str(suffix);
        let name_end = self.text.len();
        self.text.push('{');
        let mut n = 0;
        let pairs = labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .chain(magic.as_ref().map(|(k, v)| (*k, v.as_str())));
        for (k, v) in pairs {
            if n > 0 {
                self.text.push(',');
            }
            self.text.push_str(k);
            self.text.push_str("=\"");
            escape_into(&mut self.text, v);
            self.text.push('"');
            n += 1;
        }
        self.text.push('}');
        self.recs.push(Rec::Sample {
            series: (start, self.text.len()),
            name_end,
            labels: n,
            value,
            timestamp,
        });
    }

    /// The entries, in exposition order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.recs.iter().filter_map(|r| match r {
            Rec::Help { family } => {
                let f = &self.families[*family];
                (!f.help.is_empty()).then_some(Entry::Help {
                    metric: f.name.as_str(),
                    text: Cow::Borrowed(f.help.as_str()),
                })
            }
            Rec::Type { family, kind } => Some(Entry::Type {
                metric: self.families[*family].name.as_str(),
                kind: *kind,
            }),
            Rec::Sample {
                series,
                name_end,
                labels,
                value,
                timestamp,
            } => {
                let s = &self.text[series.0..series.1];
                let name = &self.text[series.0..*name_end];
                let raw = RawLabels::from_parts(&self.text[name_end + 1..series.1 - 1], *labels);
                Some(match value {
                    Val::F(v) => Entry::Sample {
                        name,
                        series: s,
                        labels: raw,
                        value: *v,
                        timestamp: *timestamp,
                        exemplar: None,
                    },
                    Val::H(h) => Entry::Histogram {
                        name,
                        series: s,
                        labels: raw,
                        value: h,
                        timestamp: *timestamp,
                    },
                })
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(families: &[pb::MetricFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in families {
            f.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn families_become_the_series_prometheus_makes() {
        let label = |n: &str, v: &str| pb::LabelPair {
            name: n.into(),
            value: v.into(),
        };
        let classic = pb::Histogram {
            sample_count: 5,
            sample_sum: 2.5,
            bucket: vec![pb::Bucket {
                cumulative_count: 3,
                upper_bound: 1.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let native_h = pb::Histogram {
            sample_count: 4,
            sample_sum: 3.0,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: 1,
            positive_span: vec![pb::BucketSpan {
                offset: 0,
                length: 3,
            }],
            // 2, 0, 1: the empty middle bucket is compacted away.
            positive_delta: vec![2, -2, 1],
            ..Default::default()
        };
        let b = body(&[
            pb::MetricFamily {
                name: "req".into(),
                help: "Requests \"seen\".".into(),
                r#type: pb::COUNTER,
                metric: vec![pb::Metric {
                    label: vec![label("path", "/a\"b")],
                    counter: Some(pb::Value { value: 7.0 }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::MetricFamily {
                name: "lat".into(),
                r#type: pb::HISTOGRAM,
                metric: vec![pb::Metric {
                    histogram: Some(classic),
                    timestamp_ms: 1234,
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::MetricFamily {
                name: "dur".into(),
                r#type: pb::HISTOGRAM,
                metric: vec![pb::Metric {
                    histogram: Some(native_h),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ]);
        let e = Exposition::decode(&b, false).unwrap();
        let got: Vec<String> = e
            .entries()
            .map(|x| match x {
                Entry::Sample {
                    series,
                    labels,
                    value,
                    timestamp,
                    ..
                } => {
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{series} [{}] {value} {timestamp:?}", l.join(","))
                }
                Entry::Histogram { series, value, .. } => match value {
                    HistogramValue::Int(h) => {
                        format!(
                            "{series} hist count={} {:?} {:?}",
                            h.count, h.positive_spans, h.positive_buckets
                        )
                    }
                    HistogramValue::Float(_) => "float".into(),
                },
                Entry::Help { metric, text } => format!("HELP {metric} {text}"),
                Entry::Type { metric, kind } => format!("TYPE {metric} {}", kind.as_str()),
                Entry::Unit { .. } => "unit".into(),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                "HELP req Requests \"seen\".",
                "TYPE req counter",
                "req{path=\"/a\\\"b\"} [path=/a\"b] 7 None",
                "TYPE lat histogram",
                "lat_count{} [] 5 Some(1234)",
                "lat_sum{} [] 2.5 Some(1234)",
                "lat_bucket{le=\"1.0\"} [le=1.0] 3 Some(1234)",
                "lat_bucket{le=\"+Inf\"} [le=+Inf] 5 Some(1234)",
                "TYPE dur histogram",
                "dur{} hist count=4 [Span { offset: 0, length: 1 }, Span { offset: 1, length: 1 }] [2, -1]",
            ]
        );
        assert!(
            Exposition::decode(&[5, 1, 2], false)
                .unwrap_err()
                .contains("message 1")
        );
    }
}
