//! The StoreAPI acceptance suite against the gateway's own StoreAPI: the fan-out over in-memory stores,
//! served by tonic on loopback. The fixture is spread over two stores so that the merge is exercised:
//! some series live in one store only, the others are split in time with an overlap held by both (as an
//! edge and the bucket hold the same recent blocks). The answer must be exactly the fixture's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_gateway::fanout::{Fanout, FanoutOptions, StaticStores};
use meridian_storeapi::Store;
use meridian_storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_storeapi::memstore::MemStore;

async fn start_gateway(fx: Fixture) -> StartedStore {
    let a = MemStore::new(fx.external_labels.clone());
    let b = MemStore::new(fx.external_labels.clone());
    for (i, (labels, samples)) in fx.series.iter().enumerate() {
        match i % 3 {
            0 => a.append(labels, samples).unwrap(),
            1 => b.append(labels, samples).unwrap(),
            _ => {
                // A holds the first 60 %, B the last 60 %: the middle fifth is in both.
                let n = samples.len();
                a.append(labels, &samples[..(n * 3).div_ceil(5)]).unwrap();
                b.append(labels, &samples[n * 2 / 5..]).unwrap();
            }
        }
    }
    for (metric, metas) in &fx.metadata {
        a.set_metadata(metric, metas.clone());
        b.set_metadata(metric, metas.clone());
    }
    let stores: Vec<(String, Arc<dyn Store>)> =
        vec![("mem-a".into(), Arc::new(a)), ("mem-b".into(), Arc::new(b))];
    let set = StaticStores::probe(stores).await.unwrap();
    let fanout = Fanout::new(Arc::new(set), FanoutOptions::default());
    acceptance::serve_plaintext(Arc::new(fanout)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_storeapi_passes_acceptance_suite() {
    meridian_pki::install_crypto_provider();
    acceptance::run(start_gateway).await;
}
