//! Routing one remote-write request over a hashring, and the answer its replicas' outcomes add up to,
//! as Thanos Receive decides them (`pkg/receive/handler.go` at `e103a81`, per series).
//!
//! - **Plan**: every series goes to `replication` endpoints (`Ring::get_n` for replica 0..RF), or to
//!   the one replica a forwarded request names (`THANOS-REPLICA` / the gRPC `replica` field, 1-based).
//!   Series are grouped by (endpoint, replica) so each group is one write.
//! - **Quorum**: `RF / 2 + 1` successes per series (Thanos v0.25.1's rule for every RF; Thanos ≥ 0.37
//!   takes 1 for RF = 2); a forwarded request (already replicated) needs its one write.
//! - **Answer**: 2xx when every series reached its quorum. Otherwise a series failed when its
//!   failures leave no way to the quorum, its cause being the most frequent of conflict,
//!   unavailable (ties in that order) when that reaches the quorum, else unavailable when the
//!   failures together do, else unknown; the request's status takes the worst cause over its failed
//!   series in the order unavailable (503) > conflict (409) > invalid (400) > unknown (500).

use std::collections::BTreeMap;

use super::hashring::{HashringError, Hashrings};

/// The series (by index into the request) each (endpoint, 0-based replica) writes.
pub type Plan = BTreeMap<(String, usize), Vec<usize>>;

/// Routes the series of one request of `tenant`, given by their hashes
/// ([`super::hashring::series_hash`]).
/// `replica`: the 1-based replica a forwarded request carries (0: not yet replicated).
pub fn plan(
    rings: &Hashrings,
    tenant: &str,
    hashes: &[u64],
    replica: u64,
) -> Result<Plan, RouteError> {
    let rf = rings.replication;
    if replica > rf as u64 {
        return Err(RouteError::BadReplica { replica, rf });
    }
    let ring = rings.ring(tenant)?;
    let replicas: Vec<usize> = if replica == 0 {
        (0..rf).collect()
    } else {
        vec![(replica - 1) as usize]
    };
    let mut out = Plan::new();
    for (i, &h) in hashes.iter().enumerate() {
        for &n in &replicas {
            let e = ring.get_n(h, n)?;
            out.entry((e.address.clone(), n)).or_default().push(i);
        }
    }
    Ok(out)
}

/// A request that cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("request replica {replica} exceeds the receiver's replication factor {rf}")]
    BadReplica { replica: u64, rf: usize },
    #[error(transparent)]
    Hashring(#[from] HashringError),
}

impl RouteError {
    pub fn status(&self) -> u16 {
        match self {
            RouteError::BadReplica { .. } => 400,
            RouteError::Hashring(_) => 500,
        }
    }
}

/// What one write (to a node, or locally) did for the series it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Out of order, duplicate, out of bounds: the sender must not retry (valid samples stored).
    Conflict(String),
    /// The node is down, backing off, or not ready: retrying may succeed.
    Unavailable(String),
    /// The request itself is bad (labels, replica): no retry.
    Invalid(String),
    Failed(String),
}

impl Outcome {
    fn rank(&self) -> u8 {
        match self {
            Outcome::Stored => 0,
            Outcome::Failed(_) => 1,
            Outcome::Invalid(_) => 2,
            Outcome::Conflict(_) => 3,
            Outcome::Unavailable(_) => 4,
        }
    }
}

/// Outcomes gathered per series.
#[derive(Debug)]
pub struct Tally {
    per_series: Vec<Vec<Outcome>>,
    quorum: usize,
    writes: usize,
}

/// The quorum of `rf` replicas (at least one write).
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

impl Tally {
    /// For `series` series each written `writes` times (RF, or 1 when already replicated).
    pub fn new(series: usize, writes: usize) -> Tally {
        Tally {
            per_series: vec![Vec::new(); series],
            quorum: if writes == 1 { 1 } else { quorum(writes) },
            writes,
        }
    }

    /// Records a write's outcome for the series it carried.
    pub fn record(&mut self, series: &[usize], outcome: &Outcome) {
        for &i in series {
            if let Some(v) = self.per_series.get_mut(i) {
                v.push(outcome.clone());
            }
        }
    }

    /// Whether every series has reached its quorum or can no longer (the rest need not be awaited).
    pub fn decided(&self) -> bool {
        self.per_series.iter().all(|o| {
            let ok = o.iter().filter(|x| **x == Outcome::Stored).count();
            ok >= self.quorum || o.len() - ok > self.writes - self.quorum
        })
    }

    /// The answer: `(status, message)`; 200 when every series reached its quorum.
    pub fn answer(&self) -> (u16, String) {
        let mut worst: Option<Outcome> = None;
        let mut failed = 0usize;
        for outcomes in &self.per_series {
            let ok = outcomes.iter().filter(|x| **x == Outcome::Stored).count();
            if ok >= self.quorum {
                continue;
            }
            failed += 1;
            let cause = self.cause(outcomes);
            if worst.as_ref().is_none_or(|w| cause.rank() > w.rank()) {
                worst = Some(cause);
            }
        }
        match worst {
            None => (200, String::new()),
            Some(w) => {
                let (status, what) = match &w {
                    Outcome::Unavailable(m) => (503, m.as_str()),
                    Outcome::Conflict(m) => (409, m.as_str()),
                    Outcome::Invalid(m) => (400, m.as_str()),
                    Outcome::Failed(m) => (500, m.as_str()),
                    Outcome::Stored => (500, "stored"),
                };
                (
                    status,
                    format!(
                        "{failed} of {} series did not reach the write quorum ({} of {}): {what}",
                        self.per_series.len(),
                        self.quorum,
                        self.writes
                    ),
                )
            }
        }
    }

