//! Queries over downsampled blocks (issue 29, item 6): the same 11 days of data as a raw, a 5 m and a
//! 1 h block in one bucket; each function of the read mapping (`meridian_gateway::fanout::ReadPlan`)
//! evaluated at 5 m and 1 h against the raw answer.
//!
//! "Aligned" here: ranges and evaluation times are whole multiples of the resolution, and scrapes sit
//! 7 s past the minute, so no raw sample lies on a window's edge (real scrapes have such offsets).
//! There `min/max/sum/count_over_time` must equal the raw answer exactly; the others agree within the
//! tolerances stated below.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::api::{Api, ApiOptions};
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::compact::downsample::{RES_1H, RES_5M, downsample_block};
use meridian_gateway::fanout::{Fanout, QueryOptions};
use meridian_gateway::promql::{Engine, QueryValue};
use meridian_tsdb::block::{Block, new_ulid, write_block};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

use crate::support::{H, T0, fanout_over, fs_bucket};

const D: i64 = 24 * H;
const SCRAPE: i64 = 30_000;
/// Scrapes 7 s past the minute: no sample on a window edge.
const OFFSET: i64 = 7_000;

fn lbl(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Two gauges of integer values (so sums are exact in any order) and two counters with irregular
/// increments, one of which resets on day 5.
fn data(from: i64, to: i64) -> Vec<(Labels, Vec<Sample>)> {
    let times: Vec<i64> = (from + OFFSET..to).step_by(SCRAPE as usize).collect();
    let mut out = Vec::new();
    for i in 0..2i64 {
        let gauge = times
            .iter()
            .enumerate()
            .map(|(k, &t)| Sample::new(t, ((k as i64 * 7919 + i * 104_729) % 1000) as f64))
            .collect();
        out.push((
            lbl(&[("__name__", "temperature"), ("pod", &format!("p{i}"))]),
            gauge,
        ));
        let mut v = 0.0;
        let counter = times
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let inc = (10 + (k as i64 % 3) + i) as f64;
                if i == 1 && t >= from + 5 * D && t < from + 5 * D + SCRAPE {
                    v = inc;
                } else {
                    v += inc;
                }
                Sample::new(t, v)
            })
            .collect();
        out.push((
            lbl(&[("__name__", "requests_total"), ("pod", &format!("p{i}"))]),
            counter,
        ));
    }
    out
}

/// A bucket holding one 11-day raw block and its 5 m and 1 h copies.
async fn bucket(root: &std::path::Path) -> Bucket {
    let bucket = fs_bucket(&root.join("bucket"));
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    let local = root.join("blocks");
    std::fs::create_dir_all(&local).unwrap();
    let ext = lbl(&[("cluster", "a")]);
    let raw = write_block(&local, data(T0, T0 + 11 * D), T0, T0 + 11 * D).unwrap();
    let raw_block = Block::open(&local.join(&raw.ulid)).unwrap();
    let five = new_ulid(1);
    downsample_block(&raw_block, &local, &five, RES_5M, &ext).unwrap();
    let five_block = Block::open(&local.join(&five)).unwrap();
    let hour = new_ulid(2);
    downsample_block(&five_block, &local, &hour, RES_1H, &ext).unwrap();
    for u in [&raw.ulid, &five, &hour] {
        upload_block_dir(&bucket, &local.join(u), &ext, "test")
            .await
            .unwrap();
    }
    bucket
}

type Answer = BTreeMap<Labels, Vec<Sample>>;

async fn range(
    fanout: &Arc<Fanout>,
    q: &str,
    res: i64,
    (start, end, step): (i64, i64, i64),
) -> Answer {
    let querier = fanout.querier(QueryOptions {
        dedup: true,
        max_source_resolution: res,
        ..Default::default()
    });
    let engine = Engine::default();
    let got = engine
        .range(&querier, q, start, end, step)
        .await
        .unwrap_or_else(|e| panic!("{q} at {res}: {e}"));
    let QueryValue::Matrix(m) = got.value else {
        panic!("{q}: matrix expected")
    };
    m.into_iter().map(|s| (s.labels, s.samples)).collect()
}

