//! Meridian's end-to-end tests (in `tests/`) and side-by-side benchmarks against real components.
//! Shared helpers live in `meridian-testkit`; [`demo`] makes the data PromQL comparisons run on and
//! [`bench`] holds what the side-by-side benchmarks share; [`federation`] starts the local federation (README command 1) with
//! its [`dns`] server and demo [`exporter`].

pub mod browser;
pub mod chaos;
pub mod dns;
pub mod exporter;
pub mod federation;
pub mod histograms;
pub mod receivers;
pub mod served;

/// Synthetic series shaped like the PromLabs demo service's (what the PromQL compliance query list
/// expects), deterministic.
pub mod demo {
    use std::collections::BTreeMap;

    use meridian_core::{Labels, Sample};
    use meridian_gateway::queryable::SeriesData;
    use meridian_testkit::{Prometheus, run_ok};

    /// A Prometheus serving `series` from blocks that `promtool tsdb create-blocks-from openmetrics`
    /// made in `dir`; `None` when Prometheus is missing outside CI.
    pub fn prometheus_from_blocks(
        promtool: &std::path::Path,
        dir: &std::path::Path,
        series: &[SeriesData],
    ) -> Option<Prometheus> {
        promtool_blocks(promtool, dir, series);
        Prometheus::start(dir, "global: {}\n", &["--storage.tsdb.retention.time=100y"])
    }

    /// Blocks made by `promtool tsdb create-blocks-from openmetrics` from `series`, in
    /// `dir/prom-data` (where [`prometheus_from_blocks`] starts Prometheus); returns their directories.
    pub fn promtool_blocks(
        promtool: &std::path::Path,
        dir: &std::path::Path,
        series: &[SeriesData],
    ) -> Vec<std::path::PathBuf> {
        let om = dir.join("data.om");
        std::fs::write(&om, openmetrics(series))
            .unwrap_or_else(|e| panic!("writing {}: {e}", om.display()));
        let data = dir.join("prom-data");
        create_blocks(promtool, &om, &data);
        block_dirs(&data)
    }

