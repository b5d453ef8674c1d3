//! Fan-out benchmarks, through the `Queryable` the PromQL engine uses (fetch, k-way merge, chunk decoding,
//! replica merge):
//! - **merge + dedup**: 2 replicas × N series × 2 h at 15 s (own scrape phases, 1 % missed scrapes),
//!   each replica in its own in-memory store, selected with dedup on; samples/s counts input samples;
//!   one core (current-thread runtime, stores in process);
//! - **fan-out overhead**: one replica's N series × 2 h in one store, then the same data split over 4
//!   stores — by series (four clusters) and by time (four consecutive 30-minute ranges of every series,
//!   as edge head and bucket blocks) — each store behind its own gRPC server on loopback; the ratio
//!   of the 4-store time to the 1-store time.
//!
//! Run: `cargo bench -p meridian-gateway --bench fanout` (10,000 series); under `cargo test --all-targets`
//! a 200-series smoke run that also checks the answers agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use meridian_core::{Labels, Matcher, Sample};
use meridian_gateway::fanout::{Fanout, FanoutOptions, QueryOptions, StaticStores};
use meridian_gateway::queryable::{Queryable, SelectRequest, Selected};
use meridian_storeapi::Store;
use meridian_storeapi::acceptance::serve_plaintext;
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::memstore::MemStore;

const STEP: i64 = 15_000;
const POINTS: i64 = 480;

fn samples(series: usize, phase: i64, seed: u64) -> Vec<Sample> {
    let mut x = seed | 1;
    (0..POINTS)
        .filter(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            !x.is_multiple_of(100)
        })
        .map(|k| Sample::new(k * STEP + phase, (series as f64) * 10.0 + k as f64 * 3.0))
        .collect()
}

fn series_labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "http_requests"),
        ("instance", &format!("host-{i:05}:9100")),
        ("job", "node"),
    ])
}

async fn fanout_over(
    stores: Vec<(String, Arc<dyn Store>)>,
    replica_labels: &[&str],
) -> Arc<Fanout> {
    let set = StaticStores::probe(stores).await.unwrap();
    Arc::new(Fanout::new(
        Arc::new(set),
        FanoutOptions {
            replica_labels: replica_labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    ))
}

async fn select(f: &Arc<Fanout>, dedup: bool) -> Selected {
    f.querier(QueryOptions {
        dedup,
        ..Default::default()
    })
    .select(SelectRequest {
        matchers: vec![Matcher::equal("__name__", "http_requests")],
        start: 0,
        end: POINTS * STEP,
        hints: Default::default(),
    })
    .await
    .unwrap()
}

/// Best wall time of `runs` selections.
async fn best_of(runs: usize, f: &Arc<Fanout>, dedup: bool) -> (f64, Selected) {
    let mut best = f64::MAX;
    let mut last = Selected::default();
    for _ in 0..runs {
        let start = Instant::now();
        last = select(f, dedup).await;
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, last)
}

fn merge_and_dedup(n: usize, runs: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stores: Vec<(String, Arc<dyn Store>)> = Vec::new();
        let mut input = 0;
        for (r, phase) in [(0u64, 1_000), (1, 8_500)] {
            let s = MemStore::new(Labels::from_pairs([("replica", r.to_string().as_str())]));
            for i in 0..n {
                let smp = samples(i, phase, i as u64 * 2 + r + 1);
                input += smp.len();
                s.append(&series_labels(i), &smp).unwrap();
            }
            stores.push((format!("replica-{r}"), Arc::new(s)));
        }
        let f = fanout_over(stores, &["replica"]).await;
        let (t, got) = best_of(runs, &f, true).await;
        assert_eq!(got.series.len(), n);
        let merged: usize = got.series.iter().map(|s| s.samples.len()).sum();
        println!(
            "merge + dedup: 2 replicas x {n} series x 2h, {input} input samples -> {merged} merged in {t:.3}s (best of {runs}, one core): {:.1} M input samples/s",
            input as f64 / t / 1e6
        );
    });
}

fn overhead(n: usize, runs: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data: Vec<Vec<Sample>> = (0..n).map(|i| samples(i, 1_000, i as u64 + 1)).collect();
        let total: usize = data.iter().map(Vec::len).sum();
        let ext = Labels::from_pairs([("cluster", "a")]);
        let mut guards = Vec::new();
        let mut remote = async |stores: Vec<MemStore>| -> Arc<Fanout> {
            let mut list: Vec<(String, Arc<dyn Store>)> = Vec::new();
            for (k, s) in stores.into_iter().enumerate() {
                let started = serve_plaintext(Arc::new(s)).await;
                list.push((
                    format!("store-{k}"),
                    Arc::new(StoreClient::new(started.channel.clone(), format!("store-{k}"))),
                ));
                guards.push(started.guard);
            }
            fanout_over(list, &[]).await
        };

        let one = MemStore::new(ext.clone());
        for (i, d) in data.iter().enumerate() {
            one.append(&series_labels(i), d).unwrap();
        }
        let one = remote(vec![one]).await;

        let by_series: Vec<MemStore> = (0..4).map(|_| MemStore::new(ext.clone())).collect();
        for (i, d) in data.iter().enumerate() {
            by_series[i % 4].append(&series_labels(i), d).unwrap();
        }
        let by_series = remote(by_series).await;

        let by_time: Vec<MemStore> = (0..4).map(|_| MemStore::new(ext.clone())).collect();
        let quarter = POINTS * STEP / 4;
        for (i, d) in data.iter().enumerate() {
            for (q, store) in by_time.iter().enumerate() {
                let part: Vec<Sample> = d
                    .iter()
                    .copied()
                    .filter(|s| s.t / quarter == q as i64)
                    .collect();
                store.append(&series_labels(i), &part).unwrap();
            }
        }
        let by_time = remote(by_time).await;

        let (t1, a) = best_of(runs, &one, false).await;
        let (ts, b) = best_of(runs, &by_series, false).await;
        let (tt, c) = best_of(runs, &by_time, false).await;
        assert_eq!(a, b, "4 stores by series answer differently");
        assert_eq!(a, c, "4 stores by time answer differently");
        println!(
            "fan-out: {n} series x 2h ({total} samples) over gRPC loopback (best of {runs}): 1 store {t1:.3}s; \
             4 stores by series {ts:.3}s ({:.2}x); 4 stores by time {tt:.3}s ({:.2}x)",
            ts / t1,
            tt / t1
        );
    });
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, runs) = if bench { (10_000, 5) } else { (200, 1) };
    merge_and_dedup(n, runs);
    overhead(n, runs);
}
