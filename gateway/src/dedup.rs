//! Deduplication of HA replicas: the samples of one series as several replicas (Prometheus or edge pairs
//! scraping the same targets, told apart only by a replica label) recorded them, merged into one clean
//! series.
//!
//! # The algorithm
//!
//! It follows the idea of Thanos' *penalty* deduplication (`pkg/dedup/iter.go`, itself from the
//! Prometheus HA discussion): **stick to one replica and switch only when it has a gap**, so the result
//! has one replica's scrape phase and regular spacing rather than the union of all samples. The current
//! replica has a gap when its next sample is more than **twice the scrape interval** after the last
//! merged sample. Thanos estimates the interval as the last delta (5 s before it has one); here
//! it is the lower quartile of all the replicas' deltas (5 s when no replica has two samples), which
//! outages cannot inflate.
//!
//! Where Thanos penalises the other replicas by skipping ahead of them (which can skip real samples and
//! leave a merged gap up to two intervals longer than any replica's), this implementation decides on the
//! full sample slices, which the gateway has decoded anyway:
//! - on a gap, it switches to the replica with the **earliest** sample after the last merged one, except
//!   that a sample closer than half the scrape interval to the last merged sample is passed over
//!   for the next one (a replica scraping at another phase would otherwise add a sample too close to the
//!   previous one); so a merged gap is at most one interval longer than the gap all replicas share;
//! - ties prefer the current replica, then a **canonical order of the replicas by content**, so the
//!   result does not depend on the order in which stores answered;
//! - one replica (or identical replicas) come out unchanged, so deduplicating a result again changes
//!   nothing.
//!
//! # Counters
//!
//! Replicas of a counter may have different absolute values (a replica restarted and counts from its own
//! zero, or its scrape came a little later). Switching raw values would show a **false reset** (a drop,
//! which `rate` reads as a restart and turns into a huge increase) or a false jump. For counters
//! ([`SeriesKind::Counter`]) a switch therefore continues the merged series from its last value by the
//! new replica's own increase since its previous sample (Prometheus' reset rule: after a drop, the
//! increase is the new value). The merged counter only decreases at a switch when **both** replicas reset
//! there (the target restarted: every replica sees it). Between switches values are the replica's own plus
//! a constant adjustment, so resets inside a replica stay visible. Staleness markers pass through
//! unchanged.

use meridian_core::histogram::CounterResetHint;
use meridian_core::sample::{Sample, is_stale_nan};

use crate::queryable::HPoint;

/// Scrape interval assumed while a replica has only one sample (Thanos' initial penalty), ms.
pub const INITIAL_PENALTY_MS: i64 = 5_000;

/// How replicas' values may be joined at a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Values are taken as they are.
    Gauge,
    /// A monotonic counter: switches never introduce a false reset.
    Counter,
}

/// Functions whose argument is a counter (their result would be wrong on a false reset).
const COUNTER_FUNCTIONS: [&str; 4] = ["rate", "increase", "irate", "resets"];
/// Series names that are counters by convention (classic histograms and summaries included).
const COUNTER_SUFFIXES: [&str; 4] = ["_total", "_count", "_sum", "_bucket"];

/// Whether a series is a counter: its metadata TYPE says so (`counter`, or a histogram/summary part), its
/// name has a counter suffix, or the function consuming it is a counter function.
pub fn kind_of(
    metric_name: &str,
    metadata_type: Option<&str>,
    function: Option<&str>,
) -> SeriesKind {
    let by_type = matches!(metadata_type, Some("counter"))
        || (matches!(metadata_type, Some("histogram" | "summary"))
            && (metric_name.ends_with("_count")
                || metric_name.ends_with("_sum")
                || metric_name.ends_with("_bucket")));
    let by_name = COUNTER_SUFFIXES.iter().any(|s| metric_name.ends_with(s));
    let by_function = function.is_some_and(|f| COUNTER_FUNCTIONS.contains(&f));
    if by_type || by_name || by_function {
        SeriesKind::Counter
    } else {
        SeriesKind::Gauge
    }
}

