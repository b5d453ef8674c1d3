//! Downsampling to 5 m and 1 h in Thanos' format (`pkg/compact/downsample`, read at thanos-io/thanos
//! `000f8c9`; the algorithm is unchanged since v0.25), so Thanos reads our downsampled blocks and we
//! read theirs.
//!
//! - **Chunk**: encoding byte `0xff` in an ordinary chunk segment; the payload is, for count, sum,
//!   min, max and counter in that order, `uvarint(len)` (0: absent) then the inner encoding byte and
//!   `len` bytes of an XOR chunk.
//! - **Windows**: each aggregate is stamped at its window's last millisecond (`t - t % r + r - 1`),
//!   clipped to the batch's last sample so chunks never overlap.
//! - **Counter**: a running total with resets folded in. Each counter chunk also starts with the first
//!   raw value and ends with the last raw value repeated at the last timestamp, so a reader can
//!   detect a reset between chunks ([`CounterResets`]).
//! - **Chunks per series**: as many as keep ~140 samples per chunk assuming 1-minute raw data
//!   (`targetChunkCount`); 5 m → 1 h goes along whole chunks, so counters keep their true edges.
//!
//! One deliberate difference: Thanos' aggregate-to-aggregate path records a chunk's max time only
//! from its second window on (an `else if`), so a one-window chunk gets `MinInt64` as its index max
//! time; ours records the real one (the chunk bytes are the same).

use meridian_core::chunkenc::{Encoding, XorChunk, XorIterator};
use meridian_core::sample::{Sample, is_stale_nan};

/// 5 minutes, ms (`ResLevel1`).
pub const RES_5M: i64 = 300_000;
/// 1 hour, ms (`ResLevel2`).
pub const RES_1H: i64 = 3_600_000;
/// A raw block is downsampled to 5 m once it spans this much (`ResLevel1DownsampleRange`, 40 h).
pub const RANGE_FOR_5M: i64 = 40 * 3_600_000;
/// A 5 m block is downsampled to 1 h once it spans this much (`ResLevel2DownsampleRange`, 10 d).
pub const RANGE_FOR_1H: i64 = 10 * 24 * 3_600_000;

/// The aggregates, in their order inside an aggregate chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggr {
    Count = 0,
    Sum = 1,
    Min = 2,
    Max = 3,
    Counter = 4,
}

/// The inner chunks of an aggregate chunk, by [`Aggr`]; `None` where absent.
pub type AggrParts<'a> = [Option<&'a [u8]>; 5];

/// An aggregate chunk is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aggregate chunk: {0}")]
pub struct AggrError(pub String);

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

/// Splits an aggregate chunk's payload into its XOR parts.
pub fn decode_aggr(data: &[u8]) -> Result<AggrParts<'_>, AggrError> {
    let mut out: AggrParts<'_> = [None; 5];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        let (len, n) =
            uvarint(rest).ok_or_else(|| AggrError(format!("aggregate {i}: truncated length")))?;
        rest = &rest[n..];
        if len == 0 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| AggrError(format!("aggregate {i}: length")))?;
        let (&enc, body) = rest
            .split_first()
            .ok_or_else(|| AggrError(format!("aggregate {i}: no encoding byte")))?;
        if enc != Encoding::Xor as u8 {
            return Err(AggrError(format!(
                "aggregate {i}: inner encoding {enc} (only XOR floats are read)"
            )));
        }
        let part = body.get(..len).ok_or_else(|| {
            AggrError(format!("aggregate {i}: {len} bytes announced, fewer left"))
        })?;
        *slot = Some(part);
        rest = &body[len..];
    }
    Ok(out)
}

