//! XOR chunks against Prometheus itself: `promtool tsdb create-blocks-from openmetrics` writes blocks from
//! generated data; every chunk in its `chunks/` segments must decode to a run of the samples we generated,
//! every generated sample must appear exactly once, and our encoder must produce the same bytes as
//! Prometheus' for each chunk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;

use meridian_core::chunkenc::{Encoding, Layout, XorChunk, XorIterator};
use meridian_tsdb::chunks::Segment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Start of the data, seconds; a multiple of 2 h so block boundaries are predictable.
const START: i64 = 1_700_006_400;

struct Series {
    name: String,
    /// `(timestamp ms, value)`.
    samples: Vec<(i64, f64)>,
}

fn generate() -> (String, Vec<Series>) {
    let mut rng = StdRng::seed_from_u64(42);
    let mut all = Vec::new();
    let n = 1000; // 10 s apart: ~2.8 h, so two blocks.
    // Timestamps: mostly regular, some with a jitter of ±1 s or a binary fraction of a second (exact in
    // float, so promtool's seconds→ms conversion is exact), and a few gaps: every dod code width is used.
    let times = |rng: &mut StdRng| -> Vec<i64> {
        let mut t = START * 1000;
        (0..n)
            .map(|_| {
                let r: f64 = rng.random();
                t += if r < 0.85 {
                    10_000
                } else if r < 0.9 {
                    10_000 + 1000 * rng.random_range(-1..=1)
                } else if r < 0.95 {
                    10_000 + [125, 250, 500, -250][rng.random_range(0..4)]
                } else if r < 0.99 {
                    10_000 * rng.random_range(2..30)
                } else {
                    10_000 * rng.random_range(30..200)
                };
                t
            })
            .collect()
    };
    for i in 0..10 {
        let ts = times(&mut rng);
        let base = 100.0 * (i + 1) as f64;
        all.push(Series {
            name: format!("gauge_noise{{i=\"{i}\"}}"),
            samples: ts
                .iter()
                .map(|&t| (t, base + rng.random::<f64>() * 10.0))
                .collect(),
        });
    }
    for i in 0..5 {
        let ts = times(&mut rng);
        let mut v = 1_000_000.0 * i as f64;
        let samples = ts
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                v += f64::from(rng.random_range(0..50u32));
                if k == n / 2 {
                    v = 0.5 + i as f64; // a counter reset
                }
                (t, v)
            })
            .collect();
        all.push(Series {
            name: format!("requests_total{{i=\"{i}\"}}"),
            samples,
        });
    }
    for i in 0..3 {
        let ts = times(&mut rng);
        all.push(Series {
            name: format!("constant{{i=\"{i}\"}}"),
            samples: ts.iter().map(|&t| (t, 7000.0 + i as f64)).collect(),
        });
    }
    // "NaN" in the exposition formats parses to Go's math.NaN(), whose bits differ from Rust's f64::NAN.
    let go_nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let specials = [
        go_nan,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -1.5e-300,
        1.7e308,
        42.0,
    ];
    let ts = times(&mut rng);
    all.push(Series {
        name: "special_values".into(),
        samples: ts
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, specials[k % specials.len()]))
            .collect(),
    });
    let ts = times(&mut rng);
    all.push(Series {
        name: "integers".into(),
        samples: ts
            .iter()
            .map(|&t| {
                (
                    t,
                    f64::from(rng.random_range(-1_000_000..1_000_000i32)) * 3.0,
                )
            })
            .collect(),
    });

    let mut om = String::new();
    let families = [
        ("gauge_noise", "gauge"),
        ("requests", "counter"),
        ("constant", "gauge"),
        ("special_values", "gauge"),
        ("integers", "gauge"),
    ];
    for (family, typ) in families {
        writeln!(om, "# TYPE {family} {typ}").unwrap();
        for s in all.iter().filter(|s| s.name.starts_with(family)) {
            for &(t, v) in &s.samples {
                writeln!(om, "{} {} {}", s.name, om_float(v), om_time(t)).unwrap();
            }
        }
    }
    om.push_str("# EOF\n");
    (om, all)
}

fn om_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust prints the shortest string that round-trips; Go's ParseFloat reads it back exactly.
        format!("{v:e}")
    }
}

