//! One compactor pass over a bucket, in Thanos' order (`cmd/thanos/compact.go`, v0.25.1): clean up,
//! compact every stream until its plan is empty, apply retention, delete what was marked long enough
//! ago.
//!
//! 1. **View.** The bucket is listed once ([`meridian_tsdb::listing`]); new blocks' `meta.json` are read
//!    and kept between passes. Blocks younger than `--consistency-delay` (by their ULID's time) are
//!    left alone unless the compactor made them; blocks marked for deletion and blocks the
//!    `--selector.relabel-config` drops are not compacted.
//! 2. **Garbage.** A block whose sources all lie in another block ([`meridian_tsdb::listing::covered`]:
//!    the input of a compaction whose sources were not marked yet, e.g. the compactor was killed
//!    between the upload and the marks) is marked for deletion. Directories without `meta.json` whose
//!    ULID *and* newest object are older than 48 h (aborted uploads) are deleted — Thanos looks at
//!    the ULID only, which deletes a late upload of an old block while it is under way.
//! 3. **Compaction**, stream by stream (`--compact.concurrency` at a time): the blocks of one
//!    resolution and one set of external labels (without `--deduplication.replica-label`s) are planned
//!    ([`super::plan`]), downloaded, merged ([`super::merge`]), uploaded with `meta.json` last, and only
//!    then their sources get `deletion-mark.json`. Killed at any point, the bucket holds each sample
//!    once for readers: before the upload's `meta.json` the new block does not exist; after it the
//!    sources are covered by it.
//! 4. **Retention** (`--retention.resolution-*`): blocks whose end is older than the retention of
//!    their resolution are marked for deletion.
//! 5. **Deletion**: blocks marked more than `--delete-delay` ago are deleted, `meta.json` first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use meridian_core::labels::Labels;
use meridian_core::relabel::RelabelConfig;
use meridian_core::time::Clock;
use meridian_tsdb::block::{Block, BlockError, BlockMeta};
use meridian_tsdb::listing::{self, BlockEntry, Lineage};
use meridian_tsdb::marks::{Mark, MarkKind, reason};
use meridian_tsdb::objstore::Bucket;
use object_store::ObjectStoreExt as _;
use tokio_util::sync::CancellationToken;

use super::merge::{self, DedupFunc};
use super::metrics::CompactMetrics;
use super::plan::{self, PlanBlock};

type MetaResult = Result<(BlockMeta, usize), listing::MetaError>;

/// Aborted uploads older than this are deleted (Thanos' `PartialUploadThresholdAge`).
pub const PARTIAL_UPLOAD_AGE_MS: i64 = 48 * 3_600_000;

/// How the compactor runs.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// `--data-dir`: blocks are downloaded and built under `<data-dir>/compact`.
    pub data_dir: PathBuf,
    /// `--consistency-delay`, ms.
    pub consistency_delay_ms: i64,
    /// `--delete-delay`, ms.
    pub delete_delay_ms: i64,
    /// `--retention.resolution-raw|5m|1h`, ms (0: forever).
    pub retention_ms: [i64; 3],
    /// `--deduplication.replica-label`.
    pub replica_labels: Vec<String>,
    /// `--deduplication.func`.
    pub dedup_func: DedupFunc,
    /// `--compact.concurrency`.
    pub concurrency: usize,
    /// `--selector.relabel-config`.
    pub selector: Vec<RelabelConfig>,
    /// Target ranges, ms (Thanos' levels).
    pub ranges: Vec<i64>,
    /// `--block-meta-fetch-concurrency`.
    pub meta_fetch_concurrency: usize,
    /// Not `--downsampling.disable`.
    pub downsampling: bool,
    /// `--downsample.concurrency`.
    pub downsample_concurrency: usize,
    /// `--compact.block-max-index-size`: the largest index a compaction may write (with Thanos' 15 %
    /// headroom over the sources' total).
    pub max_index_bytes: u64,
    pub clock: Clock,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            data_dir: PathBuf::from("./data"),
            consistency_delay_ms: 30 * 60_000,
            delete_delay_ms: 48 * 3_600_000,
            retention_ms: [0; 3],
            replica_labels: Vec::new(),
            dedup_func: DedupFunc::OneToOne,
            concurrency: 1,
            selector: Vec::new(),
            ranges: plan::THANOS_RANGES.to_vec(),
            meta_fetch_concurrency: 32,
            downsampling: true,
            max_index_bytes: 64 << 30,
            downsample_concurrency: 1,
            clock: Clock::system(),
        }
    }
}

