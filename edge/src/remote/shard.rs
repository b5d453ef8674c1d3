//! One shard of a queue: batches samples up to `max_samples_per_send` or `batch_send_deadline`, sends
//! them with retries (v2.42 `sendWriteRequestWithBackoff`: the backoff starts at `min_backoff`, waits
//! the server's `Retry-After` when given, doubles up to `max_backoff`, and retries recoverable errors
//! until the queue is stopped hard), and reports how far it has got.
//!
//! Progress is told by marks: the watcher puts `Mark(k)` into every shard after the samples of its
//! `k`-th read, and a shard publishes `k` once every sample before the mark has been sent or dropped.
//! A WAL position is done when every shard has published its mark. Series are spread by reference
//! (`ref % shards`), so one series' samples are sent in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Encoded, cut};
use super::client::{Conn, WriteClient, WriteError};
use super::config::RemoteWriteConfig;
use super::metrics::{Metrics, QueueLabels};

/// What the watcher hands a shard.
#[derive(Debug)]
pub enum Msg {
    /// Samples; `true` when they were written before the queue started (see `Sender::send`).
    Samples(Encoded, bool),
    Mark(u64),
}

/// A queue's metric handles.
#[derive(Debug, Clone)]
pub struct Handles {
    pub samples: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dropped: Counter,
    pub pending: Gauge,
    pub bytes: Counter,
    pub highest_sent: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub batch_duration: Histogram,
    pub enqueue_retries: Counter,
}

impl Handles {
    pub fn new(m: &Metrics, l: &QueueLabels) -> Handles {
        Handles {
            samples: m.samples.get_or_create(l).clone(),
            failed: m.samples_failed.get_or_create(l).clone(),
            retried: m.samples_retried.get_or_create(l).clone(),
            dropped: m.samples_dropped.get_or_create(l).clone(),
            pending: m.samples_pending.get_or_create(l).clone(),
            bytes: m.bytes.get_or_create(l).clone(),
            highest_sent: m.highest_sent.get_or_create(l).clone(),
            batch_duration: m.batch_duration.get_or_create(l).clone(),
            enqueue_retries: m.enqueue_retries.get_or_create(l).clone(),
        }
    }
}

/// What the shards of one queue share.
#[derive(Debug)]
pub struct QueueCtx {
    pub cfg: Arc<RemoteWriteConfig>,
    pub client: WriteClient,
    pub m: Handles,
    /// Cancelled when the flush deadline has passed: sends and retries stop where they are.
    pub hard_stop: CancellationToken,
    /// Samples sent (or given up) and the time spent sending them, for the shard calculation.
    pub out_samples: AtomicU64,
    pub out_nanos: AtomicU64,
    /// When a send last succeeded (ms since the Unix epoch; 0: never).
    pub last_success_ms: AtomicI64,
    /// The highest sample timestamp sent (ms).
    pub highest_sent_ms: AtomicI64,
}

