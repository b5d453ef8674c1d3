//! Objects to target groups, label for label as Prometheus 2.42 builds them
//! (`discovery/kubernetes/{pod,service,node,ingress}.go` at v2.42.0). Each function is a pure
//! function of the objects it is given, so re-rendering a group is always safe.
//!
//! Empty values are kept here (Prometheus sets them too); they disappear when the target's label set
//! is built, as in Prometheus' `labels.Builder`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Node, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::Role;
use meridian_core::labels::Labels;
use meridian_core::net::dns::join_host_port;
use meridian_core::targetgroup::TargetGroup;

pub(super) const META: &str = "__meta_kubernetes_";

/// A label set under construction (later values of a name win).
pub(super) type Set = Vec<(String, String)>;

pub(super) fn put(set: &mut Set, name: &str, value: &str) {
    set.push((format!("{META}{name}"), value.to_owned()));
}

pub(super) fn labels(set: &Set) -> Labels {
    Labels::from_pairs(set.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

pub(super) use meridian_kube::sanitize_label_name as sanitize;

/// `<role>_label_<name>`, `<role>_labelpresent_<name>` and the annotation twins.
pub(super) fn object_meta(set: &mut Set, role: &str, meta: &ObjectMeta, annotations: bool) {
    for (prefix, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        if prefix == "annotation" && !annotations {
            continue;
        }
        for (k, v) in map.iter().flatten() {
            let n = sanitize(k);
            put(set, &format!("{role}_{prefix}_{n}"), v);
            put(set, &format!("{role}_{prefix}present_{n}"), "true");
        }
    }
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

pub(super) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

// ------------------------------------------------------------------------------------------- node

/// Prometheus' `nodeAddress`: the first address in the order InternalIP, InternalDNS, ExternalIP,
/// ExternalDNS, LegacyHostIP, Hostname; and the first address of every type.
fn node_address(node: &Node) -> Option<(String, BTreeMap<String, String>)> {
    let mut by_type: BTreeMap<String, String> = BTreeMap::new();
    for a in node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
    {
        by_type
            .entry(a.type_.clone())
            .or_insert_with(|| a.address.clone());
    }
    [
        "InternalIP",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
        "LegacyHostIP",
        "Hostname",
    ]
    .iter()
    .find_map(|t| by_type.get(*t).cloned())
    .map(|a| (a, by_type))
}

pub(super) fn node_source(name: &str) -> String {
    format!("node/{name}")
}

/// The node role's group; `None` when the node has no address (Prometheus logs and skips it).
pub(super) fn node_group(node: &Node) -> Option<TargetGroup> {
    let n = name(&node.metadata);
    let mut g: Set = Vec::new();
    put(&mut g, "node_name", n);
    put(
        &mut g,
        "node_provider_id",
        node.spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .unwrap_or(""),
    );
    object_meta(&mut g, "node", &node.metadata, true);
    let (addr, by_type) = node_address(node)?;
    let port = node
        .status
        .as_ref()
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(0, |k| k.port);
    let port = u16::try_from(port).unwrap_or(0);
    let mut t: Set = vec![
        ("__address__".into(), join_host_port(&addr, port)),
        ("instance".into(), n.to_owned()),
    ];
    for (ty, a) in &by_type {
        t.push((sanitize(&format!("{META}node_address_{ty}")), a.clone()));
    }
    Some(TargetGroup {
        source: node_source(n),
        targets: vec![labels(&t)],
        labels: labels(&g),
    })
}

/// `attach_metadata: {node: true}`: the node's name and labels (Prometheus' `addNodeLabels`); nothing
/// when the node is unknown.
pub(super) fn node_meta(set: &mut Set, node_name: &str, node: Option<&Node>) {
    let Some(node) = node else { return };
    put(set, "node_name", node_name);
    for (k, v) in node.metadata.labels.iter().flatten() {
        let n = sanitize(k);
        put(set, &format!("node_label_{n}"), v);
        put(set, &format!("node_labelpresent_{n}"), "true");
    }
}

// -------------------------------------------------------------------------------------------- pod

pub(super) fn pod_source(pod: &Pod) -> String {
    format!("pod/{}/{}", namespace(&pod.metadata), name(&pod.metadata))
}

pub(super) fn pod_ip(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or("")
}

/// `true`/`false` from the Ready condition (lower-cased), `unknown` without one.
fn pod_ready(pod: &Pod) -> String {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .map_or_else(|| "unknown".into(), |c| c.status.to_lowercase())
}

/// Prometheus' `podLabels`.
pub(super) fn pod_labels(set: &mut Set, pod: &Pod) {
    let st = pod.status.as_ref();
    put(set, "pod_name", name(&pod.metadata));
    put(set, "pod_ip", pod_ip(pod));
    put(set, "pod_ready", &pod_ready(pod));
    put(
        set,
        "pod_phase",
        st.and_then(|s| s.phase.as_deref()).unwrap_or(""),
    );
    put(set, "pod_node_name", pod_node_name(pod));
    put(
        set,
        "pod_host_ip",
        st.and_then(|s| s.host_ip.as_deref()).unwrap_or(""),
    );
    put(set, "pod_uid", pod.metadata.uid.as_deref().unwrap_or(""));
    if let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if !owner.kind.is_empty() {
            put(set, "pod_controller_kind", &owner.kind);
        }
        if !owner.name.is_empty() {
            put(set, "pod_controller_name", &owner.name);
        }
    }
    object_meta(set, "pod", &pod.metadata, true);
}

pub(super) fn pod_node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

pub(super) fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

fn container_id<'a>(name: &str, statuses: Option<&'a Vec<ContainerStatus>>) -> &'a str {
    statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == name)
        .and_then(|s| s.container_id.as_deref())
        .unwrap_or("")
}