/// A pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Object storage or the local disk failed: the next pass retries.
    #[error("{0}")]
    Retry(String),
    /// A block cannot be compacted (corrupt, or not a format the compactor writes): the compactor
    /// halts (`meridian_compact_halted` 1) until an operator acts, as Thanos does.
    #[error("halting: {0}")]
    Halt(String),
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub compactions: usize,
    pub downsamples: usize,
    pub marked_for_deletion: usize,
    pub deleted: usize,
    pub partial_deleted: usize,
}

/// A block as the compactor knows it.
#[derive(Debug, Clone)]
struct Known {
    meta: Arc<BlockMeta>,
    labels: Labels,
}

/// See the module documentation.
pub struct Compactor {
    bucket: Bucket,
    opts: CompactOptions,
    metrics: Arc<CompactMetrics>,
    metas: Mutex<BTreeMap<String, Arc<BlockMeta>>>,
    /// Deletion marks' times (s) by block, read once.
    deletion_times: Mutex<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("bucket", &self.bucket.description)
            .finish_non_exhaustive()
    }
}

fn retry(what: &str) -> impl Fn(String) -> CompactError + '_ {
    move |e| CompactError::Retry(format!("{what}: {e}"))
}

impl Compactor {
    pub fn new(bucket: Bucket, opts: CompactOptions, metrics: Arc<CompactMetrics>) -> Compactor {
        Compactor {
            bucket,
            opts,
            metrics,
            metas: Mutex::new(BTreeMap::new()),
            deletion_times: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn metrics(&self) -> &Arc<CompactMetrics> {
        &self.metrics
    }

    /// The bucket's object store (for the lease).
    pub fn bucket_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.bucket.store.clone()
    }

    /// One pass; see the module documentation.
    pub async fn pass(&self, stop: &CancellationToken) -> Result<PassReport, CompactError> {
        let mut report = PassReport::default();
        let now = self.opts.clock.now_ms();
        let entries = listing::list_blocks(self.bucket.store.as_ref())
            .await
            .map_err(|e| retry("listing the bucket")(e.to_string()))?;
        let metas = self.load_metas(&entries).await?;
        report.partial_deleted = self.clean_partial(&entries, now).await?;
        // Blocks readers see: with meta.json, not marked for deletion.
        let live: BTreeMap<&str, &Arc<BlockMeta>> = metas
            .iter()
            .filter(|(u, _)| entries.get(*u).is_some_and(|e| !e.deletion_mark))
            .map(|(u, m)| (u.as_str(), m))
            .collect();
        let lineage: Vec<Lineage<'_>> = live
            .values()
            .map(|m| Lineage {
                ulid: &m.ulid,
                resolution: m.resolution(),
                sources: &m.compaction.sources,
            })
            .collect();
        let covered = listing::covered(&lineage);
        for ulid in &covered {
            self.mark_deleted(ulid, "covered by a compacted block")
                .await?;
            report.marked_for_deletion += 1;
        }
        let groups = self.groups(&live, &covered, now);
        let no_compact: BTreeSet<String> = entries
            .iter()
            .filter(|(_, e)| e.no_compact_mark)
            .map(|(u, _)| u.clone())
            .collect();
        self.metrics.todo_compactions.set(to_i64(
            groups
                .values()
                .filter(|g| !plan::plan(&self.opts.ranges, &no_compact, &plan_blocks(g)).is_empty())
                .count(),
        ));
        let results: Vec<Result<(usize, Vec<Known>), CompactError>> =
            futures::stream::iter(groups.into_iter().map(|(key, blocks)| {
                let no_compact = &no_compact;
                async move { self.compact_group(&key, blocks, no_compact, stop).await }
            }))
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        let mut remaining: Vec<Known> = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok((n, left)) => {
                    report.compactions += n;
                    remaining.extend(left);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if self.opts.downsampling {
            let no_downsample: BTreeSet<String> = entries
                .iter()
                .filter(|(_, e)| e.no_downsample_mark)
                .map(|(u, _)| u.clone())
                .collect();
            report.downsamples = self
                .downsample_all(&mut remaining, &no_downsample, stop)
                .await?;
        }
        report.marked_for_deletion += self.apply_retention(&remaining, now).await?;
        // The clock again: marks made during this pass are younger than its start.
        report.deleted = self.delete_marked(self.opts.clock.now_ms()).await?;
        self.metrics.iterations.inc();
        Ok(report)
    }

    /// Reads the `meta.json` of blocks not seen before; forgets blocks gone from the bucket.
    async fn load_metas(
        &self,
        entries: &BTreeMap<String, BlockEntry>,
    ) -> Result<BTreeMap<String, Arc<BlockMeta>>, CompactError> {
        let known = lock(&self.metas).clone();
        let new: Vec<&String> = entries
            .iter()
            .filter(|(u, e)| e.has_meta && !known.contains_key(*u))
            .map(|(u, _)| u)
            .collect();
        let store = self.bucket.store.as_ref();
        let loaded: Vec<(String, MetaResult)> = futures::stream::iter(
            new.into_iter()
                .map(|u| async move { (u.clone(), listing::fetch_meta(store, u).await) }),
        )
        .buffer_unordered(self.opts.meta_fetch_concurrency.max(1))
        .collect()
        .await;
        let mut next: BTreeMap<String, Arc<BlockMeta>> = known
            .into_iter()
            .filter(|(u, _)| entries.get(u).is_some_and(|e| e.has_meta))
            .collect();
        for (ulid, r) in loaded {
            match r {
                Ok((meta, _)) => {
                    next.insert(ulid, Arc::new(meta));
                }
                Err(listing::MetaError::Missing) => {}
                Err(listing::MetaError::Read(e)) => {
                    return Err(CompactError::Retry(format!("{ulid}/meta.json: {e}")));
                }
                Err(e) => {
                    tracing::warn!(block = %ulid, error = %e, "block left alone: its meta.json is not usable");
                }
            }
        }
        *lock(&self.metas) = next.clone();
        Ok(next)
    }

    /// Deletes aborted uploads (see the module documentation).
    async fn clean_partial(
        &self,
        entries: &BTreeMap<String, BlockEntry>,
        now: i64,
    ) -> Result<usize, CompactError> {
        let mut n = 0;
        for (ulid, e) in entries.iter().filter(|(_, e)| !e.has_meta) {
            let old = |t: i64| now - t > PARTIAL_UPLOAD_AGE_MS;
            if listing::ulid_time_ms(ulid).is_some_and(old) && old(e.newest_ms) {
                listing::delete_block(self.bucket.store.as_ref(), ulid)
                    .await
                    .map_err(|e| retry("deleting an aborted upload")(e.to_string()))?;
                tracing::info!(block = %ulid, "deleted an aborted upload");
                self.metrics.partial_deleted.inc();
                n += 1;
            }
        }
        Ok(n)
    }

    /// The streams to compact: blocks by resolution and external labels without the replica labels.
    fn groups(
        &self,
        live: &BTreeMap<&str, &Arc<BlockMeta>>,
        covered: &BTreeSet<String>,
        now: i64,
    ) -> BTreeMap<String, Vec<Known>> {
        let mut groups: BTreeMap<String, Vec<Known>> = BTreeMap::new();
        for (ulid, meta) in live {
            if covered.contains(*ulid) {
                continue;
            }
            let young = listing::ulid_time_ms(ulid)
                .is_some_and(|t| now - t < self.opts.consistency_delay_ms);
            if young && meta.thanos_source() != "compactor" {
                continue;
            }
            let labels = meta.thanos_labels();
            if !self.opts.selector.is_empty()
                && meridian_core::relabel::process(&labels, &self.opts.selector).is_none()
            {
                continue;
            }
            let stream = labels.without(&self.opts.replica_labels);
            let key = plan::group_key(meta.resolution(), stream.iter().map(|l| (l.name, l.value)));
            groups.entry(key).or_default().push(Known {
                meta: Arc::clone(meta),
                labels,
            });
        }
        groups
    }

    /// Compacts one stream until its plan is empty; returns the compactions made and the stream's
    /// blocks afterwards.
    async fn compact_group(
        &self,
        key: &str,
        mut blocks: Vec<Known>,
        no_compact: &BTreeSet<String>,
        stop: &CancellationToken,
    ) -> Result<(usize, Vec<Known>), CompactError> {
        let mut n = 0;
        let mut no_compact = no_compact.clone();
        while !stop.is_cancelled() {
            let picked = plan::plan(&self.opts.ranges, &no_compact, &plan_blocks(&blocks));
            if picked.is_empty() {
                break;
            }
            if let Some(biggest) = self.index_too_big(&picked, &blocks).await? {
                self.mark(&Mark::new(
                    MarkKind::NoCompact,
                    &biggest,
                    self.opts.clock.now_ms() / 1000,
                    &format!(
                        "the compacted block's index could exceed {} bytes (--compact.block-max-index-size) with this block",
                        self.opts.max_index_bytes
                    ),
                    reason::INDEX_SIZE_EXCEEDING,
                ))
                .await?;
                no_compact.insert(biggest);
                continue;
            }
            let ulids: BTreeSet<&str> = picked.iter().map(|p| p.ulid.as_str()).collect();
            let (inputs, rest): (Vec<Known>, Vec<Known>) = blocks
                .into_iter()
                .partition(|k| ulids.contains(k.meta.ulid.as_str()));
            blocks = rest;
            if inputs.iter().any(|k| k.meta.resolution() != 0) && overlapping(&inputs) {
                // Thanos cannot average overlapping aggregates either: the blocks stay as they are.
                for k in &inputs {
                    self.mark(&Mark::new(
                        MarkKind::NoCompact,
                        &k.meta.ulid,
                        self.opts.clock.now_ms() / 1000,
                        "overlapping downsampled blocks",
                        reason::DOWNSAMPLE_VERTICAL_COMPACTION,
                    ))
                    .await?;
                    no_compact.insert(k.meta.ulid.to_string());
                }
                blocks.extend(inputs);
                continue;
            }
            match self.compact(key, &inputs).await {
                Ok(Some(out)) => blocks.push(out),
                Ok(None) => {}
                Err(e) => {
                    self.metrics.compaction_failures.inc();
                    return Err(e);
                }
            }
            self.metrics.compactions.inc();
            n += 1;
        }
        Ok((n, blocks))
    }

    /// The output-size cap (Thanos' `largeTotalIndexSizeFilter`, `pkg/compact/planner.go` at
    /// thanos-io/thanos `000f8c9`): the sources' index sizes are added up in plan order; once the
    /// total reaches 85 % of `--compact.block-max-index-size`, the biggest source so far is returned,
    /// to be marked `no-compact` (`index-size-exceeding`, which Thanos honours too) and left out of
    /// the next plan. So no compaction writes an index past the cap (Prometheus' index format fails
    /// at 64 GiB, and a compactor retrying such a compaction would make no progress), and the rest of
    /// the stream goes on compacting. Sizes come from `thanos.files`, else from the object's size.
    async fn index_too_big(
        &self,
        picked: &[plan::PlanBlock],
        blocks: &[Known],
    ) -> Result<Option<String>, CompactError> {
        let limit = self.opts.max_index_bytes as f64 * 0.85;
        let (mut total, mut biggest) = (0u64, None::<(u64, &str)>);
        for p in picked {
            let listed = blocks
                .iter()
                .find(|k| k.meta.ulid == p.ulid)
                .and_then(|k| k.meta.thanos_file_size("index"));
            let size = match listed {
                Some(s) => s,
                None => {
                    let path = meridian_tsdb::objstore::block_path(
                        &p.ulid,
                        meridian_tsdb::objstore::BlockObject::Index,
                    );
                    self.bucket
                        .store
                        .head(&path)
                        .await
                        .map_err(|e| retry(&format!("the size of {path}"))(e.to_string()))?
                        .size
                }
            };
            if biggest.is_none_or(|(b, _)| size > b) {
                biggest = Some((size, &p.ulid));
            }
            total = total.saturating_add(size);
            if total as f64 >= limit {
                return Ok(biggest.map(|(_, u)| u.to_owned()));
            }
        }
        Ok(None)
    }

    /// Compacts `inputs` into one block, uploads it and marks the inputs for deletion. `None`: the
    /// result held no samples (nothing uploaded).
    async fn compact(&self, key: &str, inputs: &[Known]) -> Result<Option<Known>, CompactError> {
        let dir = self
            .opts
            .data_dir
            .join("compact")
            .join(key.replace(['@', '/'], "-"));
        let local = |e: std::io::Error| CompactError::Retry(format!("{}: {e}", dir.display()));
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&dir).await.map_err(local)?;
        }
        tokio::fs::create_dir_all(&dir).await.map_err(local)?;
        for k in inputs {
            listing::download_block(self.bucket.store.as_ref(), &k.meta.ulid, &dir)
                .await
                .map_err(|e| retry(&format!("downloading {}", k.meta.ulid))(e.to_string()))?;
        }
        let stream_labels = inputs
            .first()
            .map(|k| k.labels.without(&self.opts.replica_labels))
            .unwrap_or_else(Labels::empty);
        let resolution = inputs.first().map_or(0, |k| k.meta.resolution());
        let ulid =
            meridian_tsdb::block::new_ulid(u64::try_from(self.opts.clock.now_ms()).unwrap_or(0));
        let job = merge::MergeJob {
            dir: dir.clone(),
            ulid: ulid.clone(),
            inputs: inputs
                .iter()
                .map(|k| (k.meta.ulid.clone(), k.labels.clone()))
                .collect(),
            func: self.opts.dedup_func,
            stream_labels: stream_labels.clone(),
            resolution,
        };
        let meta = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| CompactError::Retry(format!("merging: {e}")))?
            .map_err(|e| block_error(format!("compacting stream {key}"), e))?;
        let out = if meta.stats.num_samples == 0 {
            None
        } else {
            let uploaded = meridian_tsdb::shipper::upload_block_dir(
                &self.bucket,
                &dir.join(&ulid),
                &stream_labels,
                "compactor",
            )
            .await
            .map_err(|e| retry(&format!("uploading {ulid}"))(e.to_string()))?;
            Some(uploaded)
        };
        // Only now: the sources are covered by the new block in the bucket.
        for k in inputs {
            self.mark_deleted(&k.meta.ulid, &format!("source of compacted block {ulid}"))
                .await?;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tracing::info!(stream = %key, block = %ulid, inputs = inputs.len(), samples = meta.stats.num_samples, "compacted");
        Ok(out.map(|m| {
            let m = Arc::new(m);
            lock(&self.metas).insert(ulid, Arc::clone(&m));
            Known {
                meta: m,
                labels: stream_labels,
            }
        }))
    }

