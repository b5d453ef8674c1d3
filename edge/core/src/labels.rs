//! Label sets: sorted `(name, value)` pairs that identify a series.
//!
//! A [`Labels`] is one reference-counted allocation holding every name and value back to back, plus the
//! offsets that split them and a 64-bit hash computed on first use (most label sets on the query path —
//! decoded from an index, sent on, dropped — are never hashed). Cloning is a reference-count increment,
//! equality compares the hashes when both are known, and iteration hands out `&str` slices — nothing on a
//! per-sample path allocates.
//!
//! Semantics follow Prometheus: labels are sorted by name, names are unique, and a label with an empty value
//! is the same as an absent label (the builder drops it).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, LazyLock};

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label, borrowed from a [`Labels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A sorted, immutable label set. See the module documentation.
#[derive(Clone)]
pub struct Labels(Arc<Inner>);

struct Inner {
    /// `name0 value0 name1 value1 ...` concatenated.
    text: Box<str>,
    /// For label `i`: `ends[2i]` is where its name ends and `ends[2i + 1]` where its value ends, as byte
    /// offsets into `text`. Label sets are bounded far below 4 GiB by every input path (gRPC frames, HTTP
    /// bodies, exposition lines), so `u32` offsets halve the overhead without a real limit.
    ends: Box<[u32]>,
    /// [`Labels::hash_value`], or 0 until it is first asked for (a set whose hash is 0 is hashed again
    /// at every ask, which is correct and 2^-64 rare).
    hash: AtomicU64,
}

static EMPTY: LazyLock<Labels> = LazyLock::new(|| Labels::from_sorted_unique::<&str, &str>(&[]));

impl Labels {
    /// The empty label set (shared; no allocation).
    pub fn empty() -> Labels {
        EMPTY.clone()
    }

    /// Builds a label set from pairs in any order. Empty values are dropped; for a repeated name the last
    /// pair wins. Pairs already sorted by name, unique and without empty values (what every
    /// Prometheus-format encoder sends, and what wire decoders hand over) cost one check and the label
    /// set's own allocations; a `Vec` passed by value is not copied first.
    pub fn from_pairs<N, V, I>(pairs: I) -> Labels
    where
        N: AsRef<str>,
        V: AsRef<str>,
        I: IntoIterator<Item = (N, V)>,
    {
        let items: Vec<(N, V)> = pairs.into_iter().collect();
        if items.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref())
            && items.iter().all(|(_, v)| !v.as_ref().is_empty())
        {
            return Labels::from_sorted_unique(&items);
        }
        let mut refs: Vec<(usize, &str, &str)> = items
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (i, n.as_ref(), v.as_ref()))
            .collect();
        refs.sort_unstable_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(refs.len());
        for (_, n, v) in refs {
            match out.last_mut() {
                Some(last) if last.0 == n => *last = (n, v),
                _ => out.push((n, v)),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Labels::from_sorted_unique(&out)
    }

    /// Builds from pairs that are already sorted by name, unique and without empty values (checked in debug
    /// builds). This is the cheap path for decoders of formats that guarantee the order.
    fn from_sorted_unique<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Labels {
        debug_assert!(pairs.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref()));
        let total: usize = pairs
            .iter()
            .map(|(n, v)| n.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(total);
        let mut ends = Vec::with_capacity(pairs.len() * 2);
        for (n, v) in pairs {
            text.push_str(n.as_ref());
            ends.push(offset(text.len()));
            text.push_str(v.as_ref());
            ends.push(offset(text.len()));
        }
        Labels(Arc::new(Inner {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            hash: AtomicU64::new(0),
        }))
    }

    /// A label set from its names and values laid end to end (`name0 value0 name1 value1 ...`, the
    /// layout a [`Labels`] keeps) and the offset where each name and each value ends. `None` unless
    /// the names are sorted and unique, no value is empty and every offset is a character boundary
    /// ending at `text.len()`: decoders then build the set with [`Labels::from_pairs`]. One copy of
    /// the text, no per-label work beyond the checks.
    pub fn from_laid_out(text: &str, ends: &[u32]) -> Option<Labels> {
        if !ends.len().is_multiple_of(2)
            || ends
                .last()
                .map_or(!text.is_empty(), |&e| e as usize != text.len())
        {
            return None;
        }
        let mut start = 0usize;
        let mut prev_name: Option<&str> = None;
        for pair in ends.chunks_exact(2) {
            let (name_end, value_end) = (pair[0] as usize, pair[1] as usize);
            if name_end < start
                || value_end <= name_end
                || !text.is_char_boundary(name_end)
                || !text.is_char_boundary(value_end)
            {
                return None;
            }
            let name = text.get(start..name_end)?;
            if prev_name.is_some_and(|p| p >= name) {
                return None;
            }
            prev_name = Some(name);
            start = value_end;
        }
        Some(Labels(Arc::new(Inner {
            text: text.into(),
            ends: ends.into(),
            hash: AtomicU64::new(0),
        })))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.0.ends.is_empty()
    }

    /// The label at position `i` (sorted order).
    pub fn at(&self, i: usize) -> Label<'_> {
        let ends = &self.0.ends;
        let start = if i == 0 { 0 } else { ends[2 * i - 1] as usize };
        let name_end = ends[2 * i] as usize;
        let value_end = ends[2 * i + 1] as usize;
        Label {
            name: &self.0.text[start..name_end],
            value: &self.0.text[name_end..value_end],
        }
    }

    pub fn iter(&self) -> LabelsIter<'_> {
        LabelsIter {
            labels: self,
            front: 0,
            back: self.len(),
        }
    }

    /// The value of `name`, or `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Label sets are short: a binary search over names beats hashing.
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let l = self.at(mid);
            match l.name.cmp(name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(l.value),
            }
        }
        None
    }

    /// The value of `name`, or `""` when absent (Prometheus' "empty equals absent").
    pub fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The metric name (`__name__`), if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// The hash: xxh3 over `name 0xff value 0xff ...`. Stable across processes and releases of this
    /// crate (it is part of no on-disk format, but caches may key on it). Computed once, on first use.
    pub fn hash_value(&self) -> u64 {
        let known = self.0.hash.load(AtomicOrdering::Relaxed);
        if known != 0 {
            return known;
        }
        let h = hash_pairs(self.iter().map(|l| (l.name, l.value)));
        self.0.hash.store(h, AtomicOrdering::Relaxed);
        h
    }

    /// The hash if it was computed already.
    fn known_hash(&self) -> Option<u64> {
        Some(self.0.hash.load(AtomicOrdering::Relaxed)).filter(|&h| h != 0)
    }

    /// Bytes of label text (names and values), for memory accounting.
    pub fn text_len(&self) -> usize {
        self.0.text.len()
    }

    /// A copy without the named labels.
    pub fn without<S: AsRef<str>>(&self, names: &[S]) -> Labels {
        if !names.iter().any(|n| self.has(n.as_ref())) {
            return self.clone();
        }
        let kept: Vec<(&str, &str)> = self
            .iter()
            .filter(|l| !names.iter().any(|n| n.as_ref() == l.name))
            .map(|l| (l.name, l.value))
            .collect();
        Labels::from_sorted_unique(&kept)
    }

    /// A copy keeping only the named labels.
    pub fn keep_only<S: AsRef<str>>(&self, names: &[S]) -> Labels {
        let kept: Vec<(&str, &str)> = self
            .iter()
            .filter(|l| names.iter().any(|n| n.as_ref() == l.name))
            .map(|l| (l.name, l.value))
            .collect();
        Labels::from_sorted_unique(&kept)
    }

    /// This set extended by `other`; where both have a name, `other`'s value wins (how Thanos adds external
    /// labels to a series).
    pub fn merged_with(&self, other: &Labels) -> Labels {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        // One pass straight into the new set's buffers (this runs for every series a store sends).
        let mut text = String::with_capacity(self.0.text.len() + other.0.text.len());
        let mut ends = Vec::with_capacity(self.0.ends.len() + other.0.ends.len());
        let mut push = |l: Label<'_>| {
            text.push_str(l.name);
            ends.push(offset(text.len()));
            text.push_str(l.value);
            ends.push(offset(text.len()));
        };
        let (mut i, mut j) = (0, 0);
        while i < self.len() && j < other.len() {
            let (x, y) = (self.at(i), other.at(j));
            match x.name.cmp(y.name) {
                Ordering::Less => {
                    push(x);
                    i += 1;
                }
                Ordering::Greater => {
                    push(y);
                    j += 1;
                }
                Ordering::Equal => {
                    push(y);
                    i += 1;
                    j += 1;
                }
            }
        }
        (i..self.len()).for_each(|k| push(self.at(k)));
        (j..other.len()).for_each(|k| push(other.at(k)));
        Labels(Arc::new(Inner {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            hash: AtomicU64::new(0),
        }))
    }

    /// A builder starting from this set.
    pub fn to_builder(&self) -> LabelsBuilder {
        let mut b = LabelsBuilder::new();
        for l in self.iter() {
            b.pairs.push((l.name.to_owned(), l.value.to_owned()));
        }
        b
    }
}

