//! `/api/v1/query` and `/api/v1/query_range`: request options, the concurrency slot, evaluation off
//! the async workers, the results cache and the query log.

use super::*;
use crate::metrics::PhaseLabel;

/// The fan-out options of a request: Thanos' `dedup`, `partial_response`, `replicaLabels[]` and
/// `storeMatch[]` (`engine` is accepted; queries read `max_source_resolution` on their own, see
/// [`max_source_resolution`]).
pub(super) fn query_options(
    p: &Params,
    deadline: Option<tokio::time::Instant>,
) -> Result<QueryOptions> {
    let dedup = p.bool("dedup")?.unwrap_or(true);
    let partial_response = p.bool("partial_response")?.map(|on| {
        if on {
            PartialResponse::Warn
        } else {
            PartialResponse::Abort
        }
    });
    let replica: Vec<String> = p
        .all("replicaLabels[]")
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let store_match = p
        .matcher_sets("storeMatch[]")
        .map_err(|e| invalid_param("storeMatch[]", &e.message))?;
    Ok(QueryOptions {
        dedup,
        partial_response,
        replica_labels: (!replica.is_empty()).then_some(replica),
        deadline,
        store_match,
        max_source_resolution: 0,
    })
}

/// Thanos' `max_source_resolution` (ms): a duration, or `auto` (`auto_ms`: step/5 for a range query,
/// 0 for an instant one, as Thanos' hidden `--query.instant.default.max_source_resolution`); when
/// missing, `auto` under `--query.auto-downsampling` and raw data otherwise.
pub(super) fn max_source_resolution(api: &Api, p: &Params, auto_ms: i64) -> Result<i64> {
    match p.get("max_source_resolution") {
        "" if api.opts.auto_downsampling => Ok(auto_ms),
        "" => Ok(0),
        "auto" => Ok(auto_ms),
        v => params::parse_duration(v)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .map_err(|e| invalid_param("max_source_resolution", &e)),
    }
}

/// The lookback delta for data read at up to `msr` (ms) (Thanos' `LookbackDeltaFactory`, dynamic
/// lookback on): once data coarser than the lookback may be read, the lookback grows to the next
/// resolution (5 m, then 1 h), so a vector selector still finds the window before it.
pub(super) fn downsampled_lookback(lookback: std::time::Duration, msr: i64) -> std::time::Duration {
    let ld = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
    let resolutions = crate::bucket::resolution::RESOLUTIONS;
    for i in (1..resolutions.len()).rev() {
        if resolutions[i - 1].max(ld) < msr {
            // Resolutions ascend: the i-th is the largest so far.
            let grown = resolutions[i].max(ld);
            return std::time::Duration::from_millis(u64::try_from(grown).unwrap_or(0));
        }
    }
    lookback
}

/// The engine for a request: its `timeout` (never longer than `--query.timeout`) and `lookback_delta`.
pub(super) fn request_engine(api: &Api, p: &Params) -> Result<Engine> {
    request_engine_at(api, p, 0)
}

/// [`request_engine`] for a query reading data of up to `msr` ms resolution: without a
/// `lookback_delta` parameter, the lookback grows with it ([`downsampled_lookback`]).
pub(super) fn request_engine_at(api: &Api, p: &Params, msr: i64) -> Result<Engine> {
    let mut opts = api.opts.engine.clone();
    if api.opts.dynamic_lookback_delta {
        opts.lookback_delta = downsampled_lookback(opts.lookback_delta, msr);
    }
    let to = p.get("timeout");
    if !to.is_empty() {
        let t = params::parse_duration(to).map_err(|e| invalid_param("timeout", &e))?;
        opts.timeout = opts.timeout.min(t);
    }
    let lb = p.get("lookback_delta");
    if !lb.is_empty() {
        let d = params::parse_duration(lb)
            .map_err(|e| Error::bad_data(format!("error parsing lookback delta duration: {e}")))?;
        if !d.is_zero() {
            opts.lookback_delta = d;
        }
    }
    Ok(Engine::new(opts))
}

/// Counts a query in flight while alive.
pub(super) struct InFlight<'a>(&'a ApiMetrics);

