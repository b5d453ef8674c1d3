//! The StoreAPI acceptance suite against the in-memory store, served by tonic on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_storeapi::MAX_MESSAGE_SIZE;
use meridian_storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::multi::MultiStore;

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

/// The fixture spread over three in-memory stores under one [`MultiStore`]: every third series in
/// each, and one series in three cut in two by time across two of them (equal label sets from two
/// members become one series).
async fn start_multistore(fx: Fixture) -> StartedStore {
    let stores: Vec<Arc<MemStore>> = (0..3)
        .map(|_| Arc::new(MemStore::new(fx.external_labels.clone())))
        .collect();
    for (i, (labels, samples)) in fx.series.iter().enumerate() {
        let home = &stores[i % 3];
        if i % 3 == 1 && samples.len() > 1 {
            let (a, b) = samples.split_at(samples.len() / 2);
            home.append(labels, a).expect("fixture appends");
            stores[2].append(labels, b).expect("fixture appends");
        } else {
            home.append(labels, samples).expect("fixture appends");
        }
    }
    for (metric, metas) in &fx.metadata {
        stores[0].set_metadata(metric, metas.clone());
    }
    let members: Vec<Arc<dyn meridian_storeapi::Store>> = stores
        .iter()
        .map(|s| s.clone() as Arc<dyn meridian_storeapi::Store>)
        .collect();
    let multi = MultiStore::new("store", Some(members[0].clone()));
    multi.set_members(members);
    acceptance::serve_plaintext(Arc::new(multi)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multistore_passes_acceptance_suite() {
    meridian_pki::install_crypto_provider();
    acceptance::run(start_multistore).await;
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
