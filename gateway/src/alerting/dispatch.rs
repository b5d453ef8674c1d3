//! The native router (`--alert.routing-config-file`): Alertmanager's dispatcher, inhibitor and webhook
//! notifier, so a small installation needs no Alertmanager.
//!
//! The pieces follow Alertmanager 0.25 (`dispatch/dispatch.go`, `inhibit/inhibit.go`,
//! `notify/notify.go`, `notify/webhook`):
//!
//! - Every alert goes to each route node [`Route::matching`] picks, into the **aggregation group** of
//!   that node and the alert's `group_by` labels.
//! - A new group waits `group_wait`, then flushes every `group_interval`. An alert that is already
//!   older than `group_wait` when its new group is made flushes the group at once.
//! - A flush drops the alerts an inhibit rule mutes, then, per webhook, decides from the
//!   notification log whether anything needs saying (Alertmanager's `DedupStage`): a new firing alert;
//!   every alert resolved; a newly resolved alert when `send_resolved`; else `repeat_interval` since the
//!   last notification.
//! - Webhooks get payload version 4, over http or https with their `http_config` (TLS, basic auth,
//!   authorization). Firing alerts show `endsAt` as Go's zero time. A failed POST is
//!   retried with exponential backoff (500 ms × 1.5, at most 60 s apart) until the next flush is due.
//!   Only network errors and 5xx answers are retried; a 4xx is final, as in Alertmanager's
//!   `Retrier`.
//! - After a successful flush, resolved alerts leave the group. Empty groups are removed every 30 s.
//!
//! Not done here: silences, time intervals, proxies, and gossip between HA routers. Two HA gateways
//! routing natively each notify (Alertmanager's cluster would deduplicate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_core::labels::Labels;
use meridian_core::relabel::RelabelConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::route::{InhibitRule, LabelSet, Receiver, Route, RoutingConfig, Webhook};
use crate::rules::{AlertSink, OutAlert};

/// How often empty aggregation groups and resolved inhibiting alerts are cleaned up.
const MAINTENANCE: Duration = Duration::from_secs(30);
/// Notification log entries older than this are forgotten (Alertmanager's default `--data.retention`).
const NFLOG_RETENTION_MS: i64 = 120 * 3600 * 1000;

/// A failed webhook POST.
#[derive(Debug, Clone)]
pub struct SendError {
    /// Whether trying again may help (network errors and 5xx answers).
    pub retry: bool,
    pub message: String,
}

/// Delivers one webhook payload: the seam tests replace to watch notifications under paused time.
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync {
    async fn post(&self, hook: &Webhook, body: Bytes) -> Result<(), SendError>;
}

/// HTTP POSTs with the webhook's `http_config`, each bounded by a timeout.
#[derive(Debug)]
pub struct HttpSender {
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl WebhookSender for HttpSender {
    async fn post(&self, hook: &Webhook, body: Bytes) -> Result<(), SendError> {
        match hook.http.post(&hook.url, body, self.timeout).await {
            Ok(()) => Ok(()),
            Err(e) => Err(SendError {
                retry: e.status.is_none_or(|s| s / 100 == 5),
                message: e.message,
            }),
        }
    }
}

/// Router settings.
#[derive(Clone)]
pub struct RouterOptions {
    pub config: RoutingConfig,
    /// Applied to every alert before routing, as for Alertmanager (external labels added, then
    /// `--alert.label-drop`, then `alert_relabel_configs`).
    pub external_labels: Labels,
    pub label_drop: Vec<String>,
    pub relabel: Vec<RelabelConfig>,
    /// The payloads' `externalURL`.
    pub external_url: String,
    pub sender: Arc<dyn WebhookSender>,
    /// Wall-clock ms (injected so tests under paused time control it).
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for RouterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOptions").finish_non_exhaustive()
    }
}

impl RouterOptions {
    pub fn new(config: RoutingConfig) -> RouterOptions {
        RouterOptions {
            config,
            external_labels: Labels::empty(),
            label_drop: Vec::new(),
            relabel: Vec::new(),
            external_url: String::new(),
            sender: Arc::new(HttpSender {
                timeout: Duration::from_secs(10),
            }),
            clock: Arc::new(meridian_core::time::now_ms),
        }
    }
}

/// The router's self-metrics.
#[derive(Debug, Clone, Default)]
pub struct RouterMetrics {
    pub notifications: Family<ReceiverLabel, Counter>,
    pub failed: Family<ReceiverLabel, Counter>,
    pub groups: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReceiverLabel {
    pub receiver: String,
}

impl RouterMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_router_notifications",
            "Webhook notifications sent by the native router",
            self.notifications.clone(),
        );
        r.register(
            "meridian_router_notifications_failed",
            "Webhook notifications that failed after every retry",
            self.failed.clone(),
        );
        r.register(
            "meridian_router_aggregation_groups",
            "Aggregation groups of the native router",
            self.groups.clone(),
        );
    }
}

