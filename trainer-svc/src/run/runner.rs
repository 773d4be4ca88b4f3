//! Training runs against the database: one at a time per process (a mutex)
//! and across replicas (the database's training lock), recorded in
//! `training_runs`, published through the registry, and triggered by
//! operators, at startup, or after N newly completed tasks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use taskcast_serving::backoff::Backoff;
use taskcast_serving::shutdown::Shutdown;
use tokio::sync::{Mutex, mpsc, watch};

use crate::data::source::DbSource;
use crate::db::{
    Db, DbError, NewModelVersion, NewRun, PromotionKind, RunRecord, RunState, RunTrigger, RunUpdate,
};
use crate::run::metrics::RunMetrics;
use crate::run::outcome::{Decision, RunFailure, end_update};
use crate::run::phases::PhaseClock;
use crate::run::publisher::Publisher;
use taskcast_learn::families::Family;
use taskcast_learn::judge::incumbent::Incumbent;
use taskcast_learn::pipeline::{self, Phase, TrainError, TrainSpec, Trained};

/// Default [`RunnerConfig::min_interval`]: a few minutes, short beside how
/// long a model stays current, long beside a run (seconds to a minute).
pub const DEFAULT_MIN_INTERVAL_SECONDS: u64 = 180;
/// Default [`RunnerConfig::min_growth`]: 0.5 %. Below 1 000 training rows
/// `retrain_every` (5) is the larger bar, so a small app still retrains
/// after every few tasks; at a million rows 5 000 new ones are needed.
pub const DEFAULT_MIN_GROWTH: f64 = 0.005;

/// How the runner behaves.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Default training spec (family, window, gate).
    pub spec: TrainSpec,
    /// Newly completed tasks that trigger a run.
    pub retrain_every: u64,
    /// Least time from the end of one automatic run to the start of the
    /// next, so a busy app does not keep a retrain going back to back.
    pub min_interval: Duration,
    /// Share of the last run's training rows that must be new before an
    /// automatic run: a handful of tasks on top of a million cannot move the
    /// model, so retraining on them only burns CPU.
    pub min_growth: f64,
    /// How often to check the watermark and the registry.
    pub poll_interval: Duration,
    /// First wait after a failed automatic run; doubles up to 32x.
    pub retry_backoff: Duration,
    /// Train at startup when rows exist and no model is active.
    pub train_on_startup: bool,
    /// Prune the registry after every run ([`Db::prune_models`]); `None`
    /// keeps every version's bytes.
    pub retention: Option<crate::db::RetentionPolicy>,
    /// How a model that passed the gate goes into service.
    pub rollout: crate::canary::RolloutPolicy,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            spec: TrainSpec::default(),
            retrain_every: 5,
            min_interval: Duration::from_secs(DEFAULT_MIN_INTERVAL_SECONDS),
            min_growth: DEFAULT_MIN_GROWTH,
            poll_interval: Duration::from_millis(500),
            retry_backoff: Duration::from_secs(5),
            train_on_startup: true,
            retention: Some(crate::db::RetentionPolicy::default()),
            rollout: crate::canary::RolloutPolicy::Direct,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Another replica holds the training lock and its run is not visible.
    #[error("another trainer replica is training")]
    Busy,
}

/// A run in this process: its live state for `WatchTrainingRun`.
struct Current {
    id: String,
    state: watch::Sender<RunRecord>,
}

/// Owns training runs.
pub struct Runner {
    pub(super) db: Db,
    pub(super) publisher: Publisher,
    pub(super) config: RunnerConfig,
    pub(super) metrics: RunMetrics,
    current: Mutex<Option<Current>>,
    live: std::sync::Mutex<BTreeMap<String, watch::Receiver<RunRecord>>>,
    pub(super) shutdown: Shutdown,
}

