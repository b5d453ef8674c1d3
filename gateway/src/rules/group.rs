//! One rule group: evaluation at its slots, recording and alerting rules, alert state and its
//! restoration after a restart.

use super::*;

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
                last_error_kind: result.as_ref().err().map(|e| e.kind),
                last_error: result.err().map(|e| e.message).unwrap_or_default(),
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
    pub(super) async fn write(
        &self,
        ctx: &EvalContext,
        rule: &Rule,
        ts: i64,
        samples: Vec<(Labels, f64)>,
    ) -> Result<(), Error> {
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

    pub(super) async fn eval_record(
        &self,
        ctx: &EvalContext,
        q: &dyn Queryable,
        rule: &Rule,
        ts: i64,
    ) -> Result<(), Error> {
        let at = ts - self.spec.query_offset.as_millis() as i64;
        let res = ctx.engine.instant(q, &rule.spec.expr, at).await?;
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
                return Err(Error::new(
                    ErrorKind::Execution,
                    "vector contains metrics with the same labelset after applying rule labels",
                ));
            }
            out.push((l, v));
        }
        if self.spec.limit > 0 && out.len() > self.spec.limit {
            let n = out.len();
            let _ = self.write(ctx, rule, ts, vec![]).await;
            return Err(Error::limit(format!(
                "exceeded limit of {} with {n} series",
                self.spec.limit
            )));
        }
        self.write(ctx, rule, ts, out).await
    }

    pub(super) async fn eval_alert(
        &self,
        ctx: &EvalContext,
        q: &Arc<dyn Queryable>,
        rule: &Rule,
        ts: i64,
        out_alerts: &mut Vec<OutAlert>,
    ) -> Result<(), Error> {
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
        let res = ctx.engine.instant(&**q, &rule.spec.expr, at).await?;
        let vector = vector_of(res.value, ts)?;
        // Labels and annotations of every result sample, templates expanded.
        let expanded = self.expand(ctx, q, rule, annotations, &vector, ts).await?;
        let needs_restore = {
            let mut st = lock(&rule.state);
            let mut current = HashSet::new();
            for (labels, annotations, value) in expanded {
                if !current.insert(labels.clone()) {
                    return Err(Error::new(
                        ErrorKind::Execution,
                        "vector contains metrics with the same labelset after applying alert labels",
                    ));
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
                return Err(Error::limit(format!(
                    "exceeded limit of {} with {n} alerts",
                    self.spec.limit
                )));
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
    pub(super) async fn expand(
        &self,
        ctx: &EvalContext,
        q: &Arc<dyn Queryable>,
        rule: &Rule,
        annotations: &BTreeMap<String, String>,
        vector: &[(Labels, f64)],
        ts: i64,
    ) -> Result<Vec<(Labels, BTreeMap<String, String>, f64)>, Error> {
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
                let r = handle.block_on(engine.instant(&*q, query, ts))?;
                Ok(vector_of(r.value, ts)?
                    .into_iter()
                    .map(|(l, v)| (to_map(&l), v))
                    .collect())
            });
            template::with_query(f, work)
        })
        .await
        .map_err(|e| Error::internal(format!("template expansion failed: {e}")))
    }

    /// Prometheus' `RestoreForState`: pending alerts whose `ALERTS_FOR_STATE` series was written
    /// within `--for-outage-tolerance` take their `activeAt` from it, moved forward by the downtime,
    /// and never fire sooner than `--for-grace-period` from now.
    pub(super) async fn restore(
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
