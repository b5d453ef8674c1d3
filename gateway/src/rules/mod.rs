//! Recording and alerting rules over the global, deduplicated view (as Thanos Ruler evaluates them).
//!
//! - [`file`]: rule files in Prometheus' format, checked as `promtool check rules` checks them.
//! - [`template`]: Go templates for alert labels and annotations, with Prometheus' functions.
//! - [`Group`]: one group's rules evaluated in order at one timestamp: a recording rule's samples are
//!   written (to the gateway's embedded TSDB) before the next rule runs, so later rules see them; an
//!   alerting rule runs Prometheus' state machine (`rules/alerting.go`): pending → firing after `for`,
//!   kept firing for `keep_firing_for` once the condition clears, then inactive (resolved) and kept — and
//!   re-sent — for 15 minutes. `ALERTS` and `ALERTS_FOR_STATE` are written for active alerts, and the
//!   `for` state is restored from `ALERTS_FOR_STATE` after a restart (`--for-outage-tolerance`,
//!   `--for-grace-period`, as Prometheus' `RestoreForState`).
//! - [`RuleManager`]: loads the files, runs every group at its interval, reloads (keeping the state of
//!   unchanged rules), and answers `/api/v1/rules` and `/api/v1/alerts`.

pub mod file;
pub mod template;
pub mod tsdb;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::sample::stale_nan;
use tokio_util::sync::CancellationToken;

use crate::fanout::PartialResponse;
use crate::promql::{Engine, QueryValue};
use crate::queryable::Queryable;
use file::{GroupSpec, RuleKind, RuleSpec};

/// Resolved alerts are kept (and re-sent) this long (Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where recording rules' and `ALERTS` samples go.
#[async_trait::async_trait]
pub trait RuleSink: Send + Sync {
    /// Appends samples, all in one commit.
    async fn write(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), String>;
}

/// Where alerts that need sending go (the Alertmanager sender, the native router, or both).
pub trait AlertSink: Send + Sync {
    fn send(&self, alerts: Vec<OutAlert>);
}

/// An alert as it leaves the rule evaluator (Prometheus' `notifier.Alert`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// ms.
    pub starts_at: i64,
    /// ms: the resolution time, or how long a firing alert stays valid without being re-sent.
    pub ends_at: i64,
    pub generator_url: String,
}

impl OutAlert {
    /// Whether the alert has ended at `now` (ms).
    pub fn resolved_at(&self, now: i64) -> bool {
        self.ends_at <= now
    }
}

/// Everything rule evaluation needs from the gateway.
#[derive(Clone)]
pub struct EvalContext {
    pub engine: Engine,
    /// The view for a partial-response strategy (dedup on).
    pub queryable: Arc<dyn Fn(PartialResponse) -> Arc<dyn Queryable> + Send + Sync>,
    pub sink: Arc<dyn RuleSink>,
    pub alerts: Option<Arc<dyn AlertSink>>,
    pub external_labels: BTreeMap<String, String>,
    /// `--alert.query-url` (Thanos) / `--web.external-url`: the base of `generatorURL`s.
    pub external_url: String,
    pub default_partial_response: PartialResponse,
    pub resend_delay: Duration,
    pub for_outage_tolerance: Duration,
    pub for_grace_period: Duration,
}

/// Alert states, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// An active (or recently resolved) alert of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub state: AlertState,
    /// ms.
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Prometheus' `needsSending`.
    fn needs_sending(&self, ts: i64, resend_delay: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        match (self.resolved_at, self.last_sent_at) {
            (Some(r), Some(l)) if r > l => true,
            (Some(_), None) => true,
            (_, None) => true,
            (_, Some(l)) => l + resend_delay <= ts,
        }
    }
}

/// How a rule's last evaluation went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleHealth {
    /// "unknown", "ok" or "err".
    pub health: &'static str,
    pub last_error: String,
    /// ms (wall clock of the evaluation timestamp).
    pub last_evaluation: Option<i64>,
    pub evaluation_seconds: f64,
}

#[derive(Debug, Default)]
struct RuleState {
    health: RuleHealth,
    /// Alerting rules: by label set.
    active: HashMap<Labels, Alert>,
    /// Series written at the last evaluation (for staleness markers).
    written: HashSet<Labels>,
    restored: bool,
}

