//! Scale-out: shared caches and several gateways, side by side with Prometheus 2.42 on the same data.
//!
//! 1. **Cache-hit latency**: the same 24 h range queries (60 s step) over ~1,000 demo series through
//!    the gateway's HTTP API with no results cache, the in-process cache, memcached and Redis (Debian's,
//!    on loopback), and Prometheus 2.42 answering the same query from the same data. Each cached figure
//!    is a repeat after the first request filled the cache (best of 5); the in-process cache then
//!    answers from its whole-response cache, memcached and Redis from their pieces.
//! 2. **Bucket store cold vs warm through memcached**: the same data as blocks in an S3 bucket (moto on
//!    loopback); a fresh
//!    bucket store (no local state) asked once with memcached empty (cold), then another fresh one
//!    with memcached warm (warm), with object-storage GETs counted; and a bucket store without the
//!    shared tier for reference.
//! 3. **Throughput of 1 vs 2 gateway processes** (release binaries) sharing memcached over that
//!    bucket, results cache off, 4 client threads for 10 s each.
//!
//! Run: `cargo build --release --bins && cargo bench -p meridian-integration --bench scale_out`.
//! Under `cargo test --all-targets`: a 2-series smoke run of part 1 (answers through memcached and
//! Redis equal the uncached ones).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_core::Labels;
use meridian_gateway::api::{Api, ApiOptions};
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::cache::CacheOptions;
use meridian_gateway::cache::config::{CacheConfig, Role};
use meridian_gateway::cache::connect::connect;
use meridian_gateway::cache::shared::{SharedCache, SharedMetrics};
use meridian_gateway::fanout::{Fanout, FanoutOptions, StaticStores};
use meridian_integration::bench::{best, load_tsdb, remote_write, tsdb_fanout};
use meridian_integration::demo::{STEP, T0, block_dirs, generate};
use meridian_integration::served::bin_dir;
use meridian_storeapi::Store;
use meridian_testkit::{
    CacheServer, ChildGuard, Moto, Prometheus, free_port, http, urlencode, wait_for,
};
use meridian_tsdb::objstore::Bucket;

const QUERIES: &[&str] = &[
    "{job=\"demo\"}",
    "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le, instance) (rate(demo_api_request_duration_seconds_bucket[5m])))",
];

/// As Grafana asks (gzip accepted): the body received.
fn get(addr: &str, path: &str) -> Vec<u8> {
    let r = http("GET", addr, path, &[("Accept-Encoding", "gzip")], b"").unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.body
}

