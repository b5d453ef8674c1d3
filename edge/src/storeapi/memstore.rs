//! An in-memory StoreAPI implementation: real matching, time ranges, sorting and limits over XOR chunks
//! held in memory. Tests and small fixtures use it; it is also the reference the acceptance suite is
//! first run against.

use std::collections::BTreeMap;
use std::sync::RwLock;

use bytes::Bytes;

use super::{
    ExternalLabels, MetadataStream, SeriesFrame, SeriesQuery, SeriesStream, Store, labels_to_proto,
    matchers_from_proto, no_series_matchers_error, truncate_to_limit,
};
use crate::chunkenc::{SAMPLES_PER_CHUNK, XorChunk};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::matcher::matches_all;
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use crate::sample::Sample;

/// See the module documentation.
pub struct MemStore {
    ext: ExternalLabels,
    component: String,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    series: BTreeMap<Labels, MemSeries>,
    metadata: BTreeMap<String, Vec<pb::Meta>>,
}

#[derive(Default)]
struct MemSeries {
    closed: Vec<MemChunk>,
    head: Option<(XorChunk, i64)>,
}

#[derive(Clone)]
struct MemChunk {
    min_t: i64,
    max_t: i64,
    data: Bytes,
}

impl MemSeries {
    fn chunks(&self) -> impl Iterator<Item = MemChunk> + '_ {
        let head = self.head.as_ref().map(|(c, min_t)| MemChunk {
            min_t: *min_t,
            max_t: c.last_t(),
            data: Bytes::copy_from_slice(c.bytes()),
        });
        self.closed.iter().cloned().chain(head)
    }

    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.chunks().any(|c| c.min_t <= maxt && c.max_t >= mint)
    }
}

impl MemStore {
    /// A store with these external labels, announcing itself as a `"sidecar"`.
    pub fn new(external_labels: Labels) -> MemStore {
        MemStore {
            ext: ExternalLabels::new(external_labels),
            component: "sidecar".into(),
            inner: RwLock::default(),
        }
    }

    /// Sets the `ComponentType` reported by `Info`.
    pub fn with_component(mut self, component: &str) -> MemStore {
        component.clone_into(&mut self.component);
        self
    }

