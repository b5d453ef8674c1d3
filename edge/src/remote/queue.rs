//! One remote-write queue: a watcher that follows the edge's WAL and hands samples to shards.
//!
//! - **Where it starts.** From its progress file (`<tsdb>/remote-write/<key>.json`: the WAL position
//!   up to which everything was sent), else from the WAL's end (only what comes next, as Prometheus).
//!   Before that it reads the series of the newest checkpoint and of every retained segment up to the
//!   start, so every reference resolves. Unlike Prometheus (v2.42 `tsdb/wlog/watcher.go` forwards
//!   only samples newer than its own start time), samples written before a crash but not sent are
//!   sent after the restart.
//! - **Series.** A series record is resolved once: external labels added where the series lacks them
//!   (the series' value wins), then `write_relabel_configs` (v2.42 `StoreSeries` order), then encoded.
//!   Samples of dropped or unknown series count in `samples_dropped_total`.
//! - **Hold.** The queue tells the TSDB the oldest segment it has not finished (see
//!   [`QueueHandle::keep_from`]); the TSDB keeps it and the labels in it.
//! - **Shards.** Dynamic, by v2.42's calculation (`calculateDesiredShards`, every 10 s, EWMA weight
//!   0.2): `desired = time per sample × (rate in × kept ratio + 5 % of the backlog)`, kept within 30 %
//!   of the current count, no downsharding while more than 10 s behind, and no resharding when no
//!   send has succeeded for two batch deadlines. Resharding flushes the shards and starts new ones.
//! - **Stop.** Soft: read the WAL to its end, send everything, stop. Hard (after the flush deadline):
//!   sends stop where they are; the progress file keeps the last position fully sent.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::batch::Encoded;
use super::config::RemoteWriteConfig;
use super::metrics::{ConsumerLabels, Metrics, QueueLabels};
use super::series::{Lookup, SeriesTable};
use super::shard::{Handles, Msg, QueueCtx, Shard};
use meridian_core::labels::Labels;
use meridian_core::relabel::RelabelConfig;
use meridian_tsdb::wal::Record;
use meridian_tsdb::wal::tail::{Event, Position, Tail, checkpoint_index, checkpoint_series};

/// Bytes of WAL read per step.
const READ_BUDGET: usize = 512 << 10;
/// How often a caught-up watcher looks for new records (Prometheus polls segments every 100 ms).
const POLL: Duration = Duration::from_millis(50);
/// v2.42 `shardUpdateDuration`.
const SHARD_UPDATE: Duration = Duration::from_secs(10);

/// A running queue.
#[derive(Debug)]
pub struct QueueHandle {
    pub cfg: Arc<RemoteWriteConfig>,
    pub external: Labels,
    pub labels: QueueLabels,
    /// The oldest WAL segment not fully sent.
    keep_from: Arc<AtomicU64>,
    soft_stop: CancellationToken,
    hard_stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    progress_file: PathBuf,
    ctx: Arc<QueueCtx>,
}

