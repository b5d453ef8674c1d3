//! The built-in web UI: the page and its bundle (`web/`, built by `build.sh` from pinned npm packages
//! into `dist/`, committed), embedded in the binary and served without network access. The gateway
//! serves the query, stores, rules, alerts and status pages, the edge its targets and status pages;
//! every page path answers the same document (naming the role), whose script renders the page the
//! path names. `/` redirects to the role's first page, as Prometheus' `/` does to `/graph`.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::Redirect;
use axum::routing::get;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &[u8] = include_bytes!("../dist/app.js");
const STYLE: &[u8] = include_bytes!("../dist/app.css");

/// Which binary serves the UI: it decides the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Edge,
}

impl Role {
    /// The page paths, the first one being where `/` leads.
    pub fn pages(self) -> &'static [&'static str] {
        match self {
            Role::Gateway => &["/graph", "/stores", "/rules", "/alerts", "/status"],
            Role::Edge => &["/targets", "/status"],
        }
    }

    /// The page naming this role (made once per role).
    fn page(self) -> &'static str {
        static GATEWAY: OnceLock<String> = OnceLock::new();
        static EDGE: OnceLock<String> = OnceLock::new();
        let (cell, name) = match self {
            Role::Gateway => (&GATEWAY, "gateway"),
            Role::Edge => (&EDGE, "edge"),
        };
        cell.get_or_init(|| INDEX.replace("{{ROLE}}", name))
    }
}

/// The UI's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>(role: Role) -> Router<S> {
    let page = role.page();
    let first = role.pages()[0];
    let mut r = Router::new().route("/", get(move || async move { Redirect::to(first) }));
    for p in role.pages() {
        r = r.route(
            p,
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        );
    }
    let asset = |content_type: &'static str, body: &'static [u8]| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    r.route(
        "/static/app.js",
        asset("text/javascript; charset=utf-8", SCRIPT),
    )
    .route("/static/app.css", asset("text/css; charset=utf-8", STYLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_role_and_the_bundle_is_there() {
        assert!(INDEX.contains("{{ROLE}}"));
        assert!(SCRIPT.len() > 100_000, "dist/app.js: run build.sh");
        assert!(!STYLE.is_empty());
        assert_eq!(Role::Edge.pages()[0], "/targets");
    }
}
