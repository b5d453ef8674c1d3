//! Error kinds shared by every Meridian component, mapped once — here — to gRPC status codes and to the
//! Prometheus HTTP API's `errorType`s and status codes.

use std::fmt;
use std::sync::Arc;

/// What kind of failure, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed: bad matcher, time, PromQL, parameter.
    BadData,
    /// A resource (label name, rule group, ...) does not exist.
    NotFound,
    /// The request is valid but cannot be evaluated (e.g. many-to-many matching).
    Execution,
    /// A per-request limit (series, samples, bytes, points) was exceeded.
    LimitExceeded,
    /// The deadline passed.
    Timeout,
    /// The caller went away or cancelled.
    Canceled,
    /// A dependency (a store, the bucket) cannot be reached now; retrying may help.
    Unavailable,
    /// The write conflicts with what is stored (out of order, duplicate, too old): retrying the same
    /// request cannot succeed, and its valid part was stored (Thanos Receive's conflict).
    Conflict,
    /// The method is not served by this component.
    Unimplemented,
    /// A bug or an unexpected storage failure.
    Internal,
}

impl ErrorKind {
    /// The gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadData => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Execution => tonic::Code::FailedPrecondition,
            ErrorKind::LimitExceeded => tonic::Code::ResourceExhausted,
            ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Canceled => tonic::Code::Cancelled,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Conflict => tonic::Code::AlreadyExists,
            ErrorKind::Unimplemented => tonic::Code::Unimplemented,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    /// The kind a gRPC status code stands for (the inverse of [`ErrorKind::grpc_code`]; codes without a kind
    /// of their own are internal errors).
    pub fn from_grpc_code(code: tonic::Code) -> ErrorKind {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorKind::BadData,
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::FailedPrecondition => ErrorKind::Execution,
            tonic::Code::ResourceExhausted => ErrorKind::LimitExceeded,
            tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
            tonic::Code::Cancelled => ErrorKind::Canceled,
            tonic::Code::Unavailable => ErrorKind::Unavailable,
            tonic::Code::AlreadyExists => ErrorKind::Conflict,
            tonic::Code::Unimplemented => ErrorKind::Unimplemented,
            _ => ErrorKind::Internal,
        }
    }

    /// The Prometheus HTTP API `errorType`.
    pub fn prometheus_error_type(self) -> &'static str {
        match self {
            ErrorKind::BadData | ErrorKind::Conflict => "bad_data",
            ErrorKind::NotFound => "not_found",
            // Prometheus reports limits such as "query processing would load too many samples" as execution
            // errors.
            ErrorKind::Execution | ErrorKind::LimitExceeded => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unimplemented | ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status the Prometheus API answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadData => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Execution | ErrorKind::LimitExceeded => 422,
            ErrorKind::Timeout | ErrorKind::Unavailable => 503,
            ErrorKind::Canceled => 499,
            ErrorKind::Unimplemented | ErrorKind::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prometheus_error_type())
    }
}

/// An error with its kind, a message that names the offending input, and the error that caused it
/// (kept as the `source()` chain, as quickwit's storage errors keep theirs).
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source` (the message says what failed; the source says why).
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadData, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn limit(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::LimitExceeded, message)
    }

    /// Prefixes the message with context, keeping the kind and the source.
    pub fn context(self, ctx: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{ctx}: {}", self.message),
            source: self.source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Two errors are equal when their kinds and messages are (the source is what caused them, already
/// told by the message).
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

/// Most bytes of an error message sent as `grpc-message`: a longer header would exceed a client's
/// header list limit and reach it as a different error (RESOURCE_EXHAUSTED) than the one meant.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 4096;

/// `s` cut to at most `max` bytes on a character boundary, saying how long it was when cut. For
/// quoting user input in error messages.
pub fn excerpt(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &s[..end], s.len()))
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        tonic::Status::new(
            e.kind.grpc_code(),
            excerpt(&e.message, MAX_GRPC_MESSAGE_BYTES),
        )
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::new(ErrorKind::from_grpc_code(s.code()), s.message().to_owned())
    }
}

impl From<crate::matcher::MatcherError> for Error {
    fn from(e: crate::matcher::MatcherError) -> Error {
        Error::bad_data(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A configuration that could not be used. The message names the field or value, and a line and column
/// where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or "config" for text).
    pub source_name: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_chain_is_kept_through_context() {
        use std::error::Error as _;
        let io = std::io::Error::other("disk on fire");
        let e = Error::with_source(ErrorKind::Internal, "reading block 01H", io).context("select");
        assert_eq!(e.to_string(), "select: reading block 01H");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(
            e.source().map(ToString::to_string),
            Some("disk on fire".into())
        );
        assert!(Error::bad_data("x").source().is_none());
    }

    #[test]
    fn grpc_mapping_roundtrips() {
        for k in [
            ErrorKind::BadData,
            ErrorKind::NotFound,
            ErrorKind::Execution,
            ErrorKind::LimitExceeded,
            ErrorKind::Timeout,
            ErrorKind::Canceled,
            ErrorKind::Unavailable,
            ErrorKind::Conflict,
            ErrorKind::Unimplemented,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_grpc_code(k.grpc_code()), k);
            let s: tonic::Status = Error::new(k, "boom").into();
            assert_eq!(Error::from(s), Error::new(k, "boom"));
        }
        assert_eq!(ErrorKind::Timeout.http_status(), 503);
        let long: tonic::Status = Error::bad_data("é".repeat(1 << 19)).into();
        assert!(long.message().len() <= MAX_GRPC_MESSAGE_BYTES + 64);
        assert!(
            long.message().ends_with("(1048576 bytes in all)"),
            "{}",
            &long.message()[4000..]
        );
        assert_eq!(ErrorKind::Canceled.prometheus_error_type(), "canceled");
    }
}
