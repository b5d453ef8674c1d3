//! Which blocks compact next, as Thanos' compactor plans it (`pkg/compact/planner.go`,
//! `tsdbBasedPlanner`, v0.25.1; Prometheus v2.42's `LeveledCompactor.plan` without its extra
//! tombstone rule), and the streams blocks are grouped into (`metadata.Thanos.GroupKey`).
//!
//! - **Streams**: blocks compact only with blocks of the same resolution and external labels; the key
//!   is `"<resolution>@<hash>"`, the hash being XXH64 (seed 0) of the labels sorted by name as
//!   `name ‖ 0xFF ‖ value ‖ 0xFF` (Prometheus' `labels.Hash`), so keys match Thanos'.
//! - **Levels**: 2h → 8h → 2d → 14d (`ranges[1..]` of Thanos' `{1h, 2h, 8h, 2d, 14d}`).
//! - **Plan**, over one stream's blocks sorted by `minTime` (ties by ULID: Go's sort is unstable
//!   there; this is deterministic): (a) the first run of overlapping blocks not marked
//!   `no-compact` (vertical compaction); else (b) without the newest block, for each level the first
//!   aligned window holding ≥ 2 blocks, none `compaction.failed`, that spans the whole window or
//!   ends before the newest remaining block starts — with `no-compact` blocks cut out without
//!   leaving a gap; else (c) a block of at least the middle level with more than 5 % tombstones per
//!   series, alone.

use std::collections::BTreeSet;

use xxhash_rust::xxh64::xxh64;

/// Thanos' compaction levels (`cmd/thanos/compact.go`, `compactions`), ms: 1h, 2h, 8h, 2d, 14d. The
/// first is never a target.
pub const THANOS_RANGES: [i64; 5] = [3_600_000, 7_200_000, 28_800_000, 172_800_000, 1_209_600_000];

/// What the planner needs of a block's `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanBlock {
    pub ulid: String,
    pub min_time: i64,
    /// Exclusive.
    pub max_time: i64,
    pub num_series: u64,
    pub num_tombstones: u64,
    /// `compaction.failed`.
    pub failed: bool,
}

/// A stream's key: `"<resolution>@<XXH64 of the sorted labels>"` (Thanos' `GroupKey`).
pub fn group_key<'a>(
    resolution: i64,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut pairs: Vec<(&str, &str)> = labels.into_iter().collect();
    pairs.sort_unstable();
    let mut buf = Vec::new();
    for (n, v) in pairs {
        buf.extend_from_slice(n.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(v.as_bytes());
        buf.push(0xff);
    }
    format!("{resolution}@{}", xxh64(&buf, 0))
}

/// The blocks of one stream to compact together next (empty: nothing to do). `blocks` in any order;
/// `no_compact`: ULIDs with a `no-compact-mark.json`.
pub fn plan(ranges: &[i64], no_compact: &BTreeSet<String>, blocks: &[PlanBlock]) -> Vec<PlanBlock> {
    let mut metas: Vec<&PlanBlock> = blocks.iter().collect();
    metas.sort_by(|a, b| {
        a.min_time
            .cmp(&b.min_time)
            .then_with(|| a.ulid.cmp(&b.ulid))
    });
    let Some(newest) = metas.last().copied() else {
        return Vec::new();
    };
    let mut not_excluded: Vec<&PlanBlock> = metas
        .iter()
        .copied()
        .filter(|m| !no_compact.contains(&m.ulid))
        .collect();
    let overlapping = select_overlapping(&not_excluded);
    if !overlapping.is_empty() {
        return overlapping.into_iter().cloned().collect();
    }
    if !no_compact.contains(&newest.ulid) {
        not_excluded.pop();
    }
    metas.pop();
    let picked = select_metas(ranges, no_compact, &metas);
    if !picked.is_empty() {
        return picked.into_iter().cloned().collect();
    }
    let Some(&middle) = ranges.get(ranges.len() / 2) else {
        return Vec::new();
    };
    for m in not_excluded.iter().rev() {
        if m.max_time - m.min_time < middle {
            break;
        }
        if m.num_tombstones as f64 / (m.num_series as f64 + 1.0) > 0.05 {
            return vec![(*m).clone()];
        }
    }
    Vec::new()
}

/// The first run of overlapping blocks (sorted by `minTime`); touching blocks do not overlap.
fn select_overlapping<'a>(ms: &[&'a PlanBlock]) -> Vec<&'a PlanBlock> {
    let Some(first) = ms.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut global_max = first.max_time;
    for w in ms.windows(2) {
        let (prev, m) = (w[0], w[1]);
        if m.min_time < global_max {
            if out.is_empty() {
                out.push(prev);
            }
            out.push(m);
        } else if !out.is_empty() {
            break;
        }
        global_max = global_max.max(m.max_time);
    }
    out
}

