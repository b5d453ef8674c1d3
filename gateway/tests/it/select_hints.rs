//! What the engine tells stores about a selection: a range query's selectors are read only in the
//! window before each step (issue 25), so stores can leave the rest out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use meridian_core::error::Result;
use meridian_gateway::promql::{Engine, MemQueryable};
use meridian_gateway::queryable::{LabelsRequest, Named, Queryable, SelectRequest, Selected};

/// Records every selection, answers from nothing.
#[derive(Default)]
struct Recording(Mutex<Vec<SelectRequest>>);

#[async_trait::async_trait]
impl Queryable for Recording {
    async fn select(&self, req: SelectRequest) -> Result<Selected> {
        self.0.lock().unwrap().push(req.clone());
        MemQueryable::default().select(req).await
    }
    async fn label_names(&self, req: LabelsRequest) -> Result<Named> {
        MemQueryable::default().label_names(req).await
    }
    async fn label_values(&self, name: &str, req: LabelsRequest) -> Result<Named> {
        MemQueryable::default().label_values(name, req).await
    }
}

/// `(start, end, step_windows)` of each selection of `query` as a range query.
async fn selections(
    query: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Vec<(i64, i64, Option<(i64, i64)>)> {
    let q = Recording::default();
    Engine::default()
        .range(&q, query, start, end, step)
        .await
        .unwrap();
    recorded(&q, |r| (r.start, r.end, r.hints.step_windows))
}

/// `f` of every recorded selection, sorted.
fn recorded<T: Ord>(q: &Recording, f: impl Fn(&SelectRequest) -> T) -> Vec<T> {
    let mut out: Vec<T> = q.0.lock().unwrap().iter().map(f).collect();
    out.sort();
    out
}

const H: i64 = 3_600_000;

#[tokio::test]
async fn range_query_selectors_carry_their_step_windows() {
    // The last step is at 10 h (the end, 10 h 30 min, is not on the grid): the request ends there.
    let got = selections("rate(x[1m]) + y", 0, 10 * H + 1_800_000, H).await;
    assert_eq!(
        got,
        vec![
            (-300_000 + 1, 10 * H, Some((H, 300_000))),
            (-60_000 + 1, 10 * H, Some((H, 60_000))),
        ]
    );
    // An offset moves the steps and their windows alike.
    let got = selections("x offset 10m", 0, 2 * H, H).await;
    assert_eq!(
        got,
        vec![(-900_000 + 1, 2 * H - 600_000, Some((H, 300_000)))]
    );
}

#[tokio::test]
async fn subqueries_instants_and_at() {
    // A subquery's steps are not the query's.
    let got = selections("max_over_time(rate(x[1m])[30m:1m])", 0, 2 * H, H).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, None);
    // `@` pins the selector to one time: it reads one sample, the last of its lookback.
    let got = selections("x @ 100", 0, 2 * H, H).await;
    assert_eq!(got[0].2, None);
    let q = Recording::default();
    Engine::default()
        .range(&q, "x @ 100", 0, 2 * H, H)
        .await
        .unwrap();
    assert_eq!(
        q.0.lock().unwrap()[0].hints.last_sample_within,
        Some(300_000)
    );
    // An instant query has no steps; its vector selectors read their last sample only, its matrix
    // selectors their whole range.
    let q = Recording::default();
    Engine::default()
        .instant(&q, "rate(x[1m]) + y", H)
        .await
        .unwrap();
    let got = recorded(&q, |r| (r.hints.step_windows, r.hints.last_sample_within));
    assert_eq!(got, vec![(None, None), (None, Some(300_000))]);
    // Inside a subquery neither.
    let q = Recording::default();
    Engine::default()
        .instant(&q, "max_over_time(x[10m:1m])", H)
        .await
        .unwrap();
    let r = &q.0.lock().unwrap()[0];
    assert_eq!(
        (r.hints.step_windows, r.hints.last_sample_within),
        (None, None)
    );
}