impl QueueHandle {
    /// Starts a queue following `wal_dir`, its progress under `progress_dir`.
    pub async fn start(
        cfg: Arc<RemoteWriteConfig>,
        external: Labels,
        wal_dir: PathBuf,
        progress_dir: &Path,
        metrics: &Metrics,
        inflow: super::Inflow,
    ) -> Result<QueueHandle, String> {
        let client = super::client::WriteClient::new(&cfg)?;
        let labels = QueueLabels {
            remote_name: cfg.name.clone(),
            url: cfg.url_label(),
        };
        let q = &cfg.queue;
        for (family, v) in [
            (&metrics.shards_min, q.min_shards),
            (&metrics.shards_max, q.max_shards),
            (&metrics.shard_capacity, q.capacity),
            (&metrics.max_samples_per_send, q.max_samples_per_send),
        ] {
            family
                .get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        let hard_stop = CancellationToken::new();
        let soft_stop = CancellationToken::new();
        let ctx = Arc::new(QueueCtx {
            cfg: cfg.clone(),
            client,
            m: Handles::new(metrics, &labels),
            hard_stop: hard_stop.clone(),
            out_samples: AtomicU64::new(0),
            out_nanos: AtomicU64::new(0),
            last_success_ms: std::sync::atomic::AtomicI64::new(0),
            highest_sent_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        });
        let progress_file = progress_dir.join(format!("{}.json", cfg.progress_key()));
        // Where to start, settled before this returns (so nothing written after it is missed) and
        // saved at once (so a crash before the first send resumes here, not at a later end).
        let (file, dir) = (progress_file.clone(), wal_dir.clone());
        let (start, end) = tokio::task::spawn_blocking(move || {
            let saved = read_progress(&file);
            let end = Tail::end(&dir);
            if let (None, Ok(end)) = (saved, &end) {
                write_progress(&file, *end)?;
            }
            Ok::<_, std::io::Error>((saved, end))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!(
                "remote_write {}: {}: {e}",
                cfg.name,
                progress_file.display()
            )
        })?;
        let end = end.map_err(|e| format!("remote_write {}: {e}", cfg.name))?;
        // What lies between a saved position and the WAL's end now may have been delivered by the
        // previous run (see `shard::Sender::send`).
        let replay_end = start.map(|_| end);
        let start = start.unwrap_or(end);
        let keep_from = Arc::new(AtomicU64::new(start.segment));
        let consumer = ConsumerLabels {
            consumer: cfg.name.clone(),
        };
        let watcher = Watcher {
            inflow,
            ctx: ctx.clone(),
            highest_in: metrics.highest_timestamp_in.clone(),
            external: external.clone(),
            relabel: cfg.write_relabel_configs.clone(),
            wal_dir,
            progress_file: progress_file.clone(),
            keep_from: keep_from.clone(),
            soft_stop: soft_stop.clone(),
            dropped: metrics.samples_dropped.get_or_create(&labels).clone(),
            shards_gauge: metrics.shards.get_or_create(&labels).clone(),
            desired_gauge: metrics.shards_desired.get_or_create(&labels).clone(),
            segment_gauge: metrics.watcher_segment.get_or_create(&consumer).clone(),
            skipped: metrics
                .watcher_skipped_segments
                .get_or_create(&consumer)
                .clone(),
            records: metrics.watcher_records.clone(),
        };
        let task = tokio::spawn(watcher.run(start, replay_end));
        Ok(QueueHandle {
            cfg,
            external,
            labels,
            keep_from,
            soft_stop,
            hard_stop,
            task,
            progress_file,
            ctx,
        })
    }

    /// The highest sample timestamp sent (ms); `None` before the first send.
    pub fn highest_sent_ms(&self) -> Option<i64> {
        Some(self.ctx.highest_sent_ms.load(Ordering::Acquire)).filter(|t| *t != i64::MIN)
    }

    /// The oldest WAL segment this queue has not fully sent (`u64::MAX` before it knows), as it
    /// moves.
    pub fn keep_from_handle(&self) -> Arc<AtomicU64> {
        self.keep_from.clone()
    }

    /// Sends what the WAL holds, within `deadline`; then stops hard.
    pub async fn stop(mut self, deadline: Duration) {
        self.soft_stop.cancel();
        if tokio::time::timeout(deadline, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(remote_name = %self.cfg.name, ?deadline, "failed to flush all samples on shutdown; the rest is sent after the next start");
            self.hard_stop.cancel();
            let _ = (&mut self.task).await;
        }
    }

    /// Stops at once and forgets the queue's progress (it was removed from the configuration).
    pub async fn remove(self) {
        self.hard_stop.cancel();
        self.soft_stop.cancel();
        let _ = self.task.await;
        let _ = tokio::fs::remove_file(&self.progress_file).await;
    }
}

/// Reads a progress file; `None` when missing or unreadable (then the queue starts at the WAL's end).
fn read_progress(path: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .inspect_err(|e| tracing::warn!(file = %path.display(), error = %e, "unreadable remote-write progress file; starting at the WAL's end"))
        .ok()?;
    Some(Position {
        segment: v.get("segment")?.as_u64()?,
        offset: v.get("offset")?.as_u64()?,
    })
}

/// Writes a progress file (a temporary file renamed over it: never half written).
fn write_progress(path: &Path, pos: Position) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({"segment": pos.segment, "offset": pos.offset}).to_string(),
    )?;
    std::fs::rename(&tmp, path)
}

