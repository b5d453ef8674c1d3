//! Answers: the response envelope (`status`, `data`, `warnings`, `infos`), gzip, errors with their
//! `errorType`, and the dispatch of a request to its handler.

use super::*;

/// An endpoint's successful answer: the encoded `data`, warnings and infos.
pub(super) struct Answer {
    pub(super) data: Arc<Vec<u8>>,
    pub(super) warnings: Vec<String>,
    pub(super) infos: Vec<String>,
    /// The whole response, already encoded (a kept range answer): sent as it is.
    pub(super) whole: Option<Arc<CachedBody>>,
}

impl Answer {
    pub(super) fn data(data: impl Into<Arc<Vec<u8>>>, warnings: Vec<String>) -> Answer {
        Answer {
            data: data.into(),
            warnings,
            infos: vec![],
            whole: None,
        }
    }

    pub(super) fn whole(body: Arc<CachedBody>) -> Answer {
        Answer {
            data: Arc::default(),
            warnings: vec![],
            infos: vec![],
            whole: Some(body),
        }
    }

    pub(super) fn json(v: &serde_json::Value) -> Answer {
        Answer::data(v.to_string().into_bytes(), vec![])
    }
}

pub(super) async fn serve(
    api: Arc<Api>,
    ep: Endpoint,
    name: Option<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let result = match Params::parse(uri.query(), content_type, &body) {
        Ok(p) => dispatch(&api, ep, name, &p).await,
        Err(e) => Err(e),
    };
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q == 0.0))
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        });
    let (status, body, no_store, whole) = match result {
        Ok(Answer { whole: Some(w), .. }) => (StatusCode::OK, w.plain.clone(), false, Some(w)),
        Ok(a) => {
            let no_store = !a.warnings.is_empty();
            let bytes = json::success(&a.data, &a.warnings, &a.infos);
            (StatusCode::OK, Bytes::from(bytes), no_store, None)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Bytes::from(json::error(&e)), false, None)
        }
    };
    let method_label = if method == Method::POST {
        "POST"
    } else {
        "GET"
    };
    api.metrics.observe(
        ep.handler(),
        method_label,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    respond(status, body, gzip, no_store, whole).await
}

/// Gzips `body` (on a blocking thread when large).
pub(super) async fn gzip_bytes(body: Bytes) -> std::io::Result<Bytes> {
    let large = body.len() >= 256 << 10;
    let compress = move || {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        enc.write_all(&body)
            .and_then(|()| enc.finish())
            .map(Bytes::from)
    };
    if large {
        tokio::task::spawn_blocking(compress)
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
    } else {
        compress()
    }
}

/// The response, gzipped when the client accepts it (a kept response keeps its gzipped copy too).
pub(super) async fn respond(
    status: StatusCode,
    body: Bytes,
    gzip: bool,
    no_store: bool,
    whole: Option<Arc<CachedBody>>,
) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if no_store {
        builder = builder.header(header::CACHE_CONTROL, "no-store");
    }
    let body = if gzip && body.len() >= 1024 {
        let compressed = match &whole {
            Some(w) => w
                .gzip
                .get_or_try_init(|| gzip_bytes(body.clone()))
                .await
                .cloned(),
            None => gzip_bytes(body).await,
        };
        match compressed {
            Ok(c) => {
                builder = builder
                    .header(header::CONTENT_ENCODING, "gzip")
                    .header(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                c
            }
            Err(e) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("gzip: {e}")).into_response();
            }
        }
    } else {
        body
    };
    builder
        .body(Body::from(body))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

pub(super) async fn dispatch(
    api: &Arc<Api>,
    ep: Endpoint,
    name: Option<String>,
    p: &Params,
) -> Result<Answer> {
    match ep {
        Endpoint::Query => query(api, p).await,
        Endpoint::QueryRange => query_range(api, p).await,
        Endpoint::Series => series(api, p).await,
        Endpoint::Labels => labels(api, None, p).await,
        Endpoint::LabelValues => labels(api, Some(name.unwrap_or_default()), p).await,
        Endpoint::Metadata => metadata(api, p).await,
        Endpoint::Exemplars => exemplars(api, p).await,
        Endpoint::FormatQuery => {
            let engine = request_engine(api, p)?;
            let pretty = engine
                .parse_until(p.get("query"), engine.deadline(), |e| Ok(e.prettify()))
                .await?;
            let mut out = Vec::new();
            json::string(&mut out, &pretty);
            Ok(Answer::data(out, vec![]))
        }
        Endpoint::BuildInfo => Ok(Answer::json(&meridian_core::process_metrics::build_info())),
        Endpoint::Config => Ok(Answer::json(
            &serde_json::json!({ "yaml": api.opts.config_yaml }),
        )),
        Endpoint::Flags => {
            let map: serde_json::Map<String, serde_json::Value> = api
                .opts
                .flags
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            Ok(Answer::json(&serde_json::Value::Object(map)))
        }
        Endpoint::RuntimeInfo => Ok(Answer::json(&runtime_info(api))),
        Endpoint::Rules => {
            let kind = match p.get("type") {
                "" => None,
                "alert" => Some(crate::rules::FilterKind::Alert),
                "record" => Some(crate::rules::FilterKind::Record),
                other => {
                    return Err(Error::bad_data(format!(
                        "invalid query parameter type: {other:?}, must be \"alert\" or \"record\""
                    )));
                }
            };
            let owned = |name: &str| p.all(name).into_iter().map(str::to_owned).collect();
            let filter = crate::rules::RulesFilter {
                kind,
                names: owned("rule_name[]"),
                groups: owned("rule_group[]"),
                files: owned("file[]"),
            };
            Ok(Answer::json(&match api.rules.get() {
                Some(r) => r.rules_json(&filter),
                None => serde_json::json!({ "groups": [] }),
            }))
        }
        Endpoint::Alerts => Ok(Answer::json(&match api.rules.get() {
            Some(r) => r.alerts_json(),
            None => serde_json::json!({ "alerts": [] }),
        })),
    }
}
