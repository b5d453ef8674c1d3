//! The bucket store: the history the edges' shippers uploaded, served over the StoreAPI straight from
//! object storage (Thanos' store gateway, inside the gateway or on its own as `meridian-gateway store`).
//!
//! - **Sync.** Every `--sync-block-duration` the bucket is listed ([`meridian_tsdb::listing`]: block
//!   directories, their `meta.json` and marks in one listing) and the `meta.json` of each new block
//!   fetched (`--block-meta-fetch-concurrency` at a time). A directory without `meta.json` is an
//!   unfinished upload (or a block being deleted) and is ignored until it has one; a block gone from
//!   the bucket is dropped. Each block's external labels and time range come from its `meta.json`
//!   (`thanos` section; blocks without one have no external labels).
//! - **Downsampled blocks** (5 m and 1 h, issue 29) are served to requests whose
//!   `max_resolution_window` admits them, with the aggregates they ask for ([`resolution`]).
//! - **Compacted blocks** (issue 29): a block whose sources all lie in another block is that
//!   compaction's input and is not served (Thanos' `DeduplicateFilter`), so no sample is read twice
//!   while a compactor replaces blocks, or after one was killed between upload and marks; a block
//!   marked for deletion is served until its mark is `--ignore-deletion-marks-delay` old.
//! - **Filters** for sharding the store across instances: `--min-time`/`--max-time` keep blocks
//!   overlapping that range, `--selector.relabel-config` keeps blocks whose external labels survive
//!   the relabeling (`keep`/`drop` on them), as in Thanos.
//! - **Lazy reads** ([`reader`]): start-up reads `meta.json` files only; a block's index-header is read
//!   on its first query, postings, series and chunks with coalesced ranged GETs, all cached.
//! - **StoreAPI** with `ComponentType` "store": every distinct set of external labels is announced;
//!   matchers on external labels pick blocks; series equal across blocks are one series.
//! - **Limits** per request on series, samples and downloaded bytes (`--store.grpc.*-limit`).

pub mod flags;
pub mod metrics;
pub mod reader;
pub mod resolution;

pub use flags::{
    StoreTime, open_objstore, parse_selector, parse_store_time, read_selector, selector_text,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::relabel::RelabelConfig;
use meridian_core::series::merge_equal_series;
use meridian_storeapi::info::InfoBuilder;
use meridian_storeapi::leaf::wire_series_stream;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_storeapi::{
    ExternalLabels, SeriesQuery, SeriesStream, Store, label_names_answer, label_values_answer,
    matchers_from_proto, no_series_matchers_error, truncate_to_limit,
};
use meridian_tsdb::block::BlockMeta;
use meridian_tsdb::objstore::Bucket;
pub use metrics::{BucketMetrics, CacheLabel, CacheNameLabel, KindLabel};
use tokio_util::sync::CancellationToken;

use reader::{Budget, Caches, Reader};

/// Per-request limits (0 = unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketLimits {
    /// `--store.grpc.touched-series-limit`.
    pub series: u64,
    /// `--store.grpc.series-sample-limit`.
    pub samples: u64,
    /// `--store.grpc.downloaded-bytes-limit`.
    pub bytes: u64,
}

/// How the bucket store runs.
#[derive(Debug, Clone)]
pub struct BucketStoreOptions {
    /// `--sync-block-duration`.
    pub sync_interval: Duration,
    /// `--block-meta-fetch-concurrency`.
    pub meta_fetch_concurrency: usize,
    /// `--index-cache-size`: index-headers, postings and series.
    pub index_cache_bytes: u64,
    /// `--chunk-cache-size`.
    pub chunk_cache_bytes: u64,
    /// `--min-time` / `--max-time` (inclusive): only blocks overlapping this range are served.
    pub min_time: StoreTime,
    pub max_time: StoreTime,
    /// `--selector.relabel-config`: applied to each block's external labels; dropped blocks are not
    /// served.
    pub selector: Vec<RelabelConfig>,
    pub limits: BucketLimits,
    /// Blocks read in parallel for one request.
    pub block_concurrency: usize,
    /// The clock relative `min_time`/`max_time` are resolved by at each sync (tests inject one).
    pub clock: meridian_core::time::Clock,
    /// `--ignore-deletion-marks-delay`: a block marked for deletion is served until its mark is this
    /// old.
    pub ignore_deletion_marks_delay: Duration,
    /// `--index-cache.config` / `--store.caching-bucket.config` naming memcached or Redis.
    pub shared_index: Option<Arc<crate::cache::shared::SharedCache>>,
    pub shared_chunks: Option<Arc<crate::cache::shared::SharedCache>>,
}