/// The pod role's group: one target per container port, one per container without ports (init
/// containers included, marked); no targets while the pod has no IP.
pub(super) fn pod_group(pod: &Pod, node: Option<(&str, Option<&Node>)>) -> TargetGroup {
    let source = pod_source(pod);
    let ip = pod_ip(pod);
    if ip.is_empty() {
        return TargetGroup {
            source,
            targets: Vec::new(),
            labels: Labels::empty(),
        };
    }
    let mut g: Set = Vec::new();
    pod_labels(&mut g, pod);
    put(&mut g, "namespace", namespace(&pod.metadata));
    if let Some((node_name, node)) = node {
        node_meta(&mut g, node_name, node);
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let mut targets = Vec::new();
    let all = containers(pod)
        .iter()
        .map(|c| (c, false))
        .chain(init.iter().map(|c| (c, true)));
    for (c, is_init) in all {
        let statuses = if is_init {
            status.and_then(|s| s.init_container_statuses.as_ref())
        } else {
            status.and_then(|s| s.container_statuses.as_ref())
        };
        let mut base: Set = Vec::new();
        put(&mut base, "pod_container_name", &c.name);
        put(
            &mut base,
            "pod_container_id",
            container_id(&c.name, statuses),
        );
        put(
            &mut base,
            "pod_container_image",
            c.image.as_deref().unwrap_or(""),
        );
        put(
            &mut base,
            "pod_container_init",
            if is_init { "true" } else { "false" },
        );
        let ports = c.ports.as_deref().unwrap_or(&[]);
        if ports.is_empty() {
            let mut t = base;
            t.push(("__address__".into(), ip.to_owned()));
            targets.push(labels(&t));
            continue;
        }
        for p in ports {
            let mut t = base.clone();
            let port = u16::try_from(p.container_port).unwrap_or(0);
            t.push(("__address__".into(), join_host_port(ip, port)));
            put(
                &mut t,
                "pod_container_port_number",
                &p.container_port.to_string(),
            );
            put(
                &mut t,
                "pod_container_port_name",
                p.name.as_deref().unwrap_or(""),
            );
            put(
                &mut t,
                "pod_container_port_protocol",
                p.protocol.as_deref().unwrap_or(""),
            );
            targets.push(labels(&t));
        }
    }
    TargetGroup {
        source,
        targets,
        labels: labels(&g),
    }
}

// ---------------------------------------------------------------------------------------- service

/// Prometheus' `serviceLabels`: name, namespace, labels and annotations.
pub(super) fn service_labels(set: &mut Set, svc: &Service) {
    put(set, "service_name", name(&svc.metadata));
    put(set, "namespace", namespace(&svc.metadata));
    object_meta(set, "service", &svc.metadata, true);
}

pub(super) fn service_group(svc: &Service) -> TargetGroup {
    let mut g: Set = Vec::new();
    service_labels(&mut g, svc);
    let n = name(&svc.metadata);
    let ns = namespace(&svc.metadata);
    let spec = svc.spec.as_ref();
    let ty = spec.and_then(|s| s.type_.as_deref()).unwrap_or("");
    let mut targets = Vec::new();
    for p in spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]) {
        let port = p.port.to_string();
        let mut t: Set = vec![(
            "__address__".into(),
            join_host_port(&format!("{n}.{ns}.svc"), u16::try_from(p.port).unwrap_or(0)),
        )];
        put(&mut t, "service_port_name", p.name.as_deref().unwrap_or(""));
        put(&mut t, "service_port_number", &port);
        put(
            &mut t,
            "service_port_protocol",
            p.protocol.as_deref().unwrap_or(""),
        );
        put(&mut t, "service_type", ty);
        if ty == "ExternalName" {
            put(
                &mut t,
                "service_external_name",
                spec.and_then(|s| s.external_name.as_deref()).unwrap_or(""),
            );
        } else {
            put(
                &mut t,
                "service_cluster_ip",
                spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or(""),
            );
        }
        if ty == "LoadBalancer" {
            put(
                &mut t,
                "service_loadbalancer_ip",
                spec.and_then(|s| s.load_balancer_ip.as_deref())
                    .unwrap_or(""),
            );
        }
        targets.push(labels(&t));
    }
    TargetGroup {
        source: format!("svc/{ns}/{n}"),
        targets,
        labels: labels(&g),
    }
}

