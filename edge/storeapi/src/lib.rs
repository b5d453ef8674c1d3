//! The Thanos StoreAPI: the seam every data source of Meridian sits behind.
//!
//! - [`Store`] is the one trait: the in-memory store, the edge TSDB, the bucket store and the gateway's
//!   fan-out implement it, and the gRPC server ([`server`]) and client ([`client`]) translate it to and from
//!   the wire. Requests and responses are the wire messages themselves, so nothing is lost in between.
//! - [`ExternalLabels`] holds the rules every leaf store shares: external labels are added to (and override)
//!   series labels, matchers on them are answered from the external labels alone, and
//!   `without_replica_labels` removes only external labels.
//! - The acceptance suite (feature `acceptance`) checks the whole contract against any implementation.

use std::pin::Pin;

use futures::Stream;

use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::series::MetricMeta;

#[cfg(feature = "acceptance")]
pub mod acceptance;
pub mod client;
pub mod info;
pub mod leaf;
pub mod limits;
pub mod memstore;
pub mod multi;
pub mod partial;
pub mod rw_histogram;
pub mod server;
pub mod trim;
pub mod wire;
pub mod writer;

/// A metric family's TYPE/HELP/UNIT on the wire.
pub fn meta_to_proto(m: &MetricMeta) -> pb::Meta {
    pb::Meta {
        r#type: m.kind.clone(),
        help: m.help.clone(),
        unit: m.unit.clone(),
    }
}

/// A metric family's TYPE/HELP/UNIT from the wire.
pub fn meta_from_proto(m: &pb::Meta) -> MetricMeta {
    MetricMeta {
        kind: m.r#type.clone(),
        help: m.help.clone(),
        unit: m.unit.clone(),
    }
}

/// Generated protobuf code for the StoreAPI and remote write, from the `.proto` files in `proto/`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod thanos {
        tonic::include_proto!("thanos");
        pub use crate::wire::{Series, SeriesBatch, SeriesResponse, series_response};
        pub mod info {
            tonic::include_proto!("thanos.info");
        }
    }
    pub mod prometheus {
        tonic::include_proto!("prometheus");
    }
}

/// gRPC message size limit for StoreAPI clients and servers, both directions. Series frames of large
/// queries exceed gRPC's 4 MiB default by far; Thanos allows ~2 GiB.
pub const MAX_MESSAGE_SIZE: usize = (i32::MAX) as usize;

/// One frame of a `Series` answer, batches already flattened.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesFrame {
    Series(pb::Series),
    Warning(String),
}

/// A stream of series frames; an `Err` ends it.
pub type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesFrame>> + Send>>;

/// A stream of metadata frames.
pub type MetadataStream = Pin<Box<dyn Stream<Item = Result<pb::MetricMetadataResponse>> + Send>>;

/// The StoreAPI, as implemented by every store of Meridian. See the module documentation.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `thanos.info.Info/Info`: external labels, component type, time range, served APIs.
    async fn info(&self) -> Result<infopb::InfoResponse>;

    /// `thanos.Store/Series`: series sorted by label set, each complete before the next. Batching by
    /// `response_batch_size` is done by the gRPC server, not by implementations.
    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream>;

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse>;

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse>;

    /// `thanos.Metadata/MetricMetadata`. Stores without metadata keep the default.
    async fn metric_metadata(&self, _req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        Err(Error::new(
            meridian_core::error::ErrorKind::Unimplemented,
            "this store serves no metric metadata",
        ))
    }
}

/// Converts wire labels to a [`Labels`] (sorting them and dropping empty values).
pub fn labels_from_proto(labels: &[pb::Label]) -> Labels {
    Labels::from_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// Converts a [`Labels`] to wire labels, sorted by name.
pub fn labels_to_proto(labels: &Labels) -> Vec<pb::Label> {
    labels
        .iter()
        .map(|l| pb::Label {
            name: l.name.to_owned(),
            value: l.value.to_owned(),
        })
        .collect()
}

/// Compiles a wire matcher; errors name the matcher.
pub fn matcher_from_proto(m: &pb::LabelMatcher) -> Result<Matcher> {
    use pb::label_matcher::Type;
    let kind = match Type::try_from(m.r#type) {
        Ok(Type::Eq) => MatchType::Equal,
        Ok(Type::Neq) => MatchType::NotEqual,
        Ok(Type::Re) => MatchType::Regex,
        Ok(Type::Nre) => MatchType::NotRegex,
        Err(_) => {
            return Err(Error::bad_data(format!(
                "matcher on label {:?} has unknown type {}",
                m.name, m.r#type
            )));
        }
    };
    Ok(Matcher::new(kind, m.name.clone(), m.value.clone())?)
}

/// Compiles every wire matcher.
pub fn matchers_from_proto(ms: &[pb::LabelMatcher]) -> Result<Vec<Matcher>> {
    ms.iter().map(matcher_from_proto).collect()
}

/// The wire form of a matcher.
pub fn matcher_to_proto(m: &Matcher) -> pb::LabelMatcher {
    use pb::label_matcher::Type;
    let t = match m.kind() {
        MatchType::Equal => Type::Eq,
        MatchType::NotEqual => Type::Neq,
        MatchType::Regex => Type::Re,
        MatchType::NotRegex => Type::Nre,
    };
    pb::LabelMatcher {
        r#type: t as i32,
        name: m.name().to_owned(),
        value: m.value().to_owned(),
    }
}

/// A store's external labels and the rules for applying them (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalLabels {
    labels: Labels,
}

