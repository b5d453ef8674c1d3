//! The shipper: uploads every completed local block to object storage, as the Thanos sidecar does, so
//! the bucket holds the long-term history and local retention can delete what is safe there.
//!
//! For each local block not yet uploaded (oldest first):
//! 1. if the bucket already has `<ULID>/meta.json`, the block is there (uploaded before the state file
//!    was written): it is recorded, never uploaded twice;
//! 2. `chunks/*`, then `index` are uploaded (large files in parts, one part in memory at a time) and
//!    their sizes in the bucket are checked against the local files;
//! 3. **`meta.json` last**, with the `thanos` section (`version`, `labels` = external labels,
//!    `downsample.resolution: 0`, `source`, `segment_files`, `files` with sizes). A block without
//!    `meta.json` in the bucket is an unfinished upload: readers ignore it, and the next cycle (or the
//!    next start, after a crash) uploads it again from the start;
//! 4. the ULID is added to the state file `thanos.shipper.json` (Thanos' name and shape), written
//!    atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! The first failure ends the cycle (uploads stay in time order); the next attempt comes after an
//! exponential backoff. Nothing is uploaded while the external labels are empty: they are what keeps
//! clusters and replicas apart in a shared bucket. Local retention deletes only blocks this shipper
//! confirms uploaded ([`UploadStatus`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::{
    Attribute, Attributes, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::block::BlockMeta;
use crate::db::{Db, UploadStatus};
use crate::objstore::{BlockObject, Bucket, block_path};
use meridian_core::labels::Labels;

/// The state file, in the TSDB directory (the name Thanos' sidecar uses).
pub const STATE_FILE: &str = "thanos.shipper.json";
const STATE_VERSION: u32 = 1;
/// Thanos' meta.json `thanos.version`.
const THANOS_META_VERSION: u32 = 1;
/// Parts of one file uploaded concurrently.
const PART_CONCURRENCY: usize = 2;

/// An upload cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error(
        "not uploading: global.external_labels is empty (they keep clusters and replicas apart in the bucket)"
    )]
    NoExternalLabels,
    #[error("block {ulid}: {path}: {source}")]
    Local {
        ulid: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("block {ulid}: {object}: {source}")]
    Bucket {
        ulid: String,
        object: String,
        source: object_store::Error,
    },
    #[error("block {ulid}: {object}: uploaded {got} bytes but the local file has {want}")]
    SizeMismatch {
        ulid: String,
        object: String,
        got: u64,
        want: u64,
    },
    #[error("{path}: state file: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("upload abandoned (shutdown)")]
    Abandoned,
}

/// Shipper self-metrics.
#[derive(Debug, Clone, Default)]
pub struct ShipperMetrics {
    pub uploads: Counter,
    pub upload_failures: Counter,
    pub uploaded_bytes: Counter,
    pub last_success_timestamp: Gauge,
    pub pending_blocks: Gauge,
}

impl ShipperMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_shipper_uploads",
            "Blocks uploaded to object storage",
            self.uploads.clone(),
        );
        r.register(
            "meridian_shipper_upload_failures",
            "Upload cycles that ended with an error",
            self.upload_failures.clone(),
        );
        r.register(
            "meridian_shipper_uploaded_bytes",
            "Bytes of block files uploaded",
            self.uploaded_bytes.clone(),
        );
        r.register(
            "meridian_shipper_last_success_timestamp_seconds",
            "When a block upload last succeeded (unix seconds)",
            self.last_success_timestamp.clone(),
        );
        r.register(
            "meridian_shipper_pending_blocks",
            "Local blocks not yet in the bucket",
            self.pending_blocks.clone(),
        );
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    uploaded: Vec<String>,
}

/// Which blocks are in the bucket; shared with the TSDB's retention.
#[derive(Debug, Default)]
pub struct Uploaded(Mutex<BTreeSet<String>>);

impl Uploaded {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl UploadStatus for Uploaded {
    fn is_uploaded(&self, ulid: &str) -> bool {
        self.lock().contains(ulid)
    }
}

/// Where the shipper finds the blocks to upload: the edge's TSDB, or a Prometheus' data directory
/// beside a sidecar.
pub trait LocalBlocks: Send + Sync + std::fmt::Debug + 'static {
    /// The directory holding the blocks (and the state file).
    fn dir(&self) -> &Path;
    /// The complete blocks to upload, in any order. May read the file system: the shipper calls
    /// it off the async workers.
    fn blocks(&self) -> Vec<BlockMeta>;
}

