//! Appending: a batch validated sample by sample and applied atomically on commit.

use super::*;
use meridian_core::histogram::HistogramValue;

/// A sample of a batch or of the WAL: a float, or a native histogram at a time.
#[derive(Debug, Clone)]
pub(crate) enum ReplayItem {
    Float(Sample),
    Histogram(i64, Box<HistogramValue>),
}

impl ReplayItem {
    /// The sample the order and duplicate checks see: a histogram's fingerprint stands for its value
    /// bits (they compare bits only).
    pub(crate) fn check_sample(&self) -> Sample {
        match self {
            ReplayItem::Float(s) => *s,
            ReplayItem::Histogram(t, h) => Sample::new(*t, f64::from_bits(h.fingerprint())),
        }
    }
}

/// A batch's samples as WAL records: one of floats, then those of histograms; when a series has
/// floats and histograms in the batch, records of runs of one kind in the batch's order (replay
/// applies records in order, and a series' samples must stay in time order).
fn sample_records(keep: &[(u64, ReplayItem)]) -> Vec<Record> {
    let hist_refs: crate::RefMap<()> = keep
        .iter()
        .filter(|(_, i)| matches!(i, ReplayItem::Histogram(..)))
        .map(|(r, _)| (*r, ()))
        .collect();
    let mixed = !hist_refs.is_empty()
        && keep
            .iter()
            .any(|(r, i)| matches!(i, ReplayItem::Float(_)) && hist_refs.contains_key(r));
    let mut out = Vec::new();
    let runs: Vec<&[(u64, ReplayItem)]> = if mixed {
        keep.chunk_by(|a, b| {
            matches!(a.1, ReplayItem::Float(_)) == matches!(b.1, ReplayItem::Float(_))
        })
        .collect()
    } else {
        vec![keep]
    };
    for run in runs {
        let mut floats = Vec::with_capacity(run.len());
        let mut hists = Vec::new();
        for (r, item) in run {
            match item {
                ReplayItem::Float(s) => floats.push((*r, *s)),
                ReplayItem::Histogram(t, h) => hists.push((*r, *t, (**h).clone())),
            }
        }
        if !floats.is_empty() || out.is_empty() {
            out.push(Record::Samples(floats));
        }
        let (ints, fl) = crate::head::split_kinds(hists.into_iter());
        if !ints.is_empty() {
            out.push(Record::Histograms(ints));
        }
        if !fl.is_empty() {
            out.push(Record::FloatHistograms(fl));
        }
    }
    out
}

/// The samples of a WAL record (none of a series record).
pub(crate) fn replay_items(rec: Record) -> Vec<(u64, ReplayItem)> {
    match rec {
        Record::Series(_) => Vec::new(),
        Record::Samples(s) => s
            .into_iter()
            .map(|(r, x)| (r, ReplayItem::Float(x)))
            .collect(),
        Record::Histograms(h) => h
            .into_iter()
            .map(|(r, t, h)| {
                (
                    r,
                    ReplayItem::Histogram(t, Box::new(HistogramValue::Int(h))),
                )
            })
            .collect(),
        Record::FloatHistograms(h) => h
            .into_iter()
            .map(|(r, t, h)| {
                (
                    r,
                    ReplayItem::Histogram(t, Box::new(HistogramValue::Float(h))),
                )
            })
            .collect(),
    }
}

