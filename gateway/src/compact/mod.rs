//! The compactor (`meridian-gateway compact`, issue 29): what Thanos' compactor does to a bucket —
//! compaction of each stream's blocks into larger ones, offline deduplication, downsampling,
//! retention and marks — as Thanos v0.25.1 plans and names it, so a bucket can be shared with Thanos.
//!
//! - [`plan`]: the streams (Thanos' group key) and which blocks of a stream compact next;
//! - [`merge`]: a plan's blocks merged into one (chunks copied where they do not overlap, vertical
//!   compaction and offline dedup where they do);
//! - [`downsample`]: 5 m and 1 h aggregates in Thanos' chunk format;
//! - [`run`]: one pass over the bucket (garbage, compaction, downsampling, retention, deletion);
//! - [`lease`]: one compactor at a time per bucket (and selector shard);
//! - [`metrics`]; [`args`]: the subcommand's flags and its process.

pub mod args;
pub mod downsample;
pub mod lease;
pub mod merge;
pub mod metrics;
pub mod plan;
pub mod run;
