//! Remote write 1.0's `prometheus.Histogram` messages to and from the histogram model: integer
//! histograms (`count_int`, `zero_count_int`, spatial `*_deltas`) and float histograms (`count_float`,
//! `zero_count_float`, absolute `*_counts`), the reset hint's numbers as `CounterResetHint`'s.

use meridian_core::histogram::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span,
};

use crate::proto::prometheus as prom;

fn spans(v: &[prom::BucketSpan]) -> Vec<Span> {
    v.iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

fn to_spans(v: &[Span]) -> Vec<prom::BucketSpan> {
    v.iter()
        .map(|s| prom::BucketSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

fn hint(h: i32) -> Result<CounterResetHint, String> {
    CounterResetHint::from_code(i64::from(h)).ok_or_else(|| format!("unknown reset_hint {h}"))
}

/// A message's histogram, checked as Prometheus checks what it appends (schema −4..=8, spans and
/// buckets agree, no negative counts, buckets within the count). Custom bucket schemas (−53) are
/// refused: Prometheus 2.42's formats cannot hold them.
pub fn to_value(h: &prom::Histogram) -> Result<HistogramValue, String> {
    use prom::histogram::{Count, ZeroCount};
    if h.schema == CUSTOM_BUCKETS_SCHEMA || !(-4..=8).contains(&h.schema) {
        return Err(format!(
            "histogram schema {} is not supported (exponential schemas -4 to 8)",
            h.schema
        ));
    }
    let v = match (h.count, h.zero_count) {
        (Some(Count::CountInt(count)), None | Some(ZeroCount::ZeroCountInt(_))) => {
            let zero_count = match h.zero_count {
                Some(ZeroCount::ZeroCountInt(z)) => z,
                _ => 0,
            };
            if !h.positive_counts.is_empty() || !h.negative_counts.is_empty() {
                return Err("an integer histogram carries float bucket counts".into());
            }
            HistogramValue::Int(Histogram {
                hint: hint(h.reset_hint)?,
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count,
                count,
                sum: h.sum,
                positive_spans: spans(&h.positive_spans),
                negative_spans: spans(&h.negative_spans),
                positive_buckets: h.positive_deltas.clone(),
                negative_buckets: h.negative_deltas.clone(),
            })
        }
        (Some(Count::CountFloat(count)), None | Some(ZeroCount::ZeroCountFloat(_))) => {
            let zero_count = match h.zero_count {
                Some(ZeroCount::ZeroCountFloat(z)) => z,
                _ => 0.0,
            };
            if !h.positive_deltas.is_empty() || !h.negative_deltas.is_empty() {
                return Err("a float histogram carries integer bucket deltas".into());
            }
            HistogramValue::Float(FloatHistogram {
                hint: hint(h.reset_hint)?,
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count,
                count,
                sum: h.sum,
                positive_spans: spans(&h.positive_spans),
                negative_spans: spans(&h.negative_spans),
                positive_buckets: h.positive_counts.clone(),
                negative_buckets: h.negative_counts.clone(),
                custom_values: Vec::new(),
            })
        }
        (None, _) => return Err("a histogram without a count".into()),
        _ => return Err("a histogram mixes integer and float counts".into()),
    };
    // A stale marker (sum the stale NaN) has no buckets to check.
    if !meridian_core::sample::is_stale_nan(v.sum()) {
        v.validate()?;
    }
    Ok(v)
}

/// The message for a histogram sample at `t` (ms).
pub fn from_value(t: i64, v: &HistogramValue) -> prom::Histogram {
    use prom::histogram::{Count, ZeroCount};
    match v {
        HistogramValue::Int(h) => prom::Histogram {
            count: Some(Count::CountInt(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(ZeroCount::ZeroCountInt(h.zero_count)),
            negative_spans: to_spans(&h.negative_spans),
            negative_deltas: h.negative_buckets.clone(),
            positive_spans: to_spans(&h.positive_spans),
            positive_deltas: h.positive_buckets.clone(),
            reset_hint: h.hint as i32,
            timestamp: t,
            ..prom::Histogram::default()
        },
        HistogramValue::Float(h) => prom::Histogram {
            count: Some(Count::CountFloat(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(ZeroCount::ZeroCountFloat(h.zero_count)),
            negative_spans: to_spans(&h.negative_spans),
            negative_counts: h.negative_buckets.clone(),
            positive_spans: to_spans(&h.positive_spans),
            positive_counts: h.positive_buckets.clone(),
            reset_hint: h.hint as i32,
            timestamp: t,
            ..prom::Histogram::default()
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_named() {
        let h = Histogram {
            hint: CounterResetHint::Gauge,
            schema: 2,
            zero_threshold: 0.001,
            zero_count: 1,
            count: 6,
            sum: 7.5,
            positive_spans: vec![Span {
                offset: -1,
                length: 2,
            }],
            positive_buckets: vec![2, 1],
            ..Histogram::default()
        };
        for v in [
            HistogramValue::Int(h.clone()),
            HistogramValue::Float(h.to_float()),
        ] {
            assert_eq!(to_value(&from_value(5, &v)).unwrap(), v);
        }
        let mut bad = from_value(5, &HistogramValue::Int(h.clone()));
        bad.schema = 9;
        assert!(to_value(&bad).unwrap_err().contains("schema 9"));
        let mut bad = from_value(5, &HistogramValue::Int(h));
        bad.positive_deltas = vec![2, -3];
        assert!(to_value(&bad).unwrap_err().contains("negative count"));
    }
}
