//! The one mutable piece of the service: which model is serving.
//!
//! [`ModelSlot`] holds an `ArcSwapOption<LoadedModel>`. A request takes one
//! snapshot ([`ModelSlot::current`]) at its start and runs entirely on it, so
//! every response names exactly the version that produced it, and a swap never
//! waits for requests nor requests for a swap: the old model is dropped when
//! its last in-flight request finishes.
//!
//! During a canary the slot also holds the candidate ([`CanaryArm`]); a
//! request's snapshot is then chosen by its learner ([`ModelSlot::for_learner`]),
//! so one learner gets one version for the whole canary.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use taskcast_contract::canary::CanarySplit;

use crate::batch::BatchConfig;
use crate::model::{LoadedModel, ModelError};
use crate::telemetry::Metrics;

pub use crate::telemetry::INFERENCE_SERVICE;

/// A canary's candidate and the share of learners it answers.
#[derive(Debug)]
pub struct CanaryArm {
    /// The rollout this arm belongs to.
    pub rollout_id: String,
    /// The candidate.
    pub model: Arc<LoadedModel>,
    split: CanarySplit,
}

/// The currently serving model, if any, and the machinery to replace it.
pub struct ModelSlot {
    current: ArcSwapOption<LoadedModel>,
    canary: ArcSwapOption<CanaryArm>,
    /// Serialises swaps so two concurrent loads cannot interleave their
    /// store and metric updates (requests never take this lock). Holds the
    /// version served before the current one (see [`ModelSlot::install`]).
    swapping: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    pool: usize,
    batching: BatchConfig,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot")
            .field("current", &self.current.load_full())
            .finish()
    }
}

impl ModelSlot {
    /// An empty slot; health stays NOT_SERVING until the first model is in.
    /// `pool` is the session-pool size for every model loaded into it.
    pub fn new(metrics: Arc<Metrics>, health: HealthReporter, pool: usize) -> Self {
        ModelSlot {
            current: ArcSwapOption::empty(),
            canary: ArcSwapOption::empty(),
            swapping: Mutex::new(None),
            metrics,
            health,
            pool,
            batching: BatchConfig::off(),
        }
    }

    /// Every model loaded from now on batches Predict calls by `config`.
    pub fn with_batching(mut self, config: BatchConfig) -> Self {
        self.batching = config;
        self
    }

    /// The serving model, as one consistent snapshot; `None` before the first load.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// The model that answers `user_id`: the canary's candidate for its
    /// share of learners, the serving model for everyone else (one hash per
    /// request, and only during a canary).
    pub fn for_learner(&self, user_id: &str) -> Option<Arc<LoadedModel>> {
        if let Some(arm) = self.canary.load().as_ref()
            && arm.split.to_candidate(user_id)
        {
            return Some(Arc::clone(&arm.model));
        }
        self.current()
    }

    /// The canary arm, if a canary is being served.
    pub fn canary(&self) -> Option<Arc<CanaryArm>> {
        self.canary.load_full()
    }

    /// Loads `bytes` on a blocking thread with every check a model must pass.
    async fn load(
        &self,
        bytes: Vec<u8>,
        expected_sha256: Option<String>,
    ) -> Result<LoadedModel, ModelError> {
        let (pool, batching) = (self.pool, self.batching.clone());
        tokio::task::spawn_blocking(move || {
            LoadedModel::load(&bytes, expected_sha256.as_deref(), pool)
                .map(|m| m.with_batching(batching))
        })
        .await
        .unwrap_or_else(|join| {
            Err(ModelError::Runtime(format!(
                "model load task failed: {join}"
            )))
        })
    }

    /// Logs and counts a refused load; what serves stays as it is.
    fn refused(&self, e: &ModelError, what: &str) {
        self.metrics
            .model_refused
            .with_label_values(&[e.reason()])
            .inc();
        let serving = self.current().map(|m| m.version().to_string());
        tracing::warn!(
            reason = e.reason(),
            error = %e,
            serving = serving.as_deref().unwrap_or("<none>"),
            "{what} refused; the serving model is unchanged"
        );
    }

