//! `kubernetes_sd_configs:` as Prometheus 2.42 reads it (`discovery/kubernetes/kubernetes.go`
//! `SDConfig.UnmarshalYAML`): a role, where the API server is (`api_server`, `kubeconfig_file` or the
//! in-cluster service account), which namespaces, label/field selectors per role, `attach_metadata`, and
//! the HTTP client settings used towards the API server.

use std::path::PathBuf;

use serde::Deserialize;

use meridian_core::http_config::{Authorization, BasicAuth, TlsConfig};
pub use meridian_kube::client::{ApiSource, AuthKey, ClientConfig, ClientFields, TlsKey};
use meridian_kube::selector::{check_key, check_value};

/// The object kind a provider turns into targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Pod,
    Service,
    Endpoints,
    #[serde(rename = "endpointslice")]
    EndpointSlice,
    Node,
    Ingress,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pod => "pod",
            Role::Service => "service",
            Role::Endpoints => "endpoints",
            Role::EndpointSlice => "endpointslice",
            Role::Node => "node",
            Role::Ingress => "ingress",
        }
    }

    /// The selector roles a discovery role accepts (Prometheus' `allowedSelectors`).
    fn allowed_selectors(self) -> &'static [Role] {
        match self {
            Role::Pod => &[Role::Pod],
            Role::Service => &[Role::Service],
            Role::Endpoints => &[Role::Pod, Role::Service, Role::Endpoints],
            Role::EndpointSlice => &[Role::Pod, Role::Service, Role::EndpointSlice],
            Role::Node => &[Role::Node],
            Role::Ingress => &[Role::Ingress],
        }
    }
}

/// `namespaces:`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Namespaces {
    pub own_namespace: bool,
    pub names: Vec<String>,
}

/// One `selectors:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub role: Role,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub field: String,
}

/// `attach_metadata:`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachMetadata {
    pub node: bool,
}

/// One `kubernetes_sd_configs:` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesSdConfig {
    role: Option<Role>,
    api_server: Option<String>,
    kubeconfig_file: Option<PathBuf>,
    #[serde(default)]
    namespaces: Namespaces,
    #[serde(default)]
    selectors: Vec<Selector>,
    #[serde(default)]
    attach_metadata: AttachMetadata,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    oauth2: Option<serde::de::IgnoredAny>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<TlsConfig>,
    proxy_url: Option<String>,
    follow_redirects: Option<bool>,
    enable_http2: Option<bool>,
}

/// One resolved `kubernetes_sd_configs:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSdConfig {
    pub role: Role,
    pub client: ClientConfig,
    pub namespaces: Namespaces,
    pub selectors: Vec<Selector>,
    pub attach_metadata: AttachMetadata,
}

impl KubernetesSdConfig {
    /// The label and field selector this config sets for `role` (empty strings when none).
    pub fn selector(&self, role: Role) -> (&str, &str) {
        self.selectors
            .iter()
            .find(|s| s.role == role)
            .map_or(("", ""), |s| (s.label.as_str(), s.field.as_str()))
    }
}

impl RawKubernetesSdConfig {
    /// Prometheus' checks, with its messages where it has one.
    pub fn resolve(self) -> Result<KubernetesSdConfig, String> {
        let role = self.role.ok_or(
            "kubernetes_sd_configs: role missing (one of: pod, service, endpoints, endpointslice, node, ingress)",
        )?;
        let client = meridian_kube::client_fields!(self).resolve("kubernetes_sd_configs")?;
        let allowed = role.allowed_selectors();
        let mut seen = Vec::new();
        for s in &self.selectors {
            if !allowed.contains(&s.role) {
                let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                return Err(format!(
                    "kubernetes_sd_configs: {} role supports only {} selectors",
                    role.as_str(),
                    names.join(", ")
                ));
            }
            if seen.contains(&s.role) {
                return Err(format!(
                    "kubernetes_sd_configs: duplicated selector role: {}",
                    s.role.as_str()
                ));
            }
            seen.push(s.role);
            check_label_selector(&s.label).map_err(|e| {
                format!(
                    "kubernetes_sd_configs: selectors ({}): label {:?}: {e}",
                    s.role.as_str(),
                    s.label
                )
            })?;
            check_field_selector(&s.field).map_err(|e| {
                format!(
                    "kubernetes_sd_configs: selectors ({}): field {:?}: {e}",
                    s.role.as_str(),
                    s.field
                )
            })?;
        }
        for n in &self.namespaces.names {
            if n.is_empty() {
                return Err("kubernetes_sd_configs: namespaces.names holds an empty name".into());
            }
        }
        Ok(KubernetesSdConfig {
            role,
            client,
            namespaces: self.namespaces,
            selectors: self.selectors,
            attach_metadata: self.attach_metadata,
        })
    }
}

