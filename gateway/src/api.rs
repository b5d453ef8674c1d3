//! The gateway's HTTP API. So far: `/api/v1/stores` (the endpoint set, as Thanos Query shows it),
//! `/-/healthy` and `/-/ready`. The Prometheus query API arrives with its issue.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::endpoints::EndpointSet;

/// The routes, over the endpoint set.
pub fn router(endpoints: Arc<EndpointSet>) -> Router {
    Router::new()
        .route("/api/v1/stores", get(stores))
        .route(
            "/-/healthy",
            get(|| async { "Meridian gateway is Healthy.\n" }),
        )
        .route("/-/ready", get(|| async { "Meridian gateway is Ready.\n" }))
        .with_state(endpoints)
}

async fn stores(State(endpoints): State<Arc<EndpointSet>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        endpoints.stores_view().to_string(),
    )
}
