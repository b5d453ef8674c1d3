//! Arithmetic on float histograms as PromQL needs it: bucket bounds, buckets by index, schema
//! reduction, zero-bucket reconciliation, `+`, `-`, scaling, compaction and counter-reset detection.
//!
//! Semantics follow Prometheus' `model/histogram` (`FloatHistogram.Add`, `Sub`, `Mul`, `Div`,
//! `DetectReset`, `zeroCountForLargerThreshold`, `reduceResolution`; read at commit d15adb9, v3.x).
//! The implementation differs: a side's buckets are handled as a sorted list of `(index, count)` and
//! results are always compact (no empty buckets, spans joined), which is the form Prometheus' API and
//! its promqltest comparisons see (`Compact(0)`; empty buckets are not shown).

use super::bounds_table::FRACTIONS;
use super::{CounterResetHint, FloatHistogram, Span};

/// The schema of native histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CombineError {
    /// Prometheus' `ErrHistogramsIncompatibleSchema`.
    #[error(
        "cannot apply this operation to histograms with a mix of exponential and custom bucket schemas"
    )]
    IncompatibleSchema,
}

/// One bucket with its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
    pub count: f64,
    /// The bucket's index (irrelevant for the zero bucket).
    pub index: i32,
}

/// The upper bound of bucket `idx` (Prometheus' `getBound`): `2^(idx / 2^schema)` with the exact
/// table values, `f64::MAX` for the last finite bucket; for custom buckets the `idx`-th bound, `+Inf`
/// past the last and `-Inf` below the first.
pub fn bound(idx: i32, schema: i32, custom: &[f64]) -> f64 {
    if schema == CUSTOM_BUCKETS_SCHEMA {
        return match usize::try_from(idx) {
            Ok(i) if i < custom.len() => custom[i],
            Ok(_) => f64::INFINITY,
            Err(_) => f64::NEG_INFINITY,
        };
    }
    let idx = i64::from(idx);
    if schema < 0 {
        let exp = idx << (-schema).min(62);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let schema = schema.min(8);
    let frac = FRACTIONS[schema as usize][(idx & ((1 << schema) - 1)) as usize];
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// `frac × 2^exp` without intermediate overflow or underflow (Go's `math.Ldexp`).
fn ldexp(frac: f64, exp: i64) -> f64 {
    let mut x = frac;
    let mut e = exp.clamp(-2200, 2200);
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e as i32)
}

/// The index of bucket `idx` of `origin` in the coarser `target` schema.
fn target_idx(idx: i32, origin: i32, target: i32) -> i32 {
    // Saturating: indices from a corrupt chunk must not overflow (they compute nonsense instead).
    (idx.saturating_sub(1) >> (origin.saturating_sub(target)).clamp(0, 31)).saturating_add(1)
}

/// A side's buckets as `(index, count)` in index order.
pub fn pairs(spans: &[Span], buckets: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx = 0i32;
    let mut k = 0;
    for s in spans {
        idx = idx.saturating_add(s.offset);
        for _ in 0..s.length {
            let Some(c) = buckets.get(k) else {
                return out;
            };
            out.push((idx, *c));
            k += 1;
            idx = idx.saturating_add(1);
        }
    }
    out
}

/// Spans and buckets of `(index, count)` pairs in index order, empty buckets left out.
pub fn from_pairs(pairs: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::with_capacity(pairs.len());
    let mut next: Option<i32> = None;
    for &(idx, c) in pairs {
        if c == 0.0 {
            continue;
        }
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == idx => last.length += 1,
            (Some(n), _) => spans.push(Span {
                offset: idx.saturating_sub(n),
                length: 1,
            }),
            (None, _) => spans.push(Span {
                offset: idx,
                length: 1,
            }),
        }
        buckets.push(c);
        next = Some(idx.saturating_add(1));
    }
    (spans, buckets)
}