impl LocalBlocks for Db {
    fn dir(&self) -> &Path {
        Db::dir(self)
    }

    fn blocks(&self) -> Vec<BlockMeta> {
        Db::blocks(self)
    }
}

/// How the shipper runs.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// Time between cycles (Thanos' sidecar: 30 s).
    pub interval: Duration,
    /// First retry delay after a failed cycle; doubled per failure up to `interval`·10.
    pub min_backoff: Duration,
    /// `thanos.source` in meta.json.
    pub source: String,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            interval: Duration::from_secs(30),
            min_backoff: Duration::from_secs(2),
            source: "sidecar".into(),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Shipper {
    bucket: Bucket,
    local: Arc<dyn LocalBlocks>,
    /// A sidecar's follow its Prometheus' config; uploads take them as they are then.
    external_labels: Mutex<Labels>,
    state_path: PathBuf,
    uploaded: Arc<Uploaded>,
    opts: ShipperOptions,
    pub metrics: ShipperMetrics,
    /// One cycle at a time.
    cycle: tokio::sync::Mutex<()>,
    /// Starts the next cycle now (new blocks were cut).
    wake: Arc<tokio::sync::Notify>,
}

/// What a cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub uploaded: Vec<String>,
    /// Found complete in the bucket already.
    pub already_there: Vec<String>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl Shipper {
    /// Reads the state file and registers the upload status with the TSDB's retention.
    pub fn new(
        bucket: Bucket,
        db: Arc<Db>,
        external_labels: Labels,
        opts: ShipperOptions,
    ) -> Result<Shipper, ShipperError> {
        let s = Shipper::over(bucket, db.clone(), external_labels, opts)?;
        db.set_upload_status(s.uploaded.clone());
        Ok(s)
    }

    /// A shipper of the blocks `local` finds; reads the state file there (Thanos' sidecar writes
    /// the same, so a sidecar taking over from one does not upload again).
    pub fn over(
        bucket: Bucket,
        local: Arc<dyn LocalBlocks>,
        external_labels: Labels,
        opts: ShipperOptions,
    ) -> Result<Shipper, ShipperError> {
        let state_path = local.dir().join(STATE_FILE);
        let uploaded = Arc::new(Uploaded::default());
        match std::fs::read(&state_path) {
            Ok(raw) => {
                let st: StateFile =
                    serde_json::from_slice(&raw).map_err(|e| ShipperError::State {
                        path: state_path.clone(),
                        reason: e.to_string(),
                    })?;
                if st.version != STATE_VERSION {
                    return Err(ShipperError::State {
                        path: state_path,
                        reason: format!("version {} is not {STATE_VERSION}", st.version),
                    });
                }
                uploaded.lock().extend(st.uploaded);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ShipperError::State {
                    path: state_path,
                    reason: e.to_string(),
                });
            }
        }
        if external_labels.is_empty() {
            tracing::warn!("{}", ShipperError::NoExternalLabels);
        }
        for w in &bucket.warnings {
            tracing::warn!(bucket = %bucket.description, "objstore config: {w}");
        }
        Ok(Shipper {
            bucket,
            local,
            external_labels: Mutex::new(external_labels),
            state_path,
            uploaded,
            opts,
            metrics: ShipperMetrics::default(),
            cycle: tokio::sync::Mutex::new(()),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Sets the external labels the next uploads carry.
    pub fn set_external_labels(&self, labels: Labels) {
        *self
            .external_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = labels;
    }

    /// A handle that starts the next cycle early (after new blocks were cut).
    pub fn waker(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Whether a block is recorded as uploaded.
    pub fn is_uploaded(&self, ulid: &str) -> bool {
        self.uploaded.is_uploaded(ulid)
    }

    /// One cycle: uploads every local block not yet in the bucket, oldest first; stops at the first
    /// failure. `abandon` interrupts it between parts (a running multipart upload is aborted).
    pub async fn sync(&self, abandon: &CancellationToken) -> Result<SyncReport, ShipperError> {
        let _one = self.cycle.lock().await;
        let mut report = SyncReport::default();
        let local = self.local.clone();
        let mut blocks = tokio::task::spawn_blocking(move || local.blocks())
            .await
            .map_err(|e| ShipperError::State {
                path: self.state_path.clone(),
                reason: format!("listing blocks: {e}"),
            })?;
        blocks.sort_by_key(|m| (m.min_time, m.max_time));
        let pending: Vec<&BlockMeta> = blocks
            .iter()
            .filter(|m| !self.uploaded.is_uploaded(&m.ulid))
            .collect();
        self.metrics.pending_blocks.set(pending.len() as i64);
        if pending.is_empty() {
            return Ok(report);
        }
        let labels = self
            .external_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if labels.is_empty() {
            return Err(ShipperError::NoExternalLabels);
        }
        for meta in pending {
            if abandon.is_cancelled() {
                return Err(ShipperError::Abandoned);
            }
            let ulid = meta.ulid.clone();
            let meta_path = block_path(&ulid, BlockObject::Meta);
            match or_abandon(abandon, self.bucket.store.head(&meta_path)).await? {
                Ok(_) => {
                    tracing::info!(block = %ulid, "block already in the bucket; not uploaded again");
                    report.already_there.push(ulid.clone());
                }
                Err(object_store::Error::NotFound { .. }) => {
                    self.uploader(&labels)
                        .upload_block(meta, &self.local.dir().join(&ulid), abandon)
                        .await?;
                    self.metrics.uploads.inc();
                    self.metrics.last_success_timestamp.set(now_secs());
                    tracing::info!(block = %ulid, bucket = %self.bucket.description, "block uploaded");
                    report.uploaded.push(ulid.clone());
                }
                Err(source) => {
                    return Err(ShipperError::Bucket {
                        ulid,
                        object: meta_path.to_string(),
                        source,
                    });
                }
            }
            self.uploaded.lock().insert(ulid);
            self.write_state(&blocks).await?;
            self.metrics.pending_blocks.dec();
        }
        Ok(report)
    }

    fn uploader<'a>(&'a self, labels: &'a Labels) -> Uploader<'a> {
        Uploader {
            bucket: &self.bucket,
            labels,
            source: &self.opts.source,
            uploaded_bytes: &self.metrics.uploaded_bytes,
        }
    }

    /// Runs cycles every `interval` (sooner after a failure, with backoff) until `stop`; then one last
    /// cycle, which `abandon` can cut short.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, abandon: CancellationToken) {
        let mut delay = Duration::ZERO;
        let mut backoff = self.opts.min_backoff;
        let max_backoff = self.opts.interval * 10;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
                () = self.wake.notified() => {}
            }
            match self.sync(&abandon).await {
                Ok(_) => {
                    backoff = self.opts.min_backoff;
                    delay = self.opts.interval;
                }
                Err(e) => {
                    self.metrics.upload_failures.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "block upload failed");
                    delay = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
        match self.sync(&abandon).await {
            Ok(r) if !r.uploaded.is_empty() => {
                tracing::info!(blocks = r.uploaded.len(), "uploaded at shutdown");
            }
            Ok(_) => {}
            Err(ShipperError::Abandoned) => {
                tracing::warn!("shutdown: upload abandoned; it is redone at the next start");
            }
            Err(e) => {
                self.metrics.upload_failures.inc();
                tracing::warn!(error = %e, "shutdown: last upload failed; it is redone at the next start");
            }
        }
    }

    /// Writes the state file atomically: the uploaded blocks that are still local.
    async fn write_state(&self, local: &[BlockMeta]) -> Result<(), ShipperError> {
        let uploaded: Vec<String> = {
            let set = self.uploaded.lock();
            local
                .iter()
                .filter(|m| set.contains(&m.ulid))
                .map(|m| m.ulid.clone())
                .collect()
        };
        let body = serde_json::to_vec_pretty(&StateFile {
            version: STATE_VERSION,
            uploaded,
        })
        .map_err(|e| ShipperError::State {
            path: self.state_path.clone(),
            reason: e.to_string(),
        })?;
        let path = self.state_path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &body))
            .await
            .map_err(|e| ShipperError::State {
                path: self.state_path.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| ShipperError::State {
                path: self.state_path.clone(),
                reason: e.to_string(),
            })
    }
}

/// Uploads block directories into a bucket with Thanos' meta.json section.
struct Uploader<'a> {
    bucket: &'a Bucket,
    labels: &'a Labels,
    source: &'a str,
    uploaded_bytes: &'a Counter,
}