impl<'a> InFlight<'a> {
    pub(super) fn new(m: &'a ApiMetrics) -> InFlight<'a> {
        m.queries_in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.queries_in_flight.dec();
    }
}

/// Waits for a query slot (`--query.max-concurrent`) until `deadline`; the wait counts against the
/// query's timeout, as in Prometheus, where a query waiting in the queue times out "in query queue"
/// (`promql.Engine.queueActive`), answered 503 `timeout`.
pub(super) async fn query_slot(
    api: &Api,
    query: &str,
    deadline: tokio::time::Instant,
) -> Result<tokio::sync::OwnedSemaphorePermit> {
    match tokio::time::timeout_at(deadline, api.slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(Error::internal("the query queue is closed")),
        Err(_) => {
            tracing::warn!(
                query,
                max_concurrent = api.opts.max_concurrent_queries,
                "query timed out waiting for a slot (--query.max-concurrent)"
            );
            Err(Error::new(
                meridian_core::error::ErrorKind::Timeout,
                "query timed out in query queue",
            ))
        }
    }
}

pub(super) fn truncate<T>(list: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if limit > 0 && list.len() > limit {
        list.truncate(limit);
        warnings.push("results truncated due to limit".into());
    }
}

pub(super) async fn query(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let started = Instant::now();
    let limit = p.limit()?;
    let t = p.time("time", (api.now)())?;
    let msr = max_source_resolution(api, p, 0)?;
    let engine = request_engine_at(api, p, msr)?;
    let deadline = engine.deadline();
    let querier = api.fanout.querier(QueryOptions {
        max_source_resolution: msr,
        ..query_options(p, Some(deadline))?
    });
    let q = p.get("query");
    engine.check_length(q)?;
    let queued = Instant::now();
    let _slot = query_slot(api, q, deadline).await?;
    let queue = queued.elapsed();
    let _in_flight = InFlight::new(&api.metrics);
    let mut r = match engine.instant_until(&querier, q, t, deadline).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                kind = "query",
                query = q,
                duration_seconds = started.elapsed().as_secs_f64(),
                stores = querier.stores_asked(),
                error = %e,
                "query"
            );
            return Err(e);
        }
    };
    api.metrics.query_samples.inc_by(r.samples as u64);
    let mut warnings = std::mem::take(&mut r.warnings);
    match &mut r.value {
        QueryValue::Vector(v) => truncate(v, limit, &mut warnings),
        QueryValue::Matrix(m) => truncate(m, limit, &mut warnings),
        _ => {}
    }
    let value = r.value;
    let points = match &value {
        QueryValue::Vector(v) => v.len(),
        QueryValue::Matrix(m) => m.iter().map(|s| s.samples.len() + s.histograms.len()).sum(),
        _ => 1,
    };
    let encode_started = Instant::now();
    let mut data = encode_sized(points, move |out| json::query_data(out, &value)).await?;
    if !p.get("stats").is_empty() {
        json::append_stats(&mut data, r.samples, started.elapsed());
    }
    let phases = [
        ("queue", queue),
        ("parse", r.timings.parse),
        ("fetch", r.timings.fetch),
        ("eval", r.timings.eval),
        ("encode", encode_started.elapsed()),
    ];
    for (phase, d) in phases {
        api.metrics
            .query_phases
            .get_or_create(&PhaseLabel { phase })
            .observe(d.as_secs_f64());
    }
    tracing::info!(
        kind = "query",
        query = q,
        duration_seconds = started.elapsed().as_secs_f64(),
        queue_seconds = queue.as_secs_f64(),
        parse_seconds = r.timings.parse.as_secs_f64(),
        fetch_seconds = r.timings.fetch.as_secs_f64(),
        eval_seconds = r.timings.eval.as_secs_f64(),
        encode_seconds = phases[4].1.as_secs_f64(),
        samples = r.samples,
        stores = querier.stores_asked(),
        cache = "none",
        "query"
    );
    Ok(Answer::data(data, warnings))
}

/// Answers with at most this many points are encoded on the calling thread: a hand-off to the
/// blocking pool costs more than writing them (issue 25).
const INLINE_ENCODE_POINTS: usize = 2_000;

/// Encodes here when `points` is small, else on a blocking thread.
pub(super) async fn encode_sized(
    points: usize,
    f: impl FnOnce(&mut Vec<u8>) + Send + 'static,
) -> Result<Vec<u8>> {
    if points <= INLINE_ENCODE_POINTS {
        let mut out = Vec::with_capacity(1024);
        f(&mut out);
        return Ok(out);
    }
    encode_blocking(f).await
}

/// Encodes on a blocking thread (large results take milliseconds to seconds).
pub(super) async fn encode_blocking(
    f: impl FnOnce(&mut Vec<u8>) + Send + 'static,
) -> Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(4096);
        f(&mut out);
        out
    })
    .await
    .map_err(|e| Error::internal(format!("encoding the answer failed: {e}")))
}

pub(super) fn log_query<T>(
    kind: &str,
    q: &str,
    started: Instant,
    querier: &crate::fanout::Querier,
    cache: Option<&str>,
    result: &Result<T>,
) where
    T: QueryStats,
{
    let (samples, error) = match result {
        Ok(r) => (r.samples(), None),
        Err(e) => (0, Some(e.to_string())),
    };
    tracing::info!(
        kind,
        query = q,
        duration_seconds = started.elapsed().as_secs_f64(),
        samples,
        stores = querier.stores_asked(),
        cache = cache.unwrap_or("none"),
        error = error.as_deref(),
        "query"
    );
}

