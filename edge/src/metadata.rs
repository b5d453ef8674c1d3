//! Metric metadata (TYPE, HELP, UNIT by metric family), as the edge learns it: from every scrape target's
//! exposition and from remote-write requests that carry metadata. Served by the StoreAPI's
//! `thanos.Metadata/MetricMetadata`, the way a Thanos sidecar serves Prometheus' `/api/v1/metadata`.
//!
//! Like Prometheus, metadata lives in memory only: each scrape target publishes what its last scrapes
//! exposed (a family no longer exposed for ten scrapes is forgotten, and a target that goes away takes its
//! metadata with it), so after a restart it is back within one scrape interval. Metadata that came by
//! remote write is kept until it is not re-sent for an hour (Prometheus re-sends it every minute by
//! default). Identical entries from several sources are answered once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_core::labels::Labels;
use meridian_core::series::MetricMeta;
use meridian_storeapi::proto::prometheus::metric_metadata::MetricType as RwType;

/// Remote-write metadata not re-sent for this long is forgotten.
pub const REMOTE_WRITE_TTL: Duration = Duration::from_secs(3600);
/// At most this many families are kept from remote write (a sender cannot grow the edge without bound).
pub const MAX_REMOTE_WRITE_FAMILIES: usize = 100_000;

/// One family's metadata. `kind` uses Prometheus' names: counter, gauge, histogram, gaugehistogram,
/// summary, info, stateset, unknown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Meta {
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

impl Meta {
    fn to_meta(&self) -> MetricMeta {
        MetricMeta {
            kind: self.kind.to_owned(),
            help: self.help.clone(),
            unit: self.unit.clone(),
        }
    }
}

/// Prometheus' name of a remote-write metadata type.
pub fn remote_write_kind(t: i32) -> &'static str {
    match RwType::try_from(t).unwrap_or(RwType::Unknown) {
        RwType::Unknown => "unknown",
        RwType::Counter => "counter",
        RwType::Gauge => "gauge",
        RwType::Histogram => "histogram",
        RwType::Gaugehistogram => "gaugehistogram",
        RwType::Summary => "summary",
        RwType::Info => "info",
        RwType::Stateset => "stateset",
    }
}

/// The remote-write metadata type of Prometheus' type name (`unknown` for names it does not know).
pub fn remote_write_type(kind: &str) -> i32 {
    let t = match kind {
        "counter" => RwType::Counter,
        "gauge" => RwType::Gauge,
        "histogram" => RwType::Histogram,
        "gaugehistogram" => RwType::Gaugehistogram,
        "summary" => RwType::Summary,
        "info" => RwType::Info,
        "stateset" => RwType::Stateset,
        _ => RwType::Unknown,
    };
    t as i32
}

/// Who published metadata: a scrape target (its pool and labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub pool: String,
    pub labels: Labels,
}

#[derive(Default)]
struct Inner {
    targets: HashMap<TargetKey, Arc<Vec<(String, Meta)>>>,
    remote: HashMap<String, (Meta, Instant)>,
    /// When expired remote-write entries were last dropped (a sweep is a walk over all of them).
    last_sweep: Option<Instant>,
}

/// Expired remote-write metadata is dropped at most this often ([`MetadataStore::all`] skips it anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// See the module documentation. Cheap to share (`Arc`).
#[derive(Default)]
pub struct MetadataStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore").finish_non_exhaustive()
    }
}

impl MetadataStore {
    pub fn new() -> MetadataStore {
        MetadataStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces what a target exposes.
    pub fn publish(&self, key: TargetKey, families: Vec<(String, Meta)>) {
        self.lock().targets.insert(key, Arc::new(families));
    }

    /// Forgets a target (it went away).
    pub fn remove(&self, key: &TargetKey) {
        self.lock().targets.remove(key);
    }

    /// Records metadata received by remote write (`(family, meta)`); returns how many were refused
    /// because the store is full.
    pub fn record_remote_write(
        &self,
        entries: impl IntoIterator<Item = (String, Meta)>,
        now: Instant,
    ) -> usize {
        let mut inner = self.lock();
        let full = inner.remote.len() >= MAX_REMOTE_WRITE_FAMILIES;
        if full
            || inner
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            inner
                .remote
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < REMOTE_WRITE_TTL);
            inner.last_sweep = Some(now);
        }
        let mut refused = 0;
        for (family, meta) in entries {
            if inner.remote.len() >= MAX_REMOTE_WRITE_FAMILIES
                && !inner.remote.contains_key(&family)
            {
                refused += 1;
                continue;
            }
            inner.remote.insert(family, (meta, now));
        }
        refused
    }

    /// Everything known, by family, each family's distinct entries sorted.
    pub fn all(&self, now: Instant) -> BTreeMap<String, Vec<MetricMeta>> {
        let mut by_family: BTreeMap<String, BTreeSet<Meta>> = BTreeMap::new();
        {
            let inner = self.lock();
            for families in inner.targets.values() {
                for (f, m) in families.iter() {
                    by_family.entry(f.clone()).or_default().insert(m.clone());
                }
            }
            for (f, (m, seen)) in &inner.remote {
                if now.saturating_duration_since(*seen) < REMOTE_WRITE_TTL {
                    by_family.entry(f.clone()).or_default().insert(m.clone());
                }
            }
        }
        by_family
            .into_iter()
            .map(|(f, ms)| (f, ms.iter().map(Meta::to_meta).collect()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(kind: &'static str, help: &str) -> Meta {
        Meta {
            kind,
            help: help.into(),
            unit: String::new(),
        }
    }

    fn key(instance: &str) -> TargetKey {
        TargetKey {
            pool: "node".into(),
            labels: Labels::from_pairs([("instance", instance), ("job", "node")]),
        }
    }

    #[test]
    fn sources_merge_dedupe_and_go_away() {
        let s = MetadataStore::new();
        let t0 = Instant::now();
        s.publish(key("a"), vec![("up".into(), meta("gauge", "Up."))]);
        s.publish(key("b"), vec![("up".into(), meta("gauge", "Up."))]);
        s.record_remote_write([("up".into(), meta("gauge", "Other help."))], t0);
        let all = s.all(t0);
        assert_eq!(all["up"].len(), 2, "{all:?}");
        s.remove(&key("a"));
        s.remove(&key("b"));
        assert_eq!(s.all(t0)["up"].len(), 1);
        // Remote-write metadata expires.
        assert!(s.all(t0 + REMOTE_WRITE_TTL).is_empty());
    }

    #[test]
    fn remote_write_families_are_bounded() {
        let s = MetadataStore::new();
        let t0 = Instant::now();
        let refused = s.record_remote_write(
            (0..MAX_REMOTE_WRITE_FAMILIES + 3).map(|i| (format!("m{i}"), meta("counter", ""))),
            t0,
        );
        assert_eq!(refused, 3);
        // A known family is still updated when full.
        assert_eq!(
            s.record_remote_write([("m0".into(), meta("gauge", "now a gauge"))], t0),
            0
        );
        assert_eq!(s.all(t0)["m0"][0].kind, "gauge");
    }
}