/// Pairs merged down to `target` (counts of buckets that fall together added).
fn reduce(pairs: Vec<(i32, f64)>, origin: i32, target: i32) -> Vec<(i32, f64)> {
    if origin <= target {
        return pairs;
    }
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(pairs.len());
    for (idx, c) in pairs {
        let t = target_idx(idx, origin, target);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// Two sorted pair lists merged, `b`'s counts times `sign`, `b`'s buckets whose absolute upper bound
/// is at or below `skip_upto` left out (they are in the zero bucket).
fn merge(
    a: &[(i32, f64)],
    b: &[(i32, f64)],
    sign: f64,
    skip: impl Fn(i32) -> bool,
) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j < b.len() && skip(b[j].0) {
            j += 1;
            continue;
        }
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, x.1 + sign * y.1));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.0, sign * y.1));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl FloatHistogram {
    /// Whether the buckets have custom bounds (schema −53).
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    pub fn positive_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.positive_spans, &self.positive_buckets)
    }

    pub fn negative_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.negative_spans, &self.negative_buckets)
    }

    fn set_sides(&mut self, pos: &[(i32, f64)], neg: &[(i32, f64)]) {
        (self.positive_spans, self.positive_buckets) = from_pairs(pos);
        (self.negative_spans, self.negative_buckets) = from_pairs(neg);
    }

    /// The buckets merged down to the coarser schema `target` (nothing changes when it is not
    /// coarser, or for custom buckets).
    pub fn reduce_resolution(&mut self, target: i32) {
        if self.uses_custom_buckets() || target >= self.schema {
            return;
        }
        let pos = reduce(self.positive_pairs(), self.schema, target);
        let neg = reduce(self.negative_pairs(), self.schema, target);
        self.schema = target;
        self.set_sides(&pos, &neg);
    }

    /// Empty buckets removed and spans joined (Prometheus' `Compact(0)`).
    pub fn compact(&mut self) {
        let (p, n) = (self.positive_pairs(), self.negative_pairs());
        self.set_sides(&p, &n);
    }

    /// Every count and the sum scaled by `f`; a negative factor makes a gauge (`Mul`).
    pub fn mul(&mut self, f: f64) {
        self.zero_count *= f;
        self.count *= f;
        self.sum *= f;
        self.positive_buckets.iter_mut().for_each(|c| *c *= f);
        self.negative_buckets.iter_mut().for_each(|c| *c *= f);
        if f < 0.0 {
            self.hint = CounterResetHint::Gauge;
        }
    }

    /// As [`FloatHistogram::mul`], dividing; division by zero removes every bucket (`Div`).
    pub fn div(&mut self, d: f64) {
        self.zero_count /= d;
        self.count /= d;
        self.sum /= d;
        if d == 0.0 {
            self.positive_spans.clear();
            self.positive_buckets.clear();
            self.negative_spans.clear();
            self.negative_buckets.clear();
            return;
        }
        self.positive_buckets.iter_mut().for_each(|c| *c /= d);
        self.negative_buckets.iter_mut().for_each(|c| *c /= d);
        if d < 0.0 {
            self.hint = CounterResetHint::Gauge;
        }
    }

    /// Adds `other` (schemas reduced to the coarser, zero buckets widened to cover both); returns
    /// whether the counter-reset hints collided (one `CounterReset`, the other `NotCounterReset`).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<bool, CombineError> {
        self.combine(other, 1.0)
    }

    /// As [`FloatHistogram::add`], subtracting. The hint is set as for `add`; PromQL's `-` makes the
    /// result a gauge itself.
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<bool, CombineError> {
        self.combine(other, -1.0)
    }

    fn combine(&mut self, other: &FloatHistogram, sign: f64) -> Result<bool, CombineError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(CombineError::IncompatibleSchema);
        }
        let collision = self.adjust_counter_reset(other);
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            self.combine_custom(other, sign);
            return Ok(collision);
        }
        let other_zero = self.reconcile_zero_buckets(other);
        self.zero_count += sign * other_zero;
        let target = self.schema.min(other.schema);
        let a_pos = reduce(self.positive_pairs(), self.schema, target);
        let a_neg = reduce(self.negative_pairs(), self.schema, target);
        let b_pos = reduce(other.positive_pairs(), other.schema, target);
        let b_neg = reduce(other.negative_pairs(), other.schema, target);
        self.schema = target;
        let zt = self.zero_threshold;
        let in_zero = |idx: i32| bound(idx, target, &[]) <= zt;
        let pos = merge(&a_pos, &b_pos, sign, in_zero);
        let neg = merge(&a_neg, &b_neg, sign, in_zero);
        self.set_sides(&pos, &neg);
        Ok(collision)
    }

    /// Custom buckets: with equal bounds bucket by bucket; otherwise both are mapped onto the bounds
    /// they share (each bucket into the shared bucket holding it), as Prometheus reconciles them.
    fn combine_custom(&mut self, other: &FloatHistogram, sign: f64) {
        if self.custom_values == other.custom_values {
            let pos = merge(
                &self.positive_pairs(),
                &other.positive_pairs(),
                sign,
                |_| false,
            );
            self.set_sides(&pos, &[]);
            return;
        }
        let shared = shared_bounds(&self.custom_values, &other.custom_values);
        let pos = merge(
            &self.custom_pairs_on(&shared),
            &other.custom_pairs_on(&shared),
            sign,
            |_| false,
        );
        self.custom_values = shared;
        self.set_sides(&pos, &[]);
    }

    /// The custom buckets mapped onto `shared` bounds (a subset of this histogram's): each bucket
    /// counted in the shared bucket that holds it.
    fn custom_pairs_on(&self, shared: &[f64]) -> Vec<(i32, f64)> {
        let mut out: Vec<(i32, f64)> = Vec::new();
        for (idx, c) in self.positive_pairs() {
            let upper = bound(idx, CUSTOM_BUCKETS_SCHEMA, &self.custom_values);
            let t = shared.partition_point(|b| *b < upper) as i32;
            match out.last_mut() {
                Some(last) if last.0 == t => last.1 += c,
                _ => out.push((t, c)),
            }
        }
        out
    }

    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        match (self.hint, other.hint) {
            (a, b) if a == b => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.hint = Unknown;
                false
            }
            _ => {
                self.hint = Unknown;
                true
            }
        }
    }

    /// Widens the zero buckets of `self` and (virtually) `other` to one threshold that lies on a
    /// bucket boundary of both; returns `other`'s zero count at that threshold.
    fn reconcile_zero_buckets(&mut self, other: &FloatHistogram) -> f64 {
        let (mut ozc, mut ozt) = (other.zero_count, other.zero_threshold);
        // Each round moves a threshold up to a bucket boundary: bounded by the number of buckets.
        let mut rounds = 2 * (self.positive_buckets.len() + other.positive_buckets.len()) + 4;
        while ozt != self.zero_threshold && rounds > 0 {
            rounds -= 1;
            if self.zero_threshold > ozt {
                (ozc, ozt) = other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if ozt > self.zero_threshold {
                (self.zero_count, self.zero_threshold) = self.zero_count_for_larger_threshold(ozt);
                self.trim_buckets_in_zero_bucket();
            }
        }
        ozc
    }

    /// The zero count with the zero bucket widened to `larger`, and the threshold itself: moved up to
    /// the far bound of a populated bucket it would cut (`zeroCountForLargerThreshold`).
    pub fn zero_count_for_larger_threshold(&self, mut larger: f64) -> (f64, f64) {
        if larger <= self.zero_threshold {
            return (self.zero_count, self.zero_threshold.max(larger));
        }
        let pos = self.positive_pairs();
        let neg = self.negative_pairs();
        'outer: loop {
            let mut count = self.zero_count;
            for &(idx, c) in &pos {
                if bound(idx - 1, self.schema, &[]) >= larger {
                    break;
                }
                count += c;
                let upper = bound(idx, self.schema, &[]);
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                    }
                    break;
                }
            }
            for &(idx, c) in &neg {
                if bound(idx - 1, self.schema, &[]) >= larger {
                    break;
                }
                count += c;
                let far = bound(idx, self.schema, &[]);
                if far > larger {
                    if c != 0.0 {
                        larger = far;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (count, larger);
        }
    }

    /// Removes the buckets inside the zero bucket (their counts are already in the zero count).
    fn trim_buckets_in_zero_bucket(&mut self) {
        let zt = self.zero_threshold;
        let schema = self.schema;
        let keep = |p: Vec<(i32, f64)>| -> Vec<(i32, f64)> {
            p.into_iter()
                .filter(|(idx, _)| bound(idx - 1, schema, &[]) >= zt)
                .collect()
        };
        let (pos, neg) = (keep(self.positive_pairs()), keep(self.negative_pairs()));
        self.set_sides(&pos, &neg);
    }

    /// Whether `self` follows a counter reset after `prev` (`DetectReset`): the hint decides when it
    /// says so; otherwise a smaller count, zero count or bucket, a finer schema, a smaller zero
    /// threshold or a populated bucket gone.
    pub fn detect_reset(&self, prev: &FloatHistogram) -> bool {
        match self.hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < prev.count {
            return true;
        }
        if self.uses_custom_buckets() != prev.uses_custom_buckets() {
            return true;
        }
        if self.uses_custom_buckets() {
            if self.custom_values != prev.custom_values {
                let shared = shared_bounds(&self.custom_values, &prev.custom_values);
                return side_reset(
                    &self.custom_pairs_on(&shared),
                    &prev.custom_pairs_on(&shared),
                );
            }
            return side_reset(&self.positive_pairs(), &prev.positive_pairs());
        }
        if self.schema > prev.schema || self.zero_threshold < prev.zero_threshold {
            return true;
        }
        let (pzc, zt) = prev.zero_count_for_larger_threshold(self.zero_threshold);
        if zt != self.zero_threshold || self.zero_count < pzc {
            return true;
        }
        let beyond = |p: Vec<(i32, f64)>, schema: i32| -> Vec<(i32, f64)> {
            reduce(p, schema, self.schema)
                .into_iter()
                .filter(|(idx, _)| bound(*idx, self.schema, &[]) > zt)
                .collect()
        };
        side_reset(
            &beyond(self.positive_pairs(), self.schema),
            &beyond(prev.positive_pairs(), prev.schema),
        ) || side_reset(
            &beyond(self.negative_pairs(), self.schema),
            &beyond(prev.negative_pairs(), prev.schema),
        )
    }

    /// Prometheus' `FloatHistogram.String()`: `{count:…, sum:…, <bucket>:<count>…}` with the populated
    /// buckets from the most negative up (`count_values` of histograms, promtool's dump).
    pub fn go_string(&self) -> String {
        use crate::promfmt::go_g;
        let bucket = |b: &Bucket| {
            format!(
                "{}{},{}{}:{}",
                if b.lower_inclusive { '[' } else { '(' },
                go_g(b.lower, None),
                go_g(b.upper, None),
                if b.upper_inclusive { ']' } else { ')' },
                go_g(b.count, None)
            )
        };
        let mut out = format!(
            "{{count:{}, sum:{}",
            go_g(self.count, None),
            go_g(self.sum, None)
        );
        for (idx, c) in self.negative_pairs().into_iter().rev() {
            if c != 0.0 {
                let b = Bucket {
                    lower: -bound(idx, self.schema, &self.custom_values),
                    upper: -bound(idx - 1, self.schema, &self.custom_values),
                    lower_inclusive: true,
                    upper_inclusive: false,
                    count: c,
                    index: idx,
                };
                out.push_str(", ");
                out.push_str(&bucket(&b));
            }
        }
        if self.zero_count != 0.0 {
            out.push_str(", ");
            out.push_str(&bucket(&self.zero_bucket()));
        }
        let custom = self.uses_custom_buckets();
        for (idx, c) in self.positive_pairs() {
            if c != 0.0 {
                let b = Bucket {
                    lower: bound(idx - 1, self.schema, &self.custom_values),
                    upper: bound(idx, self.schema, &self.custom_values),
                    lower_inclusive: custom && idx == 0,
                    upper_inclusive: true,
                    count: c,
                    index: idx,
                };
                out.push_str(", ");
                out.push_str(&bucket(&b));
            }
        }
        out.push('}');
        out
    }

    /// The zero bucket with its bounds.
    pub fn zero_bucket(&self) -> Bucket {
        Bucket {
            lower: -self.zero_threshold,
            upper: self.zero_threshold,
            lower_inclusive: true,
            upper_inclusive: true,
            count: self.zero_count,
            index: 0,
        }
    }

    /// Every bucket in ascending order of value: negative buckets from the most negative, the zero
    /// bucket when it holds observations, the positive buckets (`AllBucketIterator`); empty buckets
    /// included, buckets reaching into the zero bucket cut at its edge.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let custom = self.uses_custom_buckets();
        let mut out =
            Vec::with_capacity(self.positive_buckets.len() + self.negative_buckets.len() + 1);
        let zt = self.zero_threshold;
        for (idx, c) in self.negative_pairs().into_iter().rev() {
            let upper = -bound(idx - 1, self.schema, &self.custom_values);
            out.push(Bucket {
                lower: -bound(idx, self.schema, &self.custom_values),
                // A bucket reaching into the zero bucket ends at its edge.
                upper: if upper < 0.0 && upper > -zt {
                    -zt
                } else {
                    upper
                },
                lower_inclusive: true,
                upper_inclusive: false,
                count: c,
                index: idx,
            });
        }
        if self.zero_count > 0.0 {
            out.push(self.zero_bucket());
        }
        for (idx, c) in self.positive_pairs() {
            let lower = bound(idx - 1, self.schema, &self.custom_values);
            out.push(Bucket {
                lower: if lower > 0.0 && lower < zt { zt } else { lower },
                upper: bound(idx, self.schema, &self.custom_values),
                lower_inclusive: if custom { idx == 0 } else { false },
                upper_inclusive: true,
                count: c,
                index: idx,
            });
        }
        out
    }
}

