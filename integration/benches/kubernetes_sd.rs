//! `kubernetes_sd_configs` at scale (issue 24): a cluster of P pods (2 containers: `app` with ports
//! http/metrics, a port-less sidecar), P/5 Services each with its Endpoints and one EndpointSlice, and N
//! nodes, served by the stand-in API server of `../shared/conformance/kubernetes-sd`
//! (`fake_apiserver.py`, list + watch as the real API answers them). The edge (this build's
//! `meridian-edge`, or `MERIDIAN_EDGE_BIN`) runs four jobs: pod, endpoints, endpointslice and node
//! roles, every scrape sent to a closed loopback proxy so no fixture address is contacted.
//!
//! Reported, per scale:
//! - time from the edge's start to every job's targets in its scrape pools
//!   (`prometheus_target_scrape_pool_targets`);
//! - CPU (user + system) of the edge per 1,000 watch events (pod annotation changes; the pod
//!   informer is shared by all three pod-reading roles, so each event re-renders a pod group, and the
//!   pods' jobs recompute their targets);
//! - the edge's RSS, and RSS per 1,000 pods (difference between two scales).
//!
//! Prometheus 2.42 cannot be measured beside it: Debian's build has no Kubernetes discovery.
//!
//! Run: `cargo bench -p meridian-integration --bench kubernetes_sd` (release; 1,000 and 5,000 pods,
//! 100 nodes). Under `cargo test --all-targets` a small smoke run keeps the code working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_testkit::{ChildGuard, free_port, http, http_get, in_ci, rss_bytes};
use serde_json::{Value, json};

fn harness() -> Option<PathBuf> {
    let p = std::env::var_os("MERIDIAN_K8S_SD_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/kubernetes-sd")
        });
    p.join("fake_apiserver.py").exists().then_some(p)
}

fn edge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_EDGE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("meridian-edge")
}

/// The fixture cluster: `pods` pods in services of 5, `nodes` nodes.
fn cluster(pods: usize, nodes: usize) -> Value {
    let mut items =
        vec![json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "bench"}})];
    for n in 0..nodes {
        items.push(json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": format!("node-{n:03}"), "uid": format!("node-uid-{n}"),
                "labels": {"kubernetes.io/hostname": format!("node-{n:03}"), "kubernetes.io/os": "linux",
                           "node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": format!("zone-{}", n % 3)},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"podCIDR": format!("10.244.{n}.0/24"), "providerID": format!("aws:///zone/i-{n:08x}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", n / 250, n % 250 + 1)},
                                     {"type": "Hostname", "address": format!("node-{n:03}")}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
        }));
    }
    let services = pods.div_ceil(5);
    for s in 0..services {
        let app = format!("app-{s:04}");
        let mut addrs = Vec::new();
        let mut eps = Vec::new();
        for k in 0..5.min(pods - s * 5) {
            let i = s * 5 + k;
            let name = format!("{app}-{k}");
            let ip = format!(
                "10.{}.{}.{}",
                100 + i / 65_000,
                (i / 250) % 256,
                i % 250 + 1
            );
            let node = format!("node-{:03}", i % nodes);
            items.push(json!({
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": "bench", "uid": format!("pod-uid-{i}"),
                    "labels": {"app": app, "pod-template-hash": "7c9d8b6f5d", "version": "v1"},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7c9d8b6f5d"),
                                         "uid": format!("rs-{s}"), "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"nodeName": node, "containers": [
                    {"name": "app", "image": "registry.example/app:1.4.2",
                     "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                               {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]},
                    {"name": "sidecar", "image": "registry.example/filebeat:8.13"}]},
                "status": {"phase": "Running", "podIP": ip, "hostIP": format!("192.168.0.{}", i % nodes + 1),
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "app", "ready": true, "restartCount": 0, "image": "registry.example/app:1.4.2",
                         "imageID": "registry.example/app@sha256:00", "containerID": format!("containerd://{i:064x}")},
                        {"name": "sidecar", "ready": true, "restartCount": 0, "image": "registry.example/filebeat:8.13",
                         "imageID": "registry.example/filebeat@sha256:00", "containerID": format!("containerd://{:064x}", i + 1_000_000)}]}
            }));
            let target = json!({"kind": "Pod", "namespace": "bench", "name": name, "uid": format!("pod-uid-{i}")});
            addrs.push(json!({"ip": ip, "nodeName": node, "targetRef": target}));
            eps.push(json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                            "nodeName": node, "targetRef": target}));
        }
        let labels = json!({"app": app, "team": "payments"});
        items.push(json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": app, "namespace": "bench", "uid": format!("svc-uid-{s}"), "labels": labels,
                         "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", s / 250, s % 250 + 1), "selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }));
        items.push(json!({
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": {"name": app, "namespace": "bench", "labels": labels},
            "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
        }));
        items.push(json!({
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": format!("{app}-x7k2p"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": app, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }));
    }
    json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
}

