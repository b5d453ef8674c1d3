//! The evaluator: every node yields its value at every step at once (see the module documentation of
//! [`super`]).

use std::collections::HashMap;
use std::sync::Arc;

use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::histogram::FloatHistogram;
use meridian_core::labels::Labels;
use meridian_core::sample::{Sample, is_stale_nan};
use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::{QueryValue, VectorSample, at_ms, offset_ms};
use crate::queryable::{HPoint, SeriesData};

/// The evaluation grid: `n` steps from `start`, `step` apart (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps {
    pub start: i64,
    pub step: i64,
    pub n: usize,
}

impl Steps {
    pub(super) fn t(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an instant-vector node: its value at each step where `ok`, a native histogram
/// where `h` holds one (`h` stays empty for series of floats only).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub labels: Labels,
    pub v: Vec<f64>,
    pub ok: Vec<bool>,
    pub h: Vec<Option<Arc<FloatHistogram>>>,
}

/// A value of an instant vector at one step.
#[derive(Debug, Clone)]
pub(crate) enum Elem {
    F(f64),
    H(Arc<FloatHistogram>),
}

impl Row {
    pub(super) fn new(labels: Labels, n: usize) -> Row {
        Row {
            labels,
            v: vec![0.0; n],
            ok: vec![false; n],
            h: Vec::new(),
        }
    }

    pub(super) fn set(&mut self, i: usize, v: f64) {
        self.v[i] = v;
        self.ok[i] = true;
        if let Some(h) = self.h.get_mut(i) {
            *h = None;
        }
    }

    /// Sets a histogram value at step `i`.
    pub(super) fn set_h(&mut self, i: usize, h: Arc<FloatHistogram>) {
        if self.h.is_empty() {
            self.h = vec![None; self.ok.len()];
        }
        self.h[i] = Some(h);
        self.ok[i] = true;
    }

    pub(super) fn set_elem(&mut self, i: usize, e: Elem) {
        match e {
            Elem::F(v) => self.set(i, v),
            Elem::H(h) => self.set_h(i, h),
        }
    }

    /// The float value at step `i` (`None` where there is none, or a histogram).
    pub(super) fn get(&self, i: usize) -> Option<f64> {
        (self.ok[i] && self.hist(i).is_none()).then(|| self.v[i])
    }

    /// The histogram value at step `i`.
    pub(super) fn hist(&self, i: usize) -> Option<&Arc<FloatHistogram>> {
        if !self.ok[i] {
            return None;
        }
        self.h.get(i).and_then(Option::as_ref)
    }

    pub(super) fn elem(&self, i: usize) -> Option<Elem> {
        if !self.ok[i] {
            return None;
        }
        Some(match self.hist(i) {
            Some(h) => Elem::H(h.clone()),
            None => Elem::F(self.v[i]),
        })
    }

    /// Whether any step holds a histogram.
    pub(super) fn has_hists(&self) -> bool {
        self.h
            .iter()
            .zip(&self.ok)
            .any(|(h, ok)| *ok && h.is_some())
    }

    /// Removes the histogram values (functions of floats drop them, as Prometheus does).
    pub(super) fn drop_hists(&mut self) {
        for (i, h) in self.h.iter().enumerate() {
            if h.is_some() {
                self.ok[i] = false;
            }
        }
        self.h.clear();
    }

    pub(super) fn any(&self) -> bool {
        self.ok.iter().any(|b| *b)
    }
}

/// A range-vector node: series' raw samples (no staleness markers) and, per step, the end of the
/// window `(end - range, end]`.
#[derive(Debug, Clone)]
pub(crate) struct RangeVal {
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// Per series (same order as `series`), its histogram samples; empty when no series has any.
    pub hists: Vec<Vec<HPoint>>,
    pub ends: Vec<i64>,
    pub range: i64,
    /// Each sample's value counts raw samples (a downsampled read for `count_over_time`).
    pub counts: bool,
}

impl RangeVal {
    /// The samples of series `s` in the window of step `i`.
    pub(super) fn window(&self, s: usize, i: usize) -> &[Sample] {
        let samples = &self.series[s].1;
        let end = self.ends[i];
        let lo = samples.partition_point(|x| x.t <= end.saturating_sub(self.range));
        let hi = samples.partition_point(|x| x.t <= end);
        &samples[lo..hi]
    }

