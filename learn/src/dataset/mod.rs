//! From completed tasks to model-ready rows, in two streaming passes over the
//! learners (memory grows with the feature matrix, not with the source):
//!
//! 1. **Counting** ([`census`]). Every learner's attempts are split
//!    chronologically: with `n ≥ 5` attempts the last `ceil(0.2·n)` are
//!    hold-out, the rest training; learners with fewer go wholly to training.
//!    Training attempts are counted into population / topic / difficulty /
//!    item `Stat`s, per learner fold; [`PriorSet`] makes the priors of them.
//! 2. **Rows** ([`build`]). Each attempt becomes a feature row computed by the shared
//!    feature code from that learner's earlier attempts. Training rows see
//!    priors from the *other* folds only (out-of-fold), so no row's own outcome
//!    reaches its features; hold-out rows see the priors from all training rows,
//!    exactly what the shipped model will serve with. The same pass predicts
//!    the [`Baselines`] for each hold-out row and, when asked, featurises the
//!    hold-out as another model would see it ([`HoldoutView`]).
//!
//! Difficulty: when a row has no app label, one is derived from its item's
//! prior success rate: terciles of item rates over training attempts give
//! `easy` / `medium` / `hard` (`Priors::difficulty_cuts`).
//!
//! Items hidden: `item_id` is optional in the request, and an app whose tasks
//! have no reusable ids never sends one. So that one model serves both well,
//! [`ITEMLESS_TRAIN_SHARE`] of the training rows (chosen by a hash of learner
//! and position, so reruns agree) are featurised as such a request would be:
//! neither the candidate nor the history carries an item. Hold-out rows keep
//! their items, so the hold-out measures what the data's own app will send.

mod baselines;
mod census;
mod priors;
mod rows;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use taskcast_contract::features::{DEFAULT_HISTORY_WINDOW, label_key, unix_seconds_ms, window};
use taskcast_contract::priors::DERIVED_DIFFICULTIES;
use taskcast_contract::{CandidateKey, Event, FeatureContext, PriorTable, Priors, TaskRow};

pub use crate::vocab::Vocab;
use baselines::{BaselineInputs, EarlierAttempts};
pub use baselines::{BaselinePrediction, Baselines};
use census::usable;
pub use census::{Census, census};
pub use priors::PriorSet;
pub use rows::{KeyTables, Rows, Seconds};
pub use view::HoldoutView;

use crate::source::{LearnerSource, SourceError};
use crate::time_support::TimeSupport;

/// Learner folds for out-of-fold priors.
pub const FOLDS: usize = 5;
/// Learners with fewer attempts go wholly to training.
pub const MIN_HOLDOUT_ATTEMPTS: usize = 5;
/// Share of a learner's attempts held out, at the end of their sequence.
pub const HOLDOUT_SHARE: f64 = 0.2;
/// Share of training rows featurised without item ids (module docs), when the
/// data has any. Measured on assist2009_rt's hold-out (EVALUATION.md): with
/// items the AUC is unchanged, and with items hidden at request time the gap
/// to a model trained without items closes.
pub const ITEMLESS_TRAIN_SHARE: f64 = 0.25;

/// Whether training row `i` (position among the learner's usable attempts)
/// of the learner keyed `user_key` is featurised without items, when the
/// learner has any: a splitmix64 hash of both, so the choice is stable and
/// spread evenly over positions and learners.
pub fn hides_items(user_key: u64, i: usize) -> bool {
    let mut z = user_key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < ITEMLESS_TRAIN_SHARE
}

/// Number of hold-out attempts for a learner with `n` usable attempts.
pub fn holdout_len(n: usize) -> usize {
    if n < MIN_HOLDOUT_ATTEMPTS {
        0
    } else {
        (HOLDOUT_SHARE * n as f64).ceil() as usize
    }
}

/// A learner's fold.
pub fn fold_of(user_id: &str) -> usize {
    (label_key(user_id) % FOLDS as u64) as usize
}

/// Everything a family needs to fit and be evaluated.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Training rows (features with out-of-fold priors).
    pub train: Rows,
    /// Hold-out rows (features with serving priors).
    pub holdout: Rows,
    /// Priors to ship.
    pub priors: Priors,
    /// Features' history window.
    pub history_window: u32,
    /// Whether rows were featurised with their recorded start time as
    /// "now" ([`Census::clock`]); the model then reads the clock when served.
    pub clock: bool,
    /// Learner ids.
    pub users: Vocab,
    /// Topic labels.
    pub topics: Vocab,
    /// Effective difficulty labels.
    pub difficulties: Vocab,
    /// Item ids.
    pub items: Vocab,
    /// The counting pass's report.
    pub census: Census,
}

