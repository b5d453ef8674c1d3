//! `PrometheusRule` resources as rule files: the selected resources, each as the text of one rule file
//! named as the operator names it (`<namespace>-<name>-<uid>.yaml`, `pkg/operator/rules.go`), kept
//! current for a rule engine to load.
//!
//! The text is JSON, which is YAML: the rule engine checks it with the same parser and the same checks as
//! a rule file on disk, so a resource is judged exactly as the file the operator would have written. A
//! group without `interval` gets the section's `evaluationInterval`, as the operator puts it in the
//! `global` section of the configuration it generates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::informer::Registry;
use crate::monitoring::PrometheusRule;
use crate::resources::MonitoringResources;
use crate::selected::Selected;

/// One resource as a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleText {
    /// `<namespace>-<name>-<uid>.yaml`.
    pub name: String,
    /// `namespace/name`, for messages.
    pub resource: String,
    pub text: String,
    /// `enforcedNamespaceLabel` and the resource's namespace: every selector and every rule of the
    /// file gets `<label>="<namespace>"` (done by the rule engine, which parses the expressions).
    pub enforce: Option<(String, String)>,
}

/// How long changes are collected before the rule files are rebuilt.
const BATCH: Duration = Duration::from_millis(200);

/// The rule file of one resource.
pub fn rule_text(
    r: &PrometheusRule,
    evaluation_interval: Duration,
    enforced_label: Option<&str>,
) -> RuleText {
    let ns = r.metadata.namespace.as_deref().unwrap_or("");
    let name = r.metadata.name.as_deref().unwrap_or("");
    let uid = r.metadata.uid.as_deref().unwrap_or("");
    let interval = meridian_core::promfmt::PromDuration(evaluation_interval).to_string();
    let groups: Vec<Value> = r
        .spec
        .groups
        .iter()
        .map(|g| {
            let mut g = g.clone();
            if let Some(m) = g.as_object_mut()
                && !m.contains_key("interval")
            {
                m.insert("interval".into(), Value::String(interval.clone()));
            }
            g
        })
        .collect();
    let text = serde_json::json!({ "groups": groups }).to_string();
    RuleText {
        name: format!("{ns}-{name}-{uid}.yaml"),
        resource: format!("{ns}/{name}"),
        text,
        enforce: enforced_label.map(|l| (l.to_owned(), ns.to_owned())),
    }
}

/// Keeps `tx` holding the rule files of the selected resources until `stop`. Returns at once (with an
/// error) when the section selects no rules or the client cannot be built.
pub async fn run(
    cfg: MonitoringResources,
    registry: Arc<Registry>,
    sa_dir: &Path,
    agent: &str,
    tx: watch::Sender<Option<Vec<RuleText>>>,
    stop: CancellationToken,
) -> Result<(), String> {
    let Some(sel) = cfg.rules.clone() else {
        return Err(
            "monitoring_resources: no ruleSelector, so no PrometheusRule is selected".into(),
        );
    };
    let client = match registry.client(&cfg.client.source) {
        Some(c) => c,
        None => {
            let c = crate::client::connect(&cfg.client, sa_dir, agent).await?;
            registry.put_client(&cfg.client.source, c)
        }
    };
    let own = match sel.namespaces {
        crate::resources::Namespaces::Own => cfg.own_namespace(sa_dir)?,
        crate::resources::Namespaces::Matching(_) => String::new(),
    };
    let rules: Selected<PrometheusRule> =
        Selected::new(&registry, &cfg.client.source, &client, &sel, &own);
    if !rules.synced(&stop).await {
        return Ok(());
    }
    let mut changes = rules.changes();
    loop {
        let texts: Vec<RuleText> = rules
            .objects()
            .iter()
            .map(|r| {
                rule_text(
                    r,
                    cfg.evaluation_interval,
                    cfg.enforced_namespace_label.as_deref(),
                )
            })
            .collect();
        tx.send_if_modified(|cur| {
            if cur.as_ref() == Some(&texts) {
                false
            } else {
                *cur = Some(texts);
                true
            }
        });
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            c = changes.next() => if c.is_none() { return Ok(()); },
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(BATCH) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_resource_is_a_rule_file_named_as_the_operator_names_it() {
        let r: PrometheusRule = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "example", "namespace": "default", "uid": "u-1"},
            "spec": {"groups": [
                {"name": "a", "rules": [{"alert": "Up", "expr": "up == 0", "for": "1m"}]},
                {"name": "b", "interval": "1m", "rules": [{"record": "x:y", "expr": "sum(up)"}]}
            ]}
        }))
        .unwrap();
        let t = rule_text(&r, Duration::from_secs(30), Some("namespace"));
        assert_eq!(t.enforce, Some(("namespace".into(), "default".into())));
        assert_eq!(t.name, "default-example-u-1.yaml");
        assert_eq!(t.resource, "default/example");
        let v: Value = serde_json::from_str(&t.text).unwrap();
        assert_eq!(v["groups"][0]["interval"], "30s");
        assert_eq!(v["groups"][1]["interval"], "1m");
        assert_eq!(v["groups"][0]["rules"][0]["for"], "1m");
    }
}
