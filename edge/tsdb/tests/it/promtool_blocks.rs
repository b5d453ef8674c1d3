//! Blocks against Prometheus' own tools: `promtool tsdb analyze` accepts our blocks and
//! `promtool tsdb dump` prints exactly the samples we wrote; and blocks written by
//! `promtool tsdb create-blocks-from openmetrics` read through our block reader return exactly what
//! `promtool tsdb dump` prints for them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use meridian_core::chunkenc::XorIterator;
use meridian_core::sample::stale_nan;
use meridian_core::{Labels, MatchType, Matcher, Sample};
use meridian_tsdb::block::Block;
use meridian_tsdb::db::{Db, DbOptions, dir_size};

/// 2 h aligned start, ms.
const T0: i64 = 1_700_006_400_000;
const TWO_HOURS: i64 = 7_200_000;

/// `promtool tsdb dump` output: (labels as Go prints them, timestamp) -> value bits (NaN canonicalised).
fn dump(promtool: &Path, dir: &Path) -> HashMap<(String, i64), u64> {
    meridian_testkit::promtool_dump(promtool, dir)
        .into_iter()
        .map(|(k, v)| (k, key(v)))
        .collect()
}

/// Values compare bit-exactly, except that every NaN (stale markers included: `%g` prints them all as
/// "NaN") is one value.
fn key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn ours(series: &[(Labels, Vec<Sample>)]) -> HashMap<(String, i64), u64> {
    let mut m = HashMap::new();
    for (l, s) in series {
        for x in s {
            m.insert((l.to_string(), x.t), key(x.v));
        }
    }
    m
}

fn compare(what: &str, got: &HashMap<(String, i64), u64>, want: &HashMap<(String, i64), u64>) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: {} vs {} samples; missing {missing:?}; extra {extra:?}; differing {differ:?}",
        got.len(),
        want.len()
    );
}

#[test]
fn promtool_reads_our_blocks() {
    let Some(promtool) = meridian_testkit::require("promtool", "apt-get install prometheus") else {
        return;
    };
    // 10,000 series over 3 hours (two 2 h blocks): counters, gauges, histogram buckets, stale markers.
    let step = 300_000;
    let n = 36;
    let mut series: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for i in 0..4000 {
        let l = Labels::from_pairs([
            ("__name__", "http_requests_total".to_string()),
            ("instance", format!("10.0.{}.{}:9090", i / 250, i % 250)),
            ("code", ["200", "404", "500"][i % 3].to_string()),
        ]);
        let mut v = (i * 7) as f64;
        let mut s: Vec<Sample> = (0..n)
            .map(|k| {
                v += ((i + k) % 13) as f64;
                Sample::new(T0 + k as i64 * step, v)
            })
            .collect();
        if i % 50 == 0 {
            // The target went away: a stale marker, then nothing.
            s.truncate(20);
            s.push(Sample::new(T0 + 20 * step, stale_nan()));
        }
        series.push((l, s));
    }
    for i in 0..3000 {
        let l = Labels::from_pairs([
            ("__name__", "node_memory_Active_bytes".to_string()),
            ("instance", format!("node-{i}")),
            ("path", "/var/lib/a\"b\\c".to_string()),
        ]);
        let s = (0..n)
            .map(|k| {
                Sample::new(
                    T0 + k as i64 * step + (k as i64 % 3),
                    1e9 + ((i * k) % 997) as f64 * 4096.5,
                )
            })
            .collect();
        series.push((l, s));
    }
    let les = ["0.005", "0.01", "0.1", "1", "10", "+Inf"];
    for i in 0..500 {
        for (b, le) in les.iter().enumerate() {
            let l = Labels::from_pairs([
                ("__name__", "request_duration_seconds_bucket".to_string()),
                ("handler", format!("/api/v{i}")),
                ("le", le.to_string()),
            ]);
            let s = (0..n)
                .map(|k| {
                    Sample::new(
                        T0 + k as i64 * step,
                        ((k + 1) * (b + 1) * (i % 7 + 1)) as f64,
                    )
                })
                .collect();
            series.push((l, s));
        }
    }
    assert!(series.len() >= 10_000);
    // Through the TSDB: appender -> WAL -> head, then the head is cut into 2 h blocks.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        DbOptions {
            retention_time: None,
            ..Default::default()
        },
    )
    .unwrap();
    for (labels, samples) in &series {
        let mut app = db.appender();
        for s in samples {
            app.add(labels, s.t, s.v).unwrap();
        }
        app.commit().unwrap();
    }
    let metas = db.flush_head().unwrap();
    assert_eq!(
        metas
            .iter()
            .map(|m| (m.min_time, m.max_time))
            .collect::<Vec<_>>(),
        vec![(T0, T0 + TWO_HOURS), (T0 + TWO_HOURS, T0 + 2 * TWO_HOURS)]
    );
    drop(db);
    let ulids: Vec<String> = metas.into_iter().map(|m| m.ulid).collect();
    for u in &ulids {
        let out = meridian_testkit::run_ok(
            Command::new(&promtool)
                .arg("tsdb")
                .arg("analyze")
                .arg(dir.path())
                .arg(u),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Block ID: ") && text.contains(u.as_str()),
            "{text}"
        );
    }
    compare(
        "promtool dump of our blocks",
        &dump(&promtool, dir.path()),
        &ours(&series),
    );
}

