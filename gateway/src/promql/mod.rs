//! The PromQL engine: Prometheus 3 float semantics over a [`Queryable`].
//!
//! Parsing is promql-parser's; evaluation is ours. A query runs in two phases:
//! 1. **Fetch.** The AST is walked once to find every selector and the time range it needs (lookback,
//!    ranges, offsets, `@`, subqueries all applied), and all selections are asked of the `Queryable` in
//!    parallel, with the calling function as a hint (counter-aware dedup).
//! 2. **Evaluate**, synchronously, **series at a time over all steps**: every node produces, for each
//!    output series, its values at every step of the query at once (a presence mask marks the steps where
//!    the series exists). A range query is one pass over each series' samples, with sliding windows for
//!    `rate` and `*_over_time`, never one evaluation per step; vector matching and grouping are done
//!    once per series, not per step. An instant query is a range query of one step.
//!
//! Semantics follow Prometheus 3: lookback and range windows are left-open (`(t - range, t]`), staleness
//! markers end series, `__name__` is dropped by arithmetic and most functions.

// Step loops index several per-step arrays (values, presence, parameters) in lockstep; an index is the
// clearest way to write them.
#![allow(clippy::needless_range_loop)]

mod aggregate;
mod binary;
mod eval;
mod functions;
pub mod guard;
mod parse;
pub mod promqltest;

pub use parse::{parse, parse_expr};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::sample::Sample;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::queryable::{Queryable, SelectHints, SelectRequest, SeriesData};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back a vector selector looks for a sample (`--query.lookback-delta`, 5 m).
    pub lookback_delta: Duration,
    /// Subquery resolution when none is given (the evaluation interval, 1 m).
    pub default_subquery_step: Duration,
    /// Most samples a query may hold at once (`--query.max-samples`).
    pub max_samples: usize,
    /// `--query.timeout`.
    pub timeout: Duration,
    /// Longest query text accepted, in bytes (`--query.max-length`; 0 = unlimited).
    pub max_query_length: usize,
}

/// Default of `--query.max-length`: 128 KiB, far above hand-written and generated dashboard queries.
/// The slowest text of that size that passes [`guard::prescan`] (62 sums of 950 terms, each nearly
/// as deep as the pre-scan allows) parses in ~1.3 s; ordinary queries of that size in milliseconds.
pub const DEFAULT_MAX_QUERY_LENGTH: usize = 128 << 10;

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_query_length: DEFAULT_MAX_QUERY_LENGTH,
        }
    }
}

/// The clock the evaluation checks its deadline against (tests replace it).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> std::time::Instant + Send + Sync>);

impl Clock {
    pub fn new(now: impl Fn() -> std::time::Instant + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    pub fn now(&self) -> std::time::Instant {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new(std::time::Instant::now)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// One sample of an instant vector result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    /// A native histogram value (then `v` is not used).
    pub h: Option<Arc<meridian_core::histogram::FloatHistogram>>,
}

/// A query's value, as the HTTP API returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    /// Instant vector, in output order (sorted by labels unless the query orders it).
    Vector(Vec<VectorSample>),
    /// Range vector or range query result, series sorted by labels.
    Matrix(Vec<SeriesData>),
}

/// A query's value and its warnings (partial responses).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: QueryValue,
    pub warnings: Vec<String>,
    /// Samples loaded from the queryable.
    pub samples: usize,
    /// Where the time went.
    pub timings: Timings,
}

/// The phases of a query's evaluation (the query log and `meridian_gateway_query_phase_duration_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Parsing the text.
    pub parse: Duration,
    /// Fetching the selections from the stores (fan-out, gRPC, decoding, merging, deduplication).
    pub fetch: Duration,
    /// Evaluating the tree over the fetched data.
    pub eval: Duration,
}

/// The PromQL engine.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
    clock: Clock,
}

fn ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(&d),
        Err(e) => -ms(&e.duration()),
    }
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

/// The fixed evaluation time of an `@` modifier, if any.
pub(crate) fn at_ms(at: &Option<AtModifier>, start: i64, end: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(start),
        Some(AtModifier::End) => Some(end),
        Some(AtModifier::At(t)) => Some(time_ms(t)),
    }
}

