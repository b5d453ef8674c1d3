//! Chaos and soak runs over the local federation (`meridian-chaos`, issue 22).
//!
//! **Chaos**: while writers remote-write to every edge and a reader queries the gateway, a random
//! component is killed with SIGKILL every 20–40 s and started again a few seconds later: an edge, the
//! DNS server (Debian's dnsmasq), the object store or the gateway. The object store is moto, which keeps
//! its data in memory only, so it is "killed" by cutting the proxy in front of it (every connection
//! reset, new ones refused) and "restarted" by letting traffic through again. Judged:
//! - no acknowledged sample is lost: every sample an edge answered 204 for is in the gateway's answer
//!   at the end (with `partial_response=false`, every component up);
//! - every answer during the run is correct (holds every sample acknowledged before it was asked, with
//!   its value) or carries a partial-response warning; errors and refused connections are counted apart;
//! - every block in the bucket is whole (each file its `meta.json` lists is there, with its size) and
//!   there once (no two blocks with the same external labels and time range).
//!
//! **Soak**: the same load without faults, over a federation that holds a bounded window of data
//! (see [`Setup::start`]); every sampling interval the RSS, open descriptors, threads and live tokio
//! tasks of every process are recorded. Over the run after its first third (warm-up: the window
//! filling, caches warming) the least-squares slope of each is taken, and the rise it projects over
//! that part is judged against [`SoakBounds`]: a resource still climbing once the data held stopped
//! growing is a leak.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};

use crate::federation::Federation;

/// The metric the writers write: `chaos_written{writer="<edge replica>"}`, value = sequence number.
pub const METRIC: &str = "chaos_written";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `(timestamp ms, value)` samples per writer.
pub type SamplesByWriter = BTreeMap<String, Vec<(i64, f64)>>;

/// Samples an edge acknowledged (204), per writer, in time order.
#[derive(Debug, Clone, Default)]
pub struct Acked(Arc<Mutex<SamplesByWriter>>);

impl Acked {
    fn push(&self, writer: &str, t: i64, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(writer.to_owned()).or_default().push((t, v));
        }
    }

    fn snapshot(&self) -> SamplesByWriter {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.0
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Counters of the load.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub writes_acked: AtomicUsize,
    /// Answered, but not 204 (the edge refused or failed: the sample may or may not be stored).
    pub writes_refused: AtomicUsize,
    /// No answer (the edge was down).
    pub writes_failed: AtomicUsize,
    pub queries_complete: AtomicUsize,
    pub queries_partial: AtomicUsize,
    /// Answered with an error (`status: error`).
    pub queries_error: AtomicUsize,
    /// No answer (the gateway was down).
    pub queries_unavailable: AtomicUsize,
    /// Answers without a warning that lacked an acknowledged sample or had another value for it
    /// (all counted; the first 20 described in `wrong`).
    pub queries_wrong: AtomicUsize,
    pub wrong: Mutex<Vec<String>>,
    pub first_refusals: Mutex<Vec<String>>,
}

