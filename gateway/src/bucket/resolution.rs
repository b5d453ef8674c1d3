//! Downsampled blocks in the bucket store (issue 29): which resolution serves which part of a request,
//! and the aggregates a request asked for, cut out of Thanos' `0xff` chunks.
//!
//! - **Block choice** (Thanos' `bucketBlockSet.getFor`, read at thanos-io/thanos `000f8c9`): for each
//!   set of external labels, the blocks of the coarsest resolution not above the request's
//!   `max_resolution_window` are read, and the time before, between and after them is filled with
//!   the next finer resolution, recursively. A request with window 0 reads raw blocks only.
//! - **Chunks**: a raw chunk goes into `AggrChunk.raw`; an aggregate chunk is split and only the
//!   requested aggregates are sent (`populateChunk`). A request naming none gets count and sum, what
//!   Thanos' querier asks for by default; an aggregate the chunk lacks is an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::SourceChunk;
use meridian_storeapi::leaf::to_aggr_chunk;
use meridian_storeapi::proto::thanos as pb;

use super::RemoteBlock;
use crate::compact::downsample::{Aggr, RES_1H, RES_5M, decode_aggr};

/// The resolutions the store serves (ms): raw, 5 m and 1 h, as Thanos writes them.
pub const RESOLUTIONS: [i64; 3] = [0, RES_5M, RES_1H];

/// A block a request reads, with the matchers left for its series' own labels.
pub type Target = (Arc<RemoteBlock>, Vec<Matcher>);

/// The blocks that answer `[mint, maxt]` at resolution at most `max_res` (see the module docs).
pub fn pick(targets: Vec<Target>, mint: i64, maxt: i64, max_res: i64) -> Vec<Target> {
    let mut sets: BTreeMap<Labels, BTreeMap<i64, Vec<Target>>> = BTreeMap::new();
    for t in targets {
        let res = t.0.meta.resolution();
        if res > max_res {
            continue;
        }
        sets.entry(t.0.ext.labels().clone())
            .or_default()
            .entry(res)
            .or_default()
            .push(t);
    }
    let mut out = Vec::new();
    for (_, by_res) in sets {
        // Coarsest first; each level's blocks in time order.
        let mut levels: Vec<Vec<Target>> = by_res.into_values().rev().collect();
        for l in &mut levels {
            l.sort_by_key(|t| (t.0.meta.min_time, t.0.meta.max_time));
        }
        let mut picked: Vec<&Target> = Vec::new();
        fill(&levels, mint, maxt, &mut picked);
        // A finer block filling two gaps (around a coarser block covering only part of it) is
        // picked twice; it is read once. Downsampled blocks cover exactly their raw sources' range,
        // so a coarser block never covers part of a finer one in a compactor's bucket.
        let mut seen = std::collections::BTreeSet::new();
        out.extend(
            picked
                .into_iter()
                .filter(|t| seen.insert(t.0.ulid.clone()))
                .cloned(),
        );
    }
    out
}

/// Fills `[mint, maxt]` with the blocks of `levels[0]`, the gaps with the finer levels. Recursion
/// depth is the number of levels (at most [`RESOLUTIONS`]`.len()`).
fn fill<'a>(levels: &'a [Vec<Target>], mint: i64, maxt: i64, out: &mut Vec<&'a Target>) {
    let Some((blocks, finer)) = levels.split_first() else {
        return;
    };
    if mint > maxt {
        return;
    }
    let mut start = mint;
    for t in blocks {
        // `max_time` is exclusive in meta.json.
        if t.0.meta.max_time <= mint {
            continue;
        }
        if t.0.meta.min_time > maxt {
            break;
        }
        fill(finer, start, t.0.meta.min_time - 1, out);
        out.push(t);
        start = start.max(t.0.meta.max_time);
    }
    fill(finer, start, maxt, out);
}

/// The aggregates a request asks for (count and sum when it names none).
pub fn requested_aggregates(req: &pb::SeriesRequest) -> Result<Vec<Aggr>> {
    let mut out = Vec::new();
    for &a in &req.aggregates {
        let aggr = match pb::Aggr::try_from(a) {
            Ok(pb::Aggr::Raw) => continue,
            Ok(pb::Aggr::Count) => Aggr::Count,
            Ok(pb::Aggr::Sum) => Aggr::Sum,
            Ok(pb::Aggr::Min) => Aggr::Min,
            Ok(pb::Aggr::Max) => Aggr::Max,
            Ok(pb::Aggr::Counter) => Aggr::Counter,
            Err(_) => {
                return Err(Error::bad_data(format!(
                    "aggregates: unknown aggregate {a} (RAW=0, COUNT=1, SUM=2, MIN=3, MAX=4, COUNTER=5)"
                )));
            }
        };
        if !out.contains(&aggr) {
            out.push(aggr);
        }
    }
    if out.is_empty() {
        out = vec![Aggr::Count, Aggr::Sum];
    }
    Ok(out)
}

