//! The local federation's demo exporter: one HTTP target per cluster exposing node-exporter,
//! kube-state-metrics and cAdvisor-shaped series for a few nodes and pods, so the dashboards' usual
//! queries (CPU, memory and disk usage per cluster) have something to show.
//!
//! Every value is a function of the wall clock and the cluster, so both replicas of an HA pair scrape
//! the same numbers (what replica deduplication expects) and counters only grow. One node of the second
//! cluster has its root filesystem 93% full, so the bundled `NodeFilesystemAlmostFull` alert fires.
//! The series carry their own `instance` label; scrape the exporter with `honor_labels: true`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

/// Nodes per cluster; each has 2 CPUs and runs `PODS_PER_NODE` pods.
pub const NODES: usize = 3;
const PODS_PER_NODE: usize = 2;
const CPUS: usize = 2;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The busy fraction of node `n` of cluster `c` (0-based): between 0.2 and 0.75.
fn busy(c: usize, n: usize) -> f64 {
    0.2 + 0.15 * n as f64 + 0.1 * c as f64
}

/// The root filesystem's used fraction of node `n` of cluster `c`; node 2 of cluster 1 is nearly full.
pub fn disk_used(c: usize, n: usize) -> f64 {
    if c == 1 && n == 2 {
        0.93
    } else {
        0.35 + 0.1 * n as f64
    }
}

/// The exposition for cluster `c` (0-based) at `now_s` seconds since the epoch.
pub fn exposition(c: usize, now_s: f64) -> String {
    let cluster = format!("c{}", c + 1);
    let mut out = String::with_capacity(8 << 10);
    let node = |n: usize| format!("{cluster}-node-{n}");
    let instance = |n: usize| format!("{}:9100", node(n));

    out.push_str("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n");
    out.push_str("# TYPE node_cpu_seconds_total counter\n");
    for n in 0..NODES {
        let b = busy(c, n);
        // Seconds since an arbitrary boot an hour before the epoch of the demo's day: counters grow.
        let up = now_s % 86_400.0 + 3_600.0;
        for cpu in 0..CPUS {
            for (mode, share) in [
                ("idle", 1.0 - b),
                ("user", b * 0.7),
                ("system", b * 0.25),
                ("iowait", b * 0.05),
            ] {
                let _ = writeln!(
                    out,
                    "node_cpu_seconds_total{{cpu=\"{cpu}\",instance=\"{}\",job=\"node-exporter\",mode=\"{mode}\"}} {:.3}",
                    instance(n),
                    up * share
                );
            }
        }
    }
    let wave = (now_s / 300.0).sin();
    out.push_str("# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.\n");
    out.push_str("# TYPE node_memory_MemTotal_bytes gauge\n");
    for n in 0..NODES {
        let _ = writeln!(
            out,
            "node_memory_MemTotal_bytes{{instance=\"{}\",job=\"node-exporter\"}} {}",
            instance(n),
            16.0 * GIB
        );
    }
    out.push_str(
        "# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.\n",
    );
    out.push_str("# TYPE node_memory_MemAvailable_bytes gauge\n");
    for n in 0..NODES {
        let used = 0.4 + 0.1 * n as f64 + 0.05 * c as f64 + 0.03 * wave;
        let _ = writeln!(
            out,
            "node_memory_MemAvailable_bytes{{instance=\"{}\",job=\"node-exporter\"}} {:.0}",
            instance(n),
            16.0 * GIB * (1.0 - used)
        );
    }
    for (name, help) in [
        ("node_filesystem_size_bytes", "Filesystem size in bytes."),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for n in 0..NODES {
            let size = 100.0 * GIB;
            let v = if name.ends_with("size_bytes") {
                size
            } else {
                size * (1.0 - disk_used(c, n))
            };
            let _ = writeln!(
                out,
                "{name}{{device=\"/dev/sda1\",fstype=\"ext4\",instance=\"{}\",job=\"node-exporter\",mountpoint=\"/\"}} {v:.0}",
                instance(n)
            );
        }
    }

    out.push_str(
        "# HELP kube_node_status_capacity The capacity for different resources of a node.\n",
    );
    out.push_str("# TYPE kube_node_status_capacity gauge\n");
    for n in 0..NODES {
        let _ = writeln!(
            out,
            "kube_node_status_capacity{{instance=\"kube-state-metrics:8080\",job=\"kube-state-metrics\",node=\"{}\",resource=\"cpu\",unit=\"core\"}} {CPUS}",
            node(n)
        );
    }
    let pods: Vec<(String, String, usize)> = (0..NODES)
        .flat_map(|n| {
            (0..PODS_PER_NODE).map(move |p| {
                let ns = if p == 0 { "shop" } else { "payments" };
                (ns.to_string(), format!("api-{n}{p}"), n)
            })
        })
        .collect();
    out.push_str("# HELP kube_pod_info Information about pod.\n# TYPE kube_pod_info gauge\n");
    for (ns, pod, n) in &pods {
        let _ = writeln!(
            out,
            "kube_pod_info{{instance=\"kube-state-metrics:8080\",job=\"kube-state-metrics\",namespace=\"{ns}\",node=\"{}\",pod=\"{pod}\"}} 1",
            node(*n)
        );
    }
    out.push_str(
        "# HELP kube_pod_status_phase The pods current phase.\n# TYPE kube_pod_status_phase gauge\n",
    );
    for (ns, pod, _) in &pods {
        for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
            let v = u8::from(phase == "Running");
            let _ = writeln!(
                out,
                "kube_pod_status_phase{{instance=\"kube-state-metrics:8080\",job=\"kube-state-metrics\",namespace=\"{ns}\",phase=\"{phase}\",pod=\"{pod}\"}} {v}"
            );
        }
    }
    out.push_str("# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n# TYPE container_cpu_usage_seconds_total counter\n");
    for (i, (ns, pod, n)) in pods.iter().enumerate() {
        let up = now_s % 86_400.0 + 3_600.0;
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{container=\"api\",instance=\"{}\",job=\"cadvisor\",namespace=\"{ns}\",pod=\"{pod}\"}} {:.3}",
            instance(*n),
            up * (0.05 + 0.04 * i as f64)
        );
    }
    out.push_str("# HELP container_memory_working_set_bytes Current working set in bytes.\n# TYPE container_memory_working_set_bytes gauge\n");
    for (i, (ns, pod, n)) in pods.iter().enumerate() {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{container=\"api\",instance=\"{}\",job=\"cadvisor\",namespace=\"{ns}\",pod=\"{pod}\"}} {:.0}",
            instance(*n),
            (200.0 + 50.0 * i as f64 + 20.0 * wave) * 1024.0 * 1024.0
        );
    }
    out
}