/// Writers (one per edge, a sample every `write_every`) and a reader (a query every `query_every`),
/// on threads of their own until `stop`.
#[derive(Debug)]
pub struct Load {
    pub acked: Acked,
    pub stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(fed: &Federation, write_every: Duration, query_every: Duration) -> Load {
        let acked = Acked::default();
        let stats = Arc::new(LoadStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for e in &fed.edges {
            let (addr, writer) = (e.http.to_string(), e.replica.clone());
            let (acked, stats, stop) = (acked.clone(), stats.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let t = now_ms();
                    write_one(&addr, &writer, t, seq as f64, &acked, &stats);
                    std::thread::sleep(write_every);
                }
            }));
        }
        let addr = fed.gateway_http.to_string();
        let (a, st, sp) = (acked.clone(), stats.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                query_and_judge(&addr, &a, &st);
                std::thread::sleep(query_every);
            }
        }));
        Load {
            acked,
            stats,
            stop,
            threads,
        }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn write_one(addr: &str, writer: &str, t: i64, v: f64, acked: &Acked, stats: &LoadStats) {
    use meridian_storeapi::proto::prometheus as pb;
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: METRIC.into(),
                },
                pb::Label {
                    name: "writer".into(),
                    value: writer.into(),
                },
            ],
            samples: vec![pb::Sample {
                value: v,
                timestamp: t,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let Ok(body) = meridian_edge::receive::encode_body(&req) else {
        return;
    };
    let headers = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    match meridian_testkit::http("POST", addr, "/api/v1/write", &headers, &body) {
        Ok(r) if r.status == 204 => {
            acked.push(writer, t, v);
            stats.writes_acked.fetch_add(1, Ordering::SeqCst);
        }
        Ok(r) => {
            stats.writes_refused.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut f) = stats.first_refusals.lock()
                && f.len() < 5
            {
                f.push(format!("{writer}: {} {}", r.status, r.text()));
            }
        }
        Err(_) => {
            stats.writes_failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The samples of `METRIC` per writer in a range-vector answer, by timestamp (ms).
fn samples_by_writer(answer: &serde_json::Value) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for series in answer["data"]["result"].as_array().into_iter().flatten() {
        let writer = series["metric"]["writer"].as_str().unwrap_or_default();
        let points = out.entry(writer.to_owned()).or_default();
        for p in series["values"].as_array().into_iter().flatten() {
            let t = p[0].as_f64().map(|s| (s * 1000.0).round() as i64);
            let v = p[1].as_str().and_then(|v| v.parse::<f64>().ok());
            if let (Some(t), Some(v)) = (t, v) {
                points.insert(t, v);
            }
        }
    }
    out
}

/// What of `expected` (acknowledged samples with `from < t`) `got` lacks or has with another value.
fn missing(
    expected: &SamplesByWriter,
    got: &BTreeMap<String, BTreeMap<i64, f64>>,
    from: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    for (writer, samples) in expected {
        let have = got.get(writer);
        let mut lacking = 0;
        let mut first = None;
        for &(t, v) in samples.iter().filter(|(t, _)| *t > from) {
            let found = have.and_then(|h| h.get(&t));
            if found != Some(&v) {
                lacking += 1;
                first.get_or_insert((t, v, found.copied()));
            }
        }
        if let Some((t, v, found)) = first {
            out.push(format!(
                "{writer}: {lacking} acknowledged sample(s) missing or different, first at {t} (written {v}, answered {found:?})"
            ));
        }
    }
    out
}

fn query_and_judge(addr: &str, acked: &Acked, stats: &LoadStats) {
    let expected = acked.snapshot();
    let t = now_ms();
    let path = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        meridian_testkit::urlencode(&format!("{METRIC}[2m]")),
        t / 1000,
        t % 1000
    );
    let answer = match meridian_testkit::http("GET", addr, &path, &[], b"") {
        Ok(r) => r.json(),
        Err(_) => {
            stats.queries_unavailable.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    if answer["status"] != "success" {
        stats.queries_error.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let warned = answer["warnings"].as_array().is_some_and(|w| !w.is_empty());
    // A margin inside the 2m window: the oldest samples may fall out of it as the query runs.
    let lacking = missing(&expected, &samples_by_writer(&answer), t - 110_000);
    if warned {
        stats.queries_partial.fetch_add(1, Ordering::SeqCst);
    } else if lacking.is_empty() {
        stats.queries_complete.fetch_add(1, Ordering::SeqCst);
    } else if stats.queries_wrong.fetch_add(1, Ordering::SeqCst) < 20
        && let Ok(mut w) = stats.wrong.lock()
    {
        w.push(format!("query at {t}: {}", lacking.join("; ")));
    }
}

/// A federation for chaos and soak runs: 2 clusters × 2 edges with 20 s blocks, SRV records from
/// Debian's dnsmasq, the bucket on moto behind a [`meridian_testkit::FaultProxy`].
///
/// `window` (soak runs) bounds the data the federation holds, so a resource that keeps growing is a
/// leak and not the data: edges keep `--tsdb.retention=<window>` and the gateway serves bucket
/// blocks from `--min-time=-<window>`. Without it (chaos runs) everything is kept, so the final
/// check can find every acknowledged sample.
#[derive(Debug)]
pub struct Setup {
    pub fed: Federation,
    pub proxy: meridian_testkit::FaultProxy,
    /// The bucket, reached directly (not through the proxy), for the checks.
    pub bucket: meridian_tsdb::objstore::Bucket,
    _moto: meridian_testkit::Moto,
}

impl Setup {
    pub async fn start(
        bin_dir: std::path::PathBuf,
        data_dir: std::path::PathBuf,
        window: Option<&str>,
    ) -> anyhow::Result<Setup> {
        let dnsmasq = meridian_testkit::require("dnsmasq", "apt-get install dnsmasq-base")
            .context("dnsmasq is needed (apt-get install dnsmasq-base)")?;
        let moto = tokio::task::spawn_blocking(|| {
            let m = meridian_testkit::Moto::start()?;
            m.create_bucket("chaos");
            Some(m)
        })
        .await?
        .context("moto_server is needed (pip install 'moto[server]')")?;
        let proxy = meridian_testkit::FaultProxy::start(&moto.addr);
        let yaml = |endpoint: &str| {
            format!(
                "type: S3\nconfig:\n  bucket: chaos\n  endpoint: {endpoint}\n  region: us-east-1\n  access_key: test\n  secret_key: test\n  insecure: true\n"
            )
        };
        let bucket = meridian_tsdb::objstore::Bucket::parse(&yaml(&moto.addr), "chaos bucket")?;
        let mut o = crate::federation::Options::new(bin_dir, data_dir);
        o.gateway_http = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        o.scrape_interval = "2s".into();
        o.block_duration = "20s".into();
        o.eval_interval = "5s".into();
        o.dnsmasq = Some(dnsmasq);
        o.objstore = Some(yaml(&proxy.addr));
        o.log_level = "info,meridian_edge::scrape=warn".into();
        if let Some(w) = window {
            o.edge_args.push(format!("--tsdb.retention={w}"));
            o.gateway_args.push(format!("--min-time=-{w}"));
        }
        let fed = Federation::start(o).await?;
        Ok(Setup {
            fed,
            proxy,
            bucket,
            _moto: moto,
        })
    }

    /// Stops the federation in order (a failed stop is logged: the run's verdict is already made).
    pub async fn stop(self) {
        self.proxy.resume();
        if let Err(e) = self.fed.stop(|_| {}).await {
            tracing::warn!(error = %e, "the federation did not stop cleanly");
        }
    }
}

/// Chaos settings.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub duration: Duration,
    pub seed: u64,
    /// Time between two faults, drawn uniformly from this range.
    pub every: (Duration, Duration),
    /// How long a killed component stays down, drawn uniformly from this range.
    pub down: (Duration, Duration),
}

impl Default for ChaosOptions {
    fn default() -> ChaosOptions {
        ChaosOptions {
            duration: Duration::from_secs(600),
            seed: 1,
            every: (Duration::from_secs(20), Duration::from_secs(40)),
            down: (Duration::from_secs(2), Duration::from_secs(8)),
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub faults: Vec<String>,
    pub writes_acked: usize,
    pub writes_refused: usize,
    pub writes_failed: usize,
    pub first_refusals: Vec<String>,
    pub queries_complete: usize,
    pub queries_partial: usize,
    pub queries_error: usize,
    pub queries_unavailable: usize,
    pub queries_wrong: usize,
    /// The first wrong answers, described.
    pub wrong_answers: Vec<String>,
    /// Acknowledged samples missing from the final answer.
    pub lost: Vec<String>,
    pub blocks: usize,
    pub bucket_problems: Vec<String>,
}

impl ChaosReport {
    /// Nothing acknowledged lost, no wrong answer, every block whole and once.
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.queries_wrong == 0 && self.bucket_problems.is_empty()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "faults ({}):", self.faults.len())?;
        for x in &self.faults {
            writeln!(f, "  {x}")?;
        }
        writeln!(
            f,
            "writes: {} acknowledged, {} refused, {} unanswered",
            self.writes_acked, self.writes_refused, self.writes_failed
        )?;
        for x in &self.first_refusals {
            writeln!(f, "  refused: {x}")?;
        }
        writeln!(
            f,
            "queries: {} complete, {} partial (with a warning), {} errors, {} unanswered",
            self.queries_complete,
            self.queries_partial,
            self.queries_error,
            self.queries_unavailable
        )?;
        writeln!(
            f,
            "wrong answers (no warning, an acknowledged sample missing or different): {}",
            self.queries_wrong
        )?;
        for x in &self.wrong_answers {
            writeln!(f, "  {x}")?;
        }
        writeln!(f, "acknowledged samples lost: {}", self.lost.len())?;
        for x in &self.lost {
            writeln!(f, "  {x}")?;
        }
        writeln!(
            f,
            "bucket: {} blocks, {} problems",
            self.blocks,
            self.bucket_problems.len()
        )?;
        for x in &self.bucket_problems {
            writeln!(f, "  {x}")?;
        }
        write!(f, "{}", if self.passed() { "PASSED" } else { "FAILED" })
    }
}

/// What can be killed (`Edge(i)`: the `i`-th edge).
#[derive(Debug, Clone, Copy)]
enum Victim {
    Edge(usize),
    Dns,
    ObjectStore,
    Gateway,
}

/// Runs the chaos schedule on `fed` (started with dnsmasq and a bucket behind `objstore_proxy`), then
/// judges. The federation is left running, every component up.
pub async fn run_chaos(
    fed: &mut Federation,
    objstore_proxy: &meridian_testkit::FaultProxy,
    bucket: &meridian_tsdb::objstore::Bucket,
    opts: &ChaosOptions,
) -> anyhow::Result<ChaosReport> {
    use rand::seq::SliceRandom;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    // The kind of victim comes from a shuffled deck of the four kinds, so every kind is hit once in
    // every four faults; the edge, when it is an edge's turn, at random.
    let mut deck: Vec<Victim> = Vec::new();
    let load = Load::start(fed, Duration::from_millis(100), Duration::from_millis(500));
    let started = Instant::now();
    let mut faults = Vec::new();
    let draw = |rng: &mut rand::rngs::StdRng, (lo, hi): (Duration, Duration)| {
        Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
    };
    loop {
        let pause = draw(&mut rng, opts.every);
        if started.elapsed() + pause >= opts.duration {
            tokio::time::sleep(opts.duration.saturating_sub(started.elapsed())).await;
            break;
        }
        tokio::time::sleep(pause).await;
        if deck.is_empty() {
            deck = vec![
                Victim::Edge(0),
                Victim::Dns,
                Victim::ObjectStore,
                Victim::Gateway,
            ];
            deck.shuffle(&mut rng);
        }
        let victim = match deck.pop() {
            Some(Victim::Edge(_)) => Victim::Edge(rng.random_range(0..fed.edges.len())),
            Some(v) => v,
            None => continue,
        };
        let down = draw(&mut rng, opts.down);
        let at = started.elapsed().as_secs_f64();
        let name = match victim {
            Victim::Edge(i) => {
                let e = &mut fed.edges[i];
                e.proc.kill().await?;
                tokio::time::sleep(down).await;
                e.proc.restart()?;
                e.replica.clone()
            }
            Victim::Dns => {
                fed.kill_dns()?;
                tokio::time::sleep(down).await;
                fed.restart_dns()?;
                "dnsmasq".into()
            }
            Victim::ObjectStore => {
                objstore_proxy.cut();
                tokio::time::sleep(down).await;
                objstore_proxy.resume();
                "object store".into()
            }
            Victim::Gateway => {
                fed.gateway.kill().await?;
                tokio::time::sleep(down).await;
                fed.gateway.restart()?;
                "gateway".into()
            }
        };
        let line = format!(
            "{at:6.1}s  kill -9 {name}, restarted {:.1}s later",
            down.as_secs_f64()
        );
        tracing::info!("{line}");
        faults.push(line);
    }

    // Every component back, the gateway seeing every edge; then the load stops and the final answer is
    // asked of a whole federation.
    for e in &mut fed.edges {
        crate::federation::wait_ready(e.http, "/-/ready", &mut e.proc, Duration::from_secs(120))
            .await?;
    }
    crate::federation::wait_ready(
        fed.gateway_http,
        "/-/ready",
        &mut fed.gateway,
        Duration::from_secs(120),
    )
    .await?;
    fed.wait_for_endpoints(fed.edges.len(), Duration::from_secs(120))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = load.acked.clone();
    let stats = load.stats.clone();
    tokio::task::spawn_blocking(move || load.stop()).await?;

    let mut report = ChaosReport {
        faults,
        writes_acked: stats.writes_acked.load(Ordering::SeqCst),
        writes_refused: stats.writes_refused.load(Ordering::SeqCst),
        writes_failed: stats.writes_failed.load(Ordering::SeqCst),
        first_refusals: stats
            .first_refusals
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
        queries_complete: stats.queries_complete.load(Ordering::SeqCst),
        queries_partial: stats.queries_partial.load(Ordering::SeqCst),
        queries_error: stats.queries_error.load(Ordering::SeqCst),
        queries_unavailable: stats.queries_unavailable.load(Ordering::SeqCst),
        queries_wrong: stats.queries_wrong.load(Ordering::SeqCst),
        wrong_answers: stats.wrong.lock().map(|v| v.clone()).unwrap_or_default(),
        ..Default::default()
    };
    report.lost = final_check(fed, &acked, started).await?;
    let (blocks, problems) = check_bucket(bucket).await?;
    report.blocks = blocks;
    report.bucket_problems = problems;
    Ok(report)
}

/// Every acknowledged sample, asked of the whole federation with `partial_response=false`.
async fn final_check(
    fed: &Federation,
    acked: &Acked,
    started: Instant,
) -> anyhow::Result<Vec<String>> {
    let expected = acked.snapshot();
    let range = started.elapsed().as_secs() + 60;
    let t = now_ms();
    let path = format!(
        "/api/v1/query?query={}&time={}.{:03}&partial_response=false",
        meridian_testkit::urlencode(&format!("{METRIC}[{range}s]")),
        t / 1000,
        t % 1000
    );
    let addr = fed.gateway_http.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        meridian_testkit::http("GET", &addr, &path, &[], b"").map(|r| r.json())
    })
    .await?
    .context("the final query")?;
    if answer["status"] != "success" {
        bail!("the final query failed: {answer}");
    }
    Ok(missing(&expected, &samples_by_writer(&answer), i64::MIN))
}

/// The blocks in the bucket: each whole (every file its `meta.json` lists, with its size) and there
/// once (no two with the same external labels and time range). Blocks without `meta.json` are uploads
/// in progress or abandoned, which readers ignore.
pub async fn check_bucket(
    bucket: &meridian_tsdb::objstore::Bucket,
) -> anyhow::Result<(usize, Vec<String>)> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as ObjectPath;
    let store = bucket.store.clone();
    let listed: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await?;
    let sizes: BTreeMap<String, u64> = listed
        .iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(String, i64, i64), String> = BTreeMap::new();
    let mut blocks = 0;
    let metas: BTreeSet<&String> = sizes.keys().filter(|k| k.ends_with("/meta.json")).collect();
    for key in metas {
        let ulid = key.trim_end_matches("/meta.json");
        let bytes = store
            .get(&ObjectPath::from(key.as_str()))
            .await?
            .bytes()
            .await?;
        let meta: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{key} is not JSON"))?;
        blocks += 1;
        for f in meta["thanos"]["files"].as_array().into_iter().flatten() {
            let rel = f["rel_path"].as_str().unwrap_or_default();
            if rel == "meta.json" {
                continue;
            }
            let want = f["size_bytes"].as_u64();
            match sizes.get(&format!("{ulid}/{rel}")) {
                None => problems.push(format!("block {ulid}: {rel} is missing")),
                Some(&have) if want.is_some_and(|w| w != have) => problems.push(format!(
                    "block {ulid}: {rel} has {have} bytes, meta.json says {want:?}"
                )),
                Some(_) => {}
            }
        }
        let identity = (
            meta["thanos"]["labels"].to_string(),
            meta["minTime"].as_i64().unwrap_or_default(),
            meta["maxTime"].as_i64().unwrap_or_default(),
        );
        if let Some(other) = seen.insert(identity.clone(), ulid.to_owned()) {
            problems.push(format!(
                "blocks {other} and {ulid} are the same range {}..{} of {}",
                identity.1, identity.2, identity.0
            ));
        }
    }
    Ok((blocks, problems))
}

