//! The JSON views of rules and alerts (`/api/v1/rules`, `/api/v1/alerts`), as Prometheus writes
//! them.

use super::*;

impl RuleManager {
    /// `GET /api/v1/rules` data, filtered as Prometheus filters it.
    pub fn rules_json(&self, filter: &RulesFilter) -> serde_json::Value {
        let mut groups = Vec::new();
        for g in self.groups() {
            let file = g.spec.file.display().to_string();
            if !filter.groups.is_empty() && !filter.groups.contains(&g.spec.name) {
                continue;
            }
            if !filter.files.is_empty() && !filter.files.contains(&file) {
                continue;
            }
            let mut rules = Vec::new();
            for r in &g.rules {
                if !filter.names.is_empty() && !filter.names.contains(&r.spec.name) {
                    continue;
                }
                let st = lock(&r.state);
                let labels = labels_object(&r.spec.labels);
                let mut obj = match &r.spec.kind {
                    RuleKind::Record => {
                        if filter.kind == Some(FilterKind::Alert) {
                            continue;
                        }
                        serde_json::json!({
                            "name": r.spec.name, "query": r.spec.expr, "labels": labels,
                            "type": "recording",
                        })
                    }
                    RuleKind::Alert {
                        hold,
                        keep_firing_for,
                        annotations,
                    } => {
                        if filter.kind == Some(FilterKind::Record) {
                            continue;
                        }
                        let mut alerts: Vec<&Alert> = st
                            .active
                            .values()
                            .filter(|a| a.state != AlertState::Inactive)
                            .collect();
                        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                        let state = alerts
                            .iter()
                            .map(|a| a.state)
                            .max_by_key(|s| *s as u8)
                            .unwrap_or(AlertState::Inactive);
                        serde_json::json!({
                            "state": state.as_str(), "name": r.spec.name, "query": r.spec.expr,
                            "duration": hold.as_secs_f64(), "keepFiringFor": keep_firing_for.as_secs_f64(),
                            "labels": labels, "annotations": labels_object(annotations),
                            "alerts": alerts.iter().map(|a| alert_json(a)).collect::<Vec<_>>(),
                            "type": "alerting",
                        })
                    }
                };
                if let Some(o) = obj.as_object_mut() {
                    o.insert("health".into(), st.health.health.into());
                    if !st.health.last_error.is_empty() {
                        o.insert("lastError".into(), st.health.last_error.clone().into());
                    }
                    o.insert("evaluationTime".into(), st.health.evaluation_seconds.into());
                    o.insert(
                        "lastEvaluation".into(),
                        time_json(st.health.last_evaluation).into(),
                    );
                }
                rules.push(obj);
            }
            if rules.is_empty() && (!filter.names.is_empty() || filter.kind.is_some()) {
                continue;
            }
            let timing = lock(&g.timing).clone();
            groups.push(serde_json::json!({
                "name": g.spec.name, "file": file, "rules": rules,
                "interval": g.interval.as_secs_f64(), "limit": g.spec.limit,
                "evaluationTime": timing.evaluation_seconds,
                "lastEvaluation": time_json(timing.last_evaluation),
                "partialResponseStrategy": match g.spec.partial_response.unwrap_or(self.ctx.default_partial_response) {
                    PartialResponse::Abort => "ABORT",
                    PartialResponse::Warn => "WARN",
                },
            }));
        }
        serde_json::json!({ "groups": groups })
    }

    /// `GET /api/v1/alerts` data: every pending and firing alert.
    pub fn alerts_json(&self) -> serde_json::Value {
        let mut alerts = Vec::new();
        for g in self.groups() {
            for (_, a) in g.alerts() {
                if a.state != AlertState::Inactive {
                    alerts.push(alert_json(&a));
                }
            }
        }
        serde_json::json!({ "alerts": alerts })
    }
}

/// `/api/v1/rules` filters (`type`, `rule_name[]`, `rule_group[]`, `file[]`).
#[derive(Debug, Clone, Default)]
pub struct RulesFilter {
    pub kind: Option<FilterKind>,
    pub names: Vec<String>,
    pub groups: Vec<String>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Alert,
    Record,
}

pub(super) fn labels_object(m: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

pub(super) fn time_json(ms: Option<i64>) -> String {
    meridian_core::time::rfc3339(
        ms.map(|t| std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(t).unwrap_or(0))),
    )
}

pub(super) fn alert_json(a: &Alert) -> serde_json::Value {
    let mut o = serde_json::json!({
        "labels": meridian_core::labels::labels_json(&a.labels),
        "annotations": labels_object(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": time_json(Some(a.active_at)),
        // Prometheus writes the value with `strconv.FormatFloat(v, 'e', -1, 64)`.
        "value": format_e(a.value),
    });
    if let (Some(since), Some(obj)) = (a.keep_firing_since, o.as_object_mut()) {
        obj.insert("keepFiringSince".into(), time_json(Some(since)).into());
    }
    o
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: `1e+00`, `1.5e+03`, `NaN`, `+Inf`.
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}
