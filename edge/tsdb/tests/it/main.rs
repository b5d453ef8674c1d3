//! The TSDB's integration tests, in one binary (link time and disk).

mod native_histograms;
mod promtool_blocks;
mod promtool_chunks;
