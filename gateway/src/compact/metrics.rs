//! The compactor's metrics: Thanos' `thanos_compact_*` set under Meridian's prefix (same suffixes, so
//! a Thanos dashboard needs only the prefix changed).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use meridian_tsdb::marks::{Mark, MarkKind};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MarkerLabels {
    pub marker: &'static str,
    pub reason: String,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CompactMetrics {
    pub iterations: Counter,
    pub compactions: Counter,
    pub compaction_failures: Counter,
    pub partial_deleted: Counter,
    pub blocks_cleaned: Counter,
    pub blocks_marked: Family<MarkerLabels, Counter>,
    pub todo_compactions: Gauge,
    pub downsamples: Counter,
    pub todo_downsamples: Gauge,
    pub todo_deletions: Gauge,
    /// 1 while the compactor has halted on a block it cannot compact.
    pub halted: Gauge,
    /// 1 while this compactor holds the bucket's lease.
    pub lease_held: Gauge,
}

impl CompactMetrics {
    /// Counts a mark written.
    pub fn marked(&self, m: &Mark) {
        let marker = match m.kind {
            MarkKind::Deletion => "deletion-mark.json",
            MarkKind::NoCompact => "no-compact-mark.json",
            MarkKind::NoDownsample => "no-downsample-mark.json",
        };
        self.blocks_marked
            .get_or_create(&MarkerLabels {
                marker,
                reason: m.reason.clone(),
            })
            .inc();
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        let r = r.sub_registry_with_prefix("meridian_compact");
        r.register(
            "iterations",
            "Compactor passes completed",
            self.iterations.clone(),
        );
        r.register(
            "group_compactions",
            "Compactions made (one new block each)",
            self.compactions.clone(),
        );
        r.register(
            "group_compactions_failures",
            "Compactions that failed",
            self.compaction_failures.clone(),
        );
        r.register(
            "aborted_partial_uploads_deletions",
            "Aborted uploads (block directories without meta.json) deleted",
            self.partial_deleted.clone(),
        );
        r.register(
            "blocks_cleaned",
            "Blocks deleted after their deletion delay",
            self.blocks_cleaned.clone(),
        );
        r.register(
            "blocks_marked",
            "Marks written, by marker file and reason",
            self.blocks_marked.clone(),
        );
        r.register(
            "todo_compactions",
            "Streams with a compaction planned at the start of the last pass",
            self.todo_compactions.clone(),
        );
        r.register(
            "downsamples",
            "Downsampled blocks made",
            self.downsamples.clone(),
        );
        r.register(
            "todo_downsample_blocks",
            "Blocks waiting to be downsampled in the running pass",
            self.todo_downsamples.clone(),
        );
        r.register(
            "todo_deletion_blocks",
            "Blocks marked for deletion whose delete delay has not passed",
            self.todo_deletions.clone(),
        );
        r.register(
            "halted",
            "1 when the compactor has halted on a block it cannot compact",
            self.halted.clone(),
        );
        r.register(
            "lease_held",
            "1 while this compactor holds the bucket's compactor lease (0: another one does)",
            self.lease_held.clone(),
        );
    }
}
