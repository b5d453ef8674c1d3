//! A receiver's tenants (issue 28): opened on first use up to `--receive.max-tenants`, served through
//! one StoreAPI with one label set each, and closed and deleted once idle past the retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_core::error::ErrorKind;
use meridian_core::labels::Labels;
use meridian_edge::metadata::MetadataStore;
use meridian_edge::receive::tenants::{Tenants, TenantsOptions};
use meridian_edge::receive::{ReceiveMetrics, store_series};
use meridian_storeapi::Store;
use meridian_storeapi::multi::MultiStore;
use meridian_storeapi::proto::prometheus::{Label, Sample, TimeSeries};

fn series(t: i64) -> Vec<TimeSeries> {
    vec![TimeSeries {
        labels: vec![Label {
            name: "__name__".into(),
            value: "m".into(),
        }],
        samples: vec![Sample {
            value: 1.0,
            timestamp: t,
        }],
        ..Default::default()
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_open_up_to_the_limit_and_idle_ones_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tenants");
    let multi = Arc::new(MultiStore::new("receive", None));
    let tenants = Tenants::open(
        TenantsOptions {
            root: root.clone(),
            db: Default::default(),
            node_labels: Labels::from_pairs([("replica", "0"), ("tenant_id", "overridden")]),
            tenant_label: "tenant_id".into(),
            objstore: None,
            shipper: Default::default(),
            shipper_grace: Duration::from_secs(1),
            series_limits: Default::default(),
            max_tenants: 2,
            idle_after: Some(Duration::from_millis(300)),
        },
        multi.clone(),
        Vec::new(),
        Arc::new(MetadataStore::new()),
        |t| {
            if t == "old" {
                Labels::from_pairs([("team", "x"), ("replica", "lost")])
            } else {
                Labels::empty()
            }
        },
    )
    .await
    .unwrap();
    let m = ReceiveMetrics::default();
    let now = meridian_core::time::now_ms();
    let old = tenants
        .get(
            "old",
            Labels::from_pairs([("team", "x"), ("replica", "lost")]),
        )
        .await
        .unwrap();
    // Hashring labels, then the node's, then the tenant label: the later wins.
    assert_eq!(
        old.labels,
        Labels::from_pairs([("replica", "0"), ("team", "x"), ("tenant_id", "old")])
    );
    assert_eq!(
        store_series(&old.db, &series(now - 3_600_000), &m).status,
        204
    );
    let fresh = tenants.get("fresh", Labels::empty()).await.unwrap();
    // Its newest sample is ahead of the clock (within the 10 minutes allowed): never idle here.
    assert_eq!(
        store_series(&fresh.db, &series(now + 300_000), &m).status,
        204
    );
    let refused = tenants.get("third", Labels::empty()).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::LimitExceeded, "{refused}");
    let bad = tenants.get("../x", Labels::empty()).await.unwrap_err();
    assert_eq!(bad.kind, ErrorKind::BadData, "{bad}");
    let info = multi.info().await.unwrap();
    assert_eq!(info.label_sets.len(), 2);
    drop((old, fresh));

    tokio::time::sleep(Duration::from_millis(400)).await;
    tenants.prune_idle().await;
    assert_eq!(tenants.names(), vec!["fresh".to_owned()]);
    assert!(!root.join("old").exists());
    assert!(root.join("fresh").join("wal").is_dir());
    let info = multi.info().await.unwrap();
    assert_eq!(info.label_sets.len(), 1);
    assert!(format!("{:?}", info.label_sets).contains("fresh"));
    // Room again for a new tenant; a reopened receiver finds the tenants on disk.
    tenants.get("third", Labels::empty()).await.unwrap();
    tenants.close().await;
    drop(tenants);
    let again = Tenants::open(
        TenantsOptions {
            root: root.clone(),
            db: Default::default(),
            node_labels: Labels::empty(),
            tenant_label: "tenant_id".into(),
            objstore: None,
            shipper: Default::default(),
            shipper_grace: Duration::from_secs(1),
            series_limits: Default::default(),
            max_tenants: 10,
            idle_after: None,
        },
        Arc::new(MultiStore::new("receive", None)),
        Vec::new(),
        Arc::new(MetadataStore::new()),
        |_| Labels::empty(),
    )
    .await
    .unwrap();
    assert_eq!(again.names(), vec!["fresh".to_owned(), "third".to_owned()]);
    again.close().await;
}