#[test]
fn we_read_promtools_blocks() {
    let Some(promtool) = meridian_testkit::require("promtool", "apt-get install prometheus") else {
        return;
    };
    let mut om = String::new();
    let t0 = T0 / 1000;
    writeln!(om, "# TYPE app_requests counter").unwrap();
    for i in 0..40 {
        for k in 0..400 {
            writeln!(
                om,
                "app_requests_total{{job=\"app\",instance=\"i-{i}\"}} {} {}",
                i * 1000 + k * (i % 5 + 1),
                t0 + k * 30
            )
            .unwrap();
        }
    }
    writeln!(om, "# TYPE app_temperature gauge").unwrap();
    for i in 0..20 {
        for k in 0..400 {
            let v = 20.0 + ((i * 31 + k * 17) % 100) as f64 / 8.0;
            writeln!(
                om,
                "app_temperature{{room=\"r{i}\",unit=\"°C\"}} {v} {}",
                t0 + k * 30 + 1
            )
            .unwrap();
        }
    }
    writeln!(om, "# TYPE app_latency histogram").unwrap();
    for le in ["0.1", "1", "+Inf"] {
        for k in 0..400 {
            writeln!(
                om,
                "app_latency_bucket{{le=\"{le}\"}} {} {}",
                k * 3,
                t0 + k * 30
            )
            .unwrap();
        }
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.om");
    std::fs::write(&input, om).unwrap();
    let blocks = dir.path().join("blocks");
    meridian_testkit::run_ok(
        Command::new(&promtool)
            .arg("tsdb")
            .arg("create-blocks-from")
            .arg("openmetrics")
            .arg(&input)
            .arg(&blocks),
    );
    let want = dump(&promtool, &blocks);
    let mut got = HashMap::new();
    let mut by_series: std::collections::BTreeMap<Labels, Vec<Sample>> = Default::default();
    let (mut their_chunk_bytes, mut their_block_bytes) = (0usize, 0u64);
    let all = [Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()];
    let mut n_blocks = 0;
    for e in std::fs::read_dir(&blocks).unwrap() {
        let p = e.unwrap().path();
        if !p.join("meta.json").exists() {
            continue;
        }
        n_blocks += 1;
        let b = Block::open(&p).unwrap();
        assert_eq!(b.meta().version, 1);
        let mut prev: Option<Labels> = None;
        for s in b.select(&all, i64::MIN, i64::MAX).unwrap() {
            assert!(
                prev.as_ref().is_none_or(|p| *p < s.labels),
                "series out of order"
            );
            for (meta, _, data) in &s.chunks {
                let samples: Vec<Sample> = XorIterator::new(data).unwrap().collect();
                assert_eq!(
                    (samples[0].t, samples[samples.len() - 1].t),
                    (meta.min_time, meta.max_time)
                );
                their_chunk_bytes += data.len();
                for x in &samples {
                    assert!(got.insert((s.labels.to_string(), x.t), key(x.v)).is_none());
                }
                by_series
                    .entry(s.labels.clone())
                    .or_default()
                    .extend(samples);
            }
            prev = Some(s.labels);
        }
        assert!(b.index().label_values("room").len() == 20);
        their_block_bytes += dir_size(&p);
    }
    assert!(n_blocks >= 2, "{n_blocks} blocks");
    compare("our reader on promtool's blocks", &got, &want);

    // The same samples through our TSDB: bytes per sample no larger than Prometheus'.
    let ours_dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        ours_dir.path(),
        DbOptions {
            retention_time: None,
            ..Default::default()
        },
    )
    .unwrap();
    for (labels, samples) in &mut by_series {
        // Blocks were read in directory order; appends go in time order.
        samples.sort_by_key(|x| x.t);
        let mut app = db.appender();
        for x in samples.iter() {
            app.add(labels, x.t, x.v).unwrap();
        }
        app.commit().unwrap();
    }
    let metas = db.flush_head().unwrap();
    let (mut our_chunk_bytes, mut our_block_bytes) = (0usize, 0u64);
    for m in &metas {
        let b = Block::open(&ours_dir.path().join(&m.ulid)).unwrap();
        for s in b.select(&all, i64::MIN, i64::MAX).unwrap() {
            our_chunk_bytes += s.chunks.iter().map(|(_, _, d)| d.len()).sum::<usize>();
        }
        our_block_bytes += dir_size(b.dir());
    }
    let n = got.len() as f64;
    eprintln!(
        "{} samples: chunk bytes/sample ours {:.3} vs promtool {:.3}; whole blocks {:.3} vs {:.3}",
        got.len(),
        our_chunk_bytes as f64 / n,
        their_chunk_bytes as f64 / n,
        our_block_bytes as f64 / n,
        their_block_bytes as f64 / n
    );
    assert!(
        our_chunk_bytes <= their_chunk_bytes,
        "our chunks are larger: {our_chunk_bytes} > {their_chunk_bytes}"
    );
}
