//! Store selection and the parallel calls: which stores can hold part of the answer, asked at once,
//! each within its timeout and the query deadline.

use super::*;

impl Fanout {
    pub fn new(set: Arc<dyn StoreSet>, opts: FanoutOptions) -> Fanout {
        Fanout {
            set,
            opts,
            metrics: Arc::new(FanoutMetrics::new()),
        }
    }

    /// Store latencies and errors, merged series (register them to export).
    pub fn metrics(&self) -> &Arc<FanoutMetrics> {
        &self.metrics
    }

    pub fn options(&self) -> &FanoutOptions {
        &self.opts
    }

    pub fn store_set(&self) -> &Arc<dyn StoreSet> {
        &self.set
    }

    /// A [`Queryable`] for one query with these options.
    pub fn querier(self: &Arc<Self>, opts: QueryOptions) -> Querier {
        Querier {
            fanout: self.clone(),
            opts,
            stores_asked: Default::default(),
        }
    }

    /// The stores to ask, and the problems (stores that should be asked but cannot) under `strategy`.
    pub(super) fn targets(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        strategy: PartialResponse,
        scope: &Scope<'_>,
        wanted: impl Fn(&StoreMeta) -> bool,
    ) -> Result<(Vec<StoreRef>, Vec<String>)> {
        let mut targets = Vec::new();
        let mut warnings = Vec::new();
        for s in self.set.stores() {
            if let Some(meta) = &s.meta
                && !scope.admits(&s.name, meta)
            {
                continue;
            }
            let problem = match (&s.meta, &s.unhealthy) {
                (None, reason) => format!(
                    "{}: not ready (no Info answer yet{})",
                    s.name,
                    reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                (Some(meta), _) if !wanted(meta) || !meta.may_match(matchers, mint, maxt) => {
                    continue;
                }
                (Some(_), Some(reason)) => format!("{}: unhealthy: {reason}", s.name),
                (Some(_), None) => {
                    targets.push(s);
                    continue;
                }
            };
            match strategy {
                PartialResponse::Warn => warnings.push(problem),
                PartialResponse::Abort => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("partial response disabled and a store cannot answer: {problem}"),
                    ));
                }
            }
        }
        Ok((targets, warnings))
    }

    /// Runs `call` on every target in parallel, each within the store timeout, all within the deadline;
    /// failures become warnings or the error, per `strategy`.
    pub(super) async fn call_all<T, F, Fut>(
        &self,
        targets: &[StoreRef],
        strategy: PartialResponse,
        deadline: Option<Instant>,
        warnings: &mut Vec<String>,
        call: F,
    ) -> Result<Vec<T>>
    where
        F: Fn(&StoreRef) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let store_timeout = self.opts.store_timeout;
        let calls = targets.iter().map(|t| {
            let fut = call(t);
            let metrics = self.metrics.clone();
            async move {
                let started = std::time::Instant::now();
                let label = StoreLabel {
                    store: t.name.clone(),
                };
                let r = match store_timeout {
                    Some(d) => tokio::time::timeout(d, fut).await.unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::Timeout,
                            format!("no answer within {d:?} (--store.response-timeout)"),
                        ))
                    }),
                    None => fut.await,
                };
                metrics
                    .store_duration
                    .get_or_create(&label)
                    .observe(started.elapsed().as_secs_f64());
                if r.is_err() {
                    metrics.store_errors.get_or_create(&label).inc();
                }
                r
            }
        });
        let all = join_all(calls);
        let results = match deadline {
            Some(d) => tokio::time::timeout_at(d, all).await.map_err(|_| {
                Error::new(ErrorKind::Timeout, "query timed out waiting for stores")
            })?,
            None => all.await,
        };
        let mut out = Vec::with_capacity(results.len());
        for (t, r) in targets.iter().zip(results) {
            match r {
                Ok(v) => out.push(v),
                Err(e) if matches!(e.kind, ErrorKind::BadData | ErrorKind::LimitExceeded) => {
                    return Err(e);
                }
                Err(e) => {
                    let problem = format!("{}: {}", t.name, e.message);
                    match strategy {
                        PartialResponse::Warn => warnings.push(problem),
                        PartialResponse::Abort => return Err(Error::new(e.kind, problem)),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fetches `req` from every selected store and groups the series by labels (k-way merge).
    ///
    /// `storeMatch[]` picks stores by their label sets; a store holding several (a receiver's
    /// tenants) is also narrowed to the sets a single `storeMatch[]` selects, by sending that set's
    /// matchers on its external labels with the request (stores answer those from their external
    /// labels). Beyond Thanos, whose receiver answers for every tenant once one matches.
    pub(super) async fn fetch_groups(
        &self,
        req: pb::SeriesRequest,
        strategy: PartialResponse,
        scope: &Scope<'_>,
    ) -> Result<(Vec<Group>, Vec<String>, usize)> {
        let matchers = matchers_from_proto(&req.matchers)?;
        if matchers.is_empty() {
            return Err(Error::bad_data("no matchers specified"));
        }
        let (targets, mut warnings) = self.targets(
            &matchers,
            req.min_time,
            req.max_time,
            strategy,
            scope,
            |_| true,
        )?;
        let budget = Arc::new(Budget::new(self.opts.limits));
        let answers = self
            .call_all(&targets, strategy, scope.deadline, &mut warnings, |t| {
                // Stores that do not support without_replica_labels send those external labels anyway.
                let strip: Vec<String> = match &t.meta {
                    Some(m) if !m.supports_without_replica_labels => req
                        .without_replica_labels
                        .iter()
                        .filter(|l| m.label_sets.iter().any(|ls| ls.has(l)))
                        .cloned()
                        .collect(),
                    _ => vec![],
                };
                let received = self
                    .metrics
                    .store_bytes
                    .get_or_create(&StoreLabel {
                        store: t.name.clone(),
                    })
                    .clone();
                fetch_one(
                    t.store.clone(),
                    narrowed(&req, t.meta.as_ref(), scope),
                    budget.clone(),
                    strip,
                    received,
                )
            })
            .await?;
        let mut lists = Vec::with_capacity(answers.len());
        for (list, w) in answers {
            warnings.extend(w);
            lists.push(list);
        }
        let groups = merge_sorted(lists);
        self.metrics.series_total.inc_by(groups.len() as u64);
        self.metrics
            .series_merged
            .inc_by(groups.iter().filter(|g| g.members.len() > 1).count() as u64);
        Ok((groups, warnings, targets.len()))
    }

    pub(super) fn series_kind(&self, labels: &Labels, func: Option<&str>) -> SeriesKind {
        let name = labels.metric_name().unwrap_or("");
        kind_of(name, self.set.metric_type(name).as_deref(), func)
    }

    /// Asks every selected store `call` and joins the answers' strings (names or values) into one
    /// sorted, deduplicated, limited list; `split` takes a store's answer apart into strings and warnings.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn label_query<T, F, Fut>(
        &self,
        matchers: &[pb::LabelMatcher],
        (start, end): (i64, i64),
        (disabled, strategy): (bool, i32),
        limit: i64,
        scope: &Scope<'_>,
        call: F,
        split: fn(T) -> (Vec<String>, Vec<String>),
    ) -> Result<(Vec<String>, Vec<String>)>
    where
        F: Fn(&StoreRef) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let strategy = PartialResponse::from_request(disabled, strategy);
        let matchers = matchers_from_proto(matchers)?;
        let (targets, mut warnings) =
            self.targets(&matchers, start, end, strategy, scope, |_| true)?;
        let answers = self
            .call_all(&targets, strategy, scope.deadline, &mut warnings, call)
            .await?;
        let mut set = BTreeSet::new();
        for a in answers {
            let (strings, w) = split(a);
            set.extend(strings);
            warnings.extend(w);
        }
        let mut out: Vec<String> = set.into_iter().collect();
        truncate_to_limit(&mut out, limit);
        Ok((out, warnings))
    }

    /// `LabelNames` over every store in `scope`.
    pub async fn label_names_with(
        &self,
        req: pb::LabelNamesRequest,
        scope: &Scope<'_>,
    ) -> Result<pb::LabelNamesResponse> {
        let (names, warnings) = self
            .label_query(
                &req.matchers,
                (req.start, req.end),
                (req.partial_response_disabled, req.partial_response_strategy),
                req.limit,
                scope,
                |t| {
                    let (r, store) = (req.clone(), t.store.clone());
                    async move { store.label_names(r).await }
                },
                |a| (a.names, a.warnings),
            )
            .await?;
        Ok(pb::LabelNamesResponse {
            names,
            warnings,
            hints: None,
        })
    }

    /// `LabelValues` over every store in `scope`.
    pub async fn label_values_with(
        &self,
        req: pb::LabelValuesRequest,
        scope: &Scope<'_>,
    ) -> Result<pb::LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::bad_data("label values request without a label name"));
        }
        let (values, warnings) = self
            .label_query(
                &req.matchers,
                (req.start, req.end),
                (req.partial_response_disabled, req.partial_response_strategy),
                req.limit,
                scope,
                |t| {
                    let (r, store) = (req.clone(), t.store.clone());
                    async move { store.label_values(r).await }
                },
                |a| (a.values, a.warnings),
            )
            .await?;
        Ok(pb::LabelValuesResponse {
            values,
            warnings,
            hints: None,
        })
    }
}