#[allow(
    clippy::expect_used,
    reason = "an invariant: every input path bounds label text far below 4 GiB (see `Inner::ends`)"
)]
fn offset(len: usize) -> u32 {
    u32::try_from(len).expect("label set text exceeds 4 GiB")
}

/// xxh3 over `name 0xff value 0xff ...`, laid out in a per-thread buffer and hashed in one call: the
/// same value as feeding the pieces to a streaming hasher, at a fraction of the cost for short input.
fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        for (n, v) in pairs {
            b.extend_from_slice(n.as_bytes());
            b.push(0xff);
            b.extend_from_slice(v.as_bytes());
            b.push(0xff);
        }
        let h = xxhash_rust::xxh3::xxh3_64(&b);
        // A huge label set must not pin its size in every thread.
        if b.capacity() > 64 * 1024 {
            *b = Vec::new();
        }
        h
    })
}

/// Iterator over the labels of a [`Labels`], in name order.
#[derive(Debug)]
pub struct LabelsIter<'a> {
    labels: &'a Labels,
    front: usize,
    back: usize,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = Label<'a>;

    fn next(&mut self) -> Option<Label<'a>> {
        if self.front >= self.back {
            return None;
        }
        let l = self.labels.at(self.front);
        self.front += 1;
        Some(l)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for LabelsIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        Some(self.labels.at(self.back))
    }
}

