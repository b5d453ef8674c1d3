//! One per-request limit, as Thanos' `store.Limiter` (`pkg/store/limiter.go`, v0.37): a request
//! reserves what it is about to take, and the reservation that passes the limit fails with
//! `LimitExceeded` (RESOURCE_EXHAUSTED on the wire), naming the limit and the flag that sets it.
//! The fan-out's per-query budget and the bucket store's per-request budget are made of these.

use std::sync::atomic::{AtomicU64, Ordering};

use meridian_core::error::{Error, Result};

/// A limit and what was reserved against it so far. Shared by the tasks of one request.
#[derive(Debug)]
pub struct Limiter {
    /// 0: no limit.
    limit: u64,
    used: AtomicU64,
    /// What is counted (`series`, `samples`, `bytes`).
    what: &'static str,
    /// How the message says it was taken and from where: (`the query fetched`, `from stores`).
    taken: (&'static str, &'static str),
    /// The flag that sets the limit.
    flag: &'static str,
}

impl Limiter {
    pub fn new(
        limit: u64,
        what: &'static str,
        taken: (&'static str, &'static str),
        flag: &'static str,
    ) -> Limiter {
        Limiter {
            limit,
            used: AtomicU64::new(0),
            what,
            taken,
            flag,
        }
    }

    /// Adds `n`; fails when the total passes the limit.
    pub fn reserve(&self, n: u64) -> Result<()> {
        let total = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if self.limit > 0 && total > self.limit {
            let (verb, place) = self.taken;
            return Err(Error::limit(format!(
                "{verb} more than {} {} {place} (limit {}); narrow the selectors or the time range",
                self.limit, self.what, self.flag
            )));
        }
        Ok(())
    }

    /// What was reserved so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::error::ErrorKind;

    #[test]
    fn the_reservation_passing_the_limit_fails_naming_the_flag() {
        let l = Limiter::new(10, "series", ("the query fetched", "from stores"), "--x");
        assert!(l.reserve(6).is_ok());
        assert!(l.reserve(4).is_ok());
        let e = l.reserve(1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert_eq!(
            e.message,
            "the query fetched more than 10 series from stores (limit --x); narrow the selectors or the time range"
        );
        let none = Limiter::new(0, "bytes", ("", ""), "--y");
        assert!(none.reserve(u64::MAX).is_ok() && none.reserve(1).is_ok());
    }
}