// ---------------------------------------------------------------------------------------- ingress

/// Prometheus' `matchesHostnamePattern`: equal, or `*.rest` matching one leading label.
fn matches_host_pattern(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.first() == Some(&"*") && p.len() == h.len() && p[1..] == h[1..]
}

pub(super) fn ingress_group(ing: &Ingress) -> TargetGroup {
    let mut g: Set = Vec::new();
    put(&mut g, "ingress_name", name(&ing.metadata));
    put(&mut g, "namespace", namespace(&ing.metadata));
    let spec = ing.spec.as_ref();
    if let Some(cls) = spec.and_then(|s| s.ingress_class_name.as_deref()) {
        put(&mut g, "ingress_class_name", cls);
    }
    object_meta(&mut g, "ingress", &ing.metadata, true);
    let tls_hosts: Vec<&str> = spec
        .and_then(|s| s.tls.as_deref())
        .unwrap_or(&[])
        .iter()
        .flat_map(|t| t.hosts.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut targets = Vec::new();
    for rule in spec.and_then(|s| s.rules.as_deref()).unwrap_or(&[]) {
        let host = rule.host.as_deref().unwrap_or("");
        let scheme = if tls_hosts.iter().any(|p| matches_host_pattern(p, host)) {
            "https"
        } else {
            "http"
        };
        // No `http` section: one path, "/"; an empty path is "/".
        let paths: Vec<&str> = match &rule.http {
            None => vec!["/"],
            Some(h) => h
                .paths
                .iter()
                .map(|p| match p.path.as_deref() {
                    None | Some("") => "/",
                    Some(x) => x,
                })
                .collect(),
        };
        for path in paths {
            let mut t: Set = vec![("__address__".into(), host.to_owned())];
            put(&mut t, "ingress_scheme", scheme);
            put(&mut t, "ingress_host", host);
            put(&mut t, "ingress_path", path);
            targets.push(labels(&t));
        }
    }
    TargetGroup {
        source: format!(
            "ingress/{}/{}",
            namespace(&ing.metadata),
            name(&ing.metadata)
        ),
        targets,
        labels: labels(&g),
    }
}

/// The group source of a role's object key (`ns/name` or `name`).
pub(super) fn source_of(role: Role, key: &str) -> String {
    match role {
        Role::Pod => format!("pod/{key}"),
        Role::Service => format!("svc/{key}"),
        Role::Endpoints => format!("endpoints/{key}"),
        Role::EndpointSlice => format!("endpointslice/{key}"),
        Role::Node => node_source(key),
        Role::Ingress => format!("ingress/{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(matches_host_pattern("a.b", "a.b"));
        assert!(matches_host_pattern("*.example.com", "web.example.com"));
        assert!(!matches_host_pattern("*.example.com", "a.web.example.com"));
        assert!(!matches_host_pattern("web.*.com", "web.example.com"));
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize("é-x"), "__x");
    }
}