fn om_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[test]
fn promtool_chunks_decode_and_encode_identically() {
    let Some(promtool) = meridian_testkit::require("promtool", "apt-get install prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (om, series) = generate();
    let input = dir.path().join("data.om");
    std::fs::write(&input, om).unwrap();
    let out = dir.path().join("blocks");
    meridian_testkit::run_ok(
        Command::new(promtool)
            .arg("tsdb")
            .arg("create-blocks-from")
            .arg("openmetrics")
            .arg(&input)
            .arg(&out),
    );

    // (t, value bits) identifies a sample of one series: values are distinct across series by construction.
    let mut index: HashMap<(i64, u64), (usize, usize)> = HashMap::new();
    for (si, s) in series.iter().enumerate() {
        for (k, &(t, v)) in s.samples.iter().enumerate() {
            assert!(
                index.insert((t, v.to_bits()), (si, k)).is_none(),
                "fixture collision"
            );
        }
    }
    let mut seen: Vec<Vec<bool>> = series
        .iter()
        .map(|s| vec![false; s.samples.len()])
        .collect();
    let (mut chunks, mut blocks, mut bytes, mut trailing) = (0, 0, 0, 0);
    for block in std::fs::read_dir(&out).unwrap() {
        let block = block.unwrap().path();
        if !block.join("meta.json").exists() {
            continue;
        }
        blocks += 1;
        let mut segs: Vec<_> = std::fs::read_dir(block.join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        for seg in segs {
            let seg = Segment::open(&seg).unwrap();
            for c in seg.chunks() {
                let c = c.unwrap();
                assert_eq!(c.encoding, Encoding::Xor);
                let mut it = XorIterator::new(c.data).unwrap();
                let got: Vec<(i64, f64)> = it.by_ref().map(|s| (s.t, s.v)).collect();
                assert_eq!(
                    it.err(),
                    None,
                    "chunk at {} of {}",
                    c.offset,
                    block.display()
                );
                assert!(!got.is_empty());
                // The run belongs to one series, consecutively.
                let &(si, k0) = index
                    .get(&(got[0].0, got[0].1.to_bits()))
                    .unwrap_or_else(|| panic!("chunk starts with an unknown sample {:?}", got[0]));
                for (j, &(t, v)) in got.iter().enumerate() {
                    let (wt, wv) = series[si].samples[k0 + j];
                    assert_eq!(
                        (t, v.to_bits()),
                        (wt, wv.to_bits()),
                        "sample {j} of chunk in {}",
                        series[si].name
                    );
                    assert!(!seen[si][k0 + j], "sample seen twice");
                    seen[si][k0 + j] = true;
                }
                // Our encoder writes the very same bytes as this Prometheus 2.42 (the 2.x layout), and
                // Prometheus 3's layout differs only by 2.x's empty trailing byte.
                let mut ours = XorChunk::with_layout(Layout::Prometheus2, 128);
                let mut v3 = XorChunk::new();
                for &(t, v) in &got {
                    ours.append(t, v).unwrap();
                    v3.append(t, v).unwrap();
                }
                assert_eq!(
                    ours.bytes(),
                    c.data,
                    "re-encoded chunk of {} differs",
                    series[si].name
                );
                let trimmed = if c.data.len() == v3.bytes().len() + 1 {
                    &c.data[..v3.bytes().len()]
                } else {
                    c.data
                };
                assert_eq!(
                    v3.bytes(),
                    trimmed,
                    "Prometheus 3 layout of {}",
                    series[si].name
                );
                trailing += usize::from(c.data.len() != v3.bytes().len());
                chunks += 1;
                bytes += c.data.len();
            }
        }
    }
    for (si, s) in seen.iter().enumerate() {
        let missing = s.iter().filter(|x| !**x).count();
        assert_eq!(
            missing, 0,
            "{} samples of {} not found in promtool's chunks",
            missing, series[si].name
        );
    }
    let total: usize = series.iter().map(|s| s.samples.len()).sum();
    assert!(
        blocks >= 2 && chunks > series.len(),
        "{blocks} blocks, {chunks} chunks"
    );
    eprintln!(
        "checked {total} samples in {chunks} chunks ({bytes} bytes, {trailing} with the 2.x trailing byte) across {blocks} blocks"
    );
}
