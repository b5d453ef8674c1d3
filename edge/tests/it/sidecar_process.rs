//! `meridian-edge sidecar` as a process beside a real Prometheus 2.42, as seed 000 runs
//! `thanos sidecar`: it renders Prometheus' config from a template with `$(POD_NAME)` and reloads
//! it (Prometheus gets its external labels from there), serves Prometheus over the StoreAPI with
//! those labels, reloads on template changes and on a rule file added to a watched directory,
//! survives a Prometheus restart (an error while it is down, answers after), and stops on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use meridian_core::chunkenc::XorIterator;
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_testkit::{ChildGuard, Prometheus, http_get, spawn_announcing, wait_for};

/// Starts the sidecar with `args`, `POD_NAME` set; answers it and its HTTP and gRPC addresses.
pub(crate) fn start_sidecar(
    args: &[String],
    pod: &str,
    log: &Path,
) -> (ChildGuard, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian-edge"));
    cmd.arg("sidecar")
        .arg("--http-address=127.0.0.1:0")
        .arg("--grpc-address=127.0.0.1:0")
        .args(args)
        .env("POD_NAME", pod);
    let (child, mut addrs) =
        spawn_announcing(cmd, log, &["http listening on", "grpc listening on"]);
    let grpc = addrs.remove(1);
    (child, addrs.remove(0), grpc)
}

