//! Sidecar mode (`meridian-edge sidecar`, a drop-in for `thanos sidecar` beside an existing
//! Prometheus).
//!
//! - `prom`: the Prometheus beside it, through its HTTP API (external labels, oldest sample).
//! - `reloader`: Thanos' config reloader (render the template, watch it and the rule directories,
//!   reload Prometheus).
//! - `remote_read`: the remote-read request and the streamed-chunks answer, frame by frame.
//! - `blocks`: Prometheus' persisted blocks read in place; one request's blocks and head.
//! - `head`: the head's range from Prometheus' WAL followed in place, remote read otherwise.
//! - `store`: the StoreAPI over the Prometheus beside it.
//! - `client_config`: `--prometheus.http-client(-file)`, Thanos' HTTP client YAML.
//! - `run`: the running sidecar.

pub mod blocks;
pub mod client_config;
pub mod head;
pub mod prom;
pub mod reloader;
pub mod remote_read;
pub mod run;
pub mod store;
