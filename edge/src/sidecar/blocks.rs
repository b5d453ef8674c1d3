//! The blocks Prometheus has written, read straight from its data directory (the volume the sidecar
//! shares with it) with the TSDB crate's block reader, and the per-request source that serves them
//! together with the head's range read from Prometheus.
//!
//! Beyond Thanos' sidecar, which sends every query through remote read: a persisted block is
//! immutable, so reading it in place costs Prometheus nothing and saves decoding, re-framing and a
//! copy through HTTP. Only the time after the newest block goes to Prometheus.
//!
//! Which directories are blocks (Prometheus v2.42 `tsdb/db.go`): a block is written under
//! `<ULID>.tmp-for-creation` and renamed when complete, and deleted by renaming it to
//! `<ULID>.tmp-for-deletion` first, so a directory named by a bare ULID is complete. After a
//! compaction the new block and its parents are both present until the parents are deleted: a block
//! that another names among its `compaction.parents` is left out, so nothing is read twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use meridian_core::error::{Error, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::{
    Relabel, SelectCost, SeriesCursor, SeriesSource, SourceChunk, SourceSeries,
};
use meridian_tsdb::block::{Block, BlockMeta};
use meridian_tsdb::index::ChunkMeta;
use meridian_tsdb::shipper::LocalBlocks;

/// Prometheus' persisted blocks, kept open between requests.
#[derive(Debug)]
pub struct PromBlocks {
    dir: PathBuf,
    open: Mutex<BTreeMap<String, Arc<Block>>>,
}

/// Whether a directory name is a ULID (26 characters of Crockford's base32).
pub fn is_ulid(name: &str) -> bool {
    name.len() == 26
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

impl PromBlocks {
    pub fn new(dir: PathBuf) -> PromBlocks {
        PromBlocks {
            dir,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete blocks now in the directory, oldest first: new ones opened, vanished ones
    /// forgotten, compaction parents left out. Reads the file system: call it off the async workers.
    pub fn current(&self) -> Result<Vec<Arc<Block>>> {
        let read = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::internal(format!("{}: {e}", self.dir.display())))?;
        let mut names: Vec<String> = read
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_ulid(n))
            .collect();
        names.sort();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|ulid, _| names.binary_search(ulid).is_ok());
        for name in names {
            if open.contains_key(&name) {
                continue;
            }
            let dir = self.dir.join(&name);
            match Block::open(&dir) {
                Ok(b) => {
                    open.insert(name, Arc::new(b));
                }
                // Deleted (by retention or after a compaction) since it was listed.
                Err(_) if !dir.exists() => {}
                Err(e) => return Err(Error::internal(format!("Prometheus block: {e}"))),
            }
        }
        let parents: BTreeSet<String> = open.values().flat_map(|b| parents(b)).collect();
        let mut blocks: Vec<Arc<Block>> = open
            .iter()
            .filter(|(ulid, _)| !parents.contains(*ulid))
            .map(|(_, b)| b.clone())
            .collect();
        blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
        Ok(blocks)
    }
}