/// The label selector grammar of `k8s.io/apimachinery/pkg/labels.Parse`: comma-separated requirements
/// `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`.
pub fn check_label_selector(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Ok(());
    }
    // Requirements are separated by commas outside parentheses.
    let mut depth = 0usize;
    let mut begin = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                check_requirement(s[begin..i].trim())?;
                begin = i + 1;
            }
            _ => {}
        }
    }
    check_requirement(s[begin..].trim())
}

fn check_requirement(req: &str) -> Result<(), String> {
    if req.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(k) = req.strip_prefix('!') {
        return check_key(k.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((k, v)) = req.split_once(op) {
            check_key(k.trim())?;
            return check_value(v.trim());
        }
    }
    for op in [" notin ", " in "] {
        if let Some((k, v)) = req.split_once(op) {
            check_key(k.trim())?;
            let v = v.trim();
            let inner = v
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("{req:?}: values must be in parentheses"))?;
            for x in inner.split(',') {
                check_value(x.trim())?;
            }
            return Ok(());
        }
    }
    check_key(req)
}

/// `k8s.io/apimachinery/pkg/fields.ParseSelector`: comma-separated `k=v`, `k==v`, `k!=v`.
fn check_field_selector(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Ok(());
    }
    for req in s.split(',') {
        let req = req.trim();
        if !(req.contains('=')) {
            return Err(format!(
                "{req:?}: invalid selector: expected an operator (=, ==, !=)"
            ));
        }
        let k = req.split(['=', '!']).next().unwrap_or("");
        if k.trim().is_empty() {
            return Err(format!("{req:?}: missing field name"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<KubernetesSdConfig, String> {
        let raw: RawKubernetesSdConfig = serde_saphyr::from_str(y).map_err(|e| e.to_string())?;
        raw.resolve()
    }

    #[test]
    fn prometheus_checks() {
        let cases = [
            ("api_server: http://a\n", "role missing"),
            ("role: pods\n", "pods"),
            (
                "role: pod\napi_server: http://a\nkubeconfig_file: /k\n",
                "simultaneously",
            ),
            (
                "role: pod\nbearer_token: x\n",
                "provide the 'api_server' URL explicitly",
            ),
            (
                "role: pod\nkubeconfig_file: /k\nbearer_token: x\n",
                "together with 'kubeconfig_file'",
            ),
            (
                "role: pod\napi_server: http://a\nselectors: [{role: node, label: a=b}]\n",
                "pod role supports only pod selectors",
            ),
            (
                "role: endpoints\napi_server: http://a\nselectors: [{role: pod}, {role: pod}]\n",
                "duplicated selector role: pod",
            ),
            (
                "role: node\napi_server: http://a\nselectors: [{role: node, label: 'a in b'}]\n",
                "parentheses",
            ),
            (
                "role: node\napi_server: http://a\nselectors: [{role: node, field: 'spec.x'}]\n",
                "operator",
            ),
            ("role: node\napi_server: a.b\n", "absolute URL"),
            ("role: node\nnamespace: {}\n", "namespace"),
        ];
        for (y, want) in cases {
            let e = parse(y).unwrap_err();
            assert!(e.contains(want), "{y}\n=> {e}");
        }
    }

    #[test]
    fn accepted() {
        let c = parse(
            "role: node\napi_server: http://a:8080/\nselectors:\n  - role: node\n    label: 'kubernetes.io/os=linux,!node-role.kubernetes.io/control-plane,x in (a, b),y notin (c)'\n    field: spec.unschedulable=false\n",
        )
        .unwrap();
        assert_eq!(c.role, Role::Node);
        assert!(matches!(&c.client.source, ApiSource::Url { url, .. } if url == "http://a:8080"));
        assert_eq!(c.selector(Role::Node).1, "spec.unschedulable=false");
        assert_eq!(c.selector(Role::Pod), ("", ""));
        let c = parse("role: endpointslice\nattach_metadata: {node: true}\n").unwrap();
        assert_eq!(c.client.source, ApiSource::InCluster);
        assert!(c.attach_metadata.node);
    }
}
