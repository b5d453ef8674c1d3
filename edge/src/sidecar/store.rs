//! The StoreAPI of a sidecar: the Prometheus beside it, served as Thanos' sidecar serves it
//! (`pkg/store/prometheus.go`, v0.25.1), with its persisted blocks read in place.
//!
//! - `Info`: Prometheus' external labels and the time of its oldest sample (both refreshed by
//!   [`PromState::refresh`]), up to the end of time.
//! - `Series`: the blocks in the data directory for the time before the newest block's end
//!   ([`super::blocks`]), Prometheus' WAL for the time after it ([`super::head`]), or when the WAL
//!   cannot answer, remote read with `STREAMED_XOR_CHUNKS`, and for labels only (`skip_chunks`)
//!   `/api/v1/series`. Both parts become one [`Snapshot`], served by the
//!   leaf store, so external labels, `without_replica_labels`, limits and trimming are the rules
//!   every Meridian store follows.
//! - Label names and values: the blocks as above, the head's range through the HTTP API
//!   (`/api/v1/series` with matchers, `/api/v1/labels` and `/api/v1/label/<name>/values`
//!   without).
//! - Metadata: `/api/v1/metadata`.

use std::collections::BTreeSet;

use futures::StreamExt;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use super::blocks::{PromBlocks, Snapshot, SnapshotSource, split_time};
use super::head::HeadReader;
use super::prom::{PromClient, PromError};
use super::remote_read;
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::series::SourceChunk;
use meridian_storeapi::info::InfoBuilder;
use meridian_storeapi::leaf::{LeafStore, SeriesLimits};
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_storeapi::{
    ExternalLabels, MetadataStream, SeriesFrame, SeriesStream, Store, label_names_answer,
    label_values_answer, matchers_from_proto, no_series_matchers_error,
};

/// What the sidecar knows of its Prometheus, refreshed every 30 s.
#[derive(Debug)]
pub struct PromState {
    labels: RwLock<Labels>,
    /// The oldest sample's time; `i64::MIN` when unknown or Prometheus holds none.
    lowest: AtomicI64,
    /// Prometheus' major version (0 until known).
    major: AtomicU32,
}

impl Default for PromState {
    fn default() -> Self {
        PromState {
            labels: RwLock::new(Labels::empty()),
            lowest: AtomicI64::new(i64::MIN),
            major: AtomicU32::new(0),
        }
    }
}