/// The samples of the `up` series the store answers for `[mint, maxt]`, by label set.
pub(crate) async fn series(
    client: &StoreClient,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<Vec<(Labels, Vec<(i64, f64)>)>, tonic::Status> {
    Ok(series_and_warnings(client, matchers, mint, maxt).await?.0)
}

type SeriesSamples = Vec<(Labels, Vec<(i64, f64)>)>;

async fn series_and_warnings(
    client: &StoreClient,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<(SeriesSamples, Vec<String>), tonic::Status> {
    let req = meridian_storeapi::series_request(mint, maxt, matchers, false);
    let mut stream = client.store_client().series(req).await?.into_inner();
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    while let Some(frame) = stream.next().await {
        match frame?.result {
            Some(pb::series_response::Result::Series(s)) => {
                let labels = s.labels.clone();
                let mut samples = Vec::new();
                for c in &s.chunks {
                    let raw = c.raw.as_ref().unwrap();
                    samples.extend(XorIterator::new(&raw.data).unwrap().map(|x| (x.t, x.v)));
                }
                samples.retain(|(t, _)| *t >= mint && *t <= maxt);
                out.push((labels, samples));
            }
            Some(pb::series_response::Result::Warning(w)) => warnings.push(w),
            _ => {}
        }
    }
    Ok((out, warnings))
}

const TEMPLATE: &str = "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: c1\n    replica: $(POD_NAME)\nrule_files: ['RULES/*.yml']\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{targets: ['ADDR']}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_reloads_serves_and_survives_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let rules = d.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    // Prometheus starts on a config without external labels; the sidecar's rendering brings them.
    let Some(mut prom) = Prometheus::start(
        d.path(),
        "global: {scrape_interval: 1s}\nscrape_configs: []\n",
        &[
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
        ],
    ) else {
        panic!("Prometheus is missing");
    };
    let template = d.path().join("prometheus.yml.tmpl");
    let template_text = TEMPLATE
        .replace("ADDR", &prom.addr)
        .replace("RULES", &rules.display().to_string());
    std::fs::write(&template, &template_text).unwrap();
    let log = d.path().join("sidecar.log");
    let args: Vec<String> = vec![
        format!("--prometheus.url=http://{}", prom.addr),
        format!("--tsdb.path={}", d.path().join("prom-data").display()),
        format!("--reloader.config-file={}", template.display()),
        format!("--reloader.config-envsubst-file={}", prom.config.display()),
        format!("--reloader.rule-dir={}", rules.display()),
        "--reloader.retry-interval=200ms".into(),
    ];
    let (sidecar, http, grpc) = start_sidecar(&args, "prometheus-0", &log);
    let config = http_get(&prom.addr, "/api/v1/status/config");
    assert!(
        String::from_utf8_lossy(&config.body).contains("replica: prometheus-0"),
        "{}",
        String::from_utf8_lossy(&config.body)
    );
    let client = StoreClient::connect_plaintext(&grpc).await.unwrap();
    let info = client
        .info_client()
        .info(infopb::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let labels: Vec<(String, String)> = info.label_sets[0]
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    assert_eq!(
        labels,
        [
            ("cluster".into(), "c1".into()),
            ("replica".into(), "prometheus-0".into())
        ]
    );
    assert_eq!(info.component_type, "sidecar");
    assert_eq!(http_get(&http, "/-/ready").status, 200);

    // Served with the external labels; the samples are Prometheus' own.
    wait_for("5 scrapes", Duration::from_secs(30), || {
        (prom.query("count_over_time(up[1m])").first()?.1 >= 5.0).then_some(())
    });
    let now = meridian_core::time::now_ms();
    let up = [Matcher::equal("__name__", "up")];
    let got = series(&client, &up, now - 600_000, now).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.get("replica"), Some("prometheus-0"));
    assert_eq!(got[0].0.get("cluster"), Some("c1"));
    let own = prom.query(&format!(
        "count_over_time(up[10m] @ {})",
        now as f64 / 1000.0
    ));
    assert_eq!(
        got[0].1.len() as f64,
        own[0].1,
        "samples: ours vs Prometheus' count"
    );

    // The template changed: Prometheus reloaded with the new config.
    std::fs::write(
        &template,
        template_text.replace("cluster: c1", "cluster: c2"),
    )
    .unwrap();
    wait_for("the new config", Duration::from_secs(30), || {
        let c = http_get(&prom.addr, "/api/v1/status/config");
        String::from_utf8_lossy(&c.body)
            .contains("cluster: c2")
            .then_some(())
    });
    // A rule file added to the watched directory: reloaded.
    std::fs::write(
        rules.join("a.yml"),
        "groups:\n  - name: added\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n",
    )
    .unwrap();
    wait_for("the new rule group", Duration::from_secs(30), || {
        let r = http_get(&prom.addr, "/api/v1/rules");
        String::from_utf8_lossy(&r.body)
            .contains("\"name\":\"added\"")
            .then_some(())
    });

    // Prometheus down: what it wrote, read from its WAL, with a warning naming it (not an empty
    // answer, not silence); a second sidecar told not to read the WAL answers with an error (its
    // remote read fails). Back: answers again, no warning.
    let rr_log = d.path().join("sidecar-rr.log");
    let rr_args = [
        args[0].clone(),
        args[1].clone(),
        "--tsdb.read-wal=false".into(),
    ];
    let (rr_sidecar, _, rr_grpc) = start_sidecar(&rr_args, "prometheus-0", &rr_log);
    let rr_client = StoreClient::connect_plaintext(&rr_grpc).await.unwrap();
    let before = series(&client, &up, 0, i64::MAX).await.unwrap();
    prom.stop();
    // A success holds for a second: polled until the sidecar notices.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (down, warnings) = loop {
        let (down, warnings) = series_and_warnings(&client, &up, 0, i64::MAX)
            .await
            .unwrap();
        if !warnings.is_empty() || std::time::Instant::now() > deadline {
            break (down, warnings);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Scrapes may have landed between the two reads.
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0].0, before[0].0);
    assert!(down[0].1.starts_with(&before[0].1), "{down:?} {before:?}");
    let e = series(&rr_client, &up, 0, i64::MAX).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    crate::support::stop_gracefully(rr_sidecar);
    assert!(
        warnings.len() == 1 && warnings[0].contains(&prom.addr),
        "{warnings:?}"
    );
    prom.restart();
    let (back, warnings) = series_and_warnings(&client, &up, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].1.len() >= got[0].1.len());
    assert!(warnings.is_empty(), "{warnings:?}");

    let metrics = String::from_utf8_lossy(&http_get(&http, "/metrics").body).into_owned();
    for m in [
        "thanos_sidecar_prometheus_up",
        "thanos_sidecar_reloader_reloads_total",
        "thanos_sidecar_reloader_config_apply_operations_total",
    ] {
        assert!(metrics.contains(m), "{m} missing from:\n{metrics}");
    }
    crate::support::stop_gracefully(sidecar);
}