/// A rule and its state.
#[derive(Debug)]
pub struct Rule {
    pub spec: RuleSpec,
    state: Mutex<RuleState>,
}

impl Rule {
    /// How the last evaluation went.
    pub fn health(&self) -> RuleHealth {
        lock(&self.state).health.clone()
    }
}

/// Group health and timing.
#[derive(Debug, Clone, Default)]
struct GroupTiming {
    last_evaluation: Option<i64>,
    evaluation_seconds: f64,
}

/// A rule group.
#[derive(Debug)]
pub struct Group {
    pub spec: GroupSpec,
    pub interval: Duration,
    pub rules: Vec<Rule>,
    /// Where the group's slots fall within its interval, ms.
    offset: i64,
    timing: Mutex<GroupTiming>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|x| (x.name.to_owned(), x.value.to_owned()))
        .collect()
}

fn vector_of(v: QueryValue, ts: i64) -> Result<Vec<(Labels, f64)>, String> {
    match v {
        QueryValue::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        QueryValue::Scalar { v, .. } => Ok(vec![(Labels::empty(), v)]),
        QueryValue::Matrix(_) | QueryValue::String { .. } => {
            Err(format!("rule result is not a vector or scalar (at {ts})"))
        }
    }
}

/// `externalURL/graph?g0.expr=...&g0.tab=1`, as Prometheus builds `generatorURL`.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!(
        "{}/graph?g0.expr={q}&g0.tab=1",
        external_url.trim_end_matches('/')
    )
}

