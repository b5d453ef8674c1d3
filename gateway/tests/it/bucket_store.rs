//! The bucket store: the StoreAPI acceptance suite over a FILESYSTEM bucket and over the S3 API (PyPI's
//! moto server); history across an edge and the bucket after local retention (no gap, no double
//! counting); lazy start-up over 1,000 blocks; filters and limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::sync::Arc;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::bucket::{
    BucketLimits, BucketStore, BucketStoreOptions, StoreTime, parse_selector,
};
use meridian_gateway::fanout::{Fanout, FanoutOptions, QueryOptions, StaticStores};
use meridian_gateway::promql::{Engine, QueryValue};
use meridian_storeapi::Store;
use meridian_storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_storeapi::leaf::LeafStore;
use meridian_testkit::Moto;
use meridian_tsdb::block::write_block;
use meridian_tsdb::db::{Db, DbOptions, DbSource};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::{Shipper, ShipperOptions, upload_block_dir};
use support::{H, STEP, T0, counter, fs_bucket, many_blocks, rss_bytes, spawn_store};
use tokio_util::sync::CancellationToken;

/// 30-minute blocks, so the fixture's ~100 minutes span several.
const BLOCK: i64 = 30 * 60 * 1000;

/// Writes `series` as blocks of `BLOCK` ms into `dir`; returns the block directories.
fn write_blocks(dir: &Path, series: &[(Labels, Vec<Sample>)]) -> Vec<std::path::PathBuf> {
    let (min, max) = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.t))
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    if min > max {
        return vec![];
    }
    let mut out = Vec::new();
    let mut start = min.div_euclid(BLOCK) * BLOCK;
    while start <= max {
        let part: Vec<(Labels, Vec<Sample>)> = series
            .iter()
            .map(|(l, s)| {
                let w: Vec<Sample> = s
                    .iter()
                    .copied()
                    .filter(|x| x.t >= start && x.t < start + BLOCK)
                    .collect();
                (l.clone(), w)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if !part.is_empty() {
            let meta = write_block(dir, part, start, start + BLOCK).unwrap();
            out.push(dir.join(meta.ulid));
        }
        start += BLOCK;
    }
    out
}

/// Uploads the fixture's blocks; with `strip_files`, meta.json lists no files (as blocks made by
/// other tools), so the store must find sizes itself.
async fn fill_bucket(bucket: &Bucket, fx: &Fixture, strip_files: bool) {
    let dir = tempfile::tempdir().unwrap();
    for block in write_blocks(dir.path(), &fx.series) {
        upload_block_dir(bucket, &block, &fx.external_labels, "test")
            .await
            .unwrap();
        if strip_files {
            let ulid = block.file_name().unwrap().to_str().unwrap().to_owned();
            let path = meridian_tsdb::objstore::block_path(
                &ulid,
                meridian_tsdb::objstore::BlockObject::Meta,
            );
            use object_store::ObjectStoreExt;
            let raw = bucket
                .store
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            v["thanos"].as_object_mut().unwrap().remove("files");
            bucket
                .store
                .put(&path, serde_json::to_vec(&v).unwrap().into())
                .await
                .unwrap();
        }
    }
}

async fn serve(
    bucket: Bucket,
    opts: BucketStoreOptions,
    keep: Box<dyn std::any::Any + Send>,
) -> StartedStore {
    let store = Arc::new(BucketStore::new(bucket, opts));
    store.sync().await.unwrap();
    assert!(store.is_ready());
    let mut started = acceptance::serve_plaintext(store).await;
    started.guard = Box::new((started.guard, keep));
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_over_filesystem() {
    meridian_pki::install_crypto_provider();
    for strip in [false, true] {
        acceptance::run(|fx| async move {
            let dir = tempfile::tempdir().unwrap();
            let bucket = fs_bucket(dir.path());
            fill_bucket(&bucket, &fx, strip).await;
            serve(bucket, BucketStoreOptions::default(), Box::new(dir)).await
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_over_s3() {
    meridian_pki::install_crypto_provider();
    let Some(moto) = Moto::start() else { return };
    let moto = Arc::new(moto);
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    acceptance::run(|fx| {
        let (moto, n) = (moto.clone(), n.clone());
        async move {
            let name = format!(
                "acceptance-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            moto.create_bucket(&name);
            let bucket =
                Bucket::parse(&moto.objstore_yaml(&name, "prefix: history\n"), "s3").unwrap();
            fill_bucket(&bucket, &fx, false).await;
            serve(bucket, BucketStoreOptions::default(), Box::new(())).await
        }
    })
    .await;
}

/// Counter `i` grows by `i + 1 + k % 3` at step `k` and is reset to 0 at step 2000.
fn next_value(i: usize, k: i64, prev: f64) -> f64 {
    match k {
        0 | 2000 => 0.0,
        _ => prev + (i as i64 + 1 + k % 3) as f64,
    }
}

/// An edge ingests 12 h, cuts 2 h blocks and ships them; retention (4 h) then deletes the old ones
/// locally. The gateway asks the edge (blocks it kept and its head) and the bucket (every block): a
/// range query over the whole period returns each sample exactly once, with no gap at the boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_edge_and_bucket() {
    meridian_pki::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(&root.path().join("bucket"));
    std::fs::create_dir_all(root.path().join("bucket")).unwrap();
    let db = Arc::new(
        Db::open(
            &root.path().join("edge"),
            DbOptions {
                retention_time: Some(4 * H),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let ext = Labels::from_pairs([("cluster", "a"), ("replica", "0")]);
    let shipper = Shipper::new(
        bucket.clone(),
        db.clone(),
        ext.clone(),
        ShipperOptions::default(),
    )
    .unwrap();
    let series = 5;
    let steps = 12 * H / STEP;
    let mut want: Vec<Vec<Sample>> = vec![Vec::new(); series];
    let never = CancellationToken::new();
    for k in 0..steps {
        let t = T0 + k * STEP;
        let mut app = db.appender();
        for (i, w) in want.iter_mut().enumerate() {
            let v = next_value(i, k, w.last().map_or(0.0, |s| s.v));
            app.add(&counter(i), t, v).unwrap();
            w.push(Sample::new(t, v));
        }
        app.commit().unwrap();
        if k % 240 == 239 {
            db.compact().unwrap();
            shipper.sync(&never).await.unwrap();
        }
    }
    let now = T0 + steps * STEP;
    let deleted = db.apply_retention().unwrap();
    assert!(deleted.len() >= 2, "retention deleted {deleted:?}");
    let kept = db.blocks();
    assert!(!kept.is_empty(), "some blocks are still local");
    let local_min = kept.iter().map(|m| m.min_time).min().unwrap();
    assert!(local_min > T0 + 2 * H, "old history is gone locally");

    let edge: Arc<dyn Store> = Arc::new(LeafStore::from_source(DbSource(db.clone()), ext.clone()));
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    let report = store.sync().await.unwrap();
    assert!(report.loaded >= 4, "{report:?}");
    let fanout = Arc::new(Fanout::new(
        Arc::new(
            StaticStores::probe(vec![
                ("edge".into(), edge),
                ("bucket".into(), store.clone() as Arc<dyn Store>),
            ])
            .await
            .unwrap(),
        ),
        FanoutOptions {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
    ));
    let q = fanout.querier(QueryOptions {
        dedup: true,
        ..Default::default()
    });
    let engine = Engine::default();
    let end = now - STEP;
    // Every sample, once, at its own time.
    let got = engine
        .range(&q, "requests_total", T0, end, STEP)
        .await
        .unwrap();
    let QueryValue::Matrix(m) = got.value else {
        panic!("matrix expected")
    };
    assert_eq!(m.len(), series);
    for (s, w) in m.iter().zip(&want) {
        assert_eq!(s.samples.len(), w.len(), "{}", s.labels);
        assert_eq!(&s.samples, w, "{}", s.labels);
    }
    // No double counting: samples per hour are 240 everywhere, also where edge and bucket overlap.
    let got = engine
        .range(
            &q,
            "sum(count_over_time(requests_total[1h]))",
            T0 + H - STEP,
            end,
            H,
        )
        .await
        .unwrap();
    let QueryValue::Matrix(m) = got.value else {
        panic!("matrix expected")
    };
    for p in &m[0].samples {
        assert_eq!(p.v, (240 * series) as f64, "at {}", p.t);
    }
    // increase() over the whole period equals the increments ingested (the reset handled once).
    let got = engine
        .instant(&q, "sum(increase(requests_total[12h]))", end)
        .await
        .unwrap();
    let QueryValue::Vector(v) = got.value else {
        panic!("vector expected")
    };
    let first_t = T0 + STEP; // the window (end-12h, end] starts after the first sample
    let window: Vec<Vec<Sample>> = want
        .iter()
        .map(|w| w.iter().copied().filter(|s| s.t >= first_t).collect())
        .collect();
    let raw_increase: f64 = window
        .iter()
        .map(|w| {
            w.windows(2)
                .map(|p| {
                    if p[1].v < p[0].v {
                        p[1].v
                    } else {
                        p[1].v - p[0].v
                    }
                })
                .sum::<f64>()
        })
        .sum();
    // The window covers the samples exactly, so extrapolation adds nothing beyond half a step each
    // side: compare within that.
    let got_v = v[0].v;
    assert!(
        (got_v - raw_increase).abs() / raw_increase < 0.001,
        "increase {got_v} vs ingested {raw_increase}"
    );
    // The bucket alone holds the deleted history; the edge alone does not.
    assert!(store.metrics().fetched_total() > 0);
}

/// `meridian-gateway store` on 1,000 blocks: ready within seconds with a bounded RSS before the first
/// query; the query gateway then reads history through it over the StoreAPI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_command_is_ready_fast_and_small_on_1000_blocks() {
    use meridian_testkit::http;
    meridian_pki::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    many_blocks(root.path(), 1000).await;
    let (mut child, grpc, http_addr, ready) =
        spawn_store(root.path(), env!("CARGO_BIN_EXE_meridian-gateway"));
    let rss = rss_bytes(child.pid());
    println!(
        "store on 1000 blocks: ready in {ready:?}, RSS {:.1} MiB before the first query",
        rss as f64 / (1 << 20) as f64
    );
    assert!(
        ready < std::time::Duration::from_secs(10),
        "ready after {ready:?}"
    );
    assert!(rss < 64 << 20, "RSS {rss} bytes before the first query");
    let metrics = http("GET", &http_addr, "/metrics", &[], b"")
        .unwrap()
        .text();
    assert_eq!(
        meridian_testkit::metric_value(&metrics, "meridian_bucket_store_blocks_loaded"),
        Some(1000.0),
        "{metrics}"
    );
    let store_rss = meridian_testkit::metric_value(&metrics, "process_resident_memory_bytes");
    assert!(store_rss.is_some_and(|v| v > 1e6), "{metrics}");

    // The query gateway asks the store like any endpoint.
    let client = meridian_storeapi::client::StoreClient::new(
        meridian_pki::channel::GrpcChannel::plaintext_lazy(&grpc, None).unwrap(),
        grpc.clone(),
    );
    let info = client.info().await.unwrap();
    assert_eq!(info.component_type, "store");
    assert_eq!(info.label_sets.len(), 2);
    child.signal("TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "store exited with {status}");
}

/// 1,000 small blocks: a sync reads only their meta.json files (no index bytes), and the first query
/// reads index-headers of the blocks it touches only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_reads_no_index_and_queries_touch_only_their_blocks() {
    meridian_pki::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let blocks = 1000;
    let bucket = many_blocks(root.path(), blocks).await;

    let store = BucketStore::new(bucket.clone(), BucketStoreOptions::default());
    let started = std::time::Instant::now();
    let report = store.sync().await.unwrap();
    let ready = started.elapsed();
    assert_eq!(report.loaded, blocks as usize);
    assert_eq!(report.ignored, 1);
    let m = store.metrics();
    assert_eq!(
        m.requests_total(),
        1 + blocks as u64,
        "one LIST and one GET per meta.json (none for the unfinished upload: the listing shows it has none)"
    );
    let index_bytes = m
        .fetched_bytes
        .get_or_create(&meridian_gateway::bucket::KindLabel { kind: "index" })
        .get();
    assert_eq!(index_bytes, 0, "no index byte read at start-up");
    println!(
        "1000 blocks: ready after {ready:?} ({} bytes of meta.json)",
        m.fetched_total()
    );

    let info = store.info().await.unwrap();
    assert_eq!(info.label_sets.len(), 2);
    assert_eq!(info.component_type, "store");

    // A query over one block and one cluster reads one index-header and that block's series/chunks.
    let t = T0 + 10 * 2 * H;
    let req = meridian_storeapi::series_request(
        t,
        t + H,
        &[
            meridian_core::matcher::Matcher::equal("__name__", "requests_total"),
            meridian_core::matcher::Matcher::equal("cluster", "a"),
        ],
        false,
    );
    let before = m.requests_total();
    let mut stream = store.series(req.clone()).await.unwrap();
    let mut n = 0;
    use futures::StreamExt;
    while let Some(f) = stream.next().await {
        if let meridian_storeapi::SeriesFrame::Series(s) = f.unwrap() {
            n += 1;
            assert_eq!(s.chunks.len(), 1);
        }
    }
    assert_eq!(n, 3);
    let gets = m.requests_total() - before;
    assert!(gets <= 6, "one block's query took {gets} requests");
    // Again: everything from the caches.
    let before = m.requests_total();
    let _ = store.series(req).await.unwrap();
    assert_eq!(m.requests_total(), before, "a repeated query reads nothing");
}

/// `--min-time`/`--max-time` and `--selector.relabel-config` shard blocks; limits refuse large requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_limits() {
    meridian_pki::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(root.path());
    let local = tempfile::tempdir().unwrap();
    for (b, cluster) in [(0, "a"), (1, "b"), (2, "a")] {
        let start = T0 + b * 2 * H;
        let series: Vec<(Labels, Vec<Sample>)> = (0..10)
            .map(|i| {
                (
                    counter(i),
                    (0..100)
                        .map(|k| Sample::new(start + k * 60_000, k as f64))
                        .collect(),
                )
            })
            .collect();
        let meta = write_block(local.path(), series, start, start + 2 * H).unwrap();
        upload_block_dir(
            &bucket,
            &local.path().join(&meta.ulid),
            &Labels::from_pairs([("cluster", cluster)]),
            "test",
        )
        .await
        .unwrap();
    }
    let sync = |opts: BucketStoreOptions| {
        let bucket = bucket.clone();
        async move {
            let s = BucketStore::new(bucket, opts);
            s.sync().await.unwrap();
            s
        }
    };
    let s = sync(BucketStoreOptions {
        min_time: StoreTime::At(T0 + 2 * H),
        ..Default::default()
    })
    .await;
    assert_eq!(s.blocks().len(), 2);
    // A relative range moves with the clock (Thanos' `--min-time=-1h`): blocks that age out of it
    // leave at the next sync, and a relative `--max-time` admits blocks as they age into it.
    let now = Arc::new(std::sync::atomic::AtomicI64::new(T0 + 3 * H));
    let clock = {
        let now = now.clone();
        meridian_core::time::Clock::from_fn(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let s = sync(BucketStoreOptions {
        min_time: StoreTime::FromNow(-H),
        max_time: StoreTime::FromNow(-H / 2),
        clock,
        ..Default::default()
    })
    .await;
    let starts = |s: &BucketStore| -> Vec<i64> {
        s.blocks()
            .values()
            .map(|b| b.meta.min_time)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        starts(&s),
        vec![T0 + 2 * H],
        "at T0+3h: the block starting at T0+2h"
    );
    now.store(T0 + 5 * H, std::sync::atomic::Ordering::SeqCst);
    let report = s.sync().await.unwrap();
    assert_eq!(
        starts(&s),
        vec![T0 + 4 * H],
        "at T0+5h: the block starting at T0+4h"
    );
    assert_eq!((report.added, report.removed), (1, 1));
    assert_eq!(
        s.metrics().requests_total(),
        2 + 3,
        "two LISTs and each meta.json once, though two blocks were left out at the first sync"
    );
    let s = sync(BucketStoreOptions {
        selector: parse_selector("- action: drop\n  source_labels: [cluster]\n  regex: a\n")
            .unwrap(),
        ..Default::default()
    })
    .await;
    assert_eq!(s.blocks().len(), 1);
    let s = sync(BucketStoreOptions {
        limits: BucketLimits {
            series: 15,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let req = meridian_storeapi::series_request(
        T0,
        T0 + 6 * H,
        &[meridian_core::matcher::Matcher::equal(
            "__name__",
            "requests_total",
        )],
        false,
    );
    let err = match s.series(req).await {
        Ok(_) => panic!("over the series limit"),
        Err(e) => e,
    };
    assert_eq!(err.kind, meridian_core::error::ErrorKind::LimitExceeded);
    // A block deleted from the bucket (by a compactor) disappears at the next sync.
    let gone = s.blocks().keys().next().cloned().unwrap();
    std::fs::remove_dir_all(root.path().join(&gone)).unwrap();
    let report = s.sync().await.unwrap();
    assert_eq!((report.removed, report.loaded), (1, 2));
    assert!(!s.blocks().contains_key(&gone));
    assert!(
        err.message.contains("--store.grpc.touched-series-limit"),
        "{}",
        err.message
    );
}

/// Both replicas of an HA pair shipped to one bucket (their scrapes 5 s apart): with deduplication
/// the bucket store keeps the replicas' series apart (equal in labels once `replica` is removed) and
/// the querier merges them into one series at the scrape rate — not both replicas' samples
/// interleaved, which doubled every count before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_replicas_in_one_bucket_are_deduplicated_not_interleaved() {
    meridian_pki::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(&root.path().join("bucket"));
    std::fs::create_dir_all(root.path().join("bucket")).unwrap();
    let points = 2 * H / STEP;
    for (r, offset) in [(0, 0), (1, 5_000)] {
        let samples: Vec<Sample> = (0..points)
            .map(|k| Sample::new(T0 + k * STEP + offset, k as f64))
            .collect();
        let dir = root.path().join(format!("blocks-{r}"));
        let ext = Labels::from_pairs([("cluster", "a"), ("replica", &r.to_string())]);
        for block in write_blocks(&dir, &[(counter(0), samples)]) {
            upload_block_dir(&bucket, &block, &ext, "test")
                .await
                .unwrap();
        }
    }
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    store.sync().await.unwrap();
    let fanout = Arc::new(Fanout::new(
        Arc::new(
            StaticStores::probe(vec![("bucket".into(), store as Arc<dyn Store>)])
                .await
                .unwrap(),
        ),
        FanoutOptions {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
    ));
    let engine = Engine::default();
    let end = T0 + points * STEP;
    for (dedup, want_series, want_per_hour) in [(true, 1, 240.0), (false, 2, 240.0)] {
        let q = fanout.querier(QueryOptions {
            dedup,
            ..Default::default()
        });
        let got = engine
            .instant(&q, "count_over_time(requests_total[1h])", end)
            .await
            .unwrap();
        let QueryValue::Vector(v) = got.value else {
            panic!("vector expected")
        };
        assert_eq!(v.len(), want_series, "dedup={dedup}: {v:?}");
        for s in &v {
            assert!(s.labels.get("replica").is_some() != dedup, "{}", s.labels);
            assert!(
                (s.v - want_per_hour).abs() <= 1.0,
                "dedup={dedup}: {} samples in an hour for {}",
                s.v,
                s.labels
            );
        }
    }
}
