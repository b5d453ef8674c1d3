//! The Prometheus HTTP API, as Grafana, promtool and curl use it, over the fan-out (with Thanos'
//! `dedup`, `partial_response`, `replicaLabels[]`, `storeMatch[]` and `max_source_resolution`), plus
//! `/api/v1/stores`, `/-/healthy`, `/-/ready` and `/metrics`.
//!
//! Every API endpoint takes GET and form-encoded POST (parameters from the URL and the body). Answers are
//! encoded by [`json`] exactly as Prometheus encodes them, gzipped when the client accepts it; errors carry
//! Prometheus' `errorType` and status code (mapped once, in [`meridian_core::error::ErrorKind`]). Answers
//! with warnings (a store missing) are sent with `Cache-Control: no-store`, so no proxy keeps them.

pub mod json;
pub mod params;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on};
use futures::StreamExt;
use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use meridian_storeapi::Store;
use meridian_storeapi::proto::thanos as pb;
use prometheus_client::registry::Registry;

use crate::cache::{CacheOptions, CachedBody, ResultsCache};
use crate::fanout::{Fanout, PartialResponse, QueryOptions};
use crate::metrics::ApiMetrics;
use crate::promql::{Engine, EngineOptions, QueryValue};
use crate::queryable::{LabelsRequest, Queryable, SelectHints, SelectRequest};
use params::{MAX_TIME, MIN_TIME, Params, invalid_param};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub engine: EngineOptions,
    pub cache: CacheOptions,
    /// The command line as `/api/v1/status/flags` shows it.
    pub flags: Vec<(String, String)>,
    /// What `/api/v1/status/config` shows.
    pub config_yaml: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Queries evaluated at once (Thanos' `--query.max-concurrent`); further queries wait for a slot,
    /// within their timeout.
    pub max_concurrent_queries: usize,
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            engine: EngineOptions::default(),
            cache: CacheOptions::default(),
            flags: vec![],
            config_yaml: String::new(),
            max_body_bytes: 8 << 20,
            max_concurrent_queries: 20,
        }
    }
}

/// The `/api/v1/stores` view (the endpoint set, or whatever the gateway is started over).
pub type StoresView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The API's state.
pub struct Api {
    fanout: Arc<Fanout>,
    cache: ResultsCache,
    stores: StoresView,
    metrics: ApiMetrics,
    registry: Registry,
    opts: ApiOptions,
    started: SystemTime,
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// The rule manager, when the gateway evaluates rules.
    rules: std::sync::OnceLock<Arc<crate::rules::RuleManager>>,
    /// One permit per query evaluated at once (`--query.max-concurrent`).
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API over `fanout`; `extra` registers more metrics (TLS, the endpoint set) into `/metrics`.
    pub fn new(
        fanout: Arc<Fanout>,
        stores: StoresView,
        opts: ApiOptions,
        extra: impl FnOnce(&mut Registry),
    ) -> Api {
        let cache = ResultsCache::new(opts.cache.clone());
        let metrics = ApiMetrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        fanout.metrics().register(&mut registry);
        cache.metrics().register(&mut registry);
        meridian_core::process_metrics::register(&mut registry);
        extra(&mut registry);
        Api {
            fanout,
            cache,
            stores,
            metrics,
            registry,
            started: SystemTime::now(),
            now: Arc::new(meridian_core::time::now_ms),
            rules: std::sync::OnceLock::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                opts.max_concurrent_queries.max(1),
            )),
            opts,
        }
    }

    /// Serves `/api/v1/rules`, `/api/v1/alerts` and `/-/reload` from `rules`.
    pub fn set_rules(&self, rules: Arc<crate::rules::RuleManager>) {
        let _ = self.rules.set(rules);
    }

    /// Replaces the clock (tests: a fixed "now" decides which cache pieces are fresh).
    pub fn with_clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Api {
        self.now = Arc::new(now);
        self
    }

    pub fn cache(&self) -> &ResultsCache {
        &self.cache
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        crate::metrics::encode_text(&self.registry).unwrap_or_default()
    }
}

/// The API endpoints a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Query,
    QueryRange,
    Series,
    Labels,
    LabelValues,
    Metadata,
    Exemplars,
    FormatQuery,
    BuildInfo,
    Config,
    Flags,
    RuntimeInfo,
    Rules,
    Alerts,
}

impl Endpoint {
    fn handler(self) -> &'static str {
        match self {
            Endpoint::Query => "query",
            Endpoint::QueryRange => "query_range",
            Endpoint::Series => "series",
            Endpoint::Labels => "labels",
            Endpoint::LabelValues => "label_values",
            Endpoint::Metadata => "metadata",
            Endpoint::Exemplars => "query_exemplars",
            Endpoint::FormatQuery => "format_query",
            Endpoint::BuildInfo => "buildinfo",
            Endpoint::Config => "config",
            Endpoint::Flags => "flags",
            Endpoint::RuntimeInfo => "runtimeinfo",
            Endpoint::Rules => "rules",
            Endpoint::Alerts => "alerts",
        }
    }
}

