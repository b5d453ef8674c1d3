//! An in-memory StoreAPI store: XOR chunks held in memory behind the generic [`LeafStore`]. Tests and
//! small fixtures use it; it is also the first implementation the acceptance suite runs against.

use std::collections::BTreeMap;
use std::sync::RwLock;

use bytes::Bytes;

use super::leaf::LeafStore;
use crate::proto::thanos as pb;
use meridian_core::chunkenc::{SAMPLES_PER_CHUNK, XorChunk};
use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::{Matcher, matches_all};
use meridian_core::sample::Sample;
use meridian_core::series::{MetricMeta, SeriesSource, SourceChunk, SourceSeries};

/// The in-memory store.
pub type MemStore = LeafStore<MemSource>;

/// Series and metadata held in memory.
#[derive(Debug, Default)]
pub struct MemSource {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<Labels, MemSeries>,
    metadata: BTreeMap<String, Vec<MetricMeta>>,
}

#[derive(Debug, Default)]
struct MemSeries {
    closed: Vec<SourceChunk>,
    head: Option<(XorChunk, i64)>,
}

impl MemSeries {
    fn chunks(&self) -> impl Iterator<Item = SourceChunk> + '_ {
        let head = self.head.as_ref().map(|(c, min_t)| SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: *min_t,
            max_time: c.last_t(),
            data: Bytes::copy_from_slice(c.bytes()),
        });
        self.closed.iter().cloned().chain(head)
    }
}

impl LeafStore<MemSource> {
    /// An empty in-memory store with these external labels, announcing itself as a `"sidecar"`.
    pub fn new(external_labels: Labels) -> MemStore {
        LeafStore::from_source(MemSource::default(), external_labels)
    }

    /// Appends samples to a series (created if needed). Samples must be in time order and after the
    /// series' last sample; chunks are cut every 120 samples as Prometheus does.
    pub fn append(&self, labels: &Labels, samples: &[Sample]) -> Result<()> {
        self.source().append(labels, samples)
    }

    /// Sets the TYPE/HELP/UNIT entries of a metric family.
    pub fn set_metadata(&self, metric: &str, metas: Vec<pb::Meta>) {
        let metas = metas.iter().map(crate::meta_from_proto).collect();
        self.source()
            .write()
            .metadata
            .insert(metric.to_owned(), metas);
    }
}

impl MemSource {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every update is a single insert or append, so a poisoned lock still holds consistent maps.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, labels: &Labels, samples: &[Sample]) -> Result<()> {
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
                s.closed.push(SourceChunk {
                    encoding: meridian_core::chunkenc::Encoding::Xor,
                    min_time: min_t,
                    max_time: c.last_t(),
                    data: Bytes::from(c.into_bytes()),
                });
            }
            let (c, _) = s.head.get_or_insert_with(|| (XorChunk::new(), smp.t));
            c.append(smp.t, smp.v)
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        Ok(())
    }
}

impl SeriesSource for MemSource {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _with_data: bool,
    ) -> Result<Vec<SourceSeries>> {
        let inner = self.read();
        Ok(inner
            .series
            .iter()
            .filter(|(labels, _)| matches_all(matchers, labels))
            .filter_map(|(labels, s)| {
                let chunks: Vec<SourceChunk> = s
                    .chunks()
                    .filter(|c| c.min_time <= maxt && c.max_time >= mint)
                    .collect();
                (!chunks.is_empty()).then(|| SourceSeries {
                    labels: labels.clone(),
                    chunks,
                })
            })
            .collect())
    }

    fn time_range(&self) -> (i64, i64) {
        let inner = self.read();
        let mut range = (i64::MAX, i64::MIN);
        for c in inner.series.values().flat_map(MemSeries::chunks) {
            range.0 = range.0.min(c.min_time);
            range.1 = range.1.max(c.max_time);
        }
        range
    }

    fn metadata(&self) -> Option<BTreeMap<String, Vec<MetricMeta>>> {
        let inner = self.read();
        (!inner.metadata.is_empty()).then(|| inner.metadata.clone())
    }
}
