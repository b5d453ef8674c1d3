//! ServiceMonitors, PodMonitors and PrometheusRules read by the edge and the gateway themselves (no
//! prometheus-operator), judged against the operator's own output.
//!
//! - `operator/cases.yaml`: one case per field of `ServiceMonitor` and `PodMonitor` (and seed 002's
//!   example app). Each names the upstream golden file (`pkg/prometheus/testdata/<name>.golden`,
//!   prometheus-operator v0.93.0) its expected job was checked against, with the inputs of that golden's
//!   test; where upstream has no golden, the note names the lines of `promcfg.go` the expected job
//!   follows. [`generated_jobs_equal_the_operators`] compares the edge's jobs with them;
//!   [`expected_jobs_are_the_upstream_golden_jobs`] (ignored: it needs the operator's test data, in
//!   `MERIDIAN_OPERATOR_TESTDATA`) compares the expected jobs with the golden files themselves.
//! - [`resources_give_the_targets_of_the_golden_yaml`]: the stand-in Kubernetes API of
//!   `../shared/conformance/kubernetes-sd` (with the monitoring.coreos.com resources registered by
//!   `k8s/operator_apiserver.py`) serves the cases' resources and the Services, Endpoints and Pods they
//!   select; an edge reading the resources and an edge given the expected jobs as a plain
//!   `prometheus.yml` show the same targets (`/api/v1/targets`: labels, discoveredLabels, scrape URL,
//!   dropped targets). Then a ServiceMonitor is added, changed and deleted, and a broken one is left out
//!   by name while the others keep working; then a PrometheusRule's alert fires through the gateway's
//!   rule engine as the same rule from a file does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use meridian_edge::config::{GlobalConfig, resolve_generated_job};
use meridian_edge::monitors::generate::{self, AssetStore, Context, Node};
use meridian_integration::served::{bin_dir, require_binaries};
use meridian_kube::monitoring::{PodMonitor, ServiceMonitor};
use meridian_kube::resources::MonitoringResources;
use meridian_testkit::{ChildGuard, free_port, http, in_ci, require, wait_for};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cases() -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo().join("integration/tests/operator/cases.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// The section of a case (the `Prometheus` resource's fields), as the edge's YAML.
fn section(c: &Value, extra: Value) -> MonitoringResources {
    let mut s = c["section"].as_object().cloned().unwrap_or_default();
    s.insert("namespace".into(), json!("default"));
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s.insert(k, v);
    }
    MonitoringResources::parse(&Value::Object(s).to_string()).unwrap()
}

fn assets(c: &Value) -> AssetStore {
    let mut a = AssetStore::default();
    for s in c["secrets"].as_array().into_iter().flatten() {
        let data = s["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        a.secrets.insert(
            (
                s["namespace"].as_str().unwrap().to_owned(),
                s["name"].as_str().unwrap().to_owned(),
            ),
            data,
        );
    }
    a
}

/// The jobs the edge generates for a case's resource.
fn generate(c: &Value, cfg: &MonitoringResources) -> Result<Vec<Node>, String> {
    let a = assets(c);
    let ctx = Context {
        cfg,
        assets: &a,
        cert_dir: Path::new("/etc/prometheus/certs"),
    };
    let r = &c["resource"];
    let g = match r["kind"].as_str().unwrap() {
        "ServiceMonitor" => {
            let m: ServiceMonitor = serde_json::from_value(r.clone()).unwrap();
            assert!(m.unsupported().is_empty(), "{:?}", m.unsupported());
            generate::service_monitor(&ctx, &m)?
        }
        "PodMonitor" => {
            let m: PodMonitor = serde_json::from_value(r.clone()).unwrap();
            assert!(m.unsupported().is_empty(), "{:?}", m.unsupported());
            generate::pod_monitor(&ctx, &m)?
        }
        k => panic!("kind {k}"),
    };
    Ok(g.jobs)
}