impl PromState {
    pub fn labels(&self) -> Labels {
        self.labels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn lowest(&self) -> i64 {
        self.lowest.load(Ordering::Relaxed)
    }

    /// Matchers as this Prometheus must be sent them to select what they select here. Meridian's
    /// regular expressions follow Prometheus 3, where `.` matches a newline; before 3.0 it did
    /// not, so for an older Prometheus every regular expression is wrapped in `(?s:…)`.
    pub fn for_prometheus(&self, matchers: &[Matcher]) -> Vec<Matcher> {
        if self.major.load(Ordering::Relaxed) >= 3 {
            return matchers.to_vec();
        }
        matchers
            .iter()
            .map(|m| match m.kind() {
                MatchType::Regex | MatchType::NotRegex => {
                    Matcher::new(m.kind(), m.name(), format!("(?s:{})", m.value()))
                        .unwrap_or_else(|_| m.clone())
                }
                _ => m.clone(),
            })
            .collect()
    }

    /// Reads the external labels and the oldest sample's time again. Labels that changed are
    /// logged: they are what the gateway deduplicates and routes by.
    pub async fn refresh(&self, prom: &PromClient) -> std::result::Result<Labels, PromError> {
        if self.major.load(Ordering::Relaxed) == 0 {
            let version = prom.version().await?;
            let major = version
                .split(['.', '-', '+'])
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(2);
            self.major.store(major, Ordering::Relaxed);
        }
        let labels = prom.external_labels().await?;
        let lowest = prom.lowest_timestamp_ms().await?;
        self.lowest.store(lowest, Ordering::Relaxed);
        let mut cur = self
            .labels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *cur != labels {
            if !cur.is_empty() {
                tracing::info!(old = %*cur, new = %labels, "Prometheus' external labels changed");
            }
            *cur = labels.clone();
        }
        Ok(labels)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct SidecarStore {
    prom: Arc<PromClient>,
    blocks: Arc<PromBlocks>,
    state: Arc<PromState>,
    head_reader: Arc<HeadReader>,
    liveness: Liveness,
    /// `--min-time`: nothing older is served.
    min_time: i64,
    limits: SeriesLimits,
    /// The most bytes of one remote-read answer kept.
    max_read_bytes: usize,
}

/// How the head's range is read for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadRead {
    /// Remote read: series with their chunks.
    Chunks,
    /// `/api/v1/series`: label sets only.
    Labels,
}

fn unavailable(e: PromError) -> Error {
    Error::new(ErrorKind::Unavailable, e.to_string())
}

impl SidecarStore {
    pub fn new(
        prom: Arc<PromClient>,
        blocks: Arc<PromBlocks>,
        state: Arc<PromState>,
        head_reader: Arc<HeadReader>,
        min_time: i64,
        limits: SeriesLimits,
        max_read_bytes: usize,
    ) -> SidecarStore {
        SidecarStore {
            prom,
            blocks,
            state,
            head_reader,
            liveness: Liveness::default(),
            min_time,
            limits,
            max_read_bytes,
        }
    }

    /// The blocks now on disk and, when `[mint, maxt]` reaches past them, the head's series read
    /// as `head` says (`None`: not read).
    /// Also a warning when the head's range came from the WAL while Prometheus does not answer.
    async fn snapshot(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        head: Option<HeadRead>,
        ext: &Labels,
    ) -> Result<(Snapshot, Option<String>)> {
        let b = self.blocks.clone();
        let blocks = tokio::task::spawn_blocking(move || b.current())
            .await
            .map_err(|e| Error::internal(format!("block reader failed: {e}")))??;
        let split = split_time(&blocks);
        let from = mint.max(split);
        let mut warning = None;
        let head = match head {
            Some(how) if maxt >= from => {
                let began = std::time::Instant::now();
                let (head, from_wal) = self
                    .read_head(matchers, from, maxt, split, how, ext)
                    .await?;
                if from_wal {
                    warning = self.liveness.check(&self.prom).await;
                }
                tracing::debug!(
                    how = ?how,
                    from,
                    maxt,
                    series = head.len(),
                    chunks = head.iter().map(|(_, c)| c.len()).sum::<usize>(),
                    took = ?began.elapsed(),
                    "the head's range read from Prometheus"
                );
                head
            }
            _ => Vec::new(),
        };
        Ok((
            Snapshot {
                blocks,
                split,
                head,
            },
            warning,
        ))
    }

    /// The head's series in `[from, maxt]`: from Prometheus' WAL when it can answer, else from
    /// Prometheus (`split`: the newest block's end, before which the head's copy keeps nothing).
    async fn read_head(
        &self,
        matchers: &[Matcher],
        from: i64,
        maxt: i64,
        split: i64,
        how: HeadRead,
        ext: &Labels,
    ) -> Result<(Vec<(Labels, Vec<SourceChunk>)>, bool)> {
        let with_data = how == HeadRead::Chunks;
        if let Some(got) = self
            .head_reader
            .from_wal(matchers, from, maxt, with_data, split)
            .await
        {
            return Ok((got, true));
        }
        self.head_reader
            .count(if with_data { "remote_read" } else { "http_api" });
        let matchers = &self.state.for_prometheus(matchers);
        let read = match how {
            HeadRead::Chunks => {
                let read =
                    remote_read::read(&self.prom, matchers, from, maxt, None, self.max_read_bytes)
                        .await?;
                // Prometheus adds its external labels to what remote read answers; the leaf store
                // adds them again, by the same rules as for the blocks.
                read.into_iter()
                    .map(|(l, c)| (without_external(&l, ext), c))
                    .collect()
            }
            // The series has samples in the range; which ones is not known, and not asked.
            HeadRead::Labels => self
                .prom
                .series(matchers, from, maxt)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|l| {
                    let span = SourceChunk {
                        encoding: meridian_core::chunkenc::Encoding::Xor,
                        min_time: from,
                        max_time: maxt,
                        data: bytes::Bytes::new(),
                    };
                    (l, vec![span])
                })
                .collect(),
        };
        Ok((read, false))
    }

    fn leaf(&self, snap: Snapshot, ext: Labels) -> LeafStore<SnapshotSource> {
        LeafStore::from_source(SnapshotSource(Arc::new(snap)), ext).with_limits(self.limits)
    }

    /// `[start, end]` cut to what this sidecar serves.
    fn clamp(&self, start: i64, end: i64) -> Option<(i64, i64)> {
        let start = start.max(self.min_time);
        (start <= end).then_some((start, end))
    }
}

/// Whether Prometheus answers, asked when the head's range came from its WAL: its data directory
/// outlives it, so without asking, a Prometheus that is down would go unnoticed by the querier
/// (Thanos' sidecar fails then; this one answers, with a warning). A success holds for a second.
#[derive(Debug, Default)]
struct Liveness {
    last_ok: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Liveness {
    const HOLDS: std::time::Duration = std::time::Duration::from_secs(1);
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

    /// `None` when Prometheus answered within the last second or answers now; else the warning.
    async fn check(&self, prom: &PromClient) -> Option<String> {
        let fresh = |at: &Option<std::time::Instant>| at.is_some_and(|t| t.elapsed() < Self::HOLDS);
        if fresh(
            &self
                .last_ok
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return None;
        }
        if tokio::time::timeout(Self::TIMEOUT, prom.ready())
            .await
            .unwrap_or(false)
        {
            *self
                .last_ok
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now());
            return None;
        }
        Some(format!(
            "Prometheus at {} is not ready: its recent samples come from its WAL as last written, and may be incomplete",
            prom.url("")
        ))
    }
}

/// `labels` without the external labels Prometheus added (pairs equal to one of `ext`).
fn without_external(labels: &Labels, ext: &Labels) -> Labels {
    if ext.is_empty() {
        return labels.clone();
    }
    Labels::from_pairs(
        labels
            .iter()
            .filter(|l| ext.get(l.name) != Some(l.value))
            .map(|l| (l.name, l.value)),
    )
}

#[async_trait::async_trait]
impl Store for SidecarStore {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let min = self.state.lowest().max(self.min_time);
        Ok(InfoBuilder::new("sidecar", min, i64::MAX)
            .tsdb(self.state.labels(), min, i64::MAX)
            .metadata(true)
            .build())
    }

