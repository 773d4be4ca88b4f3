//! The active version as the candidate's rival: loaded from the registry's
//! bytes, shown the new hold-out as it would see it in serving (its own
//! priors and history window), and scored on the same attempts as the
//! candidate, so the gate compares like with like. One owner for the whole
//! comparison; the runner only hands over the active model.

use taskcast_contract::runtime::{OnnxModel, RuntimeError};

use crate::data::dataset::{HoldoutView, Rows};
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
        match OnnxModel::load(onnx, 1) {
            Ok(model) => {
                let meta = &model.artifact.metadata;
                let view = HoldoutView::new(&meta.priors, meta.history_window);
                Some(Incumbent { model, view })
            }
            Err(e) => {
                tracing::warn!(%version, error = %e, "active model cannot be scored");
                None
            }
        }
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
