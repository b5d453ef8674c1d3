//! Owning background work: every task has an owner, a stop token and a bounded drain.
//!
//! A [`Task`] is spawned with the token it watches; its owner stops it with [`Task::stop`], which
//! cancels the token and waits at most the drain deadline before aborting the task, so one stuck task
//! cannot hold a shutdown forever (axum's graceful-shutdown example bounds its drain the same way;
//! the order in which an owner stops its tasks is the owner's, as in influxdb3's `ShutdownManager`).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stopped task may take to finish before it is aborted, unless its owner says otherwise.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// A spawned task and the token that asks it to stop.
#[derive(Debug)]
pub struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Task {
    /// Spawns `run(stop)`: the future must return soon after `stop` is cancelled.
    pub fn spawn<F, Fut>(name: &'static str, run: F) -> Task
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(stop.clone()));
        Task { name, stop, handle }
    }

    /// Owns a task spawned elsewhere that watches `stop`.
    pub fn from_parts(name: &'static str, stop: CancellationToken, handle: JoinHandle<()>) -> Task {
        Task { name, stop, handle }
    }

    /// Asks the task to stop without waiting for it (for `Drop` of its owner).
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Cancels the task and waits for it to finish, at most `drain`; then aborts it (logged).
    /// Answers whether it finished on its own.
    pub async fn stop(self, drain: Duration) -> bool {
        self.stop.cancel();
        let mut handle = self.handle;
        match tokio::time::timeout(drain, &mut handle).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(task = self.name, drain = ?drain, "task did not stop within its drain deadline; aborted");
                handle.abort();
                let _ = handle.await;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_stops_is_awaited() {
        let t = Task::spawn("polite", |stop| async move { stop.cancelled().await });
        assert!(t.stop(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_its_token_is_aborted_at_the_deadline() {
        let t = Task::spawn("stuck", |_stop| async move {
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        assert!(!t.stop(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