/// Encodes the parts (XOR chunk bytes) into an aggregate chunk's payload.
pub fn encode_aggr(parts: &[Option<Vec<u8>>; 5]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            None => out.push(0),
            Some(b) => {
                let mut len = b.len() as u64;
                while len >= 0x80 {
                    out.push(len as u8 | 0x80);
                    len >>= 7;
                }
                out.push(len as u8);
                out.push(Encoding::Xor as u8);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// The samples of an XOR part.
pub fn part_samples(part: &[u8]) -> Result<Vec<Sample>, AggrError> {
    let mut it = XorIterator::new(part).map_err(|e| AggrError(e.to_string()))?;
    let mut out = Vec::with_capacity(usize::from(it.total()));
    while let Some((t, v)) = it.next_sample() {
        out.push(Sample::new(t, v));
    }
    match it.err() {
        Some(e) => Err(AggrError(e.to_string())),
        None => Ok(out),
    }
}

/// The end (last millisecond) of the window of resolution `r` that `t` falls in (Go's `%`, which
/// Rust's shares).
pub fn current_window(t: i64, r: i64) -> i64 {
    t - (t % r) + r - 1
}

fn range_fullness(mint: i64, maxt: i64, step: i64, count: usize) -> f64 {
    let f = count as f64 / ((maxt - mint) as f64 / step as f64);
    f.min(1.0)
}

fn target_chunk_count(mint: i64, maxt: i64, in_res: i64, out_res: i64, count: usize) -> usize {
    let max_samples = ((maxt - mint) / out_res) as f64;
    let expected = (max_samples * range_fullness(mint, maxt, in_res, count)) as usize + 1;
    // The fewest x with expected / x <= 140 in integer division (Go loops up to it): the first x
    // with 141 * x > expected.
    expected / 141 + 1
}

/// The statistics of one window, and the running counter.
#[derive(Debug, Clone, Copy)]
struct Aggregator {
    total: usize,
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
    counter: f64,
    last: f64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator {
            total: 0,
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            counter: 0.0,
            last: 0.0,
        }
    }
}

impl Aggregator {
    fn reset(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::MAX;
        self.max = -f64::MAX;
    }

    fn add(&mut self, v: f64) {
        if self.total > 0 {
            if v < self.last {
                // A counter reset: the new value is the increase.
                self.counter += v;
            } else {
                self.counter += v - self.last;
            }
        } else {
            self.counter = v;
        }
        self.last = v;
        self.sum += v;
        self.count += 1;
        self.total += 1;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }
}

/// Aggregates `data` by windows of `resolution`, calling `add` at each window's end; returns the last
/// window's (clipped) end.
fn downsample_batch(
    data: &[Sample],
    resolution: i64,
    mut add: impl FnMut(i64, &Aggregator),
) -> i64 {
    let mut aggr = Aggregator::default();
    let mut next_t: i64 = -1;
    let last_t = data.last().map_or(0, |s| s.t);
    for s in data {
        if is_stale_nan(s.v) {
            continue;
        }
        if s.t > next_t {
            if next_t != -1 {
                add(next_t, &aggr);
            }
            aggr.reset();
            next_t = current_window(s.t, resolution).min(last_t);
        }
        aggr.add(s.v);
    }
    add(next_t, &aggr);
    next_t
}

/// One output chunk: its time range and the aggregate chunk's payload.
#[derive(Debug, Clone, PartialEq)]
pub struct AggrChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub data: Vec<u8>,
}

/// XOR chunks for the five aggregates.
struct Builder {
    parts: [Option<XorChunk>; 5],
    min_time: i64,
    max_time: i64,
}