/// What the query log reads from an answer.
pub(super) trait QueryStats {
    fn samples(&self) -> usize;
}

impl QueryStats for crate::promql::QueryResult {
    fn samples(&self) -> usize {
        self.samples
    }
}

impl QueryStats for crate::cache::RangeAnswer {
    fn samples(&self) -> usize {
        self.samples
    }
}

pub(super) async fn query_range(api: &Arc<Api>, p: &Params) -> Result<Answer> {
    let started = Instant::now();
    let limit = p.limit()?;
    let start = p.required_time("start")?;
    let end = p.required_time("end")?;
    if end < start {
        return Err(invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step = params::parse_duration(p.get("step")).map_err(|e| invalid_param("step", &e))?;
    let step_ns = i128::try_from(step.as_nanos()).unwrap_or(i128::MAX);
    if step_ns <= 0 {
        return Err(invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (i128::from(end) - i128::from(start)) * 1_000_000 / step_ns > 11_000 {
        return Err(Error::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let msr = max_source_resolution(api, p, step_ms / 5)?;
    let engine = request_engine_at(api, p, msr)?;
    let deadline = engine.deadline();
    let opts = QueryOptions {
        max_source_resolution: msr,
        ..query_options(p, Some(deadline))?
    };
    let q = p.get("query");
    engine.check_length(q)?;
    let _slot = query_slot(api, q, deadline).await?;
    // Parsed (and printed, the cache key) on the blocking pool, within the deadline.
    let normalized = engine
        .parse_until(q, deadline, |e| Ok(e.to_string()))
        .await?;
    // Answers depend on the query and on every option below; the key holds them all.
    let key = format!(
        "{normalized}\u{0}dedup={} pr={:?} replicas={:?} store_match={:?} lookback={:?} max_samples={} sub_step={:?} res={}",
        opts.dedup,
        opts.partial_response,
        opts.replica_labels,
        p.all("storeMatch[]"),
        engine.options().lookback_delta,
        engine.options().max_samples,
        engine.options().default_subquery_step,
        opts.max_source_resolution,
    );
    let splittable = !normalized.contains("start()") && !normalized.contains("end()");
    let whole_key = format!("{key}\u{0}{start} {end} {step_ms} {limit}");
    // `stats` answers carry this request's own figures: never a kept whole answer.
    let want_stats = !p.get("stats").is_empty();
    if splittable
        && !want_stats
        && let Some(w) = api.cache.response(&whole_key).await
    {
        log_cached(q, started);
        return Ok(Answer::whole(w));
    }
    let querier = api.fanout.querier(opts);
    let _in_flight = InFlight::new(&api.metrics);
    let result = api
        .cache
        .range(
            &key,
            splittable,
            (start, end, step_ms),
            (api.now)(),
            |a, b| {
                let (engine, querier) = (engine.clone(), querier.clone());
                let q = q.to_owned();
                async move {
                    engine
                        .range_until(&querier, &q, a, b, step_ms, deadline)
                        .await
                }
            },
        )
        .await;
    let summary = result.as_ref().ok().map(|r| r.outcome.summary());
    log_query("query_range", q, started, &querier, summary, &result);
    let mut r = result?;
    api.metrics.query_samples.inc_by(r.samples as u64);
    let mut warnings = std::mem::take(&mut r.warnings);
    truncate(&mut r.series, limit, &mut warnings);
    let series = r.series;
    let points = series.iter().map(|s| s.samples.len()).sum();
    let mut data = encode_sized(points, move |out| {
        out.extend_from_slice(b"{\"resultType\":\"matrix\",\"result\":");
        json::matrix(out, &series);
        out.push(b'}');
    })
    .await?;
    if want_stats {
        json::append_stats(&mut data, r.samples, started.elapsed());
        return Ok(Answer::data(data, warnings));
    }
    // Every piece came from or went into the piece cache: the whole answer is kept too.
    if splittable && r.outcome.uncached == 0 && warnings.is_empty() {
        let whole = Arc::new(CachedBody {
            plain: Bytes::from(json::success(&data, &[], &[])),
            ..Default::default()
        });
        api.cache.keep_response(whole_key, whole.clone()).await;
        return Ok(Answer::whole(whole));
    }
    Ok(Answer::data(data, warnings))
}

pub(super) fn log_cached(q: &str, started: Instant) {
    tracing::info!(
        kind = "query_range",
        query = q,
        duration_seconds = started.elapsed().as_secs_f64(),
        samples = 0,
        stores = 0,
        cache = "response",
        "query"
    );
}

/// `start` and `end` of a metadata query (defaults: all time).
pub(super) fn range_params(p: &Params) -> Result<(i64, i64)> {
    Ok((p.time("start", MIN_TIME)?, p.time("end", MAX_TIME)?))
}