    /// Downsamples what Thanos would (raw blocks spanning 40 h to 5 m, 5 m blocks spanning 10 d to
    /// 1 h, unless every source already has a block at the target resolution or the block is marked
    /// `no-downsample`); adds the new blocks to `blocks`. Returns how many were made.
    async fn downsample_all(
        &self,
        blocks: &mut Vec<Known>,
        no_downsample: &BTreeSet<String>,
        stop: &CancellationToken,
    ) -> Result<usize, CompactError> {
        use super::downsample::{RANGE_FOR_1H, RANGE_FOR_5M, RES_1H, RES_5M};
        let mut made = 0;
        for (from, to, min_range) in [(0, RES_5M, RANGE_FOR_5M), (RES_5M, RES_1H, RANGE_FOR_1H)] {
            let done: BTreeSet<String> = blocks
                .iter()
                .filter(|k| k.meta.resolution() == to)
                .flat_map(|k| k.meta.compaction.sources.iter().cloned())
                .collect();
            let todo: Vec<Known> = blocks
                .iter()
                .filter(|k| {
                    let m = &k.meta;
                    m.resolution() == from
                        && m.max_time - m.min_time >= min_range
                        && !no_downsample.contains(&m.ulid)
                        && !m.compaction.sources.iter().all(|s| done.contains(s))
                })
                .cloned()
                .collect();
            self.metrics.todo_downsamples.set(to_i64(todo.len()));
            let results: Vec<Result<Known, CompactError>> = futures::stream::iter(
                todo.into_iter()
                    .map(|k| async move { self.downsample_one(&k, to).await }),
            )
            .buffer_unordered(self.opts.downsample_concurrency.max(1))
            .collect()
            .await;
            for r in results {
                blocks.push(r?);
                made += 1;
                self.metrics.downsamples.inc();
            }
            if stop.is_cancelled() {
                break;
            }
        }
        self.metrics.todo_downsamples.set(0);
        Ok(made)
    }

