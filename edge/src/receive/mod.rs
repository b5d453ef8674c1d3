//! The remote-write 1.0 receiver: `POST /api/v1/write` (Prometheus) and `/api/v1/receive` (Thanos).
//!
//! The body is a snappy **block** (not framed) of a protobuf `WriteRequest`. Its decompressed length is read
//! from the snappy header and checked before anything is decompressed, so a small body cannot expand into a
//! large allocation. Status codes tell the sender what to do, as the protocol defines:
//!
//! | outcome | status | sender |
//! |---|---|---|
//! | stored | 204 | next batch |
//! | malformed body; series with bad labels (skipped, the others stored); samples out of order, duplicate, or out of bounds (too old, more than 10 min ahead of the clock, outside years 1..=9999) | 400 | drops the batch |
//! | body or decompressed size over the limit | 413 | drops |
//! | Content-Type not protobuf, or a message other than `prometheus.WriteRequest` (remote write 2.0); Content-Encoding not snappy | 415 | drops (a 2.0 sender may fall back to 1.0) |
//! | storage failure | 500 | retries |
//!
//! A request is committed atomically (one WAL record), so a crash stores all of it or none of it. Every
//! good sample of a request is stored even when some are refused (then the answer is 400 with the count
//! and the first reason). Series are created only for samples stored: a refused request leaves no series
//! in the head. A sender's retry of a request whose response was lost finds its samples already
//! there: they are refused as duplicates or out of order (400, dropped) and nothing is doubled or lost.

pub mod args;
pub mod hashring;
pub mod route;
pub mod router;
pub mod tenants;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;

use crate::metadata::{Meta, MetadataStore, remote_write_kind};
use meridian_core::labels::Labels;
use meridian_core::relabel::is_valid_label_name;
use meridian_storeapi::proto::prometheus::{TimeSeries, WriteRequest};
use meridian_tsdb::db::Db;
use meridian_tsdb::head::AppendError;

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
            "Remote-write samples received, by result: stored, rejected (refused by the TSDB: out of order, duplicate, out of bounds), invalid_labels (series with invalid labels, skipped)",
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
    pub fn new(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
        }
    }
}

/// The protobuf message of remote write 1.0, the one the edge accepts (`proto=` of the Content-Type).
pub const PROTO_MESSAGE_V1: &str = "prometheus.WriteRequest";
/// The protobuf message of remote write 2.0, which the edge does not accept (yet).
pub const PROTO_MESSAGE_V2: &str = "io.prometheus.write.v2.Request";

/// Checks the headers (`Content-Encoding: snappy`, protobuf content type when given).
///
/// Content negotiation follows the remote-write 2.0 spec ("Content-Type", "Unsupported Request
/// Content"): the message is named by the Content-Type's `proto=` parameter, absent meaning
/// `prometheus.WriteRequest`; any other message (`io.prometheus.write.v2.Request`, or unknown) is
/// answered 415, so a 2.0 sender can fall back to 1.0 instead of having its body decoded as an empty
/// 1.0 request and dropped. `X-Prometheus-Remote-Write-Version` is not consulted, as in Prometheus v3
/// (`storage/remote/write_handler.go`): the Content-Type alone names the message.
pub fn check_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), Answer> {
    if let Some(ct) = content_type {
        let mut parts = ct.split(';');
        let base = parts.next().unwrap_or("").trim();
        if !base.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(Answer::new(
                415,
                format!(
                    "unsupported Content-Type {ct:?}: remote write 1.0 sends application/x-protobuf"
                ),
            ));
        }
        for p in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = p.split_once('=') else {
                return Err(Answer::new(
                    415,
                    format!(
                        "Content-Type {ct:?}: parameter {p:?} is not name=value (RFC 9110); accepted: application/x-protobuf;proto={PROTO_MESSAGE_V1}"
                    ),
                ));
            };
            if !name.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            let message = value.trim().trim_matches('"');
            if message != PROTO_MESSAGE_V1 {
                let hint = if message == PROTO_MESSAGE_V2 {
                    " (remote write 2.0); configure the sender with protobuf_message: prometheus.WriteRequest"
                } else {
                    ""
                };
                return Err(Answer::new(
                    415,
                    format!(
                        "{message} protobuf message is not accepted by this server{hint}; accepted: {PROTO_MESSAGE_V1}"
                    ),
                ));
            }
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
    let req = match decode(body, limits) {
        Ok(r) => r,
        Err(a) => return a,
    };
    record_metadata(metadata, &req);
    store_series(db, &req.timeseries, metrics)
}