/// One process's resources at one time.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub rss_bytes: f64,
    pub fds: f64,
    pub threads: f64,
    /// Live tokio tasks (`meridian_tokio_alive_tasks` from its `/metrics`), when it answered.
    pub tasks: Option<f64>,
}

/// Reads `/proc/<pid>` and the process' `/metrics` at `http`.
pub fn usage(pid: u32, http: &str) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64;
    let tasks = meridian_testkit::http("GET", http, "/metrics", &[], b"")
        .ok()
        .and_then(|r| meridian_testkit::metric_value(&r.text(), "meridian_tokio_alive_tasks"));
    Some(Usage {
        rss_bytes: field("VmRSS:")? * 1024.0,
        fds,
        threads: field("Threads:")?,
        tasks,
    })
}

/// Least-squares slope of `ys` over `xs` (units of y per unit of x).
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

/// A soak run's series per process: `(seconds since start, usage)`.
pub type SoakSeries = BTreeMap<String, Vec<(f64, Usage)>>;

/// Runs the load on `fed` for `duration` without faults, sampling every process every `every`.
pub async fn run_soak(
    fed: &Federation,
    duration: Duration,
    every: Duration,
) -> anyhow::Result<(SoakSeries, Arc<LoadStats>)> {
    let load = Load::start(fed, Duration::from_millis(100), Duration::from_millis(500));
    let started = Instant::now();
    let mut series: SoakSeries = BTreeMap::new();
    let mut procs: Vec<(String, u32, String)> = fed
        .edges
        .iter()
        .filter_map(|e| Some((e.replica.clone(), e.proc.pid()?, e.http.to_string())))
        .collect();
    if let Some(pid) = fed.gateway.pid() {
        procs.push(("gateway".into(), pid, fed.gateway_http.to_string()));
    }
    while started.elapsed() < duration {
        tokio::time::sleep(every).await;
        let at = started.elapsed().as_secs_f64();
        let procs = procs.clone();
        let got = tokio::task::spawn_blocking(move || {
            procs
                .into_iter()
                .filter_map(|(name, pid, http)| Some((name, usage(pid, &http)?)))
                .collect::<Vec<_>>()
        })
        .await?;
        for (name, u) in got {
            series.entry(name).or_default().push((at, u));
        }
    }
    let stats = load.stats.clone();
    tokio::task::spawn_blocking(move || load.stop()).await?;
    Ok((series, stats))
}

