//! Meridian's access to the Kubernetes API, shared by the edge (`kubernetes_sd_configs`, ServiceMonitors
//! and PodMonitors) and the gateway (PrometheusRules):
//!
//! - [`client`]: the API client from `api_server`, a kubeconfig or the pod's service account;
//! - [`informer`]: list + watch per (server, resource, namespace, selectors), shared by every user;
//! - [`selector`]: label selectors (`matchLabels`, `matchExpressions`);
//! - [`monitoring`]: prometheus-operator's `monitoring.coreos.com/v1` resources;
//! - [`resources`]: the `monitoring_resources` section (which resources a process reads, as a
//!   `Prometheus` resource's selectors say).

pub mod client;
pub mod informer;
pub mod monitoring;
pub mod resources;
pub mod rules;
pub mod selected;
pub mod selector;

/// Prometheus' `strutil.SanitizeLabelName` (and the operator's `sanitizeLabelName`): every character
/// outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