/// A running shard.
#[derive(Debug)]
pub struct Shard {
    pub tx: mpsc::UnboundedSender<Msg>,
    /// Room for `queue_config.capacity` samples (Prometheus' per-shard capacity): the watcher takes
    /// a permit per sample before handing it over, the shard gives them back once they are sent.
    /// Marks take none.
    pub room: Arc<tokio::sync::Semaphore>,
    /// The last mark this shard has passed.
    pub done: Arc<AtomicU64>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Shard {
    /// Starts a shard whose marks begin after `mark`.
    pub fn spawn(ctx: Arc<QueueCtx>, mark: u64) -> Shard {
        let (tx, rx) = mpsc::unbounded_channel();
        // At least two sends' worth: the watcher hands over pieces of one send, and a shard may hold
        // up to a send less one until its batch deadline; with less room the watcher would wait for
        // that deadline on every piece (Prometheus likewise keeps at least one batch per shard).
        let q = &ctx.cfg.queue;
        let room = Arc::new(tokio::sync::Semaphore::new(
            q.capacity.max(2 * q.max_samples_per_send).max(1),
        ));
        let done = Arc::new(AtomicU64::new(mark));
        let task = tokio::spawn(run(ctx, rx, done.clone(), room.clone()));
        Shard {
            tx,
            room,
            done,
            task,
        }
    }
}

async fn run(
    ctx: Arc<QueueCtx>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    done: Arc<AtomicU64>,
    room: Arc<tokio::sync::Semaphore>,
) {
    let max = ctx.cfg.queue.max_samples_per_send.max(1);
    let deadline_after = ctx.cfg.queue.batch_send_deadline.0;
    let mut s = Sender {
        ctx: ctx.clone(),
        conn: Conn::default(),
        snappy: snap::raw::Encoder::new(),
        room,
    };
    // Pieces as handed over, and how many samples they hold.
    let mut pending: VecDeque<Encoded> = VecDeque::new();
    let mut queued = 0usize;
    let mut marks: VecDeque<(u64, u64)> = VecDeque::new();
    let (mut enqueued, mut sent) = (0u64, 0u64);
    // Samples at the front of `pending` written before the queue started.
    let mut replay = 0usize;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let msg = tokio::select! {
            biased;
            () = ctx.hard_stop.cancelled() => return,
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                // The batch deadline: send what there is.
                while queued > 0 {
                    let b = cut(&mut pending, max);
                    let n = b.len();
                    queued -= n;
                    if !s.send(b, take(&mut replay, n)).await {
                        return;
                    }
                    sent += n as u64;
                }
                deadline = None;
                pass_marks(&mut marks, sent, &done);
                continue;
            }
            m = rx.recv() => m,
        };
        match msg {
            None => {
                // Soft shutdown: everything queued goes out, then the shard ends.
                while queued > 0 {
                    let b = cut(&mut pending, max);
                    let n = b.len();
                    queued -= n;
                    if !s.send(b, take(&mut replay, n)).await {
                        return;
                    }
                    sent += n as u64;
                }
                pass_marks(&mut marks, sent, &done);
                return;
            }
            Some(Msg::Mark(k)) => marks.push_back((k, enqueued)),
            Some(Msg::Samples(v, before_start)) => {
                if queued == 0 {
                    deadline = Some(tokio::time::Instant::now() + deadline_after);
                }
                enqueued += v.len() as u64;
                queued += v.len();
                if before_start {
                    replay += v.len();
                }
                pending.push_back(v);
                while queued >= max {
                    // (A piece of exactly one send, the usual case, goes out as it came.)
                    let b = cut(&mut pending, max);
                    queued -= b.len();
                    if !s.send(b, take(&mut replay, max)).await {
                        return;
                    }
                    sent += max as u64;
                    deadline = (queued > 0).then(|| tokio::time::Instant::now() + deadline_after);
                }
            }
        }
        pass_marks(&mut marks, sent, &done);
    }
}

/// Whether a batch of the next `n` samples holds some written before the queue started; counts them
/// off.
fn take(replay: &mut usize, n: usize) -> bool {
    let any = *replay > 0;
    *replay = replay.saturating_sub(n);
    any
}

/// Publishes the marks whose samples have all been sent.
fn pass_marks(marks: &mut VecDeque<(u64, u64)>, sent: u64, done: &AtomicU64) {
    while let Some(&(k, before)) = marks.front() {
        if before > sent {
            break;
        }
        done.store(k, Ordering::Release);
        marks.pop_front();
    }
}

struct Sender {
    ctx: Arc<QueueCtx>,
    conn: Conn,
    snappy: snap::raw::Encoder,
    room: Arc<tokio::sync::Semaphore>,
}

/// How one request ended.
enum Outcome {
    Sent,
    Dropped {
        status: Option<u16>,
        message: String,
    },
}

