//! The fan-out for one query: the `Queryable` the PromQL engine reads through.

use super::*;
use crate::queryable::HPoint;

/// The fan-out for one query: what the PromQL engine reads through.
#[derive(Debug, Clone)]
pub struct Querier {
    pub(super) fanout: Arc<Fanout>,
    pub(super) opts: QueryOptions,
    pub(super) stores_asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl Querier {
    /// The most stores one selection of this query asked (for the query log).
    pub fn stores_asked(&self) -> usize {
        self.stores_asked.load(AtomicOrdering::Relaxed)
    }

    pub(super) fn scope(&self) -> Scope<'_> {
        Scope {
            deadline: self.opts.deadline,
            store_match: &self.opts.store_match,
        }
    }

    pub(super) fn strategy(&self) -> PartialResponse {
        self.opts
            .partial_response
            .unwrap_or(self.fanout.opts.partial_response)
    }

    /// The labels removed and merged over: the replica labels when deduplicating, none otherwise.
    pub(super) fn without(&self) -> Vec<String> {
        if !self.opts.dedup {
            return vec![];
        }
        self.opts
            .replica_labels
            .clone()
            .unwrap_or_else(|| self.fanout.opts.replica_labels.clone())
    }

    pub(super) fn labels_request_parts(&self, req: &LabelsRequest) -> (Vec<pb::LabelMatcher>, i64) {
        (
            req.matchers.iter().map(matcher_to_proto).collect(),
            i64::try_from(req.limit).unwrap_or(0),
        )
    }
}

#[async_trait::async_trait]
impl Queryable for Querier {
    async fn select(&self, req: SelectRequest) -> Result<Selected> {
        let strategy = self.strategy();
        // Prometheus' hint for lookups that need no samples (`/api/v1/series`).
        let skip_chunks = req.hints.func.as_deref() == Some("series");
        let plan = ReadPlan::new(req.hints.func.as_deref(), self.opts.max_source_resolution);
        let hints = pb::QueryHints {
            step_millis: req.hints.step_ms,
            func: req
                .hints
                .func
                .as_ref()
                .map(|name| pb::Func { name: name.clone() }),
            range: (req.hints.range_ms > 0).then_some(pb::Range {
                millis: req.hints.range_ms,
            }),
            ..Default::default()
        };
        let sreq = pb::SeriesRequest {
            min_time: req.start,
            max_time: req.end,
            matchers: req.matchers.iter().map(matcher_to_proto).collect(),
            partial_response_strategy: strategy.to_proto(),
            without_replica_labels: self.without(),
            query_hints: Some(hints),
            hints: store_hint(&req.hints),
            skip_chunks,
            max_resolution_window: plan.max_resolution,
            aggregates: plan.aggregates(),
            ..Default::default()
        };
        let (groups, warnings, asked) = self
            .fanout
            .fetch_groups(sreq, strategy, &self.scope())
            .await?;
        self.stores_asked.fetch_max(asked, AtomicOrdering::Relaxed);
        let mut series = Vec::with_capacity(groups.len());
        if skip_chunks {
            series.extend(groups.into_iter().map(|g| SeriesData {
                labels: g.labels,
                samples: vec![],
                ..Default::default()
            }));
            return Ok(Selected { series, warnings });
        }
        for g in groups {
            let kind = self
                .fanout
                .series_kind(&g.labels, req.hints.func.as_deref());
            let decoded = |m: &pb::Series| {
                match plan.want {
                    None => decode_range(&m.chunks, req.start, req.end),
                    Some(w) => downsampled::decode_aggregates(&m.chunks, req.start, req.end, w),
                }
                .map_err(|e| e.context(&g.labels))
            };
            // Native histograms are read at raw resolution only (nothing downsamples them).
            let histograms = |m: &pb::Series| {
                super::chunks::decode_histograms(&m.chunks, req.start, req.end)
                    .map_err(|e| e.context(&g.labels))
            };
            let (samples, hists) = if let [one] = &g.members[..] {
                let (h, stale) = histograms(one)?;
                (with_stale(decoded(one)?, stale), h)
            } else {
                let copies = g
                    .members
                    .iter()
                    .map(|m| Ok(with_stale(decoded(m)?, histograms(m)?.1)))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&[Sample]> = copies.iter().map(Vec::as_slice).collect();
                let hcopies = g
                    .members
                    .iter()
                    .map(|m| Ok(histograms(m)?.0))
                    .collect::<Result<Vec<_>>>()?;
                let hrefs: Vec<&[HPoint]> = hcopies.iter().map(Vec::as_slice).collect();
                (
                    merge_replicas(&refs, kind),
                    crate::dedup::merge_histogram_replicas(&hrefs),
                )
            };
            if !samples.is_empty() || !hists.is_empty() {
                series.push(SeriesData {
                    labels: g.labels,
                    samples,
                    histograms: hists,
                    counts: plan.counts(),
                });
            }
        }
        Ok(Selected { series, warnings })
    }

    async fn label_names(&self, req: LabelsRequest) -> Result<Named> {
        let (matchers, limit) = self.labels_request_parts(&req);
        let r = pb::LabelNamesRequest {
            start: req.start,
            end: req.end,
            matchers,
            limit,
            partial_response_strategy: self.strategy().to_proto(),
            without_replica_labels: self.without(),
            ..Default::default()
        };
        let mut r = self.fanout.label_names_with(r, &self.scope()).await?;
        let names = std::mem::take(&mut r.names);
        Ok(Named {
            names,
            warnings: r.warnings,
        })
    }

    async fn label_values(&self, name: &str, req: LabelsRequest) -> Result<Named> {
        let (matchers, limit) = self.labels_request_parts(&req);
        let r = pb::LabelValuesRequest {
            label: name.to_owned(),
            start: req.start,
            end: req.end,
            matchers,
            limit,
            partial_response_strategy: self.strategy().to_proto(),
            without_replica_labels: self.without(),
            ..Default::default()
        };
        let r = self.fanout.label_values_with(r, &self.scope()).await?;
        Ok(Named {
            names: r.values,
            warnings: r.warnings,
        })
    }
}

/// Meridian's read hint for stores (`meridian_storeapi::trim`), when the engine knows how a selection
/// is read.
fn store_hint(h: &crate::queryable::SelectHints) -> Option<prost_types::Any> {
    use meridian_storeapi::trim::SeriesWindows;
    let w = match (h.last_sample_within, h.step_windows) {
        (Some(window_millis), _) => SeriesWindows {
            step_millis: 0,
            window_millis,
            last_only: true,
        },
        (None, Some((step_millis, window_millis))) => SeriesWindows {
            step_millis,
            window_millis,
            last_only: false,
        },
        (None, None) => return None,
    };
    Some(w.to_any())
}

/// Float samples with the stale markers of histograms joined in (by time; a float at the same time
/// wins).
fn with_stale(mut floats: Vec<Sample>, stale: Vec<Sample>) -> Vec<Sample> {
    if stale.is_empty() {
        return floats;
    }
    for s in stale {
        let at = floats.partition_point(|x| x.t < s.t);
        if floats.get(at).is_none_or(|x| x.t != s.t) {
            floats.insert(at, s);
        }
    }
    floats
}
