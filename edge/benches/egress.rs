//! What leaves the edge: StoreAPI series streaming over mTLS, and block uploads to an S3 API.
//!
//! - `stream`: the running edge (`Agent`, as `meridian-edge run` starts it) serves a TSDB of N series ×
//!   2 h at 15 s (one block) over mTLS on loopback; a client asks for everything with one `Series`
//!   call (`response_batch_size` 0 and 64). Reported: series/s, samples/s, and protobuf bytes per
//!   sample on the wire (TLS records add ~0.1 %).
//! - `upload`: one ~100 MB block (pseudo-random values, ~9 bytes a sample) shipped by the shipper to
//!   PyPI's moto S3 server on loopback (16 MiB parts), and to a FILESYSTEM bucket for reference; MB/s.
//!
//! Run: `cargo bench -p meridian-edge --bench egress [-- stream|upload]` (release profile). Under
//! `cargo test --all-targets` a small smoke run keeps the code working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_core::labels::Labels;
use meridian_edge::agent::{Agent, AgentOptions};
use meridian_pki::dev::DevPki;
use meridian_storeapi::proto::thanos as pb;
use meridian_tsdb::db::{Db, DbOptions};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::{Shipper, ShipperOptions};
use prost::Message;

const STEP: i64 = 15_000;
const TWO_HOURS: i64 = 7_200_000;

/// The start of the data: a block range boundary a few hours ago (recent, so retention keeps it).
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / TWO_HOURS - 2) * TWO_HOURS
}

/// Writes `series` × `samples_per_series` pseudo-random samples starting at [`t0`] into one block.
fn fill(dir: &Path, t0: i64, series: usize, samples_per_series: i64) -> u64 {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut n = 0u64;
    for i in 0..series {
        let l = Labels::from_pairs([
            ("__name__", "container_cpu_usage_seconds_total"),
            ("namespace", &format!("ns-{}", i % 50)),
            ("pod", &format!("pod-{i}")),
        ]);
        let mut app = db.appender();
        for k in 0..samples_per_series {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            app.add(&l, t0 + k * STEP, (x >> 11) as f64 / 1e6).unwrap();
            n += 1;
        }
        app.commit().unwrap();
    }
    db.flush_head().unwrap();
    n
}

async fn stream(series: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let samples_per_series = TWO_HOURS / STEP;
    let t = Instant::now();
    let t0 = t0();
    let total = fill(&data, t0, series, samples_per_series);
    eprintln!(
        "stream: {series} series x {samples_per_series} samples ({total} samples) written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let cfg = tmp.path().join("edge.yml");
    std::fs::write(
        &cfg,
        "global:\n  external_labels: {cluster: a, replica: '0'}\n",
    )
    .unwrap();
    let pki = DevPki::create(&tmp.path().join("pki"), "edge.example").unwrap();
    let tls = pki.server_tls().unwrap();
    let agent = Agent::start(AgentOptions {
        grpc_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        grpc_tls: Some(tls),
        ..AgentOptions::new(
            cfg,
            data,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let channel = pki
        .client_tls(true)
        .unwrap()
        .channel(
            &agent.grpc_addr().unwrap().to_string(),
            Some("edge.example"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    for batch in [0i64, 64] {
        let mut best = f64::MAX;
        let (mut n_series, mut n_samples, mut bytes) = (0u64, 0u64, 0u64);
        for _ in 0..3 {
            let req = pb::SeriesRequest {
                min_time: t0,
                max_time: t0 + TWO_HOURS,
                matchers: vec![pb::LabelMatcher {
                    r#type: pb::label_matcher::Type::Re as i32,
                    name: "__name__".into(),
                    value: ".+".into(),
                }],
                response_batch_size: batch,
                ..Default::default()
            };
            let start = Instant::now();
            let mut s = pb::store_client::StoreClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .series(req)
                .await
                .unwrap()
                .into_inner();
            (n_series, n_samples, bytes) = (0, 0, 0);
            while let Some(frame) = s.next().await {
                let frame = frame.unwrap();
                bytes += frame.encoded_len() as u64;
                let series = match frame.result {
                    Some(pb::series_response::Result::Series(s)) => vec![s],
                    Some(pb::series_response::Result::Batch(b)) => b.series,
                    _ => vec![],
                };
                for s in series {
                    n_series += 1;
                    for c in s.chunks {
                        let d = &c.raw.unwrap().data;
                        n_samples += u64::from(u16::from_be_bytes([d[0], d[1]]));
                    }
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        assert_eq!(n_series, series as u64);
        assert_eq!(n_samples, total);
        println!(
            "stream batch={batch}: {n_series} series, {n_samples} samples in {best:.3}s (best of 3): {:.0} series/s, {:.2} M samples/s, {:.2} bytes/sample on the wire",
            n_series as f64 / best,
            n_samples as f64 / best / 1e6,
            bytes as f64 / n_samples as f64
        );
    }
    agent.shutdown().await;
}

async fn upload(series: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let total = fill(&data, t0(), series, TWO_HOURS / STEP);
    let db = Arc::new(Db::open(&data, DbOptions::default()).unwrap());
    let ulid = db.blocks()[0].ulid.clone();
    let size = meridian_tsdb::db::dir_size(&data.join(&ulid));
    let moto = meridian_testkit::Moto::start();
    let mut targets = vec![(
        "filesystem".to_string(),
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            tmp.path().join("bucket").display()
        ),
    )];
    if let Some(m) = &moto {
        m.create_bucket("bench");
        targets.insert(0, ("moto S3".to_string(), m.objstore_yaml("bench", "")));
    }
    for (name, yaml) in targets {
        let bucket = Bucket::parse(&yaml, name.as_str()).unwrap();
        // A fresh state each time: the block is uploaded again (its meta.json removed first).
        let _ = std::fs::remove_file(data.join(meridian_tsdb::shipper::STATE_FILE));
        let _ = bucket
            .store
            .delete(&meridian_tsdb::objstore::block_path(
                &ulid,
                meridian_tsdb::objstore::BlockObject::Meta,
            ))
            .await;
        let s = Shipper::new(
            bucket,
            db.clone(),
            Labels::from_pairs([("cluster", "a")]),
            ShipperOptions::default(),
        )
        .unwrap();
        let start = Instant::now();
        let r = s
            .sync(&tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(r.uploaded, vec![ulid.clone()]);
        println!(
            "upload to {name}: block of {:.1} MB ({total} samples) in {secs:.2}s: {:.1} MB/s",
            size as f64 / 1e6,
            size as f64 / 1e6 / secs
        );
    }
}

use object_store::ObjectStoreExt as _;

fn main() {
    meridian_pki::install_crypto_provider();
    let full = std::env::args().any(|a| a == "--bench");
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |n: &str| which.is_empty() || which.iter().any(|w| w == n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if want("stream") {
        rt.block_on(stream(if full { 10_000 } else { 100 }));
    }
    if want("upload") {
        // 480 samples a series at ~8 bytes: 26,000 series make ~100 MB.
        rt.block_on(upload(if full { 26_000 } else { 200 }));
    }
}