impl Sender {
    /// Sends one batch until it is stored or dropped; `false` when stopped hard first.
    ///
    /// `careful`: the batch holds samples written before this queue started that an earlier run
    /// may already have delivered (it was killed between sending and recording its progress). A
    /// receiver that refuses a whole request for one out-of-order sample (Prometheus 2.42 answers 400
    /// and stores nothing) would make the queue drop new samples with the old ones, so a 400 here
    /// splits the batch in halves until the refused samples are alone.
    async fn send(&mut self, batch: Encoded, careful: bool) -> bool {
        let ctx = self.ctx.clone();
        let n = batch.len() as u64;
        let began = Instant::now();
        let mut work = vec![batch];
        while let Some(b) = work.pop() {
            match self.send_one(&b).await {
                None => return false,
                Some(Outcome::Sent) => {}
                Some(Outcome::Dropped { status, .. })
                    if careful && status == Some(400) && b.len() > 1 =>
                {
                    let (first, second) = b.halves();
                    work.push(second);
                    work.push(first);
                }
                Some(Outcome::Dropped { message, .. }) => {
                    if careful && b.len() == 1 {
                        tracing::debug!(remote_name = %ctx.cfg.name, error = %message, "a sample written before this start was refused (most likely delivered before)");
                    } else {
                        tracing::error!(remote_name = %ctx.cfg.name, url = %ctx.cfg.url_label(), error = %message, count = b.len(), "non-recoverable error; the samples are dropped");
                    }
                    ctx.m.failed.inc_by(b.len() as u64);
                }
            }
        }
        ctx.m.pending.dec_by(n as i64);
        self.room.add_permits(n as usize);
        ctx.out_samples.fetch_add(n, Ordering::Relaxed);
        ctx.out_nanos.fetch_add(
            u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        true
    }

    /// One request, retried while the error is recoverable; `None` when stopped hard first.
    async fn send_one(&mut self, batch: &Encoded) -> Option<Outcome> {
        let ctx = self.ctx.clone();
        let n = batch.len() as u64;
        let highest = batch.highest().unwrap_or(i64::MIN);
        let body = match self.snappy.compress_vec(batch.body()) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Some(Outcome::Dropped {
                    status: None,
                    message: format!("cannot compress the batch: {e}"),
                });
            }
        };
        let mut backoff = ctx.cfg.queue.min_backoff.0;
        loop {
            let attempt = Instant::now();
            let r = tokio::select! {
                biased;
                () = ctx.hard_stop.cancelled() => return None,
                r = ctx.client.store(&mut self.conn, body.clone()) => r,
            };
            ctx.m.samples.inc_by(n);
            ctx.m
                .batch_duration
                .observe(attempt.elapsed().as_secs_f64());
            let wait = match r {
                Ok(()) => {
                    ctx.m.bytes.inc_by(body.len() as u64);
                    let prev = ctx.highest_sent_ms.fetch_max(highest, Ordering::AcqRel);
                    if highest > prev {
                        ctx.m.highest_sent.set(highest as f64 / 1000.0);
                    }
                    ctx.last_success_ms
                        .store(meridian_core::time::now_ms(), Ordering::Release);
                    return Some(Outcome::Sent);
                }
                Err(WriteError::NonRecoverable { message, status }) => {
                    return Some(Outcome::Dropped { status, message });
                }
                Err(WriteError::Recoverable {
                    message,
                    retry_after,
                }) => {
                    tracing::warn!(remote_name = %ctx.cfg.name, url = %ctx.cfg.url_label(), error = %message, "failed to send batch, retrying");
                    ctx.m.retried.inc_by(n);
                    retry_after.filter(|d| !d.is_zero()).unwrap_or(backoff)
                }
            };
            tokio::select! {
                biased;
                () = ctx.hard_stop.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            backoff = (wait * 2).min(ctx.cfg.queue.max_backoff.0);
        }
    }
}
