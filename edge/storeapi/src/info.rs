//! The one way to build an `InfoResponse`: what a store announces to the queriers that poll it.
//!
//! Every store answers with the same `StoreInfo` shape (Thanos' `infopb`, v0.37): its component type,
//! its label sets (empty ones left out), the time range it can answer, one `TsdbInfo` per label set
//! with that set's range, `supports_without_replica_labels`, no sharding, and whether it serves
//! metric metadata.

use meridian_core::labels::Labels;

use crate::labels_to_proto;
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;

/// An `InfoResponse` under construction.
#[derive(Debug, Clone)]
pub struct InfoBuilder {
    component: String,
    range: (i64, i64),
    tsdbs: Vec<(Labels, i64, i64)>,
    metadata: bool,
}

impl InfoBuilder {
    /// A store of `component` (`"sidecar"`, `"store"`, `"query"`, `"rule"`, ...) answering for
    /// `[min_time, max_time]`.
    pub fn new(component: &str, min_time: i64, max_time: i64) -> InfoBuilder {
        InfoBuilder {
            component: component.to_owned(),
            range: (min_time, max_time),
            tsdbs: Vec::new(),
            metadata: false,
        }
    }

    /// One TSDB the store serves: its external labels and its range. Its labels become a label set
    /// of the answer unless they are empty.
    pub fn tsdb(mut self, labels: Labels, min_time: i64, max_time: i64) -> InfoBuilder {
        self.tsdbs.push((labels, min_time, max_time));
        self
    }

    /// Whether the store serves `thanos.Metadata/MetricMetadata`.
    pub fn metadata(mut self, serves: bool) -> InfoBuilder {
        self.metadata = serves;
        self
    }

    pub fn build(self) -> infopb::InfoResponse {
        let (min_time, max_time) = self.range;
        let zset = |l: &Labels| pb::ZLabelSet {
            labels: labels_to_proto(l),
        };
        let mut label_sets: Vec<&Labels> = self
            .tsdbs
            .iter()
            .map(|(l, _, _)| l)
            .filter(|l| !l.is_empty())
            .collect();
        label_sets.sort();
        label_sets.dedup();
        infopb::InfoResponse {
            label_sets: label_sets.into_iter().map(zset).collect(),
            component_type: self.component,
            store: Some(infopb::StoreInfo {
                min_time,
                max_time,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: self
                    .tsdbs
                    .iter()
                    .map(|(l, min, max)| infopb::TsdbInfo {
                        labels: Some(zset(l)),
                        min_time: *min,
                        max_time: *max,
                    })
                    .collect(),
            }),
            metric_metadata: self.metadata.then_some(infopb::MetricMetadataInfo {}),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_leave_out_empty_ones_and_tsdbs_keep_their_ranges() {
        let a = Labels::from_pairs([("cluster", "a")]);
        let r = InfoBuilder::new("store", 0, 100)
            .tsdb(a.clone(), 0, 50)
            .tsdb(Labels::empty(), 10, 100)
            .tsdb(a, 60, 100)
            .build();
        assert_eq!(r.component_type, "store");
        assert_eq!(r.label_sets.len(), 1);
        let s = r.store.unwrap_or_default();
        assert_eq!((s.min_time, s.max_time), (0, 100));
        assert_eq!(s.tsdb_infos.len(), 3);
        assert!(s.supports_without_replica_labels && !s.supports_sharding);
        assert!(r.metric_metadata.is_none());
    }
}
