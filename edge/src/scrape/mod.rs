//! Scraping: the exposition-format parser, targets from discovery, the HTTP client, per-target scrape
//! loops and the per-job pools that run them.

pub mod http;
pub mod manager;
pub mod parse;
pub mod protobuf;
pub mod scrape_loop;
pub mod target;

pub use manager::{ScrapeManager, TargetsSnapshot};
