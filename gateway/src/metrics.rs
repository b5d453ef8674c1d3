//! The gateway's own metrics (`/metrics`): HTTP requests by handler and status, queries in flight and
//! their samples, build info; the fan-out's per-store latency and errors and merged series
//! ([`crate::fanout::FanoutMetrics`]) and the results cache ([`crate::cache::CacheMetrics`]) register
//! into the same registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `handler`, `code` and `method` of an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub handler: &'static str,
    pub code: u16,
    pub method: &'static str,
}

/// `handler` alone (latency histograms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: &'static str,
}

/// A phase of a query (`queue`, `parse`, `fetch`, `eval`, `encode`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// From 10 µs: the fixed cost of a small query is a fraction of a millisecond.
fn phase_histogram() -> Histogram {
    Histogram::new([
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// `version` and `revision` of the build.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// HTTP and query metrics.
#[derive(Debug)]
pub struct ApiMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<HandlerLabel, Histogram, fn() -> Histogram>,
    pub queries_in_flight: Gauge,
    pub query_samples: Counter,
    /// Instant-query time by phase.
    pub query_phases: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    pub build_info: Family<BuildLabels, Gauge>,
}

impl Default for ApiMetrics {
    fn default() -> ApiMetrics {
        ApiMetrics::new()
    }
}

impl ApiMetrics {
    pub fn new() -> ApiMetrics {
        let m = ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            queries_in_flight: Gauge::default(),
            query_samples: Counter::default(),
            query_phases: Family::new_with_constructor(phase_histogram),
            build_info: Family::default(),
        };
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: option_env!("MERIDIAN_REVISION").unwrap_or("unknown"),
            })
            .set(1);
        m
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "meridian_gateway_http_requests",
            "HTTP requests by handler, status code and method",
            self.requests.clone(),
        );
        r.register_with_unit(
            "meridian_gateway_http_request_duration",
            "HTTP request latency by handler",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "meridian_gateway_queries_in_flight",
            "PromQL queries being evaluated",
            self.queries_in_flight.clone(),
        );
        r.register(
            "meridian_gateway_query_samples",
            "Samples loaded by PromQL queries",
            self.query_samples.clone(),
        );
        r.register_with_unit(
            "meridian_gateway_query_phase_duration",
            "Instant-query time by phase: queue (waiting for a slot), parse, fetch (fan-out to the stores), eval, encode (JSON)",
            Unit::Seconds,
            self.query_phases.clone(),
        );
        r.register(
            "meridian_gateway_build_info",
            "Version of the running gateway (always 1)",
            self.build_info.clone(),
        );
    }

    /// Counts one request and its latency.
    pub fn observe(&self, handler: &'static str, method: &'static str, code: u16, secs: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                handler,
                code,
                method,
            })
            .inc();
        self.duration
            .get_or_create(&HandlerLabel { handler })
            .observe(secs);
    }
}

/// The text exposition of `registry` in the Prometheus text format 0.0.4 that every scraper and
/// `promtool check metrics` read: prometheus-client writes OpenMetrics, which differs only in the
/// `# EOF` trailer, `# UNIT` lines and counters declared without their `_total` suffix.
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, registry)?;
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some((name, help)) = rest.split_once(' ')
            && om.contains(&format!("# TYPE {name} counter\n"))
        {
            out.push_str(&format!("# HELP {name}_total {help}\n"));
            continue;
        }
        // Counters' `_created` samples are OpenMetrics-only.
        if line
            .split(['{', ' '])
            .next()
            .is_some_and(|n| n.ends_with("_created"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total() {
        let mut r = Registry::default();
        let m = ApiMetrics::new();
        m.register(&mut r);
        m.observe("query", "GET", 200, 0.01);
        let text = encode_text(&r).unwrap_or_default();
        assert!(text.contains("# TYPE meridian_gateway_http_requests_total counter\n"));
        assert!(text.contains("# HELP meridian_gateway_http_requests_total HTTP requests"));
        assert!(text.contains(
            "meridian_gateway_http_requests_total{handler=\"query\",code=\"200\",method=\"GET\"} 1\n"
        ));
        assert!(text.contains("# TYPE meridian_gateway_http_request_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }
}
