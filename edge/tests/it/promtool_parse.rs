//! Our exposition parser against Prometheus' own: the same OpenMetrics body (tricky names, escapes,
//! special floats, fractional timestamps, exemplars) is turned into blocks by
//! `promtool tsdb create-blocks-from openmetrics` and dumped, and parsed by us; the samples must be equal,
//! bit for bit (NaN included, which Go parses to its own NaN bits).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;

use meridian_core::Labels;
use meridian_edge::scrape::parse::{Entry, Format, Parser};

#[test]
fn parser_agrees_with_prometheus() {
    let Some(promtool) = meridian_testkit::require("promtool", "apt-get install prometheus") else {
        return;
    };
    let t0 = 1_700_006_400i64;
    let values = [
        "0",
        "-0",
        "1",
        "1.5",
        "-2.25e-3",
        "1e+300",
        "NaN",
        "+Inf",
        "-Inf",
        "123456789012345",
        "0.1",
        "7e-310",
    ];
    let label_values = [
        "/a,b=c}",
        "x\\\"y",
        "back\\\\slash",
        "new\\nline",
        "ü-ß",
        "",
        " spaced ",
    ];
    let mut om = String::new();
    writeln!(om, "# TYPE job:requests:rate5m gauge").unwrap();
    writeln!(
        om,
        "# HELP job:requests:rate5m A \\\"recording\\\" rule's output."
    )
    .unwrap();
    for (i, lv) in label_values.iter().enumerate() {
        for (k, v) in values.iter().enumerate() {
            // Fractional seconds, including ones not exact in binary.
            let ts = format!("{}.{:03}", t0 + k as i64 * 15, (i * 137 + k * 7) % 1000);
            writeln!(
                om,
                "job:requests:rate5m{{path=\"{lv}\",i=\"{i}\"}} {v} {ts}"
            )
            .unwrap();
        }
    }
    writeln!(om, "# TYPE rpc_latency histogram").unwrap();
    for (b, le) in ["0.005", "0.1", "+Inf"].iter().enumerate() {
        for k in 0..5i64 {
            writeln!(
                om,
                "rpc_latency_bucket{{le=\"{le}\"}} {} {} # {{trace_id=\"abc{k}\"}} 0.04 {}.5",
                (b as i64 + 1) * k,
                t0 + k * 15,
                t0 + k * 15
            )
            .unwrap();
        }
    }
    om.push_str("# EOF\n");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.om");
    std::fs::write(&input, &om).unwrap();
    let out = dir.path().join("blocks");
    meridian_testkit::run_ok(
        Command::new(&promtool)
            .arg("tsdb")
            .arg("create-blocks-from")
            .arg("openmetrics")
            .arg(&input)
            .arg(&out),
    );
    let theirs: HashMap<(String, i64), u64> = meridian_testkit::promtool_dump(&promtool, &out)
        .into_iter()
        .map(|(k, v)| (k, v.to_bits()))
        .collect();

    let mut ours: HashMap<(String, i64), u64> = HashMap::new();
    for e in Parser::new(&om, Format::OpenMetrics) {
        if let Entry::Sample {
            name,
            labels,
            value,
            timestamp,
            ..
        } = e.unwrap()
        {
            let mut pairs: Vec<(String, String)> = labels
                .iter()
                .map(|(n, v)| (n.to_owned(), v.into_owned()))
                .collect();
            pairs.push(("__name__".into(), name.to_owned()));
            ours.insert(
                (Labels::from_pairs(pairs).to_string(), timestamp.unwrap()),
                value.to_bits(),
            );
        }
    }
    assert_eq!(ours.len(), theirs.len(), "sample counts differ");
    for (k, v) in &theirs {
        let mine = ours
            .get(k)
            .unwrap_or_else(|| panic!("Prometheus has {k:?}, we do not"));
        // Go's %g prints every NaN as "NaN": compare NaN-ness there, bits elsewhere.
        if f64::from_bits(*v).is_nan() {
            assert_eq!(*mine, meridian_edge::scrape::parse::GO_NAN_BITS, "{k:?}");
        } else {
            assert_eq!(
                *mine,
                *v,
                "{k:?}: ours {} theirs {}",
                f64::from_bits(*mine),
                f64::from_bits(*v)
            );
        }
    }
}
