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

pub mod enforce;
pub mod file;
pub mod template;
pub mod tsdb;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_core::sample::stale_nan;
use tokio_util::sync::CancellationToken;

use crate::promql::{Engine, QueryValue};
use crate::queryable::Queryable;
use file::{GroupSpec, RuleKind, RuleSpec};
use meridian_storeapi::partial::PartialResponse;

mod group;
mod manager;
mod views;
pub use manager::*;
pub use views::*;

/// Resolved alerts are kept (and re-sent) this long (Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where recording rules' and `ALERTS` samples go.
#[async_trait::async_trait]
pub trait RuleSink: Send + Sync {
    /// Appends samples, all in one commit.
    async fn write(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), Error>;
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

impl std::fmt::Debug for EvalContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext").finish_non_exhaustive()
    }
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
    /// The kind of the last evaluation's error (a timeout, bad data, a limit, ...); `None` when it
    /// succeeded.
    pub last_error_kind: Option<ErrorKind>,
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

fn vector_of(v: QueryValue, ts: i64) -> Result<Vec<(Labels, f64)>, Error> {
    match v {
        // Native-histogram results are left out: rules record and alert on floats only (a
        // histogram is not a float value; recording it is future work).
        QueryValue::Vector(v) => Ok(v
            .into_iter()
            .filter(|s| s.h.is_none())
            .map(|s| (s.labels, s.v))
            .collect()),
        QueryValue::Scalar { v, .. } => Ok(vec![(Labels::empty(), v)]),
        QueryValue::Matrix(_) | QueryValue::String { .. } => Err(Error::new(
            ErrorKind::Execution,
            format!("rule result is not a vector or scalar (at {ts})"),
        )),
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
