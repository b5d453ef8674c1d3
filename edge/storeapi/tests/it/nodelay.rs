//! A plaintext StoreAPI round trip costs what an mTLS one does (issue 25). Without TCP_NODELAY on the
//! accepted connection, a response written in several small segments (HTTP/2 headers, data,
//! trailers) waits for the client's delayed ACK: Nagle's algorithm adds ~40 ms to every call on Linux.
//! The bound below is far above a real round trip (under 5 ms in a debug build on a loaded machine)
//! and far below that delay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_core::{Labels, Sample};
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_calls_do_not_wait_for_delayed_acks() {
    let store = MemStore::new(Labels::from_pairs([("cluster", "a")]));
    for cpu in 0..8 {
        store
            .append(
                &Labels::from_pairs([("__name__", "demo_num_cpus"), ("cpu", &cpu.to_string())]),
                &[Sample::new(1_000, 8.0), Sample::new(16_000, 8.0)],
            )
            .expect("append");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let srv = tokio::spawn(server::serve_tcp(
        Arc::new(store),
        listener,
        std::future::pending(),
    ));
    let client = StoreClient::connect_plaintext(&addr)
        .await
        .expect("connect");
    let mut took = Vec::new();
    for _ in 0..31 {
        let req = pb::SeriesRequest {
            min_time: 0,
            max_time: 20_000,
            matchers: vec![pb::LabelMatcher {
                r#type: pb::label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "demo_num_cpus".into(),
            }],
            ..Default::default()
        };
        let t = Instant::now();
        let mut stream = client
            .store_client()
            .series(req)
            .await
            .expect("series")
            .into_inner();
        let mut series = 0;
        while let Some(m) = stream.next().await {
            if let Some(pb::series_response::Result::Series(_)) = m.expect("frame").result {
                series += 1;
            }
        }
        took.push(t.elapsed());
        assert_eq!(series, 8);
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median plaintext Series round trip {median:?} (all: {took:?}): TCP_NODELAY missing?"
    );
    srv.abort();
}