impl Default for BucketStoreOptions {
    fn default() -> Self {
        BucketStoreOptions {
            sync_interval: Duration::from_secs(180),
            meta_fetch_concurrency: 32,
            index_cache_bytes: 250 << 20,
            chunk_cache_bytes: 500 << 20,
            min_time: StoreTime::At(i64::MIN),
            max_time: StoreTime::At(i64::MAX),
            selector: Vec::new(),
            limits: BucketLimits::default(),
            block_concurrency: 8,
            clock: meridian_core::time::Clock::system(),
            ignore_deletion_marks_delay: Duration::from_secs(24 * 3600),
            shared_index: None,
            shared_chunks: None,
        }
    }
}

/// A block in the bucket, as known from its `meta.json`.
#[derive(Debug)]
pub struct RemoteBlock {
    pub ulid: Arc<str>,
    pub meta: BlockMeta,
    pub ext: ExternalLabels,
    /// The index size, when `meta.json` lists it (`thanos.files`).
    index_size: Option<u64>,
    /// Chunk segment sizes by sequence, when `meta.json` lists them.
    segment_sizes: Option<Vec<u64>>,
}

impl RemoteBlock {
    /// Reads the parts of `meta.json` the store uses; `Err` says why the block cannot be served.
    fn from_meta(meta: BlockMeta) -> std::result::Result<RemoteBlock, String> {
        let thanos = meta.extra.get("thanos");
        let labels = meta.thanos_labels();
        let resolution = meta.resolution();
        if !resolution::RESOLUTIONS.contains(&resolution) {
            return Err(format!(
                "resolution {resolution} ms is none of 0, 5m (300000) and 1h (3600000)"
            ));
        }
        let files: Vec<(String, u64)> = thanos
            .and_then(|t| t.get("files"))
            .and_then(|f| f.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        Some((
                            f.get("rel_path")?.as_str()?.to_owned(),
                            f.get("size_bytes")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let index_size = files.iter().find(|(p, _)| p == "index").map(|(_, s)| *s);
        let mut segs: Vec<(&str, u64)> = files
            .iter()
            .filter_map(|(p, s)| Some((p.strip_prefix("chunks/")?, *s)))
            .collect();
        segs.sort();
        let segment_sizes =
            (index_size.is_some() && !segs.is_empty()).then(|| segs.iter().map(|s| s.1).collect());
        Ok(RemoteBlock {
            ulid: Arc::from(meta.ulid.as_str()),
            meta,
            ext: ExternalLabels::new(labels),
            index_size,
            segment_sizes,
        })
    }

    /// Inclusive time range.
    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_time <= maxt && self.meta.max_time > mint
    }
}

/// What a sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
    pub ignored: usize,
    pub loaded: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct BucketStore {
    bucket: Bucket,
    opts: BucketStoreOptions,
    reader: Reader,
    /// The blocks served: those of `seen` inside the time range and kept by the selector.
    blocks: RwLock<Arc<BTreeMap<String, Arc<RemoteBlock>>>>,
    /// Every block in the bucket whose `meta.json` was read, served or not, so a block the filters
    /// leave out is not fetched again at every sync and one a moving time range admits later is.
    seen: RwLock<Arc<BTreeMap<String, Arc<RemoteBlock>>>>,
    synced: AtomicBool,
    /// One sync at a time.
    sync_lock: tokio::sync::Mutex<()>,
    /// Deletion marks' times (unix s) by block.
    mark_times: std::sync::Mutex<BTreeMap<String, i64>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BucketStore {
    pub fn new(bucket: Bucket, opts: BucketStoreOptions) -> BucketStore {
        for w in &bucket.warnings {
            tracing::warn!(bucket = %bucket.description, "objstore config: {w}");
        }
        let reader = Reader {
            store: bucket.store.clone(),
            caches: Caches::new(
                opts.index_cache_bytes,
                opts.chunk_cache_bytes,
                opts.shared_index.clone(),
                opts.shared_chunks.clone(),
            ),
            metrics: Arc::new(BucketMetrics::default()),
        };
        BucketStore {
            bucket,
            opts,
            reader,
            blocks: RwLock::new(Arc::new(BTreeMap::new())),
            seen: RwLock::new(Arc::new(BTreeMap::new())),
            synced: AtomicBool::new(false),
            sync_lock: tokio::sync::Mutex::new(()),
            mark_times: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    pub fn metrics(&self) -> &Arc<BucketMetrics> {
        &self.reader.metrics
    }

    /// The shared caches this store reads through (stopped by its owner).
    pub fn shared_caches(&self) -> Vec<Arc<crate::cache::shared::SharedCache>> {
        [&self.opts.shared_index, &self.opts.shared_chunks]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Updates the cache size gauges (call before exposing metrics).
    pub fn observe_caches(&self) {
        for (cache, bytes) in self.reader.caches.weighted_sizes() {
            self.reader
                .metrics
                .cache_bytes
                .get_or_create(&CacheNameLabel { cache })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    pub fn description(&self) -> &str {
        &self.bucket.description
    }

    /// Whether the first sync has completed.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The blocks served, by ULID.
    pub fn blocks(&self) -> Arc<BTreeMap<String, Arc<RemoteBlock>>> {
        self.blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `b` is served while the time range is `min..=max` (ms).
    fn admitted(&self, b: &RemoteBlock, (min, max): (i64, i64)) -> std::result::Result<(), String> {
        if !b.overlaps(min, max) {
            return Err("outside --min-time/--max-time".into());
        }
        if !self.opts.selector.is_empty()
            && meridian_core::relabel::process(b.ext.labels(), &self.opts.selector).is_none()
        {
            return Err("external labels dropped by --selector.relabel-config".into());
        }
        Ok(())
    }

    /// Lists the bucket and loads new blocks' `meta.json`; drops blocks no longer there.
    pub async fn sync(&self) -> Result<SyncReport> {
        let _one = self.sync_lock.lock().await;
        let result = self.sync_inner().await;
        self.reader.metrics.syncs.inc();
        match &result {
            Ok(_) => self.synced.store(true, Ordering::Release),
            Err(_) => {
                self.reader.metrics.sync_failures.inc();
            }
        }
        result
    }

    async fn sync_inner(&self) -> Result<SyncReport> {
        let store = &self.bucket.store;
        self.reader.metrics.get("list");
        let listing = meridian_tsdb::listing::list_blocks(store.as_ref())
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("listing bucket {}: {e}", self.bucket.description),
                )
            })?;
        let present: BTreeSet<String> = listing
            .iter()
            .filter(|(_, e)| e.has_meta)
            .map(|(u, _)| u.clone())
            .collect();
        let known = self
            .seen
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let new: Vec<String> = present
            .iter()
            .filter(|u| !known.contains_key(*u))
            .cloned()
            .collect();
        let loaded: Vec<std::result::Result<RemoteBlock, (String, String)>> =
            futures::stream::iter(new.into_iter().map(|ulid| async move {
                self.reader.metrics.get("meta");
                let (meta, size) = meridian_tsdb::listing::fetch_meta(store.as_ref(), &ulid)
                    .await
                    .map_err(|e| (ulid.clone(), e.to_string()))?;
                self.reader.metrics.fetched("meta", size as u64);
                RemoteBlock::from_meta(meta).map_err(|e| (ulid, e))
            }))
            .buffer_unordered(self.opts.meta_fetch_concurrency.max(1))
            .collect()
            .await;
        let marked = self.deletion_marked(&listing).await;
        let mut seen: BTreeMap<String, Arc<RemoteBlock>> = known
            .iter()
            .filter(|(u, _)| present.contains(*u))
            .map(|(u, b)| (u.clone(), b.clone()))
            .collect();
        // Directories without meta.json: unfinished uploads, or blocks being deleted.
        let mut ignored = listing.values().filter(|e| !e.has_meta).count();
        for r in loaded {
            match r {
                Ok(b) => {
                    seen.insert(b.ulid.to_string(), Arc::new(b));
                }
                Err((ulid, why)) => {
                    ignored += 1;
                    tracing::debug!(block = %ulid, reason = %why, "block not served");
                }
            }
        }
        // The filters again over every block, since a relative time range moves between syncs.
        let now = self.opts.clock.now_ms();
        let range = (
            self.opts.min_time.resolve(now),
            self.opts.max_time.resolve(now),
        );
        let lineage: Vec<meridian_tsdb::listing::Lineage<'_>> = seen
            .values()
            .filter(|b| !marked.contains(b.ulid.as_ref()))
            .map(|b| meridian_tsdb::listing::Lineage {
                ulid: &b.ulid,
                resolution: b.meta.resolution(),
                sources: &b.meta.compaction.sources,
            })
            .collect();
        let covered = meridian_tsdb::listing::covered(&lineage);
        let mut next: BTreeMap<String, Arc<RemoteBlock>> = BTreeMap::new();
        for (u, b) in &seen {
            let verdict = if marked.contains(u) {
                Err("marked for deletion".to_owned())
            } else if covered.contains(u) {
                Err("covered by a compacted block".to_owned())
            } else {
                self.admitted(b, range)
            };
            match verdict {
                Ok(()) => {
                    next.insert(u.clone(), b.clone());
                }
                Err(why) => {
                    ignored += 1;
                    tracing::debug!(block = %u, reason = %why, "block not served");
                }
            }
        }
        let served = self.blocks();
        let removed = served.keys().filter(|u| !next.contains_key(*u)).count();
        for u in served.keys().filter(|u| !next.contains_key(*u)) {
            self.reader.caches.forget(u);
        }
        let added = next.keys().filter(|u| !served.contains_key(*u)).count();
        let report = SyncReport {
            added,
            removed,
            ignored,
            loaded: next.len(),
        };
        self.reader
            .metrics
            .blocks_loaded
            .set(i64::try_from(next.len()).unwrap_or(i64::MAX));
        self.reader
            .metrics
            .blocks_ignored
            .set(i64::try_from(ignored).unwrap_or(i64::MAX));
        *self
            .blocks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        *self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(seen);
        if added > 0 || removed > 0 {
            tracing::info!(bucket = %self.bucket.description, added, removed, loaded = report.loaded, "bucket synced");
        }
        Ok(report)
    }

    /// The blocks whose deletion mark is older than `--ignore-deletion-marks-delay` (Thanos'
    /// `IgnoreDeletionMarkFilter`: until then a block being replaced is still served, and a block
    /// with a replacement is dropped anyway as covered). Mark times are read once per block.
    async fn deletion_marked(
        &self,
        listing: &BTreeMap<String, meridian_tsdb::listing::BlockEntry>,
    ) -> BTreeSet<String> {
        let now_s = self.opts.clock.now_ms() / 1000;
        let delay_s =
            i64::try_from(self.opts.ignore_deletion_marks_delay.as_secs()).unwrap_or(i64::MAX);
        let mut out = BTreeSet::new();
        for (ulid, _) in listing.iter().filter(|(_, e)| e.deletion_mark) {
            let cached = lock(&self.mark_times).get(ulid).copied();
            let at = match cached {
                Some(t) => t,
                None => {
                    self.reader.metrics.get("meta");
                    match meridian_tsdb::listing::read_mark(
                        self.bucket.store.as_ref(),
                        ulid,
                        meridian_tsdb::marks::MarkKind::Deletion,
                    )
                    .await
                    {
                        Ok(Some(m)) => {
                            lock(&self.mark_times).insert(ulid.clone(), m.time);
                            m.time
                        }
                        // Gone since the listing, or unreadable (Thanos ignores such a mark).
                        Ok(None) | Err(_) => continue,
                    }
                }
            };
            if now_s.saturating_sub(at) >= delay_s {
                out.insert(ulid.clone());
            }
        }
        lock(&self.mark_times).retain(|u, _| listing.get(u).is_some_and(|e| e.deletion_mark));
        out
    }

    /// Syncs every `sync_interval` until `stop` (the first sync is the caller's).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.opts.sync_interval) => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "bucket sync failed; serving the blocks known before");
            }
        }
    }

    /// The blocks a request reads, each with the matchers left for its series' own labels.
    fn targets(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(Arc<RemoteBlock>, Vec<Matcher>)> {
        let mut out = Vec::new();
        for b in self.blocks().values() {
            if !b.overlaps(mint, maxt) {
                continue;
            }
            if let Some(rest) = b.ext.filter_matchers(matchers.to_vec()) {
                out.push((b.clone(), rest));
            }
        }
        out
    }

    /// Runs `select` on every target block, a few at a time; chunks come in their wire form, the
    /// aggregate ones cut to `aggrs`.
    async fn select_all(
        &self,
        targets: Vec<(Arc<RemoteBlock>, Vec<Matcher>)>,
        (mint, maxt): (i64, i64),
        with_data: bool,
        aggrs: &[crate::compact::downsample::Aggr],
        budget: &Budget,
    ) -> Result<Vec<(Labels, Vec<pb::AggrChunk>)>> {
        let per_block: Vec<Vec<(Labels, Vec<pb::AggrChunk>)>> =
            futures::stream::iter(targets.into_iter().map(|(b, ms)| async move {
                let series = self
                    .reader
                    .select(&b, &ms, mint, maxt, with_data, budget)
                    .await?;
                series
                    .into_iter()
                    .map(|s| {
                        let chunks = s
                            .chunks
                            .into_iter()
                            .map(|c| resolution::wire_chunk(&b, c, aggrs))
                            .collect::<Result<Vec<_>>>()?;
                        Ok((b.ext.apply(&s.labels, &[]), chunks))
                    })
                    .collect::<Result<Vec<_>>>()
            }))
            .buffered(self.opts.block_concurrency.max(1))
            .try_collect()
            .await?;
        Ok(per_block.into_iter().flatten().collect())
    }

    fn time_range(&self) -> (i64, i64) {
        let blocks = self.blocks();
        let min = blocks.values().map(|b| b.meta.min_time).min();
        let max = blocks.values().map(|b| b.meta.max_time - 1).max();
        (min.unwrap_or(i64::MAX), max.unwrap_or(i64::MIN))
    }
}

#[async_trait::async_trait]
impl Store for BucketStore {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        // Info is polled every few seconds: a good moment to refresh the cache size gauges.
        self.observe_caches();
        let blocks = self.blocks();
        let mut sets: BTreeMap<Labels, (i64, i64)> = BTreeMap::new();
        for b in blocks.values() {
            let e = sets
                .entry(b.ext.labels().clone())
                .or_insert((i64::MAX, i64::MIN));
            e.0 = e.0.min(b.meta.min_time);
            e.1 = e.1.max(b.meta.max_time - 1);
        }
        let (min_time, max_time) = self.time_range();
        let info = sets.into_iter().fold(
            InfoBuilder::new("store", min_time, max_time),
            |b, (l, (lo, hi))| b.tsdb(l, lo, hi),
        );
        Ok(info.build())
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let q = SeriesQuery::from_request(&req)?;
        if q.matchers.is_empty() {
            return Err(no_series_matchers_error());
        }
        let aggrs = resolution::requested_aggregates(&req)?;
        let targets = resolution::pick(
            self.targets(&q.matchers, q.min_time, q.max_time),
            q.min_time,
            q.max_time,
            req.max_resolution_window,
        );
        if targets.iter().any(|(_, ms)| ms.is_empty()) {
            return Err(no_series_matchers_error());
        }
        let budget = Budget::new(self.opts.limits);
        // The replica labels to remove: those that are external labels of the blocks read (a series'
        // own label of that name stays, as on every StoreAPI).
        let strip: Vec<String> = q
            .without_replica_labels
            .iter()
            .filter(|w| targets.iter().any(|(b, _)| b.ext.labels().has(w)))
            .cloned()
            .collect();
        let all = self
            .select_all(
                targets,
                (q.min_time, q.max_time),
                !q.skip_chunks,
                &aggrs,
                &budget,
            )
            .await?;
        // Series are joined across blocks of one set of external labels (one replica's data, split by
        // time or compacted) before the replica labels go: the replicas of an HA pair must stay
        // separate series, adjacent and equal in labels, for the querier to deduplicate them with its
        // penalty rule instead of receiving both replicas' samples interleaved in one series.
        let mut merged = merge_equal_series(all);
        if !strip.is_empty() {
            for (labels, _) in &mut merged {
                *labels = labels.without(&strip);
            }
            merged.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // Blocks that overlap in time (a replica's data before and after vertical compaction, or
        // copies) may hold the same chunk twice: identical chunks are sent once.
        for (_, chunks) in &mut merged {
            chunks.dedup();
        }
        truncate_to_limit(&mut merged, req.limit);
        Ok(wire_series_stream(merged, q.skip_chunks))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let matchers = matchers_from_proto(&req.matchers)?;
        let budget = Budget::new(self.opts.limits);
        let mut set = BTreeSet::new();
        for (b, rest) in self.targets(&matchers, req.start, req.end) {
            let before = set.len();
            let mut any = false;
            if rest.is_empty() {
                // Block-granular: every name of the block's index.
                let h = self.reader.header(&b).await?;
                set.extend(h.header.label_names().into_iter().map(str::to_owned));
                any = h.header.all_postings_offset().is_some();
            } else {
                for s in self
                    .reader
                    .select(&b, &rest, req.start, req.end, false, &budget)
                    .await?
                {
                    any = true;
                    set.extend(s.labels.iter().map(|l| l.name.to_owned()));
                }
            }
            if any || set.len() > before {
                set.extend(
                    b.ext
                        .names_without(&req.without_replica_labels)
                        .map(str::to_owned),
                );
            }
        }
        Ok(label_names_answer(set, req.limit))
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::bad_data("label values request without a label name"));
        }
        let matchers = matchers_from_proto(&req.matchers)?;
        let removed = req.without_replica_labels.contains(&req.label);
        let budget = Budget::new(self.opts.limits);
        let mut set = BTreeSet::new();
        for (b, rest) in self.targets(&matchers, req.start, req.end) {
            let external = b.ext.labels().get(&req.label).map(str::to_owned);
            if rest.is_empty() {
                let h = self.reader.header(&b).await?;
                match external {
                    Some(v) if !removed && h.header.all_postings_offset().is_some() => {
                        set.insert(v);
                    }
                    Some(_) => {}
                    None => set.extend(
                        h.header
                            .label_values(&req.label)
                            .into_iter()
                            .map(str::to_owned),
                    ),
                }
                continue;
            }
            let selected = self
                .reader
                .select(&b, &rest, req.start, req.end, false, &budget)
                .await?;
            match external {
                Some(v) if !removed && !selected.is_empty() => {
                    set.insert(v);
                }
                Some(_) => {}
                None => set.extend(
                    selected
                        .iter()
                        .filter_map(|s| s.labels.get(&req.label).map(str::to_owned)),
                ),
            }
        }
        Ok(label_values_answer(set, req.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_parses_and_names_the_flag() {
        let s = parse_selector("- action: keep\n  source_labels: [cluster]\n  regex: a\n").unwrap();
        assert_eq!(s.len(), 1);
        let e = parse_selector("- action: nope\n").unwrap_err();
        assert!(e.contains("--selector.relabel-config"), "{e}");
    }
}
