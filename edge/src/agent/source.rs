//! What the edge's StoreAPI reads: its TSDB and the metadata scrapes and remote writes brought.

use std::sync::Arc;

use meridian_core::series::{SeriesSource, SourceSeries};
use meridian_tsdb::db::Db;

use crate::metadata::MetadataStore;

/// What the edge's StoreAPI serves: the TSDB's series and the metadata scrapes and remote writes
/// brought.
pub(crate) struct EdgeSource {
    pub(crate) db: Arc<Db>,
    pub(crate) metadata: Arc<MetadataStore>,
}

impl EdgeSource {
    pub(crate) fn new(db: &Arc<Db>, metadata: &Arc<MetadataStore>) -> EdgeSource {
        EdgeSource {
            db: db.clone(),
            metadata: metadata.clone(),
        }
    }
}

impl SeriesSource for EdgeSource {
    fn select(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> meridian_core::error::Result<Vec<SourceSeries>> {
        Ok(self.db.select(matchers, mint, maxt, with_data)?)
    }

    fn select_sorted(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: meridian_core::series::Relabel,
    ) -> meridian_core::error::Result<Box<dyn meridian_core::series::SeriesCursor>> {
        Ok(Box::new(
            self.db.cursor(matchers, mint, maxt, with_data, relabel),
        ))
    }

    fn time_range(&self) -> (i64, i64) {
        // The head is live: samples keep arriving after this answer, and a gateway asks a store only
        // when its announced range overlaps the query. As Thanos' sidecar and Receive do, the edge
        // announces no end (else samples written after the last `Info` are skipped without a warning
        // until the next one), and, before it holds any data, no start either.
        let (min, _) = self.db.time_range();
        (if min == i64::MAX { i64::MIN } else { min }, i64::MAX)
    }

    fn cheap_cost(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Option<meridian_core::series::SelectCost> {
        self.db.cheap_cost(matchers, mint, maxt)
    }

    fn metadata(
        &self,
    ) -> Option<std::collections::BTreeMap<String, Vec<meridian_core::series::MetricMeta>>> {
        Some(self.metadata.all(std::time::Instant::now()))
    }

    fn serves_metadata(&self) -> bool {
        true
    }
}
