//! One StoreAPI implementation for every store that holds its own data (the in-memory store, the edge
//! TSDB, later the bucket store): the data comes from a [`SeriesSource`], and this module applies the
//! StoreAPI rules on top — external labels (added, overriding, answering matchers on them),
//! `without_replica_labels`, sorting, merging series that become equal, `limit`, `skip_chunks`, label
//! names and values, Info and metadata.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{
    ExternalLabels, MetadataStream, SeriesFrame, SeriesQuery, SeriesStream, Store, labels_to_proto,
    matchers_from_proto, no_series_matchers_error, truncate_to_limit,
};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;

/// A chunk as a source holds it.
#[derive(Debug, Clone)]
pub struct SourceChunk {
    pub min_time: i64,
    /// Inclusive: the time of the last sample.
    pub max_time: i64,
    /// The XOR chunk bytes; may be empty when the caller did not ask for data.
    pub data: Bytes,
}

/// A series as a source holds it (its own labels, without external labels).
#[derive(Debug, Clone)]
pub struct SourceSeries {
    pub labels: Labels,
    pub chunks: Vec<SourceChunk>,
}

/// Where a leaf store's data comes from.
pub trait SeriesSource: Send + Sync + 'static {
    /// Series whose labels satisfy every matcher (no matchers: all series) and that have chunks
    /// overlapping `[mint, maxt]`, with those chunks (data only when `with_data`). Any order.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<SourceSeries>>;

    /// `(min, max)` timestamps of the data; `(i64::MAX, i64::MIN)` when there is none.
    fn time_range(&self) -> (i64, i64);

    /// TYPE/HELP/UNIT by metric family; `None` when the source serves no metadata.
    fn metadata(&self) -> Option<BTreeMap<String, Vec<pb::Meta>>> {
        None
    }

    /// Whether [`SeriesSource::metadata`] is served (what `Info` announces). Override it where building
    /// the metadata is not cheap: `Info` is polled by every querier.
    fn serves_metadata(&self) -> bool {
        self.metadata().is_some()
    }
}

/// A StoreAPI store over a [`SeriesSource`].
pub struct LeafStore<S> {
    source: S,
    ext: ExternalLabels,
    component: String,
}

impl<S: SeriesSource> LeafStore<S> {
    /// A store announcing itself as a `"sidecar"` with these external labels.
    pub fn from_source(source: S, external_labels: Labels) -> LeafStore<S> {
        LeafStore {
            source,
            ext: ExternalLabels::new(external_labels),
            component: "sidecar".into(),
        }
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

    /// Series as served: external labels applied, equal series merged, sorted.
    fn served(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        without: &[String],
        with_data: bool,
    ) -> Result<Vec<(Labels, Vec<SourceChunk>)>> {
        let all: Vec<(Labels, Vec<SourceChunk>)> = self
            .source
            .select(matchers, mint, maxt, with_data)?
            .into_iter()
            .map(|s| (self.ext.apply(&s.labels, without), s.chunks))
            .collect();
        Ok(merge_equal_series(all))
    }
}

/// Series sorted by labels, equal ones joined (their chunks in time order).
///
/// The input is usually sorted already (a source's series, or runs of them, one per block): the
/// stable sort detects runs and costs a comparison per series then, where a map would cost a
/// logarithm of them per insertion.
pub fn merge_equal_series(
    mut all: Vec<(Labels, Vec<SourceChunk>)>,
) -> Vec<(Labels, Vec<SourceChunk>)> {
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Labels, Vec<SourceChunk>)> = Vec::with_capacity(all.len());
    let mut joined = false;
    for (labels, chunks) in all {
        match out.last_mut() {
            Some(last) if last.0 == labels => {
                last.1.extend(chunks);
                joined = true;
            }
            _ => out.push((labels, chunks)),
        }
    }
    if joined {
        for (_, chunks) in &mut out {
            chunks.sort_by_key(|c| (c.min_time, c.max_time));
        }
    }
    out
}

#[async_trait::async_trait]
impl<S: SeriesSource> Store for LeafStore<S> {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let (min_time, max_time) = self.source.time_range();
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
            metric_metadata: self
                .source
                .serves_metadata()
                .then_some(infopb::MetricMetadataInfo {}),
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
        let selected = self.served(
            &matchers,
            q.min_time,
            q.max_time,
            &q.without_replica_labels,
            !q.skip_chunks,
        )?;
        let mut selected = selected;
        truncate_to_limit(&mut selected, req.limit);
        Ok(series_stream(selected, q.skip_chunks))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let Some(matchers) = self
            .ext
            .filter_matchers(matchers_from_proto(&req.matchers)?)
        else {
            return Ok(pb::LabelNamesResponse::default());
        };
        let mut set = BTreeSet::new();
        for s in self.source.select(&matchers, req.start, req.end, false)? {
            set.extend(s.labels.iter().map(|l| l.name.to_owned()));
        }
        if !set.is_empty() {
            set.extend(
                self.ext
                    .names_without(&req.without_replica_labels)
                    .map(str::to_owned),
            );
        }
        let mut names: Vec<String> = set.into_iter().collect();
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
        let selected = self.source.select(&matchers, req.start, req.end, false)?;
        let mut values: Vec<String> = match self.ext.labels().get(&req.label) {
            // An external label has one value, present when any series matches.
            Some(v) if !removed && !selected.is_empty() => vec![v.to_owned()],
            Some(_) => vec![],
            None => selected
                .iter()
                .filter_map(|s| s.labels.get(&req.label).map(str::to_owned))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        truncate_to_limit(&mut values, req.limit);
        Ok(pb::LabelValuesResponse {
            values,
            ..Default::default()
        })
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        let Some(all) = self.source.metadata() else {
            return Err(Error::new(
                crate::error::ErrorKind::Unimplemented,
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
            .map(|(name, metas)| (name, pb::MetricMetadataEntry { metas }))
            .collect();
        let frame = pb::MetricMetadataResponse {
            result: Some(pb::metric_metadata_response::Result::Metadata(
                pb::MetricMetadata { metadata },
            )),
        };
        Ok(Box::pin(futures::stream::iter([Ok(frame)])))
    }
}

/// Series (sorted, merged, limited) as a `Series` answer; without chunks when `skip_chunks`.
pub fn series_stream(series: Vec<(Labels, Vec<SourceChunk>)>, skip_chunks: bool) -> SeriesStream {
    let frames = series.into_iter().map(move |(labels, chunks)| {
        Ok(SeriesFrame::Series(pb::Series {
            labels: labels_to_proto(&labels),
            chunks: if skip_chunks {
                vec![]
            } else {
                chunks.into_iter().map(to_aggr_chunk).collect()
            },
        }))
    });
    Box::pin(futures::stream::iter(frames))
}

/// The wire form of a chunk (XOR, with its xxHash64).
pub fn to_aggr_chunk(c: SourceChunk) -> pb::AggrChunk {
    pb::AggrChunk {
        min_time: c.min_time,
        max_time: c.max_time,
        raw: Some(pb::Chunk {
            r#type: pb::chunk::Encoding::Xor as i32,
            hash: xxhash_rust::xxh64::xxh64(&c.data, 0),
            data: c.data,
        }),
        ..Default::default()
    }
}
