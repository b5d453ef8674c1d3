//! Results cache (moka, bounded in bytes by a weigher).
//!
//! **Range queries** are split at multiples of `--query-range.split-interval` (24 h, counted from the
//! Unix epoch) into pieces that each hold whole steps of the request's own grid (`start + k·step`). A
//! piece is evaluated as a range query from its first to its last step and cached under (normalized
//! query, the options that change answers, step, first step, last step): a later request on the same
//! grid that covers the piece finds it, whatever its own start and end. This keeps the cache from ever
//! changing an answer (unlike aligning `start` to the step, which moves the grid): a range query at a
//! step is, step by step, the instant query at that time, so its pieces concatenate to the whole. What
//! would break that is left whole and uncached: queries with `@ start()`/`@ end()` (their value depends on
//! the request's own start and end).
//!
//! Not cached: pieces whose last step is newer than `now - max_freshness` (data may still arrive), and
//! any piece whose answer carries warnings (a store was missing). Concurrent loads of one piece are
//! coalesced (moka's `try_get_with`): the second request waits for the first one's answer.
//!
//! **Label and series responses** are cached as encoded bytes for a short time (`labels_ttl`), again
//! only without warnings.
//!
//! With a **shared cache** (`--query-range.response-cache-config` of type `MEMCACHED` or `REDIS`) the
//! pieces live there instead, so every gateway of a fleet answers from what any of them computed: a
//! request's pieces are read with one multi-get, each checked against its full key
//! ([`super::codec`]), and the pieces evaluated now are written back asynchronously. The process keeps
//! no copy of its own then (no whole-response cache either), as Thanos' query frontend keeps only the
//! one cache it is given; loads of one piece are not coalesced across gateways.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::codec;
use super::shared::SharedCache;
use crate::promql::{QueryResult, QueryValue};
use crate::queryable::SeriesData;

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Bytes the range-query pieces may take (0 disables the cache).
    pub max_bytes: u64,
    /// Piece length (`--query-range.split-interval`).
    pub split_interval: Duration,
    /// Pieces newer than this are not cached (`--query-range.max-freshness`).
    pub max_freshness: Duration,
    /// How long label and series answers are kept.
    pub labels_ttl: Duration,
    /// The shared cache the pieces live in instead of this process (memcached, Redis).
    pub shared: Option<Arc<SharedCache>>,
}

impl Default for CacheOptions {
    fn default() -> CacheOptions {
        CacheOptions {
            max_bytes: 256 << 20,
            split_interval: Duration::from_secs(24 * 3600),
            max_freshness: Duration::from_secs(60),
            labels_ttl: Duration::from_secs(10),
            shared: None,
        }
    }
}

/// Where a range answer came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub hits: usize,
    pub misses: usize,
    /// Pieces evaluated without the cache (fresh, warnings, unsplittable, cache off).
    pub uncached: usize,
}

impl Outcome {
    /// `hit`, `miss`, `partial` (some pieces from the cache) or `uncached`, for the query log.
    pub fn summary(&self) -> &'static str {
        match (self.hits, self.misses + self.uncached) {
            (0, 0) => "empty",
            (0, _) if self.misses > 0 => "miss",
            (0, _) => "uncached",
            (_, 0) => "hit",
            _ => "partial",
        }
    }
}

/// A range query's merged answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAnswer {
    /// Series sorted by labels, samples in time order.
    pub series: Vec<SeriesData>,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
    /// Samples loaded for the pieces evaluated now (cached pieces load none).
    pub samples: usize,
}

/// The key of one piece.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PieceKey {
    /// Normalized query and the options that change answers.
    query: Arc<str>,
    step: i64,
    first: i64,
    last: i64,
}

/// Why a loaded piece is not kept.
#[derive(Debug)]
enum NotKept {
    Failed(Error),
    /// The answer carried warnings: returned to every waiter, not stored.
    Warned(Arc<Piece>),
}

#[derive(Debug)]
struct Piece {
    series: Vec<SeriesData>,
    warnings: Vec<String>,
    samples: usize,
}

/// Cache self-metrics.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    pub requests: Family<ResultLabel, Counter>,
    pub bytes: Gauge,
    pub entries: Gauge,
}

/// Labels of the cache request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabel {
    /// `range` (pieces), `response` (whole range answers) or `labels`.
    pub cache: &'static str,
    /// `hit`, `miss` or `uncached`.
    pub result: &'static str,
}

impl CacheMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_gateway_cache_requests",
            "Results cache lookups by cache (range pieces, labels/series) and result",
            self.requests.clone(),
        );
        r.register_with_unit(
            "meridian_gateway_cache_size",
            "Bytes held by the range-query results cache",
            prometheus_client::registry::Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "meridian_gateway_cache_entries",
            "Pieces held by the range-query results cache",
            self.entries.clone(),
        );
    }

    fn count(&self, cache: &'static str, result: &'static str, n: usize) {
        self.requests
            .get_or_create(&ResultLabel { cache, result })
            .inc_by(n as u64);
    }
}