    /// The histogram samples of series `s` in the window of step `i`.
    pub(super) fn hwindow(&self, s: usize, i: usize) -> &[HPoint] {
        let Some(h) = self.hists.get(s) else {
            return &[];
        };
        let end = self.ends[i];
        let lo = h.partition_point(|x| x.t <= end.saturating_sub(self.range));
        let hi = h.partition_point(|x| x.t <= end);
        &h[lo..hi]
    }

    /// Whether any series holds histograms.
    pub(super) fn has_hists(&self) -> bool {
        self.hists.iter().any(|h| !h.is_empty())
    }
}

/// Which sample a vector selector uses at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// `samples[j]`.
    F(usize),
    /// `histograms[j]`.
    H(usize),
}

/// A series of a vector selector: its labels, samples and, per step, the sample used.
pub(crate) type VectorPoints<'a> = (Labels, &'a SeriesData, Vec<Option<Pick>>);

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Row>),
    Range(RangeVal),
}

impl Val {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "vector",
            Val::Range(_) => "matrix",
        }
    }
}

pub(crate) fn exec(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Execution, msg)
}

/// Prometheus' `ErrTooManySamples` (`promql/engine.go`), answered 422 `execution`.
pub(crate) fn too_many_samples() -> Error {
    exec("query processing would load too many samples into memory in query execution")
}

/// What bounds an evaluation.
pub(crate) struct Limits {
    pub lookback: i64,
    pub sub_step: i64,
    pub max_samples: usize,
    pub deadline: std::time::Instant,
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub clock: super::Clock,
}

/// Checks the deadline and cancellation from inside long loops: [`Guard::tick`] counts work and looks
/// at the clock every [`Guard::EVERY`] units, so the check costs next to nothing per step.
pub(crate) struct Guard {
    deadline: std::time::Instant,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clock: super::Clock,
    work: std::cell::Cell<usize>,
}

impl Guard {
    /// Units of work (steps, samples) between two looks at the clock.
    const EVERY: usize = 1 << 14;

    /// Fails with `canceled` or `timeout` when the query must stop.
    pub(super) fn check(&self) -> Result<()> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Canceled, "query was canceled"));
        }
        if self.clock.now() > self.deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                "query timed out in expression evaluation",
            ));
        }
        Ok(())
    }

    /// Counts `units` of work; every [`Guard::EVERY`] units, [`Guard::check`].
    pub(super) fn tick(&self, units: usize) -> Result<()> {
        let w = self.work.get().saturating_add(units);
        if w >= Self::EVERY {
            self.work.set(0);
            return self.check();
        }
        self.work.set(w);
        Ok(())
    }
}

pub(crate) struct Evaluator<'a> {
    data: &'a HashMap<usize, Vec<SeriesData>>,
    pub lookback: i64,
    sub_step: i64,
    max_samples: usize,
    pub guard: Guard,
    pub qstart: i64,
    pub qend: i64,
}