    /// Downloads block `k`, writes its downsampled copy at `resolution` and uploads it.
    async fn downsample_one(&self, k: &Known, resolution: i64) -> Result<Known, CompactError> {
        let dir = self
            .opts
            .data_dir
            .join("downsample")
            .join(format!("{}-{resolution}", k.meta.ulid));
        let local = |e: std::io::Error| CompactError::Retry(format!("{}: {e}", dir.display()));
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&dir).await.map_err(local)?;
        }
        tokio::fs::create_dir_all(&dir).await.map_err(local)?;
        listing::download_block(self.bucket.store.as_ref(), &k.meta.ulid, &dir)
            .await
            .map_err(|e| retry(&format!("downloading {}", k.meta.ulid))(e.to_string()))?;
        let ulid =
            meridian_tsdb::block::new_ulid(u64::try_from(self.opts.clock.now_ms()).unwrap_or(0));
        let (src, out, new, labels) = (
            dir.join(&k.meta.ulid),
            dir.clone(),
            ulid.clone(),
            k.labels.clone(),
        );
        let meta = tokio::task::spawn_blocking(move || {
            let b = Block::open(&src)?;
            super::downsample::downsample_block(&b, &out, &new, resolution, &labels)
        })
        .await
        .map_err(|e| CompactError::Retry(format!("downsampling: {e}")))?
        .map_err(|e| block_error(format!("downsampling {}", k.meta.ulid), e))?;
        meridian_tsdb::shipper::upload_block_dir(
            &self.bucket,
            &dir.join(&ulid),
            &k.labels,
            "compactor",
        )
        .await
        .map_err(|e| retry(&format!("uploading {ulid}"))(e.to_string()))?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tracing::info!(block = %k.meta.ulid, downsampled = %ulid, resolution, "downsampled");
        let meta = Arc::new(meta);
        lock(&self.metas).insert(ulid, Arc::clone(&meta));
        Ok(Known {
            meta,
            labels: k.labels.clone(),
        })
    }

    async fn mark(&self, mark: &Mark) -> Result<(), CompactError> {
        listing::write_mark(self.bucket.store.as_ref(), mark)
            .await
            .map_err(|e| retry("writing a mark")(e.to_string()))?;
        self.metrics.marked(mark);
        Ok(())
    }

    async fn mark_deleted(&self, ulid: &str, details: &str) -> Result<(), CompactError> {
        let now_s = self.opts.clock.now_ms() / 1000;
        self.mark(&Mark::new(MarkKind::Deletion, ulid, now_s, details, ""))
            .await?;
        lock(&self.deletion_times).insert(ulid.to_owned(), now_s);
        Ok(())
    }

    /// Marks blocks past their resolution's retention; returns how many.
    async fn apply_retention(&self, blocks: &[Known], now: i64) -> Result<usize, CompactError> {
        let mut n = 0;
        for k in blocks {
            let keep = match k.meta.resolution() {
                0 => self.opts.retention_ms[0],
                300_000 => self.opts.retention_ms[1],
                3_600_000 => self.opts.retention_ms[2],
                _ => 0,
            };
            if keep > 0 && now - k.meta.max_time > keep {
                self.mark_deleted(&k.meta.ulid, "outside retention").await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes blocks marked for deletion more than `--delete-delay` ago.
    async fn delete_marked(&self, now: i64) -> Result<usize, CompactError> {
        let store = self.bucket.store.as_ref();
        let entries = listing::list_blocks(store)
            .await
            .map_err(|e| retry("listing the bucket")(e.to_string()))?;
        let mut todo = 0;
        let mut deleted = 0;
        for (ulid, _) in entries.iter().filter(|(_, e)| e.deletion_mark) {
            let known = lock(&self.deletion_times).get(ulid).copied();
            let at = match known {
                Some(t) => t,
                None => match listing::read_mark(store, ulid, MarkKind::Deletion).await {
                    Ok(Some(m)) => {
                        lock(&self.deletion_times).insert(ulid.clone(), m.time);
                        m.time
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(block = %ulid, error = %e, "deletion mark unreadable; the block is kept");
                        continue;
                    }
                },
            };
            if now - at.saturating_mul(1000) < self.opts.delete_delay_ms {
                todo += 1;
                continue;
            }
            listing::delete_block(store, ulid)
                .await
                .map_err(|e| retry(&format!("deleting {ulid}"))(e.to_string()))?;
            lock(&self.deletion_times).remove(ulid);
            lock(&self.metas).remove(ulid);
            self.metrics.blocks_cleaned.inc();
            deleted += 1;
        }
        self.metrics.todo_deletions.set(to_i64(todo));
        Ok(deleted)
    }
}

fn plan_blocks(blocks: &[Known]) -> Vec<PlanBlock> {
    blocks
        .iter()
        .map(|k| PlanBlock {
            ulid: k.meta.ulid.clone(),
            min_time: k.meta.min_time,
            max_time: k.meta.max_time,
            num_series: k.meta.stats.num_series,
            num_tombstones: k.meta.stats.num_tombstones,
            failed: k
                .meta
                .compaction
                .extra
                .get("failed")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
        .collect()
}

fn overlapping(blocks: &[Known]) -> bool {
    let mut r: Vec<(i64, i64)> = blocks
        .iter()
        .map(|k| (k.meta.min_time, k.meta.max_time))
        .collect();
    r.sort_unstable();
    r.windows(2).any(|w| w[1].0 < w[0].1)
}

/// A block that cannot be read or written: the local disk (full, unwritable) is retried at the
/// next pass; a block that is not what it should be halts the compactor.
fn block_error(what: String, e: BlockError) -> CompactError {
    match e {
        BlockError::Io { .. } => CompactError::Retry(format!("{what}: {e}")),
        BlockError::Invalid { .. } => CompactError::Halt(format!("{what}: {e}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