/// Kahan-Neumaier summation step: adds `inc` to `sum` with compensation `c` (as Prometheus 3's
/// `kahansum.Inc`; PromQL's float sums use it too).
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running sum of histograms with a Kahan-Neumaier compensation term for every count, the sum
/// and every bucket (Prometheus' `KahanAdd`): sums of large and small values keep the small ones.
#[derive(Debug, Clone)]
pub struct KahanSum {
    /// The sum's layout, hint, count, sum and zero count (its buckets live in `pos` and `neg`).
    h: FloatHistogram,
    /// `(index, sum, compensation)` per bucket.
    pos: Vec<(i32, f64, f64)>,
    neg: Vec<(i32, f64, f64)>,
    c_count: f64,
    c_sum: f64,
    c_zero: f64,
}

fn triples(p: Vec<(i32, f64)>) -> Vec<(i32, f64, f64)> {
    p.into_iter().map(|(i, v)| (i, v, 0.0)).collect()
}

fn reduce_triples(t: Vec<(i32, f64, f64)>, origin: i32, target: i32) -> Vec<(i32, f64, f64)> {
    if origin <= target {
        return t;
    }
    let mut out: Vec<(i32, f64, f64)> = Vec::with_capacity(t.len());
    for (idx, v, c) in t {
        let ti = target_idx(idx, origin, target);
        match out.last_mut() {
            Some(last) if last.0 == ti => (last.1, last.2) = kahan_inc(v, last.1, last.2 + c),
            _ => out.push((ti, v, c)),
        }
    }
    out
}

