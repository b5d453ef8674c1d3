//! The `monitoring_resources` section: which prometheus-operator resources a process reads, with the
//! fields of the operator's `Prometheus` resource that decide it (`serviceMonitorSelector` and the
//! rest, camelCase as in the resource) and the API client as `kubernetes_sd_configs` writes it
//! (`api_server`, `kubeconfig_file`, `tls_config`, …; the pod's service account when none is given).
//!
//! Selection follows the operator (`pkg/prometheus/resource_selector.go`, v0.93.0): a missing resource
//! selector selects nothing and an empty one (`{}`) selects everything; a missing namespace selector
//! means the process' own namespace and an empty one every namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::client::ClientConfig;
use crate::selector::Selector;
use meridian_core::http_config::{Authorization, BasicAuth, TlsConfig};
use meridian_core::promfmt::PromDuration;
use meridian_core::relabel::is_valid_label_name;

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitoringResources {
    api_server: Option<String>,
    kubeconfig_file: Option<PathBuf>,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    oauth2: Option<serde::de::IgnoredAny>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<TlsConfig>,
    proxy_url: Option<String>,
    follow_redirects: Option<bool>,
    enable_http2: Option<bool>,
    /// The namespace the `Prometheus` resource would live in (default: the service account's).
    namespace: Option<String>,
    #[serde(rename = "serviceMonitorSelector")]
    service_monitor_selector: Option<LabelSelector>,
    #[serde(rename = "serviceMonitorNamespaceSelector")]
    service_monitor_namespace_selector: Option<LabelSelector>,
    #[serde(rename = "podMonitorSelector")]
    pod_monitor_selector: Option<LabelSelector>,
    #[serde(rename = "podMonitorNamespaceSelector")]
    pod_monitor_namespace_selector: Option<LabelSelector>,
    #[serde(rename = "ruleSelector")]
    rule_selector: Option<LabelSelector>,
    #[serde(rename = "ruleNamespaceSelector")]
    rule_namespace_selector: Option<LabelSelector>,
    #[serde(rename = "scrapeInterval")]
    scrape_interval: Option<PromDuration>,
    #[serde(rename = "scrapeTimeout")]
    scrape_timeout: Option<PromDuration>,
    #[serde(rename = "evaluationInterval")]
    evaluation_interval: Option<PromDuration>,
    #[serde(rename = "externalLabels", default)]
    external_labels: BTreeMap<String, String>,
    #[serde(rename = "enforcedNamespaceLabel")]
    enforced_namespace_label: Option<String>,
    #[serde(rename = "ignoreNamespaceSelectors", default)]
    ignore_namespace_selectors: bool,
}

/// Which namespaces a kind of resource is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// The process' own namespace (no namespace selector given).
    Own,
    /// Namespaces whose labels match (`{}`: every namespace).
    Matching(Selector),
}

/// One kind of resource: which resources and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub selector: Selector,
    pub namespaces: Namespaces,
}

/// The resolved section.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringResources {
    pub client: ClientConfig,
    pub namespace: Option<String>,
    /// `None`: no selector, nothing selected.
    pub service_monitors: Option<Selection>,
    pub pod_monitors: Option<Selection>,
    pub rules: Option<Selection>,
    /// The `Prometheus` resource's `scrapeInterval` (30s by default, as the operator's CRD).
    pub scrape_interval: Duration,
    pub scrape_timeout: Option<Duration>,
    pub evaluation_interval: Duration,
    pub external_labels: BTreeMap<String, String>,
    pub enforced_namespace_label: Option<String>,
    pub ignore_namespace_selectors: bool,
}

fn selection(
    sel: Option<LabelSelector>,
    ns: Option<LabelSelector>,
    field: &str,
) -> Result<Option<Selection>, String> {
    let Some(sel) = sel else {
        return Ok(None);
    };
    let selector = Selector::new(&sel, &format!("monitoring_resources.{field}Selector"))?;
    let namespaces = match ns {
        None => Namespaces::Own,
        Some(n) => Namespaces::Matching(Selector::new(
            &n,
            &format!("monitoring_resources.{field}NamespaceSelector"),
        )?),
    };
    Ok(Some(Selection {
        selector,
        namespaces,
    }))
}

