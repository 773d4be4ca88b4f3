//! When a run starts by itself: after enough newly completed tasks
//! ([`auto_threshold`]: the larger of a count and a share of the last run's
//! rows), no sooner than a minimum interval after the last automatic run,
//! and once at startup when rows exist and nothing is active.

use std::sync::Arc;

use taskcast_serving::backoff::Backoff;

use crate::db::{DbError, RunState, RunTrigger};
use crate::run::runner::Runner;

/// Newly completed tasks needed before an automatic run, given the last
/// run's training rows: the larger of the two rules.
pub fn auto_threshold(retrain_every: u64, min_growth: f64, last_rows: u64) -> u64 {
    let growth = (min_growth.max(0.0) * last_rows as f64).ceil() as u64;
    retrain_every.max(growth)
}

impl Runner {
    /// The trigger loop: every poll, refresh the published model (another
    /// replica may have promoted) and start a run when enough tasks arrived
    /// since the watermark ([`auto_threshold`]) and the last automatic run
    /// ended at least `min_interval` ago. Runs until shutdown.
    pub async fn schedule(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let retry = self.config.retry_backoff;
        let mut backoff = Backoff::new(retry, retry * 32);
        let mut not_before = tokio::time::Instant::now();
        let mut first = true;
        loop {
            if let Err(e) = self.publisher.refresh(&self.db).await {
                tracing::warn!(error = %e, "refreshing the active model failed");
            }
            if tokio::time::Instant::now() >= not_before && self.idle().await {
                match self.due(first).await {
                    Ok(Some(trigger)) => match self.start(trigger, None, false).await {
                        Ok(rec) => {
                            let outcome = self.wait_for_end(&rec.id).await;
                            let now = tokio::time::Instant::now();
                            not_before = now + self.config.min_interval;
                            if outcome == Some(RunState::Failed) {
                                not_before = not_before.max(now + backoff.next_delay());
                            } else {
                                backoff.reset();
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "automatic run not started"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "checking the retrain trigger failed"),
                }
                first = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                () = shutdown.recv() => return,
            }
        }
    }

    /// Which trigger, if any, is due now.
    async fn due(&self, first: bool) -> Result<Option<RunTrigger>, DbError> {
        let watermark = self.db.get_watermark().await?;
        let new_rows = self.db.count_tasks_after(watermark).await?;
        self.metrics.pending_tasks.set(new_rows as i64);
        if first
            && self.config.train_on_startup
            && new_rows > 0
            && self.publisher.current().is_none()
        {
            return Ok(Some(RunTrigger::Startup));
        }
        if self.config.retrain_every == 0 {
            self.metrics.retrain_threshold.set(f64::INFINITY);
            return Ok(None);
        }
        if new_rows < self.config.retrain_every {
            // The last run's size can only raise the bar: below the count
            // rule, that rule is the threshold (and no query is spent).
            self.metrics
                .retrain_threshold
                .set(self.config.retrain_every as f64);
            return Ok(None);
        }
        // Only now, with enough rows for the first rule, read the last run.
        let last_rows = self
            .db
            .list_runs(1)
            .await?
            .first()
            .map_or(0, |r| r.rows_used);
        let needed = auto_threshold(self.config.retrain_every, self.config.min_growth, last_rows);
        self.metrics.retrain_threshold.set(needed as f64);
        if new_rows < needed {
            tracing::debug!(
                new_rows,
                needed,
                last_rows,
                "retrain deferred: too few new rows to move the model"
            );
            return Ok(None);
        }
        Ok(Some(RunTrigger::Auto))
    }

    async fn wait_for_end(&self, id: &str) -> Option<RunState> {
        let mut rx = self.watch_run(id)?;
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = rx.wait_for(|r| r.state.is_terminal()) => r.ok().map(|r| r.state),
            () = shutdown.recv() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::runner::DEFAULT_MIN_GROWTH;

    #[test]
    fn the_larger_rule_sets_the_threshold() {
        // The original app's scale: the task count rules.
        assert_eq!(auto_threshold(5, DEFAULT_MIN_GROWTH, 688), 5);
        assert_eq!(auto_threshold(5, DEFAULT_MIN_GROWTH, 0), 5);
        // A large table: the share rules.
        assert_eq!(auto_threshold(5, DEFAULT_MIN_GROWTH, 1_000_000), 5_000);
        assert_eq!(auto_threshold(5, 0.01, 10_000_001), 100_001);
        // Off, or nonsense, leaves the count alone.
        assert_eq!(auto_threshold(5, 0.0, 1_000_000), 5);
        assert_eq!(auto_threshold(5, -1.0, 1_000_000), 5);
    }
}
