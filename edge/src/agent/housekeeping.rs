//! The edge's background loops: TSDB housekeeping (or, in agent mode, WAL truncation) and the
//! config-file watcher.

use super::*;

/// Compaction, retention and TSDB gauges, once a minute (and once at start); new blocks wake the
/// shipper.
pub(crate) async fn housekeeping(
    db: Arc<Db>,
    shipper: Option<Arc<tokio::sync::Notify>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let db = db.clone();
        let r = tokio::task::spawn_blocking(move || {
            let new = db.compact()?;
            db.apply_retention()?;
            db.refresh_metrics();
            Ok::<bool, meridian_tsdb::db::DbError>(!new.is_empty())
        })
        .await;
        match r {
            Ok(Ok(new_blocks)) => {
                if let (true, Some(w)) = (new_blocks, &shipper) {
                    w.notify_one();
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "TSDB housekeeping failed"),
            Err(e) => tracing::error!(error = %e, "TSDB housekeeping task failed"),
        }
    }
}

/// Agent mode's WAL truncation (Prometheus v2.42 `tsdb/agent/db.go` `run`): every truncate
/// frequency, series not written since the lowest timestamp every queue has sent, less the minimum
/// WAL time, leave; never earlier than `now - max time`. The segments a queue has not finished stay
/// (up to the maximum WAL time, see `DbOptions::wal_hold_max_age`).
pub(super) async fn truncate_agent_wal(
    db: Arc<Db>,
    remote: Arc<RemoteWrite>,
    mode: AgentMode,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(mode.truncate_frequency);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let lowest = remote.lowest_sent_ms().await.unwrap_or(0);
        let mut ts = lowest.saturating_sub(ms(mode.min_time)).max(0);
        let floor = meridian_core::time::now_ms().saturating_sub(ms(mode.max_time));
        ts = ts.max(floor);
        let db = db.clone();
        match tokio::task::spawn_blocking(move || db.truncate_agent(ts)).await {
            Ok(Ok(())) => tracing::debug!(before = ts, "agent WAL truncated"),
            Ok(Err(e)) => tracing::error!(error = %e, "agent WAL truncation failed"),
            Err(e) => tracing::error!(error = %e, "agent WAL truncation task failed"),
        }
    }
}

pub(super) async fn watch_config(shared: Arc<Shared>, stop: CancellationToken) {
    let dir = meridian_core::fswatch::parent_dir(&shared.config_file);
    let (_watcher, mut rx) = meridian_core::fswatch::watch_dir(&dir, "config");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = rx.recv() => {
                // Let an editor's write or a symlink swap finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let _ = shared.reload(false).await;
    }
}

/// Idle tenants are pruned once a minute.
pub(super) async fn prune_tenants(
    tenants: Arc<crate::receive::tenants::Tenants>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tenants.prune_idle().await;
    }
}
