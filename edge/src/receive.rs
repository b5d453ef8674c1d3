//! The remote-write 1.0 receiver: `POST /api/v1/write` (Prometheus) and `/api/v1/receive` (Thanos).
//!
//! The body is a snappy **block** (not framed) of a protobuf `WriteRequest`. Its decompressed length is read
//! from the snappy header and checked before anything is decompressed, so a small body cannot expand into a
//! large allocation. Status codes tell the sender what to do, as the protocol defines:
//!
//! | outcome | status | sender |
//! |---|---|---|
//! | stored | 204 | next batch |
//! | malformed body, bad labels, samples out of order / duplicate / too old | 400 | drops the batch |
//! | body or decompressed size over the limit | 413 | drops |
//! | not snappy / not protobuf | 415 | drops |
//! | storage failure | 500 | retries |
//!
//! A request is committed atomically (one WAL record), so a crash stores all of it or none of it. Every
//! good sample of a request is stored even when some are refused (then the answer is 400 with the count
//! and the first reason). A sender's retry of a request whose response was lost finds its samples already
//! there: they are refused as duplicates or out of order (400, dropped) and nothing is doubled or lost.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;

use crate::labels::Labels;
use crate::metadata::{Meta, MetadataStore, remote_write_kind};
use crate::proto::prometheus::WriteRequest;
use crate::relabel::is_valid_label_name;
use crate::tsdb::db::Db;
use crate::tsdb::head::AppendError;

/// Limits of the receiver.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveLimits {
    /// Compressed body.
    pub max_body_bytes: usize,
    /// Decompressed `WriteRequest`.
    pub max_decoded_bytes: usize,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_body_bytes: 32 << 20,
            max_decoded_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

/// Receiver self-metrics.
#[derive(Debug, Clone, Default)]
pub struct ReceiveMetrics {
    pub samples: Family<ResultLabel, Counter>,
    pub requests: Family<CodeLabel, Counter>,
}

impl ReceiveMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_receive_samples",
            "Remote-write samples received, by result (stored, rejected)",
            self.samples.clone(),
        );
        r.register(
            "meridian_receive_requests",
            "Remote-write requests, by HTTP status code",
            self.requests.clone(),
        );
    }
}

/// A response to a write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub message: String,
}

impl Answer {
    fn new(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
        }
    }
}

/// Checks the headers (`Content-Encoding: snappy`, protobuf content type when given).
pub fn check_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), Answer> {
    if let Some(ct) = content_type {
        let base = ct.split(';').next().unwrap_or("").trim();
        if !base.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(Answer::new(
                415,
                format!(
                    "unsupported Content-Type {ct:?}: remote write 1.0 sends application/x-protobuf"
                ),
            ));
        }
    }
    match content_encoding {
        Some(e) if e.trim().eq_ignore_ascii_case("snappy") => Ok(()),
        Some(e) => Err(Answer::new(
            415,
            format!("unsupported Content-Encoding {e:?}: remote write 1.0 sends snappy"),
        )),
        None => Err(Answer::new(
            415,
            "missing Content-Encoding: remote write 1.0 sends snappy",
        )),
    }
}

