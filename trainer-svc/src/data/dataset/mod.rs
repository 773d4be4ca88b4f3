//! From completed tasks to model-ready rows, in two streaming passes over the
//! learners (memory grows with the feature matrix, not with the source):
//!
//! 1. **Counting.** Every learner's attempts are split chronologically: with
//!    `n ≥ 5` attempts the last `ceil(0.2·n)` are hold-out, the rest training;
//!    learners with fewer go wholly to training. Training attempts are counted
//!    into population / topic / difficulty / item [`Stat`]s, per learner fold.
//! 2. **Rows.** Each attempt becomes a feature row computed by the shared
//!    feature code from that learner's earlier attempts. Training rows see
//!    priors from the *other* folds only (out-of-fold), so no row's own outcome
//!    reaches its features; hold-out rows see the priors from all training rows,
//!    exactly what the shipped model will serve with.
//!
//! Difficulty: when a row has no app label, one is derived from its item's
//! prior success rate: terciles of item rates over training attempts give
//! `easy` / `medium` / `hard` ([`Priors::difficulty_cuts`]).
//!
//! Items hidden: `item_id` is optional in the request, and an app whose tasks
//! have no reusable ids never sends one. So that one model serves both well,
//! [`ITEMLESS_TRAIN_SHARE`] of the training rows (chosen by a hash of learner
//! and position, so reruns agree) are featurised as such a request would be:
//! neither the candidate nor the history carries an item. Hold-out rows keep
//! their items, so the hold-out measures what the data's own app will send.

use std::collections::HashMap;

use taskcast_contract::features::{DEFAULT_HISTORY_WINDOW, label_key, log_time, window};
use taskcast_contract::priors::{DERIVED_DIFFICULTIES, derived_index};
use taskcast_contract::{
    CandidateKey, Event, FEATURE_COUNT, FeatureContext, PriorTable, Priors, RowKeys, Stat,
};

use crate::data::time_support::TimeSupport;
use taskcast_contract::{RowProblem, TaskRow};

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

/// Something that yields learners' attempts, one learner at a time, each in
/// chronological order. Called once per pass.
#[allow(async_fn_in_trait)]
pub trait LearnerSource {
    /// Calls `visit` with each learner's attempts, in order.
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError>;
}

/// A source failed mid-pass.
#[derive(Debug, thiserror::Error)]
#[error("reading training data: {0}")]
pub struct SourceError(pub String);

/// An in-memory source: rows grouped by learner, keeping their order within a
/// learner (a stable sort, so CSV row order breaks timestamp ties).
pub struct MemorySource {
    rows: Vec<TaskRow>,
}

impl MemorySource {
    /// Groups `rows` by learner, ordered by time within each.
    pub fn new(mut rows: Vec<TaskRow>) -> Self {
        rows.sort_by(|a, b| {
            a.user_id
                .cmp(&b.user_id)
                .then(a.completed_at_ms.cmp(&b.completed_at_ms))
        });
        Self { rows }
    }

    /// The rows, grouped.
    pub fn rows(&self) -> &[TaskRow] {
        &self.rows
    }
}

impl LearnerSource for MemorySource {
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError> {
        for group in self.rows.chunk_by(|a, b| a.user_id == b.user_id) {
            visit(group);
        }
        Ok(())
    }
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

/// Counts of training attempts within one fold.
#[derive(Clone, Debug, Default)]
struct FoldCounts {
    population: Stat,
    topics: HashMap<String, Stat>,
    difficulties: HashMap<String, Stat>,
    items: HashMap<String, Stat>,
    /// Item counts over attempts without an app difficulty label, for the
    /// derived difficulty classes.
    unlabelled_items: HashMap<String, Stat>,
}

impl FoldCounts {
    fn add(&mut self, r: &TaskRow) {
        self.population.add(r.correct, r.seconds);
        self.topics
            .entry(r.topic.clone())
            .or_default()
            .add(r.correct, r.seconds);
        if !r.difficulty.is_empty() {
            self.difficulties
                .entry(r.difficulty.clone())
                .or_default()
                .add(r.correct, r.seconds);
        }
        if let Some(item) = r.item_id.as_deref().filter(|i| !i.is_empty()) {
            self.items
                .entry(item.to_string())
                .or_default()
                .add(r.correct, r.seconds);
            if r.difficulty.is_empty() {
                self.unlabelled_items
                    .entry(item.to_string())
                    .or_default()
                    .add(r.correct, r.seconds);
            }
        }
    }

