//! Sidecar mode (`meridian-edge sidecar`, a drop-in for `thanos sidecar` beside an existing
//! Prometheus).
//!
//! - `reloader`: Thanos' config reloader (render the template, watch it and the rule directories,
//!   reload Prometheus).

pub mod reloader;
