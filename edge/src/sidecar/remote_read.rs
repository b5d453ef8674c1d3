//! Prometheus remote read as the sidecar uses it (`POST /api/v1/read`): the request, and the
//! `STREAMED_XOR_CHUNKS` answer read frame by frame.
//!
//! A streamed answer (`Content-Type: application/x-streamed-protobuf;
//! proto=prometheus.ChunkedReadResponse`, no content encoding) is a sequence of frames: the message
//! size as a uvarint, the CRC32C (Castagnoli) of the message as 4 big-endian bytes, then the
//! `ChunkedReadResponse` (Prometheus v2.42 `storage/remote/chunked.go`). Prometheus bounds a frame by
//! `--storage.remote.read-max-bytes-in-frame` (1 MiB); one series' chunk can still exceed it, so the
//! reader allows up to [`MAX_FRAME`].

use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Limited};
use prost::Message;

use super::prom::PromClient;
use meridian_core::chunkenc::XorChunk;
use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::series::SourceChunk;
use meridian_storeapi::proto::prometheus::{
    ChunkedReadResponse, LabelMatcher, Query, ReadHints, ReadRequest, ReadResponse,
    chunk::Encoding, label_matcher::Type as MatcherType, read_request::ResponseType,
};

/// The largest frame accepted.
pub const MAX_FRAME: u64 = 64 << 20;

/// The headers of a remote-read request (as Thanos' sidecar and Prometheus' own client send them).
pub const REQUEST_HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

/// The `Content-Type` of a streamed answer.
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("remote read frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(u64),
    #[error("remote read frame size is not a valid uvarint")]
    BadSize,
    #[error("remote read frame checksum mismatch: header {header:#010x}, message {computed:#010x}")]
    Checksum { header: u32, computed: u32 },
    #[error("remote read frame is not a ChunkedReadResponse: {0}")]
    Decode(String),
    #[error("remote read answer ends inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// The snappy-compressed body of a request for one query, accepting streamed chunks first and
/// samples as the fallback.
pub fn request_body(
    matchers: Vec<LabelMatcher>,
    start_ms: i64,
    end_ms: i64,
    hints: Option<ReadHints>,
) -> Result<Vec<u8>, snap::Error> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start_ms,
            end_timestamp_ms: end_ms,
            matchers,
            hints,
        }],
        accepted_response_types: vec![
            ResponseType::StreamedXorChunks as i32,
            ResponseType::Samples as i32,
        ],
    };
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

/// Reads frames out of a streamed answer as its bytes arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<ChunkedReadResponse>, FrameError> {
        let mut size = 0u64;
        let mut head = 0usize;
        loop {
            let Some(b) = self.buf.get(head) else {
                return Ok(None);
            };
            if head == 9 && *b > 1 {
                return Err(FrameError::BadSize);
            }
            size |= u64::from(b & 0x7f) << (7 * head);
            head += 1;
            if b & 0x80 == 0 {
                break;
            }
            if head == 10 {
                return Err(FrameError::BadSize);
            }
        }
        if size > MAX_FRAME {
            return Err(FrameError::TooLarge(size));
        }
        // Bounded by MAX_FRAME above.
        let total = head + 4 + size as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(head);
        let header = self.buf.get_u32();
        let msg = self.buf.split_to(size as usize);
        let computed = crc32c::crc32c(&msg);
        if computed != header {
            return Err(FrameError::Checksum { header, computed });
        }
        ChunkedReadResponse::decode(msg.freeze())
            .map(Some)
            .map_err(|e| FrameError::Decode(e.to_string()))
    }

    /// Checks that the answer ended between frames.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }
}

/// Chunks made of a `SAMPLES` answer hold up to this many samples (Prometheus' head chunk size).
const SAMPLES_PER_CHUNK: u16 = 120;

/// The series a remote read answered: labels as Prometheus gives them (its external labels added),
/// and their chunks in time order. A streamed answer's chunks are passed on as they came; a
/// `SAMPLES` answer (a Prometheus that does not stream) is cut into XOR chunks here.
pub type ReadSeries = Vec<(Labels, Vec<SourceChunk>)>;

