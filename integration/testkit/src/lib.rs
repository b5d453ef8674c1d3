//! Test support shared by every crate's tests.
//!
//! Real components (promtool, Prometheus, nginx, dnsmasq, Alertmanager, moto) are located with
//! [`require`]: under `CI=true` a missing component fails the test; elsewhere the test is skipped with a
//! line saying how to install it. Servers bind to 127.0.0.1 on free ports and are stopped by pid
//! ([`ChildGuard`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;

/// Whether the suite runs in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Locates a real component. `install` says how to get it (printed when it is missing).
///
/// Under `CI=true` a missing component panics, failing the test; otherwise `None` is returned after
/// printing a `SKIPPED` line, and the caller returns early.
pub fn require(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let msg = format!("{name} not found on PATH (install: {install})");
    if in_ci() {
        panic!("CI=true and a required component is missing: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests that start servers at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Kills and reaps a child process when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs `promtool tsdb dump` on a data directory and returns every sample, keyed by the label set as Go
/// prints it and the timestamp. Values are parsed from Go's `%g`; every NaN (stale markers included)
/// comes back as `f64::NAN`, since `%g` prints them all alike. Panics on a repeated sample.
pub fn promtool_dump(promtool: &Path, dir: &Path) -> std::collections::HashMap<(String, i64), f64> {
    // promtool 2.42 opens the directory as a Prometheus data directory, which always has a WAL.
    std::fs::create_dir_all(dir.join("wal"))
        .unwrap_or_else(|e| panic!("creating {}/wal: {e}", dir.display()));
    let out = run_ok(
        std::process::Command::new(promtool)
            .arg("tsdb")
            .arg("dump")
            .arg(dir),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(ts), Some(v), Some(labels)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("unexpected dump line {line:?}");
        };
        let ts: i64 = ts
            .parse()
            .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            x => x
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if m.insert((labels.to_owned(), ts), v).is_some() {
            panic!("duplicate sample in dump: {line}");
        }
    }
    m
}
