//! Native histograms as remote write 1.0 messages, for the tests that send them.

use meridian_storeapi::proto::prometheus as prom;

/// Bucket spans from `(offset, length)` pairs.
pub fn spans(v: &[(i32, u32)]) -> Vec<prom::BucketSpan> {
    v.iter()
        .map(|&(offset, length)| prom::BucketSpan { offset, length })
        .collect()
}

/// The spatial deltas (first bucket absolute, then differences) of absolute bucket counts.
pub fn deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    abs.iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect()
}

/// Builds the native-histogram test exporter (`integration/exporter-go`, on Debian's Prometheus Go
/// client library) into `out`; `None` when Go or the library is missing outside CI.
pub fn build_go_exporter(out: &std::path::Path) -> Option<std::path::PathBuf> {
    let go = meridian_testkit::require("go", "apt-get install golang-go")?;
    let gopath = std::path::Path::new("/usr/share/gocode");
    if !gopath
        .join("src/github.com/prometheus/client_golang/prometheus")
        .is_dir()
    {
        let msg = "the Prometheus Go client library is missing (install: apt-get install golang-github-prometheus-client-golang-dev)";
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("CI=true and a required component is missing: {msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("exporter-go/main.go");
    let bin = out.join("exporter-go");
    let built = std::process::Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", out.join("gocache"))
        .output()
        .unwrap_or_else(|e| panic!("go build: {e}"));
    assert!(
        built.status.success(),
        "go build of the test exporter: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(bin)
}