impl Group {
    pub fn new(spec: GroupSpec, default_interval: Duration) -> Group {
        let interval = spec.interval.unwrap_or(default_interval);
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule {
                spec: r.clone(),
                state: Mutex::new(RuleState {
                    health: RuleHealth {
                        health: "unknown",
                        ..Default::default()
                    },
                    ..Default::default()
                }),
            })
            .collect();
        let offset = (xxhash_rust::xxh3::xxh3_64(
            format!("{};{}", spec.file.display(), spec.name).as_bytes(),
        ) % interval.as_millis().max(1) as u64) as i64;
        Group {
            spec,
            interval,
            rules,
            offset,
            timing: Mutex::new(GroupTiming::default()),
        }
    }

    /// The key a reload matches groups by.
    pub fn key(&self) -> (std::path::PathBuf, String) {
        (self.spec.file.clone(), self.spec.name.clone())
    }

    /// Takes over the state of `old`'s rules that have the same name, kind and expression, in order
    /// (Prometheus' `CopyState`): active alerts and their `for` progress survive a reload.
    pub fn copy_state(&self, old: &Group) {
        let mut taken = vec![false; old.rules.len()];
        for r in &self.rules {
            let found = old.rules.iter().enumerate().position(|(i, o)| {
                !taken[i]
                    && o.spec.name == r.spec.name
                    && o.spec.expr == r.spec.expr
                    && std::mem::discriminant(&o.spec.kind) == std::mem::discriminant(&r.spec.kind)
            });
            if let Some(i) = found {
                taken[i] = true;
                let mut o = lock(&old.rules[i].state);
                let mut n = lock(&r.state);
                n.active = std::mem::take(&mut o.active);
                n.written = std::mem::take(&mut o.written);
                n.restored = o.restored;
                n.health = o.health.clone();
            }
        }
        *lock(&self.timing) = lock(&old.timing).clone();
    }

    /// The timestamp (ms) of the evaluation slot at or before `now`: evaluations of a group happen at
    /// fixed points `offset + k * interval`, the offset spreading groups across the interval (as
    /// Prometheus' `EvalTimestamp`).
    pub fn slot_at(&self, now: i64) -> i64 {
        let interval = self.interval.as_millis().max(1) as i64;
        let adjusted = now - self.offset;
        adjusted - adjusted.rem_euclid(interval) + self.offset
    }

    /// Evaluates every rule at `ts` (ms), in order.
    pub async fn eval(&self, ctx: &EvalContext, ts: i64) {
        let started = std::time::Instant::now();
        let strategy = self
            .spec
            .partial_response
            .unwrap_or(ctx.default_partial_response);
        let q = (ctx.queryable)(strategy);
        let mut out_alerts = Vec::new();
        for rule in &self.rules {
            let t0 = std::time::Instant::now();
            let result = match &rule.spec.kind {
                RuleKind::Record => self.eval_record(ctx, &*q, rule, ts).await,
                RuleKind::Alert { .. } => self.eval_alert(ctx, &q, rule, ts, &mut out_alerts).await,
            };
            let mut st = lock(&rule.state);
            st.health = RuleHealth {
                health: if result.is_ok() { "ok" } else { "err" },
                last_error: result.err().unwrap_or_default(),
                last_evaluation: Some(ts),
                evaluation_seconds: t0.elapsed().as_secs_f64(),
            };
            if !st.health.last_error.is_empty() {
                tracing::warn!(group = %self.spec.name, rule = %rule.spec.name, error = %st.health.last_error, "rule evaluation failed");
            }
        }
        if let (Some(sink), false) = (&ctx.alerts, out_alerts.is_empty()) {
            sink.send(out_alerts);
        }
        *lock(&self.timing) = GroupTiming {
            last_evaluation: Some(ts),
            evaluation_seconds: started.elapsed().as_secs_f64(),
        };
    }

    /// Writes `samples` at `ts` and staleness markers for the rule's series that are gone.
    async fn write(
        &self,
        ctx: &EvalContext,
        rule: &Rule,
        ts: i64,
        samples: Vec<(Labels, f64)>,
    ) -> Result<(), String> {
        let now: HashSet<Labels> = samples.iter().map(|(l, _)| l.clone()).collect();
        let mut out: Vec<(Labels, i64, f64)> =
            samples.into_iter().map(|(l, v)| (l, ts, v)).collect();
        {
            let mut st = lock(&rule.state);
            for gone in st.written.difference(&now) {
                out.push((gone.clone(), ts, stale_nan()));
            }
            st.written = now;
        }
        ctx.sink.write(out).await
    }

    async fn eval_record(
        &self,
        ctx: &EvalContext,
        q: &dyn Queryable,
        rule: &Rule,
        ts: i64,
    ) -> Result<(), String> {
        let at = ts - self.spec.query_offset.as_millis() as i64;
        let res = ctx
            .engine
            .instant(q, &rule.spec.expr, at)
            .await
            .map_err(|e| e.message)?;
        let vector = vector_of(res.value, ts)?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(vector.len());
        for (labels, v) in vector {
            let mut b = labels.to_builder();
            b.set("__name__", &rule.spec.name);
            for (k, val) in &rule.spec.labels {
                if val.is_empty() {
                    b.del(k);
                } else {
                    b.set(k, val);
                }
            }
            let l = b.build();
            if !seen.insert(l.clone()) {
                return Err(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                );
            }
            out.push((l, v));
        }
        if self.spec.limit > 0 && out.len() > self.spec.limit {
            let n = out.len();
            let _ = self.write(ctx, rule, ts, vec![]).await;
            return Err(format!(
                "exceeded limit of {} with {n} series",
                self.spec.limit
            ));
        }
        self.write(ctx, rule, ts, out).await
    }

    async fn eval_alert(
        &self,
        ctx: &EvalContext,
        q: &Arc<dyn Queryable>,
        rule: &Rule,
        ts: i64,
        out_alerts: &mut Vec<OutAlert>,
    ) -> Result<(), String> {
        let RuleKind::Alert {
            hold,
            keep_firing_for,
            annotations,
        } = &rule.spec.kind
        else {
            return Ok(());
        };
        let hold = hold.as_millis() as i64;
        let keep_firing_for = keep_firing_for.as_millis() as i64;
        let at = ts - self.spec.query_offset.as_millis() as i64;
        let res = ctx
            .engine
            .instant(&**q, &rule.spec.expr, at)
            .await
            .map_err(|e| e.message)?;
        let vector = vector_of(res.value, ts)?;
        // Labels and annotations of every result sample, templates expanded.
        let expanded = self.expand(ctx, q, rule, annotations, &vector, ts).await?;
        let needs_restore = {
            let mut st = lock(&rule.state);
            let mut current = HashSet::new();
            for (labels, annotations, value) in expanded {
                if !current.insert(labels.clone()) {
                    return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
                }
                match st.active.get_mut(&labels) {
                    Some(a) if a.state != AlertState::Inactive => {
                        a.value = value;
                        a.annotations = annotations;
                    }
                    _ => {
                        st.active.insert(
                            labels.clone(),
                            Alert {
                                labels,
                                annotations,
                                value,
                                state: AlertState::Pending,
                                active_at: ts,
                                fired_at: None,
                                resolved_at: None,
                                last_sent_at: None,
                                valid_until: 0,
                                keep_firing_since: None,
                            },
                        );
                    }
                }
            }
            let mut num_active = 0;
            st.active.retain(|labels, a| {
                if current.contains(labels) {
                    a.keep_firing_since = None;
                } else {
                    let mut keep_firing = false;
                    if a.state == AlertState::Firing && keep_firing_for > 0 {
                        let since = *a.keep_firing_since.get_or_insert(ts);
                        keep_firing = ts - since < keep_firing_for;
                    }
                    if a.state == AlertState::Pending
                        || a.resolved_at
                            .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                    {
                        return false;
                    }
                    if a.state != AlertState::Inactive && !keep_firing {
                        a.state = AlertState::Inactive;
                        a.resolved_at = Some(ts);
                    }
                    if !keep_firing {
                        return true;
                    }
                }
                num_active += 1;
                if a.state == AlertState::Pending && ts - a.active_at >= hold {
                    a.state = AlertState::Firing;
                    a.fired_at = Some(ts);
                }
                true
            });
            if self.spec.limit > 0 && num_active > self.spec.limit {
                st.active.clear();
                Err(num_active)
            } else {
                Ok(!st.restored)
            }
        };
        let needs_restore = match needs_restore {
            Ok(r) => r,
            Err(n) => {
                let _ = self.write(ctx, rule, ts, vec![]).await;
                return Err(format!(
                    "exceeded limit of {} with {n} alerts",
                    self.spec.limit
                ));
            }
        };
        if needs_restore {
            self.restore(ctx, q, rule, ts, hold).await;
        }
        let mut samples = Vec::new();
        {
            let mut st = lock(&rule.state);
            let delta = ctx.resend_delay.max(self.interval).as_millis() as i64;
            let resend = ctx.resend_delay.as_millis() as i64;
            for a in st.active.values_mut() {
                if a.state != AlertState::Inactive {
                    let mut b = a.labels.to_builder();
                    b.set("__name__", "ALERTS");
                    b.set("alertstate", a.state.as_str());
                    samples.push((b.build(), 1.0));
                    let mut b = a.labels.to_builder();
                    b.set("__name__", "ALERTS_FOR_STATE");
                    samples.push((b.build(), (a.active_at / 1000) as f64));
                }
                if a.state == AlertState::Firing || a.resolved_at.is_some() {
                    if a.state == AlertState::Firing {
                        a.valid_until = ts + 4 * delta;
                    }
                    if a.needs_sending(ts, resend) {
                        a.last_sent_at = Some(ts);
                        out_alerts.push(OutAlert {
                            labels: a.labels.clone(),
                            annotations: a.annotations.clone(),
                            starts_at: a.fired_at.unwrap_or(a.active_at),
                            ends_at: a.resolved_at.unwrap_or(a.valid_until),
                            generator_url: generator_url(&ctx.external_url, &rule.spec.expr),
                        });
                    }
                }
            }
        }
        self.write(ctx, rule, ts, samples).await
    }

    /// Label sets, annotations and values of the alerts for `vector`.
    async fn expand(
        &self,
        ctx: &EvalContext,
        q: &Arc<dyn Queryable>,
        rule: &Rule,
        annotations: &BTreeMap<String, String>,
        vector: &[(Labels, f64)],
        ts: i64,
    ) -> Result<Vec<(Labels, BTreeMap<String, String>, f64)>, String> {
        let name = rule.spec.name.clone();
        let rule_labels = rule.spec.labels.clone();
        let annotations = annotations.clone();
        let external = ctx.external_labels.clone();
        let url = ctx.external_url.clone();
        let vector = vector.to_vec();
        let work = move || {
            vector
                .into_iter()
                .map(|(labels, value)| {
                    let map = to_map(&labels);
                    let data = template::AlertData {
                        labels: &map,
                        external_labels: &external,
                        external_url: &url,
                        value,
                    };
                    let mut b = labels.to_builder();
                    b.del("__name__");
                    for (k, v) in &rule_labels {
                        let v = template::expand(&name, v, &data);
                        if v.is_empty() {
                            b.del(k);
                        } else {
                            b.set(k, &v);
                        }
                    }
                    b.set("alertname", &name);
                    let ann = annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), template::expand(&name, v, &data)))
                        .collect();
                    (b.build(), ann, value)
                })
                .collect::<Vec<_>>()
        };
        let queries = rule.spec.labels.values().any(|v| template::uses_query(v))
            || rule
                .spec
                .kind
                .annotations()
                .values()
                .any(|v| template::uses_query(v));
        if !queries {
            return Ok(work());
        }
        // `query` blocks on the engine: run the expansion where blocking is allowed.
        let handle = tokio::runtime::Handle::current();
        let engine = ctx.engine.clone();
        let q = q.clone();
        tokio::task::spawn_blocking(move || {
            let f: Rc<template::QueryFn> = Rc::new(move |query: &str| {
                let r = handle
                    .block_on(engine.instant(&*q, query, ts))
                    .map_err(|e| e.message)?;
                Ok(vector_of(r.value, ts)?
                    .into_iter()
                    .map(|(l, v)| (to_map(&l), v))
                    .collect())
            });
            template::with_query(f, work)
        })
        .await
        .map_err(|e| format!("template expansion failed: {e}"))
    }

    /// Prometheus' `RestoreForState`: pending alerts whose `ALERTS_FOR_STATE` series was written
    /// within `--for-outage-tolerance` take their `activeAt` from it, moved forward by the downtime,
    /// and never fire sooner than `--for-grace-period` from now.
    async fn restore(
        &self,
        ctx: &EvalContext,
        q: &Arc<dyn Queryable>,
        rule: &Rule,
        ts: i64,
        hold: i64,
    ) {
        let tolerance = ctx.for_outage_tolerance.as_millis() as i64;
        let grace = ctx.for_grace_period.as_millis() as i64;
        if hold == 0 || hold < grace {
            lock(&rule.state).restored = true;
            return;
        }
        let query = format!(
            "ALERTS_FOR_STATE{{alertname={:?}}}[{}ms]",
            rule.spec.name, tolerance
        );
        let found = match ctx.engine.instant(&**q, &query, ts - 1).await {
            Ok(r) => match r.value {
                QueryValue::Matrix(m) => m,
                _ => vec![],
            },
            Err(e) => {
                tracing::warn!(rule = %rule.spec.name, error = %e.message, "cannot restore the for state");
                // Retried at the next evaluation.
                return;
            }
        };
        let mut st = lock(&rule.state);
        for series in found {
            let labels = series.labels.without(&["__name__"]);
            let Some(last) = series.samples.last() else {
                continue;
            };
            let Some(a) = st.active.get_mut(&labels) else {
                continue;
            };
            if a.state != AlertState::Pending {
                continue;
            }
            let down_at = last.t;
            let restored = last.v as i64 * 1000;
            let pending_for = down_at - restored;
            let remaining = hold - pending_for;
            let active_at = if remaining <= 0 {
                restored
            } else if remaining < grace {
                ts + grace - hold
            } else {
                restored + (ts - down_at)
            };
            a.active_at = active_at;
            tracing::info!(rule = %rule.spec.name, alert = %labels, "for state restored");
        }
        st.restored = true;
    }

    /// Active alerts of every rule (for the API and tests).
    pub fn alerts(&self) -> Vec<(String, Alert)> {
        let mut out = Vec::new();
        for r in &self.rules {
            let st = lock(&r.state);
            for a in st.active.values() {
                out.push((r.spec.name.clone(), a.clone()));
            }
        }
        out.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
        out
    }
}

