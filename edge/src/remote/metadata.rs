//! Metadata over remote write (v2.42 `metadata_config`): every `send_interval`, the metadata of every
//! metric family the edge knows (scraped or received) goes to the queue's URL as `WriteRequest.metadata`,
//! at most `max_samples_per_send` entries per request, retried like samples until the next round.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::client::{Conn, WriteClient, WriteError};
use super::config::RemoteWriteConfig;
use super::metrics::{Metrics, QueueLabels};
use crate::metadata::{MetadataStore, remote_write_type};
use meridian_storeapi::proto::prometheus::{MetricMetadata, WriteRequest};

struct Counters {
    sent: Counter,
    failed: Counter,
    retried: Counter,
    bytes: Counter,
}

/// Starts the metadata loop of a queue (nothing when `send` is off).
pub fn spawn(
    cfg: Arc<RemoteWriteConfig>,
    store: Arc<MetadataStore>,
    metrics: &Metrics,
    labels: &QueueLabels,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    if !cfg.metadata.send {
        return Ok(None);
    }
    let client = WriteClient::new(&cfg)?;
    let c = Counters {
        sent: metrics.metadata.get_or_create(labels).clone(),
        failed: metrics.metadata_failed.get_or_create(labels).clone(),
        retried: metrics.metadata_retried.get_or_create(labels).clone(),
        bytes: metrics.metadata_bytes.get_or_create(labels).clone(),
    };
    Ok(Some(tokio::spawn(run(cfg, client, store, c, stop))))
}

async fn run(
    cfg: Arc<RemoteWriteConfig>,
    client: WriteClient,
    store: Arc<MetadataStore>,
    c: Counters,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.metadata.send_interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = Conn::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let all: Vec<MetricMetadata> = store
            .all(std::time::Instant::now())
            .into_iter()
            .flat_map(|(family, metas)| {
                metas.into_iter().map(move |m| MetricMetadata {
                    r#type: remote_write_type(&m.kind),
                    metric_family_name: family.clone(),
                    help: m.help,
                    unit: m.unit,
                })
            })
            .collect();
        for chunk in all.chunks(cfg.metadata.max_samples_per_send.max(1)) {
            let req = WriteRequest {
                timeseries: Vec::new(),
                metadata: chunk.to_vec(),
            };
            let Ok(body) = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()) else {
                continue;
            };
            let body = Bytes::from(body);
            if !send(
                &cfg,
                &client,
                &mut conn,
                body,
                chunk.len() as u64,
                &c,
                &stop,
            )
            .await
            {
                return;
            }
        }
    }
}

/// Sends one request with retries; `false` when stopped.
async fn send(
    cfg: &RemoteWriteConfig,
    client: &WriteClient,
    conn: &mut Conn,
    body: Bytes,
    n: u64,
    c: &Counters,
    stop: &CancellationToken,
) -> bool {
    let mut backoff = cfg.queue.min_backoff.0;
    loop {
        let r = tokio::select! {
            () = stop.cancelled() => return false,
            r = client.store(conn, body.clone()) => r,
        };
        c.sent.inc_by(n);
        let wait = match r {
            Ok(()) => {
                c.bytes.inc_by(body.len() as u64);
                return true;
            }
            Err(WriteError::NonRecoverable { message, .. }) => {
                tracing::error!(remote_name = %cfg.name, error = %message, "non-recoverable error sending metadata; dropped");
                c.failed.inc_by(n);
                return true;
            }
            Err(WriteError::Recoverable { retry_after, .. }) => {
                c.retried.inc_by(n);
                retry_after
                    .filter(|d| !d.is_zero())
                    .unwrap_or(backoff)
                    .min(Duration::from_secs(300))
            }
        };
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = (wait * 2).min(cfg.queue.max_backoff.0);
    }
}
