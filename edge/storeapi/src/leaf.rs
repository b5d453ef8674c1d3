//! One StoreAPI implementation for every store that holds its own data (the in-memory store, the edge
//! TSDB, later the bucket store): the data comes from a [`SeriesSource`], and this module applies the
//! StoreAPI rules on top — external labels (added, overriding, answering matchers on them),
//! `without_replica_labels`, sorting, merging series that become equal, `limit`, `skip_chunks`, label
//! names and values, Info and metadata.

use std::collections::BTreeSet;

use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    ExternalLabels, MetadataStream, SeriesFrame, SeriesQuery, SeriesStream, Store,
    label_names_answer, label_values_answer, matchers_from_proto, no_series_matchers_error,
};
use meridian_core::error::ErrorKind;
use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::{Relabel, SeriesCursor, SeriesSource, SourceChunk};

use crate::info::InfoBuilder;
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use crate::trim::{Needed, trim};

/// Per-request limits of `Series` calls, as Thanos' `--store.limits.request-series` and
/// `--store.limits.request-samples` (0 = unlimited, their default). A call over a limit ends with a
/// `RESOURCE_EXHAUSTED` error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Most series one call may return.
    pub max_series: usize,
    /// Most samples one call may return, counted as Thanos does: as chunks of up to 120 samples.
    pub max_samples: usize,
}

/// Series handed from the producing thread to the response stream at a time.
const CURSOR_BATCH: usize = 256;
/// Frames buffered between the producing thread and the response stream.
const FRAME_CHANNEL: usize = 256;
/// Frames produced before the first answer; an answer this small needs no channel.
const FIRST_FRAMES: usize = 256;
/// A selection runs on the async worker that received the call, rather than on the blocking pool, when
/// the index bounds it ([`SeriesSource::cheap_cost`]) to this many series found and index entries read.
/// 64 series' index and chunk reads and frames, and 16 Ki entries (64 KiB of postings), take tens of
/// microseconds: what the hand-off itself costs on a small machine (two thread wake-ups). A
/// dashboard's one-series queries and queries over absent metrics are this small.
const INLINE_SERIES: usize = 64;
const INLINE_ENTRIES: usize = 16 * 1024;

/// A StoreAPI store over a [`SeriesSource`].
#[derive(Debug)]
pub struct LeafStore<S> {
    /// Shared with the blocking threads that read it.
    source: Arc<S>,
    ext: ExternalLabels,
    component: String,
    limits: SeriesLimits,
}

impl<S: SeriesSource> LeafStore<S> {
    /// A store announcing itself as a `"sidecar"` with these external labels.
    pub fn from_source(source: S, external_labels: Labels) -> LeafStore<S> {
        LeafStore {
            source: Arc::new(source),
            ext: ExternalLabels::new(external_labels),
            component: "sidecar".into(),
            limits: SeriesLimits::default(),
        }
    }

    /// Sets the per-request `Series` limits.
    pub fn with_limits(mut self, limits: SeriesLimits) -> LeafStore<S> {
        self.limits = limits;
        self
    }

    /// Sets the `ComponentType` reported by `Info`.
    pub fn with_component(mut self, component: &str) -> LeafStore<S> {
        component.clone_into(&mut self.component);
        self
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn external_labels(&self) -> &ExternalLabels {
        &self.ext
    }

    /// Folds `visit` over the own labels of the series `matchers` select in `[mint, maxt]`. The reads
    /// run on the blocking pool, batch by batch, so a large selection neither stalls an async worker
    /// nor outlives its caller: when the returned future is dropped (the client went away) the reader
    /// stops before its next batch.
    async fn visit_series<T: Send + 'static>(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        init: T,
        mut visit: impl FnMut(&mut T, &Labels) + Send + 'static,
    ) -> Result<T> {
        /// Tells the reader its caller is gone.
        struct Gone(Arc<AtomicBool>);
        impl Drop for Gone {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let gone = Gone(Arc::new(AtomicBool::new(false)));
        let stop = gone.0.clone();
        let (source, matchers) = (self.source.clone(), matchers.to_vec());
        let read = move || -> Result<T> {
            let own: Relabel = Arc::new(Labels::clone);
            let mut cursor = source.select_sorted(&matchers, mint, maxt, false, own)?;
            let mut acc = init;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Canceled, "the client went away"));
                }
                let batch = cursor.next_batch(CURSOR_BATCH)?;
                if batch.is_empty() {
                    return Ok(acc);
                }
                for (labels, _) in &batch {
                    visit(&mut acc, labels);
                }
            }
        };
        let answer = tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Error::internal(format!("label reader failed: {e}")))?;
        drop(gone);
        answer
    }
}