/// One alert in the router (Alertmanager's `types.Alert`).
#[derive(Debug, Clone)]
struct Alert {
    labels: LabelSet,
    annotations: BTreeMap<String, String>,
    starts_at: i64,
    /// 0: Go's zero time (a firing alert, as flushes show it).
    ends_at: i64,
    generator_url: String,
    fingerprint: u64,
    /// Bumped at every update, so a flush only deletes the resolved alerts it notified about.
    version: u64,
}

impl Alert {
    fn resolved_at(&self, now: i64) -> bool {
        self.ends_at != 0 && self.ends_at <= now
    }
}

/// Prometheus' `model.LabelSet.Fingerprint`: FNV-1a over sorted names and values, each followed by
/// the byte 0xff.
pub fn fingerprint(labels: &LabelSet) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(v.as_bytes());
    }
    h
}

/// Go's `%q` of a label set, as `model.LabelSet.String()` prints it: `{a="b", c="d"}`.
fn labelset_string(labels: &LabelSet) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        let _ = meridian_core::labels::write_go_quoted(&mut out, v);
    }
    out.push('}');
    out
}

/// Go's `regexp.QuoteMeta` (Alertmanager quotes the receiver name in its template data).
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What was last notified for one group and webhook (Alertmanager's notification log entry).
#[derive(Debug, Clone)]
struct LogEntry {
    firing: HashSet<u64>,
    resolved: HashSet<u64>,
    at: i64,
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &HashSet<u64>,
    resolved: &HashSet<u64>,
    send_resolved: bool,
    repeat: Duration,
    now: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        // Everything that was notified as firing is resolved now (said even without send_resolved,
        // so the log forgets the firing alerts); alerts that fired and resolved between two flushes
        // were never told and need no word.
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at < now - repeat.as_millis() as i64
}

/// Alertmanager's inhibitor: per rule, the alerts that match its source side.
struct Inhibitor {
    rules: Vec<InhibitRule>,
    sources: Vec<HashMap<u64, Alert>>,
}

impl Inhibitor {
    fn new(rules: Vec<InhibitRule>) -> Inhibitor {
        let sources = rules.iter().map(|_| HashMap::new()).collect();
        Inhibitor { rules, sources }
    }

    fn observe(&mut self, a: &Alert) {
        for (rule, cache) in self.rules.iter().zip(&mut self.sources) {
            if rule.source.matches(&a.labels) {
                cache.insert(a.fingerprint, a.clone());
            }
        }
    }

    /// `Inhibitor.Mutes`: a target is muted by an unresolved source with the same `equal` labels; when
    /// the target also matches the source side, sources that match the target side too don't count.
    fn mutes(&self, labels: &LabelSet, now: i64) -> bool {
        let value = |l: &LabelSet, n: &str| l.get(n).map_or("", String::as_str).to_owned();
        self.rules.iter().zip(&self.sources).any(|(rule, cache)| {
            if !rule.target.matches(labels) {
                return false;
            }
            let two_sided = rule.source.matches(labels);
            cache.values().any(|s| {
                !s.resolved_at(now)
                    && rule
                        .equal
                        .iter()
                        .all(|n| value(&s.labels, n) == value(labels, n))
                    && !(two_sided && rule.target.matches(&s.labels))
            })
        })
    }

    fn gc(&mut self, now: i64) {
        for cache in &mut self.sources {
            cache.retain(|_, a| !a.resolved_at(now));
        }
    }
}

/// State shared by the dispatcher and the group tasks.
struct Shared {
    opts: RouterOptions,
    receivers: HashMap<String, Receiver>,
    inhibitor: Mutex<Inhibitor>,
    nflog: Mutex<HashMap<(String, String, usize), LogEntry>>,
    metrics: RouterMetrics,
}

/// One aggregation group (Alertmanager's `aggrGroup`).
struct Group {
    receiver: String,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    labels: LabelSet,
    key: String,
    state: Mutex<GroupState>,
    wake: Notify,
    stop: CancellationToken,
}

struct GroupState {
    alerts: HashMap<u64, Alert>,
    has_flushed: bool,
    next: Instant,
}

impl Group {
    fn insert(&self, mut a: Alert, now: i64) {
        let mut st = lock(&self.state);
        if let Some(old) = st.alerts.get(&a.fingerprint) {
            // As Alertmanager's merge: an alert that continues keeps its first start.
            if !old.resolved_at(a.starts_at) {
                a.starts_at = a.starts_at.min(old.starts_at);
            }
        }
        let flush_now = !st.has_flushed && a.starts_at + (self.group_wait.as_millis() as i64) < now;
        st.alerts.insert(a.fingerprint, a);
        if flush_now {
            st.next = Instant::now();
            drop(st);
            self.wake.notify_one();
        }
    }

    fn is_empty(&self) -> bool {
        lock(&self.state).alerts.is_empty()
    }

    async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        loop {
            let next = lock(&self.state).next;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => continue,
                () = self.stop.cancelled() => return,
            }
            {
                let mut st = lock(&self.state);
                st.next = Instant::now() + self.group_interval;
                st.has_flushed = true;
            }
            let flush = self.flush(&shared);
            // A flush has until the next one is due, as Alertmanager's notification context.
            let ok = tokio::select! {
                r = tokio::time::timeout(self.group_interval, flush) => r.unwrap_or(false),
                () = self.stop.cancelled() => return,
            };
            if !ok {
                shared
                    .metrics
                    .failed
                    .get_or_create(&ReceiverLabel {
                        receiver: self.receiver.clone(),
                    })
                    .inc();
            }
        }
    }

    /// Notifies about the group's alerts; true when every webhook succeeded (or had nothing to say).
    async fn flush(&self, shared: &Shared) -> bool {
        let now = (shared.opts.clock)();
        let mut alerts: Vec<Alert> = {
            let st = lock(&self.state);
            if st.alerts.is_empty() {
                return true;
            }
            st.alerts.values().cloned().collect()
        };
        for a in &mut alerts {
            if !a.resolved_at(now) {
                a.ends_at = 0;
            }
        }
        // Alertmanager's `types.AlertSlice` order: job, then instance, then the whole label set.
        alerts.sort_by(|a, b| {
            let key = |x: &Alert, n: &str| x.labels.get(n).cloned();
            key(a, "job")
                .cmp(&key(b, "job"))
                .then_with(|| key(a, "instance").cmp(&key(b, "instance")))
                .then_with(|| a.labels.cmp(&b.labels))
        });
        let ok = self.notify(shared, &alerts, now).await;
        if ok {
            let mut st = lock(&self.state);
            for a in alerts.iter().filter(|a| a.resolved_at(now)) {
                if st
                    .alerts
                    .get(&a.fingerprint)
                    .is_some_and(|cur| cur.version == a.version)
                {
                    st.alerts.remove(&a.fingerprint);
                }
            }
        }
        ok
    }

    async fn notify(&self, shared: &Shared, alerts: &[Alert], now: i64) -> bool {
        let alerts: Vec<&Alert> = {
            let inhibitor = lock(&shared.inhibitor);
            alerts
                .iter()
                .filter(|a| !inhibitor.mutes(&a.labels, now))
                .collect()
        };
        if alerts.is_empty() {
            return true;
        }
        let Some(receiver) = shared.receivers.get(&self.receiver) else {
            return true;
        };
        let firing: HashSet<u64> = alerts
            .iter()
            .filter(|a| !a.resolved_at(now))
            .map(|a| a.fingerprint)
            .collect();
        let resolved: HashSet<u64> = alerts
            .iter()
            .filter(|a| a.resolved_at(now))
            .map(|a| a.fingerprint)
            .collect();
        let sends = receiver.webhooks.iter().enumerate().map(|(i, hook)| {
            let log_key = (self.key.clone(), receiver.name.clone(), i);
            let firing = &firing;
            let resolved = &resolved;
            let alerts = &alerts;
            async move {
                let entry = lock(&shared.nflog).get(&log_key).cloned();
                if !needs_update(
                    entry.as_ref(),
                    firing,
                    resolved,
                    hook.send_resolved,
                    self.repeat_interval,
                    now,
                ) {
                    return true;
                }
                // Without send_resolved, only firing alerts are sent, and nothing when none fire; the
                // log still records the resolution.
                let sent: Vec<&Alert> = if hook.send_resolved {
                    alerts.clone()
                } else {
                    alerts
                        .iter()
                        .copied()
                        .filter(|a| !a.resolved_at(now))
                        .collect()
                };
                if !sent.is_empty() {
                    let body = self.payload(shared, &sent, hook.max_alerts, now);
                    if !deliver(shared.opts.sender.as_ref(), hook, body).await {
                        return false;
                    }
                    shared
                        .metrics
                        .notifications
                        .get_or_create(&ReceiverLabel {
                            receiver: receiver.name.clone(),
                        })
                        .inc();
                }
                lock(&shared.nflog).insert(
                    log_key,
                    LogEntry {
                        firing: firing.clone(),
                        resolved: resolved.clone(),
                        at: now,
                    },
                );
                true
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// The webhook payload, version 4.
    fn payload(&self, shared: &Shared, alerts: &[&Alert], max_alerts: u64, now: i64) -> Bytes {
        let keep = match usize::try_from(max_alerts) {
            Ok(0) | Err(_) => alerts.len(),
            Ok(n) => n.min(alerts.len()),
        };
        let (alerts, truncated) = (&alerts[..keep], alerts.len() - keep);
        let status = |a: &Alert| {
            if a.resolved_at(now) {
                "resolved"
            } else {
                "firing"
            }
        };
        let common = |get: &dyn Fn(&Alert) -> &BTreeMap<String, String>| {
            let mut c = alerts.first().map(|a| get(a).clone()).unwrap_or_default();
            for a in alerts.iter().skip(1) {
                c.retain(|k, v| get(a).get(k) == Some(v));
            }
            c
        };
        let body = serde_json::json!({
            "receiver": quote_meta(&self.receiver),
            "status": if alerts.iter().any(|a| !a.resolved_at(now)) { "firing" } else { "resolved" },
            "alerts": alerts.iter().map(|a| serde_json::json!({
                "status": status(a),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": super::rfc3339_ms(a.starts_at),
                "endsAt": if a.ends_at == 0 { "0001-01-01T00:00:00Z".to_owned() } else { super::rfc3339_ms(a.ends_at) },
                "generatorURL": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint),
            })).collect::<Vec<_>>(),
            "groupLabels": self.labels,
            "commonLabels": common(&|a| &a.labels),
            "commonAnnotations": common(&|a| &a.annotations),
            "externalURL": shared.opts.external_url,
            "version": "4",
            "groupKey": self.key,
            "truncatedAlerts": truncated,
        });
        Bytes::from(body.to_string())
    }
}

/// POSTs until it succeeds, the error is final, or the caller's deadline cancels it. Backoff as the
/// `cenkalti/backoff` defaults Alertmanager uses (500 ms, ×1.5, at most 60 s), without jitter.
async fn deliver(sender: &dyn WebhookSender, hook: &Webhook, body: Bytes) -> bool {
    let url = hook.url.as_str();
    let mut wait = Duration::from_millis(500);
    let mut last = String::new();
    loop {
        match sender.post(hook, body.clone()).await {
            Ok(()) => return true,
            Err(e) if !e.retry => {
                tracing::warn!(url, error = %e.message, "webhook refused the notification");
                return false;
            }
            Err(e) => {
                if e.message != last {
                    tracing::warn!(url, error = %e.message, "webhook failed; retrying");
                    last = e.message;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait.mul_f64(1.5)).min(Duration::from_secs(60));
    }
}

/// The native router: an [`AlertSink`] whose alerts are routed, grouped, inhibited and sent to
/// webhooks.
pub struct Router {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Vec<Alert>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Alert>>>>,
    version: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(opts: RouterOptions) -> Arc<Router> {
        let (tx, rx) = mpsc::unbounded_channel();
        let receivers = opts
            .config
            .receivers
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        let inhibitor = Mutex::new(Inhibitor::new(opts.config.inhibit_rules.clone()));
        Arc::new(Router {
            shared: Arc::new(Shared {
                opts,
                receivers,
                inhibitor,
                nflog: Mutex::new(HashMap::new()),
                metrics: RouterMetrics::default(),
            }),
            tx,
            rx: Mutex::new(Some(rx)),
            version: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn metrics(&self) -> &RouterMetrics {
        &self.shared.metrics
    }

    /// The receivers an alert with these labels (after external labels and relabeling) goes to.
    pub fn receivers_for(&self, labels: &LabelSet) -> Vec<String> {
        self.shared.opts.config.route.receivers_for(labels)
    }

    /// Routes alerts until `stop`; the group tasks stop with it. Runs once.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = lock(&self.rx).take() else {
            return;
        };
        let tasks = TaskTracker::new();
        let mut groups: HashMap<(usize, u64), Arc<Group>> = HashMap::new();
        let mut maintenance = tokio::time::interval(MAINTENANCE);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    let now = (self.shared.opts.clock)();
                    for a in batch {
                        self.dispatch(a, now, &mut groups, &tasks, &stop);
                    }
                }
                _ = maintenance.tick() => {
                    let now = (self.shared.opts.clock)();
                    groups.retain(|_, g| {
                        let keep = !g.is_empty();
                        if !keep {
                            g.stop.cancel();
                        }
                        keep
                    });
                    lock(&self.shared.inhibitor).gc(now);
                    lock(&self.shared.nflog).retain(|_, e| e.at > now - NFLOG_RETENTION_MS);
                    self.shared.metrics.groups.set(groups.len() as i64);
                }
                () = stop.cancelled() => break,
            }
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    fn dispatch(
        &self,
        a: Alert,
        now: i64,
        groups: &mut HashMap<(usize, u64), Arc<Group>>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) {
        lock(&self.shared.inhibitor).observe(&a);
        for route in self.shared.opts.config.route.matching(&a.labels) {
            let labels = route.group_labels(&a.labels);
            let id = (route.id, fingerprint(&labels));
            let g = groups.entry(id).or_insert_with(|| {
                let g = Arc::new(new_group(route, labels, stop.child_token()));
                tasks.spawn(g.clone().run(self.shared.clone()));
                g
            });
            g.insert(a.clone(), now);
        }
        self.shared.metrics.groups.set(groups.len() as i64);
    }
}

fn new_group(route: &Route, labels: LabelSet, stop: CancellationToken) -> Group {
    Group {
        receiver: route.receiver.clone(),
        group_wait: route.group_wait,
        group_interval: route.group_interval,
        repeat_interval: route.repeat_interval,
        key: format!("{}:{}", route.key, labelset_string(&labels)),
        labels,
        state: Mutex::new(GroupState {
            alerts: HashMap::new(),
            has_flushed: false,
            next: Instant::now() + route.group_wait,
        }),
        wake: Notify::new(),
        stop,
    }
}

impl AlertSink for Router {
    fn send(&self, alerts: Vec<OutAlert>) {
        let o = &self.shared.opts;
        let batch: Vec<Alert> = alerts
            .into_iter()
            .filter_map(|a| {
                let labels = super::process_labels(
                    &a.labels,
                    &o.external_labels,
                    &o.label_drop,
                    &o.relabel,
                )?;
                let labels: LabelSet = labels
                    .iter()
                    .map(|l| (l.name.to_owned(), l.value.to_owned()))
                    .collect();
                Some(Alert {
                    fingerprint: fingerprint(&labels),
                    labels,
                    annotations: a.annotations,
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                    generator_url: a.generator_url,
                    version: self
                        .version
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                })
            })
            .collect();
        if !batch.is_empty() {
            let _ = self.tx.send(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::alerting::route::label_set as ls;

    #[test]
    fn fingerprints_and_group_keys_are_alertmanagers() {
        // Values from Prometheus' model: an empty set hashes to the FNV offset.
        assert_eq!(fingerprint(&LabelSet::new()), 14_695_981_039_346_656_037);
        // prometheus/common model's TestMetricToFingerprint.
        assert_eq!(
            fingerprint(&ls(&[
                ("name", "garland, briggs"),
                ("fear", "love is not enough")
            ])),
            5_799_056_148_416_392_346
        );
        assert_eq!(
            labelset_string(&ls(&[("b", "x\"y"), ("a", "1")])),
            r#"{a="1", b="x\"y"}"#
        );
        assert_eq!(quote_meta("team.db-1"), r"team\.db-1");
    }

    #[test]
    fn dedup_stage_decides_as_alertmanager() {
        let set = |v: &[u64]| v.iter().copied().collect::<HashSet<u64>>();
        let rep = Duration::from_secs(3600);
        assert!(!needs_update(None, &set(&[]), &set(&[1]), true, rep, 0));
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, rep, 0));
        let e = LogEntry {
            firing: set(&[1, 2]),
            resolved: set(&[]),
            at: 0,
        };
        // (firing, resolved, send_resolved, now, expected)
        type Case<'a> = (&'a [u64], &'a [u64], bool, i64, bool);
        let cases: [Case<'_>; 6] = [
            (&[1, 2], &[], true, 1000, false),
            (&[1, 3], &[], true, 1000, true),
            (&[1], &[2], true, 1000, true),
            (&[1], &[2], false, 1000, false),
            (&[], &[1, 2], false, 1000, true),
            (&[1, 2], &[], true, 3_600_001, true),
        ];
        for (firing, resolved, send_resolved, now, want) in cases {
            let got = needs_update(
                Some(&e),
                &set(firing),
                &set(resolved),
                send_resolved,
                rep,
                now,
            );
            assert_eq!(got, want, "{firing:?} {resolved:?} {send_resolved} {now}");
        }
    }
}