/// The first window of a level worth compacting (see the module documentation).
fn select_metas<'a>(
    ranges: &[i64],
    no_compact: &BTreeSet<String>,
    metas: &[&'a PlanBlock],
) -> Vec<&'a PlanBlock> {
    let Some(last) = metas.last() else {
        return Vec::new();
    };
    let high_time = last.min_time;
    for &iv in ranges.iter().skip(1) {
        for part in split_by_range(metas, iv) {
            if part.iter().any(|m| m.failed) || part.len() < 2 {
                continue;
            }
            let (Some(first), Some(end)) = (part.first(), part.last()) else {
                continue;
            };
            let (mint, maxt) = (first.min_time, end.max_time);
            if maxt - mint != iv && maxt > high_time {
                continue;
            }
            // Blocks marked no-compact are cut out; the blocks kept must be contiguous.
            let mut last_excluded = 0;
            for (i, m) in part.iter().enumerate() {
                if !no_compact.contains(&m.ulid) {
                    continue;
                }
                if i - last_excluded > 1 {
                    return part[last_excluded..i].to_vec();
                }
                last_excluded = i + 1;
            }
            if part.len() - last_excluded > 1 {
                return part[last_excluded..].to_vec();
            }
        }
    }
    Vec::new()
}

/// Consecutive blocks (sorted by `minTime`) grouped by the `tr`-aligned window they fit in; a block
/// that does not fit in its window is left out.
fn split_by_range<'a>(ms: &[&'a PlanBlock], tr: i64) -> Vec<Vec<&'a PlanBlock>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ms.len() {
        let m = ms[i];
        let t0 = tr * m.min_time.div_euclid(tr);
        if m.max_time > t0 + tr {
            i += 1;
            continue;
        }
        let mut group = Vec::new();
        while i < ms.len() && ms[i].max_time <= t0 + tr {
            group.push(ms[i]);
            i += 1;
        }
        out.push(group);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const R: [i64; 5] = [20, 60, 180, 540, 1620];

    fn b(id: u32, min: i64, max: i64) -> PlanBlock {
        PlanBlock {
            ulid: id.to_string(),
            min_time: min,
            max_time: max,
            num_series: 0,
            num_tombstones: 0,
            failed: false,
        }
    }

    fn ids(p: &[PlanBlock]) -> Vec<u32> {
        p.iter().map(|m| m.ulid.parse().unwrap()).collect()
    }

    fn nc(ids: &[u32]) -> BTreeSet<String> {
        ids.iter().map(u32::to_string).collect()
    }

    fn tomb(mut m: PlanBlock, series: u64, tombstones: u64) -> PlanBlock {
        m.num_series = series;
        m.num_tombstones = tombstones;
        m
    }

    /// Thanos' `planner_test.go` (v0.25.1) cases, run there against Prometheus' planner too.
    #[test]
    fn thanos_planner_vectors() {
        let cases: Vec<(Vec<PlanBlock>, Vec<u32>)> = vec![
            (vec![b(1, 0, 20)], vec![]),
            (vec![b(1, 0, 20), b(2, 20, 40)], vec![]),
            (vec![b(1, 0, 20), b(2, 20, 40), b(3, 40, 60)], vec![]),
            (
                vec![b(1, 0, 20), b(2, 20, 40), b(3, 40, 60), b(4, 60, 80)],
                vec![1, 2, 3],
            ),
            (
                vec![
                    b(6, 0, 60),
                    b(7, 60, 120),
                    b(8, 120, 180),
                    b(9, 180, 200),
                    b(10, 200, 220),
                ],
                vec![6, 7, 8],
            ),
            (vec![b(1, 0, 20), b(2, 20, 40), b(4, 60, 80)], vec![]),
            (
                vec![b(1, 0, 20), b(2, 20, 40), b(4, 60, 80), b(5, 80, 100)],
                vec![1, 2],
            ),
            (
                vec![
                    b(1, 0, 20),
                    b(2, 20, 40),
                    b(3, 40, 60),
                    b(4, 60, 120),
                    b(5, 120, 180),
                ],
                vec![1, 2, 3],
            ),
            (
                vec![b(6, 0, 60), b(8, 120, 180), b(9, 180, 200), b(10, 200, 220)],
                vec![6, 8],
            ),
            (
                vec![
                    b(2, 20, 40),
                    b(4, 60, 120),
                    b(5, 960, 980),
                    b(6, 120, 180),
                    b(7, 720, 960),
                ],
                vec![2, 4, 6],
            ),
            (vec![tomb(b(1, 0, 540), 10, 3)], vec![]),
            (vec![tomb(b(1, 0, 540), 10, 3), b(2, 540, 560)], vec![1]),
            (vec![tomb(b(1, 0, 60), 10, 3), b(2, 60, 80)], vec![]),
            (vec![tomb(b(1, 0, 540), 0, 0), b(2, 540, 560)], vec![]),
            (
                vec![b(5, 0, 360), b(6, 540, 560), b(7, 360, 420), b(8, 420, 540)],
                vec![7, 8],
            ),
            (vec![b(1, 0, 20), b(2, 19, 40), b(3, 40, 60)], vec![1, 2]),
            (vec![b(1, 0, 20), b(2, 20, 40), b(3, 30, 50)], vec![2, 3]),
            (vec![b(1, 0, 20), b(2, 10, 40), b(3, 30, 50)], vec![1, 2, 3]),
            (
                vec![b(5, 0, 360), b(6, 340, 560), b(7, 360, 420), b(8, 420, 540)],
                vec![5, 6, 7, 8],
            ),
            (
                vec![b(1, 0, 10), b(2, 9, 20), b(3, 30, 40), b(4, 39, 50)],
                vec![1, 2],
            ),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                ids(&plan(&R, &BTreeSet::new(), &input)),
                want,
                "case {}",
                i + 1
            );
        }
    }

    #[test]
    fn a_failed_compaction_is_not_planned_again() {
        for input in [
            vec![b(1, 0, 20), b(2, 20, 40), b(3, 40, 60), b(4, 60, 80)],
            vec![b(1, 0, 20), b(2, 20, 40), b(4, 60, 80), b(5, 80, 100)],
            vec![
                b(1, 0, 20),
                b(2, 20, 40),
                b(3, 40, 60),
                b(4, 60, 120),
                b(5, 120, 180),
                b(6, 180, 200),
            ],
        ] {
            let mut input = input;
            input[1].failed = true;
            assert!(plan(&R, &BTreeSet::new(), &input).is_empty(), "{input:?}");
        }
    }

    #[test]
    fn no_compact_marks_cut_blocks_out_without_gaps() {
        let four = || vec![b(1, 0, 20), b(2, 20, 40), b(3, 40, 60), b(4, 60, 80)];
        let other = || {
            vec![
                b(2, 20, 40),
                b(4, 60, 120),
                b(5, 960, 980),
                b(6, 120, 180),
                b(7, 720, 960),
            ]
        };
        let cases: Vec<(Vec<PlanBlock>, Vec<u32>, Vec<u32>)> = vec![
            (vec![b(1, 0, 20)], vec![1], vec![]),
            (four(), vec![1], vec![2, 3]),
            (four(), vec![2], vec![]),
            (four(), vec![4], vec![1, 2, 3]),
            (four(), vec![1, 4], vec![2, 3]),
            (four(), vec![1, 2, 3, 4], vec![]),
            (
                vec![b(1, 0, 20), b(2, 20, 40), b(4, 60, 80), b(5, 80, 100)],
                vec![2],
                vec![],
            ),
            (other(), vec![6], vec![2, 4]),
            (other(), vec![4], vec![]),
            (
                vec![tomb(b(1, 0, 540), 10, 3), b(2, 540, 560)],
                vec![1],
                vec![],
            ),
            (
                vec![b(1, 0, 20), b(2, 19, 40), b(3, 40, 60)],
                vec![1],
                vec![],
            ),
        ];
        for (input, marked, want) in cases {
            assert_eq!(
                ids(&plan(&R, &nc(&marked), &input)),
                want,
                "{input:?} marked {marked:?}"
            );
        }
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let mut input = vec![
            b(6, 0, 60),
            b(7, 60, 120),
            b(8, 120, 180),
            b(9, 180, 200),
            b(10, 200, 220),
        ];
        input.reverse();
        assert_eq!(ids(&plan(&R, &BTreeSet::new(), &input)), vec![6, 7, 8]);
        assert!(plan(&R, &BTreeSet::new(), &[]).is_empty());
    }

    /// Thanos' `compact_test.go` (v0.25.1) group keys.
    #[test]
    fn group_keys_match_thanos() {
        assert_eq!(group_key(0, []), "0@17241709254077376921");
        assert_eq!(
            group_key(0, [("foo1", "bar2"), ("foo", "bar")]),
            "0@2124638872457683483"
        );
        assert_eq!(
            group_key(
                0,
                [(
                    "foo/some..thing/some.thing/../",
                    "a_b_c/bar-something-a\\metric/a\\x"
                )]
            ),
            "0@16590761456214576373"
        );
        assert_eq!(group_key(1000, []), "1000@17241709254077376921");
    }
}