/// Decodes a request body: its size (413 over `max_body_bytes`), its snappy block's announced size
/// (413 over `max_decoded_bytes`, checked before anything is decompressed), the block (400) and the
/// `WriteRequest` in it (400).
pub fn decode(body: &[u8], limits: ReceiveLimits) -> Result<WriteRequest, Answer> {
    if body.len() > limits.max_body_bytes {
        return Err(Answer::new(
            413,
            format!(
                "body of {} bytes exceeds the limit of {} bytes",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let len = snap::raw::decompress_len(body)
        .map_err(|e| Answer::new(400, format!("body is not a snappy block: {e}")))?;
    if len > limits.max_decoded_bytes {
        return Err(Answer::new(
            413,
            format!(
                "decompressed size {len} bytes exceeds the limit of {} bytes",
                limits.max_decoded_bytes
            ),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Answer::new(400, format!("body is not a snappy block: {e}")))?;
    WriteRequest::decode(raw.as_slice())
        .map_err(|e| Answer::new(400, format!("body is not a WriteRequest: {e}")))
}

/// Keeps the metric metadata a request carries (Prometheus sends it in requests of its own).
pub fn record_metadata(metadata: &MetadataStore, req: &WriteRequest) {
    if req.metadata.is_empty() {
        return;
    }
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

/// Stores series into `db` in one commit: 204 when every sample was stored, 400 when some were
/// refused (the others stored), 500 when storage failed.
pub fn store_series(db: &Db, series: &[TimeSeries], metrics: &ReceiveMetrics) -> Answer {
    // Series are created only at commit, for samples stored: a refused sample leaves no series.
    let mut app = db.appender();
    let (mut stored, mut rejected, mut invalid) = (0u64, 0u64, 0u64);
    let mut first_reason: Option<String> = None;
    let mut names: Vec<(&str, &str)> = Vec::new();
    for (i, ts) in series.iter().enumerate() {
        // A series with invalid labels is skipped and counted; the rest of the request is stored and
        // the answer is 400 (Prometheus' `storage/remote/write_handler.go`, v2.42/v3, which skips such
        // series and counts them in `prometheus_api_remote_write_invalid_labels_samples_total`).
        if let Err(why) = series_labels(&ts.labels, &mut names) {
            invalid += (ts.samples.len() + ts.histograms.len()) as u64;
            first_reason.get_or_insert_with(|| format!("timeseries {i}: {why}"));
            continue;
        }
        if ts.samples.is_empty() && ts.histograms.is_empty() {
            continue;
        }
        let labels = Labels::from_pairs(names.iter().copied());
        let r = app.series_ref(&labels);
        for h in &ts.histograms {
            let appended = meridian_storeapi::rw_histogram::to_value(h)
                .map_err(|why| {
                    format!(
                        "timeseries {i}: invalid histogram at {}: {why}",
                        h.timestamp
                    )
                })
                .and_then(|v| match app.append_histogram(r, h.timestamp, v) {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_client_error() => Err(e.to_string()),
                    Err(e) => Err(format!("storage: {e}")),
                });
            match appended {
                Ok(()) => stored += 1,
                Err(why) if why.starts_with("storage: ") => return Answer::new(500, why),
                Err(why) => {
                    rejected += 1;
                    first_reason.get_or_insert(why);
                }
            }
        }
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
    if invalid > 0 {
        metrics
            .samples
            .get_or_create(&ResultLabel {
                result: "invalid_labels",
            })
            .inc_by(invalid);
    }
    if rejected > 0 {
        metrics
            .samples
            .get_or_create(&ResultLabel { result: "rejected" })
            .inc_by(rejected);
    }
    if rejected + invalid > 0 {
        return Answer::new(
            400,
            format!(
                "{} sample(s) refused, {stored} stored; first: {}",
                rejected + invalid,
                first_reason.unwrap_or_default()
            ),
        );
    }
    Answer::new(204, "")
}

/// A series' labels as name/value pairs sorted by name, without empty values (absent, in
/// Prometheus); why they are invalid otherwise: an invalid or duplicate label name, no metric name.
fn series_labels<'a>(
    labels: &'a [meridian_storeapi::proto::prometheus::Label],
    names: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), String> {
    names.clear();
    for l in labels {
        if !is_valid_label_name(&l.name) {
            return Err(format!("invalid label name {:?}", l.name));
        }
        if !l.value.is_empty() {
            names.push((l.name.as_str(), l.value.as_str()));
        }
    }
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("duplicate label name {:?}", w[0].0));
    }
    if !names.iter().any(|(n, _)| *n == "__name__") {
        return Err("no __name__ label".to_string());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meridian_core::{MatchType, Matcher};
    use meridian_storeapi::proto::prometheus::{Label, Sample};
    use meridian_tsdb::db::DbOptions;

    /// The TSDB's out-of-bounds counter for one reason.
    fn out_of_bounds(db: &Db, reason: &'static str) -> u64 {
        db.metrics
            .out_of_bound_samples
            .get_or_create(&meridian_tsdb::db::ReasonLabel { reason })
            .get()
    }

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

    /// A TSDB in a temporary directory (kept while the returned directory lives).
    fn open_db(opts: DbOptions) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts).unwrap();
        (dir, db)
    }

    /// The receiver's metrics, metadata store and default limits.
    fn receiver() -> (ReceiveMetrics, MetadataStore, ReceiveLimits) {
        (
            ReceiveMetrics::default(),
            MetadataStore::new(),
            ReceiveLimits::default(),
        )
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
            .samples(
                &[meridian_core::Matcher::equal("__name__", "a")],
                0,
                i64::MAX,
            )
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

    /// A far-future sample is refused as out of bounds (Prometheus' `storage.ErrOutOfBounds`, 400) and
    /// counted; the rest of the request is stored, and the head's range is not dragged into the future.
    #[test]
    fn far_future_samples_are_refused_as_out_of_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_764_892_800_000; // 2025-12-05T00:00:00Z
        let db = Db::open(
            dir.path(),
            DbOptions {
                clock: meridian_core::time::Clock::fixed(now),
                ..Default::default()
            },
        )
        .unwrap();
        let (m, md, lim) = (
            ReceiveMetrics::default(),
            MetadataStore::new(),
            ReceiveLimits::default(),
        );
        let ten_years = 10 * 365 * 24 * 3600 * 1000;
        let b = body(vec![
            (vec![("__name__", "a")], vec![(now, 1.0)]),
            (vec![("__name__", "future")], vec![(now + ten_years, 2.0)]),
            // Just inside the 10 minutes: accepted.
            (vec![("__name__", "soon")], vec![(now + 9 * 60_000, 3.0)]),
        ]);
        let a = write(&db, &md, &b, lim, &m);
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.message.contains("out of bounds"), "{a:?}");
        assert!(a.message.contains("1 sample(s) refused, 2 stored"), "{a:?}");
        let names: Vec<String> = db
            .samples(
                &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
                i64::MIN,
                i64::MAX,
            )
            .unwrap()
            .into_iter()
            .map(|(l, _)| l.get_or_empty("__name__").to_string())
            .collect();
        assert_eq!(names, vec!["a", "soon"]);
        assert_eq!(db.head_series(), 2, "the refused series was not created");
        assert_eq!(out_of_bounds(&db, "too_far_in_future"), 1);
        // Housekeeping does not move the head's valid range past now: a later sample is accepted.
        db.compact().unwrap();
        let later = body(vec![(vec![("__name__", "a")], vec![(now + 60_000, 4.0)])]);
        let a = write(&db, &md, &later, lim, &m);
        assert_eq!(a.status, 204, "{a:?}");
    }

    /// `i64::MIN` and `i64::MAX` (and anything outside years 1..=9999) are out of bounds at the door.
    #[test]
    fn timestamps_outside_the_supported_range_are_refused() {
        let (_dir, db) = open_db(DbOptions::default());
        let (m, md, lim) = receiver();
        for t in [i64::MIN, i64::MIN + 1, -62_135_596_800_001, i64::MAX] {
            let b = body(vec![(vec![("__name__", "x")], vec![(t, 1.0)])]);
            let a = write(&db, &md, &b, lim, &m);
            assert_eq!(a.status, 400, "t={t}: {a:?}");
            assert!(a.message.contains("out of bounds"), "t={t}: {a:?}");
        }
        assert_eq!(db.head_series(), 0);
        // Not only remote write: every appender refuses them.
        let mut app = db.appender();
        let err = app
            .add(&Labels::from_pairs([("__name__", "x")]), i64::MIN, 1.0)
            .unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
    }

    /// One series with invalid labels does not drop the batch: the valid series are stored, the
    /// invalid ones counted, and the answer is 400 naming the first problem (Prometheus'
    /// `storage/remote/write_handler.go`).
    #[test]
    fn invalid_series_do_not_drop_the_valid_ones() {
        let (_dir, db) = open_db(DbOptions::default());
        let (m, md, lim) = receiver();
        let b = body(vec![
            (vec![("__name__", "good1")], vec![(1000, 1.0), (2000, 2.0)]),
            (vec![("__name__", "bad"), ("a-b", "1")], vec![(1000, 1.0)]),
            (
                vec![("__name__", "dup"), ("x", "1"), ("x", "2")],
                vec![(1000, 1.0), (2000, 1.0)],
            ),
            (vec![("job", "no_name")], vec![(1000, 1.0)]),
            (vec![("__name__", "empty"), ("", "v")], vec![(1000, 1.0)]),
            (
                vec![("__name__", "good2"), ("z", "1"), ("b", "2")],
                vec![(1000, 3.0)],
            ),
        ]);
        let a = write(&db, &md, &b, lim, &m);
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.message.contains("5 sample(s) refused, 3 stored"), "{a:?}");
        assert!(
            a.message.contains("\"a-b\""),
            "names the first problem: {a:?}"
        );
        let got: Vec<(String, usize)> = db
            .samples(
                &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
                i64::MIN,
                i64::MAX,
            )
            .unwrap()
            .into_iter()
            .map(|(l, s)| (l.to_string(), s.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (r#"{__name__="good1"}"#.to_string(), 2),
                (r#"{__name__="good2", b="2", z="1"}"#.to_string(), 1),
            ]
        );
        assert_eq!(db.head_series(), 2);
        let invalid = m
            .samples
            .get_or_create(&ResultLabel {
                result: "invalid_labels",
            })
            .get();
        assert_eq!(invalid, 5);
    }

    /// Requests whose samples are all refused leave nothing in the head: no series, no memory.
    #[test]
    fn refused_requests_leave_no_series_in_the_head() {
        const H: i64 = 3600 * 1000;
        let (_dir, db) = open_db(DbOptions::default());
        let (m, md, lim) = receiver();
        // Five hours of one series, then compaction: data before 2 h is in a block, so older samples are
        // refused as too old.
        let old = body(vec![(
            vec![("__name__", "m")],
            (0..300).map(|k| (k * 60_000, 1.0)).collect(),
        )]);
        assert_eq!(write(&db, &md, &old, lim, &m).status, 204);
        assert!(!db.compact().unwrap().is_empty());
        let (series, memory) = (db.head_series(), db.head_memory_bytes());
        for n in 0..3 {
            let values: Vec<String> = (0..200).map(|i| format!("{n}-{i}")).collect();
            let b = body(
                values
                    .iter()
                    .map(|v| (vec![("__name__", "m"), ("v", v.as_str())], vec![(H, 1.0)]))
                    .collect(),
            );
            let a = write(&db, &md, &b, lim, &m);
            assert_eq!(a.status, 400, "{a:?}");
            assert!(a.message.contains("too old"), "{a:?}");
        }
        assert_eq!(db.head_series(), series);
        assert_eq!(db.head_memory_bytes(), memory);
    }

    /// Remote write 2.0 (`io.prometheus.write.v2.Request`) and unknown messages are answered 415, as the
    /// 2.0 spec requires ("Unsupported Request Content"), so a 2.0 sender falls back to 1.0 instead of
    /// having its data decoded as an empty 1.0 request and dropped.
    #[test]
    fn remote_write_2_0_messages_are_refused_with_415() {
        for ct in [
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "application/x-protobuf; proto=io.prometheus.write.v2.Request",
            "application/x-protobuf;proto=yolo",
            "application/x-protobuf;proto",
        ] {
            let a = check_headers(Some(ct), Some("snappy")).unwrap_err();
            assert_eq!(a.status, 415, "{ct}: {a:?}");
            assert!(a.message.contains("prometheus.WriteRequest"), "{ct}: {a:?}");
        }
        let a = check_headers(
            Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
            Some("snappy"),
        )
        .unwrap_err();
        assert!(
            a.message.contains("io.prometheus.write.v2.Request"),
            "{a:?}"
        );
        for ct in [
            "application/x-protobuf",
            "application/x-protobuf;proto=prometheus.WriteRequest",
            "application/x-protobuf; proto=\"prometheus.WriteRequest\"",
            "Application/X-Protobuf;Proto=prometheus.WriteRequest",
        ] {
            assert!(check_headers(Some(ct), Some("snappy")).is_ok(), "{ct}");
        }
        assert!(check_headers(None, Some("snappy")).is_ok());
    }

    #[test]
    fn metadata_requests_are_recorded() {
        use meridian_storeapi::proto::prometheus::MetricMetadata;
        use meridian_storeapi::proto::prometheus::metric_metadata::MetricType;
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
        assert_eq!(all["http_requests_total"][0].kind, "counter");
        assert_eq!(all["http_requests_total"][0].help, "Requests.");
        assert_eq!(all["queue_wait"][0].kind, "gaugehistogram");
        assert_eq!(all["queue_wait"][0].unit, "seconds");
    }
}
