//! Native histograms through the TSDB: appended (integer and float counts, a layout change, a counter
//! reset, a stale marker, floats in between), read back from the head, from the WAL after a restart
//! and from the block the head is flushed to, each time exactly as appended; the chunks carry
//! Prometheus' histogram encodings (2 and 3) with the counter-reset headers the head sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use meridian_core::chunkenc::{
    CounterResetHeader, Encoding, XorIterator, read_float_histograms, read_histograms,
};
use meridian_core::histogram::{CounterResetHint, Histogram, HistogramValue, Span};
use meridian_core::sample::stale_nan;
use meridian_core::series::SourceChunk;
use meridian_core::{Labels, MatchType, Matcher};
use meridian_tsdb::block::Block;
use meridian_tsdb::db::{Db, DbOptions};

const T0: i64 = 1_700_006_400_000;

fn hist(count: u64, buckets: &[i64], offset: i32) -> Histogram {
    Histogram {
        schema: 0,
        zero_threshold: 2f64.powi(-128),
        count,
        sum: count as f64 * 1.5,
        positive_spans: vec![Span {
            offset,
            length: buckets.len() as u32,
        }],
        positive_buckets: buckets.to_vec(),
        ..Histogram::default()
    }
}

/// What series `a` is given: growing counts, new buckets at sample 5, a reset at sample 8, a stale
/// marker at the end.
fn series_a() -> Vec<(i64, Histogram)> {
    let mut out = Vec::new();
    for i in 0..5u64 {
        out.push((
            T0 + i as i64 * 15_000,
            hist(2 * i + 2, &[i as i64 + 1, 0], 0),
        ));
    }
    for i in 5..8u64 {
        out.push((
            T0 + i as i64 * 15_000,
            hist(3 * i + 1, &[i as i64, 0, 1], -1),
        ));
    }
    for i in 8..10u64 {
        out.push((T0 + i as i64 * 15_000, hist(i - 7, &[(i - 7) as i64], 0)));
    }
    out.push((
        T0 + 10 * 15_000,
        Histogram {
            sum: stale_nan(),
            ..Histogram::default()
        },
    ));
    out
}

fn labels(name: &str) -> Labels {
    Labels::from_pairs([("__name__", name)])
}

/// Decoded samples of chunks: (t, value) with the integer histograms made float for comparison,
/// floats as 0-count histograms are not mixed in (returned apart).
/// Histograms, floats and chunk headers of a series' chunks.
type Decoded = (Vec<(i64, HistogramValue)>, Vec<(i64, f64)>, Vec<u8>);

fn decode(chunks: &[SourceChunk]) -> Decoded {
    let (mut hs, mut fs, mut headers) = (Vec::new(), Vec::new(), Vec::new());
    for c in chunks {
        match c.encoding {
            Encoding::Histogram => {
                let (h, v) = read_histograms(&c.data).unwrap();
                headers.push(h as u8);
                hs.extend(v.into_iter().map(|(t, h)| (t, HistogramValue::Int(h))));
            }
            Encoding::FloatHistogram => {
                let (h, v) = read_float_histograms(&c.data).unwrap();
                headers.push(h as u8);
                hs.extend(v.into_iter().map(|(t, h)| (t, HistogramValue::Float(h))));
            }
            Encoding::Xor => fs.extend(XorIterator::new(&c.data).unwrap().map(|s| (s.t, s.v))),
            other => panic!("unexpected encoding {other:?}"),
        }
    }
    (hs, fs, headers)
}

