//! One target's scrape loop: fetch, parse, label, append, report, mark stale — Prometheus' `scrapeLoop`.
//!
//! - **Timing.** The first scrape waits for the target's offset within the interval: a hash of its labels
//!   (xor a seed from the external labels) modulo the interval, measured against the wall clock, so a
//!   fleet's scrapes spread evenly and the same target is scraped at the same phase after a restart.
//!   Samples carry the scrape's start time unless `honor_timestamps` and the sample has its own.
//! - **Labels.** Target labels are attached to every sample; a clash renames the exposed label to
//!   `exported_<name>` (repeatedly, until free), unless `honor_labels` keeps the exposed value. Then
//!   `metric_relabel_configs` run. The result is cached per series *text* (`name{...}` as exposed), so
//!   steady-state scrapes neither relabel nor allocate label sets — Prometheus' scrape cache.
//! - **Staleness.** Series of the last successful scrape that are missing now get a stale marker at this
//!   scrape's timestamp; a failed scrape (HTTP error, parse error, a limit) marks all of them. Series with
//!   explicit timestamps are never marked. When the target goes away its series and its report series
//!   are marked too.
//! - **Report series**: `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling`, `scrape_series_added`.
//! - **Limits**: `sample_limit` (counted after relabeling; the whole scrape fails, as in Prometheus, and
//!   creates no series), `label_limit`, `label_name_length_limit`, `label_value_length_limit`, and the
//!   body size limit.
//! - **Refused samples** (out of order, duplicate, out of bounds: more than 10 minutes ahead, too old,
//!   outside years 1..=9999) are skipped and the rest of the scrape stored; `up` stays 1, as in
//!   Prometheus, and the target's `lastError` says how many were refused and why.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::http::{Conn, HttpClient};
use super::parse::{Entry, Format, Parser};
use super::target::Target;
use crate::config::ScrapeConfig;
use crate::metadata::{Meta, MetadataStore, TargetKey};
use meridian_core::histogram::HistogramValue;
use meridian_core::labels::{Labels, LabelsBuilder};
use meridian_core::relabel::{RelabelConfig, process_builder};
use meridian_core::sample::stale_nan;
use meridian_tsdb::db::{Appender, Db};
use meridian_tsdb::head::AppendError;

/// Scrape cache entries unseen for this many scrapes are forgotten.
const CACHE_KEEP_ITERATIONS: u64 = 10;

/// What a loop needs from its job's configuration.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Native histograms over protobuf (`scrape_native_histograms`): the classic series of a native
    /// histogram are kept only with `classic_histograms`.
    pub native_histograms: bool,
    pub classic_histograms: bool,
    /// 0 = unlimited.
    pub native_histogram_bucket_limit: u64,
    /// At most 1 = none.
    pub native_histogram_min_bucket_factor: f64,
}

impl LoopSettings {
    pub fn from_config(cfg: &ScrapeConfig) -> LoopSettings {
        LoopSettings {
            honor_labels: cfg.honor_labels,
            honor_timestamps: cfg.honor_timestamps,
            sample_limit: cfg.sample_limit,
            label_limit: cfg.label_limit,
            label_name_length_limit: cfg.label_name_length_limit,
            label_value_length_limit: cfg.label_value_length_limit,
            metric_relabel_configs: cfg.metric_relabel_configs.clone(),
            native_histograms: cfg.native_histograms,
            classic_histograms: cfg.classic_histograms,
            native_histogram_bucket_limit: cfg.native_histogram_bucket_limit,
            native_histogram_min_bucket_factor: cfg.native_histogram_min_bucket_factor,
        }
    }
}

struct CacheEntry {
    r: u64,
    labels: Labels,
    last_iter: u64,
}

/// A loop's memory: scrape cache and staleness tracking. Survives a config reload (handed to the
/// replacement loop), as Prometheus hands its scrape cache over.
#[derive(Default)]
pub struct LoopState {
    series: HashMap<Box<str>, CacheEntry>,
    /// Series text that metric relabeling dropped, with the iteration last seen.
    dropped: HashMap<Box<str>, u64>,
    /// Series (without explicit timestamps) of the last successful scrape.
    prev: HashSet<Labels>,
    /// Report series references.
    report: Vec<(Labels, u64)>,
    iter: u64,
    /// Timestamp of the last scrape appended (ms), 0 before the first.
    pub last_ts: i64,
    /// TYPE/HELP/UNIT by family as exposed, with the iteration last seen.
    metadata: HashMap<Box<str>, (Meta, u64)>,
    /// The metadata changed since it was last published.
    metadata_changed: bool,
}

impl std::fmt::Debug for LoopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopState").finish_non_exhaustive()
    }
}