/// Our matchers from a selector (Go RE2 semantics: the parser's compiled regexes are not used).
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    use promql_parser::label::MatchOp;
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        if let Some(name) = &vs.name
            && !ms.iter().any(|m| m.name == "__name__")
        {
            out.push(Matcher::equal("__name__", name.clone()));
        }
        for m in ms {
            let kind = match m.op {
                MatchOp::Equal => MatchType::Equal,
                MatchOp::NotEqual => MatchType::NotEqual,
                MatchOp::Re(_) => MatchType::Regex,
                MatchOp::NotRe(_) => MatchType::NotRegex,
            };
            out.push(Matcher::new(kind, m.name.clone(), m.value.clone())?);
        }
        Ok(out)
    };
    if vs.matchers.or_matchers.is_empty() {
        Ok(vec![convert(&vs.matchers.matchers)?])
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|ms| convert(ms))
            .collect()
    }
}

/// A selection the evaluation needs: the selector node, its time range and the function consuming it.
struct Need<'a> {
    vs: &'a VectorSelector,
    start: i64,
    end: i64,
    func: Option<String>,
    /// How the selection is read, when stores can be told (see [`Read`]).
    read: Option<Read>,
}

/// How a selector is read, for the stores' hint (`meridian_storeapi::trim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// At every `.0` back from the selection's end, each time the `.1` before it
    /// ([`SelectHints::step_windows`]).
    Steps(i64, i64),
    /// Once, at its end: its last sample at most `.0` before ([`SelectHints::last_sample_within`]).
    Last(i64),
}

/// When a subtree is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eval {
    /// At a range query's steps, every `.0` back from the end.
    Steps(i64),
    /// Once (an instant query).
    Instant,
    /// At a subquery's steps (aligned differently).
    Other,
}

/// Context of the fetch walk: the query's own start and end (for `@ start()`/`end()`).
struct Walk {
    qstart: i64,
    qend: i64,
    lookback: i64,
}