/// Merges the replicas of one series (each sorted by time, without repeated timestamps). See the module
/// documentation.
pub fn dedup(replicas: &[&[Sample]], kind: SeriesKind) -> Vec<Sample> {
    // Canonical order: by content, so permutations of the input give the same output.
    let mut reps: Vec<&[Sample]> = replicas.iter().copied().filter(|r| !r.is_empty()).collect();
    reps.sort_by(|a, b| {
        a.iter()
            .map(|s| (s.t, s.v.to_bits()))
            .cmp(b.iter().map(|s| (s.t, s.v.to_bits())))
    });
    reps.dedup_by(|a, b| same(a, b));
    match reps.len() {
        0 => return Vec::new(),
        1 => return reps[0].to_vec(),
        _ => {}
    }
    // The scrape interval, from every replica's data (replicas of one series share it).
    let iv = scrape_interval(&reps);
    let total = reps.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut out: Vec<Sample> = Vec::with_capacity(total);
    // Index of each replica's first sample after the last merged one.
    let mut next = vec![0usize; reps.len()];
    let mut cur: Option<usize> = None;
    // Counter adjustment added to the current replica's values.
    let mut adj = 0.0f64;
    loop {
        let last_t = out.last().map(|s| s.t);
        if let Some(lt) = last_t {
            for (i, r) in reps.iter().enumerate() {
                next[i] += r[next[i]..].partition_point(|s| s.t <= lt);
            }
        }
        // Stick to the current replica unless it has a gap.
        let stick = match (cur, last_t) {
            (Some(c), Some(lt)) => reps[c].get(next[c]).is_some_and(|s| s.t - lt <= 2 * iv),
            _ => false,
        };
        let pick = if stick {
            cur
        } else {
            // The earliest usable sample of any replica; ties: the current replica, then canonical order.
            let mut best: Option<((i64, bool, usize), usize)> = None;
            for (i, r) in reps.iter().enumerate() {
                let Some(j) = usable(r, next[i], last_t, iv) else {
                    continue;
                };
                let key = (r[j].t, Some(i) != cur, i);
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, j));
                }
            }
            best.map(|((_, _, i), j)| {
                next[i] = j;
                i
            })
        };
        let Some(p) = pick else { break };
        let s = reps[p][next[p]];
        if kind == SeriesKind::Counter && cur.is_some_and(|c| c != p) && !is_stale_nan(s.v) {
            adj = switch_adjustment(&out, &reps, cur, p, next[p]);
        }
        let v = if is_stale_nan(s.v) { s.v } else { s.v + adj };
        out.push(Sample::new(s.t, v));
        cur = Some(p);
        next[p] += 1;
    }
    out
}

fn same(a: &[Sample], b: &[Sample]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
}

/// The scrape interval: the lower quartile of the deltas between consecutive samples of every replica
/// (missed scrapes and outages only make deltas longer, so this holds until most of the data is
/// missing); the initial penalty when no replica has two samples.
pub(crate) fn scrape_interval(reps: &[&[Sample]]) -> i64 {
    let mut d: Vec<i64> = reps
        .iter()
        .flat_map(|r| r.windows(2).map(|w| w[1].t - w[0].t))
        .collect();
    if d.is_empty() {
        return INITIAL_PENALTY_MS;
    }
    let q = (d.len() - 1) / 4;
    (*d.select_nth_unstable(q).1).max(1)
}

/// The replica's first sample from `from` on, unless it is closer to `last_t` than half the scrape
/// interval (another scrape phase): then its following one, if it has one.
fn usable(r: &[Sample], from: usize, last_t: Option<i64>, interval: i64) -> Option<usize> {
    let s = r.get(from)?;
    match last_t {
        Some(lt) if s.t - lt < interval / 2 && from + 1 < r.len() => Some(from + 1),
        _ => Some(from),
    }
}