impl Dataset {
    /// No rows yet, room for the census's.
    fn empty(census: &Census, priors: Priors, history_window: u32) -> Dataset {
        let train_cap = (census.rows - census.holdout_rows) as usize;
        Dataset {
            train: Rows::with_capacity(train_cap, false),
            holdout: Rows::with_capacity(census.holdout_rows as usize, true),
            priors,
            history_window,
            clock: census.clock(),
            users: Vocab::new(),
            topics: Vocab::new(),
            difficulties: Vocab::new(),
            items: Vocab::new(),
            census: Census::default(),
        }
    }

    /// How many training and hold-out rows carry a time.
    pub fn time_support(&self) -> TimeSupport {
        TimeSupport {
            train_timed: self.train.timed(),
            holdout_timed: self.holdout.timed(),
            holdout_rows: self.holdout.len(),
        }
    }

    /// True when the time head is learned and judged ([`TimeSupport::modeled`]).
    pub fn time_modeled(&self) -> bool {
        self.time_support().modeled()
    }
}

/// Progress of the row pass, as a share of learners seen.
pub type Progress<'a> = &'a mut (dyn FnMut(f64) + Send);

/// Pass 2: feature rows for every attempt. `census` must come from the same
/// source. With `view`, the hold-out is also featurised as another model
/// would see it.
pub async fn build(
    source: &mut impl LearnerSource,
    census: Census,
    history_window: u32,
    view: Option<&mut HoldoutView>,
    progress: Progress<'_>,
) -> Result<Dataset, SourceError> {
    let priors = PriorSet::new(&census);
    build_with(source, census, priors, history_window, view, progress).await
}

/// As [`build`], with the priors given instead of counted from `census`.
pub async fn build_with(
    source: &mut impl LearnerSource,
    mut census: Census,
    priors: PriorSet,
    history_window: u32,
    mut view: Option<&mut HoldoutView>,
    progress: Progress<'_>,
) -> Result<Dataset, SourceError> {
    let pass = RowPass::new(&priors, &mut census, history_window);
    let mut ds = Dataset::empty(&census, priors.serving, history_window);
    if let Some(view) = view.as_deref_mut() {
        view.reserve(census.holdout_rows as usize);
    }
    let learners = census.learners.max(1) as f64;
    let mut seen = 0f64;
    let mut skipped = HashMap::new();
    source
        .for_each_learner(&mut |rows| {
            let rows = usable(rows, &mut skipped);
            if rows.is_empty() {
                return;
            }
            seen += 1.0;
            progress(seen / learners);
            let learner = pass.learner(&rows);
            pass.add_rows(&mut ds, &learner);
            if let Some(view) = view.as_deref_mut() {
                view.add_learner(&rows, learner.split, learner.user_key);
            }
        })
        .await?;
    ds.census = census;
    ds.census.skipped = skipped;
    let tables = Arc::new(KeyTables::of(
        &ds.users,
        &ds.topics,
        &ds.difficulties,
        &ds.items,
    ));
    ds.train.key_tables = Arc::clone(&tables);
    ds.holdout.key_tables = tables;
    Ok(ds)
}

/// Both passes.
pub async fn load(
    source: &mut impl LearnerSource,
    history_window: Option<u32>,
    view: Option<&mut HoldoutView>,
    progress: Progress<'_>,
) -> Result<Dataset, SourceError> {
    let census = census(source).await?;
    build(
        source,
        census,
        history_window.unwrap_or(DEFAULT_HISTORY_WINDOW),
        view,
        progress,
    )
    .await
}

/// A learner's attempts as events against `table`, with or without their items.
fn resolve(rows: &[&TaskRow], table: &PriorTable, with_items: bool) -> Vec<Event> {
    rows.iter()
        .map(|r| {
            Event::resolve(
                &r.topic,
                &r.difficulty,
                r.item_id.as_deref().filter(|_| with_items).unwrap_or(""),
                r.correct,
                r.seconds,
                table,
            )
            .at(Some(unix_seconds_ms(r.completed_at_ms)))
        })
        .collect()
}

/// The "now" a row is featurised at: when its task was handed out, if the
/// app recorded it and the model uses a clock ([`Census::clock`]); never
/// its own completion time, which carries its duration and so its outcome.
pub fn row_now(r: &TaskRow, clock: bool) -> Option<f64> {
    r.started_at_ms.filter(|_| clock).map(unix_seconds_ms)
}

/// What the row pass needs beside the rows: the priors each side is
/// featurised with and what the baselines know.
struct RowPass {
    serving: PriorTable,
    folds: Vec<PriorTable>,
    baselines: BaselineInputs,
    history_window: u32,
    /// Keys of the derived difficulty labels, in [`DERIVED_DIFFICULTIES`] order.
    derived: [u64; 3],
    /// Whether rows see their recorded start time ([`Census::clock`]).
    clock: bool,
}

