//! Rules next to Debian's Prometheus 2.42 and Alertmanager 0.25.
//!
//! - **Oracle**: the rules of `rules/oracle.yml` over input series in the series notation are evaluated
//!   by Meridian every minute; the firing alerts it sees (labels and annotations, at every minute) are
//!   written as a `promtool test rules` file, and promtool — evaluating the same rules over the same
//!   series — must agree. A changed expectation must make promtool fail (the oracle can fail).
//! - **Rule file checks**: `promtool check rules` and Meridian accept and reject the same files.
//! - **Native routing**: for a table of alerts, the routing tree picks the receivers `amtool config
//!   routes test` (0.25) picks; `amtool check-config` and Meridian accept and reject the same routing
//!   files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meridian_core::Labels;
use meridian_core::error::Result;
use meridian_gateway::promql::promqltest::series_from_notation;
use meridian_gateway::promql::{Engine, MemQueryable};
use meridian_gateway::queryable::{LabelsRequest, Named, Queryable, SelectRequest, Selected};
use meridian_gateway::rules::file;
use meridian_gateway::rules::{AlertState, EvalContext, Group, RuleSink};
use meridian_storeapi::partial::PartialResponse;
use meridian_testkit::require;

/// Input series and rule outputs in one place: what promtool's test storage is.
#[derive(Default)]
struct Store(RwLock<MemQueryable>);

#[async_trait::async_trait]
impl Queryable for Store {
    async fn select(&self, req: SelectRequest) -> Result<Selected> {
        let mem = self.0.read().unwrap().clone();
        mem.select(req).await
    }
    async fn label_names(&self, req: LabelsRequest) -> Result<Named> {
        let mem = self.0.read().unwrap().clone();
        mem.label_names(req).await
    }
    async fn label_values(&self, name: &str, req: LabelsRequest) -> Result<Named> {
        let mem = self.0.read().unwrap().clone();
        mem.label_values(name, req).await
    }
}

#[async_trait::async_trait]
impl RuleSink for Store {
    async fn write(
        &self,
        samples: Vec<(Labels, i64, f64)>,
    ) -> std::result::Result<(), meridian_core::error::Error> {
        let mut mem = self.0.write().unwrap();
        for (l, t, v) in samples {
            let s = meridian_core::sample::Sample::new(t, v);
            match mem.series.iter_mut().find(|x| x.labels == l) {
                Some(x) => x.samples.push(s),
                None => mem.series.push(meridian_gateway::queryable::SeriesData {
                    labels: l,
                    samples: vec![s],
                    ..Default::default()
                }),
            }
        }
        Ok(())
    }
}

