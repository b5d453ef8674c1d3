//! Reading: `select` (all at once), the streaming cursor (planned, batch by batch, re-planned after
//! a head truncation) and the TSDB as a series source.

use super::*;
use crate::index::ChunkMeta;

impl Db {
    /// Series matching `matchers` with chunks overlapping `[mint, maxt]`, from blocks and head, merged by
    /// labels and sorted by labels; each series' chunks sorted by time (they may overlap right after a
    /// block was written; samples repeated across chunks are identical).
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> std::result::Result<Vec<SourceSeries>, DbError> {
        let st = self.read();
        let mut all: Vec<(Labels, Vec<SourceChunk>)> = Vec::new();
        for b in &st.blocks {
            let m = b.meta();
            if m.max_time <= mint || m.min_time > maxt {
                continue;
            }
            for s in b.select(matchers, mint, maxt)? {
                let chunks = s
                    .chunks
                    .into_iter()
                    .map(|(meta, encoding, data)| SourceChunk {
                        encoding,
                        min_time: meta.min_time,
                        max_time: meta.max_time,
                        data: if with_data {
                            Bytes::copy_from_slice(data)
                        } else {
                            Bytes::new()
                        },
                    })
                    .collect();
                all.push((s.labels, chunks));
            }
        }
        for s in st.head.select(matchers, mint, maxt, with_data) {
            all.push((s.labels, s.chunks));
        }
        // Blocks and the head each give sorted runs; equal series across them are joined.
        let out: Vec<SourceSeries> = meridian_core::series::merge_equal_series(all)
            .into_iter()
            .map(|(labels, chunks)| SourceSeries { labels, chunks })
            .collect();
        self.metrics.select_series.inc_by(out.len() as u64);
        Ok(out)
    }

