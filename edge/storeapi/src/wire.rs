//! `thanos.Series` and the two messages that carry it (`SeriesBatch`, `SeriesResponse`), written by hand
//! so that a series' labels go between the wire and a [`Labels`] without a `String` per name and value.
//!
//! The generated `thanos.Label` costs two allocations per label on each side of a call, and as many
//! frees: on a whole-metric instant query that (with the conversions to and from [`Labels`]) was a
//! quarter of the edge's CPU and close to half of the gateway's (issue 25, `perf record`). Here a
//! series' labels are encoded straight from its [`Labels`], and decoded into a per-thread scratch
//! buffer, from which the label set is built once, at the end of the series' bytes. The containers are
//! hand-written too because prost's generated decoders hand a nested message its fields one at a time
//! and never say when it is complete.
//!
//! The bytes are prost's (prost 0.14) for the messages of `proto/thanos/rpc.proto`: fields in tag
//! order, empty strings left out of a `Label`, a oneof member written even when empty;
//! `tests/it/series_wire.rs` checks both directions against prost-derived messages with the generated
//! `thanos.Label`. Decoding keeps [`labels_from_proto`](crate::labels_from_proto)'s rules: labels
//! sorted by name, empty values dropped, the last value of a repeated name kept. Unknown fields are
//! skipped, as everywhere in protobuf.

use std::cell::Cell;
use std::ops::Range;

use prost::DecodeError;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, check_wire_type, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, message, skip_field, string,
};

use crate::proto::thanos::AggrChunk;
use meridian_core::labels::Labels;

/// One series of a `Series` answer (`thanos.Series`): its labels and chunks.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Series {
    pub labels: Labels,
    pub chunks: Vec<AggrChunk>,
}

/// Several series in one frame (`thanos.SeriesBatch`, `response_batch_size`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct SeriesBatch {
    pub series: Vec<Series>,
}

/// One frame of a `Series` answer (`thanos.SeriesResponse`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct SeriesResponse {
    pub result: Option<series_response::Result>,
}

/// The oneof of [`SeriesResponse`], named as prost would.
pub mod series_response {
    /// What a `Series` answer's frame holds.
    #[derive(Clone, PartialEq, Debug)]
    pub enum Result {
        Series(super::Series),
        Warning(String),
        Hints(prost_types::Any),
        Batch(super::SeriesBatch),
    }
}