    fn create_blocks(promtool: &std::path::Path, om: &std::path::Path, data: &std::path::Path) {
        run_ok(
            std::process::Command::new(promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(om)
                .arg(data),
        );
    }

    /// The block directories in `data`, sorted.
    pub fn block_dirs(data: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut blocks: Vec<std::path::PathBuf> = std::fs::read_dir(data)
            .unwrap_or_else(|e| panic!("reading {}: {e}", data.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("meta.json").is_file())
            .collect();
        blocks.sort();
        blocks
    }

    /// First sample time (2 h aligned), ms.
    pub const T0: i64 = 1_700_006_400_000;
    /// Scrape interval, ms.
    pub const STEP: i64 = 15_000;
    /// Samples sit this far past the interval grid, so no query boundary (whole or half seconds) ever
    /// coincides with one: Prometheus 2.42's closed and Prometheus 3's left-open windows then agree.
    pub const OFFSET_MS: i64 = 3_217;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Demo-shaped series: per instance 4 memory gauges, 3 CPU counters (one reset each), CPU count, a
    /// disk gauge with a trend, a batch timestamp that steps every 5 minutes, an intermittent metric and two
    /// request-duration histograms (buckets, sum, count); `points` samples each, 15 s apart, at an odd
    /// millisecond offset from [`T0`].
    pub fn generate(instances: usize, points: i64) -> Vec<SeriesData> {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        let t = |k: i64| T0 + k * STEP + OFFSET_MS;
        for i in 0..instances {
            let instance = format!("demo.promlabs.com:{}", 10000 + i);
            let base = |name: &str, extra: &[(&str, &str)]| {
                let mut pairs = vec![
                    ("__name__", name),
                    ("instance", instance.as_str()),
                    ("job", "demo"),
                ];
                pairs.extend_from_slice(extra);
                Labels::from_pairs(pairs)
            };
            for ty in ["buffers", "cached", "free", "used"] {
                let mut v = 1e9 * (1.0 + rng.next());
                let samples = (0..points)
                    .map(|k| {
                        v += (rng.next() - 0.5) * 1e7;
                        Sample::new(t(k), v.round())
                    })
                    .collect();
                out.push(SeriesData {
                    labels: base("demo_memory_usage_bytes", &[("type", ty)]),
                    samples,
                    ..Default::default()
                });
            }
            for mode in ["idle", "system", "user"] {
                let mut v = 1000.0 * rng.next();
                let reset_at = (points / 5) + (rng.next() * (points / 2) as f64) as i64;
                let samples = (0..points)
                    .map(|k| {
                        if k == reset_at {
                            v = 0.0;
                        }
                        v += 15.0 * rng.next();
                        Sample::new(t(k), (v * 1000.0).round() / 1000.0)
                    })
                    .collect();
                out.push(SeriesData {
                    labels: base("demo_cpu_usage_seconds_total", &[("mode", mode)]),
                    samples,
                    ..Default::default()
                });
            }
            out.push(SeriesData {
                labels: base("demo_num_cpus", &[]),
                samples: (0..points)
                    .map(|k| Sample::new(t(k), f64::from(4 << i)))
                    .collect(),
                ..Default::default()
            });
            let mut disk = 5e10;
            out.push(SeriesData {
                labels: base("demo_disk_usage_bytes", &[]),
                samples: (0..points)
                    .map(|k| {
                        disk += 1e6 * (rng.next() + 0.2);
                        Sample::new(t(k), disk.round())
                    })
                    .collect(),
                ..Default::default()
            });
            let mut last = (T0 / 1000) as f64;
            out.push(SeriesData {
                labels: base("demo_batch_last_success_timestamp_seconds", &[]),
                samples: (0..points)
                    .map(|k| {
                        if k % 20 == 7 {
                            last = (t(k) / 1000) as f64;
                        }
                        Sample::new(t(k), last)
                    })
                    .collect(),
                ..Default::default()
            });
            // Present in bursts, absent (longer than the lookback) in between.
            out.push(SeriesData {
                labels: base("demo_intermittent_metric", &[]),
                samples: (0..points)
                    .filter(|k| (k / 40) % 2 == 0)
                    .map(|k| Sample::new(t(k), k as f64))
                    .collect(),
                ..Default::default()
            });
            for (method, path) in [("GET", "/api/foo"), ("POST", "/api/bar")] {
                let bounds = ["0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
                let mut counts = [0.0f64; 6];
                let mut sum = 0.0;
                let mut series: Vec<Vec<Sample>> = vec![Vec::new(); 8];
                for k in 0..points {
                    for _ in 0..(5.0 + 10.0 * rng.next()) as usize {
                        let d = rng.next() * rng.next() * 4.0;
                        sum += d;
                        for (b, c) in counts.iter_mut().enumerate() {
                            let ub: f64 = if b == 5 {
                                f64::INFINITY
                            } else {
                                bounds[b].parse().unwrap_or(f64::INFINITY)
                            };
                            if d <= ub {
                                *c += 1.0;
                            }
                        }
                    }
                    for b in 0..6 {
                        series[b].push(Sample::new(t(k), counts[b]));
                    }
                    series[6].push(Sample::new(t(k), (sum * 1e6).round() / 1e6));
                    series[7].push(Sample::new(t(k), counts[5]));
                }
                let common = [("method", method), ("path", path), ("status", "200")];
                for (b, samples) in series.into_iter().enumerate() {
                    let labels = match b {
                        0..=5 => {
                            let mut extra = common.to_vec();
                            extra.push(("le", bounds[b]));
                            base("demo_api_request_duration_seconds_bucket", &extra)
                        }
                        6 => base("demo_api_request_duration_seconds_sum", &common),
                        _ => base("demo_api_request_duration_seconds_count", &common),
                    };
                    out.push(SeriesData {
                        labels,
                        samples,
                        ..Default::default()
                    });
                }
            }
        }
        out
    }

    /// The series as an OpenMetrics text (every family typed `unknown`), for `promtool tsdb create-blocks-from`.
    pub fn openmetrics(series: &[SeriesData]) -> String {
        let mut out = Vec::new();
        write_openmetrics(&mut out, series, i64::MIN, i64::MAX)
            .unwrap_or_else(|e| panic!("writing OpenMetrics: {e}"));
        String::from_utf8(out).unwrap_or_else(|e| panic!("OpenMetrics text: {e}"))
    }

    /// Writes the samples of `series` in `[from, to)` as an OpenMetrics text into `w`.
    pub fn write_openmetrics(
        w: &mut impl std::io::Write,
        series: &[SeriesData],
        from: i64,
        to: i64,
    ) -> std::io::Result<()> {
        let mut by_name: BTreeMap<&str, Vec<&SeriesData>> = BTreeMap::new();
        for s in series {
            by_name
                .entry(s.labels.metric_name().unwrap_or(""))
                .or_default()
                .push(s);
        }
        for (name, list) in by_name {
            writeln!(w, "# TYPE {name} unknown")?;
            for s in list {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| format!("{}=\"{}\"", l.name, l.value))
                    .collect();
                let labels = labels.join(",");
                for smp in s.samples.iter().filter(|x| x.t >= from && x.t < to) {
                    writeln!(
                        w,
                        "{name}{{{labels}}} {} {}.{:03}",
                        smp.v,
                        smp.t / 1000,
                        smp.t % 1000
                    )?;
                }
            }
        }
        writeln!(w, "# EOF")
    }

    /// Like [`promtool_blocks`], for data too large for one text: promtool runs once per `slice_ms`
    /// of time (each text holds only that slice), all into `dir/prom-data`.
    pub fn promtool_blocks_sliced(
        promtool: &std::path::Path,
        dir: &std::path::Path,
        series: &[SeriesData],
        slice_ms: i64,
    ) -> Vec<std::path::PathBuf> {
        let (lo, hi) = series
            .iter()
            .flat_map(|s| s.samples.first().zip(s.samples.last()))
            .fold((i64::MAX, i64::MIN), |(lo, hi), (a, b)| {
                (lo.min(a.t), hi.max(b.t))
            });
        let data = dir.join("prom-data");
        let om = dir.join("slice.om");
        let mut from = lo - lo.rem_euclid(slice_ms);
        while from <= hi {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&om)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", om.display())),
            );
            write_openmetrics(&mut f, series, from, from + slice_ms)
                .and_then(|()| std::io::Write::flush(&mut f))
                .unwrap_or_else(|e| panic!("writing {}: {e}", om.display()));
            drop(f);
            create_blocks(promtool, &om, &data);
            from += slice_ms;
        }
        let _ = std::fs::remove_file(&om);
        block_dirs(&data)
    }

