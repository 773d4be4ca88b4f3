//! The hold-out as another model would see it in serving: the same attempts
//! featurised with that model's priors and history window, so the two are
//! judged on the same rows (the active version by the gate, a model trained
//! with items by `eval --hidden-items`).

use taskcast_contract::features::window;
use taskcast_contract::{CandidateKey, FeatureContext, PriorTable, Priors, RowKeys, TaskRow};

use super::resolve;

/// Hold-out feature rows computed with another model's priors and window, in
/// the order of [`Dataset::holdout`](super::Dataset::holdout).
pub struct HoldoutView {
    table: PriorTable,
    history_window: u32,
    /// Whether that model reads the clock.
    clock: bool,
    /// Row-major features.
    pub x: Vec<f32>,
    /// Index-input keys.
    pub keys: Vec<RowKeys>,
}

impl HoldoutView {
    /// An empty view for a model with these priors, window and use of the
    /// clock; the row pass ([`build`](super::build)) fills it.
    pub fn new(priors: &Priors, history_window: u32, clock: bool) -> Self {
        HoldoutView {
            table: PriorTable::new(priors),
            history_window,
            clock,
            x: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Room for `rows` hold-out rows, so the view holds what it needs and
    /// not up to twice that.
    pub(super) fn reserve(&mut self, rows: usize) {
        self.x
            .reserve_exact(rows * taskcast_contract::FEATURE_COUNT);
        self.keys.reserve_exact(rows);
    }

    /// Adds the hold-out rows of one learner, whose usable attempts are `rows`
    /// with the hold-out from `split` on.
    pub(super) fn add_learner(&mut self, rows: &[&TaskRow], split: usize, user_key: u64) {
        if split >= rows.len() {
            return;
        }
        let table = &self.table;
        let events = resolve(rows, table, true);
        for (i, r) in rows.iter().enumerate().skip(split) {
            let item = r.item_id.as_deref().unwrap_or("");
            let cand = CandidateKey::new(&r.topic, &r.difficulty, item, table);
            let ctx = FeatureContext::new(window(&events[..i], self.history_window), table)
                .at(super::row_now(r, self.clock));
            self.x.extend_from_slice(&ctx.row(&cand, table).row);
            self.keys.push(RowKeys::new(user_key, &cand));
        }
    }
}