/// How much a resource may rise over a soak's settled part (the slope times its length) before it
/// counts as an upward trend: the larger of an absolute and a relative allowance, so noise in small
/// counts (a blocking-pool thread that comes and goes) and allocator jitter in RSS are not trends.
#[derive(Debug, Clone, Copy)]
pub struct SoakBounds {
    /// RSS: MiB, and a fraction of the process's mean RSS.
    pub rss_mib: f64,
    pub rss_fraction: f64,
    /// Descriptors, threads, tasks: a count, and a fraction of the mean.
    pub count: f64,
    pub count_fraction: f64,
}

impl Default for SoakBounds {
    fn default() -> SoakBounds {
        SoakBounds {
            rss_mib: 4.0,
            rss_fraction: 0.10,
            count: 4.0,
            count_fraction: 0.10,
        }
    }
}

/// One resource of one process over a soak's settled part.
#[derive(Debug, Clone, Copy)]
pub struct Trend {
    pub mean: f64,
    /// Least-squares slope, per hour.
    pub per_hour: f64,
    /// The rise the slope projects over the settled part.
    pub rise: f64,
    /// The rise allowed ([`SoakBounds`]).
    pub allowed: f64,
}

impl Trend {
    pub fn upward(&self) -> bool {
        self.rise > self.allowed
    }
}