#[async_trait::async_trait]
impl<S: SeriesSource> Store for LeafStore<S> {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let (min_time, max_time) = self.source.time_range();
        Ok(InfoBuilder::new(&self.component, min_time, max_time)
            .tsdb(self.ext.labels().clone(), min_time, max_time)
            .metadata(self.source.serves_metadata())
            .build())
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let q = SeriesQuery::from_request(&req)?;
        let Some(matchers) = self.ext.filter_matchers(q.matchers) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        if matchers.is_empty() {
            return Err(no_series_matchers_error());
        }
        let relabel: Relabel = {
            let ext = self.ext.clone();
            let without = q.without_replica_labels.clone();
            Arc::new(move |l: &Labels| ext.apply(l, &without))
        };
        // Selection and the first frames on the blocking pool (they read the index and chunks), or
        // here when the index says they are small ([`INLINE_SERIES`]); a
        // small answer comes back whole, so it costs one hand-off there and back and no channel
        // (issue 25: every thread wake-up shows in a small query's latency). A larger one goes on
        // streaming from that thread into a bounded channel: at most a batch and the channel's frames
        // are in memory per call, and when the client goes away (tonic drops the stream, and with it
        // the receiver) the producer stops at its next send.
        let inline = self
            .source
            .cheap_cost(&matchers, q.min_time, q.max_time)
            .is_some_and(|c| c.series <= INLINE_SERIES && c.entries <= INLINE_ENTRIES);
        let source = self.source.clone();
        let (min_time, max_time, with_data) = (q.min_time, q.max_time, !q.skip_chunks);
        let (limit, limits) = (q.limit, self.limits);
        let need = with_data.then(|| Needed::from_request(&req));
        let start = move || -> Result<(Vec<Result<SeriesFrame>>, Option<Producer>)> {
            let cursor = source.select_sorted(&matchers, min_time, max_time, with_data, relabel)?;
            let mut p = Producer::new(cursor, need, limit, limits);
            let mut first = Vec::new();
            while first.len() < FIRST_FRAMES {
                if !p.step(|f| {
                    first.push(f);
                    true
                }) {
                    return Ok((first, None));
                }
            }
            Ok((first, Some(p)))
        };
        let (first, rest) = if inline {
            start()?
        } else {
            tokio::task::spawn_blocking(start)
                .await
                .map_err(|e| Error::internal(format!("series reader failed: {e}")))??
        };
        let first = futures::stream::iter(first);
        let Some(mut p) = rest else {
            return Ok(Box::pin(first));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(FRAME_CHANNEL);
        tokio::task::spawn_blocking(move || while p.step(|f| tx.blocking_send(f).is_ok()) {});
        Ok(Box::pin(
            first.chain(tokio_stream::wrappers::ReceiverStream::new(rx)),
        ))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let Some(matchers) = self
            .ext
            .filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(pb::LabelNamesResponse::default());
        };
        let mut set = self
            .visit_series(&matchers, req.start, req.end, BTreeSet::new(), |set, l| {
                set.extend(l.iter().map(|x| x.name.to_owned()));
            })
            .await?;
        if !set.is_empty() {
            set.extend(
                self.ext
                    .names_without(&req.without_replica_labels)
                    .map(str::to_owned),
            );
        }
        Ok(label_names_answer(set, req.limit))
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::bad_data("label values request without a label name"));
        }
        let Some(matchers) = self
            .ext
            .filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(pb::LabelValuesResponse::default());
        };
        let removed = req.without_replica_labels.contains(&req.label);
        let name = req.label.clone();
        // Whether any series matched, and the label's values among them.
        let (any, found) = self
            .visit_series(
                &matchers,
                req.start,
                req.end,
                (false, BTreeSet::new()),
                move |(any, found), l| {
                    *any = true;
                    if let Some(v) = l.get(&name) {
                        found.insert(v.to_owned());
                    }
                },
            )
            .await?;
        let values: Vec<String> = match self.ext.labels().get(&req.label) {
            // An external label has one value, present when any series matches.
            Some(v) if !removed && any => vec![v.to_owned()],
            Some(_) => vec![],
            None => found.into_iter().collect(),
        };
        Ok(label_values_answer(values, req.limit))
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        let Some(all) = self.source.metadata() else {
            return Err(Error::new(
                meridian_core::error::ErrorKind::Unimplemented,
                "this store serves no metric metadata",
            ));
        };
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let metadata = all
            .into_iter()
            .filter(|(name, _)| req.metric.is_empty() || *name == req.metric)
            .take(limit)
            .map(|(name, metas)| {
                let metas = metas.iter().map(crate::meta_to_proto).collect();
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

/// Drives `cursor` into `tx` (on a blocking thread) until it is exhausted, `limit` series (0 =
/// unlimited) were sent, a limit of `limits` is exceeded (then an error frame ends the stream, with
/// Thanos' wording), or the receiver is gone.
/// Turns a cursor's series into `Series` frames, applying `limit` and the per-request limits.
struct Producer {
    cursor: Box<dyn SeriesCursor>,
    /// What of each series to send; `None`: labels only (`skip_chunks`).
    need: Option<Needed>,
    limit: usize,
    limits: SeriesLimits,
    max_chunks: usize,
    series: usize,
    chunks: usize,
}

impl Producer {
    fn new(
        cursor: Box<dyn SeriesCursor>,
        need: Option<Needed>,
        limit: usize,
        limits: SeriesLimits,
    ) -> Producer {
        Producer {
            cursor,
            need,
            limit,
            limits,
            // Thanos counts the samples limit as chunks of at most 120 samples
            // (`MaxSamplesPerChunk`).
            max_chunks: limits
                .max_samples
                .div_ceil(meridian_core::chunkenc::SAMPLES_PER_CHUNK as usize),
            series: 0,
            chunks: 0,
        }
    }

    /// Emits the frames of the cursor's next batch; `false` when the answer is complete (or ended in
    /// an error, or `emit` refused a frame: the receiver is gone).
    fn step(&mut self, mut emit: impl FnMut(Result<SeriesFrame>) -> bool) -> bool {
        let batch = match self.cursor.next_batch(CURSOR_BATCH) {
            Ok(b) if b.is_empty() => return false,
            Ok(b) => b,
            Err(e) => {
                emit(Err(e));
                return false;
            }
        };
        for (labels, cs) in batch {
            // Only the samples the request needs (see `trim`); a series with none but stale markers
            // is not sent.
            let cs = match &self.need {
                Some(need) => match trim(cs, need) {
                    Some(cs) => cs,
                    None => continue,
                },
                None => cs,
            };
            self.series += 1;
            let l = self.limits;
            if l.max_series > 0 && self.series > l.max_series {
                emit(Err(Error::limit(format!(
                    "exceeded series limit: limit {} violated (got {})",
                    l.max_series, self.series
                ))));
                return false;
            }
            if self.need.is_some() {
                self.chunks += cs.len();
                if self.max_chunks > 0 && self.chunks > self.max_chunks {
                    emit(Err(Error::limit(format!(
                        "exceeded samples limit: limit {} violated (got {} chunks of up to 120 samples)",
                        l.max_samples, self.chunks
                    ))));
                    return false;
                }
            }
            let frame = SeriesFrame::Series(pb::Series {
                labels,
                chunks: if self.need.is_some() {
                    cs.into_iter().map(to_aggr_chunk).collect()
                } else {
                    vec![]
                },
            });
            if !emit(Ok(frame)) {
                return false;
            }
            if self.limit > 0 && self.series >= self.limit {
                return false;
            }
        }
        true
    }
}

/// Series (sorted, merged, limited) as a `Series` answer; without chunks when `skip_chunks`.
pub fn series_stream(series: Vec<(Labels, Vec<SourceChunk>)>, skip_chunks: bool) -> SeriesStream {
    let frames = series.into_iter().map(move |(labels, chunks)| {
        Ok(SeriesFrame::Series(pb::Series {
            labels,
            chunks: if skip_chunks {
                vec![]
            } else {
                chunks.into_iter().map(to_aggr_chunk).collect()
            },
        }))
    });
    Box::pin(futures::stream::iter(frames))
}

/// [`series_stream`] for series whose chunks are in their wire form already (a store serving
/// downsampled aggregates next to raw chunks).
pub fn wire_series_stream(
    series: Vec<(Labels, Vec<pb::AggrChunk>)>,
    skip_chunks: bool,
) -> SeriesStream {
    let frames = series.into_iter().map(move |(labels, chunks)| {
        Ok(SeriesFrame::Series(pb::Series {
            labels,
            chunks: if skip_chunks { vec![] } else { chunks },
        }))
    });
    Box::pin(futures::stream::iter(frames))
}

impl meridian_core::series::TimeSpan for pb::AggrChunk {
    fn span(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }
}

/// The wire form of a chunk (XOR or a native-histogram encoding, with its xxHash64).
pub fn to_aggr_chunk(c: SourceChunk) -> pb::AggrChunk {
    let kind = match c.encoding {
        meridian_core::chunkenc::Encoding::Histogram => pb::chunk::Encoding::Histogram,
        meridian_core::chunkenc::Encoding::FloatHistogram => pb::chunk::Encoding::FloatHistogram,
        _ => pb::chunk::Encoding::Xor,
    };
    pb::AggrChunk {
        min_time: c.min_time,
        max_time: c.max_time,
        raw: Some(pb::Chunk {
            r#type: kind as i32,
            hash: xxhash_rust::xxh64::xxh64(&c.data, 0),
            data: c.data,
        }),
        ..Default::default()
    }
}