/// The length of a string field as prost writes it: nothing when empty (proto3).
fn str_field_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(1) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn encode_str_field(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// A `thanos.Label` message's body length.
fn label_len(name: &str, value: &str) -> usize {
    str_field_len(name) + str_field_len(value)
}

#[allow(deprecated)] // prost offers no other way for a hand-written `Message` to name its error.
fn decode_error(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

/// Reads a length prefix and returns where the delimited bytes end, as `buf.remaining()` will be then.
fn delimited_end(buf: &mut impl Buf) -> Result<usize, DecodeError> {
    let len = decode_varint(buf)?;
    let remaining = buf.remaining();
    match usize::try_from(len) {
        Ok(len) if len <= remaining => Ok(remaining - len),
        _ => Err(decode_error("buffer underflow")),
    }
}

fn check_end(buf: &impl Buf, end: usize) -> Result<(), DecodeError> {
    if buf.remaining() == end {
        Ok(())
    } else {
        Err(decode_error("delimited length exceeded"))
    }
}

/// The labels of the series being decoded: their bytes back to back, and where each name and value is.
/// One per thread, reused from series to series (taken out of its cell while in use, so it is never
/// borrowed twice).
#[derive(Default)]
struct Scratch {
    text: Vec<u8>,
    labels: Vec<(Range<usize>, Range<usize>)>,
    /// Where each name and value ends, when the text is laid out as a label set's (kept for reuse).
    ends: Cell<Vec<u32>>,
}

/// An offset into the scratch text; a series' labels are bounded by the message size limit, far
/// below 4 GiB (and a larger one simply fails [`Labels::from_laid_out`]'s checks).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Capacity a thread's scratch may keep between series; a larger label set's buffer is let go.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

impl Scratch {
    /// Copies a length-delimited string field's bytes (validated as UTF-8 in [`Scratch::finish`]).
    fn read_str(&mut self, buf: &mut impl Buf, end: usize) -> Result<Range<usize>, DecodeError> {
        let len = decode_varint(buf)?;
        let Some(mut left) = usize::try_from(len)
            .ok()
            .filter(|l| buf.remaining().checked_sub(*l).is_some_and(|r| r >= end))
        else {
            return Err(decode_error("buffer underflow"));
        };
        let start = self.text.len();
        while left > 0 {
            let chunk = buf.chunk();
            let n = chunk.len().min(left);
            if n == 0 {
                return Err(decode_error("buffer underflow"));
            }
            self.text.extend_from_slice(&chunk[..n]);
            buf.advance(n);
            left -= n;
        }
        Ok(start..self.text.len())
    }

    /// Reads one `thanos.Label` message (after its key).
    fn read_label(&mut self, buf: &mut impl Buf, ctx: &DecodeContext) -> Result<(), DecodeError> {
        let end = delimited_end(buf)?;
        let (mut name, mut value) = (0..0, 0..0);
        while buf.remaining() > end {
            let (tag, wire_type) = decode_key(buf)?;
            match tag {
                1 | 2 => {
                    check_wire_type(WireType::LengthDelimited, wire_type)?;
                    let r = self.read_str(buf, end)?;
                    if tag == 1 { name = r } else { value = r }
                }
                _ => skip_field(wire_type, tag, buf, ctx.clone())?,
            }
        }
        check_end(buf, end)?;
        self.labels.push((name, value));
        Ok(())
    }

    /// The label set: `before`'s labels followed by those read (a later value of a name wins).
    fn finish(&self, before: &Labels) -> Result<Labels, DecodeError> {
        let utf8 = |r: &Range<usize>| {
            std::str::from_utf8(self.text.get(r.clone()).unwrap_or_default())
                .map_err(|_| decode_error("invalid string value: data is not UTF-8 encoded"))
        };
        if self.labels.is_empty() {
            return Ok(before.clone());
        }
        // The usual case: a new series whose labels came sorted, unique and non-empty, each name
        // followed by its value. The scratch text is then already a label set's layout.
        if before.is_empty() {
            let mut at = 0;
            let mut ends = self.ends.take();
            ends.clear();
            let laid_out = self.labels.iter().all(|(n, v)| {
                let ok = n.start == at && v.start == n.end;
                at = v.end;
                ends.push(offset(n.end));
                ends.push(offset(v.end));
                ok
            }) && at == self.text.len();
            let built = laid_out
                .then(|| std::str::from_utf8(&self.text).ok())
                .flatten()
                .and_then(|text| Labels::from_laid_out(text, &ends));
            self.ends.set(ends);
            if let Some(labels) = built {
                return Ok(labels);
            }
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(before.len() + self.labels.len());
        pairs.extend(before.iter().map(|l| (l.name, l.value)));
        for (n, v) in &self.labels {
            pairs.push((utf8(n)?, utf8(v)?));
        }
        Ok(Labels::from_pairs(pairs))
    }

    fn reset(&mut self) {
        self.labels.clear();
        self.text.clear();
        if self.text.capacity() > SCRATCH_KEEP {
            self.text = Vec::new();
        }
        if self.labels.capacity() > SCRATCH_KEEP / 16 {
            self.labels = Vec::new();
            self.ends.set(Vec::new());
        }
    }
}

impl Series {
    /// Reads the series' fields until `buf.remaining()` is `end`, merging them into `self`.
    fn merge_body(
        &mut self,
        buf: &mut impl Buf,
        end: usize,
        ctx: &DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut scratch = SCRATCH.take();
        let read = (|| {
            while buf.remaining() > end {
                let (tag, wire_type) = decode_key(buf)?;
                match tag {
                    1 => {
                        check_wire_type(WireType::LengthDelimited, wire_type)?;
                        scratch.read_label(buf, ctx)?;
                    }
                    2 => message::merge_repeated(wire_type, &mut self.chunks, buf, ctx.clone())?,
                    _ => skip_field(wire_type, tag, buf, ctx.clone())?,
                }
            }
            check_end(buf, end)?;
            scratch.finish(&self.labels)
        })();
        scratch.reset();
        SCRATCH.set(scratch);
        self.labels = read?;
        Ok(())
    }

    /// Reads a length-delimited series (after its key) into `self`.
    fn merge_delimited(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: &DecodeContext,
    ) -> Result<(), DecodeError> {
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let end = delimited_end(buf)?;
        self.merge_body(buf, end, ctx)
    }
}

impl prost::Message for Series {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for l in self.labels.iter() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(label_len(l.name, l.value) as u64, buf);
            encode_str_field(1, l.name, buf);
            encode_str_field(2, l.value, buf);
        }
        message::encode_repeated(2, &self.chunks, buf);
    }

    /// Only reached when a generated decoder holds a `Series` (none does: the containers are the ones
    /// above). Each label field rebuilds the label set, so this is the slow path; `decode` and the
    /// containers read a series whole.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                check_wire_type(WireType::LengthDelimited, wire_type)?;
                let mut scratch = Scratch::default();
                scratch.read_label(buf, &ctx)?;
                self.labels = scratch.finish(&self.labels)?;
                Ok(())
            }
            2 => message::merge_repeated(wire_type, &mut self.chunks, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        self.merge_body(&mut buf, 0, &DecodeContext::default())
    }

    fn encoded_len(&self) -> usize {
        let labels: usize = self
            .labels
            .iter()
            .map(|l| {
                let n = label_len(l.name, l.value);
                key_len(1) + encoded_len_varint(n as u64) + n
            })
            .sum();
        labels + message::encoded_len_repeated(2, &self.chunks)
    }

    fn clear(&mut self) {
        self.labels = Labels::empty();
        self.chunks.clear();
    }
}