fn plain(addr: &str, path: &str) -> String {
    let r = http("GET", addr, path, &[], b"").unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

fn range(q: &str, start: i64, end: i64, step_s: i64) -> String {
    format!(
        "/api/v1/query_range?query={}&start={}.{:03}&end={}.{:03}&step={step_s}",
        urlencode(q),
        start / 1000,
        start % 1000,
        end / 1000,
        end % 1000
    )
}

async fn serve(fanout: Arc<Fanout>, cache: CacheOptions) -> String {
    let api = Arc::new(Api::new(
        fanout,
        Arc::new(|| serde_json::json!({})),
        ApiOptions {
            cache,
            ..ApiOptions::default()
        },
        |_| {},
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(meridian_pki::serve::serve_http(
        listener,
        None,
        meridian_gateway::api::router(api),
        meridian_pki::serve::WebLimits::default(),
        stop.clone(),
    ));
    // Served until the process ends.
    std::mem::forget(stop);
    addr
}

async fn shared(name: &'static str, yaml: &str, m: &Arc<SharedMetrics>) -> Arc<SharedCache> {
    let cfg = CacheConfig::parse(yaml, name, Role::ResponseCache).unwrap();
    connect(name, &cfg, None, m).await.unwrap().unwrap()
}

fn memcached_yaml(addr: &str) -> String {
    format!("type: MEMCACHED\nconfig:\n  addresses: [\"{addr}\"]\n  max_item_size: 64MiB\n")
}

fn written(m: &SharedMetrics) -> u64 {
    // Every family member: the benchmark's caches have one name each.
    let text = {
        let mut r = prometheus_client::registry::Registry::default();
        m.register(&mut r);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        s
    };
    meridian_testkit::metric_sum(&text, "meridian_cache_writes_total", "") as u64
}

/// Waits until the shared caches' queued writes are in (readiness, not a fixed sleep).
fn settle(m: &SharedMetrics) {
    let mut last = u64::MAX;
    wait_for("cache writes to settle", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = written(m);
        let done = now == last;
        last = now;
        done.then_some(())
    });
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (instances, points) = if bench { (37, 5_760) } else { (2, 240) };
    meridian_pki::install_crypto_provider();
    let series = generate(instances, points);
    let total: usize = series.iter().map(|s| s.samples.len()).sum();
    let end = T0 + (points - 1) * STEP;
    println!(
        "{} series, {total} samples, 15 s, {} h; {} cores",
        series.len(),
        points * 15 / 3600,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let db = load_tsdb(&dir.path().join("meridian"), &series);
    let (Some(mc), Some(redis)) = (
        CacheServer::memcached_with(&["-m", "1024", "-I", "64m"]),
        CacheServer::redis(),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(SharedMetrics::default());
    let base = CacheOptions::default;
    let addrs = rt.block_on(async {
        let fanout = tsdb_fanout(db.clone()).await;
        let mem = shared("memcached", &memcached_yaml(&mc.addr), &metrics).await;
        let red = shared(
            "redis",
            &format!("type: REDIS\nconfig:\n  addr: \"{}\"\n", redis.addr),
            &metrics,
        )
        .await;
        let off = CacheOptions {
            max_bytes: 0,
            ..base()
        };
        [
            serve(fanout.clone(), off).await,
            serve(fanout.clone(), base()).await,
            serve(
                fanout.clone(),
                CacheOptions {
                    shared: Some(mem),
                    ..base()
                },
            )
            .await,
            serve(
                fanout,
                CacheOptions {
                    shared: Some(red),
                    ..base()
                },
            )
            .await,
        ]
    });
    let (start, stop) = (end - 24 * 3_600_000 + STEP + 500, end + 500);
    let hours = (stop - start) / 3_600_000;
    if !bench {
        for q in QUERIES {
            let p = range(q, start, stop, 60);
            let want = plain(&addrs[0], &p);
            for a in &addrs[1..] {
                plain(a, &p);
                settle(&metrics);
                assert_eq!(plain(a, &p), want, "{q}");
            }
        }
        println!(
            "smoke: {} queries equal through memcached and Redis",
            QUERIES.len()
        );
        return;
    }
    let pdir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(
        pdir.path(),
        "global: {}\n",
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=100y",
        ],
    );
    if let Some(p) = &prometheus {
        remote_write(&p.addr, &series, points);
    }
    drop(series);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!("\n1. Cache-hit latency, {hours} h at 60 s, best of 5 (ms; gzip as Grafana asks)");
    println!(
        "{:<100} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "query", "uncached", "in-mem", "memcached", "redis", "Prom 2.42", "MB gz"
    );
    for q in QUERIES {
        let p = range(q, start, stop, 60);
        let want = plain(&addrs[0], &p);
        let mut bytes = 0;
        let mut row = Vec::new();
        for a in &addrs {
            get(a, &p);
            settle(&metrics);
            assert_eq!(plain(a, &p), want, "{q}: a cached answer differs");
            row.push(best(5, || {
                bytes = get(a, &p).len();
                true
            }));
        }
        let pr = prometheus.as_ref().and_then(|pm| {
            best(5, || {
                get(&pm.addr, &p);
                true
            })
        });
        println!(
            "{:<100} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8.2}",
            q,
            ms(row[0]),
            ms(row[1]),
            ms(row[2]),
            ms(row[3]),
            ms(pr),
            bytes as f64 / 1e6
        );
    }

    // 2. The bucket store through memcached, over S3 (moto on loopback: every GET an HTTP request,
    // as against a real bucket, if far faster than one).
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("bench");
    let objstore = moto.objstore_yaml("bench", "");
    db.flush_head().unwrap();
    rt.block_on(async {
        let bucket = Bucket::parse(&objstore, "bench").unwrap();
        for b in block_dirs(&dir.path().join("meridian")) {
            meridian_tsdb::shipper::upload_block_dir(&bucket, &b, &Labels::empty(), "bench")
                .await
                .unwrap();
        }
    });
    let Some(mc2) = CacheServer::memcached_with(&["-m", "1024", "-I", "64m"]) else {
        return;
    };
    let bucket_metrics = Arc::new(SharedMetrics::default());
    let p = range(QUERIES[1], start, stop, 60);
    println!(
        "\n2. Bucket store over S3 (moto), {hours} h of `{}` at 60 s: the first query of a fresh store",
        QUERIES[1]
    );
    let mut reference = None;
    for (phase, with_memcached) in [
        ("no shared cache", false),
        ("cold memcached", true),
        ("warm memcached", true),
    ] {
        let (addr, store) = rt.block_on(async {
            let mut opts = BucketStoreOptions::default();
            if with_memcached {
                opts.shared_index =
                    Some(shared("index", &memcached_yaml(&mc2.addr), &bucket_metrics).await);
                opts.shared_chunks =
                    Some(shared("chunks", &memcached_yaml(&mc2.addr), &bucket_metrics).await);
            }
            let store = Arc::new(BucketStore::new(
                Bucket::parse(&objstore, "bench").unwrap(),
                opts,
            ));
            store.sync().await.unwrap();
            let as_store: Arc<dyn Store> = store.clone();
            let set = StaticStores::probe(vec![("bucket".into(), as_store)])
                .await
                .unwrap();
            let fanout = Arc::new(Fanout::new(Arc::new(set), FanoutOptions::default()));
            let off = CacheOptions {
                max_bytes: 0,
                ..CacheOptions::default()
            };
            (serve(fanout, off).await, store)
        });
        let gets_before = store.metrics().requests_total();
        let t = Instant::now();
        let answer = plain(&addr, &p);
        let first = t.elapsed();
        let gets = store.metrics().requests_total() - gets_before;
        let again = best(3, || {
            plain(&addr, &p);
            true
        });
        assert_eq!(reference.get_or_insert_with(|| answer.clone()), &answer);
        settle(&bucket_metrics);
        println!(
            "{phase:<18} first {:>8.1} ms ({gets} object-storage requests), repeated {:>8.1} ms",
            first.as_secs_f64() * 1000.0,
            ms(again)
        );
    }
    if let Some(pm) = &prometheus {
        let pr = best(3, || {
            get(&pm.addr, &p);
            true
        });
        println!("{:<18} {:>14.1} ms", "Prometheus 2.42", ms(pr));
    }

    // 3. Throughput of one and two gateway processes.
    throughput(dir.path(), &objstore, &mc2.addr, start, stop);
}

fn gateway_process(
    dir: &std::path::Path,
    objstore: &str,
    memcached: &str,
    n: usize,
) -> (ChildGuard, String) {
    let bin = bin_dir().join("meridian-gateway");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release --bins",
        bin.display()
    );
    let http_addr = format!("127.0.0.1:{}", free_port());
    let cache = memcached_yaml(memcached);
    let log = std::fs::File::create(dir.join(format!("gw{n}.log"))).unwrap();
    let child = std::process::Command::new(bin)
        .args(["query", &format!("--http-address={http_addr}")])
        .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
        .arg(format!("--objstore.config={objstore}"))
        .arg("--query-range.response-cache-max-size=0")
        .arg(format!("--index-cache.config={cache}"))
        .arg(format!("--store.caching-bucket.config={cache}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    wait_for("gateway ready", Duration::from_secs(60), || {
        http("GET", &http_addr, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    (guard, http_addr)
}

fn throughput(dir: &std::path::Path, objstore: &str, memcached: &str, start: i64, stop: i64) {
    let gws: Vec<(ChildGuard, String)> = (0..2)
        .map(|n| gateway_process(dir, objstore, memcached, n))
        .collect();
    // 6 h windows at 60 s sliding over the day: the results cache is off, so every query evaluates.
    let paths: Vec<String> = (0..18)
        .map(|k| {
            range(
                QUERIES[1],
                start + k * 3_600_000,
                (start + k * 3_600_000 + 6 * 3_600_000).min(stop),
                60,
            )
        })
        .collect();
    for (_, a) in &gws {
        for p in &paths {
            get(a, p);
        }
    }
    println!(
        "\n3. Throughput, 4 client threads for 10 s, results cache off, bucket caches in memcached"
    );
    for n in [1, 2] {
        let targets: Vec<String> = gws[..n].iter().map(|(_, a)| a.clone()).collect();
        let cpu_before: f64 = gws
            .iter()
            .map(|(g, _)| meridian_testkit::cpu_seconds(g.pid()))
            .sum();
        let t = Instant::now();
        let done: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|w| {
                    let (targets, paths) = (&targets, &paths);
                    s.spawn(move || {
                        let mut k = w;
                        while t.elapsed() < Duration::from_secs(10) {
                            get(&targets[k % targets.len()], &paths[k % paths.len()]);
                            k += 1;
                        }
                        k - w
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let secs = t.elapsed().as_secs_f64();
        let cpu: f64 = gws
            .iter()
            .map(|(g, _)| meridian_testkit::cpu_seconds(g.pid()))
            .sum::<f64>()
            - cpu_before;
        println!(
            "{n} gateway(s): {:>7.1} queries/s, mean {:>6.1} ms, gateway CPU {:>4.2} cores",
            done as f64 / secs,
            4.0 * secs * 1000.0 / done as f64,
            cpu / secs
        );
    }
}
