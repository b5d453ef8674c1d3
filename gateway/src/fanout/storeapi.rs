//! The fan-out as a StoreAPI store (`ComponentType` "query"), so gateways can be layered.

use super::*;

#[async_trait::async_trait]
impl Store for Fanout {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let mut tsdbs = Vec::new();
        let mut metadata = false;
        for s in self.set.stores() {
            let Some(meta) = &s.meta else { continue };
            if s.unhealthy.is_some() {
                continue;
            }
            min_time = min_time.min(meta.min_time);
            max_time = max_time.max(meta.max_time);
            metadata |= meta.serves_metadata;
            for ls in &meta.label_sets {
                tsdbs.push((ls.clone(), meta.min_time, meta.max_time));
            }
        }
        let info = tsdbs.into_iter().fold(
            InfoBuilder::new("query", min_time, max_time),
            |b, (l, lo, hi)| b.tsdb(l, lo, hi),
        );
        Ok(info.metadata(metadata).build())
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let strategy = PartialResponse::from_request(
            req.partial_response_disabled,
            req.partial_response_strategy,
        );
        let (mint, maxt, limit, skip) = (req.min_time, req.max_time, req.limit, req.skip_chunks);
        let func = req
            .query_hints
            .as_ref()
            .and_then(|h| h.func.as_ref())
            .map(|f| f.name.clone());
        let (groups, warnings, _) = self.fetch_groups(req, strategy, &Scope::default()).await?;
        let mut frames: Vec<Result<SeriesFrame>> = Vec::with_capacity(groups.len() + 1);
        for g in groups {
            if limit > 0 && frames.len() as i64 >= limit {
                break;
            }
            let kind = self.series_kind(&g.labels, func.as_deref());
            let chunks = if skip {
                vec![]
            } else {
                merge_chunks(g.members, kind, mint, maxt)?
            };
            frames.push(Ok(SeriesFrame::Series(pb::Series {
                labels: g.labels.clone(),
                chunks,
            })));
        }
        frames.extend(warnings.into_iter().map(|w| Ok(SeriesFrame::Warning(w))));
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        self.label_names_with(req, &Scope::default()).await
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        self.label_values_with(req, &Scope::default()).await
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        use pb::metric_metadata_response::Result as R;
        let strategy = PartialResponse::from_request(false, req.partial_response_strategy);
        let (targets, mut warnings) =
            self.targets(&[], i64::MIN, i64::MAX, strategy, &Scope::default(), |m| {
                m.serves_metadata
            })?;
        let answers = self
            .call_all(&targets, strategy, None, &mut warnings, |t| {
                let (r, store) = (req.clone(), t.store.clone());
                async move {
                    let mut stream = store.metric_metadata(r).await?;
                    let mut frames = Vec::new();
                    while let Some(f) = stream.next().await {
                        frames.push(f?);
                    }
                    Ok(frames)
                }
            })
            .await?;
        let mut all: BTreeMap<String, Vec<pb::Meta>> = BTreeMap::new();
        for frame in answers.into_iter().flatten() {
            match frame.result {
                Some(R::Metadata(md)) => {
                    for (name, entry) in md.metadata {
                        let metas = all.entry(name).or_default();
                        for m in entry.metas {
                            if !metas.contains(&m) {
                                metas.push(m);
                            }
                        }
                    }
                }
                Some(R::Warning(w)) => warnings.push(w),
                None => {}
            }
        }
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let metadata = all
            .into_iter()
            .take(limit)
            .map(|(name, metas)| (name, pb::MetricMetadataEntry { metas }))
            .collect();
        let mut frames = vec![Ok(pb::MetricMetadataResponse {
            result: Some(R::Metadata(pb::MetricMetadata { metadata })),
        })];
        frames.extend(warnings.into_iter().map(|w| {
            Ok(pb::MetricMetadataResponse {
                result: Some(R::Warning(w)),
            })
        }));
        Ok(Box::pin(futures::stream::iter(frames)))
    }
}