/// The outcome of one scrape, for the report series and the targets API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeOutcome {
    pub scraped: u64,
    pub post_relabel: u64,
    pub series_added: u64,
    /// Samples refused by the TSDB (out of order, duplicate, out of bounds): skipped, not fatal.
    pub rejected: u64,
    pub error: Option<String>,
    /// When samples were refused: how many, and the first reason (the target's `lastError`; the scrape
    /// still succeeded and `up` is 1, as in Prometheus).
    pub warning: Option<String>,
}

/// A scrape's body.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Text(&'a str, Format),
    Protobuf(&'a super::protobuf::Exposition),
}

/// A scraped sample's value.
enum Value {
    F(f64),
    H(Box<HistogramValue>),
}

/// The five report series names.
pub const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl LoopState {
    pub fn new() -> LoopState {
        LoopState::default()
    }

    /// Appends one scrape of a text body: `body` is the response (or why there is none), `ts` the
    /// scrape start (ms).
    pub fn append_scrape(
        &mut self,
        db: &Db,
        target_labels: &Labels,
        s: &LoopSettings,
        body: Result<(&str, Format), String>,
        ts: i64,
        duration: Duration,
    ) -> Result<ScrapeOutcome, AppendError> {
        let body = body.map(|(t, f)| Body::Text(t, f));
        self.append_scrape_body(db, target_labels, s, body, ts, duration)
    }

    /// [`LoopState::append_scrape`] for a body in any exposition format.
    pub fn append_scrape_body(
        &mut self,
        db: &Db,
        target_labels: &Labels,
        s: &LoopSettings,
        body: Result<Body<'_>, String>,
        ts: i64,
        duration: Duration,
    ) -> Result<ScrapeOutcome, AppendError> {
        self.iter += 1;
        let mut out = ScrapeOutcome::default();
        let mut app = db.appender();
        let mut cur: HashSet<Labels> = HashSet::with_capacity(self.prev.len());
        let had_body = body.is_ok();
        let res = match body {
            Ok(Body::Text(text, format)) => self.append_body(
                &mut app,
                target_labels,
                s,
                Parser::new(text, format).map(|e| e.map_err(|e| e.to_string())),
                ts,
                &mut cur,
                &mut out,
            ),
            Ok(Body::Protobuf(e)) => self.append_body(
                &mut app,
                target_labels,
                s,
                e.entries().map(Ok),
                ts,
                &mut cur,
                &mut out,
            ),
            Err(e) => Err(e),
        };
        // Forget cache entries unseen for a while, also after a scrape refused while appending: a
        // target refused every time (e.g. over sample_limit with new label values each scrape) must
        // not grow the cache. A scrape without a body (target down) keeps it, as Prometheus does.
        let iter = self.iter;
        if had_body {
            self.series
                .retain(|_, e| iter - e.last_iter <= CACHE_KEEP_ITERATIONS);
            self.dropped
                .retain(|_, i| iter - *i <= CACHE_KEEP_ITERATIONS);
        }
        match res {
            Ok(()) => {
                for gone in self.prev.difference(&cur) {
                    stale(&mut app, gone, ts);
                }
                self.prev = cur;
                let before = self.metadata.len();
                self.metadata
                    .retain(|_, (_, i)| iter - *i <= CACHE_KEEP_ITERATIONS);
                self.metadata_changed |= self.metadata.len() != before;
            }
            Err(e) => {
                app.rollback();
                app = db.appender();
                for gone in &self.prev {
                    stale(&mut app, gone, ts);
                }
                self.prev.clear();
                out.error = Some(e);
                out.rejected = 0;
                out.warning = None;
            }
        }
        self.append_report(&mut app, target_labels, ts, duration, &out);
        self.last_ts = ts;
        app.commit()?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_body<'e>(
        &mut self,
        app: &mut Appender<'_>,
        target_labels: &Labels,
        s: &LoopSettings,
        entries: impl Iterator<Item = Result<Entry<'e>, String>>,
        ts: i64,
        cur: &mut HashSet<Labels>,
        out: &mut ScrapeOutcome,
    ) -> Result<(), String> {
        let mut lb = LabelsBuilder::new();
        let mut limit_err: Option<String> = None;
        let mut first_rejection: Option<String> = None;
        for entry in entries {
            let entry = entry?;
            let (name, series, labels, value, timestamp) = match entry {
                Entry::Sample {
                    name,
                    series,
                    labels,
                    value,
                    timestamp,
                    ..
                } => (name, series, labels, Value::F(value), timestamp),
                Entry::Histogram {
                    name,
                    series,
                    labels,
                    value,
                    timestamp,
                } => {
                    let (limit, factor) = (
                        s.native_histogram_bucket_limit,
                        s.native_histogram_min_bucket_factor,
                    );
                    let h = super::protobuf::limit_buckets(value, limit, factor)?;
                    (name, series, labels, Value::H(Box::new(h)), timestamp)
                }
                Entry::Help { metric, text } => {
                    self.set_meta(metric, |m| replace(&mut m.help, text.as_ref()));
                    continue;
                }
                Entry::Type { metric, kind } => {
                    let kind = kind.as_str();
                    self.set_meta(metric, |m| std::mem::replace(&mut m.kind, kind) != kind);
                    continue;
                }
                Entry::Unit { metric, unit } => {
                    self.set_meta(metric, |m| replace(&mut m.unit, unit));
                    continue;
                }
            };
            out.scraped += 1;
            if self.dropped.contains_key(series) {
                if let Some(i) = self.dropped.get_mut(series) {
                    *i = self.iter;
                }
                continue;
            }
            let (r, lset, cached) = match self.series.get_mut(series) {
                Some(e) => {
                    e.last_iter = self.iter;
                    (Some(e.r), e.labels.clone(), true)
                }
                None => {
                    lb.clear();
                    lb.set("__name__", name);
                    for (n, v) in labels.iter() {
                        lb.set(n, &v);
                    }
                    let Some(lset) = sample_labels(&mut lb, target_labels, s) else {
                        self.dropped.insert(series.into(), self.iter);
                        continue;
                    };
                    if !lset.has("__name__") {
                        return Err(format!(
                            "metric name label is missing after relabeling of {series}"
                        ));
                    }
                    check_label_limits(&lset, s)?;
                    (None, lset, false)
                }
            };
            out.post_relabel += 1;
            if s.sample_limit > 0 && out.post_relabel > s.sample_limit {
                // Keep counting so the report says how many there were. Nothing of this scrape is
                // committed, and new series are created only at commit (Prometheus' limit appender
                // refuses the scrape as a whole).
                limit_err.get_or_insert_with(|| {
                    format!("sample limit exceeded (limit {})", s.sample_limit)
                });
                continue;
            }
            let explicit = timestamp.filter(|_| s.honor_timestamps);
            let t = explicit.unwrap_or(ts);
            let mut r = match r {
                Some(r) => r,
                None => app.series_ref(&lset),
            };
            let mut reresolved = false;
            let append = |app: &mut Appender<'_>, r: u64| match &value {
                Value::F(v) => app.append(r, t, *v),
                Value::H(h) => app.append_histogram(r, t, (**h).clone()),
            };
            let res = match append(app, r) {
                Err(AppendError::UnknownRef(_)) => {
                    // The series left the head since we cached it: resolve it again.
                    r = app.series_ref(&lset);
                    reresolved = true;
                    append(app, r)
                }
                other => other,
            };
            match res {
                Ok(()) => {}
                Err(e) if e.is_client_error() => {
                    out.rejected += 1;
                    first_rejection.get_or_insert_with(|| e.to_string());
                }
                Err(e) => return Err(e.to_string()),
            }
            if !cached {
                out.series_added += 1;
            }
            if !cached || reresolved {
                self.series.insert(
                    series.into(),
                    CacheEntry {
                        r,
                        labels: lset.clone(),
                        last_iter: self.iter,
                    },
                );
            }
            if explicit.is_none() {
                cur.insert(lset);
            }
        }
        if let Some(first) = first_rejection {
            out.warning = Some(format!(
                "{} sample(s) refused by the TSDB, the rest stored; first: {first}",
                out.rejected
            ));
        }
        match limit_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Updates a family's metadata; `update` says whether it changed anything.
    fn set_meta(&mut self, family: &str, update: impl FnOnce(&mut Meta) -> bool) {
        let iter = self.iter;
        match self.metadata.get_mut(family) {
            Some((m, seen)) => {
                *seen = iter;
                self.metadata_changed |= update(m);
            }
            None => {
                let mut m = Meta {
                    kind: "unknown",
                    help: String::new(),
                    unit: String::new(),
                };
                update(&mut m);
                self.metadata.insert(family.into(), (m, iter));
                self.metadata_changed = true;
            }
        }
    }

    /// The families' metadata if it changed since the last call.
    pub fn take_metadata_update(&mut self) -> Option<Vec<(String, Meta)>> {
        if !std::mem::take(&mut self.metadata_changed) {
            return None;
        }
        Some(
            self.metadata
                .iter()
                .map(|(f, (m, _))| (f.to_string(), m.clone()))
                .collect(),
        )
    }

    fn append_report(
        &mut self,
        app: &mut Appender<'_>,
        target_labels: &Labels,
        ts: i64,
        duration: Duration,
        out: &ScrapeOutcome,
    ) {
        if self.report.is_empty() {
            self.report = REPORT_NAMES
                .iter()
                .map(|n| {
                    let mut lb = target_labels.to_builder();
                    lb.set("__name__", n);
                    let l = lb.build();
                    let r = app.series_ref(&l);
                    (l, r)
                })
                .collect();
        }
        let values = [
            if out.error.is_none() { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            out.scraped as f64,
            out.post_relabel as f64,
            out.series_added as f64,
        ];
        for (i, v) in values.into_iter().enumerate() {
            let (l, r) = &mut self.report[i];
            if let Err(AppendError::UnknownRef(_)) = app.append(*r, ts, v) {
                *r = app.series_ref(l);
                let _ = app.append(*r, ts, v);
            }
        }
    }

    /// Marks every series of the last scrape and the report series stale (the target went away).
    pub fn stale_all(&mut self, db: &Db, ts: i64) -> Result<(), AppendError> {
        let ts = ts.max(self.last_ts + 1);
        let mut app = db.appender();
        for l in self.prev.drain() {
            stale(&mut app, &l, ts);
        }
        for (l, _) in &self.report {
            stale(&mut app, l, ts);
        }
        app.commit()?;
        Ok(())
    }
}

/// Sets `field` to `value`; whether it changed.
fn replace(field: &mut String, value: &str) -> bool {
    if field == value {
        return false;
    }
    value.clone_into(field);
    true
}

fn stale(app: &mut Appender<'_>, labels: &Labels, ts: i64) {
    let r = app.series_ref(labels);
    // A refusal (the series already has a sample at `ts`) is fine: it is not extended past it.
    let _ = app.append(r, ts, stale_nan());
}

/// Attaches the target labels to an exposed label set (Prometheus' `mutateSampleLabels`) and runs
/// metric relabeling; `None` when relabeling dropped it.
pub fn sample_labels(
    lb: &mut LabelsBuilder,
    target_labels: &Labels,
    s: &LoopSettings,
) -> Option<Labels> {
    if s.honor_labels {
        for l in target_labels.iter() {
            if lb.get(l.name).is_none() {
                lb.set(l.name, l.value);
            }
        }
    } else {
        let exposed = lb.pairs();
        let has = |n: &str| exposed.iter().any(|(k, _)| k == n);
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for l in target_labels.iter() {
            if let Some(v) = lb.get(l.name) {
                conflicts.push((l.name.to_owned(), v.to_owned()));
            }
            lb.set(l.name, l.value);
        }
        // Shorter names first, each prefixed with `exported_` until it collides with nothing.
        conflicts.sort_by_key(|(n, _)| n.len());
        let mut taken: Vec<String> = Vec::new();
        for (name, value) in &conflicts {
            let mut new = name.clone();
            loop {
                new = format!("exported_{new}");
                if !has(&new) && !target_labels.has(&new) && !taken.contains(&new) {
                    break;
                }
            }
            lb.set(&new, value);
            taken.push(new);
        }
    }
    if !process_builder(lb, &s.metric_relabel_configs) {
        return None;
    }
    let l = lb.build();
    (!l.is_empty()).then_some(l)
}

fn check_label_limits(l: &Labels, s: &LoopSettings) -> Result<(), String> {
    let short = || {
        let t = l.to_string();
        t.chars().take(50).collect::<String>()
    };
    if s.label_limit > 0 && l.len() as u64 > s.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            short(),
            l.len(),
            s.label_limit
        ));
    }
    for lab in l.iter() {
        if s.label_name_length_limit > 0 && lab.name.len() as u64 > s.label_name_length_limit {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {})",
                short(),
                lab.name,
                lab.name.len(),
                s.label_name_length_limit
            ));
        }
        if s.label_value_length_limit > 0 && lab.value.len() as u64 > s.label_value_length_limit {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {})",
                short(),
                lab.name,
                lab.value,
                lab.value.len(),
                s.label_value_length_limit
            ));
        }
    }
    Ok(())
}