    /// The compliance tester's variant values.
    fn variants(arg: &str) -> Vec<&'static str> {
        match arg {
            "offset" => vec!["1m", "5m", "10m"],
            "range" => vec!["1s", "15s", "1m", "5m", "15m", "1h"],
            "simpleAggrOp" => vec!["sum", "avg", "max", "min", "count", "stddev", "stdvar"],
            "topBottomOp" => vec!["topk", "bottomk"],
            "quantile" => vec![
                "-0.5", "0.1", "0.5", "0.75", "0.95", "0.90", "0.99", "1", "1.5",
            ],
            "arithBinOp" => vec!["+", "-", "*", "/", "%", "^"],
            "compBinOp" => vec!["==", "!=", "<", ">", "<=", ">="],
            "binOp" => vec![
                "+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">=",
            ],
            "simpleTimeAggrOp" => vec![
                "sum", "avg", "max", "min", "count", "stddev", "stdvar", "last", "present",
            ],
            "simpleMathFunc" => vec![
                "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round",
            ],
            "extrapolatedRateFunc" => vec!["delta", "rate", "increase"],
            "instantRateFunc" => vec!["idelta", "irate"],
            "clampFunc" => vec!["clamp_min", "clamp_max"],
            "dateFunc" => vec![
                "day_of_month",
                "day_of_week",
                "days_in_month",
                "hour",
                "minute",
                "month",
                "year",
            ],
            // An argument this list does not know expands to nothing (the query is left out).
            _ => vec![],
        }
    }

    /// The queries of the PromQL compliance list (`promql-test-queries.yml`) with every variant expanded.
    pub fn compliance_queries(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            let Some(rest) = l
                .strip_prefix("- query:")
                .or_else(|| l.strip_prefix("query:"))
            else {
                continue;
            };
            let q = rest.trim();
            let q = q
                .strip_prefix('\'')
                .and_then(|x| x.strip_suffix('\''))
                .or_else(|| q.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                .unwrap_or(q)
                .to_owned();
            let mut expanded = vec![q];
            loop {
                let mut next = Vec::new();
                let mut changed = false;
                for q in &expanded {
                    if let Some(start) = q.find("{{.") {
                        let Some(end) = q[start..].find("}}").map(|e| e + start) else {
                            continue;
                        };
                        let arg = &q[start + 3..end];
                        for v in variants(arg) {
                            // The same argument everywhere in the query takes the same value.
                            next.push(q.replace(&format!("{{{{.{arg}}}}}"), v));
                        }
                        changed = true;
                    } else {
                        next.push(q.clone());
                    }
                }
                expanded = next;
                if !changed {
                    break;
                }
            }
            out.extend(expanded);
        }
        out
    }
}