/// The results cache.
pub struct ResultsCache {
    opts: CacheOptions,
    pieces: Option<moka::future::Cache<PieceKey, Arc<Piece>>>,
    labels: Option<moka::future::Cache<String, Arc<Vec<u8>>>>,
    responses: Option<moka::future::Cache<String, Arc<CachedBody>>>,
    metrics: Arc<CacheMetrics>,
}

impl std::fmt::Debug for ResultsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsCache")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn piece_weight(p: &Piece) -> u32 {
    let bytes: usize = p
        .series
        .iter()
        .map(|s| s.labels.text_len() + 48 + s.samples.len() * 16)
        .sum::<usize>()
        + 64;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ResultsCache {
    pub fn new(opts: CacheOptions) -> ResultsCache {
        let local = opts.max_bytes > 0 && opts.shared.is_none();
        let pieces = local.then(|| {
            moka::future::Cache::builder()
                .max_capacity(opts.max_bytes)
                .weigher(|k: &PieceKey, v: &Arc<Piece>| {
                    piece_weight(v).saturating_add(u32::try_from(k.query.len()).unwrap_or(0))
                })
                .build()
        });
        let labels = (opts.max_bytes > 0 && !opts.labels_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity((opts.max_bytes / 8).max(1 << 20))
                .weigher(|k: &String, v: &Arc<Vec<u8>>| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(opts.labels_ttl)
                .build()
        });
        // Whole encoded answers to repeated requests: a quarter of the budget.
        let responses = local.then(|| {
            moka::future::Cache::builder()
                .max_capacity(opts.max_bytes / 4)
                .weigher(|k: &String, v: &Arc<CachedBody>| {
                    // The gzipped copy, made on first demand, is counted in advance (about a fifth).
                    u32::try_from(k.len() + v.plain.len() + v.plain.len() / 5).unwrap_or(u32::MAX)
                })
                .build()
        });
        ResultsCache {
            opts,
            pieces,
            labels,
            responses,
            metrics: Arc::new(CacheMetrics::default()),
        }
    }

    pub fn options(&self) -> &CacheOptions {
        &self.opts
    }

    pub fn metrics(&self) -> &Arc<CacheMetrics> {
        &self.metrics
    }

    /// Answers a range query from cached pieces and `eval(first, last)` for the others.
    ///
    /// `key` is the normalized query with every option that changes answers; `now` (ms) decides which
    /// pieces are too fresh to keep; `splittable` is false for queries that must run whole.
    pub async fn range<F, Fut>(
        &self,
        key: &str,
        splittable: bool,
        (start, end, step): (i64, i64, i64),
        now: i64,
        eval: F,
    ) -> Result<RangeAnswer>
    where
        F: Fn(i64, i64) -> Fut,
        Fut: std::future::Future<Output = Result<QueryResult>>,
    {
        if let Some(shared) = self.opts.shared.as_ref().filter(|_| splittable) {
            return self
                .range_shared(shared, key, (start, end, step), now, eval)
                .await;
        }
        let Some(cache) = self.pieces.as_ref().filter(|_| splittable) else {
            let piece = run_piece(eval(start, end).await?)?;
            self.metrics.count("range", "uncached", 1);
            let outcome = Outcome {
                uncached: 1,
                ..Outcome::default()
            };
            return Ok(merge(vec![(Arc::new(piece), false)], outcome));
        };
        let query: Arc<str> = Arc::from(key);
        let (ranges, fresh_at) = self.pieces_of((start, end, step), now);
        let mut outcome = Outcome::default();
        let mut jobs = Vec::with_capacity(ranges.len());
        for &(first, last) in &ranges[..fresh_at] {
            let key = PieceKey {
                query: query.clone(),
                step,
                first,
                last,
            };
            if let Some(p) = cache.get(&key).await {
                outcome.hits += 1;
                jobs.push(futures::future::Either::Left(async move { Ok((p, true)) }));
                continue;
            }
            outcome.misses += 1;
            let fut = eval(first, last);
            jobs.push(futures::future::Either::Right(
                futures::future::Either::Left(async move {
                    let r = cache
                        .try_get_with(key, async move {
                            let piece = run_piece(fut.await.map_err(NotKept::Failed)?)
                                .map_err(NotKept::Failed)?;
                            if piece.warnings.is_empty() {
                                Ok(Arc::new(piece))
                            } else {
                                Err(NotKept::Warned(Arc::new(piece)))
                            }
                        })
                        .await;
                    match r {
                        Ok(p) => Ok((p, false)),
                        Err(e) => match &*e {
                            NotKept::Warned(p) => Ok((p.clone(), false)),
                            NotKept::Failed(e) => Err(e.clone()),
                        },
                    }
                }),
            ));
        }
        if fresh_at < ranges.len() {
            outcome.uncached += 1;
            let (first, last) = (ranges[fresh_at].0, end - (end - start) % step);
            let fut = eval(first, last);
            jobs.push(futures::future::Either::Right(
                futures::future::Either::Right(async move {
                    Ok((Arc::new(run_piece(fut.await?)?), false))
                }),
            ));
        }
        let pieces = futures::future::join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        self.metrics.count("range", "hit", outcome.hits);
        self.metrics.count("range", "miss", outcome.misses);
        self.metrics.count("range", "uncached", outcome.uncached);
        self.metrics
            .bytes
            .set(i64::try_from(cache.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .entries
            .set(i64::try_from(cache.entry_count()).unwrap_or(i64::MAX));
        Ok(merge(pieces, outcome))
    }

    /// The pieces of `[start, end]` at `step` in time order (first and last step of each), and the
    /// index of the first one too fresh to keep: from there on the request runs as one evaluation.
    fn pieces_of(&self, (start, end, step): (i64, i64, i64), now: i64) -> (Vec<(i64, i64)>, usize) {
        let split = i64::try_from(self.opts.split_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let fresh_from =
            now.saturating_sub(i64::try_from(self.opts.max_freshness.as_millis()).unwrap_or(0));
        let mut ranges = Vec::new();
        let mut t = start;
        while t <= end {
            let piece_end = (t.div_euclid(split) + 1).saturating_mul(split);
            // Last step of the grid before the piece boundary, not after `end`.
            let bound = (piece_end - 1).min(end);
            let last = t + (bound - t) / step * step;
            ranges.push((t, last));
            match last.checked_add(step) {
                Some(n) => t = n,
                None => break,
            }
        }
        let fresh_at = ranges
            .iter()
            .position(|&(_, last)| last > fresh_from)
            .unwrap_or(ranges.len());
        (ranges, fresh_at)
    }

    /// [`ResultsCache::range`] over a shared cache: one multi-get for the request's pieces, the
    /// missing ones evaluated (concurrently) and written back in one batch.
    async fn range_shared<F, Fut>(
        &self,
        shared: &SharedCache,
        key: &str,
        (start, end, step): (i64, i64, i64),
        now: i64,
        eval: F,
    ) -> Result<RangeAnswer>
    where
        F: Fn(i64, i64) -> Fut,
        Fut: std::future::Future<Output = Result<QueryResult>>,
    {
        let (ranges, fresh_at) = self.pieces_of((start, end, step), now);
        // (stored key, logical key) of each piece old enough to keep.
        let keys: Vec<(String, String)> = ranges[..fresh_at]
            .iter()
            .map(|(first, last)| {
                let logical = format!("{key}\u{0}{step}\u{0}{first}\u{0}{last}");
                (codec::stored_key(&logical), logical)
            })
            .collect();
        let mut found = shared.get_keyed(&keys, |l, v| codec::decode(l, v)).await;
        let mut outcome = Outcome::default();
        let mut jobs = Vec::with_capacity(ranges.len());
        for (i, &(first, last)) in ranges[..fresh_at].iter().enumerate() {
            if let Some((series, _)) = found.remove(&i) {
                outcome.hits += 1;
                let piece = Piece {
                    series,
                    warnings: Vec::new(),
                    samples: 0,
                };
                jobs.push(futures::future::Either::Left(async move {
                    Ok((Arc::new(piece), true, None))
                }));
                continue;
            }
            outcome.misses += 1;
            jobs.push(futures::future::Either::Right(eval_piece(
                eval(first, last),
                Some(i),
            )));
        }
        if fresh_at < ranges.len() {
            outcome.uncached += 1;
            let (first, last) = (ranges[fresh_at].0, end - (end - start) % step);
            jobs.push(futures::future::Either::Right(eval_piece(
                eval(first, last),
                None,
            )));
        }
        let done = futures::future::join_all(jobs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        // Pieces evaluated now without warnings go to the shared cache (encoded off the async workers
        // would cost a thread hand-off per piece; encoding is a copy of the samples).
        let writes: Vec<(String, bytes::Bytes)> = done
            .iter()
            .filter_map(|(p, _, i)| {
                let i = (*i)?;
                p.warnings.is_empty().then(|| {
                    let (stored, logical) = &keys[i];
                    let bytes = codec::encode(logical, &p.series, p.samples);
                    (stored.clone(), bytes::Bytes::from(bytes))
                })
            })
            .collect();
        shared.set(writes);
        self.metrics.count("range", "hit", outcome.hits);
        self.metrics.count("range", "miss", outcome.misses);
        self.metrics.count("range", "uncached", outcome.uncached);
        let pieces = done.into_iter().map(|(p, hit, _)| (p, hit)).collect();
        Ok(merge(pieces, outcome))
    }

    /// A label or series answer (encoded `data` and warnings) from the cache or from `load`; answers with
    /// warnings are not kept.
    pub async fn labels<F, Fut>(&self, key: String, load: F) -> Result<(Arc<Vec<u8>>, Vec<String>)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<u8>, Vec<String>)>>,
    {
        let Some(cache) = &self.labels else {
            let (data, warnings) = load().await?;
            self.metrics.count("labels", "uncached", 1);
            return Ok((Arc::new(data), warnings));
        };
        if let Some(hit) = cache.get(&key).await {
            self.metrics.count("labels", "hit", 1);
            return Ok((hit, vec![]));
        }
        self.metrics.count("labels", "miss", 1);
        let r = cache
            .try_get_with(key, async move {
                let (data, warnings) = load().await.map_err(|e| (Some(e), None))?;
                if warnings.is_empty() {
                    Ok(Arc::new(data))
                } else {
                    Err((None, Some((Arc::new(data), warnings))))
                }
            })
            .await;
        match r {
            Ok(data) => Ok((data, vec![])),
            Err(e) => match &*e {
                (_, Some((data, warnings))) => Ok((data.clone(), warnings.clone())),
                (Some(err), None) => Err(err.clone()),
                (None, None) => Err(Error::internal("results cache: load without answer")),
            },
        }
    }
}

/// A whole encoded response, kept for identical requests (its gzipped copy made on first demand).
#[derive(Debug, Default)]
pub struct CachedBody {
    pub plain: bytes::Bytes,
    pub gzip: tokio::sync::OnceCell<bytes::Bytes>,
}

impl ResultsCache {
    /// The kept response to an identical request, if any.
    ///
    /// A range answer is kept whole only when every piece of it was old enough to cache and no
    /// warning came with it: then it is exactly what its pieces would assemble to, and encoding a
    /// large matrix again (the bulk of a cached answer's cost) is skipped.
    pub async fn response(&self, key: &str) -> Option<Arc<CachedBody>> {
        let hit = self.responses.as_ref()?.get(key).await;
        self.metrics
            .count("response", if hit.is_some() { "hit" } else { "miss" }, 1);
        hit
    }

    /// Keeps an encoded response (see [`ResultsCache::response`]).
    pub async fn keep_response(&self, key: String, body: Arc<CachedBody>) {
        if let Some(c) = &self.responses {
            c.insert(key, body).await;
        }
    }
}

/// A piece evaluated now, with the index of its shared-cache key (`None`: not to be kept).
async fn eval_piece(
    fut: impl std::future::Future<Output = Result<QueryResult>>,
    index: Option<usize>,
) -> Result<(Arc<Piece>, bool, Option<usize>)> {
    Ok((Arc::new(run_piece(fut.await?)?), false, index))
}

fn run_piece(r: QueryResult) -> Result<Piece> {
    match r.value {
        QueryValue::Matrix(series) => Ok(Piece {
            series,
            warnings: r.warnings,
            samples: r.samples,
        }),
        other => Err(Error::internal(format!(
            "range evaluation returned {other:?} instead of a matrix"
        ))),
    }
}

/// Joins pieces (in time order) into one answer: samples of equal series concatenated, series sorted
/// by labels, warnings deduplicated in order.
fn merge(pieces: Vec<(Arc<Piece>, bool)>, outcome: Outcome) -> RangeAnswer {
    let mut warnings: Vec<String> = Vec::new();
    let samples = pieces
        .iter()
        .filter(|(_, hit)| !hit)
        .map(|(p, _)| p.samples)
        .sum();
    if pieces.len() == 1 {
        let p = &pieces[0].0;
        for w in &p.warnings {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
        return RangeAnswer {
            series: p.series.clone(),
            warnings,
            outcome,
            samples,
        };
    }
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut series: Vec<SeriesData> = Vec::new();
    for (p, _) in &pieces {
        for w in &p.warnings {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
        for s in &p.series {
            match index.get(&s.labels) {
                Some(&i) => {
                    series[i].samples.extend_from_slice(&s.samples);
                    series[i].histograms.extend_from_slice(&s.histograms);
                }
                None => {
                    index.insert(s.labels.clone(), series.len());
                    series.push(s.clone());
                }
            }
        }
    }
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    RangeAnswer {
        series,
        warnings,
        outcome,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_summaries() {
        let o = |hits, misses, uncached| Outcome {
            hits,
            misses,
            uncached,
        };
        assert_eq!(o(2, 0, 0).summary(), "hit");
        assert_eq!(o(0, 2, 0).summary(), "miss");
        assert_eq!(o(1, 1, 1).summary(), "partial");
        assert_eq!(o(0, 0, 1).summary(), "uncached");
    }
}