/// The routes.
pub fn router(api: Arc<Api>) -> Router {
    let max_body = api.opts.max_body_bytes;
    let mut r = Router::new();
    for (path, ep) in [
        ("/api/v1/query", Endpoint::Query),
        ("/api/v1/query_range", Endpoint::QueryRange),
        ("/api/v1/series", Endpoint::Series),
        ("/api/v1/labels", Endpoint::Labels),
        ("/api/v1/metadata", Endpoint::Metadata),
        ("/api/v1/query_exemplars", Endpoint::Exemplars),
        ("/api/v1/format_query", Endpoint::FormatQuery),
        ("/api/v1/status/buildinfo", Endpoint::BuildInfo),
        ("/api/v1/status/config", Endpoint::Config),
        ("/api/v1/status/flags", Endpoint::Flags),
        ("/api/v1/status/runtimeinfo", Endpoint::RuntimeInfo),
        ("/api/v1/rules", Endpoint::Rules),
        ("/api/v1/alerts", Endpoint::Alerts),
    ] {
        r = r.route(
            path,
            on(
                axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::POST),
                move |State(api): State<Arc<Api>>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    serve(api, ep, None, method, uri, headers, body).await
                },
            ),
        );
    }
    r.route(
        "/api/v1/label/{name}/values",
        on(
            axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::POST),
            |State(api): State<Arc<Api>>,
             Path(name): Path<String>,
             method: Method,
             uri: Uri,
             headers: HeaderMap,
             body: Bytes| async move {
                serve(
                    api,
                    Endpoint::LabelValues,
                    Some(name),
                    method,
                    uri,
                    headers,
                    body,
                )
                .await
            },
        ),
    )
    .route("/api/v1/stores", get(stores))
    .route("/metrics", get(metrics))
    .route(
        "/-/healthy",
        get(|| async { "Meridian gateway is Healthy.\n" }),
    )
    .route("/-/ready", get(|| async { "Meridian gateway is Ready.\n" }))
    .route("/-/reload", axum::routing::post(reload).put(reload))
    .layer(DefaultBodyLimit::max(max_body))
    .with_state(api)
}

/// `POST /-/reload`: reloads the rule files; 500 with the reason when they are refused.
async fn reload(State(api): State<Arc<Api>>) -> Response {
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

async fn stores(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        (api.stores)().to_string(),
    )
        .into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics_text(),
    )
        .into_response()
}

/// An endpoint's successful answer: the encoded `data`, warnings and infos.
struct Answer {
    data: Arc<Vec<u8>>,
    warnings: Vec<String>,
    infos: Vec<String>,
    /// The whole response, already encoded (a kept range answer): sent as it is.
    whole: Option<Arc<CachedBody>>,
}

impl Answer {
    fn data(data: impl Into<Arc<Vec<u8>>>, warnings: Vec<String>) -> Answer {
        Answer {
            data: data.into(),
            warnings,
            infos: vec![],
            whole: None,
        }
    }

    fn whole(body: Arc<CachedBody>) -> Answer {
        Answer {
            data: Arc::default(),
            warnings: vec![],
            infos: vec![],
            whole: Some(body),
        }
    }

    fn json(v: &serde_json::Value) -> Answer {
        Answer::data(v.to_string().into_bytes(), vec![])
    }
}

