//! Samples on their way, already encoded: each sample is one `WriteRequest.timeseries` entry (its
//! series' labels and the sample), written once when the watcher reads it from the WAL. Entries of a
//! `WriteRequest` simply follow each other, so a request body is any run of entries back to back,
//! and batches are cut and joined by copying byte ranges.
//!
//! Why: with a backlog of millions of samples over a million series, the labels of each sample are
//! read right after the series lookup (still in cache) and copied once; the earlier design handed
//! each sample around as a reference-counted label pointer and copied the labels at send time, which
//! cost two cache misses and a shared counter update per sample.

use super::client::wire;

/// Encoded samples; those before `from` have been taken.
#[derive(Debug, Default)]
pub struct Encoded {
    bytes: Vec<u8>,
    /// The end of each sample's entry in `bytes`.
    ends: Vec<u32>,
    /// Each sample's timestamp (ms).
    ts: Vec<i64>,
    from: usize,
}

impl Encoded {
    pub fn with_capacity(samples: usize) -> Encoded {
        Encoded {
            bytes: Vec::with_capacity(samples * 96),
            ends: Vec::with_capacity(samples),
            ts: Vec::with_capacity(samples),
            from: 0,
        }
    }

    /// The samples not taken yet.
    pub fn len(&self) -> usize {
        self.ends.len() - self.from
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a sample of the series whose labels are `labels` (from [`wire::encode_labels`]).
    pub fn push(&mut self, labels: &[u8], t: i64, v: f64) {
        wire::put_series_sample(&mut self.bytes, labels, t, v);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        self.ts.push(t);
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    /// The `WriteRequest` body holding the samples not taken (before compression).
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.start(self.from)..]
    }

    /// The highest timestamp among the samples not taken.
    pub fn highest(&self) -> Option<i64> {
        self.ts[self.from..].iter().copied().max()
    }

    /// Moves the next `n` samples (or fewer, when fewer are left) to the end of `into`.
    pub fn take_into(&mut self, n: usize, into: &mut Encoded) {
        let to = (self.from + n).min(self.ends.len());
        let (a, b) = (self.start(self.from), self.start(to));
        let base = into.bytes.len();
        into.bytes.extend_from_slice(&self.bytes[a..b]);
        into.ends.extend(
            self.ends[self.from..to]
                .iter()
                .map(|e| u32::try_from(base + (*e as usize - a)).unwrap_or(u32::MAX)),
        );
        into.ts.extend_from_slice(&self.ts[self.from..to]);
        self.from = to;
    }

    /// Splits the samples not taken into two halves, in order.
    pub fn halves(mut self) -> (Encoded, Encoded) {
        let n = self.len();
        let mut first = Encoded::with_capacity(n / 2);
        self.take_into(n / 2, &mut first);
        (first, self)
    }
}

/// Cuts the first `n` samples of a queue of pieces (all of them when there are fewer), taking the
/// front piece as it is when it holds exactly `n` untaken samples.
pub fn cut(pieces: &mut std::collections::VecDeque<Encoded>, n: usize) -> Encoded {
    if let Some(f) = pieces.front()
        && f.from == 0
        && f.len() == n
        && let Some(f) = pieces.pop_front()
    {
        return f;
    }
    let mut out = Encoded::with_capacity(n);
    while out.len() < n {
        let Some(f) = pieces.front_mut() else { break };
        f.take_into(n - out.len(), &mut out);
        if f.is_empty() {
            pieces.pop_front();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::collections::VecDeque;

    fn labels(i: usize) -> Vec<u8> {
        let v = "x".repeat(i % 200);
        wire::encode_labels([("__name__", "m"), ("i", v.as_str())].into_iter())
    }

    /// The body of samples `range` encoded in one go.
    fn direct(range: std::ops::Range<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in range {
            wire::put_series_sample(&mut out, &labels(i), i as i64 * 1000, i as f64);
        }
        out
    }

    fn piece(range: std::ops::Range<usize>) -> Encoded {
        let mut e = Encoded::with_capacity(range.len());
        for i in range {
            e.push(&labels(i), i as i64 * 1000, i as f64);
        }
        e
    }

    #[test]
    fn cutting_pieces_keeps_every_sample_once_and_in_order() {
        // Pieces of uneven sizes (as the watcher hands over), cut into sends of 7.
        let sizes = [7, 3, 11, 1, 7, 20, 2];
        let mut pieces = VecDeque::new();
        let mut at = 0;
        for s in sizes {
            pieces.push_back(piece(at..at + s));
            at += s;
        }
        let mut got = Vec::new();
        let mut counts = Vec::new();
        while !pieces.is_empty() {
            let b = cut(&mut pieces, 7);
            counts.push(b.len());
            got.extend_from_slice(b.body());
        }
        assert_eq!(got, direct(0..at));
        assert_eq!(counts, [7, 7, 7, 7, 7, 7, 7, 2]);
    }

    #[test]
    fn halves_split_the_untaken_samples() {
        let mut e = piece(0..9);
        let mut skipped = Encoded::default();
        e.take_into(2, &mut skipped);
        assert_eq!(skipped.body(), direct(0..2));
        assert_eq!(skipped.highest(), Some(1000));
        let (a, b) = e.halves();
        assert_eq!((a.len(), b.len()), (3, 4));
        assert_eq!(a.body(), direct(2..5));
        assert_eq!(b.body(), direct(5..9));
        assert_eq!(b.highest(), Some(8000));
        let (c, d) = piece(0..1).halves();
        assert_eq!((c.len(), d.len()), (0, 1));
        assert_eq!(Encoded::default().highest(), None);
    }
}