fn config(api: &str, proxy_port: u16) -> String {
    let job = |name: &str, role: &str, keep: &str| {
        format!(
            "  - job_name: {name}\n    proxy_url: http://127.0.0.1:{proxy_port}\n    kubernetes_sd_configs: [{{role: {role}, api_server: '{api}'}}]\n    relabel_configs:\n{keep}"
        )
    };
    let keep = |label: &str, regex: &str| {
        format!("      - {{source_labels: [{label}], regex: '{regex}', action: keep}}\n")
    };
    let pods = format!(
        "{}{}",
        keep(
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            "true"
        ),
        keep("__meta_kubernetes_pod_container_port_name", "metrics")
    );
    format!(
        "global:\n  scrape_interval: 1m\n  scrape_timeout: 10s\nscrape_configs:\n{}{}{}{}",
        job("pods", "pod", &pods),
        job(
            "endpoints",
            "endpoints",
            &keep("__meta_kubernetes_endpoint_port_name", "http")
        ),
        job(
            "endpointslices",
            "endpointslice",
            &keep("__meta_kubernetes_endpointslice_port_name", "http")
        ),
        job(
            "nodes",
            "node",
            "      - {target_label: x, replacement: y}\n"
        ),
    )
}

fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// (user + system) CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

struct Outcome {
    to_targets: Duration,
    cpu_per_1000: f64,
    /// RSS once every target is known, and after the watch events.
    rss: u64,
    rss_after_events: u64,
}

fn run(harness: &Path, pods: usize, nodes: usize, events: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("cluster.json");
    std::fs::write(&fixtures, cluster(pods, nodes).to_string()).unwrap();
    let port_file = dir.path().join("api.port");
    let _fake = ChildGuard(
        Command::new("python3")
            .arg(harness.join("fake_apiserver.py"))
            .arg("--fixtures")
            .arg(&fixtures)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !port_file.exists()
        || std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the stand-in did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let api_port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let cfg = dir.path().join("edge.yml");
    std::fs::write(&cfg, config(&format!("http://{api}"), free_port())).unwrap();
    let http_port = free_port();
    let addr = format!("127.0.0.1:{http_port}");
    let start = Instant::now();
    let edge = ChildGuard(
        Command::new(edge_bin())
            .arg("run")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--http-address={addr}"))
            .arg("--grpc-address=none")
            .arg("--log.level=error")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = edge.0.id();
    let expect = [
        ("pods", pods),
        ("endpoints", pods),
        ("endpointslices", pods),
        ("nodes", nodes),
    ];
    let to_targets = loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "targets never complete"
        );
        if let Ok(r) = http("GET", &addr, "/metrics", &[], b"") {
            let text = r.text();
            let done = expect.iter().all(|(job, n)| {
                metric(
                    &text,
                    "prometheus_target_scrape_pool_targets",
                    &format!("scrape_job=\"{job}\""),
                ) == Some(*n as f64)
            });
            if done {
                break start.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let events_of = || {
        metric(
            &http_get(&addr, "/metrics").text(),
            "prometheus_sd_kubernetes_events_total",
            "event=\"update\",role=\"pods\"",
        )
        .unwrap_or(0.0)
    };
    // Settle, then changes: one annotation per pod, round robin.
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_bytes(pid);
    let before_events = events_of();
    let cpu0 = cpu_seconds(pid);
    for e in 0..events {
        let i = e % pods;
        let body = json!({"kind": "Pod", "namespace": "bench", "name": format!("app-{:04}-{}", i / 5, i % 5),
                          "patch": {"metadata": {"annotations": {"bench/generation": e.to_string()}}}});
        let r = http(
            "POST",
            &api,
            "/_fake/patch",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let t = Instant::now();
    while events_of() < before_events + events as f64 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the edge did not see every event"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last batch's targets recomputed.
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds(pid) - cpu0;
    Outcome {
        to_targets,
        cpu_per_1000: cpu * 1000.0 / events as f64,
        rss,
        rss_after_events: rss_bytes(pid),
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let Some(harness) = harness() else {
        assert!(
            !in_ci(),
            "CI=true and the kubernetes-sd harness is missing (MERIDIAN_K8S_SD_HARNESS)"
        );
        eprintln!("kubernetes_sd: harness not found; not run");
        return;
    };
    let scales: &[(usize, usize, usize)] = if bench {
        &[(1_000, 100, 1_000), (5_000, 100, 2_000)]
    } else {
        &[(50, 5, 50)]
    };
    let mut last: Option<(usize, u64)> = None;
    for &(pods, nodes, events) in scales {
        let o = run(&harness, pods, nodes, events);
        let targets = 3 * pods + nodes;
        eprintln!(
            "kubernetes_sd: {pods} pods, {} services (+ Endpoints, EndpointSlices), {nodes} nodes: all {targets} targets {:.2} s after start; {:.3} CPU s per 1,000 watch events ({events} events); RSS {:.1} MiB ({:.1} MiB after the events)",
            pods / 5,
            o.to_targets.as_secs_f64(),
            o.cpu_per_1000,
            o.rss as f64 / 1048576.0,
            o.rss_after_events as f64 / 1048576.0
        );
        if let Some((p0, r0)) = last {
            let per = (o.rss as f64 - r0 as f64) / ((pods - p0) as f64 / 1000.0);
            eprintln!(
                "kubernetes_sd: RSS per 1,000 pods {:.1} MiB ({p0} -> {pods} pods)",
                per / 1048576.0
            );
        }
        last = Some((pods, o.rss));
    }
}
