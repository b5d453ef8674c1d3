//! The sidecar's view of a real Prometheus 2.42: its external labels and its oldest sample.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_edge::sidecar::prom::PromError;
use meridian_testkit::{Prometheus, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_external_labels_and_the_oldest_sample() {
    let d = tempfile::tempdir().unwrap();
    let began = meridian_core::time::now_ms();
    let Some(prom) = Prometheus::start(
        d.path(),
        "global:\n  scrape_interval: 1s\n  external_labels: {cluster: c1, replica: prometheus-0}\nscrape_configs:\n  - job_name: self\n    static_configs: [{targets: ['$PROMETHEUS_ADDR']}]\n",
        &[],
    ) else {
        return;
    };
    let c = crate::support::prom_client(&prom.addr);
    assert_eq!(
        c.external_labels().await.unwrap(),
        Labels::from_pairs([("cluster", "c1"), ("replica", "prometheus-0")])
    );
    tokio::task::block_in_place(|| {
        wait_for("a scrape", Duration::from_secs(30), || {
            (!prom.query("up").is_empty()).then_some(())
        })
    });
    let lowest = c.lowest_timestamp_ms().await.unwrap();
    assert!(
        (began - 1_000..=meridian_core::time::now_ms()).contains(&lowest),
        "lowest {lowest}, began {began}"
    );
    // A path Prometheus does not have: the status and the URL in the error.
    let e = c.get("/api/v1/nothing").await.unwrap_err();
    assert!(matches!(e, PromError::Status { status: 404, .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("http://{}/api/v1/nothing", prom.addr))
    );
}
