//! Prometheus' and Thanos' textual formats for durations and byte sizes, each parsed in exactly one
//! place: flags, YAML files, query parameters and templates all call these.

pub mod duration;
pub mod size;

pub use duration::{PromDuration, parse_duration};
pub use size::parse_base2_bytes;
