//! The `endpoints` and `endpointslice` roles, as Prometheus 2.42 builds them
//! (`discovery/kubernetes/endpoints.go`, `endpointslice.go` at v2.42.0): one target per (port, address),
//! with the Service's labels on the group, the Pod's labels on targets that point at a Pod, the matching
//! container port's labels, and one extra target per container port of a seen Pod that no endpoint port
//! covered.

use k8s_openapi::api::core::v1::{Endpoints, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::render::{
    Set, containers, labels, namespace, node_meta, object_meta, pod_ip, pod_labels, put, sanitize,
    service_labels,
};
use meridian_core::net::dns::join_host_port;
use meridian_core::targetgroup::TargetGroup;

/// Lookups a render needs from the other informers.
pub(super) trait Lookup {
    fn pod(&self, ns: &str, name: &str) -> Option<std::sync::Arc<Pod>>;
    fn service(&self, ns: &str, name: &str) -> Option<std::sync::Arc<Service>>;
    /// `None` when node metadata is not attached; `Some(None)` for an unknown node.
    fn node(&self, name: &str) -> Option<Option<std::sync::Arc<Node>>>;
}

/// A Pod an endpoint pointed at, and the endpoint ports seen for it.
struct SeenPod {
    pod: std::sync::Arc<Pod>,
    ports: Vec<i32>,
}

fn seen_index(seen: &mut Vec<SeenPod>, pod: std::sync::Arc<Pod>) -> usize {
    let key = (
        namespace(&pod.metadata).to_owned(),
        pod.metadata.name.clone(),
    );
    match seen
        .iter()
        .position(|s| namespace(&s.pod.metadata) == key.0 && s.pod.metadata.name == key.1)
    {
        Some(i) => i,
        None => {
            seen.push(SeenPod {
                pod,
                ports: Vec::new(),
            });
            seen.len() - 1
        }
    }
}

/// Labels of the first container port whose number equals the endpoint port (`protocol` is the
/// endpoint port's for the endpoints role, the container port's for endpointslices).
fn container_port_labels(t: &mut Set, pod: &Pod, port: i32, protocol: Option<&str>) {
    for c in containers(pod) {
        if let Some(cp) = c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.container_port == port)
        {
            put(t, "pod_container_name", &c.name);
            put(t, "pod_container_image", c.image.as_deref().unwrap_or(""));
            put(
                t,
                "pod_container_port_name",
                cp.name.as_deref().unwrap_or(""),
            );
            put(t, "pod_container_port_number", &port.to_string());
            put(
                t,
                "pod_container_port_protocol",
                protocol.or(cp.protocol.as_deref()).unwrap_or(""),
            );
            return;
        }
    }
}

/// Targets for the container ports of seen Pods that no endpoint port covered.
fn uncovered_ports(seen: &[SeenPod], targets: &mut Vec<meridian_core::labels::Labels>) {
    for s in seen {
        for c in containers(&s.pod) {
            for cp in c.ports.iter().flatten() {
                if s.ports.contains(&cp.container_port) {
                    continue;
                }
                let port = cp.container_port.to_string();
                let mut t: Set = vec![(
                    "__address__".into(),
                    join_host_port(
                        pod_ip(&s.pod),
                        u16::try_from(cp.container_port).unwrap_or(0),
                    ),
                )];
                put(&mut t, "pod_container_name", &c.name);
                put(
                    &mut t,
                    "pod_container_image",
                    c.image.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    "pod_container_port_name",
                    cp.name.as_deref().unwrap_or(""),
                );
                put(&mut t, "pod_container_port_number", &port);
                put(
                    &mut t,
                    "pod_container_port_protocol",
                    cp.protocol.as_deref().unwrap_or(""),
                );
                pod_labels(&mut t, &s.pod);
                targets.push(labels(&t));
            }
        }
    }
}

/// Pod labels merged under the target's: Go's `target.Merge(podLabels(pod))` lets the pod's win.
fn merge_pod(t: &mut Set, pod: &Pod) {
    pod_labels(t, pod);
}