fn kahan_merge(a: &mut Vec<(i32, f64, f64)>, b: &[(i32, f64)], skip: impl Fn(i32) -> bool) {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut j = 0;
    for &(idx, v, c) in a.iter() {
        while j < b.len() && b[j].0 < idx {
            if !skip(b[j].0) {
                out.push((b[j].0, b[j].1, 0.0));
            }
            j += 1;
        }
        if j < b.len() && b[j].0 == idx && !skip(idx) {
            let (s, c) = kahan_inc(b[j].1, v, c);
            out.push((idx, s, c));
            j += 1;
        } else {
            out.push((idx, v, c));
        }
    }
    for &(idx, v) in &b[j..] {
        if !skip(idx) {
            out.push((idx, v, 0.0));
        }
    }
    *a = out;
}

impl KahanSum {
    pub fn new(first: &FloatHistogram) -> KahanSum {
        KahanSum {
            h: first.clone(),
            pos: triples(first.positive_pairs()),
            neg: triples(first.negative_pairs()),
            c_count: 0.0,
            c_sum: 0.0,
            c_zero: 0.0,
        }
    }

    /// Adds `other`; returns whether the counter-reset hints collided (see [`FloatHistogram::add`]).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<bool, CombineError> {
        if self.h.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(CombineError::IncompatibleSchema);
        }
        let collision = self.h.adjust_counter_reset(other);
        let layout_differs = if self.h.uses_custom_buckets() {
            self.h.custom_values != other.custom_values
        } else {
            self.h.zero_threshold != other.zero_threshold
        };
        if layout_differs {
            // Rare (different custom bounds or zero buckets): the compensation is folded in and the
            // layouts reconciled without it.
            let mut v = self.value();
            let hint = self.h.hint;
            v.hint = hint;
            v.add(other)?;
            v.hint = self.h.hint;
            *self = KahanSum::new(&v);
            return Ok(collision);
        }
        (self.h.count, self.c_count) = kahan_inc(other.count, self.h.count, self.c_count);
        (self.h.sum, self.c_sum) = kahan_inc(other.sum, self.h.sum, self.c_sum);
        (self.h.zero_count, self.c_zero) =
            kahan_inc(other.zero_count, self.h.zero_count, self.c_zero);
        let target = self.h.schema.min(other.schema);
        if !self.h.uses_custom_buckets() && self.h.schema > target {
            self.pos = reduce_triples(std::mem::take(&mut self.pos), self.h.schema, target);
            self.neg = reduce_triples(std::mem::take(&mut self.neg), self.h.schema, target);
            self.h.schema = target;
        }
        let (b_pos, b_neg) = if self.h.uses_custom_buckets() {
            (other.positive_pairs(), Vec::new())
        } else {
            (
                reduce(other.positive_pairs(), other.schema, target),
                reduce(other.negative_pairs(), other.schema, target),
            )
        };
        let zt = self.h.zero_threshold;
        let custom = self.h.uses_custom_buckets();
        let in_zero = |idx: i32| !custom && bound(idx, target, &[]) <= zt;
        kahan_merge(&mut self.pos, &b_pos, in_zero);
        kahan_merge(&mut self.neg, &b_neg, in_zero);
        Ok(collision)
    }

    /// Every count, the sum and the compensation scaled by `f`.
    pub fn scale(&mut self, f: f64) {
        self.h.count *= f;
        self.h.sum *= f;
        self.h.zero_count *= f;
        self.c_count *= f;
        self.c_sum *= f;
        self.c_zero *= f;
        for t in self.pos.iter_mut().chain(self.neg.iter_mut()) {
            t.1 *= f;
            t.2 *= f;
        }
    }

    /// Every count, the sum and the compensation divided by `d`.
    pub fn div(&mut self, d: f64) {
        self.h.count /= d;
        self.h.sum /= d;
        self.h.zero_count /= d;
        self.c_count /= d;
        self.c_sum /= d;
        self.c_zero /= d;
        for t in self.pos.iter_mut().chain(self.neg.iter_mut()) {
            t.1 /= d;
            t.2 /= d;
        }
    }

    /// Whether a count, the sum or a bucket is infinite (`HasOverflow`).
    pub fn has_overflow(&self) -> bool {
        self.h.count.is_infinite()
            || self.h.sum.is_infinite()
            || self.h.zero_count.is_infinite()
            || self
                .pos
                .iter()
                .chain(self.neg.iter())
                .any(|t| t.1.is_infinite())
    }

    /// The sum with its compensation added, compact.
    pub fn value(&self) -> FloatHistogram {
        let mut h = self.h.clone();
        h.count += self.c_count;
        h.sum += self.c_sum;
        h.zero_count += self.c_zero;
        let fold =
            |t: &[(i32, f64, f64)]| t.iter().map(|&(i, v, c)| (i, v + c)).collect::<Vec<_>>();
        h.set_sides(&fold(&self.pos), &fold(&self.neg));
        h
    }
}

