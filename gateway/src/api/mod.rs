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
use crate::fanout::{Fanout, QueryOptions};
use crate::metrics::ApiMetrics;
use crate::promql::{Engine, EngineOptions, QueryValue};
use crate::queryable::{LabelsRequest, Queryable, SelectHints, SelectRequest};
use meridian_storeapi::partial::PartialResponse;
use params::{MAX_TIME, MIN_TIME, Params, invalid_param};

mod handlers;
mod query;
mod respond;
use handlers::*;
use query::*;
use respond::*;

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
    /// `--query.auto-downsampling`: a query without `max_source_resolution` reads as `auto`.
    pub auto_downsampling: bool,
    /// `--query.dynamic-lookback-delta`: the lookback grows with the resolution read.
    pub dynamic_lookback_delta: bool,
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
            auto_downsampling: false,
            dynamic_lookback_delta: true,
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
    .merge(meridian_ui::routes(meridian_ui::Role::Gateway))
    .layer(DefaultBodyLimit::max(max_body))
    .with_state(api)
}