/// The ULIDs a block was compacted from (`compaction.parents[].ulid` in its meta.json).
fn parents(b: &Block) -> Vec<String> {
    b.meta()
        .compaction
        .extra
        .get("parents")
        .and_then(|p| p.as_array())
        .map(|all| {
            all.iter()
                .filter_map(|p| p.get("ulid")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Prometheus' blocks as the shipper sees them: every complete block, of compaction level 1 only
/// unless `upload_compacted` (Thanos' `--shipper.upload-compacted`).
#[derive(Debug)]
pub struct ShippedBlocks {
    pub dir: PathBuf,
    pub upload_compacted: bool,
}

impl LocalBlocks for ShippedBlocks {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn blocks(&self) -> Vec<BlockMeta> {
        let Ok(read) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in read.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().into_string().ok().filter(|n| is_ulid(n)) else {
                continue;
            };
            let path = self.dir.join(&name).join("meta.json");
            let meta = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|raw| {
                    serde_json::from_slice::<BlockMeta>(&raw).map_err(|e| e.to_string())
                });
            match meta {
                Ok(m) if m.compaction.level <= 1 || self.upload_compacted => out.push(m),
                Ok(_) => {}
                // Deleted by Prometheus' retention since it was listed.
                Err(_) if !path.exists() => {}
                Err(e) => {
                    tracing::warn!(block = %name, error = %e, "block not shipped: its meta.json cannot be read");
                }
            }
        }
        out
    }
}

/// The end (exclusive) of the newest block: from here on the head answers.
pub fn split_time(blocks: &[Arc<Block>]) -> i64 {
    blocks
        .iter()
        .map(|b| b.meta().max_time)
        .max()
        .unwrap_or(i64::MIN)
}

/// What one request reads: the blocks as they were when it came, which serve times before
/// `split`, and the series Prometheus answered for the time from `split` on (their own labels,
/// already selected by the request's matchers).
#[derive(Debug)]
pub struct Snapshot {
    pub blocks: Vec<Arc<Block>>,
    pub split: i64,
    pub head: Vec<(Labels, Vec<SourceChunk>)>,
}

/// Where a planned series' chunks are.
#[derive(Debug)]
enum Loc {
    Block(usize, Vec<ChunkMeta>),
    Head(usize),
}

impl Snapshot {
    /// The series selected in `[mint, maxt]` with their served labels and where their chunks are,
    /// sorted by served labels, equal ones together.
    fn plan(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        relabel: &Relabel,
    ) -> Result<Vec<(Labels, Vec<Loc>)>> {
        let block_max = maxt.min(self.split.saturating_sub(1));
        let mut all: Vec<(Labels, Loc)> = Vec::new();
        for (bi, b) in self.blocks.iter().enumerate() {
            let m = b.meta();
            if m.max_time <= mint || m.min_time > block_max {
                continue;
            }
            for id in b.series_ids(matchers).map_err(block_error)? {
                let (labels, mut metas) = b.series_meta(id).map_err(block_error)?;
                metas.retain(|c| c.min_time <= block_max && c.max_time >= mint);
                if !metas.is_empty() {
                    all.push((relabel(&labels), Loc::Block(bi, metas)));
                }
            }
        }
        for (hi, (labels, _)) in self.head.iter().enumerate() {
            all.push((relabel(labels), Loc::Head(hi)));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Labels, Vec<Loc>)> = Vec::with_capacity(all.len());
        for (labels, loc) in all {
            match out.last_mut() {
                Some(s) if s.0 == labels => s.1.push(loc),
                _ => out.push((labels, vec![loc])),
            }
        }
        Ok(out)
    }

    /// The chunks of one planned series (data only when `with_data`).
    fn chunks(
        &self,
        locs: &[Loc],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<SourceChunk>> {
        let mut out = Vec::new();
        for loc in locs {
            match loc {
                Loc::Block(bi, metas) => {
                    if let Some(b) = self.blocks.get(*bi) {
                        b.push_chunks(metas, with_data, &mut out)
                            .map_err(block_error)?;
                    }
                }
                Loc::Head(hi) => {
                    let Some((_, chunks)) = self.head.get(*hi) else {
                        continue;
                    };
                    // The head's chunks that end before the newest block are in it (the head is
                    // truncated a moment after a block is written).
                    out.extend(
                        chunks
                            .iter()
                            .filter(|c| {
                                c.max_time >= self.split && c.max_time >= mint && c.min_time <= maxt
                            })
                            .cloned(),
                    );
                }
            }
        }
        if locs.len() > 1 {
            out.sort_by_key(|c| (c.min_time, c.max_time));
        }
        Ok(out)
    }
}

fn block_error(e: meridian_tsdb::block::BlockError) -> Error {
    Error::internal(format!("Prometheus block: {e}"))
}

/// Hands out a plan's series batch by batch, reading block chunks only then.
struct SnapshotCursor {
    snap: Arc<Snapshot>,
    plan: std::vec::IntoIter<(Labels, Vec<Loc>)>,
    mint: i64,
    maxt: i64,
    with_data: bool,
}

impl SeriesCursor for SnapshotCursor {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(Labels, Vec<SourceChunk>)>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((labels, locs)) = self.plan.next() else {
                break;
            };
            let chunks = self
                .snap
                .chunks(&locs, self.mint, self.maxt, self.with_data)?;
            if !chunks.is_empty() {
                out.push((labels, chunks));
            }
        }
        Ok(out)
    }
}

/// The snapshot as a series source, shared with the threads that read it.
#[derive(Debug, Clone)]
pub struct SnapshotSource(pub Arc<Snapshot>);

impl SeriesSource for SnapshotSource {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<SourceSeries>> {
        let own: Relabel = Arc::new(Labels::clone);
        let plan = self.0.plan(matchers, mint, maxt, &own)?;
        let mut out = Vec::with_capacity(plan.len());
        for (labels, locs) in plan {
            let chunks = self.0.chunks(&locs, mint, maxt, with_data)?;
            if !chunks.is_empty() {
                out.push(SourceSeries { labels, chunks });
            }
        }
        Ok(out)
    }

    fn select_sorted(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: Relabel,
    ) -> Result<Box<dyn SeriesCursor>> {
        let plan = self.0.plan(matchers, mint, maxt, &relabel)?;
        Ok(Box::new(SnapshotCursor {
            snap: self.0.clone(),
            plan: plan.into_iter(),
            mint,
            maxt,
            with_data,
        }))
    }

    fn time_range(&self) -> (i64, i64) {
        let min = self
            .0
            .blocks
            .first()
            .map_or(i64::MAX, |b| b.meta().min_time);
        let head_min = self
            .0
            .head
            .iter()
            .filter_map(|(_, c)| c.first().map(|c| c.min_time))
            .min()
            .unwrap_or(i64::MAX);
        (min.min(head_min), i64::MAX)
    }

    fn cheap_cost(&self, matchers: &[Matcher], _mint: i64, _maxt: i64) -> Option<SelectCost> {
        let mut cost = SelectCost {
            entries: self.0.head.len(),
            series: self.0.head.len(),
        };
        for b in &self.0.blocks {
            cost = cost.plus(b.cheap_cost(matchers)?);
        }
        Some(cost)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bytes::Bytes;
    use meridian_core::sample::Sample;

    fn series(name: &str, from: i64, to: i64) -> (Labels, Vec<Sample>) {
        let l = Labels::from_pairs([("__name__", name)]);
        let s = (from..to)
            .step_by(15_000)
            .map(|t| Sample::new(t, t as f64))
            .collect();
        (l, s)
    }

    #[test]
    fn blocks_are_found_parents_left_out_and_the_head_served_after_them() {
        let d = tempfile::tempdir().unwrap();
        const H: i64 = 3_600_000;
        let a = meridian_tsdb::block::write_block(d.path(), vec![series("m", 0, 2 * H)], 0, 2 * H)
            .unwrap();
        let b = meridian_tsdb::block::write_block(
            d.path(),
            vec![series("m", 2 * H, 4 * H)],
            2 * H,
            4 * H,
        )
        .unwrap();
        std::fs::create_dir(d.path().join("wal")).unwrap();
        std::fs::create_dir(d.path().join(format!("{}.tmp-for-creation", a.ulid))).unwrap();
        let blocks = PromBlocks::new(d.path().to_owned());
        let now = blocks.current().unwrap();
        assert_eq!(now.len(), 2);
        assert_eq!(split_time(&now), 4 * H);
        // A compacted block naming both as parents replaces them.
        let c = meridian_tsdb::block::write_block(d.path(), vec![series("m", 0, 4 * H)], 0, 4 * H)
            .unwrap();
        let meta_path = d.path().join(&c.ulid).join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta["compaction"]["level"] = 2.into();
        meta["compaction"]["parents"] = serde_json::json!([{"ulid": a.ulid, "minTime": 0, "maxTime": 2 * H}, {"ulid": b.ulid, "minTime": 2 * H, "maxTime": 4 * H}]);
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        let now = blocks.current().unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].meta().ulid, c.ulid);
        // Removed parents are forgotten.
        std::fs::remove_dir_all(d.path().join(&a.ulid)).unwrap();
        assert_eq!(blocks.current().unwrap().len(), 1);

        // The head's chunk before the split is left out; its later one is served with the block's.
        let l = Labels::from_pairs([("__name__", "m")]);
        let head_chunk = |min, max| SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: min,
            max_time: max,
            data: Bytes::new(),
        };
        let snap = SnapshotSource(Arc::new(Snapshot {
            split: split_time(&now),
            blocks: now,
            head: vec![(
                l.clone(),
                vec![head_chunk(3 * H, 4 * H - 1), head_chunk(4 * H, 5 * H)],
            )],
        }));
        let got = snap
            .select(&[Matcher::equal("__name__", "m")], 0, 6 * H, false)
            .unwrap();
        assert_eq!(got.len(), 1);
        let last = got[0].chunks.last().unwrap();
        assert_eq!((last.min_time, last.max_time), (4 * H, 5 * H));
        assert!(
            got[0]
                .chunks
                .iter()
                .all(|c| c.max_time < 4 * H || c.min_time == 4 * H)
        );
        assert_eq!(snap.time_range().0, 0);
    }

    #[test]
    fn ulids() {
        assert!(is_ulid("01HQ3M5Z8K9V2B7C6D4E1F0G9H"));
        assert!(!is_ulid("01HQ3M5Z8K9V2B7C6D4E1F0G9"));
        assert!(!is_ulid("01HQ3M5Z8K9V2B7C6D4E1F0GIH"));
        assert!(!is_ulid("chunks_head"));
    }
}