/// A running exporter for one cluster.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Serves cluster `cluster`'s series on `bind` at `/metrics`.
    pub async fn start(bind: SocketAddr, cluster: usize) -> std::io::Result<Exporter> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    exposition(cluster, now),
                )
            }),
        );
        let (stop, task) = crate::federation::serve(listener, app);
        Ok(Exporter { addr, stop, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_the_edge_parser_and_counters_grow() {
        let a = exposition(1, 1_000_000.0);
        let b = exposition(1, 1_000_060.0);
        let parse = |text: &str| {
            let mut out = std::collections::BTreeMap::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                out.insert(series.to_string(), value.parse::<f64>().expect("value"));
            }
            out
        };
        let (pa, pb) = (parse(&a), parse(&b));
        assert_eq!(pa.len(), pb.len());
        assert!(pa.len() > 50, "{} series", pa.len());
        for (k, v) in &pa {
            if k.starts_with("node_cpu_seconds_total") || k.starts_with("container_cpu") {
                assert!(pb[k] > *v, "{k} did not grow");
            }
        }
        // The node the alert is about.
        let avail = pa
            .iter()
            .find(|(k, _)| k.starts_with("node_filesystem_avail_bytes") && k.contains("c2-node-2"))
            .map(|(_, v)| *v)
            .expect("c2-node-2 filesystem");
        assert!((avail / (100.0 * GIB) - 0.07).abs() < 1e-9);
    }
}
