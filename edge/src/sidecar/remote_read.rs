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
use prost::Message;

use meridian_storeapi::proto::prometheus::{
    ChunkedReadResponse, LabelMatcher, Query, ReadHints, ReadRequest, read_request::ResponseType,
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
