//! Issue 31 end to end: native histograms written by remote write 1.0 into Prometheus 2.42
//! (`--enable-feature=native-histograms`) and into two edges (HA replicas, one with a gap), then read
//! through the edges' StoreAPI, the gateway's fan-out and replica dedup, PromQL and the HTTP API.
//! The gateway's JSON must equal Prometheus 2.42's for the histograms themselves (`histogram` and
//! `histograms` fields), `histogram_count`, `histogram_sum`, `rate`/`increase` of histograms and
//! aggregations, instant and range; `histogram_quantile` and `histogram_fraction` of these
//! histograms as well, where 2.42's interpolation and Prometheus 3's agree (printed otherwise).
//! Queries are evaluated off the sample times: 2.42's windows include their start, Prometheus 3's
//! do not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_integration::histograms::{deltas, spans};
use meridian_integration::receivers::{Node, post};
use meridian_storeapi::proto::prometheus as prom;
use meridian_testkit::{Prometheus, http, http_get, urlencode, wait_for};

const STEP: i64 = 15_000;
const N: i64 = 160;

/// An integer histogram sample: buckets at `layout` with absolute counts `abs`, count = their sum
/// plus `zero`.
fn int_hist(t: i64, schema: i32, layout: &[(i32, u32)], abs: &[i64], zero: u64) -> prom::Histogram {
    let count = abs.iter().sum::<i64>() as u64 + zero;
    prom::Histogram {
        count: Some(prom::histogram::Count::CountInt(count)),
        sum: count as f64 * 0.37 + 1.25,
        schema,
        zero_threshold: 2f64.powi(-128),
        zero_count: Some(prom::histogram::ZeroCount::ZeroCountInt(zero)),
        positive_spans: spans(layout),
        positive_deltas: deltas(abs),
        timestamp: t,
        ..prom::Histogram::default()
    }
}

/// The series written: `req_seconds{pod}` counters (a bucket appears a third of the way, a reset
/// two thirds of the way), `queue_depth` float gauge histograms.
fn series(t0: i64) -> Vec<prom::TimeSeries> {
    let label = |name: &str, pod: &str| {
        vec![
            prom::Label {
                name: "__name__".into(),
                value: name.into(),
            },
            prom::Label {
                name: "pod".into(),
                value: pod.into(),
            },
        ]
    };
    let mut out = Vec::new();
    for (p, pod) in ["a", "b"].iter().enumerate() {
        let p = p as i64 + 1;
        let histograms = (0..N)
            .map(|i| {
                let t = t0 + i * STEP;
                let k = if i >= 2 * N / 3 { i - 2 * N / 3 } else { i };
                // Far from zero: Prometheus 3 does not extrapolate a histogram's rate below a zero
                // count, 2.42 does; with these counts neither comes near it.
                let b = 1000 + k;
                if i < N / 3 {
                    int_hist(t, 1, &[(-1, 3)], &[b * p, 2 * b, 3 * b + p], b as u64)
                } else {
                    int_hist(
                        t,
                        1,
                        &[(-1, 3), (2, 1)],
                        &[b * p, 2 * b, 3 * b + p, k],
                        b as u64,
                    )
                }
            })
            .collect();
        out.push(prom::TimeSeries {
            labels: label("req_seconds", pod),
            histograms,
            ..Default::default()
        });
    }
    let gauges = (0..N)
        .map(|i| {
            let level = ((i % 20) as f64 - 10.0).abs();
            prom::Histogram {
                count: Some(prom::histogram::Count::CountFloat(level * 2.0 + 1.0)),
                sum: level * 7.5,
                schema: 0,
                zero_threshold: 0.001,
                zero_count: Some(prom::histogram::ZeroCount::ZeroCountFloat(1.0)),
                positive_spans: spans(&[(0, 2)]),
                positive_counts: vec![level, level],
                reset_hint: prom::histogram::ResetHint::Gauge as i32,
                timestamp: t0 + i * STEP,
                ..prom::Histogram::default()
            }
        })
        .collect();
    out.push(prom::TimeSeries {
        labels: label("queue_depth", "a"),
        histograms: gauges,
        ..Default::default()
    });
    out
}

