//! The StoreAPI acceptance suite against the in-memory store, served by tonic on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_storeapi::MAX_MESSAGE_SIZE;
use meridian_storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_storeapi::memstore::MemStore;

async fn start_memstore(fx: Fixture) -> StartedStore {
    let store = MemStore::new(fx.external_labels.clone());
    for (labels, samples) in &fx.series {
        store.append(labels, samples).expect("fixture appends");
    }
    for (metric, metas) in &fx.metadata {
        store.set_metadata(metric, metas.clone());
    }
    acceptance::serve_plaintext(Arc::new(store)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memstore_passes_acceptance_suite() {
    meridian_pki::install_crypto_provider();
    acceptance::run(start_memstore).await;
}

/// Frames far above gRPC's 4 MiB default pass in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_pass() {
    meridian_pki::install_crypto_provider();
    use meridian_core::{Labels, Sample};
    use meridian_storeapi::proto::thanos as pb;
    let big_value = "x".repeat(6 << 20);
    let fx = Fixture {
        external_labels: Labels::empty(),
        series: vec![(
            Labels::from_pairs([("__name__", "big"), ("v", big_value.as_str())]),
            vec![Sample::new(1, 1.0)],
        )],
        metadata: Default::default(),
    };
    let s = start_memstore(fx).await;
    let mut client = pb::store_client::StoreClient::new(s.channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    // A 6 MiB request (matcher value) and a 6 MiB response frame.
    let req = pb::SeriesRequest {
        min_time: 0,
        max_time: 10,
        matchers: vec![
            pb::LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "big".into(),
            },
            pb::LabelMatcher {
                r#type: 0,
                name: "v".into(),
                value: big_value.clone(),
            },
        ],
        ..Default::default()
    };
    let mut stream = client.series(req).await.expect("series").into_inner();
    let frame = stream.message().await.expect("frame").expect("one frame");
    match frame.result {
        Some(pb::series_response::Result::Series(s)) => {
            assert_eq!(
                s.labels
                    .iter()
                    .find(|l| l.name == "v")
                    .map(|l| l.value.len()),
                Some(6 << 20)
            );
        }
        other => panic!("unexpected frame {other:?}"),
    }
}
