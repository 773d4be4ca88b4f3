//! `eval --hidden-items`: how one model serves requests that carry no item
//! ids, measured on the same hold-out attempts three ways:
//!
//! - `F` — the model trained on the data as it is, scored with items;
//! - `F (items hidden)` — the same model, its hold-out featurised as a request
//!   without item ids (history and candidate) would be, with the model's own
//!   priors: what an app that omits `item_id` gets from it;
//! - `F (trained without items)` — a model trained on the data with every item
//!   id blanked, scored on that item-free hold-out: the best such an app could
//!   get from a dedicated model.
//!
//! The gap between the last two is what serving both kinds of request from
//! one model costs ([`crate::data::dataset::ITEMLESS_TRAIN_SHARE`] is the knob).

use std::collections::BTreeMap;

use taskcast_contract::runtime::OnnxModel;

use crate::data::dataset::{self, AltView, Dataset, LearnerSource, MemorySource};
use crate::judge::evaluate;
use crate::judge::metrics::MetricSet;
use crate::run::pipeline::{self, TrainError, TrainSpec};

/// The rows as an app without item ids would store them.
pub fn without_items(source: &MemorySource) -> MemorySource {
    let rows = source
        .rows()
        .iter()
        .cloned()
        .map(|mut r| {
            r.item_id = None;
            r
        })
        .collect();
    MemorySource::new(rows)
}

/// The item-free dataset, its hold-out also featurised with `with_items`'
/// priors and window (as [`Dataset::holdout_for_active`]), so a model trained
/// with items can be scored on requests without them.
pub async fn itemless_dataset(
    source: &mut impl LearnerSource,
    with_items: &Dataset,
) -> Result<Dataset, TrainError> {
    let alt = AltView {
        priors: &with_items.priors,
        history_window: with_items.history_window,
    };
    Ok(dataset::load(
        source,
        Some(with_items.history_window),
        Some(alt),
        &mut |_| {},
    )
    .await?)
}

/// The `(items hidden)` and `(trained without items)` rows for one family,
/// given its model trained with items (`onnx`).
pub fn compare(
    onnx: &[u8],
    itemless: &Dataset,
    spec: &TrainSpec,
) -> Result<BTreeMap<String, MetricSet>, TrainError> {
    let name = spec.family.name();
    let mut out = BTreeMap::new();
    let with_times = itemless.time_modeled();
    if let Some(alt) = &itemless.holdout_for_active {
        let model = OnnxModel::load(onnx, 1)?;
        let preds = model.run(&alt.x, &alt.keys)?;
        let scored = evaluate::score(&itemless.holdout, &preds, with_times);
        out.insert(format!("{name} (items hidden)"), scored.metrics);
    }
    let free = pipeline::fit_and_judge(itemless, spec, None, &mut |_, _| {})?;
    out.insert(
        format!("{name} (trained without items)"),
        free.candidate.metrics,
    );
    Ok(out)
}
