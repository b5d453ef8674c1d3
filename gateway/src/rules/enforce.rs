//! prometheus-operator's namespace enforcement on a PrometheusRule (`enforcedNamespaceLabel`;
//! `namespacelabeler.EnforceNamespaceLabel`, v0.93.0, which uses prom-label-proxy's enforcer without
//! `errorOnReplace`): every selector of every expression gets `<label>="<namespace>"`, replacing any
//! matcher of that label, and every rule gets the label.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;

use super::file::GroupSpec;

/// Enforces `label="ns"` on every rule of `groups`.
pub fn enforce(groups: &mut [GroupSpec], label: &str, ns: &str) -> Result<(), String> {
    let m = Matcher {
        op: MatchOp::Equal,
        name: label.to_owned(),
        value: ns.to_owned(),
    };
    for g in groups {
        for r in &mut g.rules {
            let mut e = crate::promql::parse(&r.expr)
                .map_err(|e| format!("group {:?}, rule {:?}: {}", g.name, r.name, e.message))?;
            walk(&mut e, &m);
            r.expr = e.to_string();
            r.labels.insert(label.to_owned(), ns.to_owned());
        }
    }
    Ok(())
}

fn set(ms: &mut Vec<Matcher>, m: &Matcher) {
    ms.retain(|x| x.name != m.name);
    ms.push(m.clone());
}

fn walk(e: &mut Expr, m: &Matcher) {
    match e {
        Expr::VectorSelector(v) => {
            set(&mut v.matchers.matchers, m);
            for alt in &mut v.matchers.or_matchers {
                set(alt, m);
            }
        }
        Expr::MatrixSelector(ms) => {
            set(&mut ms.vs.matchers.matchers, m);
            for alt in &mut ms.vs.matchers.or_matchers {
                set(alt, m);
            }
        }
        Expr::Aggregate(a) => {
            walk(&mut a.expr, m);
            if let Some(p) = a.param.as_mut() {
                walk(p, m);
            }
        }
        Expr::Unary(u) => walk(&mut u.expr, m),
        Expr::Binary(b) => {
            walk(&mut b.lhs, m);
            walk(&mut b.rhs, m);
        }
        Expr::Paren(p) => walk(&mut p.expr, m),
        Expr::Subquery(s) => walk(&mut s.expr, m),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                walk(a, m);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_gets_the_namespace_and_every_rule_the_label() {
        let mut groups = super::super::file::parse(
            std::path::Path::new("r.yaml"),
            r#"{"groups": [{"name": "g", "rules": [
                {"alert": "A", "expr": "sum by (job) (rate(x{namespace=\"other\", a=~\"b\"}[5m])) / on (job) group_left count(y offset 1m) > 0"},
                {"record": "r:s", "expr": "max_over_time(z[10m:1m])"}]}]}"#,
        )
        .unwrap();
        enforce(&mut groups, "namespace", "team-a").unwrap();
        let r = &groups[0].rules;
        for (rule, selectors) in [(&r[0], ["x{", "y{"]), (&r[1], ["z{", "z{"])] {
            let again = crate::promql::parse(&rule.expr).unwrap().to_string();
            assert_eq!(
                again, rule.expr,
                "the rewritten expression parses back to itself"
            );
            assert!(!rule.expr.contains("other"), "{}", rule.expr);
            for s in selectors {
                assert!(rule.expr.contains(s), "{}", rule.expr);
            }
            assert_eq!(
                rule.expr.matches("namespace=\"team-a\"").count(),
                if rule.name == "A" { 2 } else { 1 },
                "{}",
                rule.expr
            );
            assert_eq!(rule.labels["namespace"], "team-a");
        }
    }
}
