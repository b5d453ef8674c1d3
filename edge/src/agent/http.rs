//! The edge's HTTP endpoints: metrics, health, readiness, reload, remote-write receive, targets, the
//! effective configuration.

use super::*;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.receive_limits.max_body_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/-/healthy",
            get(|| async { "Meridian edge is Healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/receive", post(remote_write))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/status/config", get(status_config))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .merge(meridian_ui::routes(meridian_ui::Role::Edge))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    metrics_page(&s.registry)
}

/// `/metrics`: the registry in the OpenMetrics text format.
pub(crate) fn metrics_page(registry: &Registry) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Prometheus' `/api/v1/status/buildinfo` (the web UI's status page reads it).
async fn buildinfo() -> Response {
    axum::Json(serde_json::json!({
        "status": "success",
        "data": meridian_core::process_metrics::build_info(),
    }))
    .into_response()
}

/// Prometheus' `/api/v1/status/config`: `{"status":"success","data":{"yaml":…}}`.
async fn status_config(State(s): State<Arc<Shared>>) -> Response {
    match s.config_yaml() {
        Ok(yaml) => axum::Json(serde_json::json!({"status": "success", "data": {"yaml": yaml}}))
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"status": "error", "errorType": "internal", "error": e})),
        )
            .into_response(),
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "Meridian edge is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn reload(State(s): State<Arc<Shared>>) -> Response {
    match s.reload(true).await {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn remote_write(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let Err(a) = receive::check_headers(h(header::CONTENT_TYPE), h(header::CONTENT_ENCODING)) {
        s.receive_metrics
            .requests
            .get_or_create(&receive::CodeLabel { code: a.status })
            .inc();
        return answer(a);
    }
    if let Some(front) = &s.receive {
        let a = receive_routed(&s, front, &headers, body).await;
        s.receive_metrics
            .requests
            .get_or_create(&receive::CodeLabel { code: a.status })
            .inc();
        return answer(a);
    }
    let shared = s.clone();
    let res = tokio::task::spawn_blocking(move || {
        receive::write(
            &shared.db,
            &shared.metadata,
            &body,
            shared.receive_limits,
            &shared.receive_metrics,
        )
    })
    .await;
    match res {
        Ok(a) => answer(a),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A remote-write request in receive mode: the tenant from its header (the configured one, then
/// `THANOS-TENANT`, then the default, as Thanos HEAD's `GetTenantFromHTTP`), the replica from
/// `THANOS-REPLICA` (1-based; absent or empty: 0), routed over the hashring. 200 when the write
/// quorum stored every series.
async fn receive_routed(
    s: &Arc<Shared>,
    front: &ReceiveFront,
    headers: &HeaderMap,
    body: Bytes,
) -> receive::Answer {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let tenant = get(&front.tenant_header)
        .or_else(|| get("THANOS-TENANT"))
        .unwrap_or(&front.default_tenant)
        .to_owned();
    let replica = match get(&front.replica_header).map(str::parse::<u64>) {
        None => 0,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return receive::Answer::new(
                400,
                format!(
                    "could not parse replica header {}: {e}",
                    front.replica_header
                ),
            );
        }
    };
    let limits = s.receive_limits;
    let req = match tokio::task::spawn_blocking(move || receive::decode(&body, limits)).await {
        Ok(Ok(r)) => r,
        Ok(Err(a)) => return a,
        Err(e) => return receive::Answer::new(500, e.to_string()),
    };
    receive::record_metadata(&s.metadata, &req);
    match front.receiver.write(&tenant, req.timeseries, replica).await {
        Ok(()) => receive::Answer::new(200, ""),
        Err(e) => receive::Answer::new(receive::router::status_of(e.kind), e.message),
    }
}

fn answer(a: receive::Answer) -> Response {
    let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if a.status >= 400 {
        tracing::debug!(status = a.status, message = %a.message, "remote write refused");
    }
    (code, a.message).into_response()
}

#[derive(serde::Deserialize)]
struct TargetsQuery {
    state: Option<String>,
}

/// `GET /api/v1/targets`, as Prometheus answers it.
async fn targets(State(s): State<Arc<Shared>>, Query(q): Query<TargetsQuery>) -> Response {
    let state = q.state.as_deref().unwrap_or("any");
    if !matches!(state, "any" | "active" | "dropped") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "status": "error", "errorType": "bad_data",
                "error": format!("invalid state {state:?}: use active, dropped or any"),
            })),
        )
            .into_response();
    }
    let snap = s.scrape.targets().await;
    let mut active = Vec::new();
    if state != "dropped" {
        for a in &snap.active {
            let h = &a.health;
            let health = match (&h.last_scrape, &h.last_error) {
                (None, _) => "unknown",
                (Some(_), None) => "up",
                (Some(_), Some(_)) => "down",
            };
            active.push(serde_json::json!({
                "discoveredLabels": labels_json(&a.target.discovered),
                "labels": labels_json(&a.target.public_labels()),
                "scrapePool": a.pool,
                "scrapeUrl": a.url,
                "globalUrl": a.url,
                // A scrape whose samples were partly refused (e.g. out of bounds) is up, with the
                // refusal as its error text.
                "lastError": h.last_error.clone().or_else(|| h.last_warning.clone()).unwrap_or_default(),
                "lastScrape": rfc3339(h.last_scrape),
                "lastScrapeDuration": h.last_duration.as_secs_f64(),
                "health": health,
                "scrapeInterval": PromDuration::format(a.target.interval),
                "scrapeTimeout": PromDuration::format(a.target.timeout),
            }));
        }
    }
    let mut dropped = Vec::new();
    if state != "active" {
        for (_, d) in &snap.dropped {
            dropped.push(serde_json::json!({ "discoveredLabels": labels_json(&d.discovered) }));
        }
    }
    axum::Json(serde_json::json!({
        "status": "success",
        "data": { "activeTargets": active, "droppedTargets": dropped },
    }))
    .into_response()
}
