//! Meridian core: the data model and formats every Meridian component shares, with no role logic.
//!
//! - The model: [`labels`], [`matcher`] (with Go's regular-expression rules), [`sample`], and
//!   [`series`], the seam between a store of series and whatever serves it.
//! - Codecs and rules: [`chunkenc`] (Prometheus' XOR chunks), [`relabel`].
//! - Formats: [`promfmt`] (the one duration grammar and the one byte-size parser), [`time`]
//!   (milliseconds, the injectable clock, RFC 3339), [`targetgroup`] (target groups and `file_sd`).
//! - [`error`]: the one error-kind table, mapped to gRPC codes and Prometheus `errorType`s.
//! - [`net`]: DNS; [`process_metrics`]: the `process_*` metrics; [`runtime`]: owning background
//!   tasks with a bounded drain.
//!
//! TLS lives in `meridian-pki`, the StoreAPI in `meridian-storeapi`, the TSDB in `meridian-tsdb`.

pub mod chunkenc;
pub mod error;
pub mod fswatch;
pub mod histogram;
pub mod http_config;
pub mod labels;
pub mod matcher;
pub mod net;
pub mod process_metrics;
pub mod promfmt;
pub mod relabel;
pub mod runtime;
pub mod sample;
pub mod series;
pub mod targetgroup;
pub mod time;

pub use labels::{Labels, LabelsBuilder};
pub use matcher::{MatchType, Matcher};
pub use sample::Sample;