impl Builder {
    fn new(all: bool) -> Builder {
        Builder {
            parts: std::array::from_fn(|_| all.then(XorChunk::new)),
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }

    fn append(&mut self, a: Aggr, t: i64, v: f64) -> Result<(), AggrError> {
        self.parts[a as usize]
            .get_or_insert_with(XorChunk::new)
            .append(t, v)
            .map_err(|e| AggrError(e.to_string()))
    }

    fn stamp(&mut self, t: i64) {
        self.min_time = self.min_time.min(t);
        self.max_time = self.max_time.max(t);
    }

    fn finish(self) -> AggrChunk {
        let parts: [Option<Vec<u8>>; 5] = self.parts.map(|p| p.map(XorChunk::into_bytes));
        AggrChunk {
            min_time: self.min_time,
            max_time: self.max_time,
            data: encode_aggr(&parts),
        }
    }
}

/// Downsamples one raw series (in time order) to `resolution` (`DownsampleRaw`).
pub fn downsample_raw(data: &[Sample], resolution: i64) -> Result<Vec<AggrChunk>, AggrError> {
    let (Some(first), Some(last)) = (data.first(), data.last()) else {
        return Ok(Vec::new());
    };
    let chunks = target_chunk_count(first.t, last.t, 60_000, resolution, data.len());
    let batch_size = data.len() / chunks + 1;
    let mut out = Vec::with_capacity(chunks.min(data.len()));
    let mut data = data;
    while !data.is_empty() {
        let mut j = batch_size.min(data.len());
        let window = current_window(data[j - 1].t, resolution);
        // Whole windows: the batch takes the rest of the window it ends in.
        while j < data.len() && data[j].t <= window {
            j += 1;
        }
        let batch: Vec<Sample> = data[..j]
            .iter()
            .copied()
            .filter(|s| !s.v.is_nan())
            .collect();
        data = &data[j..];
        let (Some(b0), Some(bl)) = (batch.first().copied(), batch.last().copied()) else {
            continue;
        };
        let mut b = Builder::new(true);
        // The first raw value opens the counter chunk (see `CounterResets`).
        b.append(Aggr::Counter, b0.t, b0.v)?;
        let mut failed = None;
        let last_t = downsample_batch(&batch, resolution, |t, a| {
            b.stamp(t);
            for (kind, v) in [
                (Aggr::Sum, a.sum),
                (Aggr::Min, a.min),
                (Aggr::Max, a.max),
                (Aggr::Count, a.count as f64),
                (Aggr::Counter, a.counter),
            ] {
                if let Err(e) = b.append(kind, t, v) {
                    failed.get_or_insert(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        // The last raw value, repeated at the last timestamp.
        b.append(Aggr::Counter, last_t, bl.v)?;
        out.push(b.finish());
    }
    Ok(out)
}

/// Rebuilds a counter's true running total from counter chunks (Thanos'
/// `ApplyCounterResetsSeriesIterator`): within a chunk a repeated timestamp carries the chunk's last
/// raw value, against which the next chunk's first value is compared for a reset; stale markers and
/// samples going back in time are dropped. Returns the samples and the last raw value.
pub fn apply_counter_resets(chunks: &[Vec<Sample>]) -> (Vec<Sample>, f64) {
    let mut out: Vec<Sample> = Vec::new();
    let mut last_t = i64::MIN;
    let mut last_v = 0.0;
    let mut total = 0.0;
    for chunk in chunks {
        for s in chunk {
            if s.v.is_nan() {
                continue;
            }
            if out.is_empty() {
                (last_t, last_v, total) = (s.t, s.v, s.v);
                out.push(Sample::new(s.t, total));
            } else if s.t > last_t {
                total += if s.v >= last_v { s.v - last_v } else { s.v };
                (last_t, last_v) = (s.t, s.v);
                out.push(Sample::new(s.t, total));
            } else if s.t == last_t {
                last_v = s.v;
            }
        }
    }
    (out, last_v)
}

/// Downsamples one series' aggregate chunks (each a decoded payload) of resolution `in_res` to
/// `out_res` (`downsampleAggr`), whole chunks at a time.
pub fn downsample_aggr(
    chunks: &[AggrParts<'_>],
    mint: i64,
    maxt: i64,
    in_res: i64,
    out_res: i64,
) -> Result<Vec<AggrChunk>, AggrError> {
    let mut samples = 0;
    for c in chunks {
        if let Some(count) = c[Aggr::Count as usize] {
            samples += usize::from(
                XorIterator::new(count)
                    .map_err(|e| AggrError(e.to_string()))?
                    .total(),
            );
        }
    }
    let n = target_chunk_count(mint, maxt, in_res, out_res, samples);
    let batch = (chunks.len() / n).max(1);
    chunks
        .chunks(batch)
        .map(|part| downsample_aggr_batch(part, out_res))
        .collect()
}

fn downsample_aggr_batch(
    chunks: &[AggrParts<'_>],
    resolution: i64,
) -> Result<AggrChunk, AggrError> {
    let mut b = Builder::new(false);
    type Pick = fn(&Aggregator) -> f64;
    let simple: [(Aggr, Pick); 4] = [
        // The count of counts is their sum.
        (Aggr::Count, |a| a.sum),
        (Aggr::Sum, |a| a.sum),
        (Aggr::Min, |a| a.min),
        (Aggr::Max, |a| a.max),
    ];
    for (kind, pick) in simple {
        let mut buf = Vec::new();
        for c in chunks {
            if let Some(p) = c[kind as usize] {
                expand(&part_samples(p)?, &mut buf);
            }
        }
        if buf.is_empty() {
            continue;
        }
        let mut failed = None;
        downsample_batch(&buf, resolution, |t, a| {
            b.stamp(t);
            if let Err(e) = b.append(kind, t, pick(a)) {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let counters: Vec<Vec<Sample>> = chunks
        .iter()
        .filter_map(|c| c[Aggr::Counter as usize])
        .map(part_samples)
        .collect::<Result<_, _>>()?;
    let (resets, last_raw) = apply_counter_resets(&counters);
    let mut buf = Vec::new();
    expand(&resets, &mut buf);
    if let Some(first) = buf.first().copied() {
        b.append(Aggr::Counter, first.t, first.v)?;
        let mut failed = None;
        let last_t = downsample_batch(&buf, resolution, |t, a| {
            b.stamp(t);
            if let Err(e) = b.append(Aggr::Counter, t, a.counter) {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        b.append(Aggr::Counter, last_t, last_raw)?;
    }
    Ok(b.finish())
}

/// Appends samples that do not go back in time, without stale markers (`expandChunkIterator`).
fn expand(samples: &[Sample], buf: &mut Vec<Sample>) {
    let mut last_t = 0;
    for s in samples {
        if is_stale_nan(s.v) {
            continue;
        }
        if s.t >= last_t {
            buf.push(*s);
            last_t = s.t;
        }
    }
}

/// Writes the downsampled copy of block `src` (raw or 5 m) at `resolution` as block `ulid` under
/// `parent`: the same time range, compaction lineage and external labels, `thanos.downsample` set,
/// one aggregate chunk sequence per series (`Downsample`). Returns its meta.
pub fn downsample_block(
    src: &meridian_tsdb::block::Block,
    parent: &std::path::Path,
    ulid: &str,
    resolution: i64,
    labels: &meridian_core::labels::Labels,
) -> Result<meridian_tsdb::block::BlockMeta, meridian_tsdb::block::BlockError> {
    use meridian_tsdb::block::BlockError;
    use meridian_tsdb::blockwriter::{BlockWriter, WriterChunk};
    let meta = src.meta();
    let from = meta.resolution();
    let invalid = |e: String| BlockError::Invalid {
        path: src.dir().to_owned(),
        reason: e,
    };
    if from >= resolution {
        return Err(invalid(format!(
            "resolution {from} ms is not finer than the target {resolution} ms"
        )));
    }
    let mut w = BlockWriter::create(parent, ulid, meta.min_time, meta.max_time)?;
    let ids = src
        .index()
        .all_postings()
        .map_err(|e| invalid(e.to_string()))?;
    for id in ids {
        let (series, metas) = src.series_meta(id)?;
        if metas.windows(2).any(|m| m[0].max_time >= m[1].min_time) {
            return Err(invalid(format!("overlapping chunks in series {series}")));
        }
        let mut chunks: Vec<(meridian_core::chunkenc::Encoding, &[u8])> = Vec::new();
        for m in &metas {
            chunks.push(src.raw_chunk(m.chunk_ref)?);
        }
        let out = if from == 0 {
            let mut all = Vec::new();
            for (e, data) in &chunks {
                match e {
                    Encoding::Xor => {}
                    // Native histograms are not downsampled (as in Thanos' raw-to-5m step): only a
                    // series' float samples are.
                    Encoding::Histogram | Encoding::FloatHistogram => continue,
                    _ => {
                        return Err(invalid(format!(
                            "series {series}: a {e:?} chunk in a raw block"
                        )));
                    }
                }
                expand(
                    &part_samples(data).map_err(|e| invalid(e.to_string()))?,
                    &mut all,
                );
            }
            downsample_raw(&all, resolution)
        } else {
            let mut parts = Vec::with_capacity(chunks.len());
            for (e, data) in &chunks {
                if *e != Encoding::Aggr {
                    return Err(invalid(format!(
                        "series {series}: a {e:?} chunk in a downsampled block"
                    )));
                }
                parts.push(decode_aggr(data).map_err(|e| invalid(e.to_string()))?);
            }
            let (Some(first), Some(last)) = (metas.first(), metas.last()) else {
                continue;
            };
            downsample_aggr(&parts, first.min_time, last.max_time, from, resolution)
        }
        .map_err(|e| invalid(format!("series {series}: {e}")))?;
        let chunks: Vec<WriterChunk<'_>> = out
            .iter()
            .map(|c| WriterChunk {
                min_time: c.min_time,
                max_time: c.max_time,
                encoding: Encoding::Aggr as u8,
                data: &c.data,
            })
            .collect();
        w.add_chunks(series, &chunks)?;
    }
    let mut extra = meta.extra.clone();
    extra.insert(
        "thanos".to_owned(),
        serde_json::json!({
            "labels": labels.iter().map(|l| (l.name, l.value)).collect::<std::collections::BTreeMap<_, _>>(),
            "downsample": {"resolution": resolution},
            "source": "compactor",
        }),
    );
    w.finish(meta.compaction.clone(), extra)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meridian_core::labels::Labels;
    use meridian_core::sample::stale_nan;

    fn parts(c: &AggrChunk) -> [Vec<Sample>; 5] {
        let p = decode_aggr(&c.data).unwrap();
        p.map(|x| x.map(|b| part_samples(b).unwrap()).unwrap_or_default())
    }

    #[test]
    fn aggregate_chunks_round_trip_and_bad_ones_are_refused() {
        let mut x = XorChunk::new();
        x.append(1, 2.0).unwrap();
        let bytes = x.into_bytes();
        let enc = encode_aggr(&[Some(bytes.clone()), None, Some(bytes.clone()), None, None]);
        let dec = decode_aggr(&enc).unwrap();
        assert_eq!(dec[0], Some(&bytes[..]));
        assert_eq!(dec[1], None);
        assert_eq!(dec[2], Some(&bytes[..]));
        // Layout: length, inner encoding 1, bytes; a zero length for an absent aggregate.
        assert_eq!(enc[0] as usize, bytes.len());
        assert_eq!(enc[1], 1);
        assert_eq!(enc[2 + bytes.len()], 0);
        for cut in 0..enc.len() - 1 {
            assert!(decode_aggr(&enc[..cut]).is_err(), "truncated at {cut}");
        }
        let mut other = enc.clone();
        other[1] = 3;
        assert!(
            decode_aggr(&other).is_err(),
            "a histogram inner chunk is refused"
        );
    }

    /// 20 minutes of a counter every 15 s from t = 0 with a reset at 10 m and a stale marker: 5 m
    /// windows stamped at their last millisecond, each aggregate what the raw window holds.
    #[test]
    fn raw_to_5m_by_hand() {
        let mut raw: Vec<Sample> = (0..80)
            .map(|k| {
                let t = k * 15_000;
                let v = if k < 40 { k as f64 } else { (k - 40) as f64 };
                Sample::new(t, v)
            })
            .collect();
        raw[50].v = stale_nan();
        let out = downsample_raw(&raw, RES_5M).unwrap();
        assert_eq!(out.len(), 1);
        let [count, sum, min, max, counter] = parts(&out[0]);
        let ends = [299_999, 599_999, 899_999, 1_185_000];
        assert_eq!(
            count.iter().map(|s| s.t).collect::<Vec<_>>(),
            ends,
            "the last window ends at the last sample"
        );
        assert_eq!(
            count.iter().map(|s| s.v).collect::<Vec<_>>(),
            [20.0, 20.0, 19.0, 20.0]
        );
        assert_eq!(sum[0].v, (0..20).sum::<i64>() as f64);
        assert_eq!(
            min.iter().map(|s| s.v).collect::<Vec<_>>(),
            [0.0, 20.0, 0.0, 20.0]
        );
        assert_eq!(
            max.iter().map(|s| s.v).collect::<Vec<_>>(),
            [19.0, 39.0, 19.0, 39.0]
        );
        // Counter: first raw value, one total per window (the reset at 10 m adds its new value, 0),
        // the last raw value
        // at the last timestamp.
        let cv: Vec<(i64, f64)> = counter.iter().map(|s| (s.t, s.v)).collect();
        assert_eq!(
            cv,
            [
                (0, 0.0),
                (299_999, 19.0),
                (599_999, 39.0),
                (899_999, 58.0),
                (1_185_000, 78.0),
                (1_185_000, 39.0)
            ]
        );
        assert_eq!((out[0].min_time, out[0].max_time), (299_999, 1_185_000));
    }

    #[test]
    fn counter_resets_between_chunks_are_seen() {
        // Chunk 1 ends at raw value 100 (repeated timestamp); chunk 2 starts at 5: a reset.
        let c1 = vec![
            Sample::new(0, 90.0),
            Sample::new(10, 100.0),
            Sample::new(10, 100.0),
        ];
        let c2 = vec![
            Sample::new(20, 5.0),
            Sample::new(30, 8.0),
            Sample::new(30, 8.0),
        ];
        let (s, last) = apply_counter_resets(&[c1, c2]);
        let v: Vec<(i64, f64)> = s.iter().map(|s| (s.t, s.v)).collect();
        assert_eq!(v, [(0, 90.0), (10, 100.0), (20, 105.0), (30, 108.0)]);
        assert_eq!(last, 8.0);
    }

    /// Two days of 15 s raw data to 5 m, then to 1 h: counts add up to the raw sample count at each
    /// level, sums to the raw sum, min and max hold, and the counter ends at the raw total increase.
    /// A raw block holding native histograms downsamples: its float series get aggregates, its
    /// histogram series are left out (not an error).
    #[test]
    fn histogram_series_are_left_out_of_downsampling() {
        use meridian_core::histogram::{Histogram, HistogramValue, Span};
        let dir = tempfile::tempdir().unwrap();
        let db = meridian_tsdb::db::Db::open(
            dir.path(),
            meridian_tsdb::db::DbOptions {
                max_ahead: None,
                ..Default::default()
            },
        )
        .unwrap();
        let mut app = db.appender();
        let f = app.series_ref(&Labels::from_pairs([("__name__", "f")]));
        let h = app.series_ref(&Labels::from_pairs([("__name__", "h")]));
        for k in 0..100i64 {
            app.append(f, k * 15_000, k as f64).unwrap();
            let hist = Histogram {
                count: k as u64,
                positive_spans: vec![Span {
                    offset: 0,
                    length: 1,
                }],
                positive_buckets: vec![k],
                ..Histogram::default()
            };
            app.append_histogram(h, k * 15_000, HistogramValue::Int(hist))
                .unwrap();
        }
        app.commit().unwrap();
        let metas = db.flush_head().unwrap();
        let src = meridian_tsdb::block::Block::open(&dir.path().join(&metas[0].ulid)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let m = downsample_block(
            &src,
            out.path(),
            "01DOWNSAMPLED0000000000000",
            RES_5M,
            &Labels::empty(),
        )
        .unwrap();
        assert_eq!(m.stats.num_series, 1, "only the float series");
    }

    #[test]
    fn raw_to_5m_to_1h_keeps_the_totals() {
        let n = 2 * 24 * 240;
        let raw: Vec<Sample> = (0..n)
            .map(|k| Sample::new(k * 15_000, ((k % 1000) as f64) * 0.5))
            .collect();
        let increase: f64 = raw
            .windows(2)
            .map(|w| {
                if w[1].v >= w[0].v {
                    w[1].v - w[0].v
                } else {
                    w[1].v
                }
            })
            .sum();
        let five = downsample_raw(&raw, RES_5M).unwrap();
        assert!(five.len() > 1, "several chunks: {}", five.len());
        assert!(five.windows(2).all(|w| w[0].max_time < w[1].min_time));
        let totals = |chunks: &[AggrChunk]| {
            let mut count = 0.0;
            let mut sum = 0.0;
            let mut min = f64::MAX;
            let mut max = f64::MIN;
            let mut counters = Vec::new();
            for c in chunks {
                let [cn, sm, mn, mx, ctr] = parts(c);
                count += cn.iter().map(|s| s.v).sum::<f64>();
                sum += sm.iter().map(|s| s.v).sum::<f64>();
                min = mn.iter().map(|s| s.v).fold(min, f64::min);
                max = mx.iter().map(|s| s.v).fold(max, f64::max);
                counters.push(ctr);
            }
            let (c, _) = apply_counter_resets(&counters);
            (count, sum, min, max, c.last().unwrap().v - c[0].v)
        };
        let raw_sum: f64 = raw.iter().map(|s| s.v).sum();
        let (count, sum, min, max, inc) = totals(&five);
        assert_eq!((count, sum, min, max), (n as f64, raw_sum, 0.0, 499.5));
        assert!((inc - increase).abs() < 1e-6, "{inc} vs {increase}");
        let decoded: Vec<AggrParts<'_>> =
            five.iter().map(|c| decode_aggr(&c.data).unwrap()).collect();
        let hour = downsample_aggr(
            &decoded,
            five[0].min_time,
            five.last().unwrap().max_time,
            RES_5M,
            RES_1H,
        )
        .unwrap();
        let (count, sum, min, max, inc) = totals(&hour);
        assert_eq!((count, sum, min, max), (n as f64, raw_sum, 0.0, 499.5));
        assert!((inc - increase).abs() < 1e-6, "{inc} vs {increase}");
        let [c1, ..] = parts(&hour[0]);
        assert!(
            c1.iter()
                .all(|s| (s.t + 1) % RES_1H == 0 || s.t == hour[0].max_time)
        );
    }
}