impl Uploader<'_> {
    /// Uploads block directory `dir` (described by `meta`): chunks, index, sizes checked, meta.json last.
    async fn upload_block(
        &self,
        meta: &BlockMeta,
        dir: &Path,
        abandon: &CancellationToken,
    ) -> Result<(), ShipperError> {
        let ulid = &meta.ulid;
        let local = |path: &Path| {
            let (ulid, path) = (ulid.clone(), path.to_owned());
            move |source| ShipperError::Local { ulid, path, source }
        };
        let chunks_dir = dir.join("chunks");
        let mut segments = Vec::new();
        let mut rd = tokio::fs::read_dir(&chunks_dir)
            .await
            .map_err(local(&chunks_dir))?;
        while let Some(e) = rd.next_entry().await.map_err(local(&chunks_dir))? {
            segments.push(e.file_name().to_string_lossy().into_owned());
        }
        segments.sort();
        let mut files: Vec<(String, u64)> = Vec::new();
        for seg in &segments {
            let size = self
                .upload_file(
                    ulid,
                    &chunks_dir.join(seg),
                    BlockObject::Chunks(seg),
                    abandon,
                )
                .await?;
            files.push((format!("chunks/{seg}"), size));
        }
        let size = self
            .upload_file(ulid, &dir.join("index"), BlockObject::Index, abandon)
            .await?;
        files.push(("index".into(), size));
        // Everything meta.json will announce is in the bucket, whole.
        for (rel, want) in &files {
            let object = match rel.strip_prefix("chunks/") {
                Some(seg) => block_path(ulid, BlockObject::Chunks(seg)),
                None => block_path(ulid, BlockObject::Index),
            };
            let got = or_abandon(abandon, self.bucket.store.head(&object))
                .await?
                .map_err(|source| ShipperError::Bucket {
                    ulid: ulid.clone(),
                    object: object.to_string(),
                    source,
                })?
                .size;
            if got != *want {
                return Err(ShipperError::SizeMismatch {
                    ulid: ulid.clone(),
                    object: object.to_string(),
                    got,
                    want: *want,
                });
            }
        }
        if abandon.is_cancelled() {
            return Err(ShipperError::Abandoned);
        }
        let body = thanos_meta(meta, self.labels, self.source, &segments, &files).map_err(|e| {
            ShipperError::Local {
                ulid: ulid.clone(),
                path: dir.join("meta.json"),
                source: std::io::Error::other(e),
            }
        })?;
        let object = block_path(ulid, BlockObject::Meta);
        or_abandon(
            abandon,
            self.bucket
                .store
                .put_opts(&object, PutPayload::from(body), self.put_options()),
        )
        .await?
        .map_err(|source| ShipperError::Bucket {
            ulid: ulid.clone(),
            object: object.to_string(),
            source,
        })?;
        Ok(())
    }

    fn attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in &self.bucket.user_metadata {
            a.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
        }
        a
    }

    fn put_options(&self) -> PutOptions {
        PutOptions {
            attributes: self.attributes(),
            ..Default::default()
        }
    }

    /// Uploads one file; returns its size.
    async fn upload_file(
        &self,
        ulid: &str,
        path: &Path,
        object: BlockObject<'_>,
        abandon: &CancellationToken,
    ) -> Result<u64, ShipperError> {
        let local = |source| ShipperError::Local {
            ulid: ulid.to_owned(),
            path: path.to_owned(),
            source,
        };
        let location = block_path(ulid, object);
        let remote = |source| ShipperError::Bucket {
            ulid: ulid.to_owned(),
            object: location.to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let size = file.metadata().await.map_err(local)?.len();
        if size <= self.bucket.part_size || self.bucket.disable_multipart {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut buf).await.map_err(local)?;
            let n = buf.len() as u64;
            or_abandon(
                abandon,
                self.bucket
                    .store
                    .put_opts(&location, PutPayload::from(buf), self.put_options()),
            )
            .await?
            .map_err(remote)?;
            self.uploaded_bytes.inc_by(n);
            return Ok(n);
        }
        let part = usize::try_from(self.bucket.part_size).unwrap_or(usize::MAX);
        let upload = or_abandon(
            abandon,
            self.bucket.store.put_multipart_opts(
                &location,
                PutMultipartOptions {
                    attributes: self.attributes(),
                    ..Default::default()
                },
            ),
        )
        .await?
        .map_err(remote)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        let mut total = 0u64;
        let result: Result<(), ShipperError> = async {
            loop {
                if abandon.is_cancelled() {
                    return Err(ShipperError::Abandoned);
                }
                w.wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(remote)?;
                let mut buf = Vec::with_capacity(part);
                let n = (&mut file)
                    .take(part as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(local)?;
                if n == 0 {
                    return Ok(());
                }
                total += n as u64;
                w.put(Bytes::from(buf));
            }
        }
        .await;
        match result {
            Ok(()) => {
                or_abandon(abandon, w.finish()).await?.map_err(remote)?;
                self.uploaded_bytes.inc_by(total);
                Ok(total)
            }
            Err(e) => {
                // Best effort, briefly: the store may be the reason we are here.
                match tokio::time::timeout(Duration::from_secs(5), w.abort()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(a)) => {
                        tracing::warn!(object = %location, error = %a, "could not abort a multipart upload");
                    }
                    Err(_) => {
                        tracing::warn!(object = %location, "aborting a multipart upload timed out");
                    }
                }
                Err(e)
            }
        }
    }
}

