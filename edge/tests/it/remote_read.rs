//! The sidecar's remote-read pieces against a real Prometheus 2.42: a streamed-chunks answer read
//! frame by frame holds exactly the samples that the same query answers with `SAMPLES`, and the
//! chunks are XOR chunks our decoder reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_core::chunkenc::XorIterator;
use meridian_edge::sidecar::remote_read::{
    FrameReader, REQUEST_HEADERS, STREAMED_CONTENT_TYPE, request_body,
};
use meridian_storeapi::proto::prometheus::{
    LabelMatcher, Query, ReadRequest, ReadResponse, chunk::Encoding, label_matcher::Type,
    read_request::ResponseType,
};
use meridian_testkit::{Prometheus, http, wait_for};
use prost::Message;

type Series = BTreeMap<String, Vec<(i64, u64)>>;

fn name(labels: &[meridian_storeapi::proto::prometheus::Label]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn streamed_chunks_hold_what_samples_hold() {
    let d = tempfile::tempdir().unwrap();
    let Some(prom) = Prometheus::start(
        d.path(),
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: self\n    static_configs: [{targets: ['$PROMETHEUS_ADDR']}]\n",
        &[],
    ) else {
        return;
    };
    let matchers = vec![LabelMatcher {
        r#type: Type::Re as i32,
        name: "__name__".into(),
        value: "up|prometheus_http_requests_total".into(),
    }];
    let start = meridian_core::time::now_ms() - 3_600_000;
    wait_for("7 scrapes", Duration::from_secs(30), || {
        (prom.query("count_over_time(up[1m])").first()?.1 >= 7.0).then_some(())
    });
    let end = meridian_core::time::now_ms() - 1_500;
    let post = |body: Vec<u8>| {
        let r = http("POST", &prom.addr, "/api/v1/read", &REQUEST_HEADERS, &body).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r
    };
    // Streamed, fed to the reader in uneven pieces.
    let r = post(request_body(matchers.clone(), start, end, None).unwrap());
    assert_eq!(r.header("content-type"), Some(STREAMED_CONTENT_TYPE));
    let mut reader = FrameReader::default();
    let mut streamed = Series::new();
    let mut frames = 0;
    for piece in r.body.chunks(333) {
        reader.push(piece);
        while let Some(f) = reader.next_frame().unwrap() {
            frames += 1;
            assert_eq!(f.query_index, 0);
            for s in f.chunked_series {
                let e = streamed.entry(name(&s.labels)).or_default();
                for c in s.chunks {
                    assert_eq!(c.r#type, Encoding::Xor as i32);
                    let it = XorIterator::new(&c.data).unwrap();
                    e.extend(it.map(|x| (x.t, x.v.to_bits())));
                }
            }
        }
    }
    reader.finish().unwrap();
    assert!(frames >= 1);
    // The same query answered with samples.
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
            hints: None,
        }],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    let r = post(
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap(),
    );
    let resp = ReadResponse::decode(
        snap::raw::Decoder::new()
            .decompress_vec(&r.body)
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let mut sampled = Series::new();
    for ts in &resp.results[0].timeseries {
        sampled.insert(
            name(&ts.labels),
            ts.samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect(),
        );
    }
    assert!(sampled.len() >= 2, "{:?}", sampled.keys());
    assert!(
        sampled
            .iter()
            .any(|(k, v)| k.starts_with("__name__=up,") && v.len() >= 4),
        "{sampled:?}"
    );
    assert_eq!(streamed, sampled);
}
