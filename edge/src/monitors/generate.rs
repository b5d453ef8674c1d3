//! A `ServiceMonitor` endpoint or a `PodMonitor` podMetricsEndpoint as the scrape job prometheus-operator
//! generates for it (`pkg/prometheus/promcfg.go`, `generateServiceMonitorConfig` and
//! `generatePodMonitorConfig`, v0.93.0), key for key and relabeling for relabeling in the operator's
//! order, for the newest Prometheus (every version-gated key is written).
//!
//! Three things differ from the operator's output, on purpose:
//! - `$(SHARD)` in the sharding relabelings is `0`: the edge is one shard (the operator's
//!   config-reloader substitutes it from the pod's ordinal);
//! - TLS material from Secrets and ConfigMaps is written under the edge's own directory, named as the
//!   operator names it under `/etc/prometheus/certs` (`<0|1>_<namespace>_<name>_<key>`);
//! - the API client of the `monitoring_resources` section is written into each
//!   `kubernetes_sd_configs` entry, as the operator writes the `Prometheus` resource's `apiserverConfig`.
//!
//! Secret values (bearer tokens, authorization credentials, basic-auth users and passwords) are inlined,
//! as the operator does; `/api/v1/status/config` shows them as `<secret>`.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use super::assets::{AssetStore, Assets};
use super::assets::{Gen, api_client};
use super::check::check_endpoint;
pub use super::yaml::Node;
use super::yaml::{MapBuilder, map, s, strs};
use meridian_kube::monitoring::{
    Endpoint, NamespaceSelector, PodMonitor, RelabelConfig, ServiceMonitor,
};
use meridian_kube::resources::MonitoringResources;
use meridian_kube::sanitize_label_name as sanitize;

/// What the generator needs besides the monitor.
#[allow(missing_debug_implementations)]
pub struct Context<'a> {
    pub cfg: &'a MonitoringResources,
    pub assets: &'a (dyn Assets + Sync),
    /// Where TLS material is written (the operator's `/etc/prometheus/certs`).
    pub cert_dir: &'a Path,
}

/// One monitor's jobs and the files they need.
#[derive(Debug, Default)]
pub struct Generated {
    pub jobs: Vec<Node>,
    /// TLS files to write before the jobs are used.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// The kind of monitor being generated.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Service,
    Pod,
}

impl Kind {
    fn meta(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Pod => "pod",
        }
    }
}

/// The operator's `getNamespacesFromNamespaceSelector`: empty means every namespace.
fn sd_namespaces(cfg: &MonitoringResources, sel: &NamespaceSelector, own: &str) -> Vec<String> {
    if cfg.ignore_namespace_selectors {
        vec![own.to_owned()]
    } else if sel.any {
        Vec::new()
    } else if sel.match_names.is_empty() {
        vec![own.to_owned()]
    } else {
        sel.match_names.clone()
    }
}

