//! The standard `process_*` metrics every Prometheus client library exports, for dashboards and the
//! Prometheus/Thanos mixins: CPU, memory, file descriptors and start time of this process; and this
//! build's `buildinfo`.
//!
//! Names, types and help strings follow client_golang's process collector (v1.19,
//! `prometheus/process_collector_procfs.go`). The values are read from `/proc/self` at scrape time
//! through the `procfs` crate; on other systems the collector exports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Registers the process collector into `registry` (unprefixed: `process_resident_memory_bytes`, …).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// A snapshot of the process' resources. Fields the system could not tell are `None` and not exported.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds_total: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub virtual_memory_bytes: Option<f64>,
    pub virtual_memory_max_bytes: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<f64>,
}

impl ProcessStats {
    /// Reads this process' statistics. Only `/proc` files are read: they are served from kernel
    /// memory and never wait on a disk, so this is safe to call on an async worker.
    #[cfg(target_os = "linux")]
    pub fn read() -> ProcessStats {
        use procfs::process::{LimitValue, Process};
        let limit = |v: LimitValue| match v {
            LimitValue::Value(n) => Some(n as f64),
            // client_golang exports the kernel's "unlimited" as -1 converted the way Go does: the
            // largest value; a dashboard reads that as "no limit" either way.
            LimitValue::Unlimited => Some(u64::MAX as f64),
        };
        let Ok(me) = Process::myself() else {
            return ProcessStats::default();
        };
        let mut s = ProcessStats::default();
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            s.cpu_seconds_total = Some((stat.utime + stat.stime) as f64 / ticks);
            s.virtual_memory_bytes = Some(stat.vsize as f64);
            s.resident_memory_bytes = Some(stat.rss as f64 * procfs::page_size() as f64);
            s.threads = Some(stat.num_threads as f64);
            if let Ok(boot) = procfs::boot_time_secs() {
                s.start_time_seconds = Some(boot as f64 + stat.starttime as f64 / ticks);
            }
        }
        if let Ok(n) = me.fd_count() {
            s.open_fds = Some(n as f64);
        }
        if let Ok(l) = me.limits() {
            s.max_fds = limit(l.max_open_files.soft_limit);
            s.virtual_memory_max_bytes = limit(l.max_address_space.soft_limit);
        }
        s
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> ProcessStats {
        ProcessStats::default()
    }
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds_total {
            let c = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 7] = [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                s.max_fds,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                s.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max",
                "Maximum amount of virtual memory available in bytes.",
                Some(Unit::Bytes),
                s.virtual_memory_max_bytes,
            ),
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                s.resident_memory_bytes,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                s.threads,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(v) = value else { continue };
            let g = ConstGauge::new(v);
            let m = encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
            g.encode(m)?;
        }
        // Live tasks of the runtime serving the scrape: a leak of tasks shows as a rising line (the
        // soak run reads it).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let g = ConstGauge::new(rt.metrics().num_alive_tasks() as i64);
            let m = encoder.encode_descriptor(
                "meridian_tokio_alive_tasks",
                "Tasks alive in the tokio runtime that serves /metrics.",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_standard_process_metrics_with_plausible_values() {
        let mut r = Registry::default();
        register(&mut r);
        let _held = std::fs::File::open("/proc/self/stat");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in:\n{out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 30.0,
            "start {start}"
        );
        assert!(out.contains("# TYPE process_cpu_seconds counter"), "{out}");
        assert!(
            out.contains("# TYPE process_resident_memory_bytes gauge"),
            "{out}"
        );
    }
}

/// Prometheus' `/api/v1/status/buildinfo` data for this build (the edge and the gateway answer it).
pub fn build_info() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("MERIDIAN_REVISION").unwrap_or("unknown"),
        "branch": option_env!("MERIDIAN_BRANCH").unwrap_or(""),
        "buildUser": "",
        "buildDate": "",
        "goVersion": concat!("rust (meridian ", env!("CARGO_PKG_VERSION"), ")"),
    })
}
