//! The endpoint set over real gRPC servers: the endpoint config file is re-read when it changes (a bad
//! version is refused and the previous one stays), and an endpoint that stops answering is reported,
//! then left out of queries after the unhealthy timeout while the stores view keeps showing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_core::net::dns::DnsResolver;
use meridian_core::{Labels, Sample};
use meridian_gateway::endpoints::{EndpointGroup, EndpointSet, EndpointSetOptions};
use meridian_gateway::fanout::StoreSet;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::server;

async fn serve(cluster: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let store = MemStore::new(Labels::from_pairs([("cluster", cluster)]));
    store
        .append(
            &Labels::from_pairs([("__name__", "up")]),
            &[Sample::new(1000, 1.0)],
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp(Arc::new(store), listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// `(name, healthy)` of the stores queries would use, sorted.
fn used(set: &EndpointSet) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = set
        .stores()
        .into_iter()
        .map(|s| (s.name, s.meta.is_some() && s.unhealthy.is_none()))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<(String, bool)>) -> Vec<(String, bool)> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_reloads_and_unhealthy_endpoints_age_out() {
    let (a, _stop_a) = serve("a").await;
    let (b, stop_b) = serve("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoints.yaml");
    std::fs::write(&file, format!("- endpoints: [\"{a}\"]\n")).unwrap();
    let set = EndpointSet::new(
        DnsResolver::new(None).unwrap(),
        false,
        EndpointGroup {
            specs: vec![],
            transport: Default::default(),
        },
        EndpointSetOptions {
            config_file: Some(file.clone()),
            unhealthy_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .unwrap();
    set.refresh_now().await;
    assert_eq!(used(&set), vec![(a.clone(), true)]);

    // A changed file is picked up.
    std::fs::write(&file, format!("- endpoints: [\"{a}\", \"{b}\"]\n")).unwrap();
    set.refresh_now().await;
    assert_eq!(
        used(&set),
        sorted(vec![(a.clone(), true), (b.clone(), true)])
    );
    assert_eq!(set.config_error(), None);

    // A broken file is refused with its line; the endpoints stay.
    std::fs::write(
        &file,
        format!("- endpoints: [\"{a}\"]\n  tls_config: {{ca_file: nope.crt}}\n"),
    )
    .unwrap();
    set.refresh_now().await;
    let err = set.config_error().unwrap();
    assert!(
        err.contains("line 2: tls_config:") && err.contains("nope.crt"),
        "{err}"
    );
    assert_eq!(
        used(&set),
        sorted(vec![(a.clone(), true), (b.clone(), true)])
    );

    // b stops: unhealthy at once (named in queries), left out after the unhealthy timeout, still shown.
    drop(stop_b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while used(&set) != sorted(vec![(a.clone(), true), (b.clone(), false)]) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", used(&set));
        set.refresh_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    set.refresh_now().await;
    assert_eq!(used(&set), vec![(a.clone(), true)]);
    let view = set.stores_view().to_string();
    assert!(view.contains(&b), "{view}");

    // The file fixed: accepted again.
    std::fs::write(&file, format!("- endpoints: [\"{a}\"]\n")).unwrap();
    set.refresh_now().await;
    assert_eq!(set.config_error(), None);
    assert_eq!(used(&set), vec![(a, true)]);
}