impl<'a> Evaluator<'a> {
    pub(super) fn new(
        data: &'a HashMap<usize, Vec<SeriesData>>,
        limits: Limits,
        qstart: i64,
        qend: i64,
    ) -> Evaluator<'a> {
        Evaluator {
            data,
            lookback: limits.lookback,
            sub_step: limits.sub_step,
            max_samples: limits.max_samples,
            guard: Guard {
                deadline: limits.deadline,
                cancel: limits.cancel,
                clock: limits.clock,
                work: std::cell::Cell::new(0),
            },
            qstart,
            qend,
        }
    }

    pub(super) fn eval_top(&mut self, e: &Expr, s: &Steps) -> Result<Val> {
        self.eval(e, s)
    }

    fn check_samples(&self, n: usize) -> Result<()> {
        if n > self.max_samples {
            return Err(too_many_samples());
        }
        Ok(())
    }

    /// Refuses, before they are allocated, `series` rows over the `steps` of a grid: every row holds
    /// a value per step (present or not), so this is the memory the samples limit is about.
    pub(super) fn reserve(&self, series: usize, steps: usize) -> Result<()> {
        match series.checked_mul(steps) {
            Some(n) if n <= self.max_samples => Ok(()),
            _ => Err(too_many_samples()),
        }
    }

    pub(super) fn eval(&mut self, e: &Expr, s: &Steps) -> Result<Val> {
        self.guard.check()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; s.n])),
            Expr::StringLiteral(l) => Ok(Val::Str(l.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, s),
            Expr::Unary(u) => match self.eval(&u.expr, s)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(rows) => {
                    let rows = rows
                        .into_iter()
                        .map(|mut r| {
                            r.labels = drop_name(&r.labels);
                            r.v.iter_mut().for_each(|x| *x = -*x);
                            for h in r.h.iter_mut().flatten() {
                                let mut n = (**h).clone();
                                n.mul(-1.0);
                                *h = Arc::new(n);
                            }
                            r
                        })
                        .collect();
                    Ok(Val::Vector(merge_rows(rows)?))
                }
                other => Err(exec(format!(
                    "unary expression only allowed on scalar or vector, got {}",
                    other.kind()
                ))),
            },
            Expr::VectorSelector(vs) => self.vector_selector(vs, s),
            Expr::MatrixSelector(m) => self.matrix_selector(m, s),
            Expr::Subquery(sq) => self.subquery(sq, s),
            Expr::Call(c) => super::functions::call(self, c, s),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, s),
            Expr::Binary(b) => super::binary::eval(self, b, s),
            Expr::Extension(_) => Err(exec("extension expressions are not supported")),
        }
    }

    /// The series fetched for a selector node.
    pub(super) fn selected(&self, vs: &VectorSelector) -> &'a [SeriesData] {
        self.data
            .get(&(vs as *const VectorSelector as usize))
            .map_or(&[], Vec::as_slice)
    }

    /// Per step, the time a selector with these modifiers looks at.
    pub(super) fn eval_times(
        &self,
        at: &Option<promql_parser::parser::AtModifier>,
        offset: &Option<promql_parser::parser::Offset>,
        s: &Steps,
    ) -> Vec<i64> {
        let o = offset_ms(offset);
        match at_ms(at, self.qstart, self.qend) {
            Some(t) => vec![t.saturating_sub(o); s.n],
            None => (0..s.n).map(|i| s.t(i).saturating_sub(o)).collect(),
        }
    }

    /// For each series, per step, the index of the sample a vector selector uses (the last one in
    /// `(t - lookback, t]`, not a staleness marker).
    ///
    /// Fails (before allocating) when the series kept so far and the next one would hold more steps
    /// than the samples limit, and when the deadline passes.
    pub(super) fn vector_points(
        &self,
        vs: &VectorSelector,
        s: &Steps,
    ) -> Result<Vec<VectorPoints<'a>>> {
        let times = self.eval_times(&vs.at, &vs.offset, s);
        let mut out = Vec::new();
        for sd in self.selected(vs) {
            self.reserve(out.len() + 1, s.n)?;
            let samples = sd.samples.as_slice();
            let hists = sd.histograms.as_slice();
            let mut idx = Vec::with_capacity(s.n);
            let mut any = false;
            for &t in &times {
                self.guard.tick(1)?;
                let f = samples.partition_point(|x| x.t <= t).checked_sub(1);
                let h = hists.partition_point(|x| x.t <= t).checked_sub(1);
                // The later of the last float and the last histogram sample (a float stale marker
                // after a histogram ends it).
                let pick = match (f, h) {
                    (Some(f), Some(h)) if hists[h].t > samples[f].t => {
                        Some((Pick::H(h), hists[h].t))
                    }
                    (Some(f), _) => {
                        (!is_stale_nan(samples[f].v)).then_some((Pick::F(f), samples[f].t))
                    }
                    (None, Some(h)) => Some((Pick::H(h), hists[h].t)),
                    (None, None) => None,
                };
                let found = pick
                    .filter(|(_, st)| *st > t.saturating_sub(self.lookback))
                    .map(|(p, _)| p);
                any |= found.is_some();
                idx.push(found);
            }
            if any {
                out.push((sd.labels.clone(), sd, idx));
            }
        }
        Ok(out)
    }

    fn vector_selector(&mut self, vs: &VectorSelector, s: &Steps) -> Result<Val> {
        let points = self.vector_points(vs, s)?;
        let mut total = 0;
        let rows: Vec<Row> = points
            .into_iter()
            .map(|(labels, sd, idx)| {
                let mut r = Row::new(labels, s.n);
                for (i, j) in idx.into_iter().enumerate() {
                    match j {
                        Some(Pick::F(j)) => r.set(i, sd.samples[j].v),
                        Some(Pick::H(j)) => r.set_h(i, sd.histograms[j].h.clone()),
                        None => continue,
                    }
                    total += 1;
                }
                r
            })
            .collect();
        self.check_samples(total)?;
        Ok(Val::Vector(rows))
    }

    fn matrix_selector(&mut self, m: &MatrixSelector, s: &Steps) -> Result<Val> {
        let ends = self.eval_times(&m.vs.at, &m.vs.offset, s);
        let range = i64::try_from(m.range.as_millis()).unwrap_or(i64::MAX);
        let mut total = 0;
        let mut hists = Vec::new();
        let series: Vec<(Labels, Vec<Sample>)> = self
            .selected(&m.vs)
            .iter()
            .filter_map(|sd| {
                let samples: Vec<Sample> = sd
                    .samples
                    .iter()
                    .copied()
                    .filter(|x| !is_stale_nan(x.v))
                    .collect();
                total += samples.len() + sd.histograms.len();
                if samples.is_empty() && sd.histograms.is_empty() {
                    return None;
                }
                hists.push(sd.histograms.clone());
                Some((sd.labels.clone(), samples))
            })
            .collect();
        self.check_samples(total)?;
        if hists.iter().all(Vec::is_empty) {
            hists.clear();
        }
        let counts = self.selected(&m.vs).iter().any(|sd| sd.counts);
        Ok(Val::Range(RangeVal {
            series,
            hists,
            ends,
            range,
            counts,
        }))
    }

    fn subquery(&mut self, sq: &SubqueryExpr, s: &Steps) -> Result<Val> {
        let ends = self.eval_times(&sq.at, &sq.offset, s);
        let range = i64::try_from(sq.range.as_millis()).unwrap_or(i64::MAX);
        let step = sq
            .step
            .as_ref()
            .map_or(self.sub_step, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            })
            .max(1);
        // In i128: offsets and ranges near the ends of the time range must not overflow.
        let lo = i128::from(ends.iter().copied().min().unwrap_or(0)) - i128::from(range);
        let hi = i128::from(ends.iter().copied().max().unwrap_or(0));
        // The inner grid is aligned to multiples of the step (as Prometheus does), starting after `lo`.
        let wide = i128::from(step);
        let start = lo.div_euclid(wide) * wide + if lo.rem_euclid(wide) == 0 { 0 } else { wide };
        let n = if hi < start {
            0
        } else {
            usize::try_from((hi - start) / wide + 1).unwrap_or(usize::MAX)
        };
        // Counted before the inner evaluation allocates anything: the grid alone holds `n` values
        // (Prometheus counts each subquery step's samples against `--query.max-samples` too).
        self.reserve(1, n)?;
        let start =
            i64::try_from(start).map_err(|_| exec("subquery time range is out of bounds"))?;
        let inner = Steps { start, step, n };
        let mut hists = Vec::new();
        let series = match self.eval(&sq.expr, &inner)? {
            Val::Vector(rows) => {
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut samples = Vec::new();
                    let mut hs = Vec::new();
                    for i in 0..n {
                        self.guard.tick(1)?;
                        match r.elem(i) {
                            Some(Elem::F(v)) => samples.push(Sample::new(inner.t(i), v)),
                            Some(Elem::H(h)) => hs.push(HPoint {
                                t: inner.t(i),
                                h: unknown_reset(h),
                            }),
                            None => {}
                        }
                    }
                    if !samples.is_empty() || !hs.is_empty() {
                        out.push((r.labels, samples));
                        hists.push(hs);
                    }
                }
                out
            }
            Val::Scalar(v) => vec![(
                Labels::empty(),
                v.into_iter()
                    .enumerate()
                    .map(|(i, x)| Sample::new(inner.t(i), x))
                    .collect(),
            )],
            other => {
                return Err(exec(format!(
                    "subquery is only allowed on instant vector, got {}",
                    other.kind()
                )));
            }
        };
        if hists.iter().all(Vec::is_empty) {
            hists.clear();
        }
        Ok(Val::Range(RangeVal {
            series,
            hists,
            ends,
            range,
            counts: false,
        }))
    }
}

