//! Native-histogram chunks written by Prometheus 2.42 itself. Histograms go to Prometheus 2.42
//! (`--enable-feature=native-histograms`) by remote write: integer histograms with a fixed layout, with
//! a bucket appearing half way (the head recodes its chunk), with a counter reset, with a schema
//! change, a gauge histogram, and float histograms. The snapshot API writes the head as a block. Every
//! histogram chunk of that block is read with Meridian's decoder, giving back exactly what was sent,
//! and Meridian's encoder, given the decoded samples and the chunk's header, writes the same bytes
//! (the 2.x trailing byte included). The WAL records Prometheus wrote for them (types 7 and 8) decode to
//! the same histograms, hints and all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use meridian_core::chunkenc::{
    FloatHistogramChunk, HistogramChunk, read_float_histograms, read_histograms,
};
use meridian_core::histogram::Span;
use meridian_integration::histograms::{deltas, spans};
use meridian_storeapi::proto::prometheus as prom;
use meridian_testkit::{Prometheus, http, post_remote_write};

/// What a sample means: time, series id (in the sum), count, zero count, absolute buckets by index.
type Meaning = (i64, u64, u64, u64, Vec<(i32, u64)>);

fn bucket_map(spans: &[Span], counts: &[f64]) -> Vec<(i32, u64)> {
    let mut out = BTreeMap::new();
    let mut idx = 0i32;
    let mut k = 0;
    for (i, s) in spans.iter().enumerate() {
        idx = if i == 0 { s.offset } else { idx + s.offset };
        for _ in 0..s.length {
            if counts[k] != 0.0 {
                out.insert(idx, counts[k].to_bits());
            }
            idx += 1;
            k += 1;
        }
    }
    out.into_iter().collect()
}