    /// Every sample of the matching series in `[mint, maxt]`, overlapping chunks merged (for tools and
    /// tests; queries use chunks).
    pub fn samples(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> std::result::Result<Vec<(Labels, Vec<Sample>)>, DbError> {
        Ok(self
            .select(matchers, mint, maxt, true)?
            .into_iter()
            .map(|s| {
                let mut all: Vec<Sample> = s
                    .chunks
                    .iter()
                    .flat_map(|c| {
                        meridian_core::chunkenc::XorIterator::new(&c.data)
                            .into_iter()
                            .flatten()
                    })
                    .filter(|x| x.t >= mint && x.t <= maxt)
                    .collect();
                all.sort_by_key(|x| x.t);
                all.dedup_by_key(|x| x.t);
                (s.labels, all)
            })
            .collect())
    }

    /// [`crate::postings::cheap_cost`] over the blocks overlapping `[mint, maxt]` and the head, or
    /// `None` (matchers that scan label values, or an index that could not be read: the selection
    /// itself reports that).
    pub fn cheap_cost(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Option<SelectCost> {
        let st = self.read();
        let mut total = crate::postings::cheap_cost(&st.head, matchers).ok()??;
        for b in &st.blocks {
            let m = b.meta();
            if m.max_time <= mint || m.min_time > maxt {
                continue;
            }
            total = total.plus(b.cheap_cost(matchers)?);
        }
        Some(total)
    }

    pub fn time_range(&self) -> (i64, i64) {
        let st = self.read();
        let (mut min, mut max) = st.head.time_range();
        for b in &st.blocks {
            min = min.min(b.meta().min_time);
            max = max.max(b.meta().max_time.saturating_sub(1));
        }
        (min, max)
    }
}

/// Where a planned series' chunks are: a block of the plan and the series' chunks in range there (read
/// from its index entry while planning, so a batch does not parse the entry again), or the head.
pub(super) enum Loc {
    Block(usize, Vec<ChunkMeta>),
    Head(u64),
}

/// What a streamed select serves: the blocks it reads and the series in served order.
pub(super) struct Plan {
    /// [`Db::cuts`] when the plan was made.
    pub(super) cuts: u64,
    /// Held so that blocks deleted by retention meanwhile stay readable (their files are mapped).
    pub(super) blocks: Vec<Arc<Block>>,
    pub(super) series: std::vec::IntoIter<(Labels, Vec<Loc>)>,
}

/// A select served batch by batch (issue 22, item 5: `Db::select` materialised the whole selection,
/// chunk bytes included, per StoreAPI call).
///
/// The first batch plans: under the read lock it finds the matching series of the blocks and the head
/// with chunks in range, and keeps their served labels and where their chunks are (no chunk bytes),
/// sorted by served labels (external labels can change the order, so the labels are needed up front).
/// Each batch then reads its series' chunks under the read lock. When the head was truncated since
/// the plan (its data moved to a new block), the series after the last one served are planned again
/// from the current blocks and head, so no sample is lost or repeated.
pub struct DbCursor {
    pub(super) db: Arc<Db>,
    pub(super) matchers: Vec<Matcher>,
    pub(super) mint: i64,
    pub(super) maxt: i64,
    pub(super) with_data: bool,
    pub(super) relabel: Relabel,
    pub(super) plan: Option<Plan>,
    /// Served labels of the last series handed out.
    pub(super) last: Option<Labels>,
}

impl std::fmt::Debug for DbCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCursor")
            .field("matchers", &self.matchers)
            .field("mint", &self.mint)
            .field("maxt", &self.maxt)
            .field("with_data", &self.with_data)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// A cursor over what [`Db::select`] selects, with labels mapped by `relabel`, sorted by them and
    /// equal series joined. Nothing is read before the first batch.
    pub fn cursor(
        self: &Arc<Db>,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: Relabel,
    ) -> DbCursor {
        DbCursor {
            db: self.clone(),
            matchers: matchers.to_vec(),
            mint,
            maxt,
            with_data,
            relabel,
            plan: None,
            last: None,
        }
    }
}

impl DbCursor {
    pub(super) fn plan(&self, st: &State) -> std::result::Result<Plan, DbError> {
        let (mint, maxt) = (self.mint, self.maxt);
        let overlaps = |min: i64, max: i64| min <= maxt && max >= mint;
        let mut blocks = Vec::new();
        let mut all: Vec<(Labels, Loc)> = Vec::new();
        for b in &st.blocks {
            let m = b.meta();
            if m.max_time <= mint || m.min_time > maxt {
                continue;
            }
            let bi = blocks.len();
            blocks.push(b.clone());
            for id in b.series_ids(&self.matchers)? {
                let (labels, mut metas) = b.series_meta(id)?;
                metas.retain(|c| overlaps(c.min_time, c.max_time));
                if !metas.is_empty() {
                    all.push(((self.relabel)(&labels), Loc::Block(bi, metas)));
                }
            }
        }
        for (r, labels) in st.head.select_labels(&self.matchers, mint, maxt) {
            all.push(((self.relabel)(&labels), Loc::Head(r)));
        }
        if let Some(last) = &self.last {
            all.retain(|(l, _)| l > last);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut series: Vec<(Labels, Vec<Loc>)> = Vec::with_capacity(all.len());
        for (labels, loc) in all {
            match series.last_mut() {
                Some(s) if s.0 == labels => s.1.push(loc),
                _ => series.push((labels, vec![loc])),
            }
        }
        Ok(Plan {
            cuts: self.db.cuts.load(Ordering::Acquire),
            blocks,
            series: series.into_iter(),
        })
    }

    pub(super) fn batch(
        &mut self,
        max: usize,
    ) -> std::result::Result<Vec<(Labels, Vec<SourceChunk>)>, DbError> {
        let db = self.db.clone();
        let st = db.read();
        let cuts = db.cuts.load(Ordering::Acquire);
        if self.plan.as_ref().is_none_or(|p| p.cuts != cuts) {
            self.plan = Some(self.plan(&st)?);
        }
        let (mint, maxt, with_data) = (self.mint, self.maxt, self.with_data);
        let Some(plan) = self.plan.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(max.min(plan.series.len()));
        while out.len() < max {
            let Some((labels, locs)) = plan.series.next() else {
                break;
            };
            let mut chunks = Vec::new();
            for loc in &locs {
                match loc {
                    Loc::Block(bi, metas) => {
                        if let Some(b) = plan.blocks.get(*bi) {
                            b.push_chunks(metas, with_data, &mut chunks)?;
                        }
                    }
                    &Loc::Head(r) => {
                        chunks.extend(
                            st.head
                                .series_chunks(r, mint, maxt, with_data)
                                .unwrap_or_default(),
                        );
                    }
                }
            }
            if locs.len() > 1 {
                chunks.sort_by_key(|c| (c.min_time, c.max_time));
            }
            self.last = Some(labels.clone());
            if !chunks.is_empty() {
                out.push((labels, chunks));
            }
        }
        db.metrics.select_series.inc_by(out.len() as u64);
        Ok(out)
    }
}

impl SeriesCursor for DbCursor {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(Labels, Vec<SourceChunk>)>> {
        Ok(self.batch(max)?)
    }
}

/// A TSDB as a series source (what the StoreAPI's leaf store serves). The streaming cursor keeps the
/// database alive across batches, hence the `Arc`.
#[derive(Clone)]
pub struct DbSource(pub Arc<Db>);

impl std::fmt::Debug for DbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbSource({})", self.0.dir.display())
    }
}

impl SeriesSource for DbSource {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<SourceSeries>> {
        Ok(Db::select(&self.0, matchers, mint, maxt, with_data)?)
    }

    fn select_sorted(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: Relabel,
    ) -> Result<Box<dyn SeriesCursor>> {
        Ok(Box::new(Db::cursor(
            &self.0, matchers, mint, maxt, with_data, relabel,
        )))
    }

    fn time_range(&self) -> (i64, i64) {
        Db::time_range(&self.0)
    }

    fn cheap_cost(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Option<SelectCost> {
        self.0.cheap_cost(matchers, mint, maxt)
    }
}