    fn merge(&mut self, o: &FoldCounts) {
        self.population.merge(&o.population);
        for (dst, src) in [
            (&mut self.topics, &o.topics),
            (&mut self.difficulties, &o.difficulties),
            (&mut self.items, &o.items),
            (&mut self.unlabelled_items, &o.unlabelled_items),
        ] {
            for (k, v) in src {
                dst.entry(k.clone()).or_default().merge(v);
            }
        }
    }

    fn minus(&self, o: &FoldCounts) -> FoldCounts {
        let sub = |a: &HashMap<String, Stat>, b: &HashMap<String, Stat>| {
            a.iter()
                .filter_map(|(k, v)| {
                    let s = b.get(k).map_or(*v, |w| v.minus(w));
                    (s.n > 0).then(|| (k.clone(), s))
                })
                .collect()
        };
        FoldCounts {
            population: self.population.minus(&o.population),
            topics: sub(&self.topics, &o.topics),
            difficulties: sub(&self.difficulties, &o.difficulties),
            items: sub(&self.items, &o.items),
            unlabelled_items: sub(&self.unlabelled_items, &o.unlabelled_items),
        }
    }
}

/// What the counting pass learned.
#[derive(Clone, Debug, Default)]
pub struct Census {
    folds: Vec<FoldCounts>,
    item_topic_votes: HashMap<String, HashMap<String, u32>>,
    /// Usable attempts.
    pub rows: u64,
    /// Rows skipped as unusable, by reason.
    pub skipped: HashMap<RowProblem, u64>,
    /// Learners seen.
    pub learners: u64,
    /// Attempts that went to hold-out.
    pub holdout_rows: u64,
    /// Training attempts' log-times, for the baselines' population quantiles.
    pub train_log_times: Vec<f64>,
    /// Training attempts' log-times by topic, for the per-topic baseline.
    pub topic_log_times: HashMap<String, Vec<f64>>,
}

impl Census {
    /// Total skipped rows.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// True when any training attempt recorded a time.
    pub fn has_times(&self) -> bool {
        !self.train_log_times.is_empty()
    }
}

/// Keeps a learner's usable rows, counting the rest.
fn usable<'a>(rows: &'a [TaskRow], skipped: &mut HashMap<RowProblem, u64>) -> Vec<&'a TaskRow> {
    rows.iter()
        .filter(|r| match r.problem() {
            Some(p) => {
                *skipped.entry(p).or_default() += 1;
                false
            }
            None => true,
        })
        .collect()
}

/// Pass 1: counts training attempts per fold.
pub async fn census(source: &mut impl LearnerSource) -> Result<Census, SourceError> {
    let mut c = Census {
        folds: vec![FoldCounts::default(); FOLDS],
        ..Default::default()
    };
    source
        .for_each_learner(&mut |rows| {
            let rows = usable(rows, &mut c.skipped);
            if rows.is_empty() {
                return;
            }
            c.learners += 1;
            c.rows += rows.len() as u64;
            let h = holdout_len(rows.len());
            c.holdout_rows += h as u64;
            let fold = &mut c.folds[fold_of(&rows[0].user_id)];
            for r in &rows[..rows.len() - h] {
                fold.add(r);
                if let Some(item) = r.item_id.as_deref().filter(|i| !i.is_empty()) {
                    *c.item_topic_votes
                        .entry(item.to_string())
                        .or_default()
                        .entry(r.topic.clone())
                        .or_default() += 1;
                }
                if let Some(lt) = log_time(r.seconds) {
                    c.train_log_times.push(lt);
                    c.topic_log_times
                        .entry(r.topic.clone())
                        .or_default()
                        .push(lt);
                }
            }
        })
        .await?;
    Ok(c)
}

/// Priors for serving (all training rows) and for each fold (all but that fold).
#[derive(Clone, Debug)]
pub struct PriorSet {
    /// From every training attempt: shipped in the artifact.
    pub serving: Priors,
    /// `folds[f]` leaves out learners of fold `f`.
    pub folds: Vec<Priors>,
}