/// Which side of the split a row is on, and so which priors and events it is
/// featurised with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Serving priors.
    Holdout,
    /// The learner's out-of-fold priors.
    Train,
    /// Out-of-fold priors, featurised as a request without items would be.
    TrainWithoutItems,
}

/// One learner's usable attempts, split chronologically and resolved against
/// the priors of each side.
struct Learner<'a> {
    rows: &'a [&'a TaskRow],
    /// The hold-out starts here.
    split: usize,
    user_key: u64,
    /// Whether any attempt has an item, so that some training rows go without.
    has_items: bool,
    fold: &'a PriorTable,
    train_events: Vec<Event>,
    itemless_events: Vec<Event>,
    holdout_events: Vec<Event>,
}

impl Learner<'_> {
    fn side(&self, i: usize) -> Side {
        if i >= self.split {
            Side::Holdout
        } else if self.has_items && hides_items(self.user_key, i) {
            Side::TrainWithoutItems
        } else {
            Side::Train
        }
    }
}

impl RowPass {
    /// Takes the census's training times for the baselines' quantiles (a
    /// value per timed row, not needed after).
    fn new(priors: &PriorSet, census: &mut Census, history_window: u32) -> Self {
        let serving = PriorTable::new(&priors.serving);
        RowPass {
            baselines: BaselineInputs::new(census, &serving),
            folds: priors.folds.iter().map(PriorTable::new).collect(),
            serving,
            history_window,
            derived: DERIVED_DIFFICULTIES.map(label_key),
            clock: census.clock(),
        }
    }

    /// Splits a learner's usable attempts and resolves each side's events.
    fn learner<'a>(&'a self, rows: &'a [&'a TaskRow]) -> Learner<'a> {
        let split = rows.len() - holdout_len(rows.len());
        let fold = &self.folds[fold_of(&rows[0].user_id)];
        let has_items = rows
            .iter()
            .any(|r| r.item_id.as_deref().is_some_and(|i| !i.is_empty()));
        let held = split < rows.len();
        Learner {
            rows,
            split,
            user_key: label_key(&rows[0].user_id),
            has_items,
            fold,
            train_events: resolve(rows, fold, true),
            itemless_events: if has_items && split > 0 {
                resolve(rows, fold, false)
            } else {
                Vec::new()
            },
            holdout_events: if held {
                resolve(rows, &self.serving, true)
            } else {
                Vec::new()
            },
        }
    }

    /// Appends a row per attempt of `learner` to its side of `ds`, with its
    /// labels and, for hold-out rows, the baselines' predictions.
    fn add_rows(&self, ds: &mut Dataset, learner: &Learner<'_>) {
        let user = ds.users.id(&learner.rows[0].user_id);
        let mut earlier = EarlierAttempts::default();
        for (i, r) in learner.rows.iter().enumerate() {
            let side = learner.side(i);
            let (events, table) = match side {
                Side::Holdout => (&learner.holdout_events, &self.serving),
                Side::Train => (&learner.train_events, learner.fold),
                Side::TrainWithoutItems => (&learner.itemless_events, learner.fold),
            };
            let item = match side {
                Side::TrainWithoutItems => "",
                _ => r.item_id.as_deref().unwrap_or(""),
            };
            let cand = CandidateKey::new(&r.topic, &r.difficulty, item, table);
            let ctx = FeatureContext::new(window(&events[..i], self.history_window), table)
                .at(row_now(r, self.clock));
            let topic = ds.topics.id(&r.topic);
            let difficulty = ds.difficulties.id(self.difficulty_label(r, &cand));
            let item = ds.items.id(item);
            let out = match side {
                Side::Holdout => &mut ds.holdout,
                Side::Train | Side::TrainWithoutItems => &mut ds.train,
            };
            out.x.extend_from_slice(&ctx.row(&cand, table).row);
            out.correct.push(r.correct);
            out.seconds.push(r.seconds);
            out.user.push(user);
            out.topic.push(topic);
            out.difficulty.push(difficulty);
            out.item.push(item);
            // The indices carry the keys (`Rows::key`): the effective
            // difficulty's label must be the one its key came from.
            debug_assert_eq!(
                label_key(&ds.difficulties.labels[difficulty as usize]),
                cand.difficulty
            );
            if side == Side::Holdout {
                self.baselines
                    .predict(&mut out.baselines, &earlier, cand.topic, &self.serving);
            }
            earlier.push(r);
        }
    }

    /// The app's difficulty label, or the derived class the priors put the
    /// attempt in.
    fn difficulty_label<'a>(&self, r: &'a TaskRow, cand: &CandidateKey) -> &'a str {
        if !r.difficulty.is_empty() {
            return r.difficulty.as_str();
        }
        self.derived
            .iter()
            .position(|k| *k == cand.difficulty)
            .map_or("", |i| DERIVED_DIFFICULTIES[i])
    }
}