/// A chunk of block `b` in its wire form: raw chunks as they are, aggregate chunks cut to `aggrs`.
pub fn wire_chunk(b: &RemoteBlock, c: SourceChunk, aggrs: &[Aggr]) -> Result<pb::AggrChunk> {
    if b.meta.resolution() == 0 || c.data.is_empty() {
        return Ok(to_aggr_chunk(c));
    }
    let parts = decode_aggr(&c.data).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("block {}: chunk at {}: {e}", b.ulid, c.min_time),
        )
    })?;
    let mut out = pb::AggrChunk {
        min_time: c.min_time,
        max_time: c.max_time,
        ..Default::default()
    };
    for &a in aggrs {
        let part = parts[a as usize].ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "block {}: chunk at {}: aggregate {a:?} does not exist in the downsampled chunk",
                    b.ulid, c.min_time
                ),
            )
        })?;
        let data: Bytes = c.data.slice_ref(part);
        let chunk = Some(pb::Chunk {
            r#type: pb::chunk::Encoding::Xor as i32,
            hash: xxhash_rust::xxh64::xxh64(&data, 0),
            data,
        });
        match a {
            Aggr::Count => out.count = chunk,
            Aggr::Sum => out.sum = chunk,
            Aggr::Min => out.min = chunk,
            Aggr::Max => out.max = chunk,
            Aggr::Counter => out.counter = chunk,
        }
    }
    Ok(out)
}

/// The samples an aggregate chunk's payload stands for in a request's sample limit: its windows
/// (each aggregate has one sample per window, the counter two more).
pub fn aggregate_windows(data: &[u8]) -> u64 {
    decode_aggr(data)
        .ok()
        .and_then(|parts| {
            let p =
                parts[Aggr::Count as usize].or_else(|| parts.iter().flatten().next().copied())?;
            Some(u64::from(u16::from_be_bytes([*p.first()?, *p.get(1)?])))
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block(ulid: &str, cluster: &str, res: i64, min: i64, max: i64) -> Target {
        let meta: meridian_tsdb::block::BlockMeta = serde_json::from_value(serde_json::json!({
            "ulid": ulid, "minTime": min, "maxTime": max, "version": 1,
            "thanos": {"labels": {"cluster": cluster}, "downsample": {"resolution": res}},
        }))
        .unwrap();
        (Arc::new(RemoteBlock::from_meta(meta).unwrap()), vec![])
    }

    fn names(t: &[Target]) -> Vec<&str> {
        let mut v: Vec<&str> = t.iter().map(|t| t.0.ulid.as_ref()).collect();
        v.sort_unstable();
        v
    }

    /// Thanos' getFor: the coarsest resolution allowed, its gaps filled with finer ones, per set of
    /// external labels.
    #[test]
    fn coarsest_blocks_with_gaps_filled_finer() {
        let all = vec![
            block("raw-0", "a", 0, 0, 100),
            block("raw-1", "a", 0, 100, 200),
            block("raw-2", "a", 0, 200, 300),
            block("5m-0", "a", RES_5M, 0, 200),
            block("1h-0", "a", RES_1H, 50, 150),
            block("raw-b", "b", 0, 0, 300),
        ];
        assert_eq!(
            names(&pick(all.clone(), 0, 299, 0)),
            ["raw-0", "raw-1", "raw-2", "raw-b"]
        );
        assert_eq!(
            names(&pick(all.clone(), 0, 299, RES_5M)),
            ["5m-0", "raw-2", "raw-b"]
        );
        // 1 h covers 50..150; 5 m fills before and after it (up to 200); raw the rest.
        assert_eq!(
            names(&pick(all.clone(), 0, 299, RES_1H)),
            ["1h-0", "5m-0", "raw-2", "raw-b"]
        );
        assert_eq!(
            names(&pick(all.clone(), 210, 299, RES_1H)),
            ["raw-2", "raw-b"]
        );
        assert!(pick(all, 400, 500, RES_1H).is_empty());
    }

    #[test]
    fn unknown_resolutions_and_aggregates_are_refused() {
        let meta: meridian_tsdb::block::BlockMeta = serde_json::from_value(serde_json::json!({
            "ulid": "x", "minTime": 0, "maxTime": 1, "version": 1,
            "thanos": {"downsample": {"resolution": 60000}},
        }))
        .unwrap();
        assert!(RemoteBlock::from_meta(meta).unwrap_err().contains("60000"));
        let req = pb::SeriesRequest {
            aggregates: vec![9],
            ..Default::default()
        };
        let e = requested_aggregates(&req).unwrap_err();
        assert!(e.message.contains("aggregates"), "{e}");
        let req = pb::SeriesRequest {
            aggregates: vec![0, 5, 5],
            ..Default::default()
        };
        assert_eq!(requested_aggregates(&req).unwrap(), vec![Aggr::Counter]);
    }
}