const INPUT: &[(&str, &str)] = &[
    (r#"http_errors_total{job="api"}"#, "0+30x5 150+120x10"),
    (r#"http_errors_total{job="web"}"#, "0+10x15"),
    (
        r#"up{job="node", instance="node-1:9100"}"#,
        "1 1 0 0 0 0 1 1 1 1 1 1 0 0 0 0",
    ),
    (r#"up{job="node", instance="node-2:9100"}"#, "1x15"),
    (r#"disk_used_bytes{instance="db-1"}"#, "95x15"),
    (r#"disk_size_bytes{instance="db-1"}"#, "1073741824x15"),
    (
        r#"disk_used_bytes{instance="app-1"}"#,
        "50 50 50 99 99 99 50x9",
    ),
    (r#"disk_size_bytes{instance="app-1"}"#, "100x15"),
];

const MINUTES: i64 = 15;

/// Meridian's firing alerts at every minute: `(minute, alertname) -> [(labels, annotations)]`.
type Firing = BTreeMap<(i64, String), Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>>;

async fn meridian_alerts(rules: &Path, external: &BTreeMap<String, String>) -> Firing {
    let store = Arc::new(Store::default());
    for (labels, values) in INPUT {
        let s = series_from_notation(labels, values, 60_000).unwrap();
        store.0.write().unwrap().series.push(s);
    }
    let q: Arc<dyn Queryable> = store.clone();
    let ctx = EvalContext {
        engine: Engine::default(),
        queryable: Arc::new(move |_| q.clone()),
        sink: store.clone(),
        alerts: None,
        external_labels: external.clone(),
        external_url: "http://meridian.example".into(),
        default_partial_response: PartialResponse::Abort,
        resend_delay: Duration::from_secs(60),
        for_outage_tolerance: Duration::from_secs(3600),
        for_grace_period: Duration::from_secs(600),
    };
    let specs = file::load(rules).unwrap();
    let groups: Vec<Group> = specs
        .into_iter()
        .map(|s| Group::new(s, Duration::from_secs(60)))
        .collect();
    let names: Vec<String> = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| matches!(r.spec.kind, file::RuleKind::Alert { .. }))
        .map(|r| r.spec.name.clone())
        .collect();
    let mut out = Firing::new();
    for minute in 0..=MINUTES {
        for g in &groups {
            g.eval(&ctx, minute * 60_000).await;
            for r in &g.rules {
                let st = r.health();
                assert_eq!(st.health, "ok", "{}: {}", r.spec.name, st.last_error);
            }
        }
        for name in &names {
            out.insert((minute, name.clone()), vec![]);
        }
        for g in &groups {
            for (name, a) in g.alerts() {
                if a.state != AlertState::Firing {
                    continue;
                }
                let labels = a
                    .labels
                    .iter()
                    .filter(|l| l.name != "alertname")
                    .map(|l| (l.name.to_owned(), l.value.to_owned()))
                    .collect();
                out.get_mut(&(minute, name))
                    .unwrap()
                    .push((labels, a.annotations));
            }
        }
    }
    out
}

fn yaml_map(m: &BTreeMap<String, String>, indent: &str) -> String {
    let mut s = String::new();
    for (k, v) in m {
        s.push_str(&format!(
            "{indent}{k}: {}\n",
            serde_json::to_string(v).unwrap()
        ));
    }
    if s.is_empty() {
        s = format!("{indent}{{}}\n");
    }
    s
}

/// A `promtool test rules` file expecting `firing`.
fn promtool_test(rules: &Path, external: &BTreeMap<String, String>, firing: &Firing) -> String {
    let mut t = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    external_labels:\n{}    external_url: http://meridian.example\n    input_series:\n",
        serde_json::to_string(&rules.display().to_string()).unwrap(),
        yaml_map(external, "      ")
    );
    for (labels, values) in INPUT {
        t.push_str(&format!(
            "      - series: {}\n        values: {}\n",
            serde_json::to_string(labels).unwrap(),
            serde_json::to_string(values).unwrap()
        ));
    }
    t.push_str("    alert_rule_test:\n");
    for ((minute, name), alerts) in firing {
        t.push_str(&format!(
            "      - eval_time: {minute}m\n        alertname: {name}\n"
        ));
        if alerts.is_empty() {
            t.push_str("        exp_alerts: []\n");
            continue;
        }
        t.push_str("        exp_alerts:\n");
        for (labels, annotations) in alerts {
            t.push_str("          - exp_labels:\n");
            t.push_str(&yaml_map(labels, "              "));
            t.push_str("            exp_annotations:\n");
            t.push_str(&yaml_map(annotations, "              "));
        }
    }
    t
}

#[tokio::test]
async fn firing_alerts_agree_with_promtool_test_rules() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/oracle.yml");
    let external: BTreeMap<String, String> = [("cluster".to_owned(), "eu-1".to_owned())].into();
    let firing = meridian_alerts(&rules, &external).await;
    // The rules must exercise every state: something fires, something does not, at some minutes.
    let total: usize = firing.values().map(Vec::len).sum();
    assert!(total > 10, "too few firing alerts to compare: {firing:?}");
    for name in ["HighErrorRate", "InstanceDown", "DiskAlmostFull"] {
        assert!(
            firing.iter().any(|((_, n), a)| n == name && !a.is_empty()),
            "{name} never fires"
        );
        assert!(
            firing.iter().any(|((_, n), a)| n == name && a.is_empty()),
            "{name} always fires"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let f = dir.path().join("test.yml");
        std::fs::write(&f, text).unwrap();
        meridian_testkit::status_and_output(
            std::process::Command::new(&promtool)
                .args(["test", "rules"])
                .arg(&f),
        )
    };
    let test = promtool_test(&rules, &external, &firing);
    let (ok, output) = run(&test);
    assert!(
        ok,
        "promtool disagrees with Meridian:\n{output}\n--- test file ---\n{test}"
    );

    // The oracle can fail: one changed annotation, and one alert dropped, are each caught.
    let mut changed = firing.clone();
    let (_, alerts) = changed.iter_mut().find(|(_, a)| !a.is_empty()).unwrap();
    alerts[0]
        .1
        .insert("summary".into(), "something else".into());
    let (ok, _) = run(&promtool_test(&rules, &external, &changed));
    assert!(!ok, "promtool accepted a changed annotation");
    let mut dropped = firing.clone();
    let (_, alerts) = dropped
        .iter_mut()
        .rev()
        .find(|(_, a)| !a.is_empty())
        .unwrap();
    alerts.pop();
    let (ok, _) = run(&promtool_test(&rules, &external, &dropped));
    assert!(!ok, "promtool accepted a missing alert");
}

/// Rule files `promtool check rules` accepts or rejects; Meridian must decide the same.
const CHECK_CASES: &[(&str, &str)] = &[
    ("empty", ""),
    ("no groups", "groups: []\n"),
    (
        "valid",
        "groups:\n- name: a\n  interval: 30s\n  limit: 10\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels: {team: infra}\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 10m\n    labels: {severity: page}\n    annotations:\n      summary: '{{ $labels.instance }} down for {{ $value | humanizeDuration }}'\n",
    ),
    (
        "numeric expr",
        "groups:\n- name: a\n  rules:\n  - record: one\n    expr: 1\n",
    ),
    ("empty group name", "groups:\n- name: ''\n  rules: []\n"),
    (
        "repeated group",
        "groups:\n- name: a\n  rules: []\n- name: a\n  rules: []\n",
    ),
    (
        "record and alert",
        "groups:\n- name: a\n  rules:\n  - record: x\n    alert: y\n    expr: up\n",
    ),
    (
        "neither record nor alert",
        "groups:\n- name: a\n  rules:\n  - expr: up\n",
    ),
    ("no expr", "groups:\n- name: a\n  rules:\n  - record: x\n"),
    (
        "bad expr",
        "groups:\n- name: a\n  rules:\n  - record: x\n    expr: 'sum(up'\n",
    ),
    (
        "bad record name",
        "groups:\n- name: a\n  rules:\n  - record: 'x-y'\n    expr: up\n",
    ),
    (
        "for on record",
        "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    for: 1m\n",
    ),
    (
        "annotations on record",
        "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    annotations: {a: b}\n",
    ),
    (
        "bad label name",
        "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    labels: {'1abc': v}\n",
    ),
    (
        "__name__ label",
        "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    labels: {__name__: v}\n",
    ),
    (
        "bad annotation name",
        "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    annotations: {'a-b': v}\n",
    ),
    (
        "bad template",
        "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    annotations: {a: '{{ $labels.x '}\n",
    ),
    (
        "unknown rule field",
        "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    severity: page\n",
    ),
    (
        "unknown group field",
        "groups:\n- name: a\n  evaluation: 1m\n  rules: []\n",
    ),
    (
        "bad duration",
        "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    for: 5 minutes\n",
    ),
    ("not yaml", "groups: [\n"),
];

#[test]
fn rule_file_checks_agree_with_promtool_check_rules() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    let mut rejected = 0;
    for (name, text) in CHECK_CASES {
        let f = dir.path().join("rules.yml");
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&f)
            .output()
            .unwrap();
        let theirs = out.status.success();
        let ours = file::load(&f);
        if !theirs {
            rejected += 1;
        }
        if theirs != ours.is_ok() {
            disagreements.push(format!(
                "{name}: promtool {} ({}), Meridian {:?}",
                if theirs { "accepts" } else { "rejects" },
                String::from_utf8_lossy(&out.stderr).trim(),
                ours.map(|g| g.len())
            ));
        }
    }
    assert!(rejected >= 10, "too few rejected cases: {rejected}");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// One HA rule evaluator: its rules over `store`, sending to `am` with its own replica label.
fn evaluator(
    rules: &Path,
    store: &Arc<Store>,
    notifier: Arc<meridian_gateway::alerting::notifier::Notifier>,
) -> (Vec<Group>, EvalContext) {
    let q: Arc<dyn Queryable> = store.clone();
    let ctx = EvalContext {
        engine: Engine::default(),
        queryable: Arc::new(move |_| q.clone()),
        sink: Arc::new(Store::default()),
        alerts: Some(notifier),
        external_labels: BTreeMap::new(),
        external_url: "http://meridian.example".into(),
        default_partial_response: PartialResponse::Abort,
        resend_delay: Duration::from_secs(60),
        for_outage_tolerance: Duration::from_secs(3600),
        for_grace_period: Duration::from_secs(600),
    };
    let groups = file::load(rules)
        .unwrap()
        .into_iter()
        .map(|s| Group::new(s, Duration::from_secs(60)))
        .collect();
    (groups, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_evaluators_make_one_alert_in_alertmanager_and_resolve_it() {
    use meridian_gateway::alerting::notifier::{Notifier, NotifierOptions, parse_url};
    let dir = tempfile::tempdir().unwrap();
    let Some((_am, am_addr)) = meridian_testkit::alertmanager(dir.path(), None) else {
        return;
    };
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - alert: NodeDown\n    expr: up == 0\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} is down'}\n",
    )
    .unwrap();
    let store = Arc::new(Store::default());
    let now = meridian_core::time::now_ms();
    let set_up = |v: f64, at: i64| {
        let mut s = series_from_notation(r#"up{job="node", instance="n1"}"#, "0", 1).unwrap();
        s.samples[0] = meridian_core::sample::Sample::new(at, v);
        *store.0.write().unwrap() = MemQueryable { series: vec![s] };
    };
    set_up(0.0, now);
    let mut stops = Vec::new();
    let mut evaluators = Vec::new();
    let mut notifiers = Vec::new();
    for replica in ["a", "b"] {
        let mut o = NotifierOptions::new(vec![
            parse_url(&format!("http://{am_addr}"), Duration::from_secs(5)).unwrap(),
        ]);
        o.external_labels = Labels::from_pairs([("cluster", "c1"), ("replica", replica)]);
        o.label_drop = vec!["replica".into()];
        let n = Notifier::new(o);
        n.refresh().await;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(n.clone().run(stop.clone()));
        stops.push(stop);
        evaluators.push(evaluator(&rules, &store, n.clone()));
        notifiers.push(n);
    }
    for (groups, ctx) in &evaluators {
        for g in groups {
            g.eval(ctx, now).await;
        }
    }
    let am = am_addr.clone();
    let _first = tokio::task::spawn_blocking(move || {
        meridian_testkit::wait_for(
            "an alert group in Alertmanager",
            Duration::from_secs(20),
            || {
                let g = meridian_testkit::http_get(&am, "/api/v2/alerts/groups").json();
                g.as_array().filter(|a| !a.is_empty()).map(|_| g.clone())
            },
        )
    })
    .await
    .unwrap();
    // Both evaluators sent; Alertmanager holds one group with one alert, without the replica label.
    let sent = |n: &Notifier| -> u64 {
        n.targets()
            .iter()
            .map(|t| {
                n.metrics
                    .sent
                    .get_or_create(&meridian_gateway::alerting::notifier::AmLabel {
                        alertmanager: t.clone(),
                    })
                    .get()
            })
            .sum()
    };
    for _ in 0..200 {
        if notifiers.iter().all(|n| sent(n) > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        notifiers.iter().all(|n| sent(n) == 1),
        "each evaluator sends its alert once"
    );
    let am = am_addr.clone();
    let groups = tokio::task::spawn_blocking(move || {
        meridian_testkit::http_get(&am, "/api/v2/alerts/groups").json()
    })
    .await
    .unwrap();
    let all = groups.as_array().unwrap();
    assert_eq!(all.len(), 1, "{groups}");
    let alerts = all[0]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "HA replicas' alerts must be one: {groups}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "NodeDown");
    assert_eq!(labels["cluster"], "c1");
    assert!(labels.get("replica").is_none(), "{labels}");
    assert_eq!(alerts[0]["annotations"]["summary"], "n1 is down");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert!(
        alerts[0]["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://meridian.example/graph?g0.expr=up+%3D%3D+0")
    );

    // The node comes back: both evaluators resolve the alert, and Alertmanager learns it.
    // Evaluated at the current time, so the resolved alert's endsAt is not in Alertmanager's future
    // (an alert still "valid" there keeps its later endsAt, as Alertmanager merges them).
    let later = meridian_core::time::now_ms().max(now + 1);
    set_up(1.0, later);
    for (groups, ctx) in &evaluators {
        for g in groups {
            g.eval(ctx, later).await;
        }
    }
    let am = am_addr.clone();
    tokio::task::spawn_blocking(move || {
        meridian_testkit::wait_for(
            "the alert resolved in Alertmanager",
            Duration::from_secs(20),
            || {
                let a = meridian_testkit::http_get(&am, "/api/v2/alerts?active=true").json();
                a.as_array().filter(|a| a.is_empty()).map(|_| ())
            },
        )
    })
    .await
    .unwrap();
    for s in stops {
        s.cancel();
    }
}

// ---- native routing next to amtool 0.25 ----

/// A routing tree with every kind of matcher, `continue`, nesting and inherited receivers.
const ROUTING: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"', 'team=~"db|infra"']
      receiver: pager
      continue: true
    - match: {team: db}
      receiver: db
      routes:
        - matchers: ['{env!="prod", instance!~"db-[0-9]+"}']
          receiver: db-nonprod
    - match_re: {service: "foo|ba.*"}
      receiver: services
      group_by: ['...']
      routes:
        - matchers: [env=staging]
          continue: true
        - matchers: ['env =~ "stag.*"', 'owner!=""']
          receiver: owners
        - matchers: ['path="a,b=\"c\""']
          receiver: quoted
    - matchers: ['severity=~"warn(ing)?"']
      continue: true
      receiver: warnings
    - matchers: ['severity!~"info|debug"', 'alertname=~".+"']
      receiver: named
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [cluster]
receivers:
  - name: default
  - name: pager
    webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]
  - name: db
  - name: db-nonprod
  - name: services
  - name: owners
  - name: quoted
  - name: warnings
  - name: named
"#;

/// Alerts (as `label=value` words) to route.
const ROUTED: &[&str] = &[
    "",
    "alertname=X",
    "severity=critical team=db",
    "severity=critical team=infra env=prod",
    "severity=critical team=web",
    "team=db env=prod",
    "team=db env=dev",
    "team=db env=dev instance=db-1",
    "team=db instance=web-1",
    "service=foo",
    "service=bar env=staging",
    "service=bar env=staging owner=me",
    "service=fooo env=stage owner=me",
    "service=baz env=staging owner=",
    "service=foo path=a,b=\"c\"",
    "service=foo path=a,b",
    "severity=warning",
    "severity=warn alertname=Y",
    "severity=warnings alertname=Y",
    "severity=info alertname=Y",
    "severity=critical team=db service=foo",
    "team=dbx",
    "alertname=",
];

#[test]
fn routing_tree_picks_the_receivers_amtool_picks() {
    let Some(amtool) = require("amtool", "apt-get install prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("alertmanager.yml");
    std::fs::write(&f, ROUTING).unwrap();
    let config = meridian_gateway::alerting::route::parse(ROUTING).unwrap();
    let mut disagreements = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    for words in ROUTED {
        let pairs: Vec<(String, String)> = words
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let mut cmd = std::process::Command::new(&amtool);
        cmd.args(["config", "routes", "test", "--config.file"])
            .arg(&f);
        // amtool reads label=value words as matchers: quote every value.
        for (k, v) in &pairs {
            cmd.arg(format!("{k}={}", serde_json::to_string(v).unwrap()));
        }
        let (ok, out) = meridian_testkit::status_and_output(&mut cmd);
        assert!(ok, "amtool failed for {words:?}: {out}");
        let theirs = out
            .lines()
            .rfind(|l| !l.starts_with("Warning:") && !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        // amtool leaves empty values out of the alert it routes (as Alertmanager drops empty labels).
        let labels = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let ours = config.route.receivers_for(&labels).join(",");
        distinct.insert(ours.clone());
        if theirs != ours {
            disagreements.push(format!("{words:?}: amtool {theirs:?}, Meridian {ours:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        distinct.len() >= 9,
        "the table reaches too few receivers: {distinct:?}"
    );
}

/// Routing configurations, accepted or rejected by Alertmanager's own check.
const ROUTING_CHECKS: &[(&str, &str)] = &[
    ("minimal", "route: {receiver: a}\nreceivers: [{name: a}]\n"),
    ("no route", "receivers: [{name: a}]\n"),
    (
        "root without receiver",
        "route: {group_by: [x]}\nreceivers: [{name: a}]\n",
    ),
    (
        "root matchers",
        "route: {receiver: a, matchers: [x=y]}\nreceivers: [{name: a}]\n",
    ),
    (
        "root continue",
        "route: {receiver: a, continue: true}\nreceivers: [{name: a}]\n",
    ),
    (
        "undefined receiver",
        "route: {receiver: a, routes: [{receiver: b}]}\nreceivers: [{name: a}]\n",
    ),
    (
        "duplicate receiver",
        "route: {receiver: a}\nreceivers: [{name: a}, {name: a}]\n",
    ),
    (
        "nameless receiver",
        "route: {receiver: a}\nreceivers: [{name: a}, {webhook_configs: []}]\n",
    ),
    (
        "bad matcher",
        "route: {receiver: a, routes: [{matchers: ['x']}]}\nreceivers: [{name: a}]\n",
    ),
    (
        "bad regex",
        "route: {receiver: a, routes: [{matchers: ['x=~\"(\"']}]}\nreceivers: [{name: a}]\n",
    ),
    (
        "bad match_re",
        "route: {receiver: a, routes: [{match_re: {x: '['}}]}\nreceivers: [{name: a}]\n",
    ),
    (
        "bad label in match",
        "route: {receiver: a, routes: [{match: {'a-b': x}}]}\nreceivers: [{name: a}]\n",
    ),
    (
        "group_by ... and more",
        "route: {receiver: a, group_by: ['...', x]}\nreceivers: [{name: a}]\n",
    ),
    (
        "group_by twice",
        "route: {receiver: a, group_by: [x, x]}\nreceivers: [{name: a}]\n",
    ),
    (
        "bad group_by",
        "route: {receiver: a, group_by: ['a-b']}\nreceivers: [{name: a}]\n",
    ),
    (
        "zero group_interval",
        "route: {receiver: a, group_interval: 0s}\nreceivers: [{name: a}]\n",
    ),
    (
        "zero repeat_interval",
        "route: {receiver: a, repeat_interval: 0s}\nreceivers: [{name: a}]\n",
    ),
    (
        "bad duration",
        "route: {receiver: a, group_wait: 5 minutes}\nreceivers: [{name: a}]\n",
    ),
    (
        "unknown route field",
        "route: {receiver: a, recevier: b}\nreceivers: [{name: a}]\n",
    ),
    (
        "webhook without url",
        "route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{}]}]\n",
    ),
    (
        "webhook without scheme",
        "route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{url: 'x/y'}]}]\n",
    ),
    (
        "full",
        "global: {resolve_timeout: 5m}\nroute:\n  receiver: a\n  group_by: ['...']\n  group_wait: 1s\n  routes:\n  - {matchers: ['{x=\"1\",y!~\"2\"}'], receiver: b, continue: true, group_by: [x]}\n  - {match: {x: '2'}, match_re: {y: '.*'}}\ninhibit_rules:\n- {source_match: {s: c}, target_match_re: {s: w}, equal: [x]}\nreceivers:\n- {name: a, webhook_configs: [{url: 'http://h:1/p', send_resolved: false, max_alerts: 3}]}\n- {name: b}\n",
    ),
    ("not yaml", "route: [\n"),
];

#[test]
fn routing_config_checks_agree_with_amtool_check_config() {
    let Some(amtool) = require("amtool", "apt-get install prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    let mut rejected = 0;
    for (name, text) in ROUTING_CHECKS {
        let f = dir.path().join("alertmanager.yml");
        std::fs::write(&f, text).unwrap();
        let (theirs, out) = meridian_testkit::status_and_output(
            std::process::Command::new(&amtool)
                .arg("check-config")
                .arg(&f),
        );
        let ours = meridian_gateway::alerting::route::load(&f);
        if !theirs {
            rejected += 1;
        }
        if theirs != ours.is_ok() {
            disagreements.push(format!(
                "{name}: amtool {} ({}), Meridian {:?}",
                if theirs { "accepts" } else { "rejects" },
                out.trim(),
                ours.err().map(|e| e.to_string())
            ));
        }
    }
    assert!(rejected >= 15, "too few rejected cases: {rejected}");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Alerts reach an Alertmanager that serves TLS and requires client certificates, configured as Thanos'
/// `--alertmanagers.config-file` configures it (`scheme: https`, `http_config.tls_config`); without
/// the client certificate the handshake fails and the send is counted as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_an_alertmanager_over_mutual_tls() {
    use meridian_gateway::alerting::notifier::{Notifier, NotifierOptions, parse_config};
    use meridian_gateway::rules::{AlertSink, OutAlert};
    use meridian_pki::issue::{self, KeyType, Usage, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = issue::new_ca("Meridian CA", KeyType::P256, Validity::days(30).unwrap()).unwrap();
    issue::write_pair(dir.path(), "ca", &ca, true).unwrap();
    let server = issue::issue(
        &ca,
        Usage::Server,
        "alertmanager",
        &["localhost".to_owned()],
        &[],
        KeyType::P256,
        Validity::days(7).unwrap(),
    )
    .unwrap();
    issue::write_pair(dir.path(), "server", &server, true).unwrap();
    let client = issue::issue(
        &ca,
        Usage::Client,
        "gateway",
        &[],
        &[],
        KeyType::P256,
        Validity::days(7).unwrap(),
    )
    .unwrap();
    issue::write_pair(dir.path(), "client", &client, true).unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    )
    .unwrap();
    let Some((_am, am_addr)) = meridian_testkit::alertmanager(dir.path(), Some(&web)) else {
        return;
    };
    let port = am_addr.rsplit_once(':').unwrap().1;
    let config = |client_cert: bool| {
        let pair = if client_cert {
            format!(
                "\n      cert_file: {}\n      key_file: {}",
                p("client.crt"),
                p("client.key")
            )
        } else {
            String::new()
        };
        format!(
            "alertmanagers:\n- static_configs: ['localhost:{port}']\n  scheme: https\n  http_config:\n    tls_config:\n      ca_file: {}{pair}\n",
            p("ca.crt")
        )
    };
    let now = meridian_core::time::now_ms();
    let alert = OutAlert {
        labels: Labels::from_pairs([("alertname", "TlsWorks"), ("severity", "page")]),
        annotations: BTreeMap::new(),
        starts_at: now,
        ends_at: now + 600_000,
        generator_url: "http://meridian.example/graph".into(),
    };
    let mut outcomes = Vec::new();
    for client_cert in [true, false] {
        let sets = parse_config(&config(client_cert), Duration::from_secs(5)).unwrap();
        let n = Notifier::new(NotifierOptions::new(sets));
        n.refresh().await;
        assert_eq!(n.targets().len(), 1);
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(n.clone().run(stop.clone()));
        n.send(vec![alert.clone()]);
        let label = meridian_gateway::alerting::notifier::AmLabel {
            alertmanager: n.targets()[0].clone(),
        };
        let mut outcome = (0, 0);
        for _ in 0..100 {
            outcome = (
                n.metrics.sent.get_or_create(&label).get(),
                n.metrics.errors.get_or_create(&label).get(),
            );
            if outcome != (0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        task.await.unwrap();
        outcomes.push(outcome);
    }
    assert_eq!(
        outcomes,
        [(1, 0), (0, 1)],
        "(sent, errors) with and without the client certificate"
    );
}
