//! Rule evaluation throughput: 1,000 rules (10 groups of 100; half recording, half alerting) over 10,000
//! counter series × 1 h at 15 s, evaluated at a 1-minute interval, through the path the gateway's rule
//! manager uses: the PromQL engine over the fan-out querier (dedup on, partial response abort) of an
//! in-process store, recorded samples and `ALERTS` written to the embedded rule TSDB (WAL included).
//! One core (current-thread runtime, groups one after another). Reports the evaluation time of one
//! cycle (all 1,000 rules at one timestamp).
//!
//! Rules: `sum by (job, code) (rate(x{job}[5m]))` (1,000 series in, 10 out),
//! `sum by (instance) (rate(x{job, code}[5m]))` (100 in, 100 out), an alert on
//! `sum by (instance) (rate(x{job, code="c5"}[5m])) > 0.35` with `for: 5m` and a templated annotation
//! (some fire), and an alert on `max by (job) (x{job}) > 1e12` (1,000 in, none fire).
//!
//! Run: `cargo bench -p meridian-gateway --bench rules` (10,000 series, 1,000 rules); under
//! `cargo test --all-targets` a 100-series, 40-rule smoke run that checks every rule is healthy and
//! that alerts fire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_core::{Labels, Sample};
use meridian_gateway::fanout::{Fanout, FanoutOptions, QueryOptions, StaticStores};
use meridian_gateway::promql::Engine;
use meridian_gateway::queryable::Queryable;
use meridian_gateway::rules::tsdb::RuleTsdb;
use meridian_gateway::rules::{AlertState, EvalContext, Group, file};
use meridian_storeapi::Store;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::partial::PartialResponse;

const STEP: i64 = 15_000;
const POINTS: i64 = 240;

fn rules_yaml(rules: usize, groups: usize) -> String {
    let mut y = String::from("groups:\n");
    let per = rules / groups;
    for g in 0..groups {
        writeln!(y, "- name: g{g}\n  interval: 1m\n  rules:").unwrap();
        for r in 0..per {
            let i = g * per + r;
            let job = format!("j{}", i % 10);
            let code = format!("c{}", (i / 10) % 10);
            match i % 4 {
                0 => writeln!(
                    y,
                    "  - record: job_code:http_requests:rate5m\n    expr: sum by (job, code) (rate(http_requests_total{{job=\"{job}\"}}[5m]))\n    labels: {{rule: r{i}}}"
                ),
                1 => writeln!(
                    y,
                    "  - record: instance:http_requests:rate5m\n    expr: sum by (instance) (rate(http_requests_total{{job=\"{job}\", code=\"{code}\"}}[5m]))\n    labels: {{rule: r{i}}}"
                ),
                2 => writeln!(
                    y,
                    "  - alert: HighErrorRate\n    expr: sum by (instance) (rate(http_requests_total{{job=\"{job}\", code=\"c5\"}}[5m])) > 0.35\n    for: 5m\n    labels: {{rule: r{i}}}\n    annotations: {{summary: '{{{{ $labels.instance }}}}: {{{{ $value | humanize }}}} errors/s'}}"
                ),
                _ => writeln!(
                    y,
                    "  - alert: Overflow\n    expr: max by (job) (http_requests_total{{job=\"{job}\"}}) > 1e12\n    labels: {{rule: r{i}}}"
                ),
            }
            .unwrap();
        }
    }
    y
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (series, rules, groups) = if full {
        (10_000, 1_000, 10)
    } else {
        (100, 40, 2)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mem = MemStore::new(Labels::from_pairs([("cluster", "a")]));
        let instances = series / 100;
        for i in 0..series {
            let (job, inst, code) = (i % 10, (i / 10) % instances.max(1), i / 10 / instances.max(1));
            let l = Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", &format!("j{job}")),
                ("instance", &format!("i{inst:03}")),
                ("code", &format!("c{}", code % 10)),
            ]);
            // Per-second rates from 0 to 0.6: some instances' c5 error rates pass 0.35.
            let rate = (i % 7) as f64 * 0.1;
            let samples: Vec<Sample> = (0..POINTS)
                .map(|k| Sample::new(k * STEP, rate * (k * STEP) as f64 / 1000.0))
                .collect();
            mem.append(&l, &samples).unwrap();
        }
        let stores: Vec<(String, Arc<dyn Store>)> = vec![("mem".into(), Arc::new(mem))];
        let fanout = Arc::new(Fanout::new(
            Arc::new(StaticStores::probe(stores).await.unwrap()),
            FanoutOptions::default(),
        ));
        let dir = tempfile::tempdir().unwrap();
        let tsdb = RuleTsdb::open(
            &dir.path().join("rules-tsdb"),
            Labels::from_pairs([("ruler", "r1")]),
            Duration::from_secs(48 * 3600),
        )
        .unwrap();
        let view = fanout.clone();
        let ctx = EvalContext {
            engine: Engine::default(),
            queryable: Arc::new(move |strategy| {
                Arc::new(view.querier(QueryOptions {
                    dedup: true,
                    partial_response: Some(strategy),
                    ..QueryOptions::default()
                })) as Arc<dyn Queryable>
            }),
            sink: Arc::new(tsdb),
            alerts: None,
            external_labels: Default::default(),
            external_url: "http://meridian.example".into(),
            default_partial_response: PartialResponse::Abort,
            resend_delay: Duration::from_secs(60),
            for_outage_tolerance: Duration::from_secs(3600),
            for_grace_period: Duration::from_secs(600),
        };
        let rules_file = dir.path().join("rules.yml");
        std::fs::write(&rules_file, rules_yaml(rules, groups)).unwrap();
        let groups: Vec<Group> = file::load(&rules_file)
            .unwrap()
            .into_iter()
            .map(|s| Group::new(s, Duration::from_secs(60)))
            .collect();
        assert_eq!(groups.iter().map(|g| g.rules.len()).sum::<usize>(), rules);

        // Cycles one minute apart in the last 50 minutes of the data; the first warms up.
        let cycles = if full { 8 } else { 7 };
        let mut times = Vec::new();
        for c in 0..cycles {
            let ts = 10 * 60_000 + c * 60_000;
            let start = Instant::now();
            for g in &groups {
                g.eval(&ctx, ts).await;
            }
            if c > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        for g in &groups {
            for r in &g.rules {
                let h = r.health();
                assert_eq!(h.health, "ok", "{}: {}", r.spec.name, h.last_error);
            }
        }
        let firing = groups
            .iter()
            .flat_map(|g| g.alerts())
            .filter(|(_, a)| a.state == AlertState::Firing)
            .count();
        assert!(firing > 0, "no alert fired: the alerting rules were not exercised");
        let best = times.iter().copied().fold(f64::MAX, f64::min);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "rules: {rules} rules in {} groups over {series} series × {POINTS} samples, 1 core: \
             one cycle {best:.3}s best, {mean:.3}s mean of {} cycles ({:.0} rules/s); {firing} alerts firing",
            groups.len(),
            times.len(),
            rules as f64 / mean,
        );
    });
}