async fn serve(
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
async fn gzip_bytes(body: Bytes) -> std::io::Result<Bytes> {
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
async fn respond(
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

async fn dispatch(
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
        Endpoint::BuildInfo => Ok(Answer::json(&serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": option_env!("MERIDIAN_REVISION").unwrap_or("unknown"),
            "branch": option_env!("MERIDIAN_BRANCH").unwrap_or(""),
            "buildUser": "",
            "buildDate": "",
            "goVersion": concat!("rust (meridian ", env!("CARGO_PKG_VERSION"), ")"),
        }))),
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

fn runtime_info(api: &Api) -> serde_json::Value {
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

/// The fan-out options of a request: Thanos' `dedup`, `partial_response`, `replicaLabels[]` and
/// `storeMatch[]`; `max_source_resolution` and `engine` are accepted.
fn query_options(p: &Params, deadline: Option<tokio::time::Instant>) -> Result<QueryOptions> {
    let dedup = p.bool("dedup")?.unwrap_or(true);
    let partial_response = p.bool("partial_response")?.map(|on| {
        if on {
            PartialResponse::Warn
        } else {
            PartialResponse::Abort
        }
    });
    let replica: Vec<String> = p
        .all("replicaLabels[]")
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let store_match = p
        .matcher_sets("storeMatch[]")
        .map_err(|e| invalid_param("storeMatch[]", &e.message))?;
    let res = p.get("max_source_resolution");
    if !res.is_empty() && res != "auto" {
        params::parse_duration(res).map_err(|e| invalid_param("max_source_resolution", &e))?;
    }
    Ok(QueryOptions {
        dedup,
        partial_response,
        replica_labels: (!replica.is_empty()).then_some(replica),
        deadline,
        store_match,
    })
}

/// The engine for a request: its `timeout` (never longer than `--query.timeout`) and `lookback_delta`.
fn request_engine(api: &Api, p: &Params) -> Result<Engine> {
    let mut opts = api.opts.engine.clone();
    let to = p.get("timeout");
    if !to.is_empty() {
        let t = params::parse_duration(to).map_err(|e| invalid_param("timeout", &e))?;
        opts.timeout = opts.timeout.min(t);
    }
    let lb = p.get("lookback_delta");
    if !lb.is_empty() {
        let d = params::parse_duration(lb)
            .map_err(|e| Error::bad_data(format!("error parsing lookback delta duration: {e}")))?;
        if !d.is_zero() {
            opts.lookback_delta = d;
        }
    }
    Ok(Engine::new(opts))
}

/// Counts a query in flight while alive.
struct InFlight<'a>(&'a ApiMetrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a ApiMetrics) -> InFlight<'a> {
        m.queries_in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.queries_in_flight.dec();
    }
}

/// Waits for a query slot (`--query.max-concurrent`) until `deadline`; the wait counts against the
/// query's timeout, as in Prometheus, where a query waiting in the queue times out "in query queue"
/// (`promql.Engine.queueActive`), answered 503 `timeout`.
async fn query_slot(
    api: &Api,
    query: &str,
    deadline: tokio::time::Instant,
) -> Result<tokio::sync::OwnedSemaphorePermit> {
    match tokio::time::timeout_at(deadline, api.slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(Error::internal("the query queue is closed")),
        Err(_) => {
            tracing::warn!(
                query,
                max_concurrent = api.opts.max_concurrent_queries,
                "query timed out waiting for a slot (--query.max-concurrent)"
            );
            Err(Error::new(
                meridian_core::error::ErrorKind::Timeout,
                "query timed out in query queue",
            ))
        }
    }
}

fn truncate<T>(list: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if limit > 0 && list.len() > limit {
        list.truncate(limit);
        warnings.push("results truncated due to limit".into());
    }
}

async fn query(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let started = Instant::now();
    let limit = p.limit()?;
    let t = p.time("time", (api.now)())?;
    let engine = request_engine(api, p)?;
    let deadline = engine.deadline();
    let querier = api.fanout.querier(query_options(p, Some(deadline))?);
    let q = p.get("query");
    engine.check_length(q)?;
    let _slot = query_slot(api, q, deadline).await?;
    let _in_flight = InFlight::new(&api.metrics);
    let result = engine.instant_until(&querier, q, t, deadline).await;
    log_query("query", q, started, &querier, None, &result);
    let mut r = result?;
    api.metrics.query_samples.inc_by(r.samples as u64);
    let mut warnings = std::mem::take(&mut r.warnings);
    match &mut r.value {
        QueryValue::Vector(v) => truncate(v, limit, &mut warnings),
        QueryValue::Matrix(m) => truncate(m, limit, &mut warnings),
        _ => {}
    }
    let value = r.value;
    let data = encode_blocking(move |out| json::query_data(out, &value)).await?;
    Ok(Answer::data(data, warnings))
}

/// Encodes on a blocking thread (large results take milliseconds to seconds).
async fn encode_blocking(f: impl FnOnce(&mut Vec<u8>) + Send + 'static) -> Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(4096);
        f(&mut out);
        out
    })
    .await
    .map_err(|e| Error::internal(format!("encoding the answer failed: {e}")))
}

fn log_query<T>(
    kind: &str,
    q: &str,
    started: Instant,
    querier: &crate::fanout::Querier,
    cache: Option<&str>,
    result: &Result<T>,
) where
    T: QueryStats,
{
    let (samples, error) = match result {
        Ok(r) => (r.samples(), None),
        Err(e) => (0, Some(e.to_string())),
    };
    tracing::info!(
        kind,
        query = q,
        duration_seconds = started.elapsed().as_secs_f64(),
        samples,
        stores = querier.stores_asked(),
        cache = cache.unwrap_or("none"),
        error = error.as_deref(),
        "query"
    );
}

/// What the query log reads from an answer.
trait QueryStats {
    fn samples(&self) -> usize;
}

impl QueryStats for crate::promql::QueryResult {
    fn samples(&self) -> usize {
        self.samples
    }
}