impl PriorSet {
    /// Builds every prior from the census.
    pub fn new(census: &Census) -> Self {
        let mut total = FoldCounts::default();
        for f in &census.folds {
            total.merge(f);
        }
        let item_topics: std::collections::BTreeMap<String, String> = census
            .item_topic_votes
            .iter()
            .filter_map(|(item, votes)| {
                // Most frequent topic; ties broken by name so the artifact is deterministic.
                votes
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(t, _)| (item.clone(), t.clone()))
            })
            .collect();
        let base = |counts: &FoldCounts| Priors {
            population: counts.population,
            topics: counts.topics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            difficulties: counts
                .difficulties
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            items: counts.items.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            item_topics: item_topics.clone(),
            difficulty_cuts: None,
        };
        let cuts = difficulty_cuts(&base(&total), &total);
        let finish = |counts: &FoldCounts| {
            let mut p = base(counts);
            p.difficulty_cuts = cuts;
            if let Some(cuts) = cuts {
                // Derived classes pool the unlabelled attempts of their items,
                // classified by the same table that will classify candidates.
                let table = PriorTable::new(&p);
                // In item order: float sums must not depend on hash order, or
                // the same data would give different priors (and artifacts).
                let mut unlabelled: Vec<_> = counts.unlabelled_items.iter().collect();
                unlabelled.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (item, stat) in unlabelled {
                    let rate = table.item(label_key(item), 0).rate;
                    let label = DERIVED_DIFFICULTIES[derived_index(rate, cuts)];
                    p.difficulties
                        .entry(label.to_string())
                        .or_default()
                        .merge(stat);
                }
            }
            p
        };
        PriorSet {
            serving: finish(&total),
            folds: census
                .folds
                .iter()
                .map(|f| finish(&total.minus(f)))
                .collect(),
        }
    }
}

/// Terciles of item prior rates, weighted by attempts; `None` with too few
/// items to make three meaningful classes.
fn difficulty_cuts(priors: &Priors, total: &FoldCounts) -> Option<[f64; 2]> {
    if total.unlabelled_items.len() < 9 {
        return None;
    }
    let table = PriorTable::new(priors);
    let mut rates: Vec<(f64, u64)> = total
        .unlabelled_items
        .iter()
        .map(|(item, s)| (table.item(label_key(item), 0).rate, s.n))
        .collect();
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total_n: u64 = rates.iter().map(|r| r.1).sum();
    let at = |share: f64| {
        let target = share * total_n as f64;
        let mut acc = 0u64;
        for (rate, n) in &rates {
            acc += n;
            if acc as f64 >= target {
                return *rate;
            }
        }
        rates.last().map_or(0.5, |r| r.0)
    };
    let (lo, hi) = (at(1.0 / 3.0), at(2.0 / 3.0));
    (hi > lo).then_some([lo, hi])
}

/// Model-ready rows of one side of the split.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// Row-major `[len, FEATURE_COUNT]` features.
    pub x: Vec<f32>,
    /// Outcome.
    pub correct: Vec<bool>,
    /// Recorded seconds (`None` when not recorded).
    pub seconds: Vec<Option<f64>>,
    /// Learner index into [`Dataset::users`].
    pub user: Vec<u32>,
    /// Topic index into [`Dataset::topics`].
    pub topic: Vec<u32>,
    /// Effective difficulty index into [`Dataset::difficulties`] (0 = none).
    pub difficulty: Vec<u32>,
    /// Item index into [`Dataset::items`] (0 = none).
    pub item: Vec<u32>,
    /// Label keys for a model's index inputs.
    pub keys: Vec<RowKeys>,
    /// Baselines' predictions (hold-out only): see [`Baselines`].
    pub baselines: Baselines,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.correct.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.correct.is_empty()
    }

    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT]
    }

    /// Training target for time: the capped log-seconds of the feature code.
    pub fn log_time(&self, i: usize) -> Option<f64> {
        log_time(self.seconds[i])
    }
}

/// A simple predictor's output per hold-out row: `(p_correct, [q10, q50, q90] seconds)`.
pub type BaselinePrediction = (f64, Option<[f64; 3]>);

