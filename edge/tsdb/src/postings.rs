//! Matcher evaluation over postings (label pair → sorted series IDs), shared by the block index and the
//! head.

use meridian_core::matcher::Matcher;
use meridian_core::series::SelectCost;

/// A postings index.
pub trait Postings {
    type Error;
    /// The values of a label, sorted.
    fn values(&self, name: &str) -> Vec<&str>;
    /// Sorted IDs of the series with `name=value`.
    fn list(&self, name: &str, value: &str) -> Result<Vec<u64>, Self::Error>;
    /// Sorted IDs of every series.
    fn all(&self) -> Result<Vec<u64>, Self::Error>;
    /// How many series have `name=value` (the length of [`Postings::list`]); indexes that know it
    /// without reading the list say so.
    fn count(&self, name: &str, value: &str) -> Result<usize, Self::Error> {
        Ok(self.list(name, value)?.len())
    }
}

/// What [`select`] reads for `matchers` and at most finds, when list lengths alone tell: every matcher
/// names its values (`=`, or a regex of literal alternatives), so no label's values are scanned and no
/// list of every series is read. Reads are the entries of every list named; found is at most the
/// shortest matcher's union. `None` when there is no such bound.
pub fn cheap_cost<P: Postings>(
    p: &P,
    matchers: &[Matcher],
) -> Result<Option<SelectCost>, P::Error> {
    let mut cost: Option<SelectCost> = None;
    for m in matchers {
        if m.matches_empty() {
            return Ok(None);
        }
        let Some(values) = m.set_values() else {
            return Ok(None);
        };
        let mut n = 0usize;
        for v in values {
            n = n.saturating_add(p.count(m.name(), v)?);
        }
        cost = Some(match cost {
            None => SelectCost {
                entries: n,
                series: n,
            },
            Some(c) => SelectCost {
                entries: c.entries.saturating_add(n),
                series: c.series.min(n),
            },
        });
    }
    Ok(cost)
}

/// Sorted IDs of the series satisfying every matcher (a missing label counts as `""`).
///
/// A series passes a matcher that accepts `""` unless it has a value the matcher rejects, and passes one
/// that rejects `""` only with a value the matcher accepts: intersect the accepted lists of the latter,
/// subtract the rejected lists of the former (Prometheus' `PostingsForMatchers` reasoning).
pub fn select<P: Postings>(p: &P, matchers: &[Matcher]) -> Result<Vec<u64>, P::Error> {
    let union = |name: &str, keep: &dyn Fn(&str) -> bool| -> Result<Vec<u64>, P::Error> {
        let mut out = Vec::new();
        for v in p.values(name) {
            if keep(v) {
                out.extend(p.list(name, v)?);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    };
    let mut result: Option<Vec<u64>> = None;
    let mut subtract = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            subtract.push(union(m.name(), &|v| !m.matches(v))?);
            continue;
        }
        let list = match m.set_values() {
            Some(values) => {
                let mut l = Vec::new();
                for v in values {
                    l.extend(p.list(m.name(), v)?);
                }
                l.sort_unstable();
                l.dedup();
                l
            }
            None => union(m.name(), &|v| m.matches(v))?,
        };
        let r = match result {
            None => list,
            Some(r) => intersect(&r, &list),
        };
        if r.is_empty() {
            return Ok(r);
        }
        result = Some(r);
    }
    let mut r = match result {
        Some(r) => r,
        None => p.all()?,
    };
    for s in subtract {
        r = difference(&r, &s);
    }
    Ok(r)
}

/// The postings lists [`select`] may read for `matchers`: `(name, value)` pairs, and whether it needs
/// the list of every series. A reader that fetches lists from far away (object storage) fetches these
/// together first, then runs [`select`] over what it fetched.
pub fn required<P: Postings>(p: &P, matchers: &[Matcher]) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let mut positive = false;
    for m in matchers {
        let name = m.name();
        if m.matches_empty() {
            out.extend(
                p.values(name)
                    .into_iter()
                    .filter(|v| !m.matches(v))
                    .map(|v| (name.to_owned(), v.to_owned())),
            );
            continue;
        }
        positive = true;
        match m.set_values() {
            Some(values) => out.extend(values.iter().map(|v| (name.to_owned(), v.to_string()))),
            None => out.extend(
                p.values(name)
                    .into_iter()
                    .filter(|v| m.matches(v))
                    .map(|v| (name.to_owned(), v.to_owned())),
            ),
        }
    }
    out.sort_unstable();
    out.dedup();
    (out, !positive)
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut j = 0;
    a.iter()
        .copied()
        .filter(|x| {
            while j < b.len() && b[j] < *x {
                j += 1;
            }
            !(j < b.len() && b[j] == *x)
        })
        .collect()
}
