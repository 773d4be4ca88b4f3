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
//! one model costs ([`crate::dataset::ITEMLESS_TRAIN_SHARE`] is the knob).

use std::collections::BTreeMap;

use taskcast_contract::runtime::OnnxModel;

use crate::dataset::{self, Dataset, HoldoutView};
use crate::judge::evaluate;
use crate::judge::metrics::MetricSet;
use crate::pipeline::{self, TrainError, TrainSpec};
use crate::source::{LearnerSource, MemorySource};

/// The rows as an app without item ids would store them.
pub fn without_items(source: &MemorySource) -> MemorySource {
    source
        .task_rows()
        .into_iter()
        .map(|mut r| {
            r.item_id = None;
            r
        })
        .collect()
}

/// The item-free data, twice over.
pub struct Itemless {
    /// Featurised as itself: what a model trained without items learns from.
    pub dataset: Dataset,
    /// Its hold-out featurised with the with-items dataset's priors and
    /// window: the requests without item ids a model trained with items gets.
    pub seen_with_items: HoldoutView,
}

/// The item-free dataset and its hold-out as a model trained on `with_items`
/// sees it.
pub async fn itemless_dataset(
    source: &mut impl LearnerSource,
    with_items: &Dataset,
) -> Result<Itemless, TrainError> {
    let mut view = HoldoutView::new(
        &with_items.priors,
        with_items.history_window,
        with_items.clock,
    );
    let dataset = dataset::load(
        source,
        Some(with_items.history_window),
        Some(&mut view),
        &mut |_| {},
    )
    .await?;
    Ok(Itemless {
        dataset,
        seen_with_items: view,
    })
}

/// The `(items hidden)` and `(trained without items)` rows for one family,
/// given its model trained with items (`onnx`).
pub fn compare(
    onnx: &[u8],
    itemless: &Itemless,
    spec: &TrainSpec,
) -> Result<BTreeMap<String, MetricSet>, TrainError> {
    let name = spec.family.name();
    let mut out = BTreeMap::new();
    let ds = &itemless.dataset;
    let view = &itemless.seen_with_items;
    let model = OnnxModel::load(onnx, 1)?;
    let preds = model.run(&view.x, &view.keys)?;
    let scored = evaluate::score(&ds.holdout, &preds, ds.time_modeled());
    out.insert(format!("{name} (items hidden)"), scored.metrics);
    let free = pipeline::fit_and_judge(ds, spec, None, &mut |_, _| {})?;
    out.insert(
        format!("{name} (trained without items)"),
        free.candidate.metrics,
    );
    Ok(out)
}