fn body(ts: Vec<prom::TimeSeries>) -> Vec<u8> {
    meridian_edge::receive::encode_body(&prom::WriteRequest {
        timeseries: ts,
        ..Default::default()
    })
    .unwrap()
}

/// A plain edge (remote write into its own TSDB) with external label `replica`.
fn edge(dir: &std::path::Path, i: usize, replica: &str) -> Node {
    let mut n = Node::new(dir, i, Vec::new());
    n.local_endpoint = false;
    n.config = dir.join(format!("edge-{i}.yml"));
    std::fs::write(
        &n.config,
        format!("global:\n  external_labels:\n    replica: {replica}\n"),
    )
    .unwrap();
    n.start();
    n
}

/// The `q`-quantile of positive buckets `(lower, upper, count)`, interpolated linearly (2.42) and
/// logarithmically (Prometheus 3).
fn quantiles(q: f64, count: f64, buckets: &[(f64, f64, f64)]) -> (f64, f64) {
    let rank = q * count;
    let mut seen = 0.0;
    for &(lo, hi, c) in buckets {
        if seen + c >= rank {
            let f = (rank - seen) / c;
            let log = (lo.log2() + (hi.log2() - lo.log2()) * f).exp2();
            return (lo + (hi - lo) * f, log);
        }
        seen += c;
    }
    (f64::NAN, f64::NAN)
}

/// Where Prometheus 2.42 answers otherwise than Prometheus 3 (whose semantics the gateway has).
fn known_gap(q: &str) -> Option<&'static str> {
    if q.starts_with("avg(") {
        return Some("2.42's avg of histograms is the float 0; Prometheus 3 averages them");
    }
    if q.contains(" * ") {
        return Some("2.42 leaves a histogram times a scalar unscaled; Prometheus 3 scales it");
    }
    if q.contains("quantile") || q.contains("fraction") {
        return Some(
            "Prometheus 3 interpolates exponential buckets logarithmically, 2.42 linearly",
        );
    }
    None
}

/// Remote-writes series to a Prometheus (its receiver answers 204).
fn write_to_prometheus(addr: &str, series: Vec<prom::TimeSeries>) {
    meridian_testkit::post_remote_write(addr, &body(series));
}