/// The largest relative difference between two answers, which must hold the same series and steps.
#[track_caller]
fn worst(got: &Answer, want: &Answer, ctx: &str) -> f64 {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{ctx}: series"
    );
    let mut worst = 0.0f64;
    for (l, w) in want {
        let g = &got[l];
        assert_eq!(
            g.iter().map(|s| s.t).collect::<Vec<_>>(),
            w.iter().map(|s| s.t).collect::<Vec<_>>(),
            "{ctx}: {l}: steps"
        );
        for (a, b) in g.iter().zip(w) {
            let rel = if a.v == b.v {
                0.0
            } else {
                (a.v - b.v).abs() / b.v.abs().max(f64::MIN_POSITIVE)
            };

            worst = worst.max(rel);
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_on_5m_and_1h_data_agree_with_raw() {
    let root = tempfile::tempdir().unwrap();
    let bucket = bucket(root.path()).await;
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    assert_eq!(
        store.sync().await.unwrap().loaded,
        3,
        "raw, 5m and 1h blocks"
    );
    let fanout = fanout_over(store.clone()).await;
    // Days 1 to 10 at 1 h steps: 217 aligned evaluations per series.
    let span = (T0 + D, T0 + 10 * D, H);
    let exact = [
        "min_over_time(temperature[1h])",
        "max_over_time(temperature[1h])",
        "sum_over_time(temperature[1h])",
        "count_over_time(temperature[1h])",
        "count_over_time(requests_total[3h])",
        "max_over_time(requests_total[2h])",
        // Answered from raw data at any resolution: a window's aggregates cannot tell resets or
        // changes apart.
        "resets(requests_total[3h])",
        "changes(temperature[1h])",
    ];
    // Stated tolerances (relative): a rate extrapolates from window ends instead of raw samples;
    // irate sees the last two windows' mean slope instead of the last two samples'; averages of
    // windows with equal sample counts equal the raw average up to rounding.
    let approx: [(&str, &str, f64); 5] = [
        ("rate(requests_total[3h])", "rate(requests_total[6h])", 0.01),
        (
            "increase(requests_total[3h])",
            "increase(requests_total[6h])",
            0.01,
        ),
        (
            "irate(requests_total[1h])",
            "irate(requests_total[3h])",
            0.1,
        ),
        (
            "avg_over_time(temperature[1h])",
            "avg_over_time(temperature[1h])",
            1e-12,
        ),
        (
            "sum by (pod) (rate(requests_total[3h]))",
            "sum by (pod) (rate(requests_total[6h]))",
            0.01,
        ),
    ];
    for res in [RES_5M, RES_1H] {
        for q in exact {
            let want = range(&fanout, q, 0, span).await;
            assert!(!want.is_empty(), "{q}: raw answer");
            let got = range(&fanout, q, res, span).await;
            assert_eq!(worst(&got, &want, q), 0.0, "{q} at resolution {res}");
            assert_eq!(got, want, "{q} at resolution {res}");
        }
        for (q5, q1, tol) in approx {
            let q = if res == RES_5M { q5 } else { q1 };
            let want = range(&fanout, q, 0, span).await;
            assert!(!want.is_empty(), "{q}: raw answer");
            let got = range(&fanout, q, res, span).await;
            let w = worst(&got, &want, q);
            eprintln!("{q} at {res} ms: worst relative difference {w:.2e} (tolerance {tol:.0e})");
            assert!(w <= tol, "{q} at resolution {res}: {w} > {tol}");
        }
    }
    // The downsampled reads did read aggregates: a bare selector at 1 h answers each hour's mean,
    // but where a chunk ends inside an hour (1 h chunks are cut along whole 5 m chunks, as in
    // Thanos): there the hour has two partial means and the later one answers.
    let hourly = range(&fanout, "temperature * 1", RES_1H, span).await;
    let mean = range(&fanout, "avg_over_time(temperature[1h])", 0, span).await;
    assert_eq!(hourly.len(), mean.len());
    for ((l, got), (_, want)) in hourly.iter().zip(&mean) {
        assert_eq!(got.len(), want.len(), "{l}");
        let equal = got.iter().zip(want).filter(|(a, b)| a == b).count();
        assert!(
            equal + 2 >= want.len(),
            "{l}: {equal} of {} hourly means",
            want.len()
        );
    }
}

/// `max_source_resolution` over HTTP: a duration, `auto` (step/5), missing (raw), invalid; the
/// lookback grows with the resolution, so a bare selector over 1 h data answers every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_source_resolution_over_http() {
    let root = tempfile::tempdir().unwrap();
    let bucket = bucket(root.path()).await;
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    store.sync().await.unwrap();
    let fanout = fanout_over(store.clone()).await;
    let api = Arc::new(Api::new(
        fanout.clone(),
        Arc::new(|| serde_json::json!({"status": "success", "data": {}})),
        ApiOptions::default(),
        |_| {},
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(meridian_pki::serve::serve_http(
        listener,
        None,
        meridian_gateway::api::router(api),
        meridian_pki::serve::WebLimits::default(),
        stop.clone(),
    ));
    let (start, end) = (T0 + D, T0 + 3 * D);
    let get = |extra: &str| {
        let path = format!(
            "/api/v1/query_range?query=temperature&start={}&end={}&step=3600{extra}",
            start / 1000,
            end / 1000
        );
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                meridian_testkit::http("GET", &addr, &path, &[], b"").unwrap()
            })
            .await
            .unwrap()
        }
    };
    let values = |body: &str| -> BTreeMap<String, Vec<(f64, String)>> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["metric"]["pod"].as_str().unwrap().to_owned(),
                    s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_owned()))
                        .collect(),
                )
            })
            .collect()
    };
    let as_http = |a: Answer| -> BTreeMap<String, Vec<(f64, String)>> {
        a.into_iter()
            .map(|(l, s)| {
                (
                    l.get("pod").unwrap().to_owned(),
                    s.iter()
                        .map(|p| {
                            let mut v = Vec::new();
                            meridian_gateway::api::json::float_unquoted(&mut v, p.v);
                            (p.t as f64 / 1000.0, String::from_utf8(v).unwrap())
                        })
                        .collect(),
                )
            })
            .collect()
    };
    let span = (start, end, H);
    // 1 h: each step answers its hour's mean (the 1 h lookback finds the window stamped 1 ms before).
    let r = get("&max_source_resolution=1h").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let hourly = values(&r.text());
    assert_eq!(hourly.values().map(Vec::len).sum::<usize>(), 2 * 49);
    assert_eq!(
        hourly,
        as_http(range(&fanout, "avg_over_time(temperature[1h])", 0, span).await)
    );
    // auto at a 1 h step: up to 12 m, so 5 m data: each step answers its last 5 minutes' mean.
    let r = get("&max_source_resolution=auto").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        values(&r.text()),
        as_http(range(&fanout, "avg_over_time(temperature[5m])", 0, span).await)
    );
    // Missing, or 0s: raw samples.
    for extra in ["", "&max_source_resolution=0s"] {
        let r = get(extra).await;
        assert_eq!(
            values(&r.text()),
            as_http(range(&fanout, "temperature", 0, span).await),
            "{extra:?}"
        );
    }
    let r = get("&max_source_resolution=soon").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("max_source_resolution"), "{}", r.text());
    stop.cancel();
    let _ = server.await;
}
