//! The head's chunks of every encoding (XOR floats, integer and float native histograms) and the
//! appending of native histograms.
//!
//! A histogram chunk is cut, as Prometheus 2.42's head does (`head_append.go`), after 120 samples, at
//! a block boundary, at a counter reset (the chunk's header then says so) and when the sample's kind
//! changes (float, integer or float histogram). Where 2.42 re-encodes the open chunk with new buckets
//! added, this head cuts a new chunk (the chunk encoders refuse a changed layout); both are valid
//! chunks that Prometheus reads.

use std::sync::Arc;

use meridian_core::chunkenc::{
    CounterResetHeader, Encoding, FloatHistogramChunk, HistogramChunk, SAMPLES_PER_CHUNK, XorChunk,
    read_float_histograms, read_histograms,
};
use meridian_core::histogram::{CounterResetHint, FloatHistogram, Histogram, HistogramValue};
use meridian_core::sample::{Sample, is_stale_nan};

use super::{Head, HeadChunk};

/// A head chunk's data.
pub(crate) enum Body {
    Xor(XorChunk),
    Hist(HistogramChunk),
    FloatHist(FloatHistogramChunk),
}

impl Body {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Body::Xor(c) => c.bytes(),
            Body::Hist(c) => c.bytes(),
            Body::FloatHist(c) => c.bytes(),
        }
    }

    pub(crate) fn num_samples(&self) -> u16 {
        match self {
            Body::Xor(c) => c.num_samples(),
            Body::Hist(c) => c.num_samples(),
            Body::FloatHist(c) => c.num_samples(),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        match self {
            Body::Xor(_) => Encoding::Xor,
            Body::Hist(_) => Encoding::Histogram,
            Body::FloatHist(_) => Encoding::FloatHistogram,
        }
    }

    /// The float samples (none in a histogram chunk).
    pub(crate) fn floats(&self) -> impl Iterator<Item = Sample> + '_ {
        match self {
            Body::Xor(c) => Some(c.iter()),
            _ => None,
        }
        .into_iter()
        .flatten()
    }

    /// The histogram samples (none in an XOR chunk); a chunk the head wrote always decodes.
    pub(crate) fn histograms(&self) -> Vec<(i64, HistogramValue)> {
        match self {
            Body::Xor(_) => Vec::new(),
            Body::Hist(c) => read_histograms(c.bytes())
                .map(|(_, v)| {
                    v.into_iter()
                        .map(|(t, h)| (t, HistogramValue::Int(h)))
                        .collect()
                })
                .unwrap_or_default(),
            Body::FloatHist(c) => read_float_histograms(c.bytes())
                .map(|(_, v)| {
                    v.into_iter()
                        .map(|(t, h)| (t, HistogramValue::Float(h)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A new chunk for `h` with its counter-reset header.
fn new_chunk(h: &HistogramValue, header: CounterResetHeader) -> Body {
    match h {
        HistogramValue::Int(_) => {
            let mut c = HistogramChunk::new(true);
            c.set_header(header);
            Body::Hist(c)
        }
        HistogramValue::Float(_) => {
            let mut c = FloatHistogramChunk::new(true);
            c.set_header(header);
            Body::FloatHist(c)
        }
    }
}

fn append_to(body: &mut Body, t: i64, h: &HistogramValue) -> bool {
    match (body, h) {
        (Body::Hist(c), HistogramValue::Int(h)) => c.append(t, h).is_ok(),
        (Body::FloatHist(c), HistogramValue::Float(h)) => c.append(t, h).is_ok(),
        _ => false,
    }
}

fn same_kind(body: &Body, h: &HistogramValue) -> bool {
    matches!(
        (body, h),
        (Body::Hist(_), HistogramValue::Int(_)) | (Body::FloatHist(_), HistogramValue::Float(_))
    )
}

impl Head {
    /// Appends a checked histogram sample (see the module documentation for where chunks are cut).
    pub(crate) fn append_histogram(&mut self, r: u64, t: i64, h: &HistogramValue) {
        let range = self.chunk_range;
        let keep = self.keep_samples;
        let Some(series) = self.series.get_mut(r as usize).and_then(Option::as_mut) else {
            return;
        };
        series.linger = None;
        series.last = Some((t, h.fingerprint()));
        self.max_t = self.max_t.max(t);
        if !keep {
            return;
        }
        let stale = is_stale_nan(h.sum());
        let gauge = h.hint() == CounterResetHint::Gauge;
        let float = h.to_float();
        let reset = !stale
            && !gauge
            && series
                .last_hist
                .as_deref()
                .is_some_and(|prev| float.detect_reset(prev));
        let cut = match series.chunks.last() {
            None => true,
            Some(c) => {
                !same_kind(&c.chunk, h)
                    || reset
                    || c.chunk.num_samples() >= SAMPLES_PER_CHUNK
                    || t.div_euclid(range) != c.min_t.div_euclid(range)
            }
        };
        let header = |follows_histogram: bool| match (gauge, reset) {
            (true, _) => CounterResetHeader::Gauge,
            (false, true) => CounterResetHeader::CounterReset,
            (false, false) if follows_histogram => CounterResetHeader::NotCounterReset,
            _ => CounterResetHeader::Unknown,
        };
        let follows = series
            .chunks
            .last()
            .is_some_and(|c| !matches!(c.chunk, Body::Xor(_)));
        if cut {
            series.chunks.push(HeadChunk {
                chunk: new_chunk(h, header(follows)),
                min_t: t,
                max_t: t,
            });
        }
        let appended = series
            .chunks
            .last_mut()
            .is_some_and(|c| append_to(&mut c.chunk, t, h));
        if !appended {
            // A new layout (buckets added or gone, another schema) or a live sample after a stale
            // one: a chunk of its own.
            let mut chunk = new_chunk(h, header(true));
            if append_to(&mut chunk, t, h) {
                series.chunks.push(HeadChunk {
                    chunk,
                    min_t: t,
                    max_t: t,
                });
            }
        }
        if let Some(c) = series.chunks.last_mut() {
            c.max_t = t;
        }
        series.last_hist = (!stale).then(|| Arc::new(float));
    }
}

/// Histogram samples (reference, time, histogram) of integer and of float counts.
pub(crate) type ByKind = (Vec<(u64, i64, Histogram)>, Vec<(u64, i64, FloatHistogram)>);

/// Histograms of a kind, by series reference, for WAL records.
pub(crate) fn split_kinds(samples: impl Iterator<Item = (u64, i64, HistogramValue)>) -> ByKind {
    let (mut ints, mut floats) = (Vec::new(), Vec::new());
    for (r, t, h) in samples {
        match h {
            HistogramValue::Int(h) => ints.push((r, t, h)),
            HistogramValue::Float(h) => floats.push((r, t, h)),
        }
    }
    (ints, floats)
}