fn attach_node(t: &mut Set, lookup: &dyn Lookup, node_name: Option<&str>) {
    if let Some(n) = node_name
        && let Some(node) = lookup.node(n)
    {
        node_meta(t, n, node.as_deref());
    }
}

/// Prometheus' `resolvePodRef` and what follows it: when the address points at a known Pod, the
/// Pod's labels and the labels of the container port matching `port` go on the target, and the Pod is
/// remembered with the port (for [`uncovered_ports`]).
fn attach_pod(
    t: &mut Set,
    lookup: &dyn Lookup,
    target_ref: Option<&ObjectReference>,
    port: Option<i32>,
    protocol: Option<&str>,
    seen: &mut Vec<SeenPod>,
) {
    let Some(pod) = target_ref
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| {
            lookup.pod(
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
            )
        })
    else {
        return;
    };
    let i = seen_index(seen, pod.clone());
    merge_pod(t, &pod);
    if let Some(p) = port {
        container_port_labels(t, &pod, p, protocol);
        seen[i].ports.push(p);
    }
}

pub(super) fn endpoints_group(eps: &Endpoints, lookup: &dyn Lookup) -> TargetGroup {
    let ns = namespace(&eps.metadata);
    let name = eps.metadata.name.as_deref().unwrap_or("");
    let mut g: Set = Vec::new();
    put(&mut g, "namespace", ns);
    put(&mut g, "endpoints_name", name);
    if let Some(svc) = lookup.service(ns, name) {
        service_labels(&mut g, &svc);
    }
    object_meta(&mut g, "endpoints", &eps.metadata, false);
    let mut seen: Vec<SeenPod> = Vec::new();
    let mut targets = Vec::new();
    for ss in eps.subsets.iter().flatten() {
        for port in ss.ports.iter().flatten() {
            let ready = ss.addresses.iter().flatten().map(|a| (a, "true"));
            let not_ready = ss
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, "false"));
            for (addr, ready) in ready.chain(not_ready) {
                let mut t: Set = vec![(
                    "__address__".into(),
                    join_host_port(&addr.ip, u16::try_from(port.port).unwrap_or(0)),
                )];
                put(
                    &mut t,
                    "endpoint_port_name",
                    port.name.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    "endpoint_port_protocol",
                    port.protocol.as_deref().unwrap_or(""),
                );
                put(&mut t, "endpoint_ready", ready);
                if let Some(r) = &addr.target_ref {
                    put(
                        &mut t,
                        "endpoint_address_target_kind",
                        r.kind.as_deref().unwrap_or(""),
                    );
                    put(
                        &mut t,
                        "endpoint_address_target_name",
                        r.name.as_deref().unwrap_or(""),
                    );
                }
                if let Some(n) = &addr.node_name {
                    put(&mut t, "endpoint_node_name", n);
                }
                if let Some(h) = addr.hostname.as_deref().filter(|h| !h.is_empty()) {
                    put(&mut t, "endpoint_hostname", h);
                }
                let node_ref = addr.node_name.as_deref().or_else(|| {
                    addr.target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Node"))
                        .and_then(|r| r.name.as_deref())
                });
                attach_node(&mut t, lookup, node_ref);
                attach_pod(
                    &mut t,
                    lookup,
                    addr.target_ref.as_ref(),
                    Some(port.port),
                    port.protocol.as_deref(),
                    &mut seen,
                );
                targets.push(labels(&t));
            }
        }
    }
    uncovered_ports(&seen, &mut targets);
    TargetGroup {
        source: format!("endpoints/{ns}/{name}"),
        targets,
        labels: labels(&g),
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub(super) fn slice_service_name(s: &EndpointSlice) -> Option<&str> {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .map(String::as_str)
}

pub(super) fn endpointslice_group(s: &EndpointSlice, lookup: &dyn Lookup) -> TargetGroup {
    let ns = namespace(&s.metadata);
    let name = s.metadata.name.as_deref().unwrap_or("");
    let mut g: Set = Vec::new();
    put(&mut g, "namespace", ns);
    put(&mut g, "endpointslice_name", name);
    put(&mut g, "endpointslice_address_type", &s.address_type);
    if let Some(svc_name) = slice_service_name(s)
        && let Some(svc) = lookup.service(ns, svc_name)
    {
        service_labels(&mut g, &svc);
    }
    let mut seen: Vec<SeenPod> = Vec::new();
    let mut targets = Vec::new();
    let ports = s.ports.as_deref().unwrap_or(&[]);
    for ep in &s.endpoints {
        for port in ports {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            let addr = match port.port {
                Some(p) => join_host_port(first, u16::try_from(p).unwrap_or(0)),
                None => first.clone(),
            };
            let mut t: Set = vec![("__address__".into(), addr)];
            if let Some(n) = &port.name {
                put(&mut t, "endpointslice_port_name", n);
            }
            if let Some(p) = &port.protocol {
                put(&mut t, "endpointslice_port_protocol", p);
            }
            if let Some(p) = port.port {
                put(&mut t, "endpointslice_port", &p.to_string());
            }
            if let Some(p) = &port.app_protocol {
                put(&mut t, "endpointslice_port_app_protocol", p);
            }
            if let Some(c) = &ep.conditions {
                for (label, v) in [
                    ("ready", c.ready),
                    ("serving", c.serving),
                    ("terminating", c.terminating),
                ] {
                    if let Some(v) = v {
                        put(
                            &mut t,
                            &format!("endpointslice_endpoint_conditions_{label}"),
                            if v { "true" } else { "false" },
                        );
                    }
                }
            }
            if let Some(h) = &ep.hostname {
                put(&mut t, "endpointslice_endpoint_hostname", h);
            }
            if let Some(r) = &ep.target_ref {
                put(
                    &mut t,
                    "endpointslice_address_target_kind",
                    r.kind.as_deref().unwrap_or(""),
                );
                put(
                    &mut t,
                    "endpointslice_address_target_name",
                    r.name.as_deref().unwrap_or(""),
                );
            }
            for (k, v) in ep.deprecated_topology.iter().flatten() {
                let n = sanitize(k);
                put(&mut t, &format!("endpointslice_endpoint_topology_{n}"), v);
                put(
                    &mut t,
                    &format!("endpointslice_endpoint_topology_present_{n}"),
                    "true",
                );
            }
            let node_ref = match &ep.target_ref {
                Some(r) if r.kind.as_deref() == Some("Node") => r.name.as_deref(),
                _ => ep.node_name.as_deref(),
            };
            attach_node(&mut t, lookup, node_ref);
            attach_pod(
                &mut t,
                lookup,
                ep.target_ref.as_ref(),
                port.port,
                None,
                &mut seen,
            );
            targets.push(labels(&t));
        }
    }
    uncovered_ports(&seen, &mut targets);
    TargetGroup {
        source: format!("endpointslice/{ns}/{name}"),
        targets,
        labels: labels(&g),
    }
}

/// The nodes an Endpoints object's ready addresses run on (Prometheus' node index for the role).
pub(super) fn endpoints_nodes(eps: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for ss in eps.subsets.iter().flatten() {
        for a in ss.addresses.iter().flatten() {
            match a.target_ref.as_ref().and_then(|r| r.kind.as_deref()) {
                Some("Pod") => out.extend(a.node_name.clone()),
                Some("Node") => out.extend(a.target_ref.as_ref().and_then(|r| r.name.clone())),
                _ => {}
            }
        }
    }
    out
}

/// The nodes an EndpointSlice's endpoints run on.
pub(super) fn endpointslice_nodes(s: &EndpointSlice) -> Vec<String> {
    let mut out = Vec::new();
    for ep in &s.endpoints {
        match ep.target_ref.as_ref().and_then(|r| r.kind.as_deref()) {
            Some("Pod") => out.extend(ep.node_name.clone()),
            Some("Node") => out.extend(ep.target_ref.as_ref().and_then(|r| r.name.clone())),
            _ => {}
        }
    }
    out
}
