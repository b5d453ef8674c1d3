//! `kubernetes_sd_configs` judged against Prometheus 2.42's own discovery: the harness in
//! `../shared/conformance/kubernetes-sd` runs the edge against a stand-in Kubernetes API (11 jobs, 8
//! changes, 9 states) and compares `/api/v1/targets` with the recorded oracle, in a private network
//! namespace where `unshare` works and with every scrape sent to a closed proxy (`proxy_url`), so no
//! fixture address is ever contacted. Then every request the edge made of the API is checked against the
//! ClusterRole that `deploy/kubernetes` grants it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_testkit::{in_ci, require};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// What RBAC sees in a request: (verb, API group, resource[/subresource]), or a non-resource URL.
#[derive(Debug, PartialEq)]
enum Access {
    Resource {
        verb: String,
        group: String,
        resource: String,
    },
    NonResource(String),
}

/// Kubernetes' request-info rules for a GET (`k8s.io/apiserver/pkg/endpoints/request`).
fn access(path: &str, watch: bool) -> Access {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", g, _v, rest @ ..] => ((*g).to_owned(), rest),
        _ => return Access::NonResource(path.to_owned()),
    };
    // Legacy watch paths: /api/v1/watch/...
    let (watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (watch, r),
    };
    let rest = match rest {
        ["namespaces", _ns, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    let (resource, named) = match rest {
        [res] => ((*res).to_owned(), false),
        [res, _name] => ((*res).to_owned(), true),
        [res, _name, sub, ..] => (format!("{res}/{sub}"), true),
        _ => return Access::NonResource(path.to_owned()),
    };
    let verb = match (watch, named) {
        (true, _) => "watch",
        (false, true) => "get",
        (false, false) => "list",
    };
    Access::Resource {
        verb: verb.into(),
        group,
        resource,
    }
}

fn has(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|v| v == item || v == "*"))
}

fn allowed(rules: &[Value], a: &Access) -> bool {
    rules.iter().any(|r| match a {
        Access::Resource {
            verb,
            group,
            resource,
        } => {
            has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
        }
        Access::NonResource(url) => has(&r["nonResourceURLs"], url) && has(&r["verbs"], "get"),
    })
}

fn cluster_role_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/base/edge.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("deploy/kubernetes/base/edge.yaml has a ClusterRole")["rules"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn request_info_and_rules() {
    let rules = cluster_role_rules();
    let a = access("/api/v1/namespaces/demo/pods", true);
    assert_eq!(
        a,
        Access::Resource {
            verb: "watch".into(),
            group: String::new(),
            resource: "pods".into()
        }
    );
    assert!(allowed(&rules, &a));
    let proxy = access("/api/v1/nodes/n1/proxy/metrics/cadvisor", false);
    assert!(allowed(&rules, &proxy), "{proxy:?}");
    assert!(allowed(
        &rules,
        &access("/apis/networking.k8s.io/v1/ingresses", false)
    ));
    // What the edge must not be able to do.
    assert!(!allowed(&rules, &access("/api/v1/secrets", false)));
    assert!(!allowed(
        &rules,
        &access("/api/v1/namespaces/demo/configmaps", true)
    ));
}

#[test]
fn kubernetes_sd_matches_prometheus_2_42_within_its_cluster_role() {
    if require("python3", "apt-get install python3").is_none() {
        return;
    }
    let harness = repo().join("../shared/conformance/kubernetes-sd");
    let harness = std::env::var_os("MERIDIAN_K8S_SD_HARNESS")
        .map(PathBuf::from)
        .unwrap_or(harness);
    if !harness.join("compare.py").exists() {
        let msg = format!(
            "the kubernetes-sd harness is not at {} (set MERIDIAN_K8S_SD_HARNESS)",
            harness.display()
        );
        assert!(!in_ci(), "CI=true: {msg}");
        println!("{msg}; not run");
        return;
    }
    let edge = bin_dir().join("meridian-edge");
    assert!(edge.exists(), "{} is not built", edge.display());
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("run.json");
    let out = Command::new("python3")
        .current_dir(&harness)
        .arg("compare.py")
        .arg("check")
        .arg("oracle-2.42.json")
        .arg("--quiet-pass")
        .arg("--save")
        .arg(&saved)
        .arg("--target-cmd")
        .arg(format!(
            "{} run --config.file {{config}} --http-address 127.0.0.1:{{port}} --tsdb.path {{tmpdir}}/tsdb",
            edge.display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        stdout.contains("k8s sd: 99 passed, 0 failed") && out.status.success(),
        "the edge's targets differ from Prometheus 2.42's (see above)"
    );

    // Every request the stand-in saw is one the ClusterRole allows.
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let rules = cluster_role_rules();
    let requests = run["requests"].as_array().unwrap();
    assert!(requests.len() >= 10, "{requests:?}");
    // One list per (resource, namespace, selectors), whatever number of jobs ask for it: the 11 jobs
    // make 12 lists (Prometheus 2.42 makes 18). A list repeated would show informers that are not
    // shared (or a relist the scenario never asks for).
    let lists: Vec<&Value> = requests
        .iter()
        .filter(|r| r["params"]["watch"] != "true")
        .collect();
    assert!(!lists.is_empty());
    for l in &lists {
        assert_eq!(l["count"], 1, "listed more than once: {l}");
    }
    for r in requests {
        let path = r["path"].as_str().unwrap();
        let watch = r["params"]["watch"] == "true";
        let a = access(path, watch);
        assert!(
            allowed(&rules, &a),
            "the ClusterRole does not allow {a:?} ({path}, {})",
            r["params"]
        );
        assert_eq!(r["method"], "GET", "{r}");
    }
}