    fn cause(&self, outcomes: &[Outcome]) -> Outcome {
        let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
        let conflicts = count(|o| matches!(o, Outcome::Conflict(_)));
        let unavailable = count(|o| matches!(o, Outcome::Unavailable(_)));
        let invalid = count(|o| matches!(o, Outcome::Invalid(_)));
        let first = |f: fn(&Outcome) -> bool| outcomes.iter().find(|o| f(o)).cloned();
        let errors = outcomes.len() - count(|o| *o == Outcome::Stored);
        // Most frequent cause reaching the quorum; ties: conflict, then unavailable.
        let best = [
            (conflicts, first(|o| matches!(o, Outcome::Conflict(_)))),
            (unavailable, first(|o| matches!(o, Outcome::Unavailable(_)))),
            (invalid, first(|o| matches!(o, Outcome::Invalid(_)))),
        ]
        .into_iter()
        .filter(|(n, _)| *n >= self.quorum)
        .max_by(|a, b| a.0.cmp(&b.0).then(std::cmp::Ordering::Greater));
        if let Some((_, Some(o))) = best {
            return o;
        }
        let missing = self.writes - outcomes.len();
        if errors >= self.quorum || missing > 0 {
            let why = first(|o| *o != Outcome::Stored)
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "a write did not answer in time".into());
            return Outcome::Unavailable(why);
        }
        first(|o| matches!(o, Outcome::Failed(_)))
            .unwrap_or_else(|| Outcome::Failed("mixed failures".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::hashring::{Algorithm, Hashrings, parse};
    use super::*;

    fn rings(rf: usize) -> Hashrings {
        let cfg = parse(r#"[{"endpoints": ["a:1", "b:1", "c:1"]}]"#).unwrap();
        Hashrings::build(cfg, Algorithm::Hashmod, rf).unwrap()
    }

    fn series(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let l = meridian_core::labels::Labels::from_pairs([
                    ("__name__", "m"),
                    ("i", &i.to_string()),
                ]);
                crate::receive::hashring::series_hash("t", &l)
            })
            .collect()
    }

    #[test]
    fn plans_every_series_on_rf_distinct_nodes_or_its_one_replica() {
        let s = series(300);
        let p = plan(&rings(3), "t", &s, 0).unwrap();
        for i in 0..s.len() {
            let mut nodes: Vec<&str> = p
                .iter()
                .filter(|(_, v)| v.contains(&i))
                .map(|((e, _), _)| e.as_str())
                .collect();
            nodes.sort_unstable();
            assert_eq!(nodes, ["a:1", "b:1", "c:1"], "series {i}");
        }
        // RF=1: each series once, spread over the three.
        let p = plan(&rings(1), "t", &s, 0).unwrap();
        let sizes: Vec<usize> = p.values().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        assert!(sizes.iter().all(|n| (60..=140).contains(n)), "{sizes:?}");
        // A forwarded request writes only its replica.
        let p = plan(&rings(3), "t", &s, 2).unwrap();
        assert!(p.keys().all(|(_, n)| *n == 1));
        assert!(matches!(
            plan(&rings(3), "t", &s, 4),
            Err(RouteError::BadReplica { .. })
        ));
    }

    #[test]
    fn answers_as_thanos_per_series() {
        let c = || Outcome::Conflict("out of order sample".into());
        let u = || Outcome::Unavailable("node down".into());
        let f = || Outcome::Failed("disk".into());
        let ok = Outcome::Stored;
        for (outcomes, want) in [
            (vec![ok.clone(), ok.clone(), u()], 200),
            (vec![ok.clone(), u(), u()], 503),
            (vec![c(), c(), ok.clone()], 409),
            (vec![c(), u(), ok.clone()], 503),
            // Failures reaching the quorum together, whatever they are: retry.
            (vec![f(), f(), ok.clone()], 503),
            // Writes that never answered (timeout) count as unavailable.
            (vec![ok.clone()], 503),
        ] {
            let mut t = Tally::new(1, 3);
            for o in &outcomes {
                t.record(&[0], o);
            }
            assert_eq!(t.answer().0, want, "{outcomes:?}: {}", t.answer().1);
        }
        // RF=4 (quorum 3): one conflict and one unavailable are neither enough: unknown, 500.
        let mut t = Tally::new(1, 4);
        for o in [c(), u(), ok.clone(), ok.clone()] {
            t.record(&[0], &o);
        }
        assert_eq!(t.answer().0, 500, "{}", t.answer().1);
        // Decided as soon as the quorum is reached, or out of reach.
        let mut t = Tally::new(2, 3);
        t.record(&[0, 1], &Outcome::Stored);
        assert!(!t.decided());
        t.record(&[0, 1], &Outcome::Stored);
        assert!(t.decided());
        // A forwarded request: its one write decides.
        let mut t = Tally::new(1, 1);
        t.record(&[0], &c());
        assert_eq!(t.answer().0, 409);
    }
}