impl ExternalLabels {
    pub fn new(labels: Labels) -> ExternalLabels {
        ExternalLabels { labels }
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Answers matchers on external labels from the external labels alone: `None` when one of them
    /// rejects the external value (nothing in this store can match), otherwise the matchers left for the
    /// series' own labels.
    pub fn filter_matchers(&self, matchers: Vec<Matcher>) -> Option<Vec<Matcher>> {
        let mut rest = Vec::with_capacity(matchers.len());
        for m in matchers {
            match self.labels.get(m.name()) {
                Some(v) => {
                    if !m.matches(v) {
                        return None;
                    }
                }
                None => rest.push(m),
            }
        }
        Some(rest)
    }

    /// The label set a series is served with: its own labels extended by the external labels (which win
    /// on a clash, as in Thanos), minus the `without` labels that are external labels.
    pub fn apply(&self, series: &Labels, without: &[String]) -> Labels {
        let merged = series.merged_with(&self.labels);
        if without.iter().any(|w| self.labels.has(w)) {
            let drop: Vec<&String> = without.iter().filter(|w| self.labels.has(w)).collect();
            merged.without(&drop)
        } else {
            merged
        }
    }

    /// External label names that survive `without`.
    pub fn names_without(&self, without: &[String]) -> impl Iterator<Item = &str> {
        self.labels
            .iter()
            .filter(move |l| !without.iter().any(|w| w == l.name))
            .map(|l| l.name)
    }
}

/// A `SeriesRequest` checked and compiled.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub min_time: i64,
    pub max_time: i64,
    pub matchers: Vec<Matcher>,
    pub skip_chunks: bool,
    /// 0 = unlimited.
    pub limit: usize,
    pub without_replica_labels: Vec<String>,
}

impl SeriesQuery {
    pub fn from_request(r: &pb::SeriesRequest) -> Result<SeriesQuery> {
        Ok(SeriesQuery {
            min_time: r.min_time,
            max_time: r.max_time,
            matchers: matchers_from_proto(&r.matchers)?,
            skip_chunks: r.skip_chunks,
            limit: usize::try_from(r.limit).unwrap_or(0),
            without_replica_labels: r.without_replica_labels.clone(),
        })
    }
}

/// The error Thanos stores give for a request whose only matchers are on external labels.
pub fn no_series_matchers_error() -> Error {
    Error::bad_data("no matchers specified (excluding external labels)")
}

/// A `LabelNames` answer of `names` (sorted and unique), cut to a request's `limit`.
pub fn label_names_answer(
    names: impl IntoIterator<Item = String>,
    limit: i64,
) -> pb::LabelNamesResponse {
    let mut names: Vec<String> = names.into_iter().collect();
    truncate_to_limit(&mut names, limit);
    pb::LabelNamesResponse {
        names,
        ..Default::default()
    }
}

/// A `LabelValues` answer of `values` (sorted and unique), cut to a request's `limit`.
pub fn label_values_answer(
    values: impl IntoIterator<Item = String>,
    limit: i64,
) -> pb::LabelValuesResponse {
    let mut values: Vec<String> = values.into_iter().collect();
    truncate_to_limit(&mut values, limit);
    pb::LabelValuesResponse {
        values,
        ..Default::default()
    }
}

/// Applies a `limit` field (`<= 0` = unlimited) to a sorted list.
pub fn truncate_to_limit<T>(v: &mut Vec<T>, limit: i64) {
    if let Ok(l) = usize::try_from(limit)
        && l > 0
    {
        v.truncate(l);
    }
}

/// The series request that selects everything a set of matchers selects, for clients.
pub fn series_request(
    min_time: i64,
    max_time: i64,
    matchers: &[Matcher],
    skip_chunks: bool,
) -> pb::SeriesRequest {
    pb::SeriesRequest {
        min_time,
        max_time,
        matchers: matchers.iter().map(matcher_to_proto).collect(),
        skip_chunks,
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn external_labels_rules() {
        let ext = ExternalLabels::new(Labels::from_pairs([("region", "eu"), ("replica", "r1")]));
        let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
        // A matcher on an external label is answered by it and removed.
        let rest = ext
            .filter_matchers(vec![
                m(MatchType::Regex, "region", "e.*"),
                m(MatchType::Equal, "job", "api"),
            ])
            .unwrap();
        assert_eq!(rest, vec![m(MatchType::Equal, "job", "api")]);
        assert!(
            ext.filter_matchers(vec![m(MatchType::Equal, "region", "us")])
                .is_none()
        );
        // Without-replica removes only external labels; external labels override series labels.
        let s = Labels::from_pairs([("job", "api"), ("region", "us")]);
        let out = ext.apply(&s, &["replica".into(), "job".into()]);
        assert_eq!(out, Labels::from_pairs([("job", "api"), ("region", "eu")]));
        assert_eq!(
            ext.names_without(&["replica".into()]).collect::<Vec<_>>(),
            vec!["region"]
        );
    }

    #[test]
    fn matcher_wire_roundtrip_and_errors() {
        let m = Matcher::new(MatchType::NotRegex, "a", "b|c").unwrap();
        assert_eq!(matcher_from_proto(&matcher_to_proto(&m)).unwrap(), m);
        let bad = pb::LabelMatcher {
            r#type: 9,
            name: "x".into(),
            value: "y".into(),
        };
        let e = matcher_from_proto(&bad).unwrap_err();
        assert_eq!(e.kind, meridian_core::error::ErrorKind::BadData);
        assert!(e.message.contains("\"x\""), "{}", e.message);
    }
}