    /// Appends samples to a series (created if needed). Samples must be in time order and after the
    /// series' last sample; chunks are cut every 120 samples as Prometheus does.
    pub fn append(&self, labels: &Labels, samples: &[Sample]) -> Result<()> {
        let mut inner = self.write();
        let s = inner.series.entry(labels.clone()).or_default();
        for smp in samples {
            if let Some((c, _)) = &s.head
                && smp.t <= c.last_t()
            {
                return Err(Error::bad_data(format!(
                    "out-of-order sample for {labels}: {} after {}",
                    smp.t,
                    c.last_t()
                )));
            }
            if s.head
                .as_ref()
                .is_some_and(|(c, _)| c.num_samples() >= SAMPLES_PER_CHUNK)
                && let Some((c, min_t)) = s.head.take()
            {
                s.closed.push(MemChunk {
                    min_t,
                    max_t: c.last_t(),
                    data: Bytes::from(c.into_bytes()),
                });
            }
            let (c, _) = s.head.get_or_insert_with(|| (XorChunk::new(), smp.t));
            c.append(smp.t, smp.v)
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Sets the TYPE/HELP/UNIT entries of a metric family.
    pub fn set_metadata(&self, metric: &str, metas: Vec<pb::Meta>) {
        self.write().metadata.insert(metric.to_owned(), metas);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way readers could
        // misinterpret (every update is a single insert), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Series of this store matching `matchers` with data in `[mint, maxt]`, as served (external labels
    /// applied), sorted, and with series that became equal merged.
    fn select(
        &self,
        matchers: &[crate::matcher::Matcher],
        mint: i64,
        maxt: i64,
        without: &[String],
    ) -> Vec<(Labels, Vec<MemChunk>)> {
        let inner = self.read();
        let mut out: BTreeMap<Labels, Vec<MemChunk>> = BTreeMap::new();
        for (labels, s) in &inner.series {
            if !matches_all(matchers, labels) {
                continue;
            }
            let chunks: Vec<MemChunk> = s
                .chunks()
                .filter(|c| c.min_t <= maxt && c.max_t >= mint)
                .collect();
            if chunks.is_empty() {
                continue;
            }
            out.entry(self.ext.apply(labels, without))
                .or_default()
                .extend(chunks);
        }
        out.into_iter()
            .map(|(l, mut c)| {
                c.sort_by_key(|c| (c.min_t, c.max_t));
                (l, c)
            })
            .collect()
    }

    fn time_range(&self) -> (i64, i64) {
        let inner = self.read();
        let mut range = (i64::MAX, i64::MIN);
        for s in inner.series.values() {
            for c in s.chunks() {
                range.0 = range.0.min(c.min_t);
                range.1 = range.1.max(c.max_t);
            }
        }
        range
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let (min_time, max_time) = self.time_range();
        let has_metadata = !self.read().metadata.is_empty();
        Ok(infopb::InfoResponse {
            label_sets: self.ext.info_label_sets(),
            component_type: self.component.clone(),
            store: Some(infopb::StoreInfo {
                min_time,
                max_time,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: vec![infopb::TsdbInfo {
                    labels: Some(pb::ZLabelSet {
                        labels: labels_to_proto(self.ext.labels()),
                    }),
                    min_time,
                    max_time,
                }],
            }),
            metric_metadata: has_metadata.then_some(infopb::MetricMetadataInfo {}),
            ..Default::default()
        })
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let q = SeriesQuery::from_request(&req)?;
        let Some(matchers) = self.ext.filter_matchers(q.matchers) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        if matchers.is_empty() {
            return Err(no_series_matchers_error());
        }
        let mut selected =
            self.select(&matchers, q.min_time, q.max_time, &q.without_replica_labels);
        truncate_to_limit(&mut selected, req.limit);
        let skip = q.skip_chunks;
        let frames = selected.into_iter().map(move |(labels, chunks)| {
            Ok(SeriesFrame::Series(pb::Series {
                labels: labels_to_proto(&labels),
                chunks: if skip {
                    vec![]
                } else {
                    chunks.into_iter().map(to_aggr_chunk).collect()
                },
            }))
        });
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let Some(matchers) = self
            .ext
            .filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(pb::LabelNamesResponse::default());
        };
        let mut names: Vec<String> = {
            let inner = self.read();
            let mut set = std::collections::BTreeSet::new();
            for (labels, s) in &inner.series {
                if matches_all(&matchers, labels) && s.overlaps(req.start, req.end) {
                    set.extend(labels.iter().map(|l| l.name.to_owned()));
                }
            }
            if !set.is_empty() {
                set.extend(
                    self.ext
                        .names_without(&req.without_replica_labels)
                        .map(str::to_owned),
                );
            }
            set.into_iter().collect()
        };
        truncate_to_limit(&mut names, req.limit);
        Ok(pb::LabelNamesResponse {
            names,
            ..Default::default()
        })
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
        let ext_value = self.ext.labels().get(&req.label);
        let mut values: Vec<String> = {
            let inner = self.read();
            let mut set = std::collections::BTreeSet::new();
            for (labels, s) in &inner.series {
                if !matches_all(&matchers, labels) || !s.overlaps(req.start, req.end) {
                    continue;
                }
                match ext_value {
                    Some(v) if !removed => {
                        set.insert(v.to_owned());
                        break;
                    }
                    Some(_) => break,
                    None => {
                        if let Some(v) = labels.get(&req.label) {
                            set.insert(v.to_owned());
                        }
                    }
                }
            }
            set.into_iter().collect()
        };
        truncate_to_limit(&mut values, req.limit);
        Ok(pb::LabelValuesResponse {
            values,
            ..Default::default()
        })
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        let inner = self.read();
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let metadata = inner
            .metadata
            .iter()
            .filter(|(name, _)| req.metric.is_empty() || **name == req.metric)
            .take(limit)
            .map(|(name, metas)| {
                (
                    name.clone(),
                    pb::MetricMetadataEntry {
                        metas: metas.clone(),
                    },
                )
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

fn to_aggr_chunk(c: MemChunk) -> pb::AggrChunk {
    pb::AggrChunk {
        min_time: c.min_t,
        max_time: c.max_t,
        raw: Some(pb::Chunk {
            r#type: pb::chunk::Encoding::Xor as i32,
            hash: xxhash_rust::xxh64::xxh64(&c.data, 0),
            data: c.data,
        }),
        ..Default::default()
    }
}