impl RuleKind {
    /// An alerting rule's annotations (none for recording rules).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        match self {
            RuleKind::Alert { annotations, .. } => annotations,
            RuleKind::Record => &EMPTY,
        }
    }
}

/// How the gateway runs rules (`--rule-file` and the flags next to it, Thanos Ruler's names).
#[derive(Clone)]
pub struct RulesOptions {
    /// `--rule-file` patterns.
    pub files: Vec<String>,
    /// `--eval-interval`: groups without their own `interval`.
    pub eval_interval: Duration,
    /// `--data-dir`: the TSDB of recorded series and `ALERTS`.
    pub data_dir: std::path::PathBuf,
    /// `--label`: external labels of the rule TSDB's store and of sent alerts.
    pub external_labels: Labels,
    /// `--tsdb.retention` of the rule TSDB.
    pub retention: Duration,
    /// `--alert.query-url`: the base of `generatorURL`s.
    pub external_url: String,
    pub resend_delay: Duration,
    pub for_grace_period: Duration,
    pub for_outage_tolerance: Duration,
    /// The strategy of groups without `partial_response_strategy` (abort).
    pub partial_response: PartialResponse,
    /// Where alerts go besides the Alertmanager sender (the native router, tests).
    pub alert_sinks: Vec<Arc<dyn AlertSink>>,
    /// The Alertmanager sender (`--alertmanagers.url`): run, drained at shutdown and measured by the
    /// gateway.
    pub notifier: Option<Arc<crate::alerting::notifier::Notifier>>,
    /// The native router (`--alert.routing-config-file`): run and measured by the gateway.
    pub router: Option<Arc<crate::alerting::dispatch::Router>>,
}

