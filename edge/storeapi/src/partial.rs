//! The partial-response strategy of a StoreAPI request (Thanos' `partial_response_strategy`, with
//! `partial_response_disabled` as its older spelling): what a store that fans out does when one of its
//! stores cannot answer.

use crate::proto::thanos as pb;

/// What happens when a store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialResponse {
    /// Answer from the other stores, with a warning naming the store and the reason.
    #[default]
    Warn,
    /// Fail the query.
    Abort,
}

impl PartialResponse {
    /// The strategy a StoreAPI request asks for (`partial_response_disabled` is the older spelling).
    pub fn from_request(disabled: bool, strategy: i32) -> PartialResponse {
        if disabled || strategy == pb::PartialResponseStrategy::Abort as i32 {
            PartialResponse::Abort
        } else {
            PartialResponse::Warn
        }
    }

    /// The StoreAPI enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            PartialResponse::Warn => pb::PartialResponseStrategy::Warn as i32,
            PartialResponse::Abort => pb::PartialResponseStrategy::Abort as i32,
        }
    }
}

impl std::str::FromStr for PartialResponse {
    type Err = String;

    /// `warn`/`true` or `abort`/`false` (Thanos' `--query.partial-response` is a boolean).
    fn from_str(s: &str) -> Result<PartialResponse, String> {
        match s {
            "warn" | "true" => Ok(PartialResponse::Warn),
            "abort" | "false" => Ok(PartialResponse::Abort),
            other => Err(format!(
                "partial response {other:?}: expected warn (true) or abort (false)"
            )),
        }
    }
}
