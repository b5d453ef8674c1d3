//! A leaf store sends only the samples a request needs (issue 25): chunks cut to the range, series
//! with nothing but stale markers in range left out, step windows from Meridian's hint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use meridian_core::Labels;
use meridian_core::chunkenc::XorIterator;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::sample::{Sample, stale_nan};
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::trim::SeriesWindows;
use meridian_storeapi::{SeriesFrame, Store, series_request};

const STEP: i64 = 15_000;

async fn answer(store: &MemStore, req: pb::SeriesRequest) -> Vec<(String, Vec<i64>, usize)> {
    let mut s = store.series(req).await.unwrap();
    let mut out = Vec::new();
    while let Some(f) = s.next().await {
        let SeriesFrame::Series(s) = f.unwrap() else {
            continue;
        };
        let name = s.labels.get("__name__").unwrap().to_owned();
        let mut times = Vec::new();
        let mut bytes = 0;
        for c in &s.chunks {
            let data = &c.raw.as_ref().unwrap().data;
            bytes += data.len();
            times.extend(XorIterator::new(data).unwrap().map(|x: Sample| x.t));
        }
        out.push((name, times, bytes));
    }
    out
}

fn store() -> MemStore {
    let store = MemStore::new(Labels::from_pairs([("cluster", "a")]));
    // Two hours every 15 s: chunks of 120 samples.
    let live: Vec<Sample> = (0..480)
        .map(|k| Sample::new(k * STEP, (k % 7) as f64))
        .collect();
    store
        .append(&Labels::from_pairs([("__name__", "live")]), &live)
        .unwrap();
    // Ends with a stale marker at 60 min.
    let mut ended: Vec<Sample> = (0..240).map(|k| Sample::new(k * STEP, 1.0)).collect();
    ended.push(Sample::new(240 * STEP, stale_nan()));
    store
        .append(&Labels::from_pairs([("__name__", "ended")]), &ended)
        .unwrap();
    store
}

fn req(min: i64, max: i64) -> pb::SeriesRequest {
    series_request(
        min,
        max,
        &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
        false,
    )
}

#[tokio::test]
async fn an_instant_query_gets_its_lookback_only() {
    let store = store();
    // An instant query at 70 min: the last 5 minutes (`ended` has nothing there).
    let t = 70 * 60_000;
    let got = answer(&store, req(t - 300_000 + 1, t)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (name, times, bytes) = &got[0];
    assert_eq!(name, "live");
    assert_eq!(
        times,
        &((t - 300_000 + STEP)..=t)
            .step_by(STEP as usize)
            .collect::<Vec<_>>()
    );
    // 20 samples instead of the 120 of their chunk.
    assert!(*bytes < 80, "{bytes} bytes");

    // At 64:50 `ended` has only its stale marker (60:00) in range: it is not sent.
    let t = 64 * 60_000 + 50_000;
    let got = answer(&store, req(t - 300_000 + 1, t)).await;
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["live"]
    );
    // At 64 min with a 5-minute lookback it still has live samples: sent, stale marker included.
    let got = answer(&store, req(59 * 60_000 + 1, 64 * 60_000)).await;
    let ended = got.iter().find(|g| g.0 == "ended").unwrap();
    assert_eq!(ended.1.last(), Some(&(60 * 60_000)));
}

#[tokio::test]
async fn windows_hint_keeps_each_steps_window() {
    let store = store();
    // Steps every 30 min up to 120 min, each reading 1 min (e.g. `rate(x[1m])` at a 30 min step).
    let mut r = req(30 * 60_000 - 60_000 + 1, 119 * 60_000 + 45_000);
    r.hints = Some(
        SeriesWindows {
            step_millis: 30 * 60_000,
            window_millis: 60_000,
            last_only: false,
        }
        .to_any(),
    );
    let got = answer(&store, r.clone()).await;
    let live = &got.iter().find(|g| g.0 == "live").unwrap().1;
    // Every kept sample is within 60 s before a step (steps end at max_time).
    for t in live {
        assert!((r.max_time - t) % (30 * 60_000) <= 60_000, "{t}");
    }
    // 5 samples per window, 3 in the first (the range starts 1 ms after 29:00).
    assert_eq!(live.len(), 3 * 5 + 3, "{live:?}");
    // Without the hint the whole range comes.
    r.hints = None;
    let all = answer(&store, r).await;
    assert!(all.iter().find(|g| g.0 == "live").unwrap().1.len() > 300);
}