/// The baselines every model is compared with, predicted for each hold-out row.
#[derive(Clone, Debug, Default)]
pub struct Baselines {
    /// Population success rate and time quantiles of the training rows.
    pub population: Vec<BaselinePrediction>,
    /// The learner's running success rate (Laplace-shrunk toward the
    /// population) and running time quantiles over all earlier attempts.
    pub learner: Vec<BaselinePrediction>,
    /// The topic's training success rate and time quantiles.
    pub topic: Vec<BaselinePrediction>,
}

/// String interner for vocabularies; index 0 is reserved for "none".
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    ids: HashMap<String, u32>,
    /// Labels by index; `labels[0]` is the empty label.
    pub labels: Vec<String>,
}

impl Vocab {
    fn new() -> Self {
        Vocab {
            ids: HashMap::new(),
            labels: vec![String::new()],
        }
    }

    fn id(&mut self, label: &str) -> u32 {
        if label.is_empty() {
            return 0;
        }
        if let Some(&i) = self.ids.get(label) {
            return i;
        }
        let i = self.labels.len() as u32;
        self.ids.insert(label.to_string(), i);
        self.labels.push(label.to_string());
        i
    }
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
    /// Hold-out rows as another model (the active one) would see them, with
    /// its own priors and window, so both are judged on the same attempts.
    pub holdout_for_active: Option<AltRows>,
}

/// Hold-out features computed with another model's priors.
#[derive(Clone, Debug, Default)]
pub struct AltRows {
    /// Row-major features.
    pub x: Vec<f32>,
    /// Index-input keys.
    pub keys: Vec<RowKeys>,
}

/// Another model's view: its priors and history window.
pub struct AltView<'a> {
    /// The other model's priors.
    pub priors: &'a Priors,
    /// The other model's window.
    pub history_window: u32,
}

impl Dataset {
    /// How many training and hold-out rows carry a time.
    pub fn time_support(&self) -> TimeSupport {
        TimeSupport::of(self)
    }

    /// True when the time head is learned and judged ([`TimeSupport::modeled`]).
    pub fn time_modeled(&self) -> bool {
        self.time_support().modeled()
    }
}

