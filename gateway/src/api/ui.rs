//! The built-in web UI: the page and its bundle (`gateway/ui`, built by `gateway/ui/build.sh` from
//! pinned npm packages and committed), embedded in the binary and served with no network access.
//! `/` redirects to `/graph`, as Prometheus' does; every page path answers the same document, whose
//! script renders the page named by the path.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &[u8] = include_bytes!("../../ui/src/index.html");
const SCRIPT: &[u8] = include_bytes!("../../ui/dist/app.js");
const STYLE: &[u8] = include_bytes!("../../ui/dist/app.css");

/// The pages the script renders.
pub const PAGES: &[&str] = &["/graph", "/stores", "/rules", "/alerts", "/status"];

fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

/// The UI's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new().route("/", get(|| async { Redirect::to("/graph") }));
    for p in PAGES {
        r = r.route(p, get(|| async { page() }));
    }
    r.route(
        "/static/app.js",
        get(|| async {
            (
                [
                    (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                SCRIPT,
            )
        }),
    )
    .route(
        "/static/app.css",
        get(|| async {
            (
                [
                    (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                STYLE,
            )
        }),
    )
}