/// The custom bounds two histograms share.
fn shared_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().copied().filter(|x| b.contains(x)).collect()
}

/// Whether a populated bucket of `prev` is missing from or smaller in `cur` (same schema).
fn side_reset(cur: &[(i32, f64)], prev: &[(i32, f64)]) -> bool {
    let mut j = 0;
    for &(idx, pc) in prev {
        while j < cur.len() && cur[j].0 < idx {
            j += 1;
        }
        match cur.get(j) {
            Some(&(ci, cc)) if ci == idx => {
                if cc < pc {
                    return true;
                }
            }
            _ => {
                if pc != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fh(schema: i32, zt: f64, zc: f64, offset: i32, buckets: &[f64]) -> FloatHistogram {
        let count = zc + buckets.iter().sum::<f64>();
        FloatHistogram {
            schema,
            zero_threshold: zt,
            zero_count: zc,
            count,
            positive_spans: vec![Span {
                offset,
                length: buckets.len() as u32,
            }],
            positive_buckets: buckets.to_vec(),
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn bounds_follow_the_table_and_the_edges() {
        assert_eq!(bound(0, 0, &[]), 1.0);
        assert_eq!(bound(1, 0, &[]), 2.0);
        assert_eq!(bound(-1, 0, &[]), 0.5);
        // Twice the table value 0.7071067811865475.
        assert_eq!(bound(1, 1, &[]), 2.0 * 0.707_106_781_186_547_5);
        assert_eq!(bound(1, -1, &[]), 4.0);
        // The last finite bucket ends at f64::MAX, the next one at +Inf.
        assert_eq!(bound(1024, 0, &[]), f64::MAX);
        assert_eq!(bound(1025, 0, &[]), f64::INFINITY);
        assert_eq!(bound(0, CUSTOM_BUCKETS_SCHEMA, &[1.0, 2.0]), 1.0);
        assert_eq!(bound(2, CUSTOM_BUCKETS_SCHEMA, &[1.0, 2.0]), f64::INFINITY);
    }

    #[test]
    fn adding_reduces_schema_and_keeps_every_observation() {
        // Schema 1 buckets 1..=4 (bounds √2, 2, 2√2, 4) fold into schema 0 buckets 1 and 2.
        let mut a = fh(0, 0.0, 0.0, 1, &[1.0, 2.0]);
        let b = fh(1, 0.0, 0.0, 1, &[1.0, 1.0, 1.0, 1.0]);
        a.add(&b).unwrap();
        assert_eq!(a.schema, 0);
        assert_eq!(a.positive_pairs(), vec![(1, 3.0), (2, 4.0)]);
        assert_eq!(a.count, 7.0);
        a.sub(&b).unwrap();
        assert_eq!(a.positive_pairs(), vec![(1, 1.0), (2, 2.0)]);
    }

    #[test]
    fn a_wider_zero_bucket_swallows_the_buckets_inside_it() {
        // Zero threshold 1 against 0.001: the other's buckets up to 1 move into the zero bucket.
        let mut a = fh(0, 1.0, 2.0, 1, &[5.0]);
        let b = fh(0, 0.001, 1.0, -2, &[1.0, 1.0, 1.0]);
        a.add(&b).unwrap();
        assert_eq!(a.zero_threshold, 1.0);
        assert_eq!(a.zero_count, 2.0 + 1.0 + 1.0 + 1.0 + 1.0);
        assert_eq!(a.positive_pairs(), vec![(1, 5.0)]);
    }

    #[test]
    fn resets_are_detected_by_bucket() {
        let prev = fh(0, 0.0, 0.0, 0, &[1.0, 2.0]);
        let mut cur = fh(0, 0.0, 0.0, 0, &[2.0, 1.0]);
        cur.count = 5.0;
        assert!(cur.detect_reset(&prev));
        let cur = fh(0, 0.0, 0.0, 0, &[1.0, 3.0]);
        assert!(!cur.detect_reset(&prev));
        let cur = fh(0, 0.0, 0.0, 1, &[9.0]);
        assert!(cur.detect_reset(&prev), "bucket 0 disappeared");
        let mut cur = fh(0, 0.0, 0.0, 0, &[0.0, 0.0]);
        cur.hint = CounterResetHint::NotCounterReset;
        assert!(!cur.detect_reset(&prev));
    }

    #[test]
    fn go_string_lists_populated_buckets_from_below() {
        let h = FloatHistogram {
            count: 20.0,
            sum: 10.0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![1.0, 2.0],
            negative_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            negative_buckets: vec![1.0, 2.0],
            ..FloatHistogram::default()
        };
        // As Prometheus' aggregators.test expects of count_values.
        assert_eq!(
            h.go_string(),
            "{count:20, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}"
        );
    }

    #[test]
    fn compaction_drops_empty_buckets() {
        let mut h = fh(0, 0.0, 0.0, 0, &[0.0, 1.0, 0.0, 0.0, 2.0, 0.0]);
        h.compact();
        assert_eq!(
            h.positive_spans,
            vec![
                Span {
                    offset: 1,
                    length: 1
                },
                Span {
                    offset: 2,
                    length: 1
                }
            ]
        );
        assert_eq!(h.positive_buckets, vec![1.0, 2.0]);
    }
}
