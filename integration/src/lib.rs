//! Meridian's end-to-end tests (in `tests/`) and side-by-side benchmarks against real components.
//! Shared helpers live in `meridian-testkit`.