pub(super) async fn fetch_one(
    store: Arc<dyn Store>,
    req: pb::SeriesRequest,
    budget: Arc<Budget>,
    strip: Vec<String>,
    received: prometheus_client::metrics::counter::Counter,
) -> Result<(StoreSeries, Vec<String>)> {
    let mut stream = store.series(req).await?;
    let mut out: StoreSeries = Vec::new();
    let mut warnings = Vec::new();
    while let Some(frame) = stream.next().await {
        match frame? {
            SeriesFrame::Series(s) => {
                received.inc_by(prost::Message::encoded_len(&s) as u64);
                budget.charge(&s)?;
                let mut labels = s.labels.clone();
                if strip.iter().any(|l| labels.has(l)) {
                    labels = labels.without(&strip);
                }
                out.push((labels, s));
            }
            SeriesFrame::Warning(w) => warnings.push(w),
        }
    }
    if !out.windows(2).all(|w| w[0].0 <= w[1].0) {
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok((out, warnings))
}

/// `req` for one store: with a single `storeMatch[]` set and a store of several label sets, that
/// set's matchers on the store's external label names added (see [`Fanout::fetch_groups`]).
fn narrowed(
    req: &pb::SeriesRequest,
    meta: Option<&StoreMeta>,
    scope: &Scope<'_>,
) -> pb::SeriesRequest {
    let mut req = req.clone();
    if let ([set], Some(meta)) = (scope.store_match, meta)
        && meta.label_sets.len() > 1
    {
        req.matchers.extend(
            set.iter()
                .filter(|m| {
                    m.name() != "__address__" && meta.label_sets.iter().any(|ls| ls.has(m.name()))
                })
                .map(matcher_to_proto),
        );
    }
    req
}
