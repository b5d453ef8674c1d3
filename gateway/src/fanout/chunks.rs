//! Samples in and out of XOR chunks for merged groups: decode, re-encode, and joining copies of one
//! series.

use super::*;
use crate::queryable::HPoint;
use meridian_core::histogram::FloatHistogram;
use std::sync::Arc;

/// Decodes one copy's chunks into samples, sorted by time, a timestamp once (its chunks may overlap, like
/// an edge's head and its newest block).
pub(super) fn decode<C: std::borrow::Borrow<pb::AggrChunk>>(chunks: &[C]) -> Result<Vec<Sample>> {
    decode_range(chunks, i64::MIN, i64::MAX)
}

/// [`decode`] keeping only the samples in `[mint, maxt]`: chunks outside are not decoded, and a chunk's
/// decoding stops at its first sample after `maxt` (an instant query needs a few samples of each
/// 120-sample chunk; storing only those is most of what makes its fetch cheap).
pub(super) fn decode_range<C: std::borrow::Borrow<pb::AggrChunk>>(
    chunks: &[C],
    mint: i64,
    maxt: i64,
) -> Result<Vec<Sample>> {
    let wanted = |c: &&pb::AggrChunk| c.max_time >= mint && c.min_time <= maxt;
    // Room for the samples expected inside the range (chunk sample counts, pro rata).
    let expected: usize = chunks
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(wanted)
        .filter_map(|c| {
            let raw = c.raw.as_ref()?;
            let n = f64::from(u16::from_be_bytes([*raw.data.first()?, *raw.data.get(1)?]));
            let span = (c.max_time - c.min_time) as f64 + 1.0;
            let inside = (c.max_time.min(maxt) - c.min_time.max(mint)) as f64 + 1.0;
            Some((n * (inside / span).clamp(0.0, 1.0)).ceil() as usize + 1)
        })
        .sum();
    let mut out: Vec<Sample> = Vec::with_capacity(expected);
    let mut sorted = true;
    for c in chunks
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(wanted)
    {
        let Some(raw) = &c.raw else {
            if c.count.is_some() || c.sum.is_some() || c.counter.is_some() {
                return Err(Error::internal(
                    "a store sent downsampled aggregates to a raw read (max_resolution_window 0)",
                ));
            }
            continue;
        };
        if raw.r#type != pb::chunk::Encoding::Xor as i32 {
            // Native histograms: [`decode_histograms`].
            continue;
        }
        let mut it = XorIterator::new(&raw.data)
            .map_err(|e| Error::internal(format!("a store sent a corrupt chunk: {e}")))?;
        let before = out.last().map(|s| s.t);
        let first = out.len();
        for s in it.by_ref() {
            if s.t > maxt {
                break;
            }
            if s.t >= mint {
                out.push(Sample::new(s.t, s.v));
            }
        }
        if let Some(e) = it.err() {
            return Err(Error::internal(format!(
                "a store sent a corrupt chunk: {e}"
            )));
        }
        if let (Some(b), Some(f)) = (before, out.get(first)) {
            sorted &= f.t > b;
        }
    }
    if !sorted {
        out.sort_by_key(|s| s.t);
        out.dedup_by_key(|s| s.t);
    }
    Ok(out)
}

/// The native-histogram samples in `[mint, maxt]` of one copy's chunks, sorted by time, a timestamp
/// once; a histogram stale marker becomes a float stale marker (the second list), as PromQL reads it.
/// Integer histograms are made float. Hints are the chunks' (a chunk's first sample `CounterReset`
/// under that header, later ones `NotCounterReset`, gauges `Gauge`).
pub(crate) fn decode_histograms<C: std::borrow::Borrow<pb::AggrChunk>>(
    chunks: &[C],
    mint: i64,
    maxt: i64,
) -> Result<(Vec<HPoint>, Vec<Sample>)> {
    use meridian_core::chunkenc::{read_float_histograms, read_histograms};
    let corrupt = |e| Error::internal(format!("a store sent a corrupt histogram chunk: {e}"));
    let (mut hists, mut stale) = (Vec::new(), Vec::new());
    for c in chunks.iter().map(std::borrow::Borrow::borrow) {
        if c.max_time < mint || c.min_time > maxt {
            continue;
        }
        let Some(raw) = &c.raw else { continue };
        let decoded: Vec<(i64, FloatHistogram)> =
            if raw.r#type == pb::chunk::Encoding::Histogram as i32 {
                let (_, v) = read_histograms(&raw.data).map_err(corrupt)?;
                v.into_iter().map(|(t, h)| (t, h.to_float())).collect()
            } else if raw.r#type == pb::chunk::Encoding::FloatHistogram as i32 {
                read_float_histograms(&raw.data).map_err(corrupt)?.1
            } else {
                continue;
            };
        for (t, h) in decoded {
            if t < mint || t > maxt {
                continue;
            }
            if meridian_core::sample::is_stale_nan(h.sum) {
                stale.push(Sample::new(t, h.sum));
            } else {
                hists.push(HPoint { t, h: Arc::new(h) });
            }
        }
    }
    hists.sort_by_key(|p| p.t);
    hists.dedup_by_key(|p| p.t);
    stale.sort_by_key(|s| s.t);
    stale.dedup_by_key(|s| s.t);
    Ok((hists, stale))
}