/// The counter adjustment after switching from `cur` to replica `p` at its sample `j`.
fn switch_adjustment(
    out: &[Sample],
    reps: &[&[Sample]],
    cur: Option<usize>,
    p: usize,
    j: usize,
) -> f64 {
    let Some(last) = out.iter().rev().find(|s| !is_stale_nan(s.v)) else {
        return 0.0;
    };
    let r = reps[p];
    let v = r[j].v;
    let prev = r[..j].iter().rev().find(|s| !is_stale_nan(s.v));
    // The new replica's own increase since its previous sample (after a drop: the new value).
    let increase = match prev {
        Some(pv) if v >= pv.v => v - pv.v,
        Some(_) => v,
        None => 0.0,
    };
    let new_reset = prev.is_some_and(|pv| v < pv.v);
    // Did the replica we leave reset around here too (its next sample below its last)?
    let old_reset = cur.is_some_and(|c| {
        let rc = reps[c];
        let upto = rc.partition_point(|s| s.t <= r[j].t);
        let after = rc[upto..].iter().find(|s| !is_stale_nan(s.v));
        let before = rc[..upto].iter().rev().find(|s| !is_stale_nan(s.v));
        matches!((before, after), (Some(b), Some(a)) if a.v < b.v)
    });
    if new_reset && old_reset {
        // The target restarted: every replica shows the reset; so does the merged series.
        return 0.0;
    }
    last.v + increase - v
}

/// Merges several copies of one series that reached the gateway separately. Copies that **agree** (where
/// their time ranges overlap they hold the same timestamps with the same values: the same replica's data
/// from an edge and from the bucket, or from two overlapping blocks) are joined as a union, which is exact.
/// Copies that disagree are HA replicas with their own scrape phases and go through [`dedup`].
pub fn merge_replicas(copies: &[&[Sample]], kind: SeriesKind) -> Vec<Sample> {
    let copies: Vec<&[Sample]> = copies.iter().copied().filter(|c| !c.is_empty()).collect();
    match copies.len() {
        0 => return Vec::new(),
        1 => return copies[0].to_vec(),
        _ => {}
    }
    let agree = copies
        .iter()
        .enumerate()
        .all(|(i, a)| copies[i + 1..].iter().all(|b| agree_on_overlap(a, b)));
    if agree {
        union(&copies)
    } else {
        dedup(&copies, kind)
    }
}

/// [`merge_replicas`] for native-histogram samples: copies that agree where they overlap are joined;
/// HA replicas are deduplicated by time as floats are ([`dedup`], gauge rules: counts are not adjusted
/// at a switch). Reset-aware: the first histogram taken after a switch to another replica has its
/// counter-reset hint made `Unknown`, so a reset there is found from the counts, not assumed away
/// by the other replica's chunk.
pub fn merge_histogram_replicas(copies: &[&[HPoint]]) -> Vec<HPoint> {
    let copies: Vec<&[HPoint]> = copies.iter().copied().filter(|c| !c.is_empty()).collect();
    match copies.len() {
        0 => return Vec::new(),
        1 => return copies[0].to_vec(),
        _ => {}
    }
    let agree = copies.iter().enumerate().all(|(i, a)| {
        copies[i + 1..].iter().all(|b| {
            let (lo, hi) = (a[0].t.max(b[0].t), a[a.len() - 1].t.min(b[b.len() - 1].t));
            let window = |s: &[HPoint]| {
                let from = s.partition_point(|x| x.t < lo);
                let to = s.partition_point(|x| x.t <= hi);
                s[from..to.max(from)].to_vec()
            };
            lo > hi || window(a) == window(b)
        })
    });
    if agree {
        let mut all: Vec<HPoint> = copies.iter().flat_map(|c| c.iter().cloned()).collect();
        // Stable: at equal times the first copy's sample stays first and is kept.
        all.sort_by_key(|p| p.t);
        all.dedup_by_key(|p| p.t);
        return all;
    }
    // Each histogram stands in as a sample whose value names its copy and position (exact in f64).
    let stand_ins: Vec<Vec<Sample>> = copies
        .iter()
        .enumerate()
        .map(|(c, s)| {
            s.iter()
                .enumerate()
                .map(|(i, p)| Sample::new(p.t, ((c as u64) << 32 | i as u64) as f64))
                .collect()
        })
        .collect();
    let refs: Vec<&[Sample]> = stand_ins.iter().map(Vec::as_slice).collect();
    let mut prev_copy = None;
    dedup(&refs, SeriesKind::Gauge)
        .into_iter()
        .filter_map(|s| {
            let key = s.v as u64;
            let (c, i) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
            let p = copies.get(c)?.get(i)?;
            let switched = prev_copy.is_some_and(|pc| pc != c);
            prev_copy = Some(c);
            if switched && p.h.hint != CounterResetHint::Gauge {
                let mut h = (*p.h).clone();
                h.hint = CounterResetHint::Unknown;
                return Some(HPoint {
                    t: p.t,
                    h: std::sync::Arc::new(h),
                });
            }
            Some(p.clone())
        })
        .collect()
}

