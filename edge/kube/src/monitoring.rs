//! prometheus-operator's `monitoring.coreos.com/v1` resources as the edge and the gateway read them:
//! `ServiceMonitor`, `PodMonitor` and `PrometheusRule` (field names and meanings of
//! `pkg/apis/monitoring/v1/*_types.go`, prometheus-operator v0.93.0).
//!
//! The API server has already checked a resource against its CRD's schema, so unknown fields are not
//! errors here. Fields Meridian does not act on are kept in `unsupported` maps instead of being dropped,
//! and a resource that sets one is refused by name ([`ServiceMonitor::unsupported`]): nothing a user
//! wrote is silently ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapKeySelector, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! resource {
    ($t:ident, $spec:ty, $kind:literal, $plural:literal) => {
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        pub struct $t {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: $spec,
        }

        impl k8s_openapi::Resource for $t {
            const API_VERSION: &'static str = "monitoring.coreos.com/v1";
            const GROUP: &'static str = "monitoring.coreos.com";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $t {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource!(
    ServiceMonitor,
    ServiceMonitorSpec,
    "ServiceMonitor",
    "servicemonitors"
);
resource!(PodMonitor, PodMonitorSpec, "PodMonitor", "podmonitors");
resource!(
    PrometheusRule,
    PrometheusRuleSpec,
    "PrometheusRule",
    "prometheusrules"
);

/// `spec.namespaceSelector`: `any`, or a list of names; neither means the monitor's own namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NamespaceSelector {
    pub any: bool,
    pub match_names: Vec<String>,
}

/// `attachMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AttachMetadata {
    pub node: Option<bool>,
}

/// The limits a monitor may set (`sampleLimit` and the rest).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    pub sample_limit: Option<u64>,
    pub target_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    pub keep_dropped_targets: Option<u64>,
    pub body_size_limit: Option<String>,
}

/// `ServiceMonitor.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMonitorSpec {
    pub job_label: String,
    pub target_labels: Vec<String>,
    pub pod_target_labels: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub selector: LabelSelector,
    pub selector_mechanism: Option<String>,
    pub namespace_selector: NamespaceSelector,
    pub attach_metadata: Option<AttachMetadata>,
    pub service_discovery_role: Option<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, Value>,
}

/// `PodMonitor.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodMonitorSpec {
    pub job_label: String,
    pub pod_target_labels: Vec<String>,
    pub pod_metrics_endpoints: Vec<Endpoint>,
    pub selector: LabelSelector,
    pub selector_mechanism: Option<String>,
    pub namespace_selector: NamespaceSelector,
    pub attach_metadata: Option<AttachMetadata>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, Value>,
}

/// A `ServiceMonitor` endpoint or a `PodMonitor` podMetricsEndpoint (the same fields but the port:
/// a Service port name there, a container port name or `portNumber` here).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    pub port: Option<String>,
    pub port_number: Option<i64>,
    pub target_port: Option<IntOrString>,
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub params: BTreeMap<String, Vec<String>>,
    pub interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub honor_labels: bool,
    pub honor_timestamps: Option<bool>,
    pub track_timestamps_staleness: Option<bool>,
    pub tls_config: Option<TlsConfig>,
    pub bearer_token_secret: Option<SecretKeySelector>,
    pub bearer_token_file: Option<String>,
    pub authorization: Option<SafeAuthorization>,
    pub basic_auth: Option<BasicAuth>,
    pub relabelings: Vec<RelabelConfig>,
    pub metric_relabelings: Vec<RelabelConfig>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: Option<bool>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
    pub filter_running: Option<bool>,
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, Value>,
}

/// A Secret's or a ConfigMap's key (`ca`, `cert`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretOrConfigMap {
    pub secret: Option<SecretKeySelector>,
    pub config_map: Option<ConfigMapKeySelector>,
}

/// `tlsConfig` (`SafeTLSConfig`, plus the file fields a ServiceMonitor endpoint allows).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    pub ca: Option<SecretOrConfigMap>,
    pub cert: Option<SecretOrConfigMap>,
    pub key_secret: Option<SecretKeySelector>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `authorization` (`SafeAuthorization`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SafeAuthorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<SecretKeySelector>,
}

/// `basicAuth`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BasicAuth {
    pub username: Option<SecretKeySelector>,
    pub password: Option<SecretKeySelector>,
}

/// A relabeling as the CRD writes it (camelCase keys).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelabelConfig {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

/// `PrometheusRule.spec`: rule groups in the rule-file schema (kept as written, checked by the rule
/// engine that loads them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<Value>,
}

/// The `spec.…` paths of fields set that Meridian does not act on.
fn unsupported_paths(
    spec: &BTreeMap<String, Value>,
    endpoints: &[Endpoint],
    list: &str,
) -> Vec<String> {
    let mut out: Vec<String> = spec.keys().map(|k| format!("spec.{k}")).collect();
    for (i, e) in endpoints.iter().enumerate() {
        out.extend(
            e.unsupported
                .keys()
                .map(|k| format!("spec.{list}[{i}].{k}")),
        );
    }
    out
}

impl ServiceMonitor {
    /// The top-level and per-endpoint fields set that Meridian does not act on (`spec.…` paths).
    pub fn unsupported(&self) -> Vec<String> {
        unsupported_paths(&self.spec.unsupported, &self.spec.endpoints, "endpoints")
    }
}

impl PodMonitor {
    /// As [`ServiceMonitor::unsupported`].
    pub fn unsupported(&self) -> Vec<String> {
        unsupported_paths(
            &self.spec.unsupported,
            &self.spec.pod_metrics_endpoints,
            "podMetricsEndpoints",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_service_monitor_reads_with_its_unsupported_fields_named() {
        let sm: ServiceMonitor = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "example-app", "namespace": "default", "labels": {"team": "frontend"}},
            "spec": {
                "selector": {"matchLabels": {"app": "example-app"}},
                "endpoints": [{"port": "web", "interval": "10s", "oauth2": {"clientId": {}}}],
                "sampleLimit": 100,
                "scrapeClass": "x"
            }
        }))
        .unwrap();
        assert_eq!(sm.spec.endpoints[0].port.as_deref(), Some("web"));
        assert_eq!(sm.spec.limits.sample_limit, Some(100));
        assert_eq!(
            sm.unsupported(),
            vec!["spec.scrapeClass", "spec.endpoints[0].oauth2"]
        );
    }
}