    /// Loads a canary's candidate and serves it to `percent` of learners
    /// (replacing any other canary). On refusal the canary arm is cleared,
    /// so every learner gets the serving model, and the error is returned.
    pub async fn try_canary(
        &self,
        rollout_id: &str,
        percent: u32,
        bytes: Vec<u8>,
        expected_sha256: String,
    ) -> Result<Arc<CanaryArm>, ModelError> {
        match self.load(bytes, Some(expected_sha256)).await {
            Ok(model) => {
                let arm = Arc::new(CanaryArm {
                    rollout_id: rollout_id.to_string(),
                    split: CanarySplit::new(rollout_id, percent),
                    model: Arc::new(model),
                });
                let _guard = self.swapping.lock().await;
                self.canary.store(Some(Arc::clone(&arm)));
                self.metrics.canary_percent.set(i64::from(percent));
                tracing::info!(
                    rollout = rollout_id,
                    candidate = arm.model.version(),
                    percent,
                    "canary serving"
                );
                Ok(arm)
            }
            Err(e) => {
                self.clear_canary().await;
                self.refused(&e, "canary candidate");
                Err(e)
            }
        }
    }

    /// Ends any canary: every learner gets the serving model.
    pub async fn clear_canary(&self) {
        let _guard = self.swapping.lock().await;
        if let Some(old) = self.canary.swap(None) {
            self.metrics.canary_percent.set(0);
            tracing::info!(rollout = %old.rollout_id, candidate = old.model.version(), "canary ended on this replica");
        }
    }

    /// Loads and verifies `bytes` on a blocking thread, then atomically puts
    /// the model into service. On refusal the old model keeps serving, the
    /// refusal is logged and counted, and the error is returned.
    pub async fn try_swap(
        &self,
        bytes: Vec<u8>,
        expected_sha256: Option<String>,
    ) -> Result<Arc<LoadedModel>, ModelError> {
        let loaded = self.load(bytes, expected_sha256).await;
        let loaded = loaded.and_then(|model| match self.current() {
            Some(cur) if cur.version() == model.version() && cur.sha256 != model.sha256 => {
                Err(ModelError::VersionConflict {
                    version: model.version().to_string(),
                    serving: cur.sha256.clone(),
                    offered: model.sha256.clone(),
                })
            }
            _ => Ok(model),
        });
        match loaded {
            Ok(model) => Ok(self.install(model).await),
            Err(e) => {
                self.refused(&e, "model");
                Err(e)
            }
        }
    }

    /// Puts an already loaded model into service.
    pub async fn install(&self, model: LoadedModel) -> Arc<LoadedModel> {
        let model = Arc::new(model);
        let mut previous = self.swapping.lock().await;
        let old = self.current.swap(Some(Arc::clone(&model)));
        let m = &self.metrics;
        // A retrain every few tasks means many versions a day: per-version
        // series must not pile up. The outgoing version keeps its prediction
        // counter for one more swap (so its last increments get scraped); the
        // one before it goes now.
        let retiring = old.as_ref().map(|o| o.version().to_string());
        if let Some(gone) = std::mem::replace(&mut *previous, retiring)
            && gone != model.version()
        {
            let _ = m.predictions.remove_label_values(&[&gone]);
        }
        if let Some(old) = &old {
            // `remove` fails only if the label set is absent; nothing to undo then.
            let _ = m.model_info.remove_label_values(&[
                old.version(),
                &old.metadata().family,
                &old.sha256,
            ]);
        }
        m.model_info
            .with_label_values(&[model.version(), &model.metadata().family, &model.sha256])
            .set(1);
        m.model_swaps.inc();
        if old.is_none() {
            self.health
                .set_service_status(INFERENCE_SERVICE, ServingStatus::Serving)
                .await;
            self.health
                .set_service_status("", ServingStatus::Serving)
                .await;
        }
        tracing::info!(
            version = model.version(),
            family = %model.metadata().family,
            sha256 = %model.sha256,
            previous = old.as_ref().map(|o| o.version()).unwrap_or("<none>"),
            "model serving"
        );
        model
    }

    /// Marks the service NOT_SERVING (on shutdown, so balancers drain this replica first).
    pub async fn set_not_serving(&self) {
        self.health
            .set_service_status(INFERENCE_SERVICE, ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}