impl QueryStats for crate::cache::RangeAnswer {
    fn samples(&self) -> usize {
        self.samples
    }
}

async fn query_range(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let started = Instant::now();
    let limit = p.limit()?;
    let start = p.required_time("start")?;
    let end = p.required_time("end")?;
    if end < start {
        return Err(invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step = params::parse_duration(p.get("step")).map_err(|e| invalid_param("step", &e))?;
    let step_ns = i128::try_from(step.as_nanos()).unwrap_or(i128::MAX);
    if step_ns <= 0 {
        return Err(invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (i128::from(end) - i128::from(start)) * 1_000_000 / step_ns > 11_000 {
        return Err(Error::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let engine = request_engine(api, p)?;
    let deadline = engine.deadline();
    let opts = query_options(p, Some(deadline))?;
    let q = p.get("query");
    engine.check_length(q)?;
    let _slot = query_slot(api, q, deadline).await?;
    // Parsed (and printed, the cache key) on the blocking pool, within the deadline.
    let normalized = engine
        .parse_until(q, deadline, |e| Ok(e.to_string()))
        .await?;
    // Answers depend on the query and on every option below; the key holds them all.
    let key = format!(
        "{normalized}\u{0}dedup={} pr={:?} replicas={:?} store_match={:?} lookback={:?} max_samples={} sub_step={:?}",
        opts.dedup,
        opts.partial_response,
        opts.replica_labels,
        p.all("storeMatch[]"),
        engine.options().lookback_delta,
        engine.options().max_samples,
        engine.options().default_subquery_step,
    );
    let splittable = !normalized.contains("start()") && !normalized.contains("end()");
    let whole_key = format!("{key}\u{0}{start} {end} {step_ms} {limit}");
    if splittable && let Some(w) = api.cache.response(&whole_key).await {
        log_cached(q, started);
        return Ok(Answer::whole(w));
    }
    let querier = api.fanout.querier(opts);
    let _in_flight = InFlight::new(&api.metrics);
    let result = api
        .cache
        .range(
            &key,
            splittable,
            (start, end, step_ms),
            (api.now)(),
            |a, b| {
                let (engine, querier) = (engine.clone(), querier.clone());
                let q = q.to_owned();
                async move {
                    engine
                        .range_until(&querier, &q, a, b, step_ms, deadline)
                        .await
                }
            },
        )
        .await;
    let summary = result.as_ref().ok().map(|r| r.outcome.summary());
    log_query("query_range", q, started, &querier, summary, &result);
    let mut r = result?;
    api.metrics.query_samples.inc_by(r.samples as u64);
    let mut warnings = std::mem::take(&mut r.warnings);
    truncate(&mut r.series, limit, &mut warnings);
    let series = r.series;
    let data = encode_blocking(move |out| {
        out.extend_from_slice(b"{\"resultType\":\"matrix\",\"result\":");
        json::matrix(out, &series);
        out.push(b'}');
    })
    .await?;
    // Every piece came from or went into the piece cache: the whole answer is kept too.
    if splittable && r.outcome.uncached == 0 && warnings.is_empty() {
        let whole = Arc::new(CachedBody {
            plain: Bytes::from(json::success(&data, &[], &[])),
            ..Default::default()
        });
        api.cache.keep_response(whole_key, whole.clone()).await;
        return Ok(Answer::whole(whole));
    }
    Ok(Answer::data(data, warnings))
}

fn log_cached(q: &str, started: Instant) {
    tracing::info!(
        kind = "query_range",
        query = q,
        duration_seconds = started.elapsed().as_secs_f64(),
        samples = 0,
        stores = 0,
        cache = "response",
        "query"
    );
}

/// `start` and `end` of a metadata query (defaults: all time).
fn range_params(p: &Params) -> Result<(i64, i64)> {
    Ok((p.time("start", MIN_TIME)?, p.time("end", MAX_TIME)?))
}

/// The labels-cache key of a request: what is asked and every parameter.
fn labels_key(what: &str, p: &Params) -> String {
    let mut pairs: Vec<&(String, String)> = p.pairs().iter().collect();
    pairs.sort();
    format!("{what}\u{0}{pairs:?}")
}

async fn series(api: &Arc<Api>, p: &Params) -> Result<Answer> {
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

fn deadline(api: &Api) -> tokio::time::Instant {
    tokio::time::Instant::now() + api.opts.engine.timeout
}

/// Label names (`name` = `None`) or one label's values: one call per `match[]` set (one call without
/// matchers when there is none), the union sorted and limited.
async fn labels(api: &Arc<Api>, name: Option<String>, p: &Params) -> Result<Answer> {
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

async fn metadata(api: &Arc<Api>, p: &Params) -> Result<Answer> {
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
async fn exemplars(api: &Arc<Api>, p: &Params) -> Result<Answer> {
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
