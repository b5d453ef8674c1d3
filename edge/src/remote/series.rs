//! A queue's series cache: each WAL series reference → its encoded, relabeled labels (or "dropped by
//! relabeling"), and the segment where its series record was last seen, for garbage collection
//! after a checkpoint (v2.42 `QueueManager.StoreSeries` / `SeriesReset`, driven by the watcher's
//! `garbageCollectSeries`).
//!
//! Built for locality. A backlog of millions of samples over a million series is read in the order
//! the series were created (scrape order), so consecutive samples mostly have consecutive
//! references. The label bytes live in one arena in the order the series records came, and the map's
//! hash keeps consecutive references in consecutive buckets (`meridian_tsdb::SeqHasher`). Reading a backlog
//! then walks both mostly sequentially, instead of taking several cache misses per sample as a
//! scattered map with a heap allocation per series does.

use std::collections::HashMap;

use meridian_tsdb::SeqHasher;

/// Where a series' labels are in the arena.
#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u64,
    /// `DROPPED`: relabeling dropped the series.
    len: u32,
    /// The segment where its series record was last seen (saturating).
    seg: u32,
}

const DROPPED: u32 = u32::MAX;

/// What a queue knows about a reference.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Unknown,
    Dropped,
    Labels(&'a [u8]),
}

#[derive(Debug, Default)]
pub struct SeriesTable {
    slots: HashMap<u64, Slot, std::hash::BuildHasherDefault<SeqHasher>>,
    arena: Vec<u8>,
    /// Arena bytes of the series still in `slots`.
    live_bytes: usize,
}

impl SeriesTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records a series seen in segment `seg`; `None`: dropped by relabeling. A reference always
    /// names the same labels, so a known one only has its segment updated.
    pub fn insert(&mut self, r: u64, labels: Option<&[u8]>, seg: u64) {
        let seg = u32::try_from(seg).unwrap_or(u32::MAX);
        if let Some(s) = self.slots.get_mut(&r) {
            s.seg = s.seg.max(seg);
            return;
        }
        let slot = match labels {
            Some(l) => {
                let off = self.arena.len() as u64;
                self.arena.extend_from_slice(l);
                self.live_bytes += l.len();
                Slot {
                    off,
                    len: u32::try_from(l.len()).unwrap_or(DROPPED - 1),
                    seg,
                }
            }
            None => Slot {
                off: 0,
                len: DROPPED,
                seg,
            },
        };
        self.slots.insert(r, slot);
    }

    /// Whether `r` was seen; an absent series needs its labels, and a known one only its segment.
    pub fn contains(&self, r: u64) -> bool {
        self.slots.contains_key(&r)
    }

    #[inline]
    pub fn get(&self, r: u64) -> Lookup<'_> {
        match self.slots.get(&r) {
            None => Lookup::Unknown,
            Some(s) if s.len == DROPPED => Lookup::Dropped,
            Some(s) => {
                let a = s.off as usize;
                Lookup::Labels(&self.arena[a..a + s.len as usize])
            }
        }
    }

    /// Forgets the series last seen before segment `before` (the head dropped them when it wrote the
    /// checkpoint that covers that segment), and compacts the arena once most of it is garbage.
    pub fn reset(&mut self, before: u64) {
        let before = u32::try_from(before).unwrap_or(u32::MAX);
        let mut freed = 0usize;
        self.slots.retain(|_, s| {
            let keep = s.seg >= before;
            if !keep && s.len != DROPPED {
                freed += s.len as usize;
            }
            keep
        });
        self.live_bytes -= freed;
        if self.arena.len() > 2 * self.live_bytes + (1 << 20) {
            self.compact();
        }
        self.slots.shrink_to_fit();
    }

    /// Copies the live labels into a new arena, in reference order (creation order, which is the
    /// order a backlog is read in).
    fn compact(&mut self) {
        let mut refs: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.len != DROPPED)
            .map(|(r, _)| *r)
            .collect();
        refs.sort_unstable();
        let mut arena = Vec::with_capacity(self.live_bytes);
        for r in refs {
            if let Some(s) = self.slots.get_mut(&r) {
                let a = s.off as usize;
                s.off = arena.len() as u64;
                arena.extend_from_slice(&self.arena[a..a + s.len as usize]);
            }
        }
        self.arena = arena;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn labels(r: u64) -> Vec<u8> {
        format!("series-{r}-{}", "x".repeat((r % 200) as usize)).into_bytes()
    }

    #[test]
    fn lookups_survive_resets_and_compaction() {
        let mut t = SeriesTable::default();
        // Old series in segment 1, some dropped by relabeling; newer ones in segment 2.
        for r in 1..=40_000u64 {
            let seg = 1 + r / 30_000;
            let l = labels(r);
            t.insert(r, (r % 7 != 0).then_some(l.as_slice()), seg);
        }
        assert_eq!(t.get(14), Lookup::Dropped);
        assert_eq!(t.get(15), Lookup::Labels(labels(15).as_slice()));
        assert_eq!(t.get(40_001), Lookup::Unknown);
        // Seen again in a checkpoint covering segment 2: kept by the reset.
        t.insert(5, None, 2);
        assert_eq!(
            t.get(5),
            Lookup::Labels(labels(5).as_slice()),
            "labels kept"
        );
        let before = t.arena.len();
        t.reset(2);
        assert!(t.arena.len() < before, "the arena was compacted");
        for r in 1..=40_000u64 {
            let want = if r < 30_000 && r != 5 {
                Lookup::Unknown
            } else if r % 7 == 0 {
                Lookup::Dropped
            } else {
                continue;
            };
            assert_eq!(t.get(r), want, "ref {r}");
        }
        for r in (30_000..=40_000u64).chain([5]).filter(|r| r % 7 != 0) {
            assert_eq!(t.get(r), Lookup::Labels(labels(r).as_slice()), "ref {r}");
        }
        assert_eq!(t.len(), 10_002);
        assert_eq!(t.live_bytes, t.arena.len());
    }

    #[test]
    fn consecutive_references_hash_to_consecutive_values() {
        use std::hash::Hasher;
        // (The hasher lives in meridian-tsdb; this is where its property matters.)
        let h = |x: u64| {
            let mut s = SeqHasher::default();
            s.write_u64(x);
            s.finish()
        };
        let mask = (1u64 << 20) - 1;
        assert_eq!(h(1000) & mask, 1000);
        assert_eq!(h(1001) & mask, 1001);
        assert_ne!(h(1000) >> 57, h(1001) >> 57);
    }
}