struct Watcher {
    inflow: super::Inflow,
    ctx: Arc<QueueCtx>,
    highest_in: prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>,
    external: Labels,
    relabel: Vec<RelabelConfig>,
    wal_dir: PathBuf,
    progress_file: PathBuf,
    keep_from: Arc<AtomicU64>,
    soft_stop: CancellationToken,
    dropped: prometheus_client::metrics::counter::Counter,
    shards_gauge: prometheus_client::metrics::gauge::Gauge,
    desired_gauge: prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>,
    segment_gauge: prometheus_client::metrics::gauge::Gauge,
    skipped: prometheus_client::metrics::counter::Counter,
    records: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// The series cache and what resolves series records into it (moved into blocking reads).
struct Resolver {
    series: SeriesTable,
    external: Labels,
    relabel: Vec<RelabelConfig>,
    /// The newest checkpoint collected after, and the segment the reader was in when it last looked.
    collected: Option<u64>,
    looked_in: Option<u64>,
}

impl Resolver {
    fn new(external: Labels, relabel: Vec<RelabelConfig>) -> Resolver {
        Resolver {
            series: SeriesTable::default(),
            external,
            relabel,
            collected: None,
            looked_in: None,
        }
    }

    /// A series record seen in segment `seg`.
    fn add(&mut self, r: u64, labels: &Labels, seg: u64) {
        if self.series.contains(r) {
            self.series.insert(r, None, seg);
            return;
        }
        let merged = self.external.merged_with(labels);
        let out = meridian_core::relabel::process(&merged, &self.relabel).filter(|l| !l.is_empty());
        let encoded =
            out.map(|l| super::client::wire::encode_labels(l.iter().map(|x| (x.name, x.value))));
        self.series.insert(r, encoded.as_deref(), seg);
    }

    /// v2.42 `garbageCollectSeries`: once the reader is past the newest checkpoint's last segment,
    /// the series of that checkpoint are marked seen there and every series last seen before it is
    /// forgotten (the head dropped it when it wrote the checkpoint; the samples still to read name
    /// only series in the checkpoint or recorded after it). Looked at once per segment.
    fn collect(&mut self, dir: &Path, reading: u64) {
        if self.looked_in == Some(reading) {
            return;
        }
        self.looked_in = Some(reading);
        let newer = |n: u64| n < reading && self.collected.is_none_or(|c| n > c);
        match checkpoint_index(dir) {
            Ok(Some(n)) if newer(n) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the WAL's checkpoints");
                return;
            }
        }
        match checkpoint_series(dir) {
            Ok(Some((n, series))) if newer(n) => {
                for (r, l) in &series {
                    self.add(*r, l, n);
                }
                let before = self.series.len();
                self.series.reset(n);
                self.collected = Some(n);
                tracing::debug!(
                    checkpoint = n,
                    forgotten = before - self.series.len(),
                    kept = self.series.len(),
                    "remote-write series collected"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the WAL checkpoint's series"),
        }
    }
}

/// One read's samples, spread over the shards, in pieces of at most one send.
struct Routed {
    per_shard: Vec<Vec<Encoded>>,
    end: Option<Position>,
    dropped: u64,
    skipped: u64,
    series_records: u64,
    sample_records: u64,
}

fn route(res: &mut Resolver, events: Vec<Event>, shards: usize, cap: usize) -> Routed {
    let mut out = Routed {
        per_shard: (0..shards).map(|_| Vec::new()).collect(),
        end: None,
        dropped: 0,
        skipped: 0,
        series_records: 0,
        sample_records: 0,
    };
    for e in events {
        match e {
            Event::Record(Record::Series(s), end) => {
                for (r, l) in &s {
                    res.add(*r, l, end.segment);
                }
                out.series_records += 1;
                out.end = Some(end);
            }
            Event::Record(Record::Samples(s), end) => {
                out.sample_records += 1;
                for (r, x) in s {
                    match res.series.get(r) {
                        Lookup::Labels(labels) => {
                            let pieces = &mut out.per_shard[(r % shards as u64) as usize];
                            match pieces.last_mut() {
                                Some(p) if p.len() < cap => p.push(labels, x.t, x.v),
                                _ => {
                                    let mut p = Encoded::with_capacity(cap);
                                    p.push(labels, x.t, x.v);
                                    pieces.push(p);
                                }
                            }
                        }
                        _ => out.dropped += 1,
                    }
                }
                out.end = Some(end);
            }
            // Native histograms are not sent (Prometheus 2.42 sends none either; later versions
            // only with `send_native_histograms`).
            Event::Record(Record::Histograms(_) | Record::FloatHistograms(_), end) => {
                out.end = Some(end);
            }
            Event::Skipped { from, to } => out.skipped += to - from,
        }
    }
    out
}

/// v2.42's rates: an exponentially weighted moving average over 10 s ticks, weight 0.2; the first
/// non-zero tick sets the rate.
#[derive(Default)]
struct Ewma {
    rate: f64,
    init: bool,
}

impl Ewma {
    fn tick(&mut self, events: f64, secs: f64) -> f64 {
        let instant = events / secs;
        if self.init {
            self.rate += 0.2 * (instant - self.rate);
        } else if instant != 0.0 {
            self.init = true;
            self.rate = instant;
        }
        self.rate
    }
}

#[derive(Default)]
struct ShardCalc {
    r#in: Ewma,
    dropped: Ewma,
    out: Ewma,
    dur: Ewma,
    last_out: u64,
    last_nanos: u64,
    last_in: u64,
    dropped_count: u64,
}

impl Watcher {
    async fn run(self, start: Position, replay_end: Option<Position>) {
        let mut res = Resolver::new(self.external.clone(), self.relabel.clone());
        let dir = self.wal_dir.clone();
        res = match tokio::task::spawn_blocking(move || load_series(res, &dir, start)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "remote-write series load failed");
                return;
            }
        };
        tracing::info!(remote_name = %self.ctx.cfg.name, url = %self.ctx.cfg.url_label(), segment = start.segment, offset = start.offset, series = res.series.len(), "remote-write queue started");
        self.follow(res, start, replay_end).await;
    }