impl Walk {
    /// Records the selections of `e` evaluated at times within `[lo, hi]`, as `step` says.
    fn collect<'a>(
        &self,
        e: &'a Expr,
        lo: i64,
        hi: i64,
        step: Eval,
        func: Option<&str>,
        out: &mut Vec<Need<'a>>,
    ) {
        match e {
            Expr::VectorSelector(vs) => {
                let (lo, hi) = self.shift(&vs.at, &vs.offset, lo, hi);
                // `@` pins every evaluation to one time.
                let read = match step {
                    _ if vs.at.is_some() => Some(Read::Last(self.lookback)),
                    Eval::Instant => Some(Read::Last(self.lookback)),
                    Eval::Steps(s) => Some(Read::Steps(s, self.lookback)),
                    Eval::Other => None,
                };
                out.push(Need {
                    vs,
                    start: lo.saturating_sub(self.lookback),
                    end: hi,
                    func: func.map(str::to_owned),
                    read,
                });
            }
            Expr::MatrixSelector(m) => {
                let (lo, hi) = self.shift(&m.vs.at, &m.vs.offset, lo, hi);
                let read = match step {
                    Eval::Steps(s) if m.vs.at.is_none() => Some(Read::Steps(s, ms(&m.range))),
                    _ => None,
                };
                out.push(Need {
                    vs: &m.vs,
                    start: lo.saturating_sub(ms(&m.range)),
                    end: hi,
                    func: func.map(str::to_owned),
                    read,
                });
            }
            Expr::Subquery(sq) => {
                let (lo, hi) = self.shift(&sq.at, &sq.offset, lo, hi);
                let start = lo.saturating_sub(ms(&sq.range));
                self.collect(&sq.expr, start, hi, Eval::Other, func, out);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.collect(p, lo, hi, step, None, out);
                }
                self.collect(&a.expr, lo, hi, step, None, out);
            }
            Expr::Unary(u) => self.collect(&u.expr, lo, hi, step, None, out),
            Expr::Binary(b) => {
                self.collect(&b.lhs, lo, hi, step, None, out);
                self.collect(&b.rhs, lo, hi, step, None, out);
            }
            Expr::Paren(p) => self.collect(&p.expr, lo, hi, step, func, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.collect(a, lo, hi, step, Some(c.func.name), out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn shift(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        lo: i64,
        hi: i64,
    ) -> (i64, i64) {
        // Saturating: offsets and ranges add up across nested subqueries; times at the ends of the
        // i64 range select nothing rather than overflow.
        let o = offset_ms(offset);
        match at_ms(at, self.qstart, self.qend) {
            Some(t) => (t.saturating_sub(o), t.saturating_sub(o)),
            None => (lo.saturating_sub(o), hi.saturating_sub(o)),
        }
    }
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Engine {
        Engine {
            opts,
            clock: Clock::default(),
        }
    }

    /// Replaces the clock the evaluation checks its deadline against (tests).
    pub fn with_clock(mut self, clock: Clock) -> Engine {
        self.clock = clock;
        self
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// The deadline of a query starting now.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.opts.timeout
    }

    /// Refuses a query text longer than `--query.max-length`.
    pub fn check_length(&self, query: &str) -> Result<()> {
        let max = self.opts.max_query_length;
        if max > 0 && query.len() > max {
            return Err(Error::bad_data(format!(
                "invalid parameter \"query\": the query is {} bytes long, longer than the limit of {max} bytes (--query.max-length)",
                query.len()
            )));
        }
        Ok(())
    }

    /// Parses `query` on the blocking pool (parsing a long text takes a while, and must not hold up an
    /// async worker: health checks and other requests run there), bounded by `deadline`; `then` runs on
    /// the parsed expression there too (a cache key, a value type).
    pub async fn parse_until<T: Send + 'static>(
        &self,
        query: &str,
        deadline: tokio::time::Instant,
        then: impl FnOnce(Expr) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_length(query)?;
        // A short text parses in microseconds: here, without a hand-off to the blocking pool (which
        // costs more than the parse; issue 25). The depth prescan bounds the parser's recursion either way.
        if query.len() <= INLINE_PARSE_BYTES {
            return then(parse(query)?);
        }
        let text = query.to_owned();
        let task = tokio::task::spawn_blocking(move || then(parse(&text)?));
        // A parse that outlives its deadline finishes on its blocking thread and is dropped there;
        // the length limit bounds how long that can be.
        tokio::time::timeout_at(deadline, task)
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "query timed out in query parsing"))?
            .map_err(|e| Error::internal(format!("query parsing failed: {e}")))?
    }

    /// Evaluates `query` at `t` (ms).
    pub async fn instant(&self, q: &dyn Queryable, query: &str, t: i64) -> Result<QueryResult> {
        self.instant_until(q, query, t, self.deadline()).await
    }

    /// [`Engine::instant`] within `deadline` (the query's, when it started earlier: queued).
    pub async fn instant_until(
        &self,
        q: &dyn Queryable,
        query: &str,
        t: i64,
        deadline: tokio::time::Instant,
    ) -> Result<QueryResult> {
        let started = std::time::Instant::now();
        let expr = self.parse_until(query, deadline, Ok).await?;
        let parse = started.elapsed();
        let mut r = self.run_until(q, expr, t, t, 0, deadline).await?;
        r.timings.parse = parse;
        Ok(r)
    }

    /// Evaluates `query` at every `step` (ms) from `start` to `end`; the result is a matrix.
    pub async fn range(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult> {
        self.range_until(q, query, start, end, step, self.deadline())
            .await
    }

    /// [`Engine::range`] within `deadline`.
    pub async fn range_until(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        deadline: tokio::time::Instant,
    ) -> Result<QueryResult> {
        if step <= 0 {
            return Err(Error::bad_data(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end < start {
            return Err(Error::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        let started = std::time::Instant::now();
        let expr = self.parse_until(query, deadline, Ok).await?;
        let parse = started.elapsed();
        let vt = expr.value_type();
        if !matches!(
            vt,
            parser::value::ValueType::Scalar | parser::value::ValueType::Vector
        ) {
            // Prometheus names the types as its documentation does (`parser.DocumentedType`).
            let documented = match vt {
                parser::value::ValueType::Matrix => "range vector",
                parser::value::ValueType::String => "string",
                _ => "instant vector",
            };
            return Err(Error::bad_data(format!(
                "invalid expression type \"{documented}\" for range query, must be Scalar or instant Vector"
            )));
        }
        let mut r = self.run_until(q, expr, start, end, step, deadline).await?;
        r.timings.parse = parse;
        Ok(r)
    }

    /// Evaluates a parsed expression over `[start, end]` at `step` (0 = instant).
    pub async fn run(
        &self,
        q: &dyn Queryable,
        expr: Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult> {
        self.run_until(q, expr, start, end, step, self.deadline())
            .await
    }

    /// [`Engine::run`] with the query's deadline.
    ///
    /// Selections are fetched on the async runtime; the evaluation, pure computation, runs on a
    /// thread of its own ([`on_eval_thread`]) and checks the deadline (`timeout` error) and cancellation (`canceled`, when this
    /// future is dropped because the client went away) at every node and inside every long loop.
    async fn run_until(
        &self,
        q: &dyn Queryable,
        expr: Expr,
        start: i64,
        end: i64,
        step: i64,
        deadline: tokio::time::Instant,
    ) -> Result<QueryResult> {
        // The grid, counted before anything is fetched or allocated: every step holds at least one
        // value per series.
        let n = if step == 0 {
            1
        } else {
            let steps = (i128::from(end) - i128::from(start)) / i128::from(step.max(1)) + 1;
            usize::try_from(steps).unwrap_or(usize::MAX)
        };
        if n > self.opts.max_samples {
            return Err(eval::too_many_samples());
        }
        // Boxed so that the nodes keep their addresses (the keys of the fetched data) when the
        // expression moves to the evaluation thread.
        let expr = Box::new(expr);
        let timed_out = || {
            Error::new(
                ErrorKind::Timeout,
                "query timed out in expression evaluation",
            )
        };
        let fetch_started = std::time::Instant::now();
        let fetch = self.fetch(q, &expr, start, end, step);
        let (data, warnings, samples) = tokio::time::timeout_at(deadline, fetch)
            .await
            .map_err(|_| timed_out())??;
        let fetch = fetch_started.elapsed();
        let steps = eval::Steps {
            start,
            step: step.max(1),
            n,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        // Dropping this future (client gone) cancels the evaluation.
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = CancelOnDrop(cancel.clone());
        let (lookback, sub_step, max_samples) = (
            ms(&self.opts.lookback_delta),
            ms(&self.opts.default_subquery_step),
            self.opts.max_samples,
        );
        let deadline_std = deadline.into_std();
        let clock = self.clock.clone();
        // Small work (few samples and few steps × series, a shallow tree, no subquery) is evaluated
        // here: starting an evaluation thread costs more than evaluating it (issue 25).
        let series: usize = data.values().map(Vec::len).sum();
        let work = samples.saturating_add(n.saturating_mul(series.max(1)));
        let inline = samples <= INLINE_EVAL_SAMPLES
            && work <= INLINE_EVAL_WORK
            && guard::evaluates_inline(&expr, INLINE_EVAL_DEPTH);
        let evaluate = move || {
            let mut ev = eval::Evaluator::new(
                &data,
                eval::Limits {
                    lookback,
                    sub_step,
                    max_samples,
                    deadline: deadline_std,
                    cancel,
                    clock,
                },
                start,
                end,
            );
            let val = ev.eval_top(&expr, &steps)?;
            eval::to_query_value(val, &steps, step == 0, &expr)
        };
        let eval_started = std::time::Instant::now();
        let value = if inline {
            evaluate()?
        } else {
            on_eval_thread(evaluate).await?
        };
        Ok(QueryResult {
            value,
            warnings,
            samples,
            timings: Timings {
                parse: Duration::ZERO,
                fetch,
                eval: eval_started.elapsed(),
            },
        })
    }

    async fn fetch(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(HashMap<usize, Vec<SeriesData>>, Vec<String>, usize)> {
        let walk = Walk {
            qstart: start,
            qend: end,
            lookback: ms(&self.opts.lookback_delta),
        };
        let mut needs = Vec::new();
        // A range query is evaluated at `start + k × step` up to the last step at or before `end`:
        // nothing after that step is read, and the steps end there.
        let (last, steps) = if step > 0 {
            (
                start.saturating_add((end.saturating_sub(start) / step).saturating_mul(step)),
                Eval::Steps(step),
            )
        } else {
            (end, Eval::Instant)
        };
        walk.collect(expr, start, last, steps, None, &mut needs);
        // One selection per selector node, over the union of the ranges it is needed for.
        type Sel<'a> = (&'a VectorSelector, i64, i64, Option<String>, Option<Read>);
        let mut by_node: HashMap<usize, Sel<'_>> = HashMap::new();
        for n in needs {
            let key = n.vs as *const VectorSelector as usize;
            let e = by_node
                .entry(key)
                .or_insert((n.vs, n.start, n.end, n.func.clone(), n.read));
            e.1 = e.1.min(n.start);
            e.2 = e.2.max(n.end);
            if e.4 != n.read {
                e.4 = None;
            }
        }
        let mut calls = Vec::new();
        for (key, (vs, lo, hi, func, read)) in by_node {
            let (step_windows, last_sample_within) = match read {
                Some(Read::Steps(s, w)) => (Some((s, w)), None),
                Some(Read::Last(w)) => (None, Some(w)),
                None => (None, None),
            };
            let alternatives = selector_matchers(vs)?;
            let alternatives_len = alternatives.len();
            calls.push(async move {
                let mut merged: Vec<SeriesData> = Vec::new();
                let mut warnings = Vec::new();
                for matchers in alternatives {
                    let got = q
                        .select(SelectRequest {
                            matchers,
                            // Left-open windows: a sample exactly at the lower bound is never used.
                            start: lo.saturating_add(1),
                            end: hi,
                            hints: SelectHints {
                                func: func.clone(),
                                step_windows,
                                last_sample_within,
                                ..Default::default()
                            },
                        })
                        .await?;
                    warnings.extend(got.warnings);
                    merged.extend(got.series);
                }
                // One selection comes sorted; the alternatives of an `or` selector are joined.
                if alternatives_len > 1 {
                    merged.sort_by(|a, b| a.labels.cmp(&b.labels));
                    merged.dedup_by(|a, b| a.labels == b.labels);
                }
                Ok::<_, Error>((key, merged, warnings))
            });
        }
        let mut data = HashMap::new();
        let mut warnings = Vec::new();
        let mut loaded = 0usize;
        for r in futures::future::join_all(calls).await {
            let (key, series, w) = r?;
            loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
            warnings.extend(w);
            data.insert(key, series);
        }
        if loaded > self.opts.max_samples {
            return Err(Error::new(
                ErrorKind::Execution,
                "query processing would load too many samples into memory in query execution",
            ));
        }
        Ok((data, warnings, loaded))
    }
}

/// Queries up to this length are parsed on the calling thread.
const INLINE_PARSE_BYTES: usize = 1024;

/// Queries that loaded at most this many samples, with at most [`INLINE_EVAL_WORK`] samples plus
/// steps × series, at most [`INLINE_EVAL_DEPTH`] levels and no subquery, are evaluated on the calling
/// thread (well under a millisecond of work: each level costs about one pass over the steps of
/// every series).
const INLINE_EVAL_SAMPLES: usize = 5_000;
const INLINE_EVAL_WORK: usize = 20_000;
const INLINE_EVAL_DEPTH: usize = 12;

/// Stack of an evaluation thread. The evaluator recurses once per level of the tree (at most
/// [`guard::MAX_DEPTH`]), and a debug build spends ~26 KB of stack per function call level (measured:
/// `abs(`×96 overflowed a 2 MiB thread); 16 MiB of address space (touched only as deep as a query
/// goes) holds the deepest tree accepted in any build.
const EVAL_STACK_BYTES: usize = 16 << 20;

/// Runs an evaluation on a thread of its own, sized by [`EVAL_STACK_BYTES`], off the async workers.
/// Not the blocking pool: its threads have the runtime's stack size (2 MiB by default), which the
/// deepest accepted trees need more than in a debug build. Queries are few at once
/// (`--query.max-concurrent`), so a thread each costs little. A panic ends the thread and is answered
/// as an internal error.
async fn on_eval_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("promql-eval".into())
        .stack_size(EVAL_STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::internal(format!("starting the query evaluation thread: {e}")))?;
    rx.await.map_err(|_| {
        Error::internal("query evaluation failed (its thread ended without an answer)")
    })?
}

/// An in-memory [`Queryable`] over fixed series (tests, the promqltest runner).
#[derive(Debug, Clone, Default)]
pub struct MemQueryable {
    pub series: Vec<SeriesData>,
}

#[async_trait::async_trait]
impl Queryable for MemQueryable {
    async fn select(&self, req: SelectRequest) -> Result<crate::queryable::Selected> {
        let mut out = Vec::new();
        for s in &self.series {
            if !meridian_core::matcher::matches_all(&req.matchers, &s.labels) {
                continue;
            }
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .copied()
                .filter(|x| x.t >= req.start && x.t <= req.end)
                .collect();
            let histograms: Vec<crate::queryable::HPoint> = s
                .histograms
                .iter()
                .filter(|x| x.t >= req.start && x.t <= req.end)
                .cloned()
                .collect();
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(SeriesData {
                    labels: s.labels.clone(),
                    samples,
                    histograms,
                    ..Default::default()
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(crate::queryable::Selected {
            series: out,
            warnings: vec![],
        })
    }

    async fn label_names(
        &self,
        _req: crate::queryable::LabelsRequest,
    ) -> Result<crate::queryable::Named> {
        Ok(self.distinct(|l| l.iter().map(|x| x.name.to_owned()).collect()))
    }

    async fn label_values(
        &self,
        name: &str,
        _req: crate::queryable::LabelsRequest,
    ) -> Result<crate::queryable::Named> {
        Ok(self.distinct(|l| l.get(name).map(str::to_owned).into_iter().collect()))
    }
}

impl MemQueryable {
    /// Sorted distinct strings taken from every series' labels.
    fn distinct(&self, f: impl Fn(&Labels) -> Vec<String>) -> crate::queryable::Named {
        let mut names: Vec<String> = self.series.iter().flat_map(|s| f(&s.labels)).collect();
        names.sort();
        names.dedup();
        crate::queryable::Named {
            names,
            warnings: vec![],
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Issue 22, item 3: the deadline was checked only when a node started, so one long node ran to
    /// its end (`max_over_time(up[1d:1ms])` with `timeout=2s` answered after 18.6 s). The clock here
    /// passes the deadline after as many looks as the query has nodes: only a check inside a node's
    /// loops can see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_long_node_stops_at_its_deadline() {
        let query = "max_over_time(vector(1)[1d:1s])";
        let looks = Arc::new(AtomicUsize::new(0));
        let base = std::time::Instant::now();
        let counted = looks.clone();
        let clock = Clock::new(move || {
            if counted.fetch_add(1, Ordering::Relaxed) < 4 {
                base
            } else {
                base + Duration::from_secs(3600)
            }
        });
        let engine = Engine::new(EngineOptions::default()).with_clock(clock);
        let q = MemQueryable::default();
        let e = engine.instant(&q, query, 0).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.kind),
            Some(ErrorKind::Timeout),
            "{e:?}"
        );
        assert!(looks.load(Ordering::Relaxed) > 4);
        // With the real clock, the query completes.
        assert!(Engine::default().instant(&q, query, 0).await.is_ok());
    }

    /// Issue 22, item 2: `count_values` makes a series per distinct value, each a value per step;
    /// they are counted against the samples limit before they are allocated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn count_values_series_count_against_the_samples_limit() {
        let series = (0..20)
            .map(|k| SeriesData {
                labels: Labels::from_pairs([("__name__", "m"), ("k", &k.to_string())]),
                samples: (0..100)
                    .map(|i| Sample::new(i * 15_000, (i * 100 + k) as f64))
                    .collect(),
                ..Default::default()
            })
            .collect();
        let q = MemQueryable { series };
        let query = "count_values(\"v\", m)";
        let (end, step) = (99 * 15_000, 15_000);
        // 2,000 distinct values over 100 steps: 200,000 values held.
        let small = Engine::new(EngineOptions {
            max_samples: 100_000,
            ..Default::default()
        });
        let e = small.range(&q, query, 0, end, step).await.err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::Execution));
        let r = Engine::default().range(&q, query, 0, end, step).await;
        assert!(matches!(r.map(|r| r.value), Ok(QueryValue::Matrix(m)) if m.len() == 2_000));
    }
}