/// The `data` of an API answer, or the error.
fn data(addr: &str, path: &str) -> serde_json::Value {
    let r = http_get(addr, path).json();
    assert_eq!(r["status"], "success", "{addr}{path}: {r}");
    r["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_through_edges_and_gateway_match_prometheus() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let Some(prometheus) = Prometheus::start(
        dir.path(),
        "global: {scrape_interval: 1h}\n",
        &[
            "--enable-feature=native-histograms",
            "--web.enable-remote-write-receiver",
        ],
    ) else {
        return;
    };
    let mut edges = vec![edge(dir.path(), 0, "r0"), edge(dir.path(), 1, "r1")];
    let t0 = (meridian_core::time::now_ms() - N * STEP) / STEP * STEP;
    let all = series(t0);
    write_to_prometheus(&prometheus.addr, all.clone());
    let (status, text) = post(&edges[0].http, &body(all.clone()), &[]);
    assert_eq!(status, 204, "{text}");
    // The second replica misses the middle third: the gateway fills it from the first.
    let gap: Vec<prom::TimeSeries> = all
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.histograms.retain(|h| {
                h.timestamp < t0 + N / 3 * STEP || h.timestamp >= t0 + 2 * N / 3 * STEP
            });
            s
        })
        .collect();
    let (status, text) = post(&edges[1].http, &body(gap), &[]);
    assert_eq!(status, 204, "{text}");

    let mut opts = GatewayOptions::new(
        EndpointGroup {
            specs: edges.iter().map(|e| e.grpc.parse().unwrap()).collect(),
            transport: meridian_gateway::Transport::Plaintext,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    opts.fanout.replica_labels = vec!["replica".into()];
    let gw = Gateway::start(opts).await.unwrap();
    let gaddr = gw.http_addr().to_string();
    let grpcs: Vec<String> = edges.iter().map(|e| e.grpc.clone()).collect();
    let (a, p) = (gaddr.clone(), prometheus.addr.clone());
    let t_end = t0 + (N - 1) * STEP;
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let (mut same, mut differ) = (0, Vec::new());
    tokio::task::spawn_blocking(move || {
        wait_for(
            "both edges in the endpoint set",
            Duration::from_secs(30),
            || {
                let s = http_get(&a, "/api/v1/stores").text();
                grpcs.iter().all(|g| s.contains(g.as_str())).then_some(())
            },
        );
        let instants = [
            "req_seconds",
            "queue_depth",
            "histogram_count(req_seconds)",
            "histogram_sum(req_seconds)",
            "rate(req_seconds[2m])",
            "increase(req_seconds[5m])",
            "sum(rate(req_seconds[2m]))",
            "sum by (pod) (req_seconds)",
            "histogram_count(rate(req_seconds[1m]))",
            "avg(queue_depth)",
            "queue_depth * 2",
            "histogram_quantile(0.9, rate(req_seconds[2m]))",
            "histogram_quantile(0.5, queue_depth)",
            "histogram_fraction(0, 1, queue_depth)",
        ];
        let mut check = |q: &str, path: String, exact: bool| {
            let (ours, theirs) = (data(&a, &path), data(&p, &path));
            if ours == theirs {
                same += 1;
            } else if exact {
                panic!("{q}\n gateway:    {ours}\n prometheus: {theirs}");
            } else {
                let why = known_gap(q).unwrap_or_default();
                differ.push(format!(
                    "{q} ({why})\n gateway:    {ours}\n prometheus: {theirs}"
                ));
            }
        };
        // Times in each third: before the new bucket, after it, after the reset, and the end; 7 s
        // off the samples, since 2.42's windows include their start (Prometheus 3's do not).
        for t in [t0 + 40 * STEP, t0 + 80 * STEP, t0 + 130 * STEP, t_end].map(|t| t + 7_000) {
            for q in instants {
                let exact = known_gap(q).is_none();
                check(
                    q,
                    format!("/api/v1/query?query={}&time={}", urlencode(q), secs(t)),
                    exact,
                );
            }
        }
        for q in [
            "req_seconds",
            "histogram_count(req_seconds)",
            "histogram_sum(rate(req_seconds[2m]))",
            "rate(req_seconds[1m])",
            "sum(queue_depth)",
        ] {
            check(
                q,
                format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step=60",
                    urlencode(q),
                    secs(t0 + 67_000),
                    secs(t_end)
                ),
                true,
            );
        }
        // histogram_quantile against 2.42's own rate histograms: interpolated linearly (2.42) they give
        // 2.42's quantile, logarithmically (Prometheus 3) the gateway's.
        for t in [t0 + 50 * STEP, t0 + 90 * STEP, t_end].map(|t| t + 7_000) {
            let at = format!("&time={}", secs(t));
            let q = |addr: &str, e: &str| {
                data(addr, &format!("/api/v1/query?query={}{at}", urlencode(e)))["result"].clone()
            };
            let rates = q(&p, "rate(req_seconds[2m])");
            for (k, want2) in q(&p, "histogram_quantile(0.9, rate(req_seconds[2m]))")
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                let h = &rates[k]["histogram"][1];
                let num = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
                let buckets: Vec<(f64, f64, f64)> = h["buckets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| (num(&b[1]), num(&b[2]), num(&b[3])))
                    .collect();
                let (lin, log) = quantiles(0.9, num(&h["count"]), &buckets);
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
                assert!(
                    close(lin, num(&want2["value"][1])),
                    "2.42: {want2} vs {lin}"
                );
                let ours = q(&a, "histogram_quantile(0.9, rate(req_seconds[2m]))");
                let ours = ours
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["metric"] == want2["metric"])
                    .unwrap();
                assert!(
                    close(log, num(&ours["value"][1])),
                    "gateway: {ours} vs {log}"
                );
                same += 1;
            }
        }
        println!("{same} answers identical to Prometheus 2.42");
        for d in &differ {
            println!("differs from 2.42: {d}");
        }
    })
    .await
    .unwrap();
    gw.shutdown().await;
    for e in &mut edges {
        e.stop();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Histograms of a block read through our block reader: (labels, time, value) with hints left out
/// (chunks keep them in headers).
fn block_histograms(block: &std::path::Path) -> Vec<(String, i64, String)> {
    use meridian_core::chunkenc::{Encoding, read_float_histograms, read_histograms};
    use meridian_core::histogram::CounterResetHint;
    let b = meridian_tsdb::block::Block::open(block).unwrap();
    let all =
        [meridian_core::Matcher::new(meridian_core::MatchType::Regex, "__name__", ".+").unwrap()];
    let mut out = Vec::new();
    for s in b.select(&all, i64::MIN, i64::MAX).unwrap() {
        for (_, enc, data) in &s.chunks {
            let values: Vec<(i64, meridian_core::histogram::FloatHistogram)> = match enc {
                Encoding::Histogram => read_histograms(data)
                    .unwrap()
                    .1
                    .into_iter()
                    .map(|(t, h)| (t, h.to_float()))
                    .collect(),
                Encoding::FloatHistogram => read_float_histograms(data).unwrap().1,
                other => panic!("{other:?} chunk for {}", s.labels),
            };
            for (t, mut h) in values {
                // 2.42 re-encodes a chunk when buckets appear, with the new buckets empty in the
                // earlier samples: compared without empty buckets.
                h.hint = CounterResetHint::Unknown;
                h.compact();
                out.push((s.labels.to_string(), t, format!("{h:?}")));
            }
        }
    }
    out.sort();
    out
}

/// Prometheus 2.42 serves a block the edge's TSDB wrote from remote-written histograms exactly as it
/// serves the same histograms it ingested itself, and `promtool tsdb analyze` reads it; our block
/// reader reads Prometheus' own histogram block (a snapshot) back to what was sent, and our block to
/// the same.
#[test]
fn prometheus_reads_our_histogram_blocks_and_we_read_its() {
    use meridian_core::histogram::CounterResetHint;
    use meridian_tsdb::db::{Db, DbOptions};
    let dir = tempfile::tempdir().unwrap();
    if meridian_testkit::require("prometheus", "apt-get install prometheus").is_none() {
        return;
    }
    const TWO_HOURS: i64 = 7_200_000;
    let t0 = meridian_core::time::now_ms() / TWO_HOURS * TWO_HOURS - 2 * TWO_HOURS;
    let all = series(t0);
    // Our block, from the same messages through the edge's conversion and TSDB.
    let ours = dir.path().join("ours");
    let db = Db::open(
        &ours,
        DbOptions {
            max_ahead: None,
            ..DbOptions::default()
        },
    )
    .unwrap();
    let mut app = db.appender();
    for ts in &all {
        let labels = meridian_core::Labels::from_pairs(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        let r = app.series_ref(&labels);
        for h in &ts.histograms {
            let v = meridian_storeapi::rw_histogram::to_value(h).unwrap();
            app.append_histogram(r, h.timestamp, v).unwrap();
        }
    }
    app.commit().unwrap();
    let blocks = db.flush_head().unwrap();
    assert_eq!(blocks.len(), 1);
    drop(db);
    let ulid = blocks[0].ulid.clone();
    let promtool = meridian_testkit::require("promtool", "apt-get install prometheus").unwrap();
    let analyze = std::process::Command::new(&promtool)
        .args(["tsdb", "analyze"])
        .arg(&ours)
        .arg(&ulid)
        .output()
        .unwrap();
    assert!(
        analyze.status.success(),
        "promtool tsdb analyze: {}",
        String::from_utf8_lossy(&analyze.stderr)
    );
    let text = String::from_utf8_lossy(&analyze.stdout);
    assert!(text.contains("2 req_seconds"), "{text}");

    // A: our block in its data directory; B: the same histograms by remote write.
    let (da, db_dir) = (dir.path().join("a"), dir.path().join("b"));
    copy_dir(&ours.join(&ulid), &da.join("prom-data").join(&ulid));
    std::fs::create_dir_all(&db_dir).unwrap();
    let args = [
        "--enable-feature=native-histograms",
        "--web.enable-remote-write-receiver",
        "--web.enable-admin-api",
    ];
    let a = Prometheus::start(&da, "global: {scrape_interval: 1h}\n", &args).unwrap();
    let b = Prometheus::start(&db_dir, "global: {scrape_interval: 1h}\n", &args).unwrap();
    write_to_prometheus(&b.addr, all.clone());
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    for q in [
        "req_seconds",
        "queue_depth",
        "histogram_count(rate(req_seconds[2m]))",
        "sum(increase(req_seconds[5m]))",
    ] {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=30",
            urlencode(q),
            secs(t0 + 7_000),
            secs(t0 + N * STEP)
        );
        let (from_block, ingested) = (data(&a.addr, &path), data(&b.addr, &path));
        assert!(
            !from_block["result"].as_array().unwrap().is_empty(),
            "{q}: nothing"
        );
        assert_eq!(from_block, ingested, "{q}");
    }

    // Prometheus' own block (a snapshot of its head) through our block reader: what was sent. (A
    // third Prometheus, given the counters only: 2.42's snapshot re-encodes the open head chunk and
    // refuses a gauge histogram whose buckets go down, "unexpected counter reset".)
    let counters: Vec<prom::TimeSeries> = all
        .iter()
        .filter(|t| t.labels.iter().any(|l| l.value == "req_seconds"))
        .cloned()
        .collect();
    let dc = dir.path().join("c");
    std::fs::create_dir_all(&dc).unwrap();
    let c = Prometheus::start(&dc, "global: {scrape_interval: 1h}\n", &args).unwrap();
    write_to_prometheus(&c.addr, counters.clone());
    let b = c;
    let all = counters;
    let snap = http("POST", &b.addr, "/api/v1/admin/tsdb/snapshot", &[], b"")
        .unwrap()
        .json();
    let snapdir = b.data.join("snapshots").join(
        snap["data"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("snapshot: {snap}")),
    );
    let theirs: Vec<_> = std::fs::read_dir(&snapdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("meta.json").exists())
        .flat_map(|p| block_histograms(&p))
        .collect();
    let mut sent: Vec<(String, i64, String)> = Vec::new();
    for ts in &all {
        let labels = meridian_core::Labels::from_pairs(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        for h in &ts.histograms {
            let mut f = meridian_storeapi::rw_histogram::to_value(h)
                .unwrap()
                .to_float();
            f.hint = CounterResetHint::Unknown;
            f.compact();
            sent.push((labels.to_string(), h.timestamp, format!("{f:?}")));
        }
    }
    sent.sort();
    assert_eq!(theirs.len(), sent.len());
    assert!(theirs == sent, "Prometheus' block read back differently");
    let ours: Vec<_> = block_histograms(&ours.join(&ulid))
        .into_iter()
        .filter(|(l, _, _)| l.contains("req_seconds"))
        .collect();
    assert!(ours == sent, "our block read back differently");
}

/// The histograms of an instant query's answer by series (labels without `replica`), timestamps
/// left out (the two scrapers scrape at their own times).
fn by_series(result: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    result["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut m = s["metric"].clone();
            m.as_object_mut().unwrap().remove("replica");
            let v = if s["histogram"].is_null() {
                s["value"][1].clone()
            } else {
                s["histogram"][1].clone()
            };
            (m.to_string(), v.to_string())
        })
        .collect()
}

/// Prometheus 2.42 (`--enable-feature=native-histograms`) and the edge (`scrape_native_histograms`)
/// scrape the same exporter, built on the Prometheus Go client library, over protobuf: phase by
/// phase (more observations, new buckets, a new series) the histograms both store are identical,
/// as the HTTP APIs show them (the gateway's for the edge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_prometheus_scrape_the_same_native_histograms() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = meridian_integration::histograms::build_go_exporter(dir.path()) else {
        return;
    };
    let exporter_addr = format!("127.0.0.1:{}", meridian_testkit::free_port());
    let _exporter = meridian_testkit::ChildGuard(
        std::process::Command::new(&bin)
            .arg(&exporter_addr)
            .spawn()
            .unwrap(),
    );
    let scrape = format!(
        "scrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{exporter_addr}']}}]\n"
    );
    std::fs::create_dir_all(dir.path().join("prom")).unwrap();
    let Some(prometheus) = Prometheus::start(
        &dir.path().join("prom"),
        &format!("global: {{scrape_interval: 1s}}\n{scrape}"),
        &["--enable-feature=native-histograms"],
    ) else {
        return;
    };
    let mut node = Node::new(dir.path(), 0, Vec::new());
    node.local_endpoint = false;
    node.config = dir.path().join("edge-scrape.yml");
    std::fs::write(
        &node.config,
        format!("global:\n  external_labels: {{replica: e0}}\n{scrape}    scrape_native_histograms: true\n"),
    )
    .unwrap();
    node.start();
    let mut opts = GatewayOptions::new(
        EndpointGroup {
            specs: vec![node.grpc.parse().unwrap()],
            transport: meridian_gateway::Transport::Plaintext,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    opts.fanout.replica_labels = vec!["replica".into()];
    let gw = Gateway::start(opts).await.unwrap();
    let (g, p, e) = (
        gw.http_addr().to_string(),
        prometheus.addr.clone(),
        exporter_addr,
    );
    tokio::task::spawn_blocking(move || {
        let q = |addr: &str, expr: &str| {
            data(addr, &format!("/api/v1/query?query={}", urlencode(expr)))
        };
        for phase in 0..4 {
            if phase > 0 {
                assert_eq!(http_get(&e, "/step").status, 200);
            }
            // Both have scraped this phase once the step counter says so, and then again (a
            // scrape may have been under way during the step).
            let steps = format!("exporter_steps_total == {phase}");
            for addr in [&g, &p] {
                wait_for("a scrape of this phase", Duration::from_secs(30), || {
                    let ok = q(addr, &steps)["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty());
                    ok.then_some(())
                });
            }
            for expr in [
                "req_seconds",
                "histogram_count(req_seconds)",
                "histogram_sum(req_seconds)",
                "exporter_steps_total",
            ] {
                // A scrape under way during the step may still show the phase before: the answers
                // are compared until they agree, for 20 s at most.
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let (ours, theirs) = (by_series(&q(&g, expr)), by_series(&q(&p, expr)));
                    if (ours == theirs && !theirs.is_empty())
                        || std::time::Instant::now() > deadline
                    {
                        assert!(!theirs.is_empty(), "phase {phase}, {expr}: nothing");
                        assert_eq!(ours, theirs, "phase {phase}, {expr}");
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    })
    .await
    .unwrap();
    gw.shutdown().await;
    node.stop();
}