/// Per process, its resources' trends over the part of the run after its first third, in the order
/// RSS (MiB), descriptors, threads, tasks (tasks absent when `/metrics` never answered).
pub fn soak_trends(
    series: &SoakSeries,
    bounds: &SoakBounds,
) -> BTreeMap<String, Vec<(&'static str, Trend)>> {
    let mut out = BTreeMap::new();
    for (name, points) in series {
        let settled: Vec<&(f64, Usage)> = points.iter().skip(points.len() / 3).collect();
        let xs: Vec<f64> = settled.iter().map(|(t, _)| t / 3600.0).collect();
        let span = match (xs.first(), xs.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        let trend =
            |f: &dyn Fn(&Usage) -> Option<f64>, floor: f64, fraction: f64| -> Option<Trend> {
                let pts: Vec<(f64, f64)> = settled
                    .iter()
                    .zip(&xs)
                    .filter_map(|((_, u), x)| Some((*x, f(u)?)))
                    .collect();
                if pts.is_empty() {
                    return None;
                }
                let (px, py): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
                let mean = py.iter().sum::<f64>() / py.len() as f64;
                let per_hour = slope(&px, &py);
                Some(Trend {
                    mean,
                    per_hour,
                    rise: per_hour * span,
                    allowed: floor.max(fraction * mean),
                })
            };
        let b = bounds;
        let mut row = Vec::new();
        let mib = (1u64 << 20) as f64;
        for (what, t) in [
            (
                "RSS MiB",
                trend(&|u| Some(u.rss_bytes / mib), b.rss_mib, b.rss_fraction),
            ),
            ("fds", trend(&|u| Some(u.fds), b.count, b.count_fraction)),
            (
                "threads",
                trend(&|u| Some(u.threads), b.count, b.count_fraction),
            ),
            ("tasks", trend(&|u| u.tasks, b.count, b.count_fraction)),
        ] {
            if let Some(t) = t {
                row.push((what, t));
            }
        }
        out.insert(name.clone(), row);
    }
    out
}

/// The soak table: per process and resource, the mean, the slope per hour and the rise it projects
/// over the settled part against the rise allowed; and the upward trends found (none: passed).
pub fn soak_table(series: &SoakSeries, bounds: &SoakBounds) -> (String, Vec<String>) {
    use std::fmt::Write;
    let mut out = String::from("process      resource       mean   slope/h     rise  allowed\n");
    let mut upward = Vec::new();
    for (name, row) in soak_trends(series, bounds) {
        for (what, t) in row {
            let flag = if t.upward() { "  UPWARD" } else { "" };
            let _ = writeln!(
                out,
                "{name:<12} {what:<9} {:9.1} {:+9.2} {:+8.2} {:8.2}{flag}",
                t.mean, t.per_hour, t.rise, t.allowed
            );
            if t.upward() {
                upward.push(format!(
                    "{name} {what}: rose {:.2} over the settled part ({:+.2}/h), allowed {:.2}",
                    t.rise, t.per_hour, t.allowed
                ));
            }
        }
    }
    (out, upward)
}
