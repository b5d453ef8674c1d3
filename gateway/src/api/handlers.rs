//! The other endpoints: reload, stores, metrics, runtime info, series, label names and values,
//! metadata, exemplars.

use super::*;

/// `POST /-/reload`: reloads the rule files; 500 with the reason when they are refused.
pub(super) async fn reload(State(api): State<Arc<Api>>) -> Response {
    match api.rules.get() {
        None => (StatusCode::OK, "no rule files to reload\n").into_response(),
        Some(r) => match r.reload().await {
            Ok(()) => (StatusCode::OK, "").into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to reload rule files: {e}\n"),
            )
                .into_response(),
        },
    }
}

pub(super) async fn stores(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        (api.stores)().to_string(),
    )
        .into_response()
}

pub(super) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics_text(),
    )
        .into_response()
}

pub(super) fn runtime_info(api: &Api) -> serde_json::Value {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    serde_json::json!({
        "startTime": meridian_core::time::rfc3339(Some(api.started)),
        "CWD": cwd,
        "reloadConfigSuccess": true,
        "lastConfigTime": meridian_core::time::rfc3339(Some(api.started)),
        "corruptionCount": 0,
        "goroutineCount": tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_alive_tasks()),
        "GOMAXPROCS": threads,
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": "",
    })
}

/// The labels-cache key of a request: what is asked and every parameter.
pub(super) fn labels_key(what: &str, p: &Params) -> String {
    let mut pairs: Vec<&(String, String)> = p.pairs().iter().collect();
    pairs.sort();
    format!("{what}\u{0}{pairs:?}")
}

pub(super) async fn series(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    if p.all("match[]").is_empty() {
        return Err(Error::bad_data("no match[] parameter provided"));
    }
    let limit = p.limit()?;
    let (start, end) = range_params(p)?;
    let sets = p
        .matcher_sets("match[]")
        .map_err(|e| invalid_param("match[]", &e.message))?;
    let opts = query_options(p, Some(deadline(api)))?;
    let querier = api.fanout.querier(opts);
    let (data, warnings) = api
        .cache
        .labels(labels_key("\u{0}series", p), || async move {
            let mut all: Vec<Labels> = Vec::new();
            let mut warnings = Vec::new();
            for matchers in sets {
                let got = querier
                    .select(SelectRequest {
                        matchers,
                        start,
                        end,
                        hints: SelectHints {
                            func: Some("series".into()),
                            ..Default::default()
                        },
                    })
                    .await?;
                warnings.extend(got.warnings);
                all.extend(got.series.into_iter().map(|s| s.labels));
            }
            all.sort();
            all.dedup();
            truncate(&mut all, limit, &mut warnings);
            let mut out = Vec::with_capacity(all.len() * 64);
            json::label_sets(&mut out, &all);
            Ok((out, warnings))
        })
        .await?;
    Ok(Answer::data(data, warnings))
}

pub(super) fn deadline(api: &Api) -> tokio::time::Instant {
    tokio::time::Instant::now() + api.opts.engine.timeout
}

/// Label names (`name` = `None`) or one label's values: one call per `match[]` set (one call without
/// matchers when there is none), the union sorted and limited.
pub(super) async fn labels(api: &Arc<Api>, name: Option<String>, p: &Params) -> Result<Answer> {
    let name = name.map(|n| params::unescape_label_name(&n));
    if name.as_deref() == Some("") {
        return Err(Error::bad_data("invalid label name: \"\""));
    }
    let limit = p.limit()?;
    let (start, end) = range_params(p)?;
    let sets = p.matcher_sets("match[]")?;
    let querier = api.fanout.querier(query_options(p, Some(deadline(api)))?);
    let key = labels_key(name.as_deref().unwrap_or("\u{0}names"), p);
    let (data, warnings) = api
        .cache
        .labels(key, || async move {
            let sets = if sets.is_empty() { vec![vec![]] } else { sets };
            let mut names: Vec<String> = Vec::new();
            let mut warnings = Vec::new();
            for matchers in sets {
                let req = LabelsRequest {
                    matchers,
                    start,
                    end,
                    // One more than asked, so that truncation is noticed and warned about.
                    limit: if limit > 0 { limit + 1 } else { 0 },
                };
                let got = match &name {
                    None => querier.label_names(req).await?,
                    Some(n) => querier.label_values(n, req).await?,
                };
                names.extend(got.names);
                warnings.extend(got.warnings);
            }
            names.sort();
            names.dedup();
            truncate(&mut names, limit, &mut warnings);
            let mut out = Vec::new();
            json::strings(&mut out, &names);
            Ok((out, warnings))
        })
        .await?;
    Ok(Answer::data(data, warnings))
}