/// Whether two sorted sample slices hold the same samples inside the time range both cover.
fn agree_on_overlap(a: &[Sample], b: &[Sample]) -> bool {
    let (Some(af), Some(al), Some(bf), Some(bl)) = (a.first(), a.last(), b.first(), b.last())
    else {
        return true;
    };
    let (lo, hi) = (af.t.max(bf.t), al.t.min(bl.t));
    if lo > hi {
        return true;
    }
    fn window(s: &[Sample], lo: i64, hi: i64) -> &[Sample] {
        let from = s.partition_point(|x| x.t < lo);
        let to = s.partition_point(|x| x.t <= hi);
        &s[from..to]
    }
    window(a, lo, hi) == window(b, lo, hi)
}

/// The sorted union of sample slices; a timestamp present in several keeps the first copy's value.
fn union(copies: &[&[Sample]]) -> Vec<Sample> {
    let mut out: Vec<Sample> =
        Vec::with_capacity(copies.iter().map(|c| c.len()).max().unwrap_or(0));
    let mut pos = vec![0usize; copies.len()];
    loop {
        let mut best: Option<(i64, usize)> = None;
        for (i, c) in copies.iter().enumerate() {
            if let Some(s) = c.get(pos[i])
                && best.is_none_or(|(t, _)| s.t < t)
            {
                best = Some((s.t, i));
            }
        }
        let Some((t, i)) = best else {
            return out;
        };
        out.push(copies[i][pos[i]]);
        for (j, c) in copies.iter().enumerate() {
            while c.get(pos[j]).is_some_and(|s| s.t == t) {
                pos[j] += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const I: i64 = 15_000;

    fn series(start: i64, n: usize, phase: i64, f: impl Fn(usize) -> f64) -> Vec<Sample> {
        (0..n)
            .map(|k| Sample::new(start + phase + k as i64 * I, f(k)))
            .collect()
    }

    fn ts(s: &[Sample]) -> Vec<i64> {
        s.iter().map(|x| x.t).collect()
    }

    #[test]
    fn sticks_to_one_replica_and_fills_its_gap() {
        let a: Vec<Sample> = series(0, 20, 0, |k| k as f64)
            .into_iter()
            .filter(|s| !(5 * I..10 * I).contains(&s.t))
            .collect();
        let b = series(0, 20, 3_000, |k| k as f64);
        let m = dedup(&[&a, &b], SeriesKind::Gauge);
        // A's phase until its gap, B's during it; then back to nothing but B (stick).
        let t = ts(&m);
        assert_eq!(&t[..5], &[0, I, 2 * I, 3 * I, 4 * I]);
        assert_eq!(t[5], 5 * I + 3_000);
        assert!(t.windows(2).all(|w| w[1] - w[0] <= I + 3_000), "{t:?}");
        assert_eq!(m.len(), 20, "one sample per interval: {t:?}");
    }

    #[test]
    fn counter_switch_has_no_false_reset() {
        // A restarted long ago and counts from its own zero: raw values differ by 1000.
        let a: Vec<Sample> = series(0, 10, 0, |k| 1000.0 + k as f64)
            .into_iter()
            .filter(|s| s.t < 5 * I)
            .collect();
        let b = series(0, 10, 1_000, |k| k as f64);
        let m = dedup(&[&a, &b], SeriesKind::Counter);
        assert!(m.windows(2).all(|w| w[1].v >= w[0].v), "{m:?}");
        assert_eq!(m[4].v, 1004.0);
        assert_eq!(m[5].v, 1005.0, "continues by B's own increase");
        // As a gauge, the raw value shows.
        let g = dedup(&[&a, &b], SeriesKind::Gauge);
        assert_eq!(g[5].v, 5.0);
    }

    #[test]
    fn counter_reset_in_both_replicas_stays() {
        let f = |k: usize| {
            if k < 6 {
                100.0 + k as f64
            } else {
                (k - 6) as f64
            }
        };
        let a: Vec<Sample> = series(0, 12, 0, f)
            .into_iter()
            .filter(|s| !(5 * I..8 * I).contains(&s.t))
            .collect();
        let b = series(0, 12, 2_000, f);
        let m = dedup(&[&a, &b], SeriesKind::Counter);
        let drops = m.windows(2).filter(|w| w[1].v < w[0].v).count();
        assert_eq!(drops, 1, "the real reset is kept: {m:?}");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("http_requests_total", None, None),
            SeriesKind::Counter
        );
        assert_eq!(
            kind_of("x_bucket", Some("histogram"), None),
            SeriesKind::Counter
        );
        assert_eq!(
            kind_of("temperature", Some("gauge"), None),
            SeriesKind::Gauge
        );
        assert_eq!(kind_of("anything", None, Some("rate")), SeriesKind::Counter);
        assert_eq!(
            kind_of("errors", Some("counter"), None),
            SeriesKind::Counter
        );
    }

    /// Two or three replicas of one series: same interval, their own phases and jitter, random gaps
    /// (missed scrapes and outages); values a counter with its own offset per replica and an occasional
    /// reset shared by all.
    fn replicas() -> impl Strategy<Value = Vec<Vec<Sample>>> {
        (2usize..=3, 20usize..120, any::<u64>()).prop_map(|(n, len, seed)| {
            let mut x = seed | 1;
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let reset_at = (rnd() % (len as u64 * 2)) as usize;
            (0..n)
                .map(|_| {
                    let phase = (rnd() % 10_000) as i64;
                    // Replicas' counters differ by an offset until the shared reset (each replica
                    // started counting at another moment); every value before the reset is above every
                    // value after it.
                    let offset = (rnd() % 200) as f64;
                    let value = |k: usize| {
                        if k < reset_at {
                            500.0 + offset + 3.0 * k as f64
                        } else {
                            3.0 * (k - reset_at) as f64
                        }
                    };
                    let mut out = Vec::new();
                    let mut k = 0;
                    while k < len {
                        let r = rnd() % 100;
                        if r < 4 {
                            k += 1 + (rnd() % 12) as usize; // an outage
                            continue;
                        }
                        let jitter = (rnd() % 50) as i64;
                        out.push(Sample::new(k as i64 * I + phase + jitter, value(k)));
                        k += 1;
                    }
                    out
                })
                .collect()
        })
    }

    #[test]
    fn copies_of_one_replica_join_exactly() {
        // The same replica from two sources with overlapping ranges (edge head and an uploaded block).
        let full = series(0, 300, 0, |k| (k % 7) as f64);
        let (a, b) = (&full[..200], &full[150..]);
        for kind in [SeriesKind::Gauge, SeriesKind::Counter] {
            assert_eq!(merge_replicas(&[a, b], kind), full);
            assert_eq!(merge_replicas(&[b, a, &full[40..60]], kind), full);
        }
        // Real replicas (another phase) are deduplicated, not interleaved.
        let other = series(0, 300, 4_000, |k| (k % 7) as f64);
        let m = merge_replicas(&[&full, &other], SeriesKind::Gauge);
        // Sticks to the first replica; the other's last sample (4 s later) extends the end.
        assert_eq!(&m[..300], &full[..]);
        assert_eq!(&m[300..], &other[299..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn order_independent(reps in replicas(), rot in 0usize..3) {
            let refs: Vec<&[Sample]> = reps.iter().map(Vec::as_slice).collect();
            let mut other = refs.clone();
            let k = rot % other.len();
            other.rotate_left(k);
            other.reverse();
            for kind in [SeriesKind::Gauge, SeriesKind::Counter] {
                let a = dedup(&refs, kind);
                let b = dedup(&other, kind);
                prop_assert!(same(&a, &b));
            }
        }

        #[test]
        fn no_gap_beyond_the_common_one(reps in replicas()) {
            let refs: Vec<&[Sample]> = reps.iter().map(Vec::as_slice).collect();
            let m = dedup(&refs, SeriesKind::Gauge);
            // Every merged sample is a replica's sample, in time order.
            prop_assert!(m.windows(2).all(|w| w[0].t < w[1].t));
            for s in &m {
                prop_assert!(reps.iter().any(|r| r.iter().any(|x| x.t == s.t && x.v.to_bits() == s.v.to_bits())));
            }
            // A merged gap longer than two intervals only where no replica has a sample after the
            // first interval of it.
            for w in m.windows(2) {
                if w[1].t - w[0].t > 2 * I + 100 {
                    let inside = reps.iter().flatten().any(|x| x.t > w[0].t + I + 100 && x.t < w[1].t);
                    prop_assert!(!inside, "gap {}..{} while a replica had data", w[0].t, w[1].t);
                }
            }
            // Nothing before the first or after the last sample any replica has.
            let first = reps.iter().filter_map(|r| r.first()).map(|s| s.t).min();
            let last = reps.iter().filter_map(|r| r.last()).map(|s| s.t).max();
            prop_assert_eq!(m.first().map(|s| s.t), first);
            prop_assert!(last.is_some_and(|l| m.last().is_some_and(|s| l - s.t <= I)));
        }

        #[test]
        fn counters_drop_only_where_every_replica_reset(reps in replicas()) {
            let refs: Vec<&[Sample]> = reps.iter().map(Vec::as_slice).collect();
            let m = dedup(&refs, SeriesKind::Counter);
            // The fixture's only reset is shared by all replicas: at most one drop, and only there.
            let drops: Vec<usize> = (1..m.len()).filter(|&i| m[i].v < m[i - 1].v).collect();
            prop_assert!(drops.len() <= 1, "drops at {:?}: {:?}", drops, m);
            for i in drops {
                // Every replica's value falls between these two times too (or it has no data there).
                for r in &reps {
                    let before = r.iter().rev().find(|s| s.t <= m[i - 1].t);
                    let after = r.iter().find(|s| s.t >= m[i].t);
                    if let (Some(b), Some(a)) = (before, after) {
                        prop_assert!(a.v < b.v, "a drop at {} not in every replica", m[i].t);
                    }
                }
            }
        }

        #[test]
        fn idempotent(reps in replicas()) {
            let refs: Vec<&[Sample]> = reps.iter().map(Vec::as_slice).collect();
            for kind in [SeriesKind::Gauge, SeriesKind::Counter] {
                let m = dedup(&refs, kind);
                prop_assert!(same(&dedup(&[&m], kind), &m));
                prop_assert!(same(&dedup(&[&m, &m], kind), &m));
            }
        }
    }
}