/// Reads the series `matchers` select in `[start, end]` from the Prometheus behind `client`
/// (`POST /api/v1/read`), keeping at most `max_bytes` of answer.
pub async fn read(
    client: &PromClient,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    hints: Option<ReadHints>,
    max_bytes: usize,
) -> Result<ReadSeries, Error> {
    let url = client.url("/api/v1/read");
    let proto = matchers.iter().map(to_prompb).collect();
    let body = request_body(proto, start, end, hints)
        .map_err(|e| Error::internal(format!("remote read request: {e}")))?;
    let resp = client
        .request(
            http::Method::POST,
            "/api/v1/read",
            &REQUEST_HEADERS,
            body.into(),
        )
        .await
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("POST {url}: {e}")))?;
    let status = resp.status();
    let streamed = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == STREAMED_CONTENT_TYPE.as_bytes());
    let mut body = resp.into_body();
    if status != http::StatusCode::OK {
        let text = Limited::new(body, 512)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let kind = if status.is_server_error() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Internal
        };
        return Err(Error::new(
            kind,
            format!("POST {url}: status {status}: {}", text.trim()),
        ));
    }
    let too_large = || {
        Error::limit(format!(
            "POST {url}: the remote read answer exceeds {max_bytes} bytes (--prometheus.remote-read.max-bytes)"
        ))
    };
    let failed =
        |e: &dyn std::fmt::Display| Error::new(ErrorKind::Unavailable, format!("POST {url}: {e}"));
    if !streamed {
        let raw = Limited::new(body, max_bytes)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        return samples_answer(&raw, max_bytes).map_err(|e| match e {
            None => too_large(),
            Some(e) => failed(&e),
        });
    }
    let mut reader = FrameReader::default();
    let mut out = ReadSeries::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > max_bytes {
            return Err(too_large());
        }
        reader.push(&data);
        while let Some(f) = reader.next_frame().map_err(|e| failed(&e))? {
            for s in f.chunked_series {
                let labels = Labels::from_pairs(
                    s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                );
                let mut chunks = Vec::with_capacity(s.chunks.len());
                for c in s.chunks {
                    if c.r#type != Encoding::Xor as i32 {
                        return Err(Error::new(
                            ErrorKind::Unimplemented,
                            format!(
                                "POST {url}: series {labels} has a chunk of encoding {}; native histograms are not supported yet",
                                c.r#type
                            ),
                        ));
                    }
                    chunks.push(SourceChunk {
                        encoding: meridian_core::chunkenc::Encoding::Xor,
                        min_time: c.min_time_ms,
                        max_time: c.max_time_ms,
                        data: c.data,
                    });
                }
                // A series larger than a frame continues in the next one.
                match out.last_mut() {
                    Some((last, cs)) if *last == labels => cs.extend(chunks),
                    _ => out.push((labels, chunks)),
                }
            }
        }
    }
    reader.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

/// The series of a snappy `ReadResponse` with samples, cut into XOR chunks. `Err(None)`: it
/// decompresses to more than `max_bytes`.
fn samples_answer(raw: &[u8], max_bytes: usize) -> Result<ReadSeries, Option<String>> {
    let len = snap::raw::decompress_len(raw).map_err(|e| Some(format!("snappy: {e}")))?;
    if len > max_bytes {
        return Err(None);
    }
    let plain = snap::raw::Decoder::new()
        .decompress_vec(raw)
        .map_err(|e| Some(format!("snappy: {e}")))?;
    let resp = ReadResponse::decode(plain.as_slice())
        .map_err(|e| Some(format!("not a ReadResponse: {e}")))?;
    let mut out = ReadSeries::new();
    for ts in resp.results.into_iter().flat_map(|r| r.timeseries) {
        let labels = Labels::from_pairs(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        let mut chunks = Vec::new();
        let mut cur: Option<(XorChunk, i64)> = None;
        for smp in &ts.samples {
            let (c, _) = cur.get_or_insert_with(|| (XorChunk::new(), smp.timestamp));
            c.append(smp.timestamp, smp.value)
                .map_err(|e| Some(format!("series {labels}: {e}")))?;
            if c.num_samples() >= SAMPLES_PER_CHUNK {
                chunks.extend(cur.take().map(finish_chunk));
            }
        }
        chunks.extend(cur.take().map(finish_chunk));
        if !chunks.is_empty() {
            out.push((labels, chunks));
        }
    }
    Ok(out)
}

fn finish_chunk((c, min_time): (XorChunk, i64)) -> SourceChunk {
    SourceChunk {
        encoding: meridian_core::chunkenc::Encoding::Xor,
        min_time,
        max_time: c.last_t(),
        data: c.into_bytes().into(),
    }
}

/// A matcher as remote read carries it.
pub fn to_prompb(m: &Matcher) -> LabelMatcher {
    let r#type = match m.kind() {
        MatchType::Equal => MatcherType::Eq,
        MatchType::NotEqual => MatcherType::Neq,
        MatchType::Regex => MatcherType::Re,
        MatchType::NotRegex => MatcherType::Nre,
    };
    LabelMatcher {
        r#type: r#type as i32,
        name: m.name().to_owned(),
        value: m.value().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use meridian_storeapi::proto::prometheus::{ChunkedSeries, Label};

    fn frame(msg: &ChunkedReadResponse) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = Vec::new();
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn msg(i: i64) -> ChunkedReadResponse {
        ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries {
                labels: vec![Label {
                    name: "i".into(),
                    value: "x".repeat(i as usize * 100),
                }],
                chunks: Vec::new(),
            }],
            query_index: i,
        }
    }

    #[test]
    fn frames_are_read_whatever_the_byte_boundaries() {
        let stream: Vec<u8> = (0..4).flat_map(|i| frame(&msg(i))).collect();
        for step in [1, 3, 7, 150, stream.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                r.push(piece);
                while let Some(m) = r.next_frame().unwrap() {
                    got.push(m);
                }
            }
            r.finish().unwrap();
            assert_eq!(got, (0..4).map(msg).collect::<Vec<_>>(), "step {step}");
        }
    }

    #[test]
    fn bad_frames_are_refused_by_what_is_wrong() {
        let mut bad = frame(&msg(1));
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut r = FrameReader::default();
        r.push(&bad);
        assert!(matches!(r.next_frame(), Err(FrameError::Checksum { .. })));
        let mut r = FrameReader::default();
        let mut huge = Vec::new();
        prost::encoding::encode_varint(MAX_FRAME + 1, &mut huge);
        r.push(&huge);
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge(MAX_FRAME + 1)));
        let mut r = FrameReader::default();
        r.push(&[0xff; 11]);
        assert_eq!(r.next_frame(), Err(FrameError::BadSize));
        let mut r = FrameReader::default();
        r.push(&frame(&msg(2))[..20]);
        assert_eq!(r.next_frame(), Ok(None));
        assert_eq!(r.finish(), Err(FrameError::Truncated(20)));
    }
}
