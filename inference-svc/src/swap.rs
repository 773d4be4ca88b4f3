//! The one mutable piece of the service: which model is serving.
//!
//! [`ModelSlot`] holds an `ArcSwapOption<LoadedModel>`. A request takes one
//! snapshot ([`ModelSlot::current`]) at its start and runs entirely on it, so
//! every response names exactly the version that produced it, and a swap never
//! waits for requests nor requests for a swap: the old model is dropped when
//! its last in-flight request finishes.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::model::{LoadedModel, ModelError};
use crate::telemetry::Metrics;

pub use crate::telemetry::INFERENCE_SERVICE;

/// The currently serving model, if any, and the machinery to replace it.
pub struct ModelSlot {
    current: ArcSwapOption<LoadedModel>,
    /// Serialises swaps so two concurrent loads cannot interleave their
    /// store and metric updates (requests never take this lock). Holds the
    /// version served before the current one (see [`ModelSlot::install`]).
    swapping: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    pool: usize,
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
            swapping: Mutex::new(None),
            metrics,
            health,
            pool,
        }
    }

    /// The serving model, as one consistent snapshot; `None` before the first load.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// Loads and verifies `bytes` on a blocking thread, then atomically puts
    /// the model into service. On refusal the old model keeps serving, the
    /// refusal is logged and counted, and the error is returned.
    pub async fn try_swap(
        &self,
        bytes: Vec<u8>,
        expected_sha256: Option<String>,
    ) -> Result<Arc<LoadedModel>, ModelError> {
        let pool = self.pool;
        let loaded = tokio::task::spawn_blocking(move || {
            LoadedModel::load(&bytes, expected_sha256.as_deref(), pool)
        })
        .await
        .unwrap_or_else(|join| {
            Err(ModelError::Runtime(format!(
                "model load task failed: {join}"
            )))
        });
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
                self.metrics
                    .model_refused
                    .with_label_values(&[e.reason()])
                    .inc();
                let serving = self.current().map(|m| m.version().to_string());
                tracing::warn!(
                    reason = e.reason(),
                    error = %e,
                    serving = serving.as_deref().unwrap_or("<none>"),
                    "model refused; the serving model is unchanged"
                );
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
