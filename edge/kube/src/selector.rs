//! Kubernetes label selectors (`matchLabels`, `matchExpressions`) with apimachinery's rules
//! (`metav1.LabelSelectorAsSelector`): checked once, matched against an object's labels, and written as
//! the `labelSelector` query string of a list or watch.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A checked selector; no requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// Checks `s` (`field` names it in errors, e.g. `serviceMonitorSelector`).
    pub fn new(s: &LabelSelector, field: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            check_key(k).map_err(|e| format!("{field}.matchLabels: {e}"))?;
            check_value(v).map_err(|e| format!("{field}.matchLabels[{k}]: {e}"))?;
            reqs.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            check_key(&e.key).map_err(|m| format!("{at}.key: {m}"))?;
            let values = e.values.clone().unwrap_or_default();
            for v in &values {
                check_value(v).map_err(|m| format!("{at}.values: {m}"))?;
            }
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{at}: values must be non-empty for operator {}",
                        e.operator
                    ));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "{at}: values must be empty for operator {}",
                        e.operator
                    ));
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "{at}.operator: {other:?} is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)"
                    ));
                }
            };
            reqs.push(r);
        }
        Ok(Selector { reqs })
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.reqs.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// The `labelSelector` query string (`""` selects everything).
    pub fn query(&self) -> String {
        let parts: Vec<String> = self
            .reqs
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        parts.join(",")
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn check_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
    {
        return Err(format!("{k:?}: invalid key prefix"));
    }
    if name.is_empty() || name.len() > 63 || !is_name_value(name) {
        return Err(format!("{k:?}: invalid key name"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 || !is_name_value(v) {
        return Err(format!("{v:?}: invalid value"));
    }
    Ok(())
}

fn is_name_value(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sel(json: serde_json::Value) -> Result<Selector, String> {
        Selector::new(&serde_json::from_value(json).unwrap(), "s")
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = sel(serde_json::json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(s.matches(Some(&l(&[("team", "a"), ("env", "prod"), ("owner", "x")]))));
        assert!(!s.matches(Some(&l(&[
            ("team", "a"),
            ("env", "prod"),
            ("owner", "x"),
            ("tier", "db")
        ]))));
        assert!(!s.matches(Some(&l(&[
            ("team", "a"),
            ("env", "prod"),
            ("owner", "x"),
            ("legacy", "")
        ]))));
        assert!(!s.matches(None));
        assert_eq!(
            s.query(),
            "team=a,env in (prod,staging),tier notin (db),owner,!legacy"
        );
        // The empty selector selects everything.
        let all = sel(serde_json::json!({})).unwrap();
        assert!(all.matches(None));
        assert_eq!(all.query(), "");
    }

    #[test]
    fn bad_selectors_name_the_field() {
        for (j, want) in [
            (
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "s.matchExpressions[0]: values must be non-empty",
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "values must be empty",
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "s.matchExpressions[0].operator: \"Gt\"",
            ),
            (
                serde_json::json!({"matchLabels": {"a b": "x"}}),
                "s.matchLabels: \"a b\"",
            ),
        ] {
            let e = sel(j).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