/// Histograms compared without their hints (the chunks keep hints in headers), stale markers by bits.
fn same(got: &[(i64, HistogramValue)], want: &[(i64, HistogramValue)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((gt, g), (wt, w)) in got.iter().zip(want) {
        assert_eq!(gt, wt);
        let strip = |h: &HistogramValue| match h.clone() {
            HistogramValue::Int(mut h) => {
                h.hint = CounterResetHint::Unknown;
                if h.sum.is_nan() {
                    return format!("stale {}", h.sum.to_bits());
                }
                format!("{h:?}")
            }
            HistogramValue::Float(mut h) => {
                h.hint = CounterResetHint::Unknown;
                format!("{h:?}")
            }
        };
        assert_eq!(strip(g), strip(w), "at {gt}");
    }
}

fn check(db: &Db, want_a: &[(i64, HistogramValue)], want_b: &[(i64, HistogramValue)], what: &str) {
    let all = db
        .select(
            &[Matcher::new(MatchType::Regex, "__name__", "a|b|c").unwrap()],
            T0,
            T0 + 3_600_000,
            true,
        )
        .unwrap();
    let get = |n: &str| {
        all.iter()
            .find(|s| s.labels == labels(n))
            .unwrap_or_else(|| panic!("{what}: no series {n}"))
            .chunks
            .clone()
    };
    let (a, a_floats, a_headers) = decode(&get("a"));
    same(&a, want_a);
    assert!(a_floats.is_empty());
    // Cut at the new buckets (not a reset) and at the reset.
    assert_eq!(
        a_headers,
        vec![
            CounterResetHeader::Unknown as u8,
            CounterResetHeader::NotCounterReset as u8,
            CounterResetHeader::CounterReset as u8
        ],
        "{what}"
    );
    let (b, _, b_headers) = decode(&get("b"));
    same(&b, want_b);
    assert_eq!(b_headers, vec![CounterResetHeader::Gauge as u8], "{what}");
    // A series switching between floats and histograms keeps both, in their own chunks.
    let (c, c_floats, _) = decode(&get("c"));
    assert_eq!(c.len(), 2, "{what}");
    assert_eq!(c_floats, vec![(T0, 1.0), (T0 + 45_000, 4.0)], "{what}");
}

#[test]
fn histograms_survive_head_wal_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic times: no clock bound.
    let opts = DbOptions {
        max_ahead: None,
        ..DbOptions::default()
    };
    let want_a: Vec<(i64, HistogramValue)> = series_a()
        .into_iter()
        .map(|(t, h)| (t, HistogramValue::Int(h)))
        .collect();
    let mut gauge = hist(4, &[1, 1], 0).to_float();
    gauge.hint = CounterResetHint::Gauge;
    let want_b: Vec<(i64, HistogramValue)> = (0..3)
        .map(|i| {
            let mut g = gauge.clone();
            g.count -= i as f64;
            g.positive_buckets[1] -= i as f64;
            (T0 + i * 60_000, HistogramValue::Float(g))
        })
        .collect();
    {
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        let mut app = db.appender();
        let (a, b) = (app.series_ref(&labels("a")), app.series_ref(&labels("b")));
        for (t, h) in &want_a {
            app.append_histogram(a, *t, h.clone()).unwrap();
        }
        for (t, h) in &want_b {
            app.append_histogram(b, *t, h.clone()).unwrap();
        }
        let c = app.add(&labels("c"), T0, 1.0).unwrap();
        app.append_histogram(c, T0 + 15_000, HistogramValue::Int(hist(1, &[1], 0)))
            .unwrap();
        app.append_histogram(c, T0 + 30_000, HistogramValue::Int(hist(2, &[2], 0)))
            .unwrap();
        app.append(c, T0 + 45_000, 4.0).unwrap();
        // The same histogram again at the same time is accepted (nothing stored); another one is a
        // duplicate.
        app.append_histogram(c, T0 + 30_000, HistogramValue::Int(hist(2, &[2], 0)))
            .unwrap_err();
        app.commit().unwrap();
        let mut app = db.appender();
        let r = app.series_ref(&labels("c"));
        app.append_histogram(r, T0 + 30_000, HistogramValue::Int(hist(2, &[2], 0)))
            .unwrap_err();
        check(&db, &want_a, &want_b, "head");
    }
    // Restarted: the WAL replays the histograms.
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    check(&db, &want_a, &want_b, "after WAL replay");
    let blocks = db.flush_head().unwrap();
    assert_eq!(blocks.len(), 1);
    check(&db, &want_a, &want_b, "from the block");
    let block = Block::open(&dir.path().join(&blocks[0].ulid)).unwrap();
    // 11 + 3 + 4 samples: each histogram counts as one, as in Prometheus' meta.json.
    assert_eq!(block.meta().stats.num_samples, 18);
}