/// One integer histogram sample; `id` goes into the sum's integer part to tell series apart.
fn int_sample(
    t: i64,
    id: u64,
    schema: i32,
    sp: &[(i32, u32)],
    abs: &[i64],
    hint: i32,
) -> prom::Histogram {
    let count: i64 = abs.iter().sum::<i64>() + 1;
    prom::Histogram {
        count: Some(prom::histogram::Count::CountInt(count as u64)),
        sum: id as f64 * 1e6 + t as f64 / 1000.0,
        schema,
        zero_threshold: f64::from_bits(0x37f0_0000_0000_0000),
        zero_count: Some(prom::histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: spans(sp),
        positive_deltas: deltas(abs),
        negative_spans: spans(&[(0, 1)]),
        negative_deltas: vec![0],
        reset_hint: hint,
        timestamp: t,
        ..prom::Histogram::default()
    }
}

fn meaning_of_sent(h: &prom::Histogram) -> Meaning {
    let count = match h.count {
        Some(prom::histogram::Count::CountInt(c)) => c,
        Some(prom::histogram::Count::CountFloat(c)) => c as u64,
        None => 0,
    };
    let zero = match h.zero_count {
        Some(prom::histogram::ZeroCount::ZeroCountInt(c)) => c,
        Some(prom::histogram::ZeroCount::ZeroCountFloat(c)) => c as u64,
        None => 0,
    };
    let sp: Vec<Span> = h
        .positive_spans
        .iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect();
    let counts: Vec<f64> = if h.positive_counts.is_empty() {
        let mut acc = 0i64;
        h.positive_deltas
            .iter()
            .map(|d| {
                acc += d;
                acc as f64
            })
            .collect()
    } else {
        h.positive_counts.clone()
    };
    (
        h.timestamp,
        h.sum.to_bits(),
        count,
        zero,
        bucket_map(&sp, &counts),
    )
}

/// The chunks of a block's segment files: (encoding, data).
fn chunks(block: &Path) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(block.join("chunks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let b = std::fs::read(&f).unwrap();
        assert_eq!(&b[..4], &[0x85, 0xbd, 0x40, 0xdd], "segment magic");
        let mut p = 8;
        while p < b.len() {
            let (mut len, mut shift) = (0u64, 0);
            loop {
                let x = b[p];
                p += 1;
                len |= u64::from(x & 0x7f) << shift;
                shift += 7;
                if x < 0x80 {
                    break;
                }
            }
            let enc = b[p];
            let data = b[p + 1..p + 1 + len as usize].to_vec();
            p += 1 + len as usize + 4;
            out.push((enc, data));
        }
    }
    out
}

#[test]
fn prometheus_2_42_histogram_chunks_decode_and_encode_alike() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = Prometheus::start(
        dir.path(),
        "global: {scrape_interval: 1h}\n",
        &[
            "--enable-feature=native-histograms",
            "--web.enable-remote-write-receiver",
            "--web.enable-admin-api",
        ],
    ) else {
        return;
    };
    let now = meridian_core::time::now_ms() / 1000 * 1000;
    // 300 samples: chunks are cut at 240, and only complete (memory-mapped) chunks reach the snapshot
    // as written; the open one is re-encoded by 2.42 without its counter-reset header.
    let n = 300i64;
    let t0 = now - n * 15_000;
    let mut series: Vec<(String, Vec<prom::Histogram>)> = Vec::new();
    let ts = |i: i64| t0 + i * 15_000;
    // 1: a fixed layout.
    series.push((
        "fixed".into(),
        (0..n)
            .map(|i| {
                int_sample(
                    ts(i),
                    1,
                    3,
                    &[(-2, 4), (3, 2)],
                    &[i, 2 * i, 0, 5 + i, i * i, 7],
                    0,
                )
            })
            .collect(),
    ));
    // 2: a bucket appears half way (recoding).
    series.push((
        "grows".into(),
        (0..n)
            .map(|i| {
                if i < 70 {
                    int_sample(ts(i), 2, 0, &[(0, 2)], &[i, i + 3], 0)
                } else {
                    int_sample(ts(i), 2, 0, &[(0, 2), (2, 1)], &[i, i + 3, i - 69], 0)
                }
            })
            .collect(),
    ));
    // 3: a counter reset.
    series.push((
        "reset".into(),
        (0..n)
            .map(|i| {
                let v = if i < 40 { i * 3 } else { i - 40 };
                int_sample(ts(i), 3, 1, &[(1, 3)], &[v, v + 1, 2], 0)
            })
            .collect(),
    ));
    // 4: the schema changes.
    series.push((
        "schema".into(),
        (0..n)
            .map(|i| int_sample(ts(i), 4, if i < 50 { 2 } else { 1 }, &[(0, 2)], &[i, i], 0))
            .collect(),
    ));
    // 5: a gauge histogram. (Its values only grow: Prometheus 2.42's snapshot re-encodes the open head
    // chunk with the counter's checks and refuses a gauge whose buckets go down, "detected unexpected
    // counter reset in histogram".)
    series.push((
        "gauge".into(),
        (0..n)
            .map(|i| int_sample(ts(i), 5, 2, &[(-1, 3)], &[i, 10 + i, 4], 3))
            .collect(),
    ));
    // 6: float histograms.
    series.push((
        "float".into(),
        (0..n)
            .map(|i| {
                let f = i as f64;
                prom::Histogram {
                    count: Some(prom::histogram::Count::CountFloat(3.5 * f + 10.0)),
                    sum: 6e6 + f * 0.25,
                    schema: 0,
                    zero_threshold: 0.001,
                    zero_count: Some(prom::histogram::ZeroCount::ZeroCountFloat(0.5)),
                    positive_spans: spans(&[(0, 2), (1, 1)]),
                    positive_counts: vec![f, 1.5 * f + 0.125, f + 9.375],
                    timestamp: ts(i),
                    ..prom::Histogram::default()
                }
            })
            .collect(),
    ));
    let req = prom::WriteRequest {
        timeseries: series
            .iter()
            .map(|(name, hs)| prom::TimeSeries {
                labels: vec![prom::Label {
                    name: "__name__".into(),
                    value: format!("h_{name}"),
                }],
                histograms: hs.clone(),
                ..prom::TimeSeries::default()
            })
            .collect(),
        ..prom::WriteRequest::default()
    };
    post_remote_write(&p.addr, &meridian_edge::receive::encode_body(&req).unwrap());
    wal_records_hold_what_was_sent(&p.data.join("wal"), &series);
    let snap = http("POST", &p.addr, "/api/v1/admin/tsdb/snapshot", &[], b"")
        .unwrap()
        .json();
    let name = snap["data"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot: {snap}"))
        .to_owned();
    let snapdir = p.data.join("snapshots").join(name);
    let blocks: Vec<_> = std::fs::read_dir(&snapdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    assert!(!blocks.is_empty(), "no block in {}", snapdir.display());

    let mut got: Vec<Meaning> = Vec::new();
    let (mut int_chunks, mut float_chunks) = (0, 0);
    let mut headers = BTreeMap::new();
    for b in &blocks {
        for (enc, data) in chunks(b) {
            match enc {
                2 => {
                    let (head, samples) = read_histograms(&data).unwrap();
                    *headers.entry(format!("{head:?}")).or_insert(0) += 1;
                    let mut c = HistogramChunk::new(true);
                    c.set_header(head);
                    for (t, h) in &samples {
                        c.append(*t, h).unwrap();
                        got.push((
                            *t,
                            h.sum.to_bits(),
                            h.count,
                            h.zero_count,
                            bucket_map(&h.positive_spans, &h.to_float().positive_buckets),
                        ));
                    }
                    assert_eq!(c.bytes(), &data[..], "integer chunk re-encoded differently");
                    int_chunks += 1;
                }
                3 => {
                    let (head, samples) = read_float_histograms(&data).unwrap();
                    let mut c = FloatHistogramChunk::new(true);
                    c.set_header(head);
                    for (t, h) in &samples {
                        c.append(*t, h).unwrap();
                        got.push((
                            *t,
                            h.sum.to_bits(),
                            h.count as u64,
                            h.zero_count as u64,
                            bucket_map(&h.positive_spans, &h.positive_buckets),
                        ));
                    }
                    assert_eq!(c.bytes(), &data[..], "float chunk re-encoded differently");
                    float_chunks += 1;
                }
                _ => {}
            }
        }
    }
    let mut want: Vec<Meaning> = series
        .iter()
        .flat_map(|(_, hs)| hs.iter().map(meaning_of_sent))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    println!(
        "{int_chunks} integer and {float_chunks} float histogram chunks of Prometheus 2.42, headers {headers:?}: decoded to what was sent, re-encoded to the same bytes"
    );
    // Cut at 240 samples, at the reset and at the schema change. Which complete chunks keep their
    // header depends on whether the head had memory-mapped them before the snapshot (2.42 re-encodes
    // the others without it): at least one does.
    assert!(int_chunks >= 11, "{int_chunks}");
    assert!(float_chunks >= 1);
    assert!(
        headers.keys().any(|h| h != "Unknown"),
        "no header besides Unknown: {headers:?}"
    );
}

/// Every histogram of Prometheus' WAL (records 7 and 8), as Meridian decodes them, equals one sent.
fn wal_records_hold_what_was_sent(wal: &Path, series: &[(String, Vec<prom::Histogram>)]) {
    use meridian_core::histogram::{FloatHistogram, Histogram};
    use meridian_tsdb::promwal::{PromRecord, decode, split_records};
    let sent = |h: &prom::Histogram| -> (i64, FloatHistogram, u8) {
        let sp = |v: &[prom::BucketSpan]| -> Vec<Span> {
            v.iter()
                .map(|s| Span {
                    offset: s.offset,
                    length: s.length,
                })
                .collect()
        };
        let f = match (h.count, h.zero_count) {
            (
                Some(prom::histogram::Count::CountInt(c)),
                Some(prom::histogram::ZeroCount::ZeroCountInt(z)),
            ) => Histogram {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count: z,
                count: c,
                sum: h.sum,
                positive_spans: sp(&h.positive_spans),
                negative_spans: sp(&h.negative_spans),
                positive_buckets: h.positive_deltas.clone(),
                negative_buckets: h.negative_deltas.clone(),
                ..Histogram::default()
            }
            .to_float(),
            (
                Some(prom::histogram::Count::CountFloat(c)),
                Some(prom::histogram::ZeroCount::ZeroCountFloat(z)),
            ) => FloatHistogram {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count: z,
                count: c,
                sum: h.sum,
                positive_spans: sp(&h.positive_spans),
                negative_spans: sp(&h.negative_spans),
                positive_buckets: h.positive_counts.clone(),
                negative_buckets: h.negative_counts.clone(),
                ..FloatHistogram::default()
            },
            _ => panic!("mixed counts"),
        };
        (h.timestamp, f, h.reset_hint as u8)
    };
    // The hint once, as the WAL's byte (the model's field is cleared).
    let key = |(t, f, hint): &(i64, FloatHistogram, u8)| {
        let mut f = f.clone();
        f.hint = Default::default();
        format!("{t} {hint} {f:?}")
    };
    let mut want: Vec<String> = series
        .iter()
        .flat_map(|(_, hs)| hs.iter().map(|h| key(&sent(h))))
        .collect();
    let mut got = Vec::new();
    let mut segments: Vec<_> = std::fs::read_dir(wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    segments.sort();
    for seg in segments {
        let buf = std::fs::read(&seg).unwrap();
        let (recs, _) = split_records(&buf, 0).unwrap();
        for r in recs {
            match decode(&r).unwrap() {
                PromRecord::Histograms(v) => got.extend(
                    v.iter()
                        .map(|(_, t, h)| key(&(*t, h.to_float(), h.hint as u8))),
                ),
                PromRecord::FloatHistograms(v) => got.extend(
                    v.iter()
                        .map(|(_, t, h)| key(&(*t, h.clone(), h.hint as u8))),
                ),
                _ => {}
            }
        }
    }
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "histograms in the WAL");
    let differ: Vec<_> = got
        .iter()
        .zip(&want)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(differ.is_empty(), "WAL vs sent: {differ:#?}");
    println!(
        "{} histograms in Prometheus' WAL decoded as sent",
        got.len()
    );
}