pub(super) async fn metadata(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let number = |name: &str| -> Result<i64> {
        let v = p.get(name);
        if v.is_empty() {
            return Ok(-1);
        }
        v.parse::<i64>()
            .map_err(|_| Error::bad_data(format!("{name} must be a number")))
    };
    let limit = number("limit")?;
    let per_metric = number("limit_per_metric")?;
    let opts = query_options(p, None)?;
    let strategy = opts
        .partial_response
        .unwrap_or(api.fanout.options().partial_response);
    let req = pb::MetricMetadataRequest {
        metric: p.get("metric").to_owned(),
        limit: -1,
        partial_response_strategy: strategy.to_proto(),
    };
    let timed_out = || {
        Error::new(
            meridian_core::error::ErrorKind::Timeout,
            "metadata request timed out (--query.timeout)",
        )
    };
    let mut stream = tokio::time::timeout_at(deadline(api), api.fanout.metric_metadata(req))
        .await
        .map_err(|_| timed_out())??;
    let mut all: std::collections::BTreeMap<String, Vec<pb::Meta>> = Default::default();
    let mut warnings = Vec::new();
    while let Some(frame) = tokio::time::timeout_at(deadline(api), stream.next())
        .await
        .map_err(|_| timed_out())?
    {
        use pb::metric_metadata_response::Result as R;
        match frame?.result {
            // The fan-out sends one frame, merged over the stores.
            Some(R::Metadata(md)) => all.extend(md.metadata.into_iter().map(|(k, v)| (k, v.metas))),
            Some(R::Warning(w)) => warnings.push(w),
            None => {}
        }
    }
    let mut out = serde_json::Map::new();
    for (name, metas) in all {
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        let take = if per_metric > 0 {
            usize::try_from(per_metric).unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        let list: Vec<serde_json::Value> = metas
            .into_iter()
            .take(take)
            .map(|m| serde_json::json!({"type": m.r#type, "help": m.help, "unit": m.unit}))
            .collect();
        out.insert(name, serde_json::Value::Array(list));
    }
    Ok(Answer::data(
        serde_json::Value::Object(out).to_string().into_bytes(),
        warnings,
    ))
}

/// Exemplars are not stored yet: the request is checked as Prometheus checks it and answered with `[]`
/// (Grafana's probe sends millisecond timestamps; they parse as far-future seconds, as in Prometheus).
pub(super) async fn exemplars(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let (start, end) = range_params(p)?;
    if end < start {
        return Err(Error::bad_data(
            "end timestamp must not be before start timestamp",
        ));
    }
    let engine = request_engine(api, p)?;
    engine.check_length(p.get("query"))?;
    let text = p.get("query").to_owned();
    // The parser's own message, unprefixed, as Prometheus answers here.
    tokio::task::spawn_blocking(move || crate::promql::parse_expr(&text).map(drop))
        .await
        .map_err(|e| Error::internal(format!("query parsing failed: {e}")))?
        .map_err(Error::bad_data)?;
    Ok(Answer::data(b"[]".to_vec(), vec![]))
}