    async fn follow(self, mut res: Resolver, start: Position, replay_end: Option<Position>) {
        let q = &self.ctx.cfg.queue;
        let mut n = q.min_shards.max(1);
        let mut mark = 0u64;
        let mut shards: Vec<Shard> = (0..n)
            .map(|_| Shard::spawn(self.ctx.clone(), mark))
            .collect();
        self.shards_gauge.set(n as i64);
        let mut marks: VecDeque<(u64, Position)> = VecDeque::new();
        let mut sent_pos = start;
        let mut saved = start;
        let mut last_save = Instant::now();
        let mut tail = Some(Tail::new(&self.wal_dir, start));
        let mut calc = ShardCalc {
            last_in: self.inflow.appended.get(),
            ..ShardCalc::default()
        };
        let mut next_update = Instant::now() + SHARD_UPDATE;
        let mut last_update = Instant::now();
        // Once stopping: the WAL's end then, which the queue reads up to and no further.
        let mut stop_at: Option<Position> = None;
        'outer: loop {
            if stop_at.is_none() && self.soft_stop.is_cancelled() {
                let dir = self.wal_dir.clone();
                stop_at = Some(
                    tokio::task::spawn_blocking(move || Tail::end(&dir))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default(),
                );
            }
            let stopping = stop_at.is_some();
            let Some(mut t) = tail.take() else { break };
            if stop_at.is_some_and(|end| t.position() >= end) {
                break;
            }
            let before_start = replay_end.is_some_and(|end| t.position() < end);
            let shard_count = shards.len();
            let cap = q.max_samples_per_send.max(1);
            let dir = self.wal_dir.clone();
            let joined = tokio::task::spawn_blocking(move || {
                res.collect(&dir, t.position().segment);
                let events = t.read(READ_BUDGET, true);
                let routed = events.map(|e| route(&mut res, e, shard_count, cap));
                (t, res, routed)
            })
            .await;
            let (t, r, routed) = match joined {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "remote-write WAL read task failed");
                    break;
                }
            };
            self.segment_gauge.set(t.position().segment as i64);
            let highest_in = (self.inflow.highest_ms)();
            if highest_in != i64::MIN {
                self.highest_in.set(highest_in as f64 / 1000.0);
            }
            tail = Some(t);
            res = r;
            match routed {
                Err(e) => {
                    tracing::error!(remote_name = %self.ctx.cfg.name, error = %e, "reading the WAL failed; retrying");
                    if stopping {
                        break;
                    }
                    tokio::select! {
                        () = self.soft_stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Ok(routed) if routed.end.is_none() && routed.skipped == 0 => {
                    if stopping {
                        break;
                    }
                    tokio::select! {
                        () = self.soft_stop.cancelled() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Ok(routed) => {
                    self.account(&routed, &mut calc);
                    for (s, pieces) in shards.iter().zip(routed.per_shard) {
                        for piece in pieces {
                            self.ctx.m.pending.inc_by(piece.len() as i64);
                            if !self.send(s, piece, before_start).await {
                                break 'outer;
                            }
                        }
                    }
                    if let Some(end) = routed.end {
                        mark += 1;
                        for s in &shards {
                            if s.tx.send(Msg::Mark(mark)).is_err() {
                                break 'outer;
                            }
                        }
                        marks.push_back((mark, end));
                    }
                }
            }
            advance(&shards, &mut marks, &mut sent_pos);
            self.keep_from.store(sent_pos.segment, Ordering::Release);
            if sent_pos != saved && last_save.elapsed() >= Duration::from_millis(200) {
                self.save(sent_pos);
                saved = sent_pos;
                last_save = Instant::now();
            }
            if !stopping && Instant::now() >= next_update {
                let secs = last_update.elapsed().as_secs_f64().max(1e-3);
                last_update = Instant::now();
                next_update = last_update + SHARD_UPDATE;
                if let Some(want) = self.desired_shards(&mut calc, secs, n) {
                    tracing::info!(remote_name = %self.ctx.cfg.name, from = n, to = want, "remote-write resharding");
                    if !self.flush(std::mem::take(&mut shards)).await {
                        break;
                    }
                    advance_all(&mut marks, &mut sent_pos);
                    n = want;
                    shards = (0..n)
                        .map(|_| Shard::spawn(self.ctx.clone(), mark))
                        .collect();
                    self.shards_gauge.set(n as i64);
                }
            }
        }
        // Soft stop (or a failure): what is queued goes out unless the hard stop comes first.
        let flushed = self.flush(shards).await;
        if flushed {
            advance_all(&mut marks, &mut sent_pos);
        }
        self.keep_from.store(sent_pos.segment, Ordering::Release);
        self.save(sent_pos);
        tracing::info!(remote_name = %self.ctx.cfg.name, segment = sent_pos.segment, offset = sent_pos.offset, flushed, "remote-write queue stopped");
    }

    /// Hands a piece (at most one send) to a shard, waiting while it has no room for it
    /// (Prometheus' enqueue retries); `false` when stopped hard meanwhile. A piece always fits while
    /// the shard holds a partial batch it sends only at its deadline (see `Shard::spawn`).
    async fn send(&self, s: &Shard, piece: Encoded, before_start: bool) -> bool {
        let n = u32::try_from(piece.len()).unwrap_or(u32::MAX);
        match s.room.clone().try_acquire_many_owned(n) {
            Ok(p) => p.forget(),
            Err(_) => {
                self.ctx.m.enqueue_retries.inc();
                tokio::select! {
                    biased;
                    () = self.ctx.hard_stop.cancelled() => return false,
                    p = s.room.clone().acquire_many_owned(n) => match p {
                        Ok(p) => p.forget(),
                        Err(_) => return false,
                    },
                }
            }
        }
        s.tx.send(Msg::Samples(piece, before_start)).is_ok()
    }

    /// Closes the shards and waits for them to send everything; `false` when stopped hard first.
    async fn flush(&self, shards: Vec<Shard>) -> bool {
        let mut all = true;
        for s in shards {
            drop(s.tx);
            let _ = s.task.await;
            all &= !self.ctx.hard_stop.is_cancelled();
        }
        all
    }

    fn save(&self, pos: Position) {
        if let Err(e) = write_progress(&self.progress_file, pos) {
            tracing::warn!(file = %self.progress_file.display(), error = %e, "cannot write the remote-write progress file");
        }
    }

    fn account(&self, r: &Routed, calc: &mut ShardCalc) {
        if r.dropped > 0 {
            self.dropped.inc_by(r.dropped);
        }
        if r.skipped > 0 {
            tracing::error!(remote_name = %self.ctx.cfg.name, segments = r.skipped, "WAL segments were deleted before this queue read them; their samples are not sent");
            self.skipped.inc_by(r.skipped);
        }
        for (kind, n) in [("series", r.series_records), ("samples", r.sample_records)] {
            if n > 0 {
                self.records
                    .get_or_create(&vec![
                        ("consumer".to_owned(), self.ctx.cfg.name.clone()),
                        ("type".to_owned(), kind.to_owned()),
                    ])
                    .inc_by(n);
            }
        }
        calc.dropped_count += r.dropped;
    }

    /// v2.42 `calculateDesiredShards` + `shouldReshard`; `Some(n)` when the queue should reshard.
    fn desired_shards(&self, c: &mut ShardCalc, secs: f64, current: usize) -> Option<usize> {
        let out_total = self.ctx.out_samples.load(Ordering::Relaxed);
        let nanos_total = self.ctx.out_nanos.load(Ordering::Relaxed);
        let appended = self.inflow.appended.get();
        let in_rate = c.r#in.tick(appended.saturating_sub(c.last_in) as f64, secs);
        c.last_in = appended;
        let highest_in = (self.inflow.highest_ms)();
        let dropped_rate = c
            .dropped
            .tick(std::mem::take(&mut c.dropped_count) as f64, secs);
        let out_rate = c.out.tick((out_total - c.last_out) as f64, secs);
        let dur_rate = c.dur.tick((nanos_total - c.last_nanos) as f64, secs);
        c.last_out = out_total;
        c.last_nanos = nanos_total;
        let highest_sent = self.ctx.highest_sent_ms.load(Ordering::Relaxed);
        let delay = if highest_sent == i64::MIN || highest_in == i64::MIN {
            0.0
        } else {
            ((highest_in - highest_sent) as f64 / 1000.0).max(0.0)
        };
        let q = &self.ctx.cfg.queue;
        let (desired, want) = shard_count(
            Rates {
                r#in: in_rate,
                dropped: dropped_rate,
                out: out_rate,
                out_nanos: dur_rate,
            },
            delay,
            current,
            (q.min_shards, q.max_shards),
        );
        self.desired_gauge.set(desired);
        if want == current {
            return None;
        }
        let threshold = 2 * i64::try_from(q.batch_send_deadline.0.as_millis()).unwrap_or(i64::MAX);
        let last = self.ctx.last_success_ms.load(Ordering::Relaxed);
        if last < meridian_core::time::now_ms().saturating_sub(threshold) {
            tracing::warn!(remote_name = %self.ctx.cfg.name, "skipping resharding, last successful send was beyond threshold");
            return None;
        }
        Some(want)
    }
}

/// Per-second rates of samples read, dropped and sent, and of nanoseconds spent sending.
#[derive(Debug, Clone, Copy)]
struct Rates {
    r#in: f64,
    dropped: f64,
    out: f64,
    out_nanos: f64,
}

/// v2.42 `calculateDesiredShards`: the desired count (unrounded) and the count to run, given the
/// rates, how far sending is behind reading (`delay`, seconds), the current count and the bounds.
fn shard_count(r: Rates, delay: f64, current: usize, (min, max): (usize, usize)) -> (f64, usize) {
    if r.out <= 0.0 {
        return (current as f64, current);
    }
    let kept = r.out / (r.dropped + r.out);
    let pending = delay * r.r#in * kept;
    let time_per_sample = r.out_nanos / 1e9 / r.out;
    let desired = time_per_sample * (r.r#in * kept + 0.05 * pending);
    let cur = current as f64;
    let mut want = desired.ceil() as usize;
    // Within 30 % of the current count: no change.
    if (cur * 0.7..=cur * 1.3).contains(&desired) {
        want = current;
    }
    // No downsharding while more than 10 s behind.
    if want < current && delay > 10.0 {
        want = current;
    }
    (desired, want.clamp(min.max(1), max.max(1)))
}

/// Moves the sent position to the newest mark every shard has passed.
fn advance(shards: &[Shard], marks: &mut VecDeque<(u64, Position)>, sent: &mut Position) {
    let done = shards
        .iter()
        .map(|s| s.done.load(Ordering::Acquire))
        .min()
        .unwrap_or(u64::MAX);
    while let Some(&(k, p)) = marks.front() {
        if k > done {
            break;
        }
        *sent = p;
        marks.pop_front();
    }
}

/// After a complete flush every mark is passed.
fn advance_all(marks: &mut VecDeque<(u64, Position)>, sent: &mut Position) {
    if let Some(&(_, p)) = marks.back() {
        *sent = p;
    }
    marks.clear();
}

/// The series a reader starting at `start` needs: the newest checkpoint's, then those of every
/// retained segment up to `start`.
fn load_series(mut res: Resolver, dir: &Path, start: Position) -> Resolver {
    match checkpoint_series(dir) {
        Ok(Some((n, series))) => {
            for (r, l) in &series {
                res.add(*r, l, n);
            }
            res.collected = Some(n);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the WAL checkpoint's series"),
    }
    let mut tail = Tail::new(dir, Position::default());
    loop {
        let events = match tail.read(4 << 20, false) {
            Ok(e) if !e.is_empty() => e,
            Ok(_) => return res,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the WAL's series");
                return res;
            }
        };
        for e in events {
            if let Event::Record(rec, end) = e {
                if end > start {
                    return res;
                }
                if let Record::Series(s) = rec {
                    for (r, l) in &s {
                        res.add(*r, l, end.segment);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(r#in: f64, out: f64, secs_per_sample: f64) -> Rates {
        Rates {
            r#in,
            dropped: 0.0,
            out,
            out_nanos: out * secs_per_sample * 1e9,
        }
    }

    /// The v2.42 calculation on hand-worked cases.
    #[test]
    fn shard_count_follows_prometheus() {
        // 10k samples/s in and out, 1 ms of sending per 10 samples: 10 shards' worth.
        let (d, n) = shard_count(rates(10_000.0, 10_000.0, 1e-4), 0.0, 1, (1, 200));
        assert!((d - 1.0).abs() < 1e-9 && n == 1, "{d} {n}");
        let (d, n) = shard_count(rates(10_000.0, 10_000.0, 1e-3), 0.0, 1, (1, 200));
        assert!((d - 10.0).abs() < 1e-9 && n == 10, "{d} {n}");
        // Within 30 %: unchanged.
        assert_eq!(
            shard_count(rates(10_000.0, 10_000.0, 1.2e-3), 0.0, 10, (1, 200)).1,
            10
        );
        // A backlog adds 5 % of it per second: 100 s behind at 10k/s = 1M pending → +50k/s.
        let (d, _) = shard_count(rates(10_000.0, 10_000.0, 1e-4), 100.0, 1, (1, 200));
        assert!((d - 6.0).abs() < 1e-9, "{d}");
        // No downsharding while more than 10 s behind; bounds hold.
        assert_eq!(
            shard_count(rates(10.0, 10.0, 1e-6), 11.0, 50, (1, 200)).1,
            50
        );
        assert_eq!(shard_count(rates(10.0, 10.0, 1e-6), 0.0, 50, (3, 200)).1, 3);
        assert_eq!(shard_count(rates(1e9, 1e9, 1.0), 0.0, 5, (1, 200)).1, 200);
        // Nothing sent yet: unchanged.
        assert_eq!(shard_count(rates(1000.0, 0.0, 0.0), 0.0, 4, (1, 200)).1, 4);
        // Dropped samples do not count towards the work.
        let mut r = rates(10_000.0, 5_000.0, 2e-3);
        r.dropped = 5_000.0;
        let (d, _) = shard_count(r, 0.0, 1, (1, 200));
        assert!((d - 10.0).abs() < 1e-9, "{d}");
    }

    /// v2.42 `garbageCollectSeries`: past a checkpoint, the series neither in it nor recorded after
    /// it are forgotten; before the reader is past it, nothing is.
    #[test]
    fn series_are_collected_after_a_checkpoint() {
        #![allow(clippy::unwrap_used)]
        use meridian_tsdb::wal::{FsyncPolicy, Wal};
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        let l = |n: &str| Labels::from_pairs([("__name__", n)]);
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut).unwrap();
        let mut res = Resolver::new(Labels::default(), Vec::new());
        wal.log(&[Record::Series(vec![(1, l("a")), (2, l("b"))])])
            .unwrap();
        res.add(1, &l("a"), 0);
        res.add(2, &l("b"), 0);
        wal.cut().unwrap();
        wal.log(&[Record::Series(vec![(3, l("c"))])]).unwrap();
        res.add(3, &l("c"), 1);
        let upto = wal.cut().unwrap();
        wal.log(&[Record::Series(vec![(4, l("d"))])]).unwrap();
        res.add(4, &l("d"), 2);
        // The head dropped `a` when it wrote the checkpoint of segments 0 and 1.
        wal.checkpoint(
            upto,
            &[Record::Series(vec![(2, l("b")), (3, l("c"))])],
            u64::MAX,
        )
        .unwrap();
        let known = |res: &Resolver| {
            (1..=4)
                .filter(|r| res.series.get(*r) != Lookup::Unknown)
                .collect::<Vec<u64>>()
        };
        res.collect(&w, upto);
        assert_eq!(
            known(&res),
            [1, 2, 3, 4],
            "still reading the checkpointed segments"
        );
        res.collect(&w, upto + 1);
        assert_eq!(known(&res), [2, 3, 4]);
        assert_eq!(res.collected, Some(upto));
    }
}