/// The target's health as the targets API shows it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `None` before the first scrape.
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
    pub last_error: Option<String>,
    /// The last scrape succeeded but samples of it were refused (shown as `lastError`, health stays up).
    pub last_warning: Option<String>,
    pub last_samples: u64,
}

/// How a loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// The target is gone: mark its series stale.
    Remove,
    /// A replacement loop takes over (config reload): hand the state over, write nothing.
    Handover,
}

/// A running loop's handle parts.
#[derive(Debug)]
pub struct LoopContext {
    pub target: Target,
    /// The target's labels without `__` labels (what its series carry).
    pub public: Labels,
    pub settings: LoopSettings,
    pub client: Arc<HttpClient>,
    pub path_and_query: String,
    pub db: Arc<Db>,
    pub health: Arc<Mutex<Health>>,
    /// Mixed into the start offset (Prometheus' `offsetSeed`).
    pub offset_seed: u64,
    /// Where the target's metadata is published, under `metadata_key`.
    pub metadata: Arc<MetadataStore>,
    pub metadata_key: TargetKey,
}

use meridian_core::time::now_ms;

/// The delay until this target's next scrape phase (Prometheus' `Target.offset`).
pub fn start_offset(target_hash: u64, seed: u64, interval: Duration, now: SystemTime) -> Duration {
    let iv = interval.as_nanos().max(1);
    let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let base = iv - now_ns % iv;
    let offset = u128::from(target_hash ^ seed) % iv;
    let mut next = base + offset;
    if next > iv {
        next -= iv;
    }
    Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

/// Runs the loop until `stop` fires; returns the state for a handover (`None` if it was consumed).
pub async fn run(
    ctx: LoopContext,
    mut state: LoopState,
    stop: tokio::sync::watch::Receiver<Option<StopMode>>,
) -> Option<LoopState> {
    let mut stop = stop;
    let mut conn = Conn::default();
    let interval = ctx.target.interval;
    let first = start_offset(
        ctx.target.labels.hash_value(),
        ctx.offset_seed,
        interval,
        SystemTime::now(),
    );
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let db = ctx.db.clone();
    let ctx = Arc::new(ctx);
    let mode = loop {
        tokio::select! {
            biased;
            r = stop.changed() => {
                let m = if r.is_err() { Some(StopMode::Remove) } else { *stop.borrow() };
                if let Some(m) = m { break m; }
            }
            _ = ticker.tick() => {
                state = scrape_once(&ctx, state, &mut conn).await;
            }
        }
    };
    match mode {
        StopMode::Handover => Some(state),
        StopMode::Remove => {
            ctx.metadata.remove(&ctx.metadata_key);
            let ts = now_ms();
            let res = tokio::task::spawn_blocking(move || state.stale_all(&db, ts)).await;
            if let Ok(Err(e)) = res {
                tracing::warn!(target = %ctx.public, error = %e, "could not write stale markers");
            }
            None
        }
    }
}

/// One scrape: fetch, then parse and append on the blocking pool.
pub async fn scrape_once(ctx: &Arc<LoopContext>, state: LoopState, conn: &mut Conn) -> LoopState {
    let start_wall = now_ms();
    let start = Instant::now();
    let resp = ctx
        .client
        .get(
            conn,
            ctx.target.address(),
            &ctx.path_and_query,
            ctx.target.timeout,
        )
        .await;
    let fetched = start.elapsed();
    let ctx2 = ctx.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut state = state;
        // The body is parsed where it was received: no copy. A protobuf body is decoded first
        // (only when the job asked for it: otherwise it is not one of the formats asked for).
        let proto = match &resp {
            Ok(r)
                if ctx2.settings.native_histograms
                    && r.content_type
                        .trim_start()
                        .starts_with(super::protobuf::PROTOBUF_CONTENT_TYPE) =>
            {
                Some(super::protobuf::Exposition::decode(
                    &r.body,
                    ctx2.settings.classic_histograms,
                ))
            }
            _ => None,
        };
        let body: Result<Body<'_>, String> = match (&resp, &proto) {
            (_, Some(Ok(e))) => Ok(Body::Protobuf(e)),
            (_, Some(Err(e))) => Err(e.clone()),
            (Ok(r), None) => match std::str::from_utf8(&r.body) {
                Ok(s) => Ok(Body::Text(s, Format::from_content_type(&r.content_type))),
                Err(_) => Err("response body is not valid UTF-8".to_string()),
            },
            (Err(e), None) => Err(e.to_string()),
        };
        let out = state.append_scrape_body(
            &ctx2.db,
            &ctx2.public,
            &ctx2.settings,
            body,
            start_wall,
            fetched,
        );
        (state, out)
    })
    .await;
    let (mut state, out) = match res {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "scrape append task failed");
            return LoopState::new();
        }
    };
    if let Some(families) = state.take_metadata_update() {
        ctx.metadata.publish(ctx.metadata_key.clone(), families);
    }
    let mut h = ctx
        .health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    h.last_scrape =
        Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(start_wall).unwrap_or(0)));
    h.last_duration = fetched;
    match out {
        Ok(o) => {
            if let Some(e) = &o.error {
                tracing::debug!(target = %ctx.public, error = %e, "scrape failed");
            }
            h.last_error = o.error;
            h.last_warning = o.warning;
            h.last_samples = o.post_relabel;
        }
        Err(e) => {
            tracing::warn!(target = %ctx.public, error = %e, "storing a scrape failed");
            h.last_error = Some(format!("storage: {e}"));
            h.last_warning = None;
        }
    }
    state
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meridian_core::matcher::Matcher;
    use meridian_core::sample::is_stale_nan;
    use meridian_tsdb::db::DbOptions;

    fn settings() -> LoopSettings {
        LoopSettings {
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            metric_relabel_configs: vec![],
            native_histograms: true,
            classic_histograms: false,
            native_histogram_bucket_limit: 0,
            native_histogram_min_bucket_factor: 0.0,
        }
    }

    /// A protobuf scrape stores a native histogram (its bucket limit applied by lowering the
    /// resolution) beside the float series; a histogram over the limit even at schema -4 fails the
    /// scrape.
    #[test]
    fn protobuf_scrapes_store_native_histograms_within_the_bucket_limit() {
        use super::super::protobuf::{Exposition, pb};
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let h = pb::Histogram {
            sample_count: 10,
            sample_sum: 4.5,
            schema: 2,
            zero_threshold: 0.001,
            positive_span: vec![pb::BucketSpan {
                offset: 0,
                length: 8,
            }],
            positive_delta: vec![1, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        let mut body = Vec::new();
        pb::MetricFamily {
            name: "lat".into(),
            r#type: pb::HISTOGRAM,
            metric: vec![pb::Metric {
                histogram: Some(h),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_length_delimited(&mut body)
        .unwrap();
        let e = Exposition::decode(&body, false).unwrap();
        let target = Labels::from_pairs([("job", "j"), ("instance", "i")]);
        let s = LoopSettings {
            native_histogram_bucket_limit: 3,
            ..settings()
        };
        let mut st = LoopState::new();
        let d = Duration::from_millis(5);
        let now = meridian_core::time::now_ms();
        let out = st
            .append_scrape_body(&db, &target, &s, Ok(Body::Protobuf(&e)), now, d)
            .unwrap();
        assert_eq!(out.error, None);
        let sel = db
            .select(&[Matcher::equal("__name__", "lat")], 0, i64::MAX, true)
            .unwrap();
        let (_, got) = meridian_core::chunkenc::read_histograms(&sel[0].chunks[0].data).unwrap();
        // Buckets 0..=7 of one observation each at schema 2 are 0, 1..=4 and 5..=7 at schema 0
        // (5 at schema 1 are still over the limit of 3): counts 1, 4, 3 as deltas.
        assert_eq!(got[0].1.schema, 0);
        assert_eq!(got[0].1.positive_buckets, vec![1, 3, -1]);
        let tight = LoopSettings {
            native_histogram_bucket_limit: 1,
            ..settings()
        };
        let out = st
            .append_scrape_body(&db, &target, &tight, Ok(Body::Protobuf(&e)), now + 1000, d)
            .unwrap();
        assert!(
            out.error
                .as_deref()
                .is_some_and(|e| e.contains("bucket_limit")),
            "{out:?}"
        );
    }

    fn series(db: &Db) -> Vec<(String, Vec<(i64, f64)>)> {
        db.samples(
            &[Matcher::new(meridian_core::MatchType::Regex, "__name__", ".+").unwrap()],
            0,
            i64::MAX,
        )
        .unwrap()
        .into_iter()
        .map(|(l, s)| (l.to_string(), s.into_iter().map(|s| (s.t, s.v)).collect()))
        .collect()
    }

    #[test]
    fn labels_clash_and_honor() {
        let target = Labels::from_pairs([("job", "j"), ("instance", "i:1")]);
        let mut lb = LabelsBuilder::new();
        lb.set("__name__", "m")
            .set("job", "x")
            .set("exported_job", "y");
        let l = sample_labels(&mut lb, &target, &settings()).unwrap();
        assert_eq!(
            l.to_string(),
            r#"{__name__="m", exported_exported_job="x", exported_job="y", instance="i:1", job="j"}"#
        );
        let mut lb = LabelsBuilder::new();
        lb.set("__name__", "m").set("job", "x");
        let honor = LoopSettings {
            honor_labels: true,
            ..settings()
        };
        let l = sample_labels(&mut lb, &target, &honor).unwrap();
        assert_eq!(l.to_string(), r#"{__name__="m", instance="i:1", job="x"}"#);
    }

    fn fixture() -> (
        tempfile::TempDir,
        Db,
        Labels,
        LoopState,
        LoopSettings,
        Duration,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let target = Labels::from_pairs([("job", "j"), ("instance", "i:1")]);
        (
            dir,
            db,
            target,
            LoopState::new(),
            settings(),
            Duration::from_millis(5),
        )
    }

    #[test]
    fn metadata_follows_the_exposition() {
        let (_dir, db, target, mut st, s, d) = fixture();
        let om = "# TYPE req counter\n# HELP req Requests \\ served.\n# UNIT req\n\
                  req_total 1\n# TYPE lat_seconds gauge\n# UNIT lat_seconds seconds\nlat_seconds 2\n# EOF\n";
        st.append_scrape(&db, &target, &s, Ok((om, Format::OpenMetrics)), 1000, d)
            .unwrap();
        let mut got = st.take_metadata_update().unwrap();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let m = |kind, help: &str, unit: &str| Meta {
            kind,
            help: help.into(),
            unit: unit.into(),
        };
        assert_eq!(
            got,
            vec![
                ("lat_seconds".to_string(), m("gauge", "", "seconds")),
                ("req".to_string(), m("counter", "Requests \\ served.", "")),
            ]
        );
        // Nothing changed: nothing to publish.
        st.append_scrape(&db, &target, &s, Ok((om, Format::OpenMetrics)), 2000, d)
            .unwrap();
        assert!(st.take_metadata_update().is_none());
        // A failed scrape keeps it; a family no longer exposed for ten scrapes is forgotten.
        st.append_scrape(&db, &target, &s, Err("down".into()), 3000, d)
            .unwrap();
        assert!(st.take_metadata_update().is_none());
        let text = "# HELP up_now Text format.\n# TYPE up_now untyped\nup_now 1\n";
        for i in 0..=CACHE_KEEP_ITERATIONS {
            st.append_scrape(
                &db,
                &target,
                &s,
                Ok((text, Format::Text)),
                4000 + i as i64,
                d,
            )
            .unwrap();
        }
        let got = st.take_metadata_update().unwrap();
        assert_eq!(
            got,
            vec![("up_now".to_string(), m("unknown", "Text format.", ""))]
        );
    }

    #[test]
    fn staleness_reports_and_limits() {
        let (_dir, db, target, mut st, s, d) = fixture();
        let o = st
            .append_scrape(
                &db,
                &target,
                &s,
                Ok(("a 1\nb{x=\"1\"} 2\nc 3 500\n", Format::Text)),
                1000,
                d,
            )
            .unwrap();
        assert_eq!((o.scraped, o.post_relabel, o.series_added), (3, 3, 3));
        // b disappears; c has an explicit timestamp and is never marked stale.
        let o = st
            .append_scrape(&db, &target, &s, Ok(("a 2\n", Format::Text)), 2000, d)
            .unwrap();
        assert_eq!((o.scraped, o.series_added), (1, 0));
        // A failed scrape marks a stale; up = 0.
        let o = st
            .append_scrape(&db, &target, &s, Err("connection refused".into()), 3000, d)
            .unwrap();
        assert_eq!(o.error.as_deref(), Some("connection refused"));
        let all = series(&db);
        let get = |name: &str| {
            all.iter()
                .find(|(l, _)| l.starts_with(&format!("{{__name__=\"{name}\"")))
                .unwrap()
                .1
                .clone()
        };
        let b = get("b");
        assert_eq!(b.len(), 2);
        assert!(is_stale_nan(b[1].1) && b[1].0 == 2000);
        let a = get("a");
        assert_eq!(a.len(), 3);
        assert!(is_stale_nan(a[2].1) && a[2].0 == 3000);
        assert_eq!(get("c"), vec![(500, 3.0)]);
        let up: Vec<f64> = get("up").iter().map(|s| s.1).collect();
        assert_eq!(up, vec![1.0, 1.0, 0.0]);
        // The target goes away: report series become stale too.
        st.stale_all(&db, 3500).unwrap();
        let all = series(&db);
        let up = &all
            .iter()
            .find(|(l, _)| l.starts_with("{__name__=\"up\""))
            .unwrap()
            .1;
        assert!(is_stale_nan(up.last().unwrap().1));

        // sample_limit fails the whole scrape but reports the counts.
        let mut st = LoopState::new();
        let lim = LoopSettings {
            sample_limit: 1,
            ..settings()
        };
        let o = st
            .append_scrape(
                &db,
                &target,
                &lim,
                Ok(("x 1\ny 2\n", Format::Text)),
                10_000,
                d,
            )
            .unwrap();
        assert_eq!(o.error.as_deref(), Some("sample limit exceeded (limit 1)"));
        assert_eq!((o.scraped, o.post_relabel), (2, 2));
        assert!(
            series(&db)
                .iter()
                .all(|(l, _)| !l.starts_with("{__name__=\"x\""))
        );
    }

    /// A scrape refused by `sample_limit` creates no series: the refused scrape is rolled back whole,
    /// as Prometheus' limit appender refuses it (only the report series and stale markers are written).
    #[test]
    fn sample_limit_refusal_creates_no_series() {
        let (_dir, db, target, mut st, _, d) = fixture();
        let lim = LoopSettings {
            sample_limit: 2,
            ..settings()
        };
        let o = st
            .append_scrape(&db, &target, &lim, Ok(("a 1\n", Format::Text)), 1000, d)
            .unwrap();
        assert_eq!(o.error, None);
        let series = db.head_series();
        assert_eq!(series, 6, "a and the five report series");
        for k in 0..15i64 {
            let text: String = (0..10).map(|i| format!("m{{v=\"{k}-{i}\"}} 1\n")).collect();
            let o = st
                .append_scrape(
                    &db,
                    &target,
                    &lim,
                    Ok((&text, Format::Text)),
                    2000 + k * 1000,
                    d,
                )
                .unwrap();
            assert_eq!(o.error.as_deref(), Some("sample limit exceeded (limit 2)"));
            assert_eq!(db.head_series(), series, "scrape {k} created series");
        }
        // The scrape cache keeps what it saw within the limit for a few scrapes only.
        let bound = 2 * (CACHE_KEEP_ITERATIONS as usize + 1) + 1;
        assert!(
            st.series.len() <= bound,
            "{} cache entries",
            st.series.len()
        );
    }

    /// A sample with an explicit timestamp more than 10 minutes ahead is refused as out of bounds (the
    /// rest of the scrape is stored, `up` stays 1) and the refusal is reported for the target's
    /// `lastError`.
    #[test]
    fn far_future_scrape_samples_are_refused_and_reported() {
        let (_dir, db, target, mut st, s, d) = fixture();
        let now = meridian_core::time::now_ms();
        let text = format!("a 1\nfuture 2 {}\n", now + 365 * 24 * 3600 * 1000);
        let o = st
            .append_scrape(&db, &target, &s, Ok((&text, Format::Text)), now, d)
            .unwrap();
        assert_eq!(o.error, None, "the scrape itself succeeded");
        assert_eq!(o.rejected, 1);
        let w = o.warning.as_deref().unwrap_or_default();
        assert!(w.contains("out of bounds"), "{o:?}");
        assert!(w.contains("1 sample(s) refused"), "{o:?}");
        let all = series(&db);
        assert!(all.iter().all(|(l, _)| !l.contains("future")), "{all:?}");
        let up = &all
            .iter()
            .find(|(l, _)| l.starts_with("{__name__=\"up\""))
            .unwrap()
            .1;
        assert_eq!(up, &vec![(now, 1.0)]);
    }

    /// A cached series that left the head (cut into a block, no samples since) is resolved again.
    #[test]
    fn cached_reference_of_a_series_that_left_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let target = Labels::from_pairs([("job", "j"), ("instance", "i:1")]);
        let (s, d) = (settings(), Duration::from_millis(1));
        let mut st = LoopState::new();
        let h = 3_600_000;
        st.append_scrape(&db, &target, &s, Ok(("a 1\nb 1\n", Format::Text)), 1000, d)
            .unwrap();
        st.append_scrape(&db, &target, &s, Ok(("a 2\n", Format::Text)), 2000, d)
            .unwrap();
        st.append_scrape(&db, &target, &s, Ok(("a 3\n", Format::Text)), 4 * h, d)
            .unwrap();
        assert_eq!(db.head_series(), 7);
        assert!(!db.compact().unwrap().is_empty(), "a block was cut");
        assert_eq!(db.head_series(), 6, "b left the head");
        let o = st
            .append_scrape(
                &db,
                &target,
                &s,
                Ok(("a 4\nb 5\n", Format::Text)),
                4 * h + 1000,
                d,
            )
            .unwrap();
        assert_eq!(o.error, None);
        assert_eq!(o.rejected, 0);
        let b = db
            .samples(&[Matcher::equal("__name__", "b")], 0, i64::MAX)
            .unwrap();
        assert_eq!(b[0].1.last().map(|x| (x.t, x.v)), Some((4 * h + 1000, 5.0)));
    }

    #[test]
    fn offsets_are_deterministic_and_within_the_interval() {
        let iv = Duration::from_secs(15);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = start_offset(42, 7, iv, now);
        assert_eq!(a, start_offset(42, 7, iv, now));
        assert!(a <= iv);
        assert_ne!(a, start_offset(43, 7, iv, now));
    }
}