impl Runner {
    /// A runner; `shutdown` abandons a run in progress without publishing
    /// anything.
    pub fn new(
        db: Db,
        publisher: Publisher,
        config: RunnerConfig,
        metrics: RunMetrics,
        shutdown: Shutdown,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            db,
            publisher,
            config,
            metrics,
            current: Mutex::new(None),
            live: std::sync::Mutex::new(BTreeMap::new()),
            shutdown,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Live updates of a run started by this process, if it is one.
    pub fn watch_run(&self, id: &str) -> Option<watch::Receiver<RunRecord>> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// Starts a run unless one is going, in which case that run is returned.
    pub async fn start(
        self: &Arc<Self>,
        trigger: RunTrigger,
        family: Option<Family>,
        force: bool,
    ) -> Result<RunRecord, RunnerError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            let rec = c.state.borrow().clone();
            if !rec.state.is_terminal() {
                return Ok(rec);
            }
        }
        let lock = match self.training_lock().await? {
            Ok(lock) => lock,
            // Another replica trains: show its run rather than start a second.
            Err(Some(running)) => return Ok(running),
            Err(None) => return Err(RunnerError::Busy),
        };
        let stale = self
            .db
            .fail_running_runs(&lock, "its trainer stopped while this run was going")
            .await?;
        if stale > 0 {
            tracing::warn!(
                runs = stale,
                "marked runs left RUNNING by a trainer that died as FAILED"
            );
        }
        let up_to_id = self.db.max_task_id().await?;
        let family = family.unwrap_or(self.config.spec.family);
        let id = format!("run-{}", Utc::now().format("%Y%m%dT%H%M%S%6fZ"));
        let rec = self
            .db
            .insert_run(&NewRun {
                id: id.clone(),
                trigger,
                family: family.name().into(),
            })
            .await?;
        let (tx, rx) = watch::channel(rec.clone());
        if let Ok(mut live) = self.live.lock() {
            // Keep the last few runs watchable after they end.
            while live.len() >= 16 {
                let Some(oldest) = live.keys().next().cloned() else {
                    break;
                };
                live.remove(&oldest);
            }
            live.insert(id.clone(), rx);
        }
        *current = Some(Current {
            id: id.clone(),
            state: tx,
        });
        drop(current);
        self.metrics
            .runs_started
            .with_label_values(&[trigger.as_str()])
            .inc();
        tracing::info!(run = %id, trigger = trigger.as_str(), family = %family, ?up_to_id, "training run started");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let spec = TrainSpec {
                family,
                ..me.config.spec.clone()
            };
            let started = Instant::now();
            let outcome = me.execute(&id, &spec, up_to_id, force).await;
            me.finish(&id, outcome, up_to_id, started).await;
            if let Err(e) = lock.release().await {
                tracing::warn!(error = %e, "releasing the training lock");
            }
        });
        Ok(rec)
    }

    /// The training lock, or the run holding it. A run records its end just
    /// before it releases the lock, so "locked but nothing running" is
    /// usually that gap: retry briefly before calling it busy.
    async fn training_lock(
        &self,
    ) -> Result<Result<crate::db::TrainingLockGuard, Option<RunRecord>>, DbError> {
        for _ in 0..20 {
            if let Some(lock) = self.db.try_training_lock().await? {
                return Ok(Ok(lock));
            }
            if let Some(running) = self.db.running_run().await? {
                return Ok(Err(Some(running)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Err(None))
    }

    /// Records progress in the database (at phase changes) and for watchers.
    async fn progress(&self, id: &str, update: RunUpdate) {
        if let Ok(rec) = self.db.update_run(id, &update).await {
            self.broadcast(id, rec).await;
        }
    }

    async fn broadcast(&self, id: &str, rec: RunRecord) {
        if let Some(c) = self.current.lock().await.as_ref().filter(|c| c.id == id) {
            c.state.send_replace(rec);
        }
    }

    /// The run itself, phase by phase; `Ok` carries the published or
    /// rejected model and whether it went live.
    async fn execute(
        &self,
        id: &str,
        spec: &TrainSpec,
        up_to_id: Option<i64>,
        force: bool,
    ) -> Result<(Trained, bool), RunFailure> {
        let clock = Arc::new(std::sync::Mutex::new(PhaseClock::new(id)));
        let trained = self.train(id, spec, up_to_id, Arc::clone(&clock)).await?;
        if let Ok(mut c) = clock.lock() {
            c.enter(Phase::Publishing);
        }
        self.progress(
            id,
            RunUpdate {
                phase: Some(Phase::Publishing.name().into()),
                progress: Some(0.95),
                ..Default::default()
            },
        )
        .await;
        let decision = Decision::new(&trained.verdict, force).unless_unservable(&trained.servable);
        self.publish(id, &trained, &decision).await?;
        if let Ok(mut c) = clock.lock() {
            c.finish();
        }
        Ok((trained, decision.promote))
    }

    /// Read → features → fit → judge, beside the active version, recording
    /// progress (and timing each phase on `clock`) as it goes; abandoned,
    /// with nothing published, when the service stops.
    async fn train(
        &self,
        id: &str,
        spec: &TrainSpec,
        up_to_id: Option<i64>,
        clock: Arc<std::sync::Mutex<PhaseClock>>,
    ) -> Result<Trained, RunFailure> {
        let incumbent = self
            .publisher
            .current()
            .and_then(|a| Incumbent::load(&a.meta.version, &a.onnx));
        let source = DbSource::new(self.db.clone(), up_to_id).with_budget(spec.max_training_rows);
        // Progress flows through a channel so the database sees phase changes
        // without the featurising loop ever awaiting.
        let (tx, rx) = mpsc::unbounded_channel();
        let work = prepare_and_fit(source, spec.clone(), incumbent, tx, clock);
        let relay = self.relay_progress(id, rx);
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = async { tokio::join!(work, relay).0 } => Ok(r?),
            () = shutdown.recv() => Err(RunFailure::Shutdown),
        }
    }

    /// Records each new phase, and each tenth of one, until the run drops its
    /// last progress sender.
    async fn relay_progress(&self, id: &str, mut rx: mpsc::UnboundedReceiver<(Phase, f64)>) {
        let mut last: Option<(Phase, u32)> = None;
        while let Some((phase, share)) = rx.recv().await {
            let tenth = (share * 10.0) as u32;
            if last == Some((phase, tenth)) {
                continue;
            }
            last = Some((phase, tenth));
            self.progress(
                id,
                RunUpdate {
                    phase: Some(phase.name().into()),
                    progress: Some(phase.overall(share)),
                    ..Default::default()
                },
            )
            .await;
        }
    }

    /// Stores the model in the registry, then either makes it active and
    /// tells the subscribers, or records why it was not.
    async fn publish(
        &self,
        id: &str,
        trained: &Trained,
        decision: &Decision,
    ) -> Result<(), DbError> {
        let version = &trained.metadata.version;
        self.db
            .insert_model_version(&NewModelVersion {
                version: version.clone(),
                family: trained.metadata.family.clone(),
                feature_schema: trained.metadata.feature_schema.clone(),
                onnx: trained.onnx.clone(),
                metrics: trained.metadata.metrics.clone(),
                reason: decision.reason.clone(),
                run_id: Some(id.to_string()),
                time_modeled: trained.metadata.time_modeled,
            })
            .await?;
        if decision.promote {
            self.go_live(version).await?;
        } else {
            self.db.reject(version, &decision.reason).await?;
        }
        Ok(())
    }

    /// Puts a version that passed the gate into service as the rollout
    /// policy says. A canary in progress is left to finish (an operator may
    /// have started it): the new version waits as a candidate. The first
    /// version goes live directly: a canary needs an active version to
    /// compare with.
    async fn go_live(&self, version: &str) -> Result<(), DbError> {
        if let Some(open) = self.db.open_rollout().await? {
            let why = format!(
                "passed the gate; not put into service: the canary of {} is in progress",
                open.candidate
            );
            self.db.set_reason(version, &why).await?;
            tracing::info!(%version, canary = %open.candidate, "new version waits: a canary is in progress");
            return Ok(());
        }
        let has_active = self.db.active_model_version().await?.is_some();
        match self.config.rollout {
            crate::canary::RolloutPolicy::Canary(percent) if has_active => {
                let r = self.db.start_canary(version, percent).await?;
                tracing::info!(%version, rollout = %r.id, percent, "canary started by the rollout policy");
            }
            _ => {
                self.db.set_active(version, PromotionKind::Auto).await?;
            }
        }
        self.publisher.refresh(&self.db).await?;
        Ok(())
    }

    /// Advances the watermark unless the run failed (a failed run leaves the
    /// trigger armed so the next poll retries), then records the outcome.
    /// In that order: the scheduler starts its next poll as soon as the
    /// record says the run ended, and must then see the rows this run
    /// covered as done, or it would start the same run again.
    async fn finish(
        &self,
        id: &str,
        outcome: Result<(Trained, bool), RunFailure>,
        up_to_id: Option<i64>,
        started: Instant,
    ) {
        let update = end_update(&outcome);
        self.count_end(update.state, outcome.is_ok(), started);
        match &outcome {
            Ok((t, p)) => {
                tracing::info!(run = %id, version = %t.metadata.version, promoted = p, reason = t.verdict.reason(), "training run finished")
            }
            Err(e) => tracing::warn!(run = %id, error = %e, "training run failed"),
        }
        if outcome.is_ok()
            && let Some(w) = up_to_id
            && let Err(e) = self.db.set_watermark(w).await
        {
            tracing::error!(error = %e, "advancing the watermark failed; the next poll retrains");
        }
        self.record_end(id, &update).await;
        self.prune_after_run().await;
    }

    /// Applies the retention policy after a run (each run adds a version, so
    /// this bounds the registry without a separate schedule) and refreshes
    /// the registry-size gauge. A failure is logged, not fatal: the next
    /// run tries again.
    pub async fn prune_after_run(&self) {
        if let Some(policy) = &self.config.retention {
            match self.db.prune_models(policy, false).await {
                Ok(r) if !r.pruned.is_empty() => tracing::info!(
                    versions = r.pruned.len(),
                    bytes_before = r.bytes_before,
                    bytes_after = r.bytes_after,
                    "pruned the ONNX bytes of old rejected versions"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the model registry failed"),
            }
        }
        self.refresh_registry_gauge().await;
    }

    /// Sets the registry-size gauge from the database.
    pub async fn refresh_registry_gauge(&self) {
        match self.db.registry_bytes().await {
            Ok(n) => self
                .metrics
                .registry_bytes
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::warn!(error = %e, "measuring the model registry failed"),
        }
    }

    /// The run's end in the metrics: its state, its duration and, if it
    /// finished without error, when.
    fn count_end(&self, state: Option<RunState>, ok: bool, started: Instant) {
        let state = state.map_or("FAILED", |s| s.as_str());
        self.metrics.runs_finished.with_label_values(&[state]).inc();
        self.metrics
            .run_duration
            .with_label_values(&[state])
            .observe(started.elapsed().as_secs_f64());
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.metrics.last_success.set(now);
        }
    }

    /// Writes the run's end to its record and to its watchers. The one write
    /// worth waiting for: a database that blips right when a run ends would
    /// otherwise leave the row RUNNING until the next run's stale-run
    /// recovery. Bounded (~6 s), so a database that stays down does not hold
    /// the training lock.
    async fn record_end(&self, id: &str, update: &RunUpdate) {
        let mut written = self.db.update_run(id, update).await;
        let mut pauses = Backoff::new(Duration::from_millis(200), Duration::from_millis(3200));
        for _ in 0..5 {
            if written.is_ok() {
                break;
            }
            tokio::time::sleep(pauses.next_delay()).await;
            written = self.db.update_run(id, update).await;
        }
        match written {
            Ok(rec) => self.broadcast(id, rec).await,
            Err(e) => {
                tracing::error!(run = %id, error = %e, "recording the run's end failed");
                // Watchers must still see an end.
                if let Some(c) = self.current.lock().await.as_ref().filter(|c| c.id == id) {
                    c.state.send_modify(|r| {
                        r.state = RunState::Failed;
                        r.error = format!("{e}");
                    });
                }
            }
        }
    }

    /// Whether the last run this process started has ended.
    pub async fn idle(&self) -> bool {
        match self.current.lock().await.as_ref() {
            Some(c) => c.state.borrow().state.is_terminal(),
            None => true,
        }
    }
}

/// [`pipeline::prepare`] on the source, then [`pipeline::fit_and_judge`] on
/// a blocking thread (it is CPU-bound). The last progress sender drops when
/// the fit ends, which ends the relay. Every progress report also goes to
/// `clock`, on the thread that makes it, so phase times do not wait on the
/// relay's database writes.
async fn prepare_and_fit(
    mut source: DbSource,
    spec: TrainSpec,
    mut incumbent: Option<Incumbent>,
    progress: mpsc::UnboundedSender<(Phase, f64)>,
    clock: Arc<std::sync::Mutex<PhaseClock>>,
) -> Result<Trained, TrainError> {
    let report = move |phase: Phase, share: f64| {
        if let Ok(mut c) = clock.lock() {
            c.enter(phase);
        }
        let _ = progress.send((phase, share));
    };
    let mut on_progress = report.clone();
    on_progress(Phase::Reading, 0.0);
    log_budget(&mut source, spec.max_training_rows).await?;
    let ds = pipeline::prepare(
        &mut source,
        spec.history_window,
        incumbent.as_mut(),
        &mut on_progress,
    )
    .await?;
    drop(on_progress);
    tokio::task::spawn_blocking(move || {
        let mut on_progress = report;
        pipeline::fit_and_judge(&ds, &spec, incumbent.as_ref(), &mut on_progress)
    })
    .await
    .map_err(|e| TrainError::Join(e.to_string()))?
}

/// Finds which learners the training budget takes (the first pass would,
/// this only makes it visible) and logs it with what the query took.
async fn log_budget(source: &mut DbSource, max_rows: u64) -> Result<(), TrainError> {
    if max_rows == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let cut = source.cut().await?.cloned();
    let seconds = started.elapsed().as_secs_f64();
    match cut {
        Some(cut) => tracing::info!(
            max_rows,
            last_learner_at_ms = cut.last_completed_at_ms,
            seconds,
            "training budget binds: reading the most recently active learners' histories"
        ),
        None => tracing::debug!(max_rows, seconds, "training budget does not bind"),
    }
    Ok(())
}
