//! Where alerts go once rules fire them.
//!
//! - [`notifier`]: Alertmanager's v2 API (`POST /api/v2/alerts`), to every Alertmanager found
//!   (static, `dns+`, `dnssrv+`, file_sd), in batches, with external labels, `--alert.label-drop` and
//!   `alert_relabel_configs` applied as Prometheus and Thanos apply them, through a bounded queue.
//! - [`route`] and [`dispatch`]: the native router (`--alert.routing-config-file`): Alertmanager's
//!   route tree, inhibit rules, aggregation groups and webhook receivers, without an Alertmanager.

pub mod dispatch;
pub mod http;
pub mod notifier;
pub mod route;

use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::relabel::RelabelConfig;

/// The labels an alert leaves the gateway with (to an Alertmanager or the native router), or `None`
/// when relabeling drops it: external labels the alert lacks are added, then the `--alert.label-drop`
/// labels removed (so HA rule evaluators, which differ only by their replica label, send identical
/// alerts), then `alert_relabel_configs` applied.
pub fn process_labels(
    labels: &Labels,
    external: &Labels,
    drop: &[String],
    relabel: &[RelabelConfig],
) -> Option<Labels> {
    let mut b = labels.to_builder();
    for l in external.iter() {
        if labels.get(l.name).is_none_or(str::is_empty) {
            b.set(l.name, l.value);
        }
    }
    for name in drop {
        b.del(name);
    }
    let l = b.build();
    if relabel.is_empty() {
        return Some(l);
    }
    meridian_core::relabel::process(&l, relabel)
}

/// A ms timestamp as Go's `time.Time` JSON (RFC 3339, UTC).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    meridian_core::time::rfc3339(Some(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
    ))
}
