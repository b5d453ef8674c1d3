//! One StoreAPI over several stores that each hold their own label sets: a receiver's tenants (one
//! TSDB per tenant, each with its own external labels, as Thanos' `MultiTSDBStore`), next to the
//! edge's own TSDB. The members can change while it serves (a tenant's first write opens its TSDB;
//! an idle tenant is closed).
//!
//! - `Info`: every member's label sets and TSDB ranges; the time range spans them all.
//! - `Series`: every member is asked (each answers matchers on its own external labels, so a
//!   `tenant_id` matcher reaches one tenant) and the sorted answers are merged into one sorted
//!   answer; two members' series with equal labels become one series with both chunk lists
//!   (ordered by time). Warnings pass through, an error ends the answer.
//! - Label names and values: the union, cut to the request's limit.
//! - Metadata: from the one member that serves it (the edge's own store).

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use meridian_core::error::Result;

use crate::info::InfoBuilder;
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use crate::{MetadataStream, SeriesFrame, SeriesStream, Store, labels_from_proto};

/// Stores answering as one. See the module documentation.
#[derive(Default)]
pub struct MultiStore {
    component: String,
    members: RwLock<Vec<Arc<dyn Store>>>,
    metadata: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for MultiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiStore")
            .field("component", &self.component)
            .field("members", &self.members().len())
            .finish_non_exhaustive()
    }
}

impl MultiStore {
    /// An empty store announcing itself as `component`; `metadata`: the member whose metric
    /// metadata is served (it must also be a member to serve series).
    pub fn new(component: &str, metadata: Option<Arc<dyn Store>>) -> MultiStore {
        MultiStore {
            component: component.to_owned(),
            members: RwLock::new(Vec::new()),
            metadata,
        }
    }

    /// The members now.
    pub fn members(&self) -> Vec<Arc<dyn Store>> {
        self.members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the members.
    pub fn set_members(&self, members: Vec<Arc<dyn Store>>) {
        *self
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = members;
    }
}

#[async_trait::async_trait]
impl Store for MultiStore {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let mut range = (i64::MAX, i64::MIN);
        let mut tsdbs = Vec::new();
        for m in self.members() {
            let info = m.info().await?;
            let Some(store) = info.store else { continue };
            range = (range.0.min(store.min_time), range.1.max(store.max_time));
            for t in store.tsdb_infos {
                let labels = t
                    .labels
                    .map(|z| labels_from_proto(&z.labels))
                    .unwrap_or_default();
                tsdbs.push((labels, t.min_time, t.max_time));
            }
        }
        if range.0 > range.1 {
            // No member yet: nothing to answer for, as an empty TSDB announces.
            range = (i64::MAX, i64::MIN);
        }
        let mut b =
            InfoBuilder::new(&self.component, range.0, range.1).metadata(self.metadata.is_some());
        for (l, min, max) in tsdbs {
            b = b.tsdb(l, min, max);
        }
        Ok(b.build())
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let mut streams = Vec::new();
        for m in self.members() {
            streams.push(m.series(req.clone()).await?);
        }
        let limit = usize::try_from(req.limit).unwrap_or(0);
        Ok(merge(streams, limit))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        let mut names = std::collections::BTreeSet::new();
        let mut warnings = Vec::new();
        for m in self.members() {
            let r = m.label_names(req.clone()).await?;
            names.extend(r.names);
            warnings.extend(r.warnings);
        }
        let mut out = crate::label_names_answer(names, req.limit);
        out.warnings = warnings;
        Ok(out)
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        let mut values = std::collections::BTreeSet::new();
        let mut warnings = Vec::new();
        for m in self.members() {
            let r = m.label_values(req.clone()).await?;
            values.extend(r.values);
            warnings.extend(r.warnings);
        }
        let mut out = crate::label_values_answer(values, req.limit);
        out.warnings = warnings;
        Ok(out)
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        match &self.metadata {
            Some(m) => m.metric_metadata(req).await,
            None => Ok(Box::pin(futures::stream::empty())),
        }
    }
}

/// Merges sorted series streams into one sorted stream (at most `limit` series when `limit > 0`).
/// A head is pulled from a stream only when the previous one was sent, so at most one series per
/// member is held.
pub fn merge(streams: Vec<SeriesStream>, limit: usize) -> SeriesStream {
    struct St {
        streams: Vec<Option<SeriesStream>>,
        heads: Vec<Option<pb::Series>>,
        sent: usize,
        failed: bool,
    }
    let n = streams.len();
    let st = St {
        streams: streams.into_iter().map(Some).collect(),
        heads: vec![None; n],
        sent: 0,
        failed: false,
    };
    Box::pin(futures::stream::unfold(st, move |mut st| async move {
        if st.failed || (limit > 0 && st.sent >= limit) {
            return None;
        }
        // Fill every empty head; warnings go out as they come.
        for i in 0..st.streams.len() {
            if st.heads[i].is_some() {
                continue;
            }
            while let Some(s) = st.streams[i].as_mut() {
                match s.next().await {
                    None => st.streams[i] = None,
                    Some(Err(e)) => {
                        st.failed = true;
                        return Some((Err(e), st));
                    }
                    Some(Ok(SeriesFrame::Warning(w))) => {
                        return Some((Ok(SeriesFrame::Warning(w)), st));
                    }
                    Some(Ok(SeriesFrame::Series(x))) => {
                        st.heads[i] = Some(x);
                        break;
                    }
                }
            }
        }
        let first = st
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
            .min_by(|a, b| a.1.labels.cmp(&b.1.labels))
            .map(|(i, _)| i)?;
        let mut out = st.heads[first].take()?;
        let mut merged = false;
        for h in st.heads.iter_mut().skip(first + 1) {
            if h.as_ref().is_some_and(|x| x.labels == out.labels)
                && let Some(x) = h.take()
            {
                out.chunks.extend(x.chunks);
                merged = true;
            }
        }
        if merged {
            out.chunks.sort_by_key(|c| (c.min_time, c.max_time));
        }
        st.sent += 1;
        Some((Ok(SeriesFrame::Series(out)), st))
    }))
}