impl ExactSizeIterator for LabelsIter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = Label<'a>;
    type IntoIter = LabelsIter<'a>;
    fn into_iter(self) -> LabelsIter<'a> {
        self.iter()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        if let (Some(a), Some(b)) = (self.known_hash(), other.known_hash())
            && a != b
        {
            return false;
        }
        self.0.ends == other.0.ends && self.0.text == other.0.text
    }
}

impl Eq for Labels {}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

impl Ord for Labels {
    /// Prometheus' `labels.Compare`: label by label, name then value; a prefix sorts first.
    fn cmp(&self, other: &Labels) -> Ordering {
        if self == other {
            return Ordering::Equal;
        }
        // Skip the labels both sets share: label i is shared when its offsets agree and the common prefix
        // of the packed texts reaches past its value. Then compare the first differing label properly.
        let (a, b) = (&self.0, &other.0);
        let p = common_prefix(a.text.as_bytes(), b.text.as_bytes());
        let n = self.len().min(other.len());
        let mut i = 0;
        while i < n
            && a.ends[2 * i] == b.ends[2 * i]
            && a.ends[2 * i + 1] == b.ends[2 * i + 1]
            && a.ends[2 * i + 1] as usize <= p
        {
            i += 1;
        }
        if i < n {
            let (x, y) = (self.at(i), other.at(i));
            return x.name.cmp(y.name).then_with(|| x.value.cmp(y.value));
        }
        self.len().cmp(&other.len())
    }
}