impl RulesOptions {
    /// Thanos Ruler's defaults for everything but the files and the data directory.
    pub fn new(files: Vec<String>, data_dir: std::path::PathBuf) -> RulesOptions {
        RulesOptions {
            files,
            eval_interval: Duration::from_secs(60),
            data_dir,
            external_labels: Labels::empty(),
            retention: Duration::from_secs(48 * 3600),
            external_url: String::new(),
            resend_delay: Duration::from_secs(60),
            for_grace_period: Duration::from_secs(600),
            for_outage_tolerance: Duration::from_secs(3600),
            partial_response: PartialResponse::Abort,
            alert_sinks: Vec::new(),
            notifier: None,
            router: None,
        }
    }
}

/// Sends to several sinks.
pub struct FanoutSink(pub Vec<Arc<dyn AlertSink>>);

impl AlertSink for FanoutSink {
    fn send(&self, alerts: Vec<OutAlert>) {
        for s in &self.0 {
            s.send(alerts.clone());
        }
    }
}

/// Loads rule files, runs their groups and reloads them.
pub struct RuleManager {
    patterns: Vec<String>,
    default_interval: Duration,
    ctx: EvalContext,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    groups: RwLock<Vec<(Arc<Group>, CancellationToken)>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    stop: CancellationToken,
    reload_lock: tokio::sync::Mutex<()>,
    pub metrics: Arc<RuleMetrics>,
}

