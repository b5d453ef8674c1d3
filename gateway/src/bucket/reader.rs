//! Reading one block in the bucket without downloading it: ranged GETs for the parts a query needs.
//!
//! - The **index-header** (table of contents, symbol table, postings offset table) is read on a block's
//!   first query with three ranged GETs (the TOC, then the start of the index up to the series, and the
//!   postings offset table) and kept in a byte-bounded cache; nothing is read at start-up.
//! - **Postings lists** a query's matchers need are fetched together; a list's end is the next list's
//!   start, known from the offset table.
//! - **Series entries** are fetched by estimate (`id × 16` plus [`SERIES_ESTIMATE`] bytes; an entry
//!   found longer is fetched again exactly) and **chunks** likewise (the next chunk of the same series
//!   bounds a chunk exactly; the last one is estimated).
//! - Ranges of one object closer than [`MAX_GAP`] are **coalesced** into one GET, as Thanos' store
//!   gateway partitions them: series and chunks of neighbouring series are neighbours in the files.
//! - Postings lists, series entries and chunks are cached (moka, byte-bounded) by block and position.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use meridian_core::chunkenc::Encoding;
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::{SourceChunk, SourceSeries};
use meridian_tsdb::chunks::{chunk_record_len, parse_chunk_record};
use meridian_tsdb::index::{
    ChunkMeta, HEADER_LEN, IndexHeader, TOC_LEN, Toc, check_header, parse_postings,
    series_entry_len,
};
use meridian_tsdb::objstore::{BlockObject, block_path};
use meridian_tsdb::postings::{self, Postings};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{BucketMetrics, RemoteBlock};
use crate::cache::shared::SharedCache;

mod budget;
mod tiers;

pub use budget::Budget;
use tiers::Local;

/// Ranges of one object closer than this are fetched with one GET.
pub const MAX_GAP: u64 = 128 << 10;
/// Bytes fetched for a series entry whose end is not known (most are far shorter).
pub const SERIES_ESTIMATE: u64 = 1024;
/// Bytes fetched for a chunk whose end is not known: a 120-sample XOR chunk rarely exceeds it.
pub const CHUNK_ESTIMATE: u64 = 2048;
/// GETs in flight per object read.
const FETCH_CONCURRENCY: usize = 8;

/// A block's index-header, as cached.
#[derive(Debug)]
pub struct Loaded {
    pub toc: Toc,
    pub header: IndexHeader,
    /// Postings list starts, sorted (a list ends where the next begins).
    starts: Vec<usize>,
    /// Size of each chunk segment file, by sequence (`chunks/000001` is 0).
    segments: Vec<u64>,
}

impl Loaded {
    fn weight(&self) -> u32 {
        u32::try_from(self.header.heap_size() + self.starts.len() * 8 + 256).unwrap_or(u32::MAX)
    }

    /// Where the postings section ends (the label offset table follows it).
    fn postings_end(&self) -> u64 {
        [self.toc.label_offset_table, self.toc.postings_offset_table]
            .into_iter()
            .find(|&o| o > self.toc.postings)
            .unwrap_or(u64::MAX)
    }

    /// Where the series section ends.
    fn series_end(&self) -> u64 {
        [self.toc.label_indices, self.toc.postings]
            .into_iter()
            .find(|&o| o > self.toc.series)
            .unwrap_or(u64::MAX)
    }
}

type PostingsKey = (Arc<str>, String, String);
type SeriesKey = (Arc<str>, u32);
type ChunkKey = (Arc<str>, u64);
type SeriesEntry = Arc<(Labels, Vec<ChunkMeta>)>;
/// A chunk and the reference of its series' next chunk (which bounds it).
type NextChunk = (ChunkMeta, Option<u64>);

