//! Where alerts go once rules fire them.
//!
//! - [`notifier`]: Alertmanager's v2 API (`POST /api/v2/alerts`), to every Alertmanager found
//!   (static, `dns+`, `dnssrv+`, file_sd), in batches, with external labels, `--alert.label-drop` and
//!   `alert_relabel_configs` applied as Prometheus and Thanos apply them, through a bounded queue.

pub mod notifier;