/// Rule self-metrics.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    pub evaluations: prometheus_client::metrics::counter::Counter,
    pub evaluation_failures: prometheus_client::metrics::counter::Counter,
    pub last_reload_successful: prometheus_client::metrics::gauge::Gauge,
    pub rule_groups: prometheus_client::metrics::gauge::Gauge,
}

impl RuleMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_rule_evaluations",
            "Rule evaluations.",
            self.evaluations.clone(),
        );
        r.register(
            "meridian_rule_evaluation_failures",
            "Rule evaluations that failed.",
            self.evaluation_failures.clone(),
        );
        r.register(
            "meridian_rule_config_last_reload_successful",
            "Whether the last rule file reload succeeded.",
            self.last_reload_successful.clone(),
        );
        r.register(
            "meridian_rule_groups",
            "Rule groups loaded.",
            self.rule_groups.clone(),
        );
    }
}

impl RuleManager {
    /// Loads the files; errors name every problem of every file.
    pub fn new(
        patterns: Vec<String>,
        default_interval: Duration,
        ctx: EvalContext,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<Arc<RuleManager>, String> {
        let m = Arc::new(RuleManager {
            patterns,
            default_interval,
            ctx,
            clock,
            groups: RwLock::new(Vec::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            stop: CancellationToken::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            metrics: Arc::new(RuleMetrics::default()),
        });
        let specs = m.load()?;
        let groups: Vec<_> = specs
            .into_iter()
            .map(|s| {
                (
                    Arc::new(Group::new(s, default_interval)),
                    CancellationToken::new(),
                )
            })
            .collect();
        m.metrics.rule_groups.set(groups.len() as i64);
        m.metrics.last_reload_successful.set(1);
        *m.groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
        Ok(m)
    }

    fn load(&self) -> Result<Vec<GroupSpec>, String> {
        file::load_all(&self.patterns).map_err(|es| {
            es.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// The loaded groups.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Starts a loop per group (call once).
    pub fn start(self: &Arc<Self>) {
        let groups: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (g, stop) in groups {
            self.spawn(g, stop);
        }
    }

    fn spawn(self: &Arc<Self>, g: Arc<Group>, stop: CancellationToken) {
        let me = self.clone();
        let mut tasks = lock(&self.tasks);
        // Loops of groups replaced by reloads have ended: reap them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let interval = g.interval.as_millis().max(1) as i64;
            let mut last = i64::MIN;
            loop {
                let now = (me.clock)();
                let next = g.slot_at(now) + interval;
                let wait = Duration::from_millis((next - now).max(0) as u64);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = me.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let ts = g.slot_at((me.clock)());
                if ts <= last {
                    // The wall clock stepped back: never evaluate one slot twice.
                    continue;
                }
                last = ts;
                g.eval(&me.ctx, ts).await;
                me.metrics.evaluations.inc_by(g.rules.len() as u64);
                let failed = g
                    .rules
                    .iter()
                    .filter(|r| lock(&r.state).health.health == "err")
                    .count();
                me.metrics.evaluation_failures.inc_by(failed as u64);
            }
        });
    }

    /// Reloads the files: changed groups replace the old ones (taking over unchanged rules' state),
    /// removed groups stop. A file with errors keeps everything as it is.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let _one = self.reload_lock.lock().await;
        let specs = match self.load() {
            Ok(s) => s,
            Err(e) => {
                self.metrics.last_reload_successful.set(0);
                tracing::error!(error = %e, "rule files not reloaded");
                return Err(e);
            }
        };
        let old: Vec<_> = std::mem::take(
            &mut *self
                .groups
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut new = Vec::new();
        let mut old_by_key: HashMap<_, _> = old
            .into_iter()
            .map(|(g, stop)| (g.key(), (g, stop)))
            .collect();
        for s in specs {
            let g = Group::new(s, self.default_interval);
            match old_by_key.remove(&g.key()) {
                Some((o, stop)) if o.spec == g.spec && o.interval == g.interval => {
                    new.push((o, stop));
                }
                Some((o, stop)) => {
                    stop.cancel();
                    g.copy_state(&o);
                    let g = Arc::new(g);
                    let stop = CancellationToken::new();
                    self.spawn(g.clone(), stop.clone());
                    new.push((g, stop));
                }
                None => {
                    let g = Arc::new(g);
                    let stop = CancellationToken::new();
                    self.spawn(g.clone(), stop.clone());
                    new.push((g, stop));
                }
            }
        }
        for (_, (_, stop)) in old_by_key {
            stop.cancel();
        }
        self.metrics.rule_groups.set(new.len() as i64);
        self.metrics.last_reload_successful.set(1);
        *self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        tracing::info!("rule files reloaded");
        Ok(())
    }

    /// Watches the rule files' directories and reloads on change (and every 30 s).
    pub fn watch(self: &Arc<Self>) {
        use notify::{RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut dirs: Vec<std::path::PathBuf> = self
            .patterns
            .iter()
            .map(|p| {
                std::path::Path::new(p)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let watcher = notify::recommended_watcher(move |_e: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| {
            for d in &dirs {
                w.watch(d, RecursiveMode::NonRecursive)?;
            }
            Ok(w)
        });
        let me = self.clone();
        lock(&self.tasks).spawn(async move {
            let _watcher = watcher
                .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the rule files; checking every 30s"))
                .ok();
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = me.fingerprint();
            loop {
                tokio::select! {
                    () = me.stop.cancelled() => return,
                    _ = rx.recv() => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = tick.tick() => {}
                }
                let now = me.fingerprint();
                if now != last {
                    last = now;
                    let _ = me.reload().await;
                }
            }
        });
    }

    /// The rule files' names and contents, to tell a real change from an unrelated event.
    fn fingerprint(&self) -> u64 {
        let mut h = 0u64;
        if let Ok(files) = file::expand_globs(&self.patterns) {
            for f in files {
                let text = std::fs::read(&f).unwrap_or_default();
                h ^= xxhash_rust::xxh3::xxh3_64(f.to_string_lossy().as_bytes())
                    .wrapping_mul(31)
                    .wrapping_add(xxhash_rust::xxh3::xxh3_64(&text));
            }
        }
        h
    }

    /// Stops every group loop and the watcher, waiting for evaluations in flight.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while tasks.join_next().await.is_some() {}
    }

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

fn labels_object(m: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn time_json(ms: Option<i64>) -> String {
    meridian_core::time::rfc3339(
        ms.map(|t| std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(t).unwrap_or(0))),
    )
}

fn alert_json(a: &Alert) -> serde_json::Value {
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