/// A batch of samples, validated as they are added and applied atomically on commit.
///
/// A series not in the head yet gets a *pending* reference, valid in this appender only; the series is
/// created at commit, and only when a sample of it is stored. So a batch that is rolled back or refused
/// (a scrape over `sample_limit`, a remote-write request of out-of-bounds samples) leaves no series and
/// no memory behind. A pending reference used with another appender is [`AppendError::UnknownRef`]:
/// resolve the labels again, as for a series that left the head.
#[derive(Debug)]
pub struct Appender<'a> {
    pub(super) db: &'a Db,
    /// Samples to store: by head reference or, for a new series, by pending reference.
    pub(super) pending: Vec<(u64, ReplayItem)>,
    /// Last pending sample per series, to check order within the batch.
    pub(super) last: crate::RefMap<(i64, u64)>,
    /// Labels of the series new to this batch, by index.
    pub(super) new_series: Vec<Labels>,
    /// Pending reference → index in `new_series`.
    pub(super) new_refs: crate::RefMap<usize>,
    /// Label hash → pending references, to find a new series again by its labels.
    pub(super) new_by_hash: crate::RefMap<Vec<u64>>,
    /// The latest timestamp accepted (the clock at creation plus the allowed lead).
    pub(super) max_valid: i64,
}

