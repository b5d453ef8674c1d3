//! Prometheus' WAL records of native-histogram samples (`tsdb/record/record.go`, v2.42.0): type 7,
//! integer histograms, and type 8, float histograms. A record is the first sample's reference and time
//! (big-endian), then per sample: reference and time as signed varint deltas from those, the
//! counter-reset hint byte, the schema, the zero threshold, **zero count before count**, the sum, the
//! spans (**offset before length**, unlike chunks) and the buckets (spatial deltas for integer
//! histograms, absolute floats for float ones).

use meridian_core::histogram::{CounterResetHint, FloatHistogram, Histogram, Span};

use super::{Dec, PromWalError, bad};
use crate::index::{put_uvarint, put_varint};

pub const HISTOGRAM_SAMPLES: u8 = 7;
pub const FLOAT_HISTOGRAM_SAMPLES: u8 = 8;

fn hint(b: u8) -> Result<CounterResetHint, PromWalError> {
    CounterResetHint::from_code(i64::from(b))
        .ok_or_else(|| bad("a histogram with an unknown counter-reset hint"))
}

impl Dec<'_> {
    fn byte(&mut self) -> Result<u8, PromWalError> {
        let Some((b, rest)) = self.0.split_first() else {
            return Err(bad("a record cut short"));
        };
        self.0 = rest;
        Ok(*b)
    }

    fn f64(&mut self) -> Result<f64, PromWalError> {
        self.be64().map(f64::from_bits)
    }

    /// A count of items that take at least one byte each: bounded by what is left.
    fn len(&mut self) -> Result<usize, PromWalError> {
        let n = self.uvarint()?;
        if n > self.0.len() as u64 {
            return Err(bad("a list longer than its record"));
        }
        Ok(n as usize)
    }

    fn spans(&mut self) -> Result<Vec<Span>, PromWalError> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = i32::try_from(self.varint()?).map_err(|_| bad("a span offset"))?;
            // Go's Uvarint32: the low 32 bits, unchecked.
            let length = self.uvarint()? as u32;
            out.push(Span { offset, length });
        }
        Ok(out)
    }
}

/// What every sample of a record starts with.
struct Common {
    hint: CounterResetHint,
    schema: i32,
    zero_threshold: f64,
}