    async fn series(&self, mut req: pb::SeriesRequest) -> Result<SeriesStream> {
        let ext = self.state.labels();
        let Some(matchers) =
            ExternalLabels::new(ext.clone()).filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        if matchers.is_empty() {
            return Err(no_series_matchers_error());
        }
        let Some((mint, maxt)) = self.clamp(req.min_time, req.max_time) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        req.min_time = mint;
        let how = if req.skip_chunks {
            HeadRead::Labels
        } else {
            HeadRead::Chunks
        };
        let (snap, warning) = self
            .snapshot(&matchers, mint, maxt, Some(how), &ext)
            .await?;
        let stream = self.leaf(snap, ext).series(req).await?;
        Ok(match warning {
            Some(w) => Box::pin(futures::stream::iter([Ok(SeriesFrame::Warning(w))]).chain(stream)),
            None => stream,
        })
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let ext = self.state.labels();
        let ext_rules = ExternalLabels::new(ext.clone());
        let Some(matchers) = ext_rules.filter_matchers(matchers_from_proto(&req.matchers)?) else {
            return Ok(pb::LabelNamesResponse::default());
        };
        let Some((start, end)) = self.clamp(req.start, req.end) else {
            return Ok(pb::LabelNamesResponse::default());
        };
        let how = (!matchers.is_empty()).then_some(HeadRead::Labels);
        let (snap, warning) = self.snapshot(&matchers, start, end, how, &ext).await?;
        let split = snap.split;
        let mut names: BTreeSet<String> = BTreeSet::new();
        let inner = pb::LabelNamesRequest {
            start,
            limit: 0,
            ..req.clone()
        };
        names.extend(self.leaf(snap, ext.clone()).label_names(inner).await?.names);
        if matchers.is_empty() && end >= split {
            let head = self
                .prom
                .label_names(&[], start.max(split), end)
                .await
                .map_err(unavailable)?;
            if !head.is_empty() {
                names.extend(head);
                names.extend(
                    ext_rules
                        .names_without(&req.without_replica_labels)
                        .map(str::to_owned),
                );
            }
        }
        let mut answer = label_names_answer(names, req.limit);
        answer.warnings.extend(warning);
        Ok(answer)
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::bad_data("label values request without a label name"));
        }
        let ext = self.state.labels();
        let Some(matchers) =
            ExternalLabels::new(ext.clone()).filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(pb::LabelValuesResponse::default());
        };
        let Some((start, end)) = self.clamp(req.start, req.end) else {
            return Ok(pb::LabelValuesResponse::default());
        };
        let how = (!matchers.is_empty()).then_some(HeadRead::Labels);
        let (snap, warning) = self.snapshot(&matchers, start, end, how, &ext).await?;
        let split = snap.split;
        let inner = pb::LabelValuesRequest {
            start,
            limit: 0,
            ..req.clone()
        };
        let mut values: BTreeSet<String> = self
            .leaf(snap, ext.clone())
            .label_values(inner)
            .await?
            .values
            .into_iter()
            .collect();
        if matchers.is_empty() && end >= split {
            let from = start.max(split);
            match ext.get(&req.label) {
                // An external label has one value, there when any series is.
                Some(v) => {
                    let removed = req.without_replica_labels.contains(&req.label);
                    if !removed
                        && !self
                            .prom
                            .label_names(&[], from, end)
                            .await
                            .map_err(unavailable)?
                            .is_empty()
                    {
                        values.insert(v.to_owned());
                    }
                }
                None => values.extend(
                    self.prom
                        .label_values(&req.label, &[], from, end)
                        .await
                        .map_err(unavailable)?,
                ),
            }
        }
        let mut answer = label_values_answer(values, req.limit);
        answer.warnings.extend(warning);
        Ok(answer)
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        let all = self
            .prom
            .metadata(&req.metric, req.limit)
            .await
            .map_err(unavailable)?;
        let metadata = all
            .into_iter()
            .map(|(name, metas)| {
                let metas = metas.iter().map(meridian_storeapi::meta_to_proto).collect();
                (name, pb::MetricMetadataEntry { metas })
            })
            .collect();
        let frame = pb::MetricMetadataResponse {
            result: Some(pb::metric_metadata_response::Result::Metadata(
                pb::MetricMetadata { metadata },
            )),
        };
        Ok(Box::pin(futures::stream::iter([Ok(frame)])))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn external_labels_prometheus_added_are_taken_off() {
        let ext = Labels::from_pairs([("cluster", "a"), ("replica", "0")]);
        let got = Labels::from_pairs([
            ("__name__", "up"),
            ("cluster", "a"),
            ("replica", "own"),
            ("job", "x"),
        ]);
        assert_eq!(
            without_external(&got, &ext),
            Labels::from_pairs([("__name__", "up"), ("replica", "own"), ("job", "x")])
        );
    }
}