impl prost::Message for SeriesBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        message::encode_repeated(1, &self.series, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == 1 {
            let mut s = Series::default();
            s.merge_delimited(wire_type, buf, &ctx)?;
            self.series.push(s);
            Ok(())
        } else {
            skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        message::encoded_len_repeated(1, &self.series)
    }

    fn clear(&mut self) {
        self.series.clear();
    }
}

impl prost::Message for SeriesResponse {
    /// prost's `encode` measures a batch's every series three times (the frame's length, the batch's,
    /// then each series' own prefix), walking every label each time; this measures each once. Same
    /// bytes, and the same refusal when `buf` is too small (prost's own `encode` does the check).
    fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        Measured::new(self).encode(buf)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        use series_response::Result as R;
        match &self.result {
            None => {}
            Some(R::Series(s)) => message::encode(1, s, buf),
            Some(R::Warning(w)) => string::encode(2, w, buf),
            Some(R::Hints(h)) => message::encode(3, h, buf),
            Some(R::Batch(b)) => message::encode(4, b, buf),
        }
    }

    /// As prost's oneof: a field of the member already set merges into it, another member replaces it.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use series_response::Result as R;
        match tag {
            1 => {
                let mut s = match self.result.take() {
                    Some(R::Series(s)) => s,
                    _ => Series::default(),
                };
                s.merge_delimited(wire_type, buf, &ctx)?;
                self.result = Some(R::Series(s));
            }
            2 => {
                let mut w = match self.result.take() {
                    Some(R::Warning(w)) => w,
                    _ => String::new(),
                };
                string::merge(wire_type, &mut w, buf, ctx)?;
                self.result = Some(R::Warning(w));
            }
            3 => {
                let mut h = match self.result.take() {
                    Some(R::Hints(h)) => h,
                    _ => prost_types::Any::default(),
                };
                message::merge(wire_type, &mut h, buf, ctx)?;
                self.result = Some(R::Hints(h));
            }
            4 => {
                let mut b = match self.result.take() {
                    Some(R::Batch(b)) => b,
                    _ => SeriesBatch::default(),
                };
                message::merge(wire_type, &mut b, buf, ctx)?;
                self.result = Some(R::Batch(b));
            }
            _ => skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        use series_response::Result as R;
        match &self.result {
            None => 0,
            Some(R::Series(s)) => message::encoded_len(1, s),
            Some(R::Warning(w)) => string::encoded_len(2, w),
            Some(R::Hints(h)) => message::encoded_len(3, h),
            Some(R::Batch(b)) => message::encoded_len(4, b),
        }
    }

    fn clear(&mut self) {
        self.result = None;
    }
}

/// A [`SeriesResponse`] whose batch's series are measured once (see [`SeriesResponse::encode`]); any
/// other frame as it is.
#[derive(Debug)]
struct Measured<'a> {
    frame: &'a SeriesResponse,
    /// The batch and each of its series' lengths, and the batch's body length.
    batch: Option<(&'a SeriesBatch, Vec<usize>, usize)>,
}

impl Measured<'_> {
    fn new(frame: &SeriesResponse) -> Measured<'_> {
        let Some(series_response::Result::Batch(batch)) = &frame.result else {
            return Measured { frame, batch: None };
        };
        let lens: Vec<usize> = batch
            .series
            .iter()
            .map(prost::Message::encoded_len)
            .collect();
        let body = lens
            .iter()
            .map(|&n| key_len(1) + encoded_len_varint(n as u64) + n)
            .sum();
        Measured {
            frame,
            batch: Some((batch, lens, body)),
        }
    }
}

impl prost::Message for Measured<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let Some((batch, lens, body)) = &self.batch else {
            return self.frame.encode_raw(buf);
        };
        encode_key(4, WireType::LengthDelimited, buf);
        encode_varint(*body as u64, buf);
        for (s, &n) in batch.series.iter().zip(lens) {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(n as u64, buf);
            s.encode_raw(buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Encode-only: never decoded into.
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match &self.batch {
            Some((_, _, body)) => key_len(4) + encoded_len_varint(*body as u64) + body,
            None => self.frame.encoded_len(),
        }
    }

    fn clear(&mut self) {}
}
