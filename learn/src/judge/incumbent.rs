//! The active version as the candidate's rival: loaded from the registry's
//! bytes, shown the new hold-out as it would see it in serving (its own
//! priors and history window), and scored on the same attempts as the
//! candidate, so the gate compares like with like. One owner for the whole
//! comparison; the runner only hands over the active model.

use taskcast_contract::runtime::{OnnxModel, RuntimeError};

use crate::dataset::{HoldoutView, Rows};
use crate::judge::evaluate::{self, Scored};

/// The active version, ready to be judged beside a candidate.
pub struct Incumbent {
    model: OnnxModel,
    view: HoldoutView,
}

impl Incumbent {
    /// Loads the active model `version` from its ONNX bytes. A model that no
    /// longer loads (a newer runtime, a corrupt row) is logged and left out:
    /// the candidate is then judged alone rather than the run failing.
    pub fn load(version: &str, onnx: &[u8]) -> Option<Incumbent> {
        match Incumbent::try_load(onnx) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(%version, error = %e, "active model cannot be scored");
                None
            }
        }
    }

    /// Loads any artifact to be scored (`trainer-svc eval --model`), saying
    /// why it cannot be: corrupt, or another feature schema.
    pub fn try_load(onnx: &[u8]) -> Result<Incumbent, RuntimeError> {
        let model = OnnxModel::load(onnx, 1)?;
        let meta = &model.artifact.metadata;
        let view = HoldoutView::new(&meta.priors, meta.history_window, meta.reads_clock());
        Ok(Incumbent { model, view })
    }

    /// The artifact's version, as its metadata names it.
    pub fn version(&self) -> &str {
        &self.model.artifact.metadata.version
    }

    /// Where the row pass writes the hold-out as this model sees it.
    pub fn view_mut(&mut self) -> &mut HoldoutView {
        &mut self.view
    }

    /// Its scores on `holdout` (the candidate's hold-out rows, whose
    /// features the view holds in this model's terms).
    pub fn score(&self, holdout: &Rows, with_times: bool) -> Result<Scored, RuntimeError> {
        let preds = self.model.run(&self.view.x, &self.view.keys)?;
        Ok(evaluate::score(holdout, &preds, with_times))
    }
}
