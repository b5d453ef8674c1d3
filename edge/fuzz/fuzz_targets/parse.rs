//! The exposition parser on arbitrary bytes, in both formats: it must end (each step consumes input),
//! never panic, and every sample it returns must have a valid metric name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_edge::scrape::parse::{Entry, Format, Parser};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Text, Format::OpenMetrics] {
        let mut steps = 0usize;
        for entry in Parser::new(body, format) {
            steps += 1;
            assert!(steps <= body.len() + 1, "the parser stopped advancing");
            if let Ok(Entry::Sample { name, labels, .. }) = entry {
                assert!(!name.is_empty());
                // Iterating the labels re-parses them: it must agree with the validated count.
                assert_eq!(labels.iter().count(), labels.len());
            }
        }
    }
});
