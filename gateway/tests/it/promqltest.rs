//! PromQL conformance: Meridian's own promqltest scripts (`tests/promql/*.test`) must all pass; when
//! Prometheus' upstream scripts are available (`MERIDIAN_PROMQLTEST_DIR`, or the workplace's
//! `../shared/conformance/promqltest/main`), every applicable upstream case runs as well and the
//! report (run, passed, failed, skipped with reasons) is printed. Run it alone with
//! `cargo run -p meridian-gateway -- promqltest <dir>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use meridian_gateway::promql::promqltest::{Report, run_dir};

fn print(name: &str, r: &Report) {
    println!("{name}:\n{}", r.summary(usize::MAX, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_scripts_pass() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/promql");
    let r = run_dir(&dir).await.unwrap();
    print("meridian", &r);
    assert!(r.run >= 30, "only {} cases ran", r.run);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert!(r.skipped.is_empty(), "own scripts skip nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_scripts() {
    let dir = std::env::var_os("MERIDIAN_PROMQLTEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/promqltest/main")
        });
    if !dir.is_dir() {
        println!(
            "upstream promqltest scripts not found at {} (set MERIDIAN_PROMQLTEST_DIR); not run",
            dir.display()
        );
        return;
    }
    let r = run_dir(&dir).await.unwrap();
    print("upstream", &r);
    assert!(r.run > 500, "only {} upstream cases ran", r.run);
}