/// apimachinery's `LabelSelectorAsSelector(…).String()`: requirements sorted by key (stably), set
/// values sorted.
fn selector_string(sel: &LabelSelector) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for e in sel.match_expressions.iter().flatten() {
        let mut vals = e.values.clone().unwrap_or_default();
        vals.sort();
        vals.dedup();
        let k = &e.key;
        let r = match e.operator.as_str() {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            _ => continue,
        };
        reqs.push((k.clone(), r));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// `selectorMechanism`: `RelabelConfig` (the default: keep/drop relabelings) or `RoleSelector`
/// (`selectors` in the SD config, filtered by the API server).
fn role_selector(mechanism: Option<&str>) -> Result<bool, String> {
    match mechanism {
        None | Some("RelabelConfig") => Ok(false),
        Some("RoleSelector") => Ok(true),
        Some(other) => Err(format!(
            "spec.selectorMechanism: {other:?} is not one of RelabelConfig, RoleSelector"
        )),
    }
}

fn sd_config(
    cfg: &MonitoringResources,
    role: &str,
    namespaces: Vec<String>,
    attach_node: Option<bool>,
    selectors: Option<(Vec<&str>, String)>,
) -> Node {
    let mut m = MapBuilder::default();
    m.put("role", s(role));
    if !namespaces.is_empty() {
        m.put(
            "namespaces",
            map([(
                "names",
                Node::Seq(namespaces.iter().map(|n| s(n)).collect()),
            )]),
        );
    }
    api_client(cfg, &mut m);
    if let Some(node) = attach_node {
        m.put("attach_metadata", map([("node", Node::Bool(node))]));
    }
    if let Some((roles, label)) = selectors {
        m.put(
            "selectors",
            Node::Seq(
                roles
                    .iter()
                    .map(|r| map([("role", s(r)), ("label", Node::Str(label.clone()))]))
                    .collect(),
            ),
        );
    }
    Node::Seq(vec![m.done()])
}

/// The keep/drop relabelings of a selector on `__meta_kubernetes_<kind>_label_*`.
fn selector_relabelings(sel: &LabelSelector, kind: Kind, out: &mut Vec<Node>) {
    let label = |k: &str| format!("__meta_kubernetes_{}_label_{}", kind.meta(), sanitize(k));
    let present = |k: &str| {
        format!(
            "__meta_kubernetes_{}_labelpresent_{}",
            kind.meta(),
            sanitize(k)
        )
    };
    // matchLabels in key order (a BTreeMap), as the operator sorts them.
    for (k, v) in sel.match_labels.iter().flatten() {
        out.push(map([
            ("action", s("keep")),
            ("source_labels", strs(&[&label(k), &present(k)])),
            ("regex", Node::Str(format!("({v});true"))),
        ]));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join("|");
        let (action, sources, regex) = match e.operator.as_str() {
            "In" => (
                "keep",
                vec![label(&e.key), present(&e.key)],
                format!("({values});true"),
            ),
            "NotIn" => (
                "drop",
                vec![label(&e.key), present(&e.key)],
                format!("({values});true"),
            ),
            "Exists" => ("keep", vec![present(&e.key)], "true".to_owned()),
            "DoesNotExist" => ("drop", vec![present(&e.key)], "true".to_owned()),
            _ => continue,
        };
        out.push(map([
            ("action", s(action)),
            (
                "source_labels",
                Node::Seq(sources.into_iter().map(Node::Str).collect()),
            ),
            ("regex", Node::Str(regex)),
        ]));
    }
}

fn copy_rule(source: &str, target: &str) -> Node {
    map([
        ("source_labels", strs(&[source])),
        ("target_label", s(target)),
    ])
}

/// `source` → `target` when not empty (`regex: (.+)`), the operator's target-label rule.
fn label_rule(source: &str, target: &str) -> Node {
    map([
        ("source_labels", strs(&[source])),
        ("target_label", s(target)),
        ("regex", s("(.+)")),
        ("replacement", s("${1}")),
    ])
}

/// The operator's `generateRelabelConfig`: keys only when set, the action lowercased.
pub(super) fn user_relabelings(rc: &[RelabelConfig], out: &mut Vec<Node>) {
    for c in rc {
        let mut m = MapBuilder::default();
        if let Some(sl) = c.source_labels.as_ref().filter(|v| !v.is_empty()) {
            m.put(
                "source_labels",
                Node::Seq(sl.iter().map(|x| s(x)).collect()),
            );
        }
        m.opt("separator", c.separator.as_deref(), s);
        m.opt(
            "target_label",
            c.target_label.as_deref().filter(|t| !t.is_empty()),
            s,
        );
        m.opt("regex", c.regex.as_deref().filter(|t| !t.is_empty()), s);
        m.opt("modulus", c.modulus.filter(|m| *m != 0), |v| {
            Node::Int(i64::try_from(v).unwrap_or(i64::MAX))
        });
        m.opt("replacement", c.replacement.as_deref(), s);
        m.opt(
            "action",
            c.action.as_deref().filter(|a| !a.is_empty()),
            |a| Node::Str(a.to_lowercase()),
        );
        out.push(m.done());
    }
}

/// The user's relabelings with the enforced namespace label last (`namespacelabeler`).
fn enforced(cfg: &MonitoringResources, rc: &[RelabelConfig], ns: &str) -> Vec<RelabelConfig> {
    let mut v = rc.to_vec();
    if let Some(l) = &cfg.enforced_namespace_label {
        v.push(RelabelConfig {
            target_label: Some(l.clone()),
            replacement: Some(ns.to_owned()),
            ..RelabelConfig::default()
        });
    }
    v
}

/// The sharding tail, for one shard (`$(SHARD)` = 0).
fn sharding(out: &mut Vec<Node>) {
    out.push(map([
        ("source_labels", strs(&["__address__", "__tmp_hash"])),
        ("target_label", s("__tmp_hash")),
        ("regex", s("(.+);")),
        ("replacement", s("$1")),
        ("action", s("replace")),
    ]));
    out.push(map([
        ("source_labels", strs(&["__tmp_hash"])),
        ("target_label", s("__tmp_hash")),
        ("modulus", Node::Int(1)),
        ("action", s("hashmod")),
    ]));
    out.push(map([
        (
            "source_labels",
            strs(&["__tmp_hash", "__tmp_disable_sharding"]),
        ),
        ("regex", s("0;|.+;.+")),
        ("action", s("keep")),
    ]));
}

fn int_or_string(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// The limits, `body_size_limit` and metric relabelings that end every job.
fn tail(
    g: &Gen<'_, '_>,
    limits: &meridian_kube::monitoring::Limits,
    ep: &Endpoint,
    m: &mut MapBuilder,
) {
    let n = |v: u64| Node::Int(i64::try_from(v).unwrap_or(i64::MAX));
    m.opt("sample_limit", limits.sample_limit, n);
    m.opt("target_limit", limits.target_limit, n);
    m.opt("label_limit", limits.label_limit, n);
    m.opt("label_name_length_limit", limits.label_name_length_limit, n);
    m.opt(
        "label_value_length_limit",
        limits.label_value_length_limit,
        n,
    );
    m.opt("keep_dropped_targets", limits.keep_dropped_targets, n);
    m.opt(
        "body_size_limit",
        limits.body_size_limit.as_deref().filter(|b| !b.is_empty()),
        s,
    );
    let metric = enforced(g.ctx.cfg, &ep.metric_relabelings, g.ns);
    if !metric.is_empty() {
        let mut v = Vec::new();
        user_relabelings(&metric, &mut v);
        m.put("metric_relabel_configs", Node::Seq(v));
    }
}

/// The end of every job: the `endpoint` label, the user's relabelings (the enforced namespace label
/// last), the sharding tail, then the limits and metric relabelings.
fn end_job(
    g: &Gen<'_, '_>,
    limits: &meridian_kube::monitoring::Limits,
    ep: &Endpoint,
    endpoint: Option<String>,
    mut r: Vec<Node>,
    mut m: MapBuilder,
) -> Node {
    if let Some(p) = endpoint {
        r.push(map([
            ("target_label", s("endpoint")),
            ("replacement", Node::Str(p)),
        ]));
    }
    user_relabelings(&enforced(g.ctx.cfg, &ep.relabelings, g.ns), &mut r);
    sharding(&mut r);
    m.put("relabel_configs", Node::Seq(r));
    tail(g, limits, ep, &mut m);
    m.done()
}

/// The keys between the SD config and the HTTP client settings.
fn scrape_settings(ep: &Endpoint, m: &mut MapBuilder) {
    m.opt(
        "scrape_interval",
        ep.interval.as_deref().filter(|v| !v.is_empty()),
        s,
    );
    m.opt(
        "scrape_timeout",
        ep.scrape_timeout.as_deref().filter(|v| !v.is_empty()),
        s,
    );
    m.opt(
        "metrics_path",
        ep.path.as_deref().filter(|v| !v.is_empty()),
        s,
    );
    if !ep.params.is_empty() {
        m.put(
            "params",
            Node::Map(
                ep.params
                    .iter()
                    .map(|(k, v)| (k.clone(), Node::Seq(v.iter().map(|x| s(x)).collect())))
                    .collect(),
            ),
        );
    }
    m.opt("scheme", ep.scheme.as_deref(), |v| {
        Node::Str(v.to_lowercase())
    });
}

fn header(job: String, ep: &Endpoint, m: &mut MapBuilder) {
    m.put("job_name", Node::Str(job));
    m.put("honor_labels", Node::Bool(ep.honor_labels));
    m.opt("honor_timestamps", ep.honor_timestamps, Node::Bool);
    m.opt(
        "track_timestamps_staleness",
        ep.track_timestamps_staleness,
        Node::Bool,
    );
}

fn proxy(ep: &Endpoint, m: &mut MapBuilder) {
    m.opt("proxy_url", ep.proxy_url.as_deref(), s);
    m.opt("no_proxy", ep.no_proxy.as_deref(), s);
    m.opt(
        "proxy_from_environment",
        ep.proxy_from_environment,
        Node::Bool,
    );
}

impl Gen<'_, '_> {
    fn put_tls(&mut self, ep: &Endpoint, field: &str, m: &mut MapBuilder) -> Result<(), String> {
        if let Some(t) = &ep.tls_config {
            let t = self.tls(t, &format!("{field}.tlsConfig"))?;
            m.put("tls_config", t);
        }
        Ok(())
    }

    /// `bearer_token`, `basic_auth` and `authorization`; `before_authorization` puts what goes
    /// between the last two (the PodMonitor's proxy keys).
    fn put_auth(
        &self,
        ep: &Endpoint,
        field: &str,
        m: &mut MapBuilder,
        before_authorization: impl FnOnce(&mut MapBuilder),
    ) -> Result<(), String> {
        if let Some(b) = ep
            .bearer_token_secret
            .as_ref()
            .filter(|b| !b.name.is_empty())
        {
            let v = self.secret(b, &format!("{field}.bearerTokenSecret"))?;
            m.put("bearer_token", Node::Str(v));
        }
        if let Some(b) = &ep.basic_auth {
            m.put(
                "basic_auth",
                self.basic_auth(b, &format!("{field}.basicAuth"))?,
            );
        }
        before_authorization(m);
        if let Some(a) = &ep.authorization {
            let v = self.authorization(a, &format!("{field}.authorization"))?;
            m.put("authorization", v);
        }
        Ok(())
    }
}

/// The keep relabeling of a (deprecated) `targetPort`: a name keeps the container port's name, a
/// number its number.
fn target_port_keep(tp: &IntOrString, r: &mut Vec<Node>) {
    match tp {
        IntOrString::String(v) if !v.is_empty() => r.push(map([
            ("action", s("keep")),
            (
                "source_labels",
                strs(&["__meta_kubernetes_pod_container_port_name"]),
            ),
            ("regex", s(v)),
        ])),
        IntOrString::Int(v) if *v != 0 => r.push(map([
            ("action", s("keep")),
            (
                "source_labels",
                strs(&["__meta_kubernetes_pod_container_port_number"]),
            ),
            ("regex", Node::Int(i64::from(*v))),
        ])),
        _ => {}
    }
}

/// The jobs of one ServiceMonitor (one per endpoint).
pub fn service_monitor(ctx: &Context<'_>, sm: &ServiceMonitor) -> Result<Generated, String> {
    let ns = sm.metadata.namespace.as_deref().unwrap_or("");
    let name = sm.metadata.name.as_deref().unwrap_or("");
    let mut g = Gen {
        ctx,
        ns,
        files: Vec::new(),
    };
    let spec = &sm.spec;
    let role = match spec.service_discovery_role.as_deref() {
        None | Some("Endpoints") => "endpoints",
        Some("EndpointSlice") => "endpointslice",
        Some(other) => {
            return Err(format!(
                "spec.serviceDiscoveryRole: {other:?} is not one of Endpoints, EndpointSlice"
            ));
        }
    };
    let slice = role == "endpointslice";
    meridian_kube::selector::Selector::new(&spec.selector, "spec.selector")?;
    let by_role = role_selector(spec.selector_mechanism.as_deref())?;
    let mut jobs = Vec::new();
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let field = format!("spec.endpoints[{i}]");
        check_endpoint(ep, &field)?;
        let mut m = MapBuilder::default();
        header(format!("serviceMonitor/{ns}/{name}/{i}"), ep, &mut m);
        m.put(
            "kubernetes_sd_configs",
            sd_config(
                ctx.cfg,
                role,
                sd_namespaces(ctx.cfg, &spec.namespace_selector, ns),
                spec.attach_metadata
                    .as_ref()
                    .map(|a| a.node.unwrap_or(false)),
                by_role.then(|| (vec![role, "service"], selector_string(&spec.selector))),
            ),
        );
        scrape_settings(ep, &mut m);
        m.opt("follow_redirects", ep.follow_redirects, Node::Bool);
        m.opt("enable_http2", ep.enable_http2, Node::Bool);
        proxy(ep, &mut m);
        g.put_tls(ep, &field, &mut m)?;
        m.opt(
            "bearer_token_file",
            ep.bearer_token_file.as_deref().filter(|f| !f.is_empty()),
            s,
        );
        g.put_auth(ep, &field, &mut m, |_| {})?;

        let mut r = vec![copy_rule("job", "__tmp_prometheus_job_name")];
        if !by_role {
            selector_relabelings(&spec.selector, Kind::Service, &mut r);
        }
        let port_meta = if slice {
            "__meta_kubernetes_endpointslice_port_name"
        } else {
            "__meta_kubernetes_endpoint_port_name"
        };
        let port = ep.port.as_deref().filter(|p| !p.is_empty());
        let target_port = ep
            .target_port
            .as_ref()
            .map(int_or_string)
            .filter(|p| !p.is_empty());
        if let Some(p) = port {
            r.push(map([
                ("action", s("keep")),
                ("source_labels", strs(&[port_meta])),
                ("regex", s(p)),
            ]));
        } else if let Some(tp) = &ep.target_port {
            target_port_keep(tp, &mut r);
        }
        let (kind_l, name_l) = if slice {
            (
                "__meta_kubernetes_endpointslice_address_target_kind",
                "__meta_kubernetes_endpointslice_address_target_name",
            )
        } else {
            (
                "__meta_kubernetes_endpoint_address_target_kind",
                "__meta_kubernetes_endpoint_address_target_name",
            )
        };
        for (regex, target) in [("Node;(.*)", "node"), ("Pod;(.*)", "pod")] {
            r.push(map([
                ("source_labels", strs(&[kind_l, name_l])),
                ("separator", s(";")),
                ("regex", s(regex)),
                ("replacement", s("${1}")),
                ("target_label", s(target)),
            ]));
        }
        r.push(copy_rule("__meta_kubernetes_namespace", "namespace"));
        r.push(copy_rule("__meta_kubernetes_service_name", "service"));
        r.push(copy_rule("__meta_kubernetes_pod_name", "pod"));
        r.push(copy_rule(
            "__meta_kubernetes_pod_container_name",
            "container",
        ));
        if ep.filter_running.unwrap_or(true) {
            r.push(running_filter());
        }
        for l in &spec.target_labels {
            r.push(label_rule(
                &format!("__meta_kubernetes_service_label_{}", sanitize(l)),
                &sanitize(l),
            ));
        }
        for l in &spec.pod_target_labels {
            r.push(label_rule(
                &format!("__meta_kubernetes_pod_label_{}", sanitize(l)),
                &sanitize(l),
            ));
        }
        r.push(map([
            ("source_labels", strs(&["__meta_kubernetes_service_name"])),
            ("target_label", s("job")),
            ("replacement", s("${1}")),
        ]));
        if !spec.job_label.is_empty() {
            r.push(label_rule(
                &format!(
                    "__meta_kubernetes_service_label_{}",
                    sanitize(&spec.job_label)
                ),
                "job",
            ));
        }
        let endpoint = port.map(str::to_owned).or(target_port);
        jobs.push(end_job(&g, &spec.limits, ep, endpoint, r, m));
    }
    Ok(Generated {
        jobs,
        files: g.files,
    })
}

fn running_filter() -> Node {
    map([
        ("action", s("drop")),
        ("source_labels", strs(&["__meta_kubernetes_pod_phase"])),
        ("regex", s("(Failed|Succeeded)")),
    ])
}

/// The jobs of one PodMonitor (one per podMetricsEndpoint).
pub fn pod_monitor(ctx: &Context<'_>, pm: &PodMonitor) -> Result<Generated, String> {
    let ns = pm.metadata.namespace.as_deref().unwrap_or("");
    let name = pm.metadata.name.as_deref().unwrap_or("");
    let mut g = Gen {
        ctx,
        ns,
        files: Vec::new(),
    };
    let spec = &pm.spec;
    meridian_kube::selector::Selector::new(&spec.selector, "spec.selector")?;
    let by_role = role_selector(spec.selector_mechanism.as_deref())?;
    let mut jobs = Vec::new();
    for (i, ep) in spec.pod_metrics_endpoints.iter().enumerate() {
        let field = format!("spec.podMetricsEndpoints[{i}]");
        check_endpoint(ep, &field)?;
        let mut m = MapBuilder::default();
        header(format!("podMonitor/{ns}/{name}/{i}"), ep, &mut m);
        m.put(
            "kubernetes_sd_configs",
            sd_config(
                ctx.cfg,
                "pod",
                sd_namespaces(ctx.cfg, &spec.namespace_selector, ns),
                spec.attach_metadata
                    .as_ref()
                    .map(|a| a.node.unwrap_or(false)),
                by_role.then(|| (vec!["pod"], selector_string(&spec.selector))),
            ),
        );
        scrape_settings(ep, &mut m);
        // addHTTPConfigToYAML: redirects, HTTP/2, TLS; then the credentials and the proxy.
        m.opt("follow_redirects", ep.follow_redirects, Node::Bool);
        m.opt("enable_http2", ep.enable_http2, Node::Bool);
        g.put_tls(ep, &field, &mut m)?;
        g.put_auth(ep, &field, &mut m, |m| proxy(ep, m))?;

        let mut r = vec![copy_rule("job", "__tmp_prometheus_job_name")];
        if ep.filter_running.unwrap_or(true) {
            r.push(running_filter());
        }
        if !by_role {
            selector_relabelings(&spec.selector, Kind::Pod, &mut r);
        }
        let port = ep.port.as_deref().filter(|p| !p.is_empty());
        if let Some(p) = port {
            r.push(map([
                ("action", s("keep")),
                (
                    "source_labels",
                    strs(&["__meta_kubernetes_pod_container_port_name"]),
                ),
                ("regex", s(p)),
            ]));
        } else if let Some(n) = ep.port_number.filter(|n| *n != 0) {
            r.push(map([
                ("action", s("keep")),
                (
                    "source_labels",
                    strs(&["__meta_kubernetes_pod_container_port_number"]),
                ),
                ("regex", Node::Int(n)),
            ]));
        } else if let Some(tp) = &ep.target_port {
            target_port_keep(tp, &mut r);
        }
        r.push(copy_rule("__meta_kubernetes_namespace", "namespace"));
        r.push(copy_rule(
            "__meta_kubernetes_pod_container_name",
            "container",
        ));
        r.push(copy_rule("__meta_kubernetes_pod_name", "pod"));
        for l in &spec.pod_target_labels {
            r.push(label_rule(
                &format!("__meta_kubernetes_pod_label_{}", sanitize(l)),
                &sanitize(l),
            ));
        }
        r.push(map([
            ("target_label", s("job")),
            ("replacement", Node::Str(format!("{ns}/{name}"))),
        ]));
        if !spec.job_label.is_empty() {
            r.push(label_rule(
                &format!("__meta_kubernetes_pod_label_{}", sanitize(&spec.job_label)),
                "job",
            ));
        }
        let endpoint = port.map(str::to_owned).or_else(|| {
            ep.target_port
                .as_ref()
                .map(int_or_string)
                .filter(|p| !p.is_empty())
        });
        jobs.push(end_job(&g, &spec.limits, ep, endpoint, r, m));
    }
    Ok(Generated {
        jobs,
        files: g.files,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> MonitoringResources {
        MonitoringResources::parse("namespace: default\nserviceMonitorSelector: {}\n").unwrap()
    }

    fn sm(endpoint: serde_json::Value) -> ServiceMonitor {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "endpoints": [endpoint]}
        }))
        .unwrap()
    }

    #[test]
    fn refusals_name_the_field() {
        let c = cfg();
        let assets = AssetStore::default();
        let ctx = Context {
            cfg: &c,
            assets: &assets,
            cert_dir: Path::new("/certs"),
        };
        for (ep, want) in [
            (
                serde_json::json!({"port": "web", "relabelings": [{"regex": "(", "targetLabel": "x", "sourceLabels": ["a"]}]}),
                "spec.endpoints[0].relabelings[0]",
            ),
            (
                serde_json::json!({"port": "web", "metricRelabelings": [{"action": "hashmod", "sourceLabels": ["a"]}]}),
                "spec.endpoints[0].metricRelabelings[0]",
            ),
            (
                serde_json::json!({"port": "web", "bearerTokenSecret": {"name": "t", "key": "k"}}),
                "spec.endpoints[0].bearerTokenSecret: key \"k\" of Secret default/t not found",
            ),
            (
                serde_json::json!({"port": "web", "bearerTokenSecret": {"name": "t", "key": "k"},
                    "basicAuth": {"username": {"name": "u", "key": "u"}}}),
                "basicAuth and bearerTokenSecret cannot be configured at the same time",
            ),
            (
                serde_json::json!({"port": "web", "authorization": {"type": "Basic", "credentials": {"name": "a", "key": "b"}}}),
                "spec.endpoints[0].authorization.type",
            ),
            (
                serde_json::json!({"port": "web", "tlsConfig": {"cert": {"secret": {"name": "a", "key": "b"}}}}),
                "spec.endpoints[0].tlsConfig: a client certificate and its key",
            ),
            (
                serde_json::json!({"port": "web", "noProxy": "10.0.0.0/8"}),
                "spec.endpoints[0].noProxy",
            ),
        ] {
            let e = service_monitor(&ctx, &sm(ep.clone())).unwrap_err();
            assert!(e.contains(want), "{ep}: {e}");
        }
        let mut bad = sm(serde_json::json!({"port": "web"}));
        bad.spec.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Near".into(),
                values: None,
            },
        ]);
        let e = service_monitor(&ctx, &bad).unwrap_err();
        assert!(
            e.contains("spec.selector.matchExpressions[0].operator"),
            "{e}"
        );
    }

    #[test]
    fn tls_material_is_written_where_the_operator_mounts_it() {
        let c = cfg();
        let mut assets = AssetStore::default();
        assets.secrets.insert(
            ("default".into(), "tls".into()),
            [("ca".to_owned(), b"CA".to_vec())].into_iter().collect(),
        );
        assets.config_maps.insert(
            ("default".into(), "bundle".into()),
            [("cert".to_owned(), b"CERT".to_vec())]
                .into_iter()
                .collect(),
        );
        let ctx = Context {
            cfg: &c,
            assets: &assets,
            cert_dir: Path::new("/certs"),
        };
        let g = service_monitor(
            &ctx,
            &sm(serde_json::json!({"port": "web", "tlsConfig": {
                "ca": {"secret": {"name": "tls", "key": "ca"}},
                "cert": {"configMap": {"name": "bundle", "key": "cert"}},
                "keySecret": {"name": "tls", "key": "ca"}}})),
        )
        .unwrap();
        let names: Vec<String> = g
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/certs/0_default_tls_ca",
                "/certs/1_default_bundle_cert",
                "/certs/0_default_tls_ca"
            ]
        );
        let yaml = serde_saphyr::to_string(&g.jobs[0]).unwrap();
        assert!(
            yaml.contains("cert_file: /certs/1_default_bundle_cert"),
            "{yaml}"
        );
    }
}