/// What the side-by-side benchmarks share: timing and loading Prometheus by remote write.
pub mod bench {
    use std::time::{Duration, Instant};

    use std::path::Path;
    use std::sync::Arc;

    use meridian_core::Labels;
    use meridian_gateway::fanout::{Fanout, FanoutOptions, StaticStores};
    use meridian_gateway::queryable::SeriesData;
    use meridian_storeapi::Store;
    use meridian_storeapi::leaf::LeafStore;
    use meridian_storeapi::proto::prometheus as prom;
    use meridian_tsdb::db::{Db, DbOptions, DbSource};

    use crate::demo::{STEP, T0};

    /// A TSDB in `dir` holding `series`, cut into blocks (queries read the block reader).
    pub fn load_tsdb(dir: &Path, series: &[SeriesData]) -> Arc<Db> {
        let db = Arc::new(
            Db::open(dir, DbOptions::default()).unwrap_or_else(|e| panic!("opening the TSDB: {e}")),
        );
        for s in series {
            let mut app = db.appender();
            let r = app.series_ref(&s.labels);
            for x in &s.samples {
                app.append(r, x.t, x.v)
                    .unwrap_or_else(|e| panic!("appending to the TSDB: {e}"));
            }
            app.commit()
                .unwrap_or_else(|e| panic!("committing to the TSDB: {e}"));
        }
        db.flush_head()
            .unwrap_or_else(|e| panic!("cutting blocks: {e}"));
        db
    }

    /// The fan-out over one leaf store on `db` (in process, no network).
    pub async fn tsdb_fanout(db: Arc<Db>) -> Arc<Fanout> {
        let store: Arc<dyn Store> = Arc::new(LeafStore::from_source(DbSource(db), Labels::empty()));
        let set = StaticStores::probe(vec![("tsdb".into(), store)])
            .await
            .unwrap_or_else(|e| panic!("probing the TSDB store: {e}"));
        Arc::new(Fanout::new(Arc::new(set), FanoutOptions::default()))
    }

    /// The best wall time of `runs` runs of `f`; `None` when a run fails (`f` returns false).
    pub fn best<F: FnMut() -> bool>(runs: usize, mut f: F) -> Option<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let start = Instant::now();
            if !f() {
                return None;
            }
            best = best.min(start.elapsed());
        }
        Some(best)
    }

    /// One remote-write series.
    pub fn time_series(labels: &Labels, samples: Vec<prom::Sample>) -> prom::TimeSeries {
        prom::TimeSeries {
            labels: labels
                .iter()
                .map(|l| prom::Label {
                    name: l.name.to_owned(),
                    value: l.value.to_owned(),
                })
                .collect(),
            samples,
            ..Default::default()
        }
    }

    pub fn remote_write(
        addr: &str,
        series: &[meridian_gateway::queryable::SeriesData],
        points: i64,
    ) {
        // Time-ordered batches across all series (by time, not position: some series have gaps), as a
        // scraping Prometheus would send them.
        let batch = 20i64;
        let mut k = 0i64;
        while k < points {
            let (from, to) = (T0 + k * STEP, T0 + (k + batch) * STEP);
            let mut req = prom::WriteRequest::default();
            for s in series {
                let samples: Vec<prom::Sample> = s
                    .samples
                    .iter()
                    .filter(|x| x.t >= from && x.t < to)
                    .map(|x| prom::Sample {
                        value: x.v,
                        timestamp: x.t,
                    })
                    .collect();
                if samples.is_empty() {
                    continue;
                }
                req.timeseries.push(time_series(&s.labels, samples));
            }
            let body = meridian_edge::receive::encode_body(&req)
                .unwrap_or_else(|e| panic!("encoding a remote-write request: {e}"));
            meridian_testkit::post_remote_write(addr, &body);
            k += batch;
        }
    }
}