/// A remote-write 1.0 request body: the snappy block of the protobuf `WriteRequest` (what senders POST).
pub fn encode_body(req: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

/// Decodes and stores one request body (already known to be within `max_body_bytes`): samples into
/// `db`, metric metadata (which Prometheus sends in requests of its own) into `metadata`.
pub fn write(
    db: &Db,
    metadata: &MetadataStore,
    body: &[u8],
    limits: ReceiveLimits,
    metrics: &ReceiveMetrics,
) -> Answer {
    let answer = write_inner(db, metadata, body, limits, metrics);
    metrics
        .requests
        .get_or_create(&CodeLabel {
            code: answer.status,
        })
        .inc();
    answer
}

fn write_inner(
    db: &Db,
    metadata: &MetadataStore,
    body: &[u8],
    limits: ReceiveLimits,
    metrics: &ReceiveMetrics,
) -> Answer {
    if body.len() > limits.max_body_bytes {
        return Answer::new(
            413,
            format!(
                "body of {} bytes exceeds the limit of {} bytes",
                body.len(),
                limits.max_body_bytes
            ),
        );
    }
    let len = match snap::raw::decompress_len(body) {
        Ok(n) => n,
        Err(e) => return Answer::new(400, format!("body is not a snappy block: {e}")),
    };
    if len > limits.max_decoded_bytes {
        return Answer::new(
            413,
            format!(
                "decompressed size {len} bytes exceeds the limit of {} bytes",
                limits.max_decoded_bytes
            ),
        );
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(r) => r,
        Err(e) => return Answer::new(400, format!("body is not a snappy block: {e}")),
    };
    let req = match WriteRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return Answer::new(400, format!("body is not a WriteRequest: {e}")),
    };
    if !req.metadata.is_empty() {
        let refused = metadata.record_remote_write(
            req.metadata
                .iter()
                .filter(|m| !m.metric_family_name.is_empty())
                .map(|m| {
                    (
                        m.metric_family_name.clone(),
                        Meta {
                            kind: remote_write_kind(m.r#type),
                            help: m.help.clone(),
                            unit: m.unit.clone(),
                        },
                    )
                }),
            std::time::Instant::now(),
        );
        if refused > 0 {
            tracing::warn!(
                refused,
                "remote-write metadata store is full; new families ignored"
            );
        }
    }
    let mut app = db.appender();
    let (mut stored, mut rejected) = (0u64, 0u64);
    let mut first_reason: Option<String> = None;
    let mut names: Vec<(&str, &str)> = Vec::new();
    for (i, ts) in req.timeseries.iter().enumerate() {
        names.clear();
        for l in &ts.labels {
            if !is_valid_label_name(&l.name) {
                return Answer::new(
                    400,
                    format!("timeseries {i}: invalid label name {:?}", l.name),
                );
            }
            if !l.value.is_empty() {
                names.push((l.name.as_str(), l.value.as_str()));
            }
        }
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
            return Answer::new(
                400,
                format!("timeseries {i}: duplicate label name {:?}", w[0].0),
            );
        }
        if !names.iter().any(|(n, _)| *n == "__name__") {
            return Answer::new(400, format!("timeseries {i}: no __name__ label"));
        }
        if !ts.histograms.is_empty() {
            rejected += ts.histograms.len() as u64;
            first_reason.get_or_insert_with(|| {
                "native histograms are not supported by the edge".to_string()
            });
        }
        if ts.samples.is_empty() {
            continue;
        }
        let labels = Labels::from_pairs(names.iter().copied());
        let r = app.series_ref(&labels);
        for s in &ts.samples {
            match app.append(r, s.timestamp, s.value) {
                Ok(()) => stored += 1,
                Err(e) if e.is_client_error() => {
                    rejected += 1;
                    first_reason.get_or_insert_with(|| e.to_string());
                }
                Err(e) => return Answer::new(500, format!("storage: {e}")),
            }
        }
    }
    match app.commit() {
        Ok(_) => {}
        Err(AppendError::Storage(e)) => return Answer::new(500, format!("storage: {e}")),
        Err(e) if !e.is_client_error() => return Answer::new(500, e.to_string()),
        Err(e) => {
            // A concurrent writer got ahead between append and commit: nothing of this batch was
            // stored; the sender may retry it.
            return Answer::new(500, format!("conflicting concurrent write, retry: {e}"));
        }
    }
    metrics
        .samples
        .get_or_create(&ResultLabel { result: "stored" })
        .inc_by(stored);
    if rejected > 0 {
        metrics
            .samples
            .get_or_create(&ResultLabel { result: "rejected" })
            .inc_by(rejected);
        return Answer::new(
            400,
            format!(
                "{rejected} sample(s) refused, {stored} stored; first: {}",
                first_reason.unwrap_or_default()
            ),
        );
    }
    Answer::new(204, "")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::prometheus::{Label, Sample, TimeSeries};
    use crate::tsdb::db::DbOptions;

    type Series<'a> = (Vec<(&'a str, &'a str)>, Vec<(i64, f64)>);

    fn body(series: Vec<Series<'_>>) -> Vec<u8> {
        let req = WriteRequest {
            timeseries: series
                .into_iter()
                .map(|(l, s)| TimeSeries {
                    labels: l
                        .into_iter()
                        .map(|(n, v)| Label {
                            name: n.into(),
                            value: v.into(),
                        })
                        .collect(),
                    samples: s
                        .into_iter()
                        .map(|(t, v)| Sample {
                            value: v,
                            timestamp: t,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        encode_body(&req).unwrap()
    }

    #[test]
    fn statuses() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let m = ReceiveMetrics::default();
        let md = MetadataStore::new();
        let lim = ReceiveLimits::default();
        let ok = body(vec![(
            vec![("__name__", "a"), ("x", "1")],
            vec![(1000, 1.0), (2000, 2.0)],
        )]);
        assert_eq!(write(&db, &md, &ok, lim, &m).status, 204);
        // The same batch again (a retry after a lost response): nothing doubled; the older sample is
        // refused as out of order (400: the sender drops the batch, whose samples are all stored).
        assert_eq!(write(&db, &md, &ok, lim, &m).status, 400);
        let all = db
            .samples(&[crate::Matcher::equal("__name__", "a")], 0, i64::MAX)
            .unwrap();
        assert_eq!(all[0].1.len(), 2);
        // Out of order next to a good sample: the good one is stored, the answer is 400.
        let mixed = body(vec![
            (vec![("__name__", "a"), ("x", "1")], vec![(1500, 9.0)]),
            (vec![("__name__", "b")], vec![(1000, 1.0)]),
        ]);
        let a = write(&db, &md, &mixed, lim, &m);
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.message.contains("1 sample(s) refused, 1 stored"), "{a:?}");
        assert_eq!(db.head_series(), 2);
        assert_eq!(write(&db, &md, b"not snappy", lim, &m).status, 400);
        let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 10]).unwrap();
        assert_eq!(write(&db, &md, &garbage, lim, &m).status, 400);
        let small = ReceiveLimits {
            max_body_bytes: 1 << 20,
            max_decoded_bytes: 10,
        };
        assert_eq!(write(&db, &md, &ok, small, &m).status, 413);
        let bad = body(vec![(
            vec![("__name__", "a"), ("a-b", "1")],
            vec![(1, 1.0)],
        )]);
        assert!(write(&db, &md, &bad, lim, &m).message.contains("\"a-b\""));
        assert_eq!(
            check_headers(Some("application/json"), Some("snappy"))
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(
            check_headers(Some("application/x-protobuf"), None)
                .unwrap_err()
                .status,
            415
        );
        assert!(
            check_headers(
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                Some("snappy")
            )
            .is_ok()
        );
    }

    #[test]
    fn metadata_requests_are_recorded() {
        use crate::proto::prometheus::MetricMetadata;
        use crate::proto::prometheus::metric_metadata::MetricType;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let md = MetadataStore::new();
        let req = WriteRequest {
            metadata: vec![
                MetricMetadata {
                    r#type: MetricType::Counter as i32,
                    metric_family_name: "http_requests_total".into(),
                    help: "Requests.".into(),
                    unit: String::new(),
                },
                MetricMetadata {
                    r#type: MetricType::Gaugehistogram as i32,
                    metric_family_name: "queue_wait".into(),
                    help: String::new(),
                    unit: "seconds".into(),
                },
            ],
            ..Default::default()
        };
        let b = encode_body(&req).unwrap();
        let a = write(
            &db,
            &md,
            &b,
            ReceiveLimits::default(),
            &ReceiveMetrics::default(),
        );
        assert_eq!(a.status, 204, "{a:?}");
        let all = md.all(std::time::Instant::now());
        assert_eq!(all["http_requests_total"][0].r#type, "counter");
        assert_eq!(all["http_requests_total"][0].help, "Requests.");
        assert_eq!(all["queue_wait"][0].r#type, "gaugehistogram");
        assert_eq!(all["queue_wait"][0].unit, "seconds");
    }
}
