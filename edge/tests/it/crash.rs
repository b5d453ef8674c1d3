//! Crash safety: a process appends and acknowledges batches (one commit = one timestamp across all
//! series) and is killed with SIGKILL at random points, repeatedly. After every kill the TSDB, reopened,
//! holds every acknowledged batch, and any batch it holds is whole: nothing unacknowledged is
//! half-visible. Crashes land in WAL writes, block writes and checkpoints alike (the writer compacts every
//! few batches with 10-minute blocks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_core::Matcher;
use meridian_tsdb::db::{Db, DbOptions};
use rand::{Rng, SeedableRng};

const SERIES: usize = 20;

fn value(t: i64, i: usize) -> f64 {
    // Mirrors `stress_value` in the edge binary.
    (t / 1000) as f64 + i as f64 / 64.0
}

#[test]
fn sigkill_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked_total = 0usize;
    for round in 0..24 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-edge"))
            .args(["tsdb", "stress-append"])
            .arg(dir.path())
            .args([
                "--series",
                &SERIES.to_string(),
                "--block-range-ms",
                "600000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want_acks = rng.random_range(0..40);
        let mut acked = Vec::new();
        while acked.len() < want_acks {
            match lines.next() {
                Some(Ok(l)) => {
                    acked.push(l.strip_prefix("acked ").unwrap().parse::<i64>().unwrap())
                }
                _ => panic!("round {round}: writer stopped early"),
            }
        }
        // Kill at an arbitrary point: right away, or in the middle of later work.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        acked_total += acked.len();

        let db = Db::open(
            dir.path(),
            DbOptions {
                block_range: 600_000,
                retention_time: None,
                ..Default::default()
            },
        )
        .unwrap();
        let got = db
            .samples(&[Matcher::equal("__name__", "stress")], i64::MIN, i64::MAX)
            .unwrap();
        let mut by_t: BTreeMap<i64, usize> = BTreeMap::new();
        for (labels, samples) in &got {
            let i: usize = labels.get("i").unwrap().parse().unwrap();
            for s in samples {
                assert_eq!(
                    s.v,
                    value(s.t, i),
                    "round {round}: wrong value for series {i} at {}",
                    s.t
                );
                *by_t.entry(s.t).or_default() += 1;
            }
        }
        for (t, n) in &by_t {
            assert_eq!(
                *n, SERIES,
                "round {round}: batch at {t} is half-visible ({n} of {SERIES} series)"
            );
        }
        for t in &acked {
            assert!(
                by_t.contains_key(t),
                "round {round}: acknowledged batch {t} lost"
            );
        }
        if round == 23 {
            assert!(
                db.blocks().len() > 3,
                "blocks were never cut: {:?}",
                db.blocks().len()
            );
        }
        drop(db);
    }
    assert!(
        acked_total > 100,
        "too few acknowledged batches ({acked_total}) to mean anything"
    );
}
