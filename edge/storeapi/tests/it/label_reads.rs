//! Label calls read their source on the blocking pool, batch by batch, and stop when the caller goes
//! away (issue 23, item 4).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_core::error::Result;
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::{Relabel, SeriesCursor, SeriesSource, SourceChunk, SourceSeries};
use meridian_storeapi::Store;
use meridian_storeapi::leaf::LeafStore;
use meridian_storeapi::proto::thanos as pb;

/// A source of many series (50 slow batches, 1 s in all: more than the caller waits), counting the
/// batches read.
struct Endless {
    batches: Arc<AtomicUsize>,
}

struct EndlessCursor {
    batches: Arc<AtomicUsize>,
    next: u64,
}

impl SeriesCursor for EndlessCursor {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(Labels, Vec<SourceChunk>)>> {
        if self.batches.load(Ordering::SeqCst) >= 50 {
            return Ok(vec![]);
        }
        std::thread::sleep(Duration::from_millis(20));
        self.batches.fetch_add(1, Ordering::SeqCst);
        let out = (0..max as u64)
            .map(|i| {
                let n = (self.next + i).to_string();
                (
                    Labels::from_pairs([("__name__", "m"), ("n", n.as_str())]),
                    vec![],
                )
            })
            .collect();
        self.next += max as u64;
        Ok(out)
    }
}

impl SeriesSource for Endless {
    fn select(&self, _: &[Matcher], _: i64, _: i64, _: bool) -> Result<Vec<SourceSeries>> {
        Ok(vec![])
    }

    fn select_sorted(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
        _: bool,
        _: Relabel,
    ) -> Result<Box<dyn SeriesCursor>> {
        Ok(Box::new(EndlessCursor {
            batches: self.batches.clone(),
            next: 0,
        }))
    }

    fn time_range(&self) -> (i64, i64) {
        (0, 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_label_call_stops_reading_and_leaves_the_workers_free() {
    let batches = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(LeafStore::from_source(
        Endless {
            batches: batches.clone(),
        },
        Labels::empty(),
    ));
    let req = pb::LabelNamesRequest {
        start: 0,
        end: 1,
        ..Default::default()
    };
    // The call would take 1 s; the caller gives up after 200 ms.
    let call = tokio::time::timeout(Duration::from_millis(200), store.label_names(req)).await;
    assert!(call.is_err(), "50 slow batches answered within 200 ms");
    // The async workers stayed free while it read: a timer on them fired on time (above).
    let after_drop = batches.load(Ordering::SeqCst);
    assert!(after_drop > 0, "the source was never read");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = batches.load(Ordering::SeqCst);
    assert!(
        later <= after_drop + 1,
        "the reader went on after its caller left: {after_drop} then {later} batches"
    );
}
