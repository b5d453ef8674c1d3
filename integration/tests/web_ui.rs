//! The built-in web UI in Debian's headless Chromium (through `chromedriver`), against a running local
//! federation (two clusters of edges, the gateway, its rules): type a query, run it, and the table
//! shows what the HTTP API answers; the graph view draws the series (pixels of its colour counted in a
//! screenshot); completion offers a metric name after two letters; the stores page lists every
//! endpoint; the rules, alerts and status pages render; an edge's targets page lists every active
//! target and its status page its configuration; the browser console stays free of errors.
//! Screenshots of each page are written to `target/ui-screenshots/` (and to `docs/` with
//! `MERIDIAN_UI_SCREENSHOTS=docs`, which is how the README's are made).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use meridian_integration::browser::Browser;
use meridian_integration::federation::{Federation, Options};
use meridian_integration::served::bin_dir;
use meridian_testkit::{http_get, urlencode, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn shots_dir() -> Vec<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![repo.join("target/ui-screenshots")];
    if std::env::var("MERIDIAN_UI_SCREENSHOTS").is_ok_and(|v| v == "docs") {
        dirs.push(repo.join("docs"));
    }
    dirs
}

fn save(name: &str, png: &[u8]) {
    for d in shots_dir() {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("ui-{name}.png")), png).unwrap();
    }
}

/// Pixels of `png` within `tol` of `rgb` on every channel.
fn pixels_of(png: &[u8], rgb: [u8; 3], tol: u8) -> usize {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tol))
        .count()
}

/// The texts of the elements matching `css`.
fn texts(b: &Browser, css: &str) -> Vec<String> {
    b.find_all(css).iter().map(|e| b.text(e)).collect()
}

/// Replaces the editor's text with `text` (select all, then type).
fn set_expr(b: &Browser, text: &str) {
    let editor = b.wait("#expr .cm-content", WAIT);
    b.click(&editor);
    // Ctrl+A, then the text (WebDriver key codes: \u{E009} is Control).
    b.type_text(&editor, "\u{E009}a\u{E000}");
    b.type_text(&editor, "\u{E003}");
    b.type_text(&editor, text);
}