/// Encodes samples as XOR chunks of up to 120 samples, keeping those that overlap `[mint, maxt]`.
pub(super) fn encode(samples: &[Sample], mint: i64, maxt: i64) -> Result<Vec<pb::AggrChunk>> {
    let mut out = Vec::new();
    for part in samples.chunks(usize::from(SAMPLES_PER_CHUNK)) {
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            continue;
        };
        if first.t > maxt || last.t < mint {
            continue;
        }
        let mut c = XorChunk::new();
        for s in part {
            c.append(s.t, s.v)
                .map_err(|e| Error::internal(format!("re-encoding merged samples: {e}")))?;
        }
        let data = Bytes::from(c.into_bytes());
        out.push(pb::AggrChunk {
            min_time: first.t,
            max_time: last.t,
            raw: Some(pb::Chunk {
                r#type: pb::chunk::Encoding::Xor as i32,
                hash: xxhash_rust::xxh64::xxh64(&data, 0),
                data,
            }),
            ..Default::default()
        });
    }
    Ok(out)
}

/// Whether two chunks hold the same data (their hashes aside, which some stores leave out).
fn same_chunk(a: &pb::AggrChunk, b: &pb::AggrChunk) -> bool {
    fn parts(c: &pb::AggrChunk) -> [Option<(i32, &[u8])>; 6] {
        [&c.raw, &c.count, &c.sum, &c.min, &c.max, &c.counter]
            .map(|p| p.as_ref().map(|x| (x.r#type, &x.data[..])))
    }
    a.min_time == b.min_time && a.max_time == b.max_time && parts(a) == parts(b)
}

/// The chunks of a group's members in time order, identical chunks once, when no two overlap in time
/// (one replica's data split by time, as over edge head and bucket blocks): then they are simply one
/// series. `None` when some overlap.
pub(super) fn disjoint_chunks(members: &[pb::Series]) -> Option<Vec<&pb::AggrChunk>> {
    let mut all: Vec<&pb::AggrChunk> = members.iter().flat_map(|s| &s.chunks).collect();
    all.sort_by_key(|c| (c.min_time, c.max_time));
    all.dedup_by(|a, b| same_chunk(a, b));
    all.windows(2)
        .all(|w| w[1].min_time > w[0].max_time)
        .then_some(all)
}

/// The samples of a group: its members' chunks in order when they do not overlap, otherwise each
/// member decoded and the copies merged ([`merge_replicas`]).
pub(super) fn group_samples(members: &[pb::Series], kind: SeriesKind) -> Result<Vec<Sample>> {
    if let [one] = members {
        return decode(&one.chunks);
    }
    if let Some(chunks) = disjoint_chunks(members) {
        return decode(&chunks);
    }
    let copies = members
        .iter()
        .map(|m| decode(&m.chunks))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[Sample]> = copies.iter().map(Vec::as_slice).collect();
    Ok(merge_replicas(&refs, kind))
}

/// The chunks of one merged series for the StoreAPI: identical chunks once; chunks of several copies that
/// overlap in time are decoded, merged and re-encoded.
pub(super) fn merge_chunks(
    members: Vec<pb::Series>,
    kind: SeriesKind,
    mint: i64,
    maxt: i64,
) -> Result<Vec<pb::AggrChunk>> {
    if members.len() == 1 {
        return Ok(members.into_iter().flat_map(|s| s.chunks).collect());
    }
    if let Some(chunks) = disjoint_chunks(&members) {
        return Ok(chunks.into_iter().cloned().collect());
    }
    if members
        .iter()
        .flat_map(|m| &m.chunks)
        .any(|c| c.raw.is_none())
    {
        // Downsampled aggregates are passed on as they came (identical ones once), time-ordered: the
        // querier reading them merges overlapping copies window by window.
        let mut all: Vec<pb::AggrChunk> = members.into_iter().flat_map(|s| s.chunks).collect();
        all.sort_by_key(|c| (c.min_time, c.max_time));
        all.dedup_by(|a, b| same_chunk(a, b));
        return Ok(all);
    }
    encode(&group_samples(&members, kind)?, mint, maxt)
}