/// Only the keys a case compares (all when it names none).
fn compared(c: &Value, job: &Value) -> Value {
    match c["compare"].as_array() {
        None => job.clone(),
        Some(keys) => Value::Object(
            job.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k == "job_name" || keys.iter().any(|x| x == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    }
}

fn global() -> GlobalConfig {
    GlobalConfig {
        scrape_interval: meridian_core::promfmt::PromDuration(Duration::from_secs(30)),
        ..GlobalConfig::default()
    }
}

#[test]
fn generated_jobs_equal_the_operators() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let cfg = section(c, json!({}));
        let jobs = generate(c, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<Value> = jobs
            .iter()
            .map(|j| compared(c, &serde_json::to_value(j).unwrap()))
            .collect();
        let want: Vec<Value> = c["expected"].as_array().unwrap().clone();
        if got != want {
            failures.push(format!(
                "{name} (golden {}):\n  got  {}\n  want {}",
                c["golden"],
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&want).unwrap()
            ));
            continue;
        }
        // Both pass the edge's checks for a job and resolve to the same scrape configuration.
        if c["compare"].is_null() {
            for (g, w) in jobs.iter().zip(&want) {
                let a = resolve_generated_job(&serde_saphyr::to_string(g).unwrap(), &global(), &[])
                    .unwrap_or_else(|e| panic!("{name}: generated job refused: {e}"));
                let b = resolve_generated_job(&serde_saphyr::to_string(w).unwrap(), &global(), &[])
                    .unwrap_or_else(|e| panic!("{name}: expected job refused: {e}"));
                let (mut a, mut b) = (a.0, b.0);
                (a.line, b.line) = (0, 0);
                assert_eq!(a, b, "{name}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The expected jobs against the golden files of prometheus-operator v0.93.0
/// (`MERIDIAN_OPERATOR_TESTDATA=<checkout>/pkg/prometheus/testdata`): `$(SHARD)` is `0` (one shard)
/// and each case's `golden_replace` is applied to the golden first.
#[test]
#[ignore = "needs prometheus-operator's pkg/prometheus/testdata in MERIDIAN_OPERATOR_TESTDATA"]
fn expected_jobs_are_the_upstream_golden_jobs() {
    let dir = PathBuf::from(std::env::var_os("MERIDIAN_OPERATOR_TESTDATA").expect(
        "MERIDIAN_OPERATOR_TESTDATA=<prometheus-operator v0.93.0>/pkg/prometheus/testdata",
    ));
    let mut checked = 0;
    for c in cases() {
        let Some(golden) = c["golden"].as_str() else {
            continue;
        };
        let mut text = std::fs::read_to_string(dir.join(format!("{golden}.golden")))
            .unwrap()
            .replace("$(SHARD)", "0");
        for (a, b) in c["golden_replace"].as_object().cloned().unwrap_or_default() {
            text = text.replace(&a, b.as_str().unwrap());
        }
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let want = &c["expected"][0];
        let job = c["golden_job"]
            .as_str()
            .unwrap_or_else(|| want["job_name"].as_str().unwrap());
        let mut g = doc["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == job)
            .unwrap_or_else(|| panic!("{golden}: no job {job}"))
            .clone();
        g["job_name"] = want["job_name"].clone();
        assert_eq!(&compared(&c, &g), want, "{}: {golden}", c["name"]);
        checked += 1;
    }
    println!("{checked} expected jobs equal their golden jobs");
    assert!(checked >= 35);
}

// ------------------------------------------------------------------------------------------------
// Against the stand-in Kubernetes API

struct Api {
    _child: ChildGuard,
    addr: String,
}

impl Api {
    fn start(dir: &Path) -> Option<Api> {
        require("python3", "apt-get install python3")?;
        let harness = std::env::var_os("MERIDIAN_K8S_SD_HARNESS").map_or_else(
            || repo().join("../shared/conformance/kubernetes-sd"),
            PathBuf::from,
        );
        if !harness.join("fake_apiserver.py").exists() {
            let msg = format!(
                "the kubernetes-sd harness is not at {} (set MERIDIAN_K8S_SD_HARNESS)",
                harness.display()
            );
            assert!(!in_ci(), "CI=true: {msg}");
            println!("{msg}; not run");
            return None;
        }
        let port_file = dir.join("api.port");
        let child = Command::new("python3")
            .arg(repo().join("integration/k8s/operator_apiserver.py"))
            .arg(&harness)
            .arg("--fixtures")
            .arg(harness.join("fixtures/cluster.json"))
            .args(["--port", "0", "--bookmark-interval", "2", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("api.log")).unwrap())
            .spawn()
            .unwrap();
        let child = ChildGuard(child);
        let port = wait_for("the stand-in API's port", Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).ok()
        });
        Some(Api {
            _child: child,
            addr: format!("127.0.0.1:{}", port.trim()),
        })
    }

    fn post(&self, path: &str, body: &Value) {
        let r = http(
            "POST",
            &self.addr,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }

    fn apply(&self, objs: Vec<Value>) {
        self.post("/_fake/apply", &Value::Array(objs));
    }

    fn delete(&self, kind: &str, ns: &str, name: &str) {
        self.post(
            "/_fake/delete",
            &json!({"kind": kind, "namespace": ns, "name": name}),
        );
    }
}

struct Edge {
    _child: ChildGuard,
    http: String,
    grpc: String,
    log: PathBuf,
}

impl Edge {
    fn start(dir: &Path, name: &str, config: &str) -> Edge {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("edge.yml"), config).unwrap();
        let http_addr = format!("127.0.0.1:{}", free_port());
        let grpc = format!("127.0.0.1:{}", free_port());
        let log = home.join("edge.log");
        let child = Command::new(bin_dir().join("meridian-edge"))
            .arg("run")
            .arg(format!("--config.file={}", home.join("edge.yml").display()))
            .arg(format!("--tsdb.path={}", home.join("tsdb").display()))
            .arg(format!("--http-address={http_addr}"))
            .arg(format!("--grpc-address={grpc}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let e = Edge {
            _child: ChildGuard(child),
            http: http_addr,
            grpc,
            log,
        };
        wait_for("the edge to be ready", Duration::from_secs(30), || {
            http("GET", &e.http, "/-/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        e
    }

    fn targets(&self) -> Value {
        http("GET", &self.http, "/api/v1/targets", &[], b"")
            .map(|r| r.json())
            .unwrap_or(Value::Null)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the targets API shows that configuration decides: per pool, the active targets' labels,
/// discovered labels and URL, and the dropped targets' discovered labels (sorted; health and times
/// left out).
fn target_view(t: &Value) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for a in t["data"]["activeTargets"].as_array().into_iter().flatten() {
        let pool = a["scrapePool"].as_str().unwrap().to_owned();
        out.entry(pool).or_default().0.push(
            json!({"labels": a["labels"], "discoveredLabels": a["discoveredLabels"], "scrapeUrl": a["scrapeUrl"]})
                .to_string(),
        );
    }
    for d in t["data"]["droppedTargets"].as_array().into_iter().flatten() {
        let pool = d["discoveredLabels"]["job"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        out.entry(pool)
            .or_default()
            .1
            .push(d["discoveredLabels"].to_string());
    }
    for v in out.values_mut() {
        v.0.sort();
        v.1.sort();
    }
    out
}

/// The example app of seed 002 in `default`, with the labels and ports the cases select on, and a pod
/// in `pod-monitor-ns`.
fn app_objects() -> Vec<Value> {
    let svc_labels = json!({"app": "example-app", "group": "group1", "foo": "bar", "alpha": "beta",
        "example": "svc-example", "env": "prod", "app.kubernetes.io/name": "example-svc"});
    let pod_labels = json!({"app": "example-app", "group": "group1", "example": "pod-example",
        "env": "dev", "app.kubernetes.io/name": "example-pod"});
    let ports = json!([
        {"name": "web", "containerPort": 8080, "protocol": "TCP"},
        {"name": "https-metrics", "containerPort": 10250, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        {"name": "podname", "containerPort": 1024, "protocol": "TCP"},
        {"name": "test", "containerPort": 10240, "protocol": "TCP"}
    ]);
    let pod = |ns: &str, name: &str, ip: &str, phase: &str, ready: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": pod_labels},
            "spec": {"nodeName": "k8s-node1", "containers": [{"name": "example-app", "image": "quay.io/brancz/prometheus-example-app:v0.5.0", "ports": ports}]},
            "status": {"phase": phase, "podIP": ip, "hostIP": "192.168.10.101",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [{"name": "example-app", "ready": ready == "True", "restartCount": 0, "image": "x", "imageID": "x", "containerID": format!("containerd://{name}")}]}})
    };
    let addr = |ip: &str, pod: &str| json!({"ip": ip, "nodeName": "k8s-node1", "targetRef": {"kind": "Pod", "namespace": "default", "name": pod, "uid": format!("uid-{pod}")}});
    vec![
        pod("default", "example-app-0", "10.244.1.50", "Running", "True"),
        pod(
            "default",
            "example-app-1",
            "10.244.2.51",
            "Running",
            "False",
        ),
        pod(
            "default",
            "example-app-job",
            "10.244.2.52",
            "Succeeded",
            "False",
        ),
        pod(
            "pod-monitor-ns",
            "other-0",
            "10.244.1.60",
            "Running",
            "True",
        ),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "example-app", "namespace": "default", "uid": "uid-svc", "labels": svc_labels},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.50.50", "selector": {"app": "example-app"},
                "ports": [{"name": "web", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
                          {"name": "https-metrics", "port": 10250, "targetPort": 10250, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "example-app", "namespace": "default", "labels": svc_labels},
            "subsets": [{"addresses": [addr("10.244.1.50", "example-app-0")],
                         "notReadyAddresses": [addr("10.244.2.51", "example-app-1")],
                         "ports": [{"name": "web", "port": 8080, "protocol": "TCP"},
                                   {"name": "https-metrics", "port": 10250, "protocol": "TCP"}]}]}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "example-app-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "example-app", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.50"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "k8s-node1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "example-app-0", "uid": "uid-example-app-0"}},
                {"addresses": ["10.244.2.51"], "conditions": {"ready": false, "serving": false, "terminating": false}, "nodeName": "k8s-node1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "example-app-1", "uid": "uid-example-app-1"}}],
            "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}, {"name": "https-metrics", "port": 10250, "protocol": "TCP"}]}),
    ]
}

/// Renames `value`'s strings `from` → `to` (job names and the PodMonitor's `ns/name` job label).
fn rename(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(a) => a.iter_mut().for_each(|x| rename(x, from, to)),
        Value::Object(o) => o.values_mut().for_each(|x| rename(x, from, to)),
        _ => {}
    }
}

/// The client keys the edge writes into each generated `kubernetes_sd_configs` entry (the operator's
/// `apiserverConfig`), added to an expected job for the plain `prometheus.yml`.
fn with_api(job: &mut Value, api: &str, proxy: &str) {
    for sd in job["kubernetes_sd_configs"].as_array_mut().unwrap() {
        sd["api_server"] = json!(format!("http://{api}"));
    }
    job["proxy_url"] = json!(proxy);
}

#[test]
fn resources_give_the_targets_of_the_golden_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let Some(api) = Api::start(dir.path()) else {
        return;
    };
    require_binaries();
    api.apply(app_objects());
    // Every scrape goes to a closed loopback port: no fixture address is ever contacted.
    let proxy = format!("http://127.0.0.1:{}", free_port());

    // Cases grouped by their section (one pair of edges per group); the cases that compare only a
    // part of the job are judged by `generated_jobs_equal_the_operators` alone.
    let mut groups: BTreeMap<String, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, c) in cases().into_iter().enumerate() {
        if !c["compare"].is_null() {
            continue;
        }
        let mut s = c["section"].clone();
        if let Some(o) = s.as_object_mut() {
            o.retain(|k, _| !k.ends_with("Selector"));
        }
        groups.entry(s.to_string()).or_default().push((i, c));
    }
    let mut secrets = Vec::new();
    let mut pairs = Vec::new();
    for (g, (section, cs)) in groups.iter().enumerate() {
        let label = format!("g{g}");
        let mut resources = Vec::new();
        let mut expected = Vec::new();
        for (i, c) in cs {
            let mut r = c["resource"].clone();
            let kind = r["kind"].as_str().unwrap().to_owned();
            let ns = r["metadata"]["namespace"].as_str().unwrap().to_owned();
            let old = r["metadata"]["name"].as_str().unwrap().to_owned();
            let new = format!("case-{i:02}");
            r["apiVersion"] = json!("monitoring.coreos.com/v1");
            r["metadata"]["name"] = json!(new);
            r["metadata"]["labels"] = json!({"case-group": label});
            let eps = if kind == "ServiceMonitor" {
                "endpoints"
            } else {
                "podMetricsEndpoints"
            };
            for ep in r["spec"][eps].as_array_mut().unwrap() {
                ep["proxyUrl"] = json!(proxy);
            }
            resources.push(r);
            let prefix = if kind == "ServiceMonitor" {
                "serviceMonitor"
            } else {
                "podMonitor"
            };
            for mut j in c["expected"].as_array().unwrap().clone() {
                rename(
                    &mut j,
                    &format!("{prefix}/{ns}/{old}/"),
                    &format!("{prefix}/{ns}/{new}/"),
                );
                if kind == "PodMonitor" {
                    for rc in j["relabel_configs"].as_array_mut().unwrap() {
                        if rc["replacement"] == json!(format!("{ns}/{old}")) {
                            rc["replacement"] = json!(format!("{ns}/{new}"));
                        }
                    }
                }
                with_api(&mut j, &api.addr, &proxy);
                expected.push(j);
            }
            for s in c["secrets"].as_array().into_iter().flatten() {
                let data: serde_json::Map<String, Value> = s["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let b =
                            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                        (k.clone(), json!(b))
                    })
                    .collect();
                secrets.push(
                    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": s["name"], "namespace": s["namespace"]}, "data": data}),
                );
            }
        }
        api.apply(resources);
        let mut sec: serde_json::Map<String, Value> = serde_json::from_str(section).unwrap();
        for k in ["serviceMonitor", "podMonitor"] {
            sec.insert(
                format!("{k}Selector"),
                json!({"matchLabels": {"case-group": label}}),
            );
            sec.insert(format!("{k}NamespaceSelector"), json!({}));
        }
        sec.insert("api_server".into(), json!(format!("http://{}", api.addr)));
        sec.insert("namespace".into(), json!("default"));
        let from_resources = format!(
            "global:\n  scrape_interval: 1h\n  scrape_timeout: 10s\nmonitoring_resources: {}\n",
            Value::Object(sec.clone())
        );
        let plain = format!(
            "global:\n  scrape_interval: 30s\nscrape_configs: {}\n",
            Value::Array(expected.clone())
        );
        // The role-selector cases ask for group=group1 and group in (group2) at once: the API server
        // answers nothing, so those jobs have no target at all.
        let empty = cs
            .iter()
            .filter(|(_, c)| c["resource"]["spec"]["selectorMechanism"] == "RoleSelector")
            .count();
        pairs.push((
            label,
            cs.len(),
            expected.len() - empty,
            from_resources,
            plain,
        ));
    }
    api.apply(secrets);

    let mut edges = Vec::new();
    for (label, ncases, njobs, a, b) in &pairs {
        let ea = Edge::start(dir.path(), &format!("{label}-resources"), a);
        let eb = Edge::start(dir.path(), &format!("{label}-plain"), b);
        edges.push((label.clone(), *ncases, *njobs, ea, eb));
    }
    let mut total_active = 0;
    for (label, ncases, njobs, ea, eb) in &edges {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (va, vb) = loop {
            let (va, vb) = (target_view(&ea.targets()), target_view(&eb.targets()));
            let pools = va.keys().filter(|k| k.contains('/')).count();
            if (va == vb && pools == *njobs) || Instant::now() > deadline {
                break (va, vb);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let differ: Vec<String> = va
            .keys()
            .chain(vb.keys())
            .filter(|k| va.get(*k) != vb.get(*k))
            .map(|k| {
                format!(
                    "{k}:\n  resources {:?}\n  yaml      {:?}",
                    va.get(k),
                    vb.get(k)
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "group {label}: the targets differ:\n{}\nedge log:\n{}",
            differ.join("\n"),
            ea.log()
        );
        assert_eq!(
            va.keys().filter(|k| k.contains('/')).count(),
            *njobs,
            "group {label}: {:?}",
            va.keys().collect::<Vec<_>>()
        );
        assert_eq!(va, vb);
        let active: usize = va.values().map(|v| v.0.len()).sum();
        total_active += active;
        println!("group {label}: {ncases} cases, {njobs} jobs, {active} active targets: equal");
    }
    assert!(total_active >= 20, "{total_active} active targets in all");

    // The effective configuration shows the generated jobs, secrets redacted.
    let (_, _, _, ea, _) = edges
        .iter()
        .find(|(_, n, ..)| *n > 30)
        .expect("the group without section settings");
    let cfg = http("GET", &ea.http, "/api/v1/status/config", &[], b"")
        .unwrap()
        .json();
    let yaml = cfg["data"]["yaml"].as_str().unwrap();
    assert!(yaml.contains("serviceMonitor/default/case-"), "{yaml}");
    assert!(
        yaml.contains("<secret>") && !yaml.contains("s3cr3t"),
        "{yaml}"
    );

    let label = ea_label(&edges, ea);
    changes_are_followed(&api, ea, &label, &proxy);
    rules_fire_like_a_file(&api, dir.path(), ea);
    let t = Instant::now();
    api.delete("ServiceMonitor", "default", "dynamic");
    wait_for("a ServiceMonitor deleted", Duration::from_secs(10), || {
        (!pools(ea).contains_key(DYNAMIC)).then_some(())
    });
    println!("a ServiceMonitor deleted: {:?}", t.elapsed());
}

const DYNAMIC: &str = "serviceMonitor/default/dynamic/0";

fn ea_label(edges: &[(String, usize, usize, Edge, Edge)], e: &Edge) -> String {
    edges
        .iter()
        .find(|(_, _, _, a, _)| a.http == e.http)
        .map(|(l, ..)| l.clone())
        .unwrap()
}

/// Active targets per pool.
fn pools(e: &Edge) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in e.targets()["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        *m.entry(a["scrapePool"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

/// The scrape URLs of a pool's active targets.
fn urls(e: &Edge, pool: &str) -> Vec<String> {
    e.targets()["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scrapePool"] == pool)
        .map(|a| a["scrapeUrl"].as_str().unwrap().to_owned())
        .collect()
}

/// Adding and changing a ServiceMonitor reaches the targets within seconds, without a restart; a
/// broken one is left out with a line naming it and the field, and the others keep working.
fn changes_are_followed(api: &Api, edge: &Edge, label: &str, proxy: &str) {
    let before = pools(edge);
    let sm = |port: &str| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "dynamic", "namespace": "default", "labels": {"case-group": label}},
            "spec": {"selector": {"matchLabels": {"app": "example-app"}},
                "endpoints": [{"port": port, "interval": "1s", "proxyUrl": proxy,
                    "relabelings": [{"targetLabel": "rules_test", "replacement": "yes"}]}]}})
    };
    let timed = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        wait_for(what, Duration::from_secs(10), || f().then_some(()));
        println!("{what}: {:?}", t.elapsed());
    };
    api.apply(vec![sm("web")]);
    timed("a ServiceMonitor added", &|| {
        let u = urls(edge, DYNAMIC);
        u.len() == 2 && u.iter().all(|u| u.contains(":8080/metrics"))
    });
    api.apply(vec![sm("https-metrics")]);
    timed("a ServiceMonitor changed", &|| {
        let u = urls(edge, DYNAMIC);
        u.len() == 2 && u.iter().all(|u| u.contains(":10250/metrics"))
    });
    // A broken resource: left out by name, with the field; every other pool stays.
    api.apply(vec![json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "broken", "namespace": "default", "labels": {"case-group": label}},
        "spec": {"selector": {"matchLabels": {"app": "example-app"}},
            "endpoints": [{"port": "web", "relabelings": [{"sourceLabels": ["x"], "regex": "(", "targetLabel": "y"}]}]}})]);
    let line = wait_for(
        "the broken resource named in the log",
        Duration::from_secs(10),
        || {
            edge.log()
                .lines()
                .find(|l| l.contains("ServiceMonitor default/broken skipped"))
                .map(str::to_owned)
        },
    );
    println!("{line}");
    assert!(
        line.contains("spec.endpoints[0].relabelings[0]") && line.contains("regex"),
        "{line}"
    );
    let now = pools(edge);
    assert!(
        !now.contains_key("serviceMonitor/default/broken/0"),
        "{now:?}"
    );
    for (k, n) in &before {
        assert_eq!(now.get(k), Some(n), "{k} after the broken resource");
    }
    api.delete("ServiceMonitor", "default", "broken");
}

/// The alert of a PrometheusRule (selected by the gateway's `--rule.monitoring-resources-file`) and the
/// same group in a rule file fire alike: the dynamic ServiceMonitor's targets are down (their scrapes
/// go to a closed port), so `up{rules_test="yes"} == 0` holds for both.
fn rules_fire_like_a_file(api: &Api, dir: &Path, edge: &Edge) {
    let group = json!({"name": "example-app", "interval": "1s", "rules": [{
        "alert": "ExampleAppDown", "expr": "up{rules_test=\"yes\"} == 0", "for": "2s",
        "labels": {"severity": "warning"},
        "annotations": {"summary": "{{ $labels.instance }} of example-app is down"}}]});
    let file = dir.join("rules.yml");
    std::fs::write(&file, json!({"groups": [group]}).to_string()).unwrap();
    let res = dir.join("rule-resources.yml");
    std::fs::write(
        &res,
        json!({"api_server": format!("http://{}", api.addr), "namespace": "default",
            "ruleSelector": {"matchLabels": {"team": "frontend"}}, "ruleNamespaceSelector": {}})
        .to_string(),
    )
    .unwrap();
    api.apply(vec![json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "example-app", "namespace": "default", "uid": "0f0e", "labels": {"team": "frontend"}},
        "spec": {"groups": [group]}})]);
    let http_addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let _gw = ChildGuard(
        Command::new(bin_dir().join("meridian-gateway"))
            .arg("query")
            .arg(format!("--http-address={http_addr}"))
            .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
            .arg(format!("--endpoint={}", edge.grpc))
            .arg(format!("--rule-file={}", file.display()))
            .arg(format!(
                "--rule.monitoring-resources-file={}",
                res.display()
            ))
            .arg(format!("--data-dir={}", dir.join("gw").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // (labels, annotations, state) of each firing alert, per group file.
    let alerts = || -> BTreeMap<String, Vec<String>> {
        let r = http("GET", &http_addr, "/api/v1/rules", &[], b"")
            .map(|r| r.json())
            .unwrap_or(Value::Null);
        let mut out = BTreeMap::new();
        for g in r["data"]["groups"].as_array().into_iter().flatten() {
            let mut v: Vec<String> = g["rules"][0]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["state"] == "firing")
                .map(|a| json!([a["labels"], a["annotations"]]).to_string())
                .collect();
            v.sort();
            out.insert(g["file"].as_str().unwrap_or("").to_owned(), v);
        }
        out
    };
    let t = Instant::now();
    let got = wait_for(
        "the alert firing from the file and from the PrometheusRule",
        Duration::from_secs(60),
        || {
            let a = alerts();
            let from_file = a.get(&file.display().to_string())?;
            let from_resource = a
                .iter()
                .find(|(k, _)| k.starts_with("default-example-app-0f0e"))?
                .1;
            (from_file.len() == 2 && from_file == from_resource).then(|| a.clone())
        },
    );
    println!(
        "the alert fires alike from both after {:?}: {got:?}",
        t.elapsed()
    );
    let any = got.values().next().unwrap();
    assert!(any[0].contains("ExampleAppDown") && any[0].contains("of example-app is down"));
}