#[test]
fn the_web_ui_queries_graphs_completes_and_lists_stores() {
    meridian_pki::install_crypto_provider();
    let Some(browser) = Browser::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::new(bin_dir(), dir.path().join("federation"));
    o.gateway_http = "127.0.0.1:0".parse().unwrap();
    o.scrape_interval = "1s".into();
    o.eval_interval = "2s".into();
    let fed = rt.block_on(Federation::start(o)).unwrap();
    rt.block_on(fed.wait_for_endpoints(4, Duration::from_secs(60)))
        .unwrap();
    let gw = fed.gateway_http.to_string();
    let api = |path: &str| http_get(&gw, path).json();
    // Data to show: scrapes have landed in both clusters.
    let expr = "count by (cluster) (up)";
    wait_for("up in both clusters", WAIT, || {
        let r = api(&format!("/api/v1/query?query={}", urlencode(expr)));
        (r["data"]["result"].as_array().map_or(0, Vec::len) == 2).then_some(())
    });
    let base = format!("http://{gw}");

    // `/` is the query page; the navigation names the gateway's pages.
    browser.goto(&format!("{base}/"));
    assert!(browser.url().ends_with("/graph"), "{}", browser.url());
    browser.wait("nav a[data-page]", WAIT);
    let nav = texts(&browser, "nav a[data-page]");
    assert_eq!(nav, ["Query", "Stores", "Rules", "Alerts", "Status"]);

    // Completion: two letters of a metric name offer it.
    let names = api("/api/v1/label/__name__/values");
    // The name whose first two letters start the fewest names (so it is among the first offered).
    let all: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let name = all
        .iter()
        .filter(|n| n.len() > 6 && n.is_char_boundary(2))
        .min_by_key(|n| all.iter().filter(|m| m.starts_with(&n[..2])).count())
        .expect("metric names")
        .to_string();
    set_expr(&browser, &name[..2]);
    let offered = wait_for("completion offers the metric", WAIT, || {
        let items: Vec<String> = browser
            .find_all(".cm-tooltip-autocomplete li")
            .iter()
            .map(|e| browser.text(e))
            .collect();
        items.iter().any(|t| t.contains(&name)).then_some(items)
    });
    assert!(!offered.is_empty());
    save("completion", &browser.screenshot());

    // The table: the API's values, row by row.
    set_expr(&browser, expr);
    browser.click(&browser.wait("#tab-table", WAIT));
    let table = browser.wait("#table", WAIT);
    let shown = browser.text(&table);
    let answer = api(&format!("/api/v1/query?query={}", urlencode(expr)));
    for r in answer["data"]["result"].as_array().unwrap() {
        let cluster = r["metric"]["cluster"].as_str().unwrap();
        let value = r["value"][1].as_str().unwrap();
        assert!(
            shown.contains(&format!("{{cluster=\"{cluster}\"}}")) && shown.contains(value),
            "row {cluster}={value} not in the table:\n{shown}"
        );
    }
    assert!(browser.url().contains("g0.expr="), "state in the URL");
    save("table", &browser.screenshot());

    // The query's duration and the samples it read.
    let info = browser.text(&browser.wait("#info", WAIT));
    assert!(
        info.contains("Load time:") && info.contains("Samples read:"),
        "{info}"
    );

    // The graph over the last 15 s (the federation is seconds old): the series' colours drawn on
    // the canvas.
    let range = browser.wait("#range", WAIT);
    browser.click(&range);
    browser.type_text(&range, "\u{E009}a\u{E000}\u{E003}15s");
    browser.click(&browser.wait("#tab-graph", WAIT));
    let graph = browser.wait("#graph canvas", WAIT);
    let png = browser.element_screenshot(&graph);
    // The two series hold equal values, so the second (#e8590c) may cover the first (#2256c9).
    let drawn = pixels_of(&png, [0x22, 0x56, 0xc9], 40) + pixels_of(&png, [0xe8, 0x59, 0x0c], 40);
    assert!(
        drawn > 200,
        "the series is drawn: {drawn} pixels of its colour"
    );
    assert_eq!(
        browser.find_all("#legend .labels").len(),
        2,
        "a legend per series"
    );
    save("graph", &browser.screenshot());

    // A shared link opens the same view.
    let link = browser.url();
    browser.goto(&link);
    browser.wait("#graph canvas", WAIT);

    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // An error is shown as Prometheus' UI shows it; the browser logs the API's 400 and nothing else.
    set_expr(&browser, "sum(");
    browser.click(&browser.wait("#execute", WAIT));
    let err = browser.wait("#error", WAIT);
    assert!(
        browser.text(&err).contains("bad_data"),
        "{}",
        browser.text(&err)
    );
    let errors = browser.console_errors();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/api/v1/query") && e.contains("400")),
        "console errors: {errors:#?}"
    );

    // Stores: every endpoint the API lists.
    browser.goto(&format!("{base}/stores"));
    browser.wait("table.stores", WAIT);
    let listed: BTreeSet<String> = browser
        .find_all("td.endpoint")
        .iter()
        .map(|e| browser.text(e))
        .collect();
    let stores = api("/api/v1/stores");
    let want: BTreeSet<String> = stores["data"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap().iter())
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, want);
    save("stores", &browser.screenshot());

    for page in ["rules", "alerts", "status"] {
        browser.goto(&format!("{base}/{page}"));
        browser.wait("main h2", WAIT);
        assert!(
            browser.find_all("main .error").is_empty(),
            "{page} shows an error"
        );
        save(page, &browser.screenshot());
    }
    let rules_text = {
        browser.goto(&format!("{base}/rules"));
        let el = browser.wait("main .panel", WAIT);
        browser.text(&el)
    };
    assert!(
        rules_text.contains("alert:") || rules_text.contains("record:"),
        "{rules_text}"
    );
    // An edge: its targets (every active target the API lists, by pool) and its status page.
    let edge = fed.edges[0].http.to_string();
    browser.goto(&format!("http://{edge}/"));
    assert!(browser.url().ends_with("/targets"), "{}", browser.url());
    browser.wait("nav a[data-page]", WAIT);
    let nav = texts(&browser, "nav a[data-page]");
    assert_eq!(nav, ["Targets", "Status"]);
    browser.wait("table.targets", WAIT);
    let shown: BTreeSet<String> = browser
        .find_all("td.target")
        .iter()
        .map(|e| browser.text(e))
        .collect();
    let targets = http_get(&edge, "/api/v1/targets").json();
    let want: BTreeSet<String> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scrapeUrl"].as_str().unwrap().to_owned())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want);
    save("edge-targets", &browser.screenshot());
    browser.goto(&format!("http://{edge}/status"));
    let config = browser.wait("main pre", WAIT);
    assert!(
        browser.text(&config).contains("scrape_configs"),
        "{}",
        browser.text(&config)
    );
    assert!(browser.find_all("main .error").is_empty());
    save("edge-status", &browser.screenshot());

    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    drop(browser);
    rt.block_on(fed.stop(|_| {})).unwrap();
}
