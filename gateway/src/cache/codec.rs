//! Range-query pieces as stored in a shared cache: a protobuf message that carries the piece's full
//! logical key (checked on read: a hash collision or a foreign value is a miss, as in Thanos'
//! `CachedResponse.key`), the series with their float samples (timestamps delta-encoded) and
//! native-histogram samples, and how many samples the piece loaded.
//!
//! The stored key is `mrq:<FORMAT>:<hex of the 128-bit xxh3 of the logical key>`: short enough for
//! memcached's 250-byte keys, and the format version in it keeps readers of another version away.

use std::sync::Arc;

use meridian_core::histogram::{CounterResetHint, FloatHistogram, Span};
use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use prost::Message;

use crate::queryable::{HPoint, SeriesData};

/// Bump when the message or what goes into a logical key changes.
pub const FORMAT: &str = "v1";

/// The key a piece is stored under.
pub fn stored_key(logical: &str) -> String {
    format!(
        "mrq:{FORMAT}:{:032x}",
        xxhash_rust::xxh3::xxh3_128(logical.as_bytes())
    )
}

#[derive(Clone, PartialEq, prost::Message)]
struct CachedPiece {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, repeated, tag = "2")]
    series: Vec<CachedSeries>,
    #[prost(uint64, tag = "3")]
    samples: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CachedSeries {
    /// Names and values, alternating.
    #[prost(string, repeated, tag = "1")]
    labels: Vec<String>,
    /// Float sample timestamps, each the difference from the previous one (the first from 0).
    #[prost(sint64, repeated, tag = "2")]
    t: Vec<i64>,
    #[prost(double, repeated, tag = "3")]
    v: Vec<f64>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<CachedHistogram>,
    #[prost(bool, tag = "5")]
    counts: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CachedHistogram {
    #[prost(sint64, tag = "1")]
    t: i64,
    #[prost(sint32, tag = "2")]
    schema: i32,
    #[prost(double, tag = "3")]
    zero_threshold: f64,
    #[prost(double, tag = "4")]
    zero_count: f64,
    #[prost(double, tag = "5")]
    count: f64,
    #[prost(double, tag = "6")]
    sum: f64,
    /// Offsets and lengths, alternating.
    #[prost(sint64, repeated, tag = "7")]
    positive_spans: Vec<i64>,
    #[prost(sint64, repeated, tag = "8")]
    negative_spans: Vec<i64>,
    #[prost(double, repeated, tag = "9")]
    positive_buckets: Vec<f64>,
    #[prost(double, repeated, tag = "10")]
    negative_buckets: Vec<f64>,
    #[prost(double, repeated, tag = "11")]
    custom_values: Vec<f64>,
    #[prost(int32, tag = "12")]
    hint: i32,
}

fn spans_out(v: &[Span]) -> Vec<i64> {
    v.iter()
        .flat_map(|s| [i64::from(s.offset), i64::from(s.length)])
        .collect()
}

fn spans_in(v: &[i64]) -> Option<Vec<Span>> {
    if !v.len().is_multiple_of(2) {
        return None;
    }
    v.chunks_exact(2)
        .map(|p| {
            Some(Span {
                offset: i32::try_from(p[0]).ok()?,
                length: u32::try_from(p[1]).ok()?,
            })
        })
        .collect()
}

fn histogram_out(p: &HPoint) -> CachedHistogram {
    let h = &*p.h;
    CachedHistogram {
        t: p.t,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count,
        count: h.count,
        sum: h.sum,
        positive_spans: spans_out(&h.positive_spans),
        negative_spans: spans_out(&h.negative_spans),
        positive_buckets: h.positive_buckets.clone(),
        negative_buckets: h.negative_buckets.clone(),
        custom_values: h.custom_values.clone(),
        hint: h.hint as i32,
    }
}

fn histogram_in(c: CachedHistogram) -> Option<HPoint> {
    Some(HPoint {
        t: c.t,
        h: Arc::new(FloatHistogram {
            hint: CounterResetHint::from_code(i64::from(c.hint))?,
            schema: c.schema,
            zero_threshold: c.zero_threshold,
            zero_count: c.zero_count,
            count: c.count,
            sum: c.sum,
            positive_spans: spans_in(&c.positive_spans)?,
            negative_spans: spans_in(&c.negative_spans)?,
            positive_buckets: c.positive_buckets,
            negative_buckets: c.negative_buckets,
            custom_values: c.custom_values,
        }),
    })
}

/// Encodes a piece stored under `logical`.
pub fn encode(logical: &str, series: &[SeriesData], samples: usize) -> Vec<u8> {
    let msg = CachedPiece {
        key: logical.to_owned(),
        series: series
            .iter()
            .map(|s| {
                let mut prev = 0i64;
                CachedSeries {
                    labels: s
                        .labels
                        .iter()
                        .flat_map(|l| [l.name.to_string(), l.value.to_string()])
                        .collect(),
                    t: s.samples
                        .iter()
                        .map(|x| {
                            let d = x.t.wrapping_sub(prev);
                            prev = x.t;
                            d
                        })
                        .collect(),
                    v: s.samples.iter().map(|x| x.v).collect(),
                    histograms: s.histograms.iter().map(histogram_out).collect(),
                    counts: s.counts,
                }
            })
            .collect(),
        samples: samples as u64,
    };
    msg.encode_to_vec()
}

/// The piece in `bytes` if it is one stored under `logical` (anything else: `None`, a miss).
pub fn decode(logical: &str, bytes: &[u8]) -> Option<(Vec<SeriesData>, usize)> {
    let msg = CachedPiece::decode(bytes).ok()?;
    if msg.key != logical {
        return None;
    }
    let mut series = Vec::with_capacity(msg.series.len());
    for s in msg.series {
        if s.labels.len() % 2 != 0 || s.t.len() != s.v.len() {
            return None;
        }
        let labels = Labels::from_pairs(
            s.labels
                .chunks_exact(2)
                .map(|p| (p[0].as_str(), p[1].as_str())),
        );
        let mut t = 0i64;
        let samples =
            s.t.iter()
                .zip(&s.v)
                .map(|(d, v)| {
                    t = t.wrapping_add(*d);
                    Sample { t, v: *v }
                })
                .collect();
        let histograms = s
            .histograms
            .into_iter()
            .map(histogram_in)
            .collect::<Option<Vec<_>>>()?;
        series.push(SeriesData {
            labels,
            samples,
            histograms,
            counts: s.counts,
        });
    }
    Some((series, usize::try_from(msg.samples).unwrap_or(usize::MAX)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn piece() -> Vec<SeriesData> {
        vec![SeriesData {
            labels: Labels::from_pairs([("__name__", "x"), ("job", "a")]),
            samples: vec![
                Sample { t: -5, v: 1.5 },
                Sample {
                    t: 1_700_000_000_000,
                    v: f64::from_bits(0x7ff0_0000_0000_0002),
                },
            ],
            histograms: vec![HPoint {
                t: 7,
                h: Arc::new(FloatHistogram {
                    hint: CounterResetHint::Gauge,
                    schema: -53,
                    zero_threshold: 0.001,
                    zero_count: 1.0,
                    count: 9.0,
                    sum: -3.5,
                    positive_spans: vec![Span {
                        offset: -2,
                        length: 2,
                    }],
                    negative_spans: vec![],
                    positive_buckets: vec![3.0, 5.0],
                    negative_buckets: vec![],
                    custom_values: vec![0.5, 1.0],
                }),
            }],
            counts: true,
        }]
    }

    #[test]
    fn a_piece_comes_back_bit_for_bit() {
        let p = piece();
        let bytes = encode("q", &p, 42);
        let (back, samples) = decode("q", &bytes).unwrap();
        assert_eq!(samples, 42);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].labels, p[0].labels);
        let bits = |s: &SeriesData| -> Vec<(i64, u64)> {
            s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect()
        };
        assert_eq!(bits(&back[0]), bits(&p[0]));
        assert_eq!(back[0].histograms, p[0].histograms);
        assert!(back[0].counts);
    }

    #[test]
    fn another_key_or_garbage_is_a_miss() {
        let bytes = encode("q", &piece(), 1);
        assert!(decode("other", &bytes).is_none());
        assert!(decode("q", &bytes[..bytes.len() / 2]).is_none());
        assert!(decode("q", b"\xff\xff\xff").is_none());
        assert_ne!(stored_key("a"), stored_key("b"));
        assert!(stored_key(&"x".repeat(10_000)).len() < 250);
    }
}
