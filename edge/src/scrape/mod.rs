//! Scraping: the exposition-format parser so far; the scrape loop, relabeling and service discovery
//! follow with the ingestion issue.

pub mod parse;