/// A subquery's histogram with a counter-reset hint of `CounterReset` or `NotCounterReset` made
/// `Unknown`, as Prometheus does (`engine.go`, subqueries): the subquery may skip the sample of a
/// reset, or repeat it, so only the values can tell.
fn unknown_reset(h: Arc<FloatHistogram>) -> Arc<FloatHistogram> {
    use meridian_core::histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    if matches!(h.hint, CounterReset | NotCounterReset) {
        let mut c = (*h).clone();
        c.hint = Unknown;
        Arc::new(c)
    } else {
        h
    }
}

/// Labels without `__name__`.
pub(crate) fn drop_name(l: &Labels) -> Labels {
    if l.has("__name__") {
        l.without(&["__name__"])
    } else {
        l.clone()
    }
}

/// Joins rows with equal labels (label-changing operations can produce them); two present at the same
/// step is Prometheus' "same labelset" error.
pub(crate) fn merge_rows(rows: Vec<Row>) -> Result<Vec<Row>> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for r in rows {
        match index.get(&r.labels) {
            None => {
                index.insert(r.labels.clone(), out.len());
                out.push(r);
            }
            Some(&k) => {
                let into = &mut out[k];
                for i in 0..r.ok.len() {
                    if let Some(e) = r.elem(i) {
                        if into.ok[i] {
                            return Err(exec(
                                "vector cannot contain metrics with the same labelset",
                            ));
                        }
                        into.set_elem(i, e);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The API value of the top-level node.
pub(crate) fn to_query_value(v: Val, s: &Steps, instant: bool, _e: &Expr) -> Result<QueryValue> {
    if instant {
        let t = s.start;
        return Ok(match v {
            Val::Scalar(x) => QueryValue::Scalar { t, v: x[0] },
            Val::Str(x) => QueryValue::String { t, s: x },
            Val::Vector(rows) => QueryValue::Vector(
                rows.into_iter()
                    .filter_map(|r| {
                        let e = r.elem(0)?;
                        Some(match e {
                            Elem::F(v) => VectorSample {
                                labels: r.labels,
                                t,
                                v,
                                h: None,
                            },
                            Elem::H(h) => VectorSample {
                                labels: r.labels,
                                t,
                                v: 0.0,
                                h: Some(h),
                            },
                        })
                    })
                    .collect(),
            ),
            Val::Range(rv) => {
                let mut out: Vec<SeriesData> = (0..rv.series.len())
                    .filter_map(|k| {
                        let w = rv.window(k, 0);
                        let hw = rv.hwindow(k, 0);
                        (!w.is_empty() || !hw.is_empty()).then(|| SeriesData {
                            labels: rv.series[k].0.clone(),
                            samples: w.to_vec(),
                            histograms: hw.to_vec(),
                            ..Default::default()
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                QueryValue::Matrix(out)
            }
        });
    }
    let mut out: Vec<SeriesData> = match v {
        Val::Scalar(x) => vec![SeriesData {
            labels: Labels::empty(),
            samples: x
                .into_iter()
                .enumerate()
                .map(|(i, v)| Sample::new(s.t(i), v))
                .collect(),
            ..Default::default()
        }],
        Val::Vector(rows) => rows
            .into_iter()
            .filter_map(|r| {
                let samples: Vec<Sample> = (0..s.n)
                    .filter_map(|i| r.get(i).map(|v| Sample::new(s.t(i), v)))
                    .collect();
                let histograms: Vec<HPoint> = (0..s.n)
                    .filter_map(|i| {
                        r.hist(i).map(|h| HPoint {
                            t: s.t(i),
                            h: h.clone(),
                        })
                    })
                    .collect();
                (!samples.is_empty() || !histograms.is_empty()).then_some(SeriesData {
                    labels: r.labels,
                    samples,
                    histograms,
                    ..Default::default()
                })
            })
            .collect(),
        other => {
            return Err(Error::bad_data(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                other.kind()
            )));
        }
    };
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryValue::Matrix(out))
}