/// Running quantiles of a learner's earlier log-times, for the learner baseline.
fn quantiles(sorted: &[f64]) -> Option<[f64; 3]> {
    if sorted.is_empty() {
        return None;
    }
    let q = |p: f64| {
        let pos = p * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    Some([q(0.1), q(0.5), q(0.9)].map(f64::exp))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Progress of the row pass, as a share of learners seen.
pub type Progress<'a> = &'a mut (dyn FnMut(f64) + Send);

/// Pass 2: feature rows for every attempt. `census` must come from the same source.
pub async fn build(
    source: &mut impl LearnerSource,
    census: Census,
    history_window: u32,
    alt: Option<AltView<'_>>,
    progress: Progress<'_>,
) -> Result<Dataset, SourceError> {
    let alt_table = alt
        .as_ref()
        .map(|a| (PriorTable::new(a.priors), a.history_window));
    let mut alt_rows = alt.as_ref().map(|_| AltRows::default());
    let priors = PriorSet::new(&census);
    let serving = PriorTable::new(&priors.serving);
    let fold_tables: Vec<PriorTable> = priors.folds.iter().map(PriorTable::new).collect();
    let pop = serving.population();
    let pop_q = quantiles(&sorted(census.train_log_times.clone()));
    let topic_q: HashMap<u64, Option<[f64; 3]>> = census
        .topic_log_times
        .iter()
        .map(|(t, v)| (label_key(t), quantiles(&sorted(v.clone()))))
        .collect();
    let derived = DERIVED_DIFFICULTIES.map(label_key);

    let mut ds = Dataset {
        train: Rows::default(),
        holdout: Rows::default(),
        priors: priors.serving.clone(),
        history_window,
        users: Vocab::new(),
        topics: Vocab::new(),
        difficulties: Vocab::new(),
        items: Vocab::new(),
        census: Census::default(),
        holdout_for_active: None,
    };
    let train_cap = (census.rows - census.holdout_rows) as usize;
    ds.train.x.reserve(train_cap * FEATURE_COUNT);
    ds.holdout
        .x
        .reserve(census.holdout_rows as usize * FEATURE_COUNT);
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
            let split = rows.len() - holdout_len(rows.len());
            let fold_table = &fold_tables[fold_of(&rows[0].user_id)];
            let resolve = |table: &PriorTable, items: bool| -> Vec<Event> {
                rows.iter()
                    .map(|r| {
                        Event::resolve(
                            &r.topic,
                            &r.difficulty,
                            r.item_id.as_deref().filter(|_| items).unwrap_or(""),
                            r.correct,
                            r.seconds,
                            table,
                        )
                    })
                    .collect()
            };
            let fold_events = resolve(fold_table, true);
            let has_items = rows
                .iter()
                .any(|r| r.item_id.as_deref().is_some_and(|i| !i.is_empty()));
            let itemless_events = if has_items && split > 0 {
                resolve(fold_table, false)
            } else {
                Vec::new()
            };
            let serving_events = if split < rows.len() {
                resolve(&serving, true)
            } else {
                Vec::new()
            };
            let alt_events = match (&alt_table, split < rows.len()) {
                (Some((table, _)), true) => resolve(table, true),
                _ => Vec::new(),
            };
            let user = ds.users.id(&rows[0].user_id);
            let user_key = label_key(&rows[0].user_id);
            // Learner baseline state: all earlier attempts, hold-out ones included.
            let (mut n, mut c) = (0f64, 0f64);
            let mut times: Vec<f64> = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                let held = i >= split;
                let hide = !held && has_items && hides_items(user_key, i);
                let (events, table, out) = if held {
                    (&serving_events, &serving, &mut ds.holdout)
                } else if hide {
                    (&itemless_events, fold_table, &mut ds.train)
                } else {
                    (&fold_events, fold_table, &mut ds.train)
                };
                let item = r.item_id.as_deref().filter(|_| !hide).unwrap_or("");
                let cand = CandidateKey::new(&r.topic, &r.difficulty, item, table);
                let ctx = FeatureContext::new(window(&events[..i], history_window), table);
                out.x.extend_from_slice(&ctx.row(&cand, table).row);
                out.correct.push(r.correct);
                out.seconds.push(r.seconds.filter(|s| *s > 0.0));
                out.user.push(user);
                out.topic.push(ds.topics.id(&r.topic));
                let difficulty_label = if !r.difficulty.is_empty() {
                    r.difficulty.as_str()
                } else {
                    derived
                        .iter()
                        .position(|k| *k == cand.difficulty)
                        .map_or("", |i| DERIVED_DIFFICULTIES[i])
                };
                out.difficulty.push(ds.difficulties.id(difficulty_label));
                out.item.push(ds.items.id(item));
                out.keys.push(RowKeys::new(user_key, &cand));
                if let (true, Some((table, w)), Some(alt)) = (held, &alt_table, alt_rows.as_mut()) {
                    let cand = CandidateKey::new(&r.topic, &r.difficulty, item, table);
                    let ctx = FeatureContext::new(window(&alt_events[..i], *w), table);
                    alt.x.extend_from_slice(&ctx.row(&cand, table).row);
                    alt.keys.push(RowKeys::new(user_key, &cand));
                }
                if held {
                    let b = &mut out.baselines;
                    b.population.push((pop.rate, pop_q));
                    b.learner
                        .push(((c + pop.rate) / (n + 1.0), quantiles(&times).or(pop_q)));
                    let tq = topic_q.get(&cand.topic).copied().flatten().or(pop_q);
                    b.topic.push((serving.topic(cand.topic).rate, tq));
                }
                n += 1.0;
                c += f64::from(u8::from(r.correct));
                if let Some(lt) = log_time(r.seconds) {
                    let at = times.partition_point(|v| *v < lt);
                    times.insert(at, lt);
                }
            }
        })
        .await?;
    ds.census = census;
    ds.census.skipped = skipped;
    ds.holdout_for_active = alt_rows;
    Ok(ds)
}

/// Both passes.
pub async fn load(
    source: &mut impl LearnerSource,
    history_window: Option<u32>,
    alt: Option<AltView<'_>>,
    progress: Progress<'_>,
) -> Result<Dataset, SourceError> {
    let census = census(source).await?;
    build(
        source,
        census,
        history_window.unwrap_or(DEFAULT_HISTORY_WINDOW),
        alt,
        progress,
    )
    .await
}
