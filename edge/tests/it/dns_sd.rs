//! `dns_sd_configs` against a real DNS server: Debian's dnsmasq on a loopback port answers SRV and A
//! records; the edge discovers, labels and scrapes the targets, and follows a change of the records
//! (dnsmasq restarted with another answer) with the unchanged target's loop left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use meridian_core::net::dns::DnsResolver;
use meridian_edge::agent::{Agent, AgentOptions};
use meridian_edge::discovery::DiscoveryOptions;
use meridian_testkit::{dnsmasq, free_port, http_get, require, wait_for};

async fn metrics_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "m 1\n" }));
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_and_a_records() {
    let Some(bin) = require("dnsmasq", "apt-get install dnsmasq-base") else {
        return;
    };
    let target = metrics_server().await;
    let port = free_port();
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let records = |second: bool| {
        let mut r = vec![
            format!(
                "--srv-host=_metrics._tcp.meridian.test,node-a.meridian.test,{}",
                target.port()
            ),
            "--host-record=node-a.meridian.test,127.0.0.1".to_string(),
            "--host-record=scrape.meridian.test,127.0.0.1".to_string(),
        ];
        if second {
            r.push("--host-record=scrape.meridian.test,127.0.0.2".to_string());
        }
        r
    };
    let mut server = Some(dnsmasq(&bin, port, &records(false)));
    // Wait until dnsmasq answers.
    let resolver = DnsResolver::new(Some(dns)).unwrap();
    let mut answered = false;
    for _ in 0..50 {
        if resolver
            .srv("_metrics._tcp.meridian.test")
            .await
            .is_ok_and(|r| !r.is_empty())
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "dnsmasq did not answer");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: srv\n    dns_sd_configs: [{{names: ['_metrics._tcp.meridian.test'], refresh_interval: 1s}}]\n  - job_name: a\n    dns_sd_configs: [{{names: ['scrape.meridian.test'], type: A, port: {}, refresh_interval: 1s}}]\n",
            target.port()
        ),
    )
    .unwrap();
    let agent = Agent::start(AgentOptions {
        discovery: DiscoveryOptions {
            dns_server: Some(dns),
            ..Default::default()
        },
        ..AgentOptions::new(
            cfg,
            dir.path().join("data"),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let addr = agent.http_addr().to_string();
    let targets = move |addr: String| {
        tokio::task::spawn_blocking(move || http_get(&addr, "/api/v1/targets").json())
    };
    // SRV: Prometheus' meta labels; the host keeps its trailing dot in the record label only.
    let want_srv = |j: &serde_json::Value| {
        j["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["scrapePool"] == "srv")
            .cloned()
    };
    let mut srv = None;
    for _ in 0..100 {
        let j = targets(addr.clone()).await.unwrap();
        srv = want_srv(&j);
        if srv.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let srv = srv.expect("SRV target discovered");
    let d = &srv["discoveredLabels"];
    assert_eq!(d["__meta_dns_name"], "_metrics._tcp.meridian.test");
    assert_eq!(d["__meta_dns_srv_record_target"], "node-a.meridian.test.");
    assert_eq!(d["__meta_dns_srv_record_port"], target.port().to_string());
    assert_eq!(
        d["__address__"],
        format!("node-a.meridian.test:{}", target.port())
    );
    assert_eq!(
        srv["labels"]["instance"],
        format!("node-a.meridian.test:{}", target.port())
    );

    // A: scraped for real.
    let a_addr = addr.clone();
    let a = tokio::task::spawn_blocking(move || {
        wait_for(
            "the A-record target to be up",
            Duration::from_secs(15),
            || {
                let j = http_get(&a_addr, "/api/v1/targets").json();
                j["data"]["activeTargets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["scrapePool"] == "a" && t["health"] == "up")
                    .cloned()
            },
        )
    })
    .await
    .unwrap();
    assert_eq!(
        a["discoveredLabels"]["__meta_dns_name"],
        "scrape.meridian.test"
    );
    assert_eq!(
        a["labels"]["instance"],
        format!("127.0.0.1:{}", target.port())
    );
    let first_scrape = a["lastScrape"].as_str().unwrap().to_owned();

    // The records change: a second A record appears; the existing target keeps its loop.
    drop(server.take());
    let _server = dnsmasq(&bin, port, &records(true));
    let a_addr = addr.clone();
    let port_s = target.port().to_string();
    tokio::task::spawn_blocking(move || {
        wait_for("a second A-record target", Duration::from_secs(20), || {
            let j = http_get(&a_addr, "/api/v1/targets").json();
            let a: Vec<_> = j["data"]["activeTargets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["scrapePool"] == "a")
                .cloned()
                .collect();
            (a.len() == 2).then_some(())
        })
    })
    .await
    .unwrap();
    let j = targets(addr.clone()).await.unwrap();
    let kept = j["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["labels"]["instance"] == format!("127.0.0.1:{port_s}"))
        .unwrap()
        .clone();
    // Same loop: it has been scraping all along (its health is known, not reset to "unknown").
    assert_eq!(kept["health"], "up");
    assert!(kept["lastScrape"].as_str().unwrap() >= first_scrape.as_str());
    agent.shutdown().await;
}
