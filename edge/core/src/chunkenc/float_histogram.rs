//! Float-histogram chunks (encoding 3, `tsdb/chunkenc/float_histogram.go`, v2.42.0): the layout and
//! timestamps as in encoding 2; count, zero count, sum and every (absolute) bucket written raw in the
//! first sample and Gorilla-XOR after it, each field with its own leading/trailing-zero window.

use super::ChunkError;
use super::bstream::{BitReader, BitWriter};
use super::histogram::{
    CounterResetHeader, HistogramLayout, check_next, header, new_writer, put_varbit_int,
    read_layout, read_varbit_int, sample_hint, set_count, write_layout, xor_read,
};
use super::xor::write_value as xor_write;
use crate::histogram::{FloatHistogram, span_buckets};
use crate::sample::{STALE_NAN_BITS, is_stale_nan};

/// One Gorilla-XOR field with its own window.
#[derive(Debug, Clone, Copy)]
struct XorField {
    v: f64,
    leading: u8,
    trailing: u8,
}

impl XorField {
    fn new(v: f64) -> XorField {
        XorField {
            v,
            leading: 0xff,
            trailing: 0,
        }
    }

    fn write(&mut self, w: &mut BitWriter, v: f64) {
        xor_write(w, v, self.v, &mut self.leading, &mut self.trailing);
        self.v = v;
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Option<f64> {
        self.v = xor_read(r, self.v, &mut self.leading, &mut self.trailing)?;
        Some(self.v)
    }
}

/// A float-histogram chunk (encoding 3) being written.
#[derive(Debug, Clone)]
pub struct FloatHistogramChunk {
    w: BitWriter,
    num: u16,
    layout: Option<HistogramLayout>,
    t: i64,
    t_delta: i64,
    cnt: XorField,
    zcnt: XorField,
    sum: XorField,
    pos: Vec<XorField>,
    neg: Vec<XorField>,
    stale: bool,
}

impl FloatHistogramChunk {
    pub fn new(legacy_trailing_byte: bool) -> FloatHistogramChunk {
        FloatHistogramChunk {
            w: new_writer(legacy_trailing_byte),
            num: 0,
            layout: None,
            t: 0,
            t_delta: 0,
            cnt: XorField::new(0.0),
            zcnt: XorField::new(0.0),
            sum: XorField::new(0.0),
            pos: Vec::new(),
            neg: Vec::new(),
            stale: false,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    pub fn num_samples(&self) -> u16 {
        self.num
    }

    pub fn set_header(&mut self, h: CounterResetHeader) {
        self.w.buf[2] = (self.w.buf[2] & 0x3f) | h as u8;
    }

    /// As [`HistogramChunk::append`].
    pub fn append(&mut self, t: i64, h: &FloatHistogram) -> Result<(), ChunkError> {
        if self.num == u16::MAX {
            return Err(ChunkError::Full);
        }
        let stale_owned;
        let stale = is_stale_nan(h.sum);
        let h = if stale {
            stale_owned = FloatHistogram {
                sum: f64::from_bits(STALE_NAN_BITS),
                ..FloatHistogram::default()
            };
            &stale_owned
        } else {
            h
        };
        let w = &mut self.w;
        if self.num == 0 {
            let l = HistogramLayout::of(
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
            );
            write_layout(w, &l);
            put_varbit_int(w, t);
            for v in [h.count, h.zero_count, h.sum]
                .iter()
                .chain(&h.positive_buckets)
                .chain(&h.negative_buckets)
            {
                w.write_bits(v.to_bits(), 64);
            }
            self.cnt = XorField::new(h.count);
            self.zcnt = XorField::new(h.zero_count);
            self.sum = XorField::new(h.sum);
            self.pos = h
                .positive_buckets
                .iter()
                .map(|v| XorField::new(*v))
                .collect();
            self.neg = h
                .negative_buckets
                .iter()
                .map(|v| XorField::new(*v))
                .collect();
            self.t_delta = 0;
            self.layout = Some(l);
        } else {
            let new = HistogramLayout::of(
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
            );
            check_next(
                self.layout.as_ref(),
                self.stale,
                stale,
                &new,
                (h.positive_buckets.len(), h.negative_buckets.len()),
            )?;
            let t_delta = t.wrapping_sub(self.t);
            put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
            self.t_delta = t_delta;
            self.cnt.write(w, h.count);
            self.zcnt.write(w, h.zero_count);
            self.sum.write(w, h.sum);
            if !stale {
                for (f, v) in self.pos.iter_mut().zip(&h.positive_buckets) {
                    f.write(w, *v);
                }
                for (f, v) in self.neg.iter_mut().zip(&h.negative_buckets) {
                    f.write(w, *v);
                }
            }
        }
        self.t = t;
        self.stale = stale;
        self.num += 1;
        set_count(&mut self.w.buf, self.num);
        Ok(())
    }
}

/// Reads a float-histogram chunk, as [`read_histograms`].
pub fn read_float_histograms(
    data: &[u8],
) -> Result<(CounterResetHeader, Vec<(i64, FloatHistogram)>), ChunkError> {
    let (total, head) = header(data)?;
    let max_bits = data.len() * 8;
    let mut r = BitReader::new(&data[3..]);
    let trunc = |read: usize| ChunkError::Truncated {
        read: read as u16,
        total,
    };
    let mut out = Vec::with_capacity(usize::from(total).min(max_bits));
    if total == 0 {
        return Ok((head, out));
    }
    let l = read_layout(&mut r, max_bits).ok_or_else(|| trunc(0))?;
    let (np, nn) = (span_buckets(&l.positive), span_buckets(&l.negative));
    let (mut t, mut t_delta) = (0i64, 0i64);
    let mut cnt = XorField::new(0.0);
    let mut zcnt = XorField::new(0.0);
    let mut sum = XorField::new(0.0);
    let mut pos: Vec<XorField> = Vec::new();
    let mut neg: Vec<XorField> = Vec::new();
    for k in 0..usize::from(total) {
        let ok = (|| {
            if k == 0 {
                t = read_varbit_int(&mut r)?;
                cnt = XorField::new(f64::from_bits(r.read_bits(64)?));
                zcnt = XorField::new(f64::from_bits(r.read_bits(64)?));
                sum = XorField::new(f64::from_bits(r.read_bits(64)?));
                if !is_stale_nan(sum.v) {
                    for _ in 0..np {
                        pos.push(XorField::new(f64::from_bits(r.read_bits(64)?)));
                    }
                    for _ in 0..nn {
                        neg.push(XorField::new(f64::from_bits(r.read_bits(64)?)));
                    }
                }
            } else {
                t_delta = t_delta.wrapping_add(read_varbit_int(&mut r)?);
                t = t.wrapping_add(t_delta);
                cnt.read(&mut r)?;
                zcnt.read(&mut r)?;
                sum.read(&mut r)?;
                if !is_stale_nan(sum.v) {
                    if pos.len() != np || neg.len() != nn {
                        return None;
                    }
                    for f in pos.iter_mut().chain(neg.iter_mut()) {
                        f.read(&mut r)?;
                    }
                }
            }
            Some(())
        })();
        ok.ok_or_else(|| trunc(k))?;
        let h = if is_stale_nan(sum.v) {
            FloatHistogram {
                sum: sum.v,
                ..FloatHistogram::default()
            }
        } else {
            FloatHistogram {
                hint: sample_hint(head, k),
                schema: l.schema,
                zero_threshold: l.zero_threshold,
                zero_count: zcnt.v,
                count: cnt.v,
                sum: sum.v,
                positive_spans: l.positive.clone(),
                negative_spans: l.negative.clone(),
                positive_buckets: pos.iter().map(|f| f.v).collect(),
                negative_buckets: neg.iter().map(|f| f.v).collect(),
                custom_values: Vec::new(),
            }
        };
        out.push((t, h));
    }
    Ok((head, out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::histogram::tests::{hex, sp};
    use super::*;
    use crate::histogram::CounterResetHint;

    #[test]
    fn float_histogram_chunk_bytes() {
        let base = FloatHistogram {
            schema: 0,
            zero_threshold: f64::from_bits(0x37f0_0000_0000_0000), // 2^-128
            positive_spans: sp(&[(-1, 3)]),
            ..FloatHistogram::default()
        };
        let samples = [
            (1000, 5.0, 1.0, 10.5, [1.0, 2.0, 1.0]),
            (2000, 7.0, 1.0, 12.25, [1.0, 3.0, 2.0]),
            (3000, 9.5, 2.0, 15.0, [1.5, 3.0, 3.0]),
        ];
        let mut c = FloatHistogramChunk::new(true);
        let mut hs = Vec::new();
        for (t, count, zc, sum, pb) in samples {
            let h = FloatHistogram {
                count,
                zero_count: zc,
                sum,
                positive_buckets: pb.to_vec(),
                ..base.clone()
            };
            c.append(t, &h).unwrap();
            hs.push((t, h));
        }
        assert_eq!(
            hex(c.bytes()),
            "00030074467778fa10050000000000000ffc00000000000010094000000000000ffc00000000000010000000000000000ffc0000000000003c7d1b01b60bb6c0784bffed437f84bfff376036c060"
        );
        c.set_header(CounterResetHeader::Gauge);
        let (head, got) = read_float_histograms(c.bytes()).unwrap();
        assert_eq!(head, CounterResetHeader::Gauge);
        for ((t, h), (gt, gh)) in hs.iter().zip(&got) {
            assert_eq!(t, gt);
            let mut h = h.clone();
            h.hint = CounterResetHint::Gauge;
            assert_eq!(&h, gh);
        }
    }
}