/// Uploads one block directory — ours, Prometheus' or promtool's — as the shipper does (chunks, index,
/// sizes checked, then `meta.json` with the `thanos` section: `external_labels`, `source`, files), and
/// returns its meta. For backfilling a bucket with blocks made elsewhere, and for tests.
pub async fn upload_block_dir(
    bucket: &Bucket,
    dir: &Path,
    external_labels: &Labels,
    source: &str,
) -> Result<BlockMeta, ShipperError> {
    let meta_path = dir.join("meta.json");
    let local = |source: std::io::Error| ShipperError::Local {
        ulid: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: meta_path.clone(),
        source,
    };
    let raw = tokio::fs::read(&meta_path).await.map_err(local)?;
    let meta: BlockMeta =
        serde_json::from_slice(&raw).map_err(|e| local(std::io::Error::other(e)))?;
    let counter = Counter::default();
    Uploader {
        bucket,
        labels: external_labels,
        source,
        uploaded_bytes: &counter,
    }
    .upload_block(&meta, dir, &CancellationToken::new())
    .await?;
    Ok(meta)
}

/// Awaits `fut` unless `abandon` fires first (the request in flight is dropped).
async fn or_abandon<T>(
    abandon: &CancellationToken,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ShipperError> {
    tokio::select! {
        biased;
        () = abandon.cancelled() => Err(ShipperError::Abandoned),
        r = fut => Ok(r),
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The block's meta.json with Thanos' section.
fn thanos_meta(
    meta: &BlockMeta,
    external_labels: &Labels,
    source: &str,
    segments: &[String],
    files: &[(String, u64)],
) -> serde_json::Result<Vec<u8>> {
    let labels: BTreeMap<&str, &str> = external_labels.iter().map(|l| (l.name, l.value)).collect();
    let mut file_list: Vec<serde_json::Value> = files
        .iter()
        .map(|(rel, size)| serde_json::json!({"rel_path": rel, "size_bytes": size}))
        .collect();
    file_list.push(serde_json::json!({"rel_path": "meta.json"}));
    let mut m = meta.clone();
    // A block made by the compactor knows its resolution; the others are raw.
    let resolution = meta
        .extra
        .get("thanos")
        .and_then(|t| t.get("downsample"))
        .and_then(|d| d.get("resolution"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    m.extra.insert(
        "thanos".into(),
        serde_json::json!({
            "version": THANOS_META_VERSION,
            "labels": labels,
            "downsample": {"resolution": resolution},
            "source": source,
            "segment_files": segments,
            "files": file_list,
        }),
    );
    serde_json::to_vec_pretty(&m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::DbOptions;

    const HOUR: i64 = 3_600_000;

    fn bucket(dir: &Path) -> Bucket {
        Bucket::parse(
            &format!(
                "type: FILESYSTEM\nconfig:\n  directory: {}\n",
                dir.display()
            ),
            "test",
        )
        .unwrap()
    }

    /// A TSDB with two finished 2h blocks.
    fn db(dir: &Path) -> Arc<Db> {
        let db = Db::open(
            dir,
            DbOptions {
                retention_time: Some(HOUR),
                ..Default::default()
            },
        )
        .unwrap();
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut app = db.appender();
        for i in 0..(7 * 60) {
            app.add(&l, i * 60_000, i as f64).unwrap();
        }
        app.commit().unwrap();
        db.compact().unwrap();
        assert_eq!(db.blocks().len(), 2);
        Arc::new(db)
    }

    #[tokio::test]
    async fn uploads_once_meta_last_and_gates_retention() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db(&tmp.path().join("data"));
        let ext = Labels::from_pairs([("cluster", "a"), ("replica", "0")]);
        let b = bucket(&tmp.path().join("bucket"));
        // Retention keeps blocks the shipper has not confirmed.
        let s = Shipper::new(
            b.clone(),
            db.clone(),
            ext.clone(),
            ShipperOptions::default(),
        )
        .unwrap();
        assert!(db.apply_retention().unwrap().is_empty());
        let never = CancellationToken::new();
        let r = s.sync(&never).await.unwrap();
        assert_eq!(r.uploaded.len(), 2);
        for m in db.blocks() {
            let raw =
                std::fs::read(tmp.path().join("bucket").join(&m.ulid).join("meta.json")).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(v["thanos"]["labels"]["cluster"], "a");
            assert_eq!(v["thanos"]["downsample"]["resolution"], 0);
            assert_eq!(v["thanos"]["source"], "sidecar");
            assert_eq!(v["thanos"]["files"][0]["rel_path"], "chunks/000001");
            let idx =
                std::fs::metadata(tmp.path().join("data").join(&m.ulid).join("index")).unwrap();
            assert_eq!(v["thanos"]["files"][1]["size_bytes"], idx.len());
            assert_eq!(v["ulid"], m.ulid.as_str());
        }
        assert_eq!(s.metrics.uploads.get(), 2);
        assert_eq!(s.metrics.pending_blocks.get(), 0);
        // Nothing twice; a fresh shipper reads the state file.
        assert_eq!(s.sync(&never).await.unwrap(), SyncReport::default());
        drop(s);
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(tmp.path().join("data").join(STATE_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(state["version"], 1);
        assert_eq!(state["uploaded"].as_array().unwrap().len(), 2);
        // Without the state file, the bucket's meta.json prevents a second upload.
        std::fs::remove_file(tmp.path().join("data").join(STATE_FILE)).unwrap();
        let s = Shipper::new(b, db.clone(), ext, ShipperOptions::default()).unwrap();
        let r = s.sync(&never).await.unwrap();
        assert_eq!((r.uploaded.len(), r.already_there.len()), (0, 2));
        // Now retention may delete them: the older one, which ends more than the retention (1 h) before
        // the newest block's end (the newest block is never deleted by time).
        assert_eq!(db.apply_retention().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refuses_without_external_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db(&tmp.path().join("data"));
        let s = Shipper::new(
            bucket(&tmp.path().join("bucket")),
            db.clone(),
            Labels::default(),
            ShipperOptions::default(),
        )
        .unwrap();
        let e = s.sync(&CancellationToken::new()).await.unwrap_err();
        assert!(matches!(e, ShipperError::NoExternalLabels), "{e}");
        assert_eq!(s.metrics.pending_blocks.get(), 2);
        assert!(
            std::fs::read_dir(tmp.path().join("bucket"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(db.apply_retention().unwrap().is_empty());
    }

    #[tokio::test]
    async fn multipart_files_and_abandon() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db(&tmp.path().join("data"));
        let mut b = bucket(&tmp.path().join("bucket"));
        // Tiny parts so even small files go through the multipart path.
        b.part_size = 64;
        let ext = Labels::from_pairs([("cluster", "a")]);
        let s = Shipper::new(b, db.clone(), ext, ShipperOptions::default()).unwrap();
        let abandon = CancellationToken::new();
        abandon.cancel();
        assert!(matches!(
            s.sync(&abandon).await.unwrap_err(),
            ShipperError::Abandoned
        ));
        let r = s.sync(&CancellationToken::new()).await.unwrap();
        assert_eq!(r.uploaded.len(), 2);
        for m in db.blocks() {
            for rel in ["index", "chunks/000001"] {
                let a = std::fs::read(tmp.path().join("data").join(&m.ulid).join(rel)).unwrap();
                let b = std::fs::read(tmp.path().join("bucket").join(&m.ulid).join(rel)).unwrap();
                assert!(a == b, "{rel} differs");
            }
        }
    }
}