impl Appender<'_> {
    /// The reference of a series: its head reference, or a pending one when it is new (created at
    /// commit). References stay valid until the series leaves the head; an append with a stale one
    /// fails with [`AppendError::UnknownRef`].
    pub fn series_ref(&mut self, labels: &Labels) -> u64 {
        // A series first seen as new stays pending in this batch, even if a concurrent commit
        // creates it meanwhile: commit joins the two.
        if !self.new_series.is_empty()
            && let Some(p) = self.pending_ref(labels)
        {
            return p;
        }
        if let Some(r) = self.db.read().head.lookup(labels) {
            return r;
        }
        let hash = labels.hash_value();
        let p = self.db.next_pending_ref.fetch_add(1, Ordering::Relaxed) | PENDING_REF;
        self.new_refs.insert(p, self.new_series.len());
        self.new_series.push(labels.clone());
        self.new_by_hash.entry(hash).or_default().push(p);
        p
    }

    /// The pending reference of a series new to this batch.
    pub(super) fn pending_ref(&self, labels: &Labels) -> Option<u64> {
        self.new_by_hash
            .get(&labels.hash_value())?
            .iter()
            .copied()
            .find(|p| {
                self.new_refs
                    .get(p)
                    .is_some_and(|i| self.new_series[*i] == *labels)
            })
    }

    /// Adds a sample for a series reference (the hot path).
    pub fn append(&mut self, r: u64, t: i64, v: f64) -> std::result::Result<(), AppendError> {
        self.append_item(r, ReplayItem::Float(Sample::new(t, v)))
    }

    /// Adds a native-histogram sample for a series reference.
    pub fn append_histogram(
        &mut self,
        r: u64,
        t: i64,
        h: HistogramValue,
    ) -> std::result::Result<(), AppendError> {
        // Checked before anything is done with it (a stale marker has nothing to check).
        if !meridian_core::sample::is_stale_nan(h.sum())
            && let Err(reason) = h.validate()
        {
            let labels = match self.new_refs.get(&r) {
                Some(i) => self.new_series[*i].to_string(),
                None => self
                    .db
                    .read()
                    .head
                    .get(r)
                    .map_or_else(|| format!("series {r}"), |s| s.labels.to_string()),
            };
            let e = AppendError::InvalidHistogram { labels, t, reason };
            self.db.note_refusal(&e);
            return Err(e);
        }
        self.append_item(r, ReplayItem::Histogram(t, Box::new(h)))
    }

    fn append_item(&mut self, r: u64, item: ReplayItem) -> std::result::Result<(), AppendError> {
        let s = item.check_sample();
        let (t, v) = (s.t, s.v);
        let last = self.last.get(&r).copied();
        let checked = if r & PENDING_REF != 0 {
            let labels = self
                .new_refs
                .get(&r)
                .map(|i| &self.new_series[*i])
                .ok_or(AppendError::UnknownRef(r))?;
            self.db
                .read()
                .head
                .check_bounds(labels, t, self.max_valid)
                .and_then(|()| check_order(labels, s, last))
        } else {
            self.db.read().head.check(r, s, last, self.max_valid)
        };
        match checked {
            Ok(Accept::Append) => {
                self.pending.push((r, item));
                self.last.insert(r, (t, v.to_bits()));
                Ok(())
            }
            Ok(Accept::AlreadyStored) => Ok(()),
            Err(e) => {
                self.db.note_refusal(&e);
                Err(e)
            }
        }
    }

    /// Adds a sample for a label set; returns the series reference for later appends.
    pub fn add(
        &mut self,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> std::result::Result<u64, AppendError> {
        let r = self.series_ref(labels);
        self.append(r, t, v)?;
        Ok(r)
    }

    /// Writes the batch to the WAL and applies it: all of it or, on error, none of it. Creates the new
    /// series that have a sample to store. Returns the number of samples stored.
    pub fn commit(self) -> std::result::Result<usize, AppendError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let mut st = self.db.write();
        // New series a concurrent commit created since are joined (their samples checked against it).
        let existing: Vec<Option<u64>> =
            self.new_series.iter().map(|l| st.head.lookup(l)).collect();
        // Re-check against the head as it is now (other commits may have landed since `append`).
        let mut last: crate::RefMap<(i64, u64)> = crate::RefMap::default();
        last.reserve(self.pending.len());
        let mut keep = Vec::with_capacity(self.pending.len());
        for (r, item) in self.pending {
            let s = item.check_sample();
            let new = (r & PENDING_REF != 0)
                .then(|| self.new_refs.get(&r).copied())
                .flatten();
            let key = match new {
                Some(i) => existing[i].unwrap_or(r),
                None => r,
            };
            let prev = last.get(&key).copied();
            let accept = match new {
                Some(i) if key & PENDING_REF != 0 => {
                    let labels = &self.new_series[i];
                    st.head.check_bounds(labels, s.t, self.max_valid)?;
                    check_order(labels, s, prev)?
                }
                _ => st.head.check(key, s, prev, self.max_valid)?,
            };
            if accept == Accept::Append {
                keep.push((key, item));
                last.insert(key, (s.t, s.v.to_bits()));
            }
        }
        // Create the new series that have a sample to store, and collect every series whose record
        // is not in the WAL yet.
        let mut created: crate::RefMap<u64> = crate::RefMap::default();
        let mut new_series: Vec<(u64, Labels)> = Vec::new();
        let mut seen: crate::RefMap<()> = crate::RefMap::default();
        for (r, _) in &mut keep {
            if *r & PENDING_REF != 0 {
                let pending = *r;
                *r = match created.get(&pending) {
                    Some(real) => *real,
                    None => {
                        let i = *self
                            .new_refs
                            .get(&pending)
                            .ok_or(AppendError::UnknownRef(pending))?;
                        let real = st.head.get_or_create(&self.new_series[i]).0;
                        created.insert(pending, real);
                        real
                    }
                };
            }
            if seen.insert(*r, ()).is_none()
                && let Some(m) = st.head.get(*r)
                && !m.logged
            {
                new_series.push((*r, m.labels.clone()));
            }
        }
        let mut records = Vec::with_capacity(2);
        if !new_series.is_empty() {
            records.push(Record::Series(new_series));
        }
        let stored = keep.len();
        records.extend(sample_records(&keep));
        self.db
            .wal()
            .log(&records)
            .map_err(|e| AppendError::Storage(e.to_string()))?;
        if let Some(Record::Series(new)) = records.first() {
            for (r, _) in new {
                if let Some(s) = st.head.get_mut(*r) {
                    s.logged = true;
                }
            }
        }
        // In the batch's order: a series may switch between floats and histograms within it.
        for (r, item) in keep {
            match item {
                ReplayItem::Float(s) => st.head.append(r, s),
                ReplayItem::Histogram(t, h) => st.head.append_histogram(r, t, &h),
            }
        }
        self.db.metrics.samples_appended.inc_by(stored as u64);
        Ok(stored)
    }
    /// Drops the batch (series new to it are not created).
    pub fn rollback(self) {}
}