impl RawMonitoringResources {
    pub fn resolve(self) -> Result<MonitoringResources, String> {
        const S: &str = "monitoring_resources";
        let client = crate::client_fields!(self).resolve(S)?;
        let scrape_interval = self
            .scrape_interval
            .map_or(Duration::from_secs(30), |d| d.0);
        if scrape_interval.is_zero() {
            return Err(format!("{S}.scrapeInterval must be greater than 0"));
        }
        let scrape_timeout = self.scrape_timeout.map(|d| d.0);
        if let Some(t) = scrape_timeout
            && (t.is_zero() || t > scrape_interval)
        {
            return Err(format!(
                "{S}.scrapeTimeout ({}) must be greater than 0 and not greater than scrapeInterval ({})",
                PromDuration(t),
                PromDuration(scrape_interval)
            ));
        }
        let evaluation_interval = self
            .evaluation_interval
            .map_or(Duration::from_secs(30), |d| d.0);
        for k in self.external_labels.keys() {
            if !is_valid_label_name(k) {
                return Err(format!(
                    "{S}.externalLabels: {k:?} is not a valid label name"
                ));
            }
        }
        if let Some(l) = &self.enforced_namespace_label
            && !is_valid_label_name(l)
        {
            return Err(format!(
                "{S}.enforcedNamespaceLabel: {l:?} is not a valid label name"
            ));
        }
        if let Some(n) = &self.namespace {
            crate::selector::check_value(n).map_err(|e| format!("{S}.namespace: {e}"))?;
        }
        Ok(MonitoringResources {
            client,
            namespace: self.namespace,
            service_monitors: selection(
                self.service_monitor_selector,
                self.service_monitor_namespace_selector,
                "serviceMonitor",
            )?,
            pod_monitors: selection(
                self.pod_monitor_selector,
                self.pod_monitor_namespace_selector,
                "podMonitor",
            )?,
            rules: selection(self.rule_selector, self.rule_namespace_selector, "rule")?,
            scrape_interval,
            scrape_timeout,
            evaluation_interval,
            external_labels: self.external_labels,
            enforced_namespace_label: self.enforced_namespace_label,
            ignore_namespace_selectors: self.ignore_namespace_selectors,
        })
    }
}

impl MonitoringResources {
    /// Parses the section's own YAML (the gateway's `--rule.monitoring-resources-file`).
    pub fn parse(text: &str) -> Result<MonitoringResources, String> {
        let raw: RawMonitoringResources =
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        raw.resolve()
    }

    /// The namespace `Namespaces::Own` means: `namespace`, else the service account's.
    pub fn own_namespace(&self, sa_dir: &std::path::Path) -> Result<String, String> {
        match &self.namespace {
            Some(n) => Ok(n.clone()),
            None => crate::client::own_namespace(sa_dir).map_err(|e| {
                format!("monitoring_resources: {e}; set monitoring_resources.namespace")
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_selects_none_empty_selects_all() {
        let m = MonitoringResources::parse(
            "api_server: http://127.0.0.1:1\nnamespace: monitoring\nserviceMonitorSelector: {}\npodMonitorSelector:\n  matchLabels: {team: a}\npodMonitorNamespaceSelector: {}\n",
        )
        .unwrap();
        let sm = m.service_monitors.unwrap();
        assert!(sm.selector.matches(None));
        assert_eq!(sm.namespaces, Namespaces::Own);
        let pm = m.pod_monitors.unwrap();
        assert!(!pm.selector.matches(None));
        assert!(matches!(pm.namespaces, Namespaces::Matching(ref s) if s.matches(None)));
        assert!(m.rules.is_none());
        assert_eq!(m.scrape_interval, Duration::from_secs(30));
        assert_eq!(m.evaluation_interval, Duration::from_secs(30));
    }

    #[test]
    fn bad_input_names_the_field() {
        for (y, want) in [
            (
                "scrapeInterval: 10s\nscrapeTimeout: 20s\n",
                "monitoring_resources.scrapeTimeout",
            ),
            ("enforcedNamespaceLabel: 'a-b'\n", "enforcedNamespaceLabel"),
            ("externalLabels: {'1x': a}\n", "externalLabels"),
            (
                "ruleSelector: {matchExpressions: [{key: a, operator: In}]}\n",
                "monitoring_resources.ruleSelector.matchExpressions[0]",
            ),
            ("serviceMonitorSelectr: {}\n", "serviceMonitorSelectr"),
            ("bearer_token: x\n", "api_server"),
        ] {
            let e = MonitoringResources::parse(y).unwrap_err();
            assert!(e.contains(want), "{y}: {e}");
        }
    }
}