/// The caches, byte-bounded.
#[derive(Debug)]
pub struct Caches {
    headers: moka::future::Cache<Arc<str>, Arc<Loaded>>,
    postings: Local<PostingsKey, Arc<Vec<u32>>>,
    series: Local<SeriesKey, SeriesEntry>,
    chunks: Local<ChunkKey, Bytes>,
    /// The shared index cache (postings and series; `--index-cache.config`).
    shared_index: Option<Arc<SharedCache>>,
    /// The shared chunk cache (`--store.caching-bucket.config`).
    shared_chunks: Option<Arc<SharedCache>>,
}

impl Caches {
    /// `index_bytes` is shared between index-headers, postings and series (a third each);
    /// `chunk_bytes` holds chunks. With a shared tier for the index or the chunks, this process keeps
    /// none of its own (index-headers stay local).
    pub fn new(
        index_bytes: u64,
        chunk_bytes: u64,
        shared_index: Option<Arc<SharedCache>>,
        shared_chunks: Option<Arc<SharedCache>>,
    ) -> Caches {
        let third = index_bytes / 3;
        let (index_shared, chunks_shared) = (shared_index.is_some(), shared_chunks.is_some());
        Caches {
            headers: moka::future::Cache::builder()
                .max_capacity(third)
                .weigher(|_, v: &Arc<Loaded>| v.weight())
                .build(),
            postings: Local::new(!index_shared, || {
                moka::sync::Cache::builder()
                    .max_capacity(third)
                    .support_invalidation_closures()
                    .weigher(|k: &PostingsKey, v: &Arc<Vec<u32>>| {
                        u32::try_from(v.len() * 4 + k.1.len() + k.2.len() + 96).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
            series: Local::new(!index_shared, || {
                moka::sync::Cache::builder()
                    .max_capacity(third)
                    .support_invalidation_closures()
                    .weigher(|_, v: &SeriesEntry| {
                        let labels: usize = v.0.iter().map(|l| l.name.len() + l.value.len()).sum();
                        u32::try_from(labels * 2 + v.1.len() * 24 + 128).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
            chunks: Local::new(!chunks_shared, || {
                moka::sync::Cache::builder()
                    .max_capacity(chunk_bytes)
                    .support_invalidation_closures()
                    .weigher(|_, v: &Bytes| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
                    .build()
            }),
            shared_index,
            shared_chunks,
        }
    }

    /// Bytes held, by cache (for the metrics).
    pub fn weighted_sizes(&self) -> [(&'static str, u64); 4] {
        [
            ("index-header", self.headers.weighted_size()),
            ("postings", self.postings.weighted_size()),
            ("series", self.series.weighted_size()),
            ("chunks", self.chunks.weighted_size()),
        ]
    }

    /// Drops what is cached for a block that left the bucket.
    pub fn forget(&self, ulid: &str) {
        let u: Arc<str> = Arc::from(ulid);
        let headers = self.headers.clone();
        let key = u.clone();
        // The future cache's invalidation is async; the entry is small and the block gone, so it
        // is left to eviction when no runtime is at hand.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { headers.invalidate(&key).await });
        }
        let failed = [
            self.postings.forget_block(&u),
            self.series.forget_block(&u),
            self.chunks.forget_block(&u),
        ];
        for e in failed.into_iter().flatten() {
            tracing::debug!(error = %e, "bucket cache invalidation");
        }
    }
}

/// Reads blocks of one bucket.
#[derive(Debug)]
pub struct Reader {
    pub store: Arc<dyn ObjectStore>,
    pub caches: Caches,
    pub metrics: Arc<BucketMetrics>,
}

fn bucket_err(path: &ObjectPath, e: &object_store::Error) -> Error {
    Error::new(ErrorKind::Unavailable, format!("bucket object {path}: {e}"))
}

fn corrupt(ulid: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("block {ulid} in the bucket: {e}"),
    )
}

/// An error of [`Reader::fetch_records`]: bucket errors pass, an unreadable length becomes `what`.
fn corrupt_or(ulid: &str, e: Error, what: &str) -> Error {
    if e.kind == ErrorKind::Internal && e.message.is_empty() {
        corrupt(ulid, what)
    } else {
        e
    }
}

/// Merges ranges closer than [`MAX_GAP`] (sorted by start) and tells, for each input range, which
/// merged range holds it.
fn coalesce(ranges: &[Range<u64>]) -> (Vec<Range<u64>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    let mut owner = vec![0; ranges.len()];
    for i in order {
        let r = &ranges[i];
        match merged.last_mut() {
            Some(m) if r.start <= m.end.saturating_add(MAX_GAP) => m.end = m.end.max(r.end),
            _ => merged.push(r.clone()),
        }
        owner[i] = merged.len() - 1;
    }
    (merged, owner)
}

impl Reader {
    /// Fetches byte ranges of one object, coalescing near ones; each answer may be shorter than asked
    /// where the object ends.
    async fn fetch(
        &self,
        kind: &'static str,
        path: &ObjectPath,
        ranges: &[Range<u64>],
        budget: Option<&Budget>,
    ) -> Result<Vec<Bytes>> {
        let (merged, owner) = coalesce(ranges);
        let bodies: Vec<Bytes> =
            futures::stream::iter(merged.iter().cloned().map(|r| async move {
                self.metrics.get(kind);
                let b = self
                    .store
                    .get_range(path, r)
                    .await
                    .map_err(|e| bucket_err(path, &e))?;
                self.metrics.fetched(kind, b.len() as u64);
                if let Some(budget) = budget {
                    budget.bytes(b.len() as u64)?;
                }
                Ok::<Bytes, Error>(b)
            }))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(ranges
            .iter()
            .zip(owner)
            .map(|(r, j)| {
                let body = &bodies[j];
                let from = usize::try_from(r.start - merged[j].start).unwrap_or(usize::MAX);
                let to = usize::try_from(r.end - merged[j].start).unwrap_or(usize::MAX);
                body.slice(from.min(body.len())..to.min(body.len()))
            })
            .collect())
    }

    /// Fetches length-prefixed records (series entries, chunks) at the starts of `ranges`, which are
    /// estimates: a record found longer than its range is fetched again, exactly. `None` from
    /// `record_len` (no readable length) is an error without a message, for the caller to name.
    async fn fetch_records(
        &self,
        kind: &'static str,
        path: &ObjectPath,
        ranges: &[Range<u64>],
        record_len: fn(&[u8]) -> Option<usize>,
        budget: &Budget,
    ) -> Result<Vec<Bytes>> {
        let mut bodies = self.fetch(kind, path, ranges, Some(budget)).await?;
        let mut again: Vec<(usize, Range<u64>)> = Vec::new();
        for (k, body) in bodies.iter().enumerate() {
            let len = record_len(body).ok_or_else(|| Error::new(ErrorKind::Internal, ""))?;
            if len > body.len() {
                again.push((k, ranges[k].start..ranges[k].start + len as u64));
            }
        }
        if !again.is_empty() {
            let rs: Vec<Range<u64>> = again.iter().map(|(_, r)| r.clone()).collect();
            let exact = self.fetch(kind, path, &rs, Some(budget)).await?;
            for ((k, _), body) in again.into_iter().zip(exact) {
                bodies[k] = body;
            }
        }
        Ok(bodies)
    }

    /// The block's index-header, read on first use and cached; concurrent first uses share one read.
    pub async fn header(&self, b: &RemoteBlock) -> Result<Arc<Loaded>> {
        let hit = self.caches.headers.get(&b.ulid).await;
        self.metrics.cache("index-header", hit.is_some());
        if let Some(h) = hit {
            return Ok(h);
        }
        self.caches
            .headers
            .try_get_with(b.ulid.clone(), self.load_header(b))
            .await
            .map_err(|e: Arc<Error>| Error::new(e.kind, e.message.clone()))
    }

    async fn load_header(&self, b: &RemoteBlock) -> Result<Arc<Loaded>> {
        let ulid = &*b.ulid;
        let path = block_path(ulid, BlockObject::Index);
        let size = match b.index_size {
            Some(s) => s,
            None => {
                self.metrics.get("index");
                self.store
                    .head(&path)
                    .await
                    .map_err(|e| bucket_err(&path, &e))?
                    .size
            }
        };
        if size < (HEADER_LEN + TOC_LEN) as u64 {
            return Err(corrupt(ulid, format!("index is only {size} bytes")));
        }
        let toc_at = size - TOC_LEN as u64;
        let tail = self
            .fetch("index", &path, std::slice::from_ref(&(toc_at..size)), None)
            .await?;
        let toc = Toc::parse(&tail[0], toc_at as usize).map_err(|e| corrupt(ulid, e))?;
        // The symbols start right after the magic; one range holds both (and is checked).
        let mut ranges = Vec::with_capacity(2);
        ranges.push(0..toc.series.max(HEADER_LEN as u64));
        if toc.postings_offset_table != 0 {
            ranges.push(toc.postings_offset_table..toc_at);
        }
        let got = self.fetch("index", &path, &ranges, None).await?;
        check_header(&got[0]).map_err(|e| corrupt(ulid, e))?;
        let symbols = got[0]
            .get(toc.symbols as usize..)
            .ok_or_else(|| corrupt(ulid, "symbol table offset beyond the series"))?;
        let table = got
            .get(1)
            .map(|t| (&t[..], toc.postings_offset_table as usize));
        let header = IndexHeader::parse(symbols, toc.symbols as usize, table)
            .map_err(|e| corrupt(ulid, e))?;
        let segments = match &b.segment_sizes {
            Some(s) => s.clone(),
            None => self.list_segments(ulid).await?,
        };
        let starts = header.postings_starts();
        Ok(Arc::new(Loaded {
            toc,
            header,
            starts,
            segments,
        }))
    }

    /// Sizes of the block's chunk segments, by listing them (blocks whose meta.json lists no files).
    async fn list_segments(&self, ulid: &str) -> Result<Vec<u64>> {
        let dir = ObjectPath::from_iter([ulid, "chunks"]);
        self.metrics.get("list");
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| bucket_err(&dir, &e))?;
        let mut segs: Vec<(String, u64)> = objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?.to_owned();
                name.chars()
                    .all(|c| c.is_ascii_digit())
                    .then_some((name, o.size))
            })
            .collect();
        segs.sort();
        Ok(segs.into_iter().map(|(_, s)| s).collect())
    }

    /// Postings lists for `keys` (and the list of all series when `all`), from the cache or the bucket.
    async fn postings(
        &self,
        b: &RemoteBlock,
        h: &Loaded,
        keys: Vec<(String, String)>,
        all: bool,
        budget: &Budget,
    ) -> Result<Fetched> {
        let mut lists: HashMap<(String, String), Arc<Vec<u32>>> = HashMap::new();
        let mut want: Vec<((String, String), usize)> = Vec::new();
        let mut wanted = keys;
        if all {
            wanted.push((String::new(), String::new()));
        }
        for (name, value) in wanted {
            let off = if name.is_empty() && value.is_empty() {
                h.header.all_postings_offset()
            } else {
                h.header.postings_offset(&name, &value)
            };
            let Some(off) = off else { continue };
            let key = (b.ulid.clone(), name, value);
            let hit = self.caches.postings.lookup(&key, &self.metrics, "postings");
            match hit {
                Some(l) => {
                    lists.insert((key.1, key.2), l);
                }
                None => want.push(((key.1, key.2), off)),
            }
        }
        self.caches
            .shared_postings(&b.ulid, &mut want, &mut lists)
            .await;
        if !want.is_empty() {
            let end = h.postings_end();
            let ranges: Vec<Range<u64>> = want
                .iter()
                .map(|(_, off)| {
                    let next = h.starts.partition_point(|s| s <= off);
                    let stop = h.starts.get(next).map_or(end, |s| *s as u64).min(end);
                    *off as u64..stop.max(*off as u64 + 8)
                })
                .collect();
            let path = block_path(&b.ulid, BlockObject::Index);
            let bodies = self.fetch("index", &path, &ranges, Some(budget)).await?;
            let mut read = Vec::with_capacity(want.len());
            for ((key, off), body) in want.into_iter().zip(bodies) {
                let list = Arc::new(parse_postings(&body, off).map_err(|e| corrupt(&b.ulid, e))?);
                self.caches
                    .postings
                    .insert((b.ulid.clone(), key.0.clone(), key.1.clone()), list.clone());
                read.push((key, list));
            }
            self.caches.share_postings(&b.ulid, &read);
            lists.extend(read);
        }
        let all_list = all
            .then(|| lists.remove(&(String::new(), String::new())))
            .flatten();
        Ok(Fetched {
            lists,
            all: all_list,
        })
    }

    /// Series entries by ID, from the cache or the bucket.
    async fn series(
        &self,
        b: &RemoteBlock,
        h: &Loaded,
        ids: &[u64],
        budget: &Budget,
    ) -> Result<Vec<SeriesEntry>> {
        let mut out: Vec<Option<SeriesEntry>> = Vec::with_capacity(ids.len());
        let mut missing: Vec<(usize, u32)> = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| corrupt(&b.ulid, "series ID overflows"))?;
            let hit = self
                .caches
                .series
                .lookup(&(b.ulid.clone(), id), &self.metrics, "series");
            if hit.is_none() {
                missing.push((i, id));
            }
            out.push(hit);
        }
        for (i, id, body) in self.caches.shared_series(&b.ulid, &mut missing).await {
            out[i] = Some(self.keep_series(b, h, id, &body)?);
        }
        if !missing.is_empty() {
            let path = block_path(&b.ulid, BlockObject::Index);
            let end = h.series_end();
            let ranges: Vec<Range<u64>> = missing
                .iter()
                .map(|(_, id)| {
                    let start = u64::from(*id) * 16;
                    start..(start + SERIES_ESTIMATE).min(end).max(start + 1)
                })
                .collect();
            let bodies = self
                .fetch_records("index", &path, &ranges, series_entry_len, budget)
                .await
                .map_err(|e| corrupt_or(&b.ulid, e, "series entry without a length"))?;
            let mut read = Vec::with_capacity(missing.len());
            for ((i, id), body) in missing.into_iter().zip(bodies) {
                out[i] = Some(self.keep_series(b, h, id, &body)?);
                // The entry exactly (its body was fetched by estimate and may run on).
                let len = series_entry_len(&body)
                    .unwrap_or(body.len())
                    .min(body.len());
                read.push((id, body.slice(..len)));
            }
            self.caches.share_series(&b.ulid, read);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// A series entry parsed and kept in the process-local cache.
    fn keep_series(
        &self,
        b: &RemoteBlock,
        h: &Loaded,
        id: u32,
        body: &[u8],
    ) -> Result<SeriesEntry> {
        let entry = Arc::new(
            h.header
                .parse_series(id, body)
                .map_err(|e| corrupt(&b.ulid, e))?,
        );
        self.caches
            .series
            .insert((b.ulid.clone(), id), entry.clone());
        Ok(entry)
    }

    /// Chunk data by reference. `refs` come with the reference of the same series' next chunk, which
    /// bounds the chunk when it is in the same segment.
    async fn chunks(
        &self,
        b: &RemoteBlock,
        h: &Loaded,
        refs: &[(u64, Option<u64>)],
        budget: &Budget,
    ) -> Result<HashMap<u64, Bytes>> {
        let mut out = HashMap::with_capacity(refs.len());
        let mut by_segment: HashMap<usize, Vec<(u64, Range<u64>)>> = HashMap::new();
        let mut local_misses = Vec::new();
        for &(r, next) in refs {
            let hit = self
                .caches
                .chunks
                .lookup(&(b.ulid.clone(), r), &self.metrics, "chunks");
            match hit {
                Some(c) => {
                    out.insert(r, c);
                }
                None => local_misses.push((r, next)),
            }
        }
        let shared = if local_misses.is_empty() {
            HashMap::new()
        } else {
            let wanted: Vec<u64> = local_misses.iter().map(|(r, _)| *r).collect();
            self.caches.shared_chunks(&b.ulid, &wanted).await
        };
        for (r, next) in local_misses {
            if let Some(c) = shared.get(&r) {
                out.insert(r, c.clone());
                continue;
            }
            let seg = (r >> 32) as usize;
            let off = r & 0xffff_ffff;
            let size = *h.segments.get(seg).ok_or_else(|| {
                corrupt(
                    &b.ulid,
                    format!("chunk reference {r:#x} names a missing segment"),
                )
            })?;
            let end = match next {
                Some(n) if (n >> 32) as usize == seg && (n & 0xffff_ffff) > off => n & 0xffff_ffff,
                _ => off + CHUNK_ESTIMATE,
            }
            .min(size);
            if off >= end {
                return Err(corrupt(
                    &b.ulid,
                    format!("chunk reference {r:#x} is beyond its segment's end"),
                ));
            }
            by_segment.entry(seg).or_default().push((r, off..end));
        }
        let mut read = Vec::new();
        for (seg, wanted) in by_segment {
            let name = format!("{:06}", seg + 1);
            let path = block_path(&b.ulid, BlockObject::Chunks(&name));
            let ranges: Vec<Range<u64>> = wanted.iter().map(|(_, r)| r.clone()).collect();
            let bodies = self
                .fetch_records("chunks", &path, &ranges, chunk_record_len, budget)
                .await
                .map_err(|e| corrupt_or(&b.ulid, e, "chunk without a length"))?;
            for ((r, range), body) in wanted.into_iter().zip(bodies) {
                let c = parse_chunk_record(&body, range.start as usize)
                    .map_err(|e| corrupt(&b.ulid, format!("segment {name}: {e}")))?;
                // A downsampled block holds Thanos' aggregate chunks, a raw block XOR chunks.
                let (expected, fits) = if b.meta.resolution() > 0 {
                    (Encoding::Aggr, c.encoding == Encoding::Aggr)
                } else {
                    let raw = [Encoding::Xor, Encoding::Histogram, Encoding::FloatHistogram];
                    (Encoding::Xor, raw.contains(&c.encoding))
                };
                if !fits {
                    let why = format!(
                        "a block of resolution {} holds {expected:?} chunks",
                        b.meta.resolution()
                    );
                    return Err(Error::new(
                        ErrorKind::Execution,
                        format!(
                            "block {}: chunk {r:#x} has encoding {:?}; {why}",
                            b.ulid, c.encoding
                        ),
                    ));
                }
                // The chunk cache holds the chunk's own bytes only (not the fetched body), after its
                // encoding byte.
                let mut owned = Vec::with_capacity(c.data.len() + 1);
                owned.push(c.encoding as u8);
                owned.extend_from_slice(c.data);
                let data = Bytes::from(owned);
                self.caches.chunks.insert((b.ulid.clone(), r), data.clone());
                read.push((r, data.clone()));
                out.insert(r, data);
            }
        }
        self.caches.share_chunks(&b.ulid, read);
        Ok(out)
    }

    /// Series of block `b` matching `matchers` (on the series' own labels) with chunks overlapping
    /// `[mint, maxt]`, with those chunks (data only when `with_data`), in label order.
    pub async fn select(
        &self,
        b: &RemoteBlock,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        budget: &Budget,
    ) -> Result<Vec<SourceSeries>> {
        let h = self.header(b).await?;
        let (keys, all) = postings::required(&HeaderOnly(&h.header), matchers);
        let fetched = self.postings(b, &h, keys, all, budget).await?;
        let ids = postings::select(&Lists(&h.header, &fetched), matchers)?;
        let entries = self.series(b, &h, &ids, budget).await?;
        let mut selected: Vec<(Labels, Vec<NextChunk>)> = Vec::new();
        for e in entries {
            let (labels, metas) = &*e;
            let chunks: Vec<NextChunk> = metas
                .iter()
                .enumerate()
                .filter(|(_, m)| m.min_time <= maxt && m.max_time >= mint)
                .map(|(i, m)| (*m, metas.get(i + 1).map(|n| n.chunk_ref)))
                .collect();
            if !chunks.is_empty() {
                selected.push((labels.clone(), chunks));
            }
        }
        budget.series(selected.len())?;
        let data = if with_data {
            let refs: Vec<(u64, Option<u64>)> = selected
                .iter()
                .flat_map(|(_, cs)| cs.iter().map(|(m, next)| (m.chunk_ref, *next)))
                .collect();
            self.chunks(b, &h, &refs, budget).await?
        } else {
            HashMap::new()
        };
        let mut samples = 0u64;
        let out = selected
            .into_iter()
            .map(|(labels, cs)| SourceSeries {
                labels,
                chunks: cs
                    .into_iter()
                    .map(|(m, _)| {
                        // The encoding byte, then the chunk (see `chunks`).
                        let stored = data.get(&m.chunk_ref).cloned().unwrap_or_default();
                        let encoding = stored
                            .first()
                            .and_then(|e| Encoding::from_u8(*e))
                            .unwrap_or(Encoding::Xor);
                        let data = if stored.is_empty() {
                            stored
                        } else {
                            stored.slice(1..)
                        };
                        // Every chunk encoding starts with its sample count, big-endian u16;
                        // an aggregate chunk counts its windows.
                        if b.meta.resolution() > 0 {
                            samples += super::resolution::aggregate_windows(&data);
                        } else if data.len() >= 2 {
                            samples += u64::from(u16::from_be_bytes([data[0], data[1]]));
                        }
                        SourceChunk {
                            encoding,
                            min_time: m.min_time,
                            max_time: m.max_time,
                            data,
                        }
                    })
                    .collect(),
            })
            .collect();
        budget.samples(samples)?;
        Ok(out)
    }
}

/// The label values of an index-header, for working out which postings lists a query needs.
struct HeaderOnly<'a>(&'a IndexHeader);

impl Postings for HeaderOnly<'_> {
    type Error = Error;
    fn values(&self, name: &str) -> Vec<&str> {
        self.0.label_values(name)
    }
    fn list(&self, _: &str, _: &str) -> Result<Vec<u64>> {
        Ok(vec![])
    }
    fn all(&self) -> Result<Vec<u64>> {
        Ok(vec![])
    }
}

/// Postings lists fetched for one query.
struct Fetched {
    lists: HashMap<(String, String), Arc<Vec<u32>>>,
    all: Option<Arc<Vec<u32>>>,
}

struct Lists<'a>(&'a IndexHeader, &'a Fetched);

impl Postings for Lists<'_> {
    type Error = Error;
    fn values(&self, name: &str) -> Vec<&str> {
        self.0.label_values(name)
    }
    fn list(&self, name: &str, value: &str) -> Result<Vec<u64>> {
        Ok(self
            .1
            .lists
            .get(&(name.to_owned(), value.to_owned()))
            .map(|l| l.iter().map(|&x| u64::from(x)).collect())
            .unwrap_or_default())
    }
    fn all(&self) -> Result<Vec<u64>> {
        Ok(self
            .1
            .all
            .as_ref()
            .map(|l| l.iter().map(|&x| u64::from(x)).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_joins_near_ranges_and_keeps_owners() {
        let rs = vec![1000..1100, 0..10, 10..20, 1_000_000..1_000_100, 50..60];
        let (merged, owner) = coalesce(&rs);
        assert_eq!(merged, vec![0..1100, 1_000_000..1_000_100]);
        assert_eq!(owner, vec![0, 0, 0, 1, 0]);
    }
}