/// The samples of a record's body: per sample the reference and time deltas and [`Common`], then
/// what `rest` reads.
fn decode_samples<H>(
    d: &mut Dec<'_>,
    mut rest: impl FnMut(&mut Dec<'_>, Common) -> Result<H, PromWalError>,
) -> Result<Vec<(u64, i64, H)>, PromWalError> {
    let mut out = Vec::new();
    if d.0.is_empty() {
        return Ok(out);
    }
    let base_ref = d.be64()?;
    let base_t = d.be64()? as i64;
    while !d.0.is_empty() {
        let r = (base_ref as i64).wrapping_add(d.varint()?) as u64;
        let t = base_t.wrapping_add(d.varint()?);
        let common = Common {
            hint: hint(d.byte()?)?,
            schema: i32::try_from(d.varint()?).map_err(|_| bad("a histogram schema"))?,
            zero_threshold: d.f64()?,
        };
        out.push((r, t, rest(d, common)?));
    }
    Ok(out)
}

/// The samples of a type-7 record's body: reference, time, histogram.
pub(super) fn decode_histograms(
    d: &mut Dec<'_>,
) -> Result<Vec<(u64, i64, Histogram)>, PromWalError> {
    decode_samples(d, |d, c| {
        let zero_count = d.uvarint()?;
        let count = d.uvarint()?;
        let sum = d.f64()?;
        let positive_spans = d.spans()?;
        let negative_spans = d.spans()?;
        let mut buckets = || -> Result<Vec<i64>, PromWalError> {
            let n = d.len()?;
            (0..n).map(|_| d.varint()).collect()
        };
        let positive_buckets = buckets()?;
        let negative_buckets = buckets()?;
        Ok(Histogram {
            hint: c.hint,
            schema: c.schema,
            zero_threshold: c.zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans,
            negative_spans,
            positive_buckets,
            negative_buckets,
        })
    })
}

/// The samples of a type-8 record's body.
pub(super) fn decode_float_histograms(
    d: &mut Dec<'_>,
) -> Result<Vec<(u64, i64, FloatHistogram)>, PromWalError> {
    decode_samples(d, |d, c| {
        let zero_count = d.f64()?;
        let count = d.f64()?;
        let sum = d.f64()?;
        let positive_spans = d.spans()?;
        let negative_spans = d.spans()?;
        let mut buckets = || -> Result<Vec<f64>, PromWalError> {
            let n = d.len()?;
            (0..n).map(|_| d.f64()).collect()
        };
        let positive_buckets = buckets()?;
        let negative_buckets = buckets()?;
        Ok(FloatHistogram {
            hint: c.hint,
            schema: c.schema,
            zero_threshold: c.zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans,
            negative_spans,
            positive_buckets,
            negative_buckets,
            custom_values: Vec::new(),
        })
    })
}

fn put_spans(out: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(out, spans.len() as u64);
    for s in spans {
        put_varint(out, i64::from(s.offset));
        put_uvarint(out, u64::from(s.length));
    }
}

/// A type-7 record, as Prometheus writes it.
pub fn encode_histograms(samples: &[(u64, i64, Histogram)]) -> Vec<u8> {
    let mut out = vec![HISTOGRAM_SAMPLES];
    let Some((r0, t0, _)) = samples.first() else {
        return out;
    };
    out.extend_from_slice(&r0.to_be_bytes());
    out.extend_from_slice(&t0.to_be_bytes());
    for (r, t, h) in samples {
        put_varint(&mut out, (*r as i64).wrapping_sub(*r0 as i64));
        put_varint(&mut out, t.wrapping_sub(*t0));
        out.push(h.hint as u8);
        put_varint(&mut out, i64::from(h.schema));
        out.extend_from_slice(&h.zero_threshold.to_bits().to_be_bytes());
        put_uvarint(&mut out, h.zero_count);
        put_uvarint(&mut out, h.count);
        out.extend_from_slice(&h.sum.to_bits().to_be_bytes());
        put_spans(&mut out, &h.positive_spans);
        put_spans(&mut out, &h.negative_spans);
        for bs in [&h.positive_buckets, &h.negative_buckets] {
            put_uvarint(&mut out, bs.len() as u64);
            for b in bs {
                put_varint(&mut out, *b);
            }
        }
    }
    out
}

/// A type-8 record, as Prometheus writes it.
pub fn encode_float_histograms(samples: &[(u64, i64, FloatHistogram)]) -> Vec<u8> {
    let mut out = vec![FLOAT_HISTOGRAM_SAMPLES];
    let Some((r0, t0, _)) = samples.first() else {
        return out;
    };
    out.extend_from_slice(&r0.to_be_bytes());
    out.extend_from_slice(&t0.to_be_bytes());
    for (r, t, h) in samples {
        put_varint(&mut out, (*r as i64).wrapping_sub(*r0 as i64));
        put_varint(&mut out, t.wrapping_sub(*t0));
        out.push(h.hint as u8);
        put_varint(&mut out, i64::from(h.schema));
        for v in [h.zero_threshold, h.zero_count, h.count, h.sum] {
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        put_spans(&mut out, &h.positive_spans);
        put_spans(&mut out, &h.negative_spans);
        for bs in [&h.positive_buckets, &h.negative_buckets] {
            put_uvarint(&mut out, bs.len() as u64);
            for b in bs {
                out.extend_from_slice(&b.to_bits().to_be_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{PromRecord, decode};
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_what_they_cannot_hold() {
        let h = Histogram {
            hint: CounterResetHint::Gauge,
            schema: -2,
            zero_threshold: 1e-3,
            zero_count: 3,
            count: 20,
            sum: -4.5,
            positive_spans: vec![
                Span {
                    offset: -3,
                    length: 2,
                },
                Span {
                    offset: 4,
                    length: 1,
                },
            ],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            positive_buckets: vec![5, -2, 4],
            negative_buckets: vec![1],
        };
        let samples = vec![(7, 1_000, h.clone()), (3, 900, Histogram::default())];
        let rec = encode_histograms(&samples);
        assert_eq!(decode(&rec).unwrap(), PromRecord::Histograms(samples));
        let f = h.to_float();
        let fs = vec![(9, 5, f)];
        assert_eq!(
            decode(&encode_float_histograms(&fs)).unwrap(),
            PromRecord::FloatHistograms(fs)
        );
        assert_eq!(decode(&[7]).unwrap(), PromRecord::Histograms(vec![]));
        // A span list claiming more entries than bytes: refused, not allocated.
        let mut bad = encode_histograms(&[(1, 1, Histogram::default())]);
        let n = bad.len();
        bad.truncate(n - 4);
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&bad).is_err());
        let mut hint = rec.clone();
        hint[1 + 16 + 2] = 9;
        assert!(decode(&hint).is_err());
    }
}