/// Length of the common prefix of two byte strings, 8 bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
        x.copy_from_slice(&a[i..i + 8]);
        y.copy_from_slice(&b[i..i + 8]);
        let d = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Default for Labels {
    fn default() -> Labels {
        Labels::empty()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `{__name__="up", job="api"}` with Go-quoted values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=", l.name)?;
            write_go_quoted(f, l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes `s` as Go's `strconv.Quote` would (the quoting Prometheus uses in label sets and matchers).
pub fn write_go_quoted<W: fmt::Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\u{07}' => w.write_str("\\a")?,
            '\u{08}' => w.write_str("\\b")?,
            '\u{0c}' => w.write_str("\\f")?,
            '\u{0b}' => w.write_str("\\v")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(w, "\\x{:02x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

/// Mutable label set under construction; [`LabelsBuilder::build`] sorts and freezes it.
#[derive(Debug, Default, Clone)]
pub struct LabelsBuilder {
    pairs: Vec<(String, String)>,
}

impl LabelsBuilder {
    pub fn new() -> LabelsBuilder {
        LabelsBuilder::default()
    }

    /// Sets `name` to `value`, replacing an earlier value; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if let Some(p) = self.pairs.iter_mut().find(|(n, _)| n == name) {
            value.clone_into(&mut p.1);
        } else {
            self.pairs.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A snapshot of the non-empty labels, in insertion order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .cloned()
            .collect()
    }

    /// Removes every label.
    pub fn clear(&mut self) {
        self.pairs.clear();
    }

    /// Freezes the set: sorted by name, empty values dropped. The builder can be reused.
    pub fn build(&self) -> Labels {
        let mut refs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Labels::from_sorted_unique(&refs)
    }
}

/// A label set as the Prometheus HTTP API writes it: a JSON object.
pub fn labels_json(l: &Labels) -> serde_json::Value {
    serde_json::Value::Object(
        l.iter()
            .map(|x| {
                (
                    x.name.to_owned(),
                    serde_json::Value::String(x.value.to_owned()),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn sorted_unique_and_empty_dropped() {
        let x = l(&[("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        let got: Vec<_> = x.iter().map(|l| (l.name, l.value)).collect();
        assert_eq!(got, vec![("a", "3"), ("b", "2")]);
        assert_eq!(x.get("c"), None);
        assert_eq!(x.get_or_empty("c"), "");
        assert_eq!(x.to_string(), r#"{a="3", b="2"}"#);
    }

    #[test]
    fn compare_like_prometheus() {
        // A prefix sorts first, and comparison is label by label, not over the concatenated text.
        let a = l(&[("a", "1")]);
        let b = l(&[("a", "1"), ("b", "1")]);
        let c = l(&[("a", "1"), ("c", "x")]);
        assert!(a < b);
        assert!(b < c);
        // "ab"+"c" and "a"+"bc" concatenate to the same text but are different label sets.
        let d = l(&[("ab", "c")]);
        let e = l(&[("a", "bc")]);
        assert_ne!(d, e);
        assert!(e < d);
        assert_ne!(d.hash_value(), e.hash_value());
    }

    #[test]
    fn merged_with_other_wins() {
        let series = l(&[("job", "api"), ("region", "us")]);
        let ext = l(&[("region", "eu"), ("replica", "r1")]);
        let m = series.merged_with(&ext);
        assert_eq!(m, l(&[("job", "api"), ("region", "eu"), ("replica", "r1")]));
        assert_eq!(
            m.without(&["replica"]),
            l(&[("job", "api"), ("region", "eu")])
        );
        assert_eq!(m.keep_only(&["job"]), l(&[("job", "api")]));
    }

    #[test]
    fn go_quoting() {
        let x = l(&[("a", "x\"y\\z\n\u{1}ü")]);
        assert_eq!(x.to_string(), "{a=\"x\\\"y\\\\z\\n\\x01ü\"}");
    }

    proptest! {
        /// `from_pairs` keeps its rules (sorted, last value of a name wins, empty values dropped) on the
        /// fast path (input already sorted, unique, non-empty) and off it, hash included.
        #[test]
        fn from_pairs_fast_path_keeps_the_rules(
            pairs in proptest::collection::vec(("[a-c]{1,2}", "[a-c]{0,2}"), 0..6),
            sort in any::<bool>(),
        ) {
            let mut pairs = pairs;
            if sort {
                pairs.sort();
                pairs.dedup_by(|a, b| a.0 == b.0);
            }
            let mut model = std::collections::BTreeMap::new();
            for (n, v) in &pairs {
                model.insert(n.as_str(), v.as_str());
            }
            model.retain(|_, v| !v.is_empty());
            let want: Vec<(&str, &str)> = model.into_iter().collect();
            let got = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            prop_assert_eq!(got.iter().map(|l| (l.name, l.value)).collect::<Vec<_>>(), want.clone());
            // The same set in reverse order takes the sorting path.
            let reversed = Labels::from_pairs(want.iter().rev().copied());
            prop_assert_eq!(&got, &reversed);
            prop_assert_eq!(got.hash_value(), reversed.hash_value());
        }
    }

    proptest! {
        /// The hash is the documented one (a streaming xxh3 over `name 0xff value 0xff ...`, as it was
        /// computed before it became lazy and one-shot), whether asked for before or after an equality
        /// check, and equal sets hash alike however they were built.
        #[test]
        fn hash_is_xxh3_over_the_pairs(
            a in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,40}", 0..12),
            ask_first in any::<bool>(),
        ) {
            let la = Labels::from_pairs(a.iter());
            let lb = Labels::from_pairs(a.iter().rev());
            if ask_first {
                let _ = la.hash_value();
            }
            prop_assert_eq!(&la, &lb);
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for (n, v) in a.iter().filter(|(_, v)| !v.is_empty()) {
                h.update(n.as_bytes());
                h.update(&[0xff]);
                h.update(v.as_bytes());
                h.update(&[0xff]);
            }
            prop_assert_eq!(la.hash_value(), h.digest());
            prop_assert_eq!(lb.hash_value(), h.digest());
        }
    }

    proptest! {
        /// `from_laid_out` accepts exactly what `from_pairs` would keep as is (sorted, unique, no empty
        /// value) and builds the same set; anything else is refused.
        #[test]
        fn from_laid_out_matches_from_pairs(
            pairs in proptest::collection::vec(("[a-cé]{0,2}", "[a-cé]{0,2}"), 0..5),
        ) {
            let mut text = String::new();
            let mut ends = Vec::new();
            for (n, v) in &pairs {
                text.push_str(n);
                ends.push(text.len() as u32);
                text.push_str(v);
                ends.push(text.len() as u32);
            }
            let canonical = pairs.windows(2).all(|w| w[0].0 < w[1].0) && pairs.iter().all(|(_, v)| !v.is_empty());
            match Labels::from_laid_out(&text, &ends) {
                Some(l) => {
                    prop_assert!(canonical);
                    let want = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                    prop_assert_eq!(&l, &want);
                    prop_assert_eq!(l.hash_value(), want.hash_value());
                }
                None => prop_assert!(!canonical),
            }
            // An offset inside a character, or not ending at the text's end, is refused.
            if let Some(last) = ends.last_mut() {
                *last = last.saturating_sub(1);
                prop_assert!(Labels::from_laid_out(&text, &ends).is_none());
            }
        }
    }

    proptest! {
        /// `merged_with` is the union of both sets, the argument's value winning on a shared name.
        #[test]
        fn merged_with_matches_a_model(
            a in proptest::collection::btree_map("[a-d]{1,2}", "[a-c]{1,2}", 0..5),
            b in proptest::collection::btree_map("[a-d]{1,2}", "[x-z]{1,2}", 0..5),
        ) {
            let (la, lb) = (Labels::from_pairs(a.iter()), Labels::from_pairs(b.iter()));
            let mut model = a.clone();
            model.extend(b.clone());
            let got = la.merged_with(&lb);
            prop_assert_eq!(&got, &Labels::from_pairs(model.iter()));
            prop_assert_eq!(got.hash_value(), Labels::from_pairs(model.iter()).hash_value());
        }
    }

    proptest! {
        #[test]
        fn ordering_matches_pairwise_compare(
            a in proptest::collection::btree_map("[a-c]{1,2}", "[a-c]{0,2}", 0..4),
            b in proptest::collection::btree_map("[a-c]{1,2}", "[a-c]{0,2}", 0..4),
        ) {
            let la = Labels::from_pairs(a.iter());
            let lb = Labels::from_pairs(b.iter());
            let va: Vec<_> = a.iter().filter(|(_, v)| !v.is_empty()).collect();
            let vb: Vec<_> = b.iter().filter(|(_, v)| !v.is_empty()).collect();
            prop_assert_eq!(la.cmp(&lb), va.cmp(&vb));
            prop_assert_eq!(la == lb, va == vb);
            if la == lb {
                prop_assert_eq!(la.hash_value(), lb.hash_value());
            }
            let set: HashSet<Labels> = [la.clone(), lb.clone()].into_iter().collect();
            prop_assert_eq!(set.len(), if va == vb { 1 } else { 2 });
        }
    }
}
