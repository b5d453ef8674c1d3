//! Receivers (`meridian-edge run` in receive mode) as processes, for the receive tests and the
//! ingest benchmark.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_core::labels::Labels;
use meridian_core::{MatchType, Matcher};
use meridian_storeapi::proto::prometheus as prompb;
use meridian_testkit::{ChildGuard, free_port, http, http_get, spawn_announcing};
use meridian_tsdb::db::{Db, DbOptions};

fn bin(name: &str) -> PathBuf {
    let p = crate::served::bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` (the test command does)",
        p.display()
    );
    p
}

/// One receiver process: its ports, data directory and flags, restartable.
#[derive(Debug)]
pub struct Node {
    pub child: Option<ChildGuard>,
    pub http: String,
    pub grpc: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    pub flags: Vec<String>,
    /// Started with `--receive.local-endpoint` (its gRPC address): a receiver. Without, a plain
    /// edge receiving remote write into its own TSDB.
    pub local_endpoint: bool,
}

impl Node {
    pub fn new(dir: &Path, i: usize, flags: Vec<String>) -> Node {
        let config = dir.join("edge.yml");
        std::fs::write(&config, "global: {}\n").unwrap_or_else(|e| panic!("{e}"));
        Node {
            child: None,
            http: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            data: dir.join(format!("receiver-{i}")),
            log: dir.join(format!("receiver-{i}.log")),
            config,
            flags,
            local_endpoint: true,
        }
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new(bin("meridian-edge"));
        cmd.arg("run")
            .arg(format!("--config.file={}", self.config.display()))
            .arg(format!("--tsdb.path={}", self.data.display()))
            .arg(format!("--http-address={}", self.http))
            .arg(format!("--grpc-address={}", self.grpc))
            .arg("--config.no-watch")
            .arg("--log.level=info,meridian_edge::receive=debug")
            .args(&self.flags);
        if self.local_endpoint {
            cmd.arg(format!("--receive.local-endpoint={}", self.grpc));
        }
        let (child, _) =
            spawn_announcing(cmd, &self.log, &["http listening on", "grpc listening on"]);
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            c.signal("KILL");
            let mut c = c;
            let _ = c.0.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.signal("TERM");
            let status = c.0.wait().unwrap_or_else(|e| panic!("{e}"));
            assert!(
                status.success(),
                "receiver exited with {status}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// A metric of its `/metrics`, summed over the lines containing `filter`.
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        meridian_testkit::metric_sum(&http_get(&self.http, "/metrics").text(), name, filter)
    }

    /// Every sample of a tenant's TSDB (the node stopped), keyed as `promtool tsdb dump` prints.
    pub fn samples(&self, tenant: &str) -> HashMap<(String, i64), f64> {
        let dir = self.data.join("tenants").join(tenant);
        let db = Db::open(&dir, DbOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = HashMap::new();
        let all =
            [Matcher::new(MatchType::Regex, "__name__", ".+").unwrap_or_else(|e| panic!("{e}"))];
        for (l, ss) in db
            .samples(&all, i64::MIN, i64::MAX)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            let key = l.to_string();
            for s in ss {
                out.insert((key.clone(), s.t), s.v);
            }
        }
        out
    }
}

pub fn hashring(endpoints: &[&str]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[{{\"hashring\": \"default\", \"endpoints\": [{}]}}]\n",
        list.join(", ")
    )
}

/// A remote-write 1.0 body.
pub fn body(series: &[(Labels, Vec<(i64, f64)>)]) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: series
            .iter()
            .map(|(l, ss)| prompb::TimeSeries {
                labels: l
                    .iter()
                    .map(|x| prompb::Label {
                        name: x.name.to_owned(),
                        value: x.value.to_owned(),
                    })
                    .collect(),
                samples: ss
                    .iter()
                    .map(|&(t, v)| prompb::Sample {
                        value: v,
                        timestamp: t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    meridian_edge::receive::encode_body(&req).unwrap_or_else(|e| panic!("{e}"))
}

/// POSTs a body to `/api/v1/receive` with extra headers; the status and text.
pub fn post(addr: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    h.extend_from_slice(headers);
    let r = http("POST", addr, "/api/v1/receive", &h, body).unwrap_or_else(|e| panic!("{e}"));
    (r.status, r.text())
}
