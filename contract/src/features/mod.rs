//! The feature code: one pure function from (history, candidate, priors) to
//! the model's input row, shared by training and serving so the two can never
//! disagree on a formula or a scale.
//!
//! Two steps, both pure:
//! 1. [`Event::resolve`] turns each completed attempt into an [`Event`] (hashed
//!    labels, log time, and the item prior it was attempted against);
//! 2. [`FeatureContext::new`] summarises the candidate-independent part of a
//!    history window once, and [`FeatureContext::row`] produces one row per
//!    candidate with a single pass over the window. For many candidates over
//!    one history, [`FeatureContext::indexed`] also sums the window by topic,
//!    difficulty and item once, so each row is three lookups instead of a
//!    pass; the rows are bit-for-bit the same (the sums are taken in the same
//!    order).
//!
//! # Formulas
//! Notation: a history window `H` (the most recent `history_window` attempts,
//! oldest first); for an attempt `j`, `c_j ∈ {0,1}`, `t_j = log_time(seconds_j)`
//! (absent when no time was recorded) and `(r_j, m_j)` the prior rate and
//! log-time of its item ([`PriorTable::item`]). For a subset `S` of `H`:
//! `n_S = |S|`, `c_S = Σ c_j`, `nt_S` = timed attempts, `t_S = Σ t_j`.
//! `K = K_LEARNER = 4` is the learner-level pseudo-count; `logit(p) =
//! ln(p/(1−p))` with `p` clamped to `[1e-4, 1−1e-4]`.
//! `P`, `T`, `D`, `I` are the population, candidate topic, candidate
//! (effective) difficulty and candidate item priors, each a `(rate, log_time)`.
//!
//! | # | name | formula |
//! |---|---|---|
//! | 0 | `prior_item_logit` | `logit(I.rate)` (= topic prior when the item is unknown) |
//! | 1 | `prior_item_log_time` | `I.log_time` |
//! | 2 | `prior_topic_logit` | `logit(T.rate)` |
//! | 3 | `prior_topic_log_time` | `T.log_time` |
//! | 4 | `prior_difficulty_logit` | `logit(D.rate)` |
//! | 5 | `prior_difficulty_log_time` | `D.log_time` |
//! | 6 | `overall_rate_logit` | `logit((c_H + K·P.rate)/(n_H + K))` =: `logit(R)` |
//! | 7 | `overall_log_time` | `(t_H + K·P.log_time)/(nt_H + K)` =: `M` |
//! | 8 | `overall_count` | `ln(1 + n_H)` |
//! | 9 | `topic_rate_logit` | `logit((c_Ht + K·T.rate)/(n_Ht + K))`, `Ht` = attempts in the candidate's topic |
//! | 10 | `topic_log_time` | `(t_Ht + K·T.log_time)/(nt_Ht + K)` |
//! | 11 | `topic_count` | `ln(1 + n_Ht)` |
//! | 12 | `difficulty_rate_logit` | as 9 over `Hd`, attempts of the candidate's effective difficulty, toward `D` |
//! | 13 | `difficulty_log_time` | as 10 over `Hd`, toward `D` |
//! | 14 | `difficulty_count` | `ln(1 + n_Hd)` |
//! | 15 | `recent_rate_logit` | `logit((c_L + K·R)/(n_L + K))`, `L` = last 5 attempts of `H` |
//! | 16 | `recent_log_time` | `(t_L + K·M)/(nt_L + K)` |
//! | 17 | `ability` | `Σ_H (c_j − r_j) / (n_H + K)`: success beyond what the items predicted |
//! | 18 | `topic_ability` | `Σ_Ht (c_j − r_j) / (n_Ht + K)` |
//! | 19 | `recent_ability` | `Σ_L (c_j − r_j) / (n_L + K)` |
//! | 20 | `speed` | `Σ_H,timed (t_j − m_j) / (nt_H + K)`: log-time beyond what the items predicted |
//! | 21 | `topic_speed` | `Σ_Ht,timed (t_j − m_j) / (nt_Ht + K)` |
//! | 22 | `item_count` | `ln(1 + n_Hi)`, `Hi` = earlier attempts at the candidate's item |
//! | 23 | `item_last_correct` | `+1` / `−1` if the last attempt at the item was right / wrong, `0` if none |
//!
//! With an empty history every learner feature equals its prior, so a new
//! learner gets the topic / difficulty / item / population prediction.

pub use crate::encode::{LOG_TIME_CAP, label_key, log_time};
use crate::keymap::KeyMap;
use crate::priors::{Prior, PriorTable};

/// Identifier of this feature schema; a model trained on another is refused.
pub const FEATURE_SCHEMA: &str = "taskcast.features/v1";
/// Learner-level pseudo-count (see the module docs).
pub const K_LEARNER: f64 = 4.0;
/// Size of the "recent" window.
pub const RECENT: usize = 5;
/// Default number of most recent attempts the features look at.
pub const DEFAULT_HISTORY_WINDOW: u32 = 256;

/// Feature names in input order.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "prior_item_logit",
    "prior_item_log_time",
    "prior_topic_logit",
    "prior_topic_log_time",
    "prior_difficulty_logit",
    "prior_difficulty_log_time",
    "overall_rate_logit",
    "overall_log_time",
    "overall_count",
    "topic_rate_logit",
    "topic_log_time",
    "topic_count",
    "difficulty_rate_logit",
    "difficulty_log_time",
    "difficulty_count",
    "recent_rate_logit",
    "recent_log_time",
    "ability",
    "topic_ability",
    "recent_ability",
    "speed",
    "topic_speed",
    "item_count",
    "item_last_correct",
];

/// Number of features.
pub const FEATURE_COUNT: usize = 24;

/// Position of a feature by name.
pub fn feature_index(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

/// One model input row.
pub type FeatureRow = [f32; FEATURE_COUNT];

/// `ln(p / (1 − p))` with `p` clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

/// A completed attempt, resolved against the priors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// [`label_key`] of the topic.
    pub topic: u64,
    /// Effective difficulty key ([`PriorTable::effective_difficulty`]).
    pub difficulty: u64,
    /// [`label_key`] of the item id (0 when absent).
    pub item: u64,
    /// Whether it was answered correctly.
    pub correct: bool,
    /// [`log_time`] of its seconds.
    pub log_time: Option<f64>,
    /// Prior success rate of its item.
    pub prior_rate: f64,
    /// Prior log-time of its item.
    pub prior_log_time: f64,
}

impl Event {
    /// Resolves one attempt. `seconds` of `None` (or ≤ 0) means not recorded.
    pub fn resolve(
        topic: &str,
        difficulty: &str,
        item: &str,
        correct: bool,
        seconds: Option<f64>,
        table: &PriorTable,
    ) -> Self {
        let key = CandidateKey::new(topic, difficulty, item, table);
        let prior = table.item(key.item, key.topic);
        Event {
            topic: key.topic,
            difficulty: key.difficulty,
            item: key.item,
            correct,
            log_time: log_time(seconds),
            prior_rate: prior.rate,
            prior_log_time: prior.log_time,
        }
    }
}

/// A candidate task, resolved against the priors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateKey {
    /// [`label_key`] of the topic.
    pub topic: u64,
    /// Effective difficulty key.
    pub difficulty: u64,
    /// [`label_key`] of the item id (0 when absent).
    pub item: u64,
}

impl CandidateKey {
    /// Hashes the labels and derives the difficulty where the app gave none.
    pub fn new(topic: &str, difficulty: &str, item: &str, table: &PriorTable) -> Self {
        let topic = label_key(topic);
        let item = label_key(item);
        let difficulty = table.effective_difficulty(label_key(difficulty), item, topic);
        CandidateKey {
            topic,
            difficulty,
            item,
        }
    }
}

/// The label keys a row's index inputs are looked up by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowKeys {
    /// `label_key(user_id)`.
    pub user: u64,
    /// The candidate's resolved keys.
    pub topic: u64,
    /// Effective difficulty key.
    pub difficulty: u64,
    /// Item key.
    pub item: u64,
}

impl RowKeys {
    /// Keys for one candidate of one learner.
    pub fn new(user: u64, cand: &CandidateKey) -> Self {
        RowKeys {
            user,
            topic: cand.topic,
            difficulty: cand.difficulty,
            item: cand.item,
        }
    }
}

/// The most recent `window` attempts of a history ordered oldest first.
pub fn window(history: &[Event], window: u32) -> &[Event] {
    let w = window as usize;
    &history[history.len().saturating_sub(w)..]
}

/// Sums over a subset of the history.
#[derive(Clone, Copy, Debug, Default)]
struct Agg {
    n: f64,
    correct: f64,
    n_timed: f64,
    log_time: f64,
    /// Σ (c_j − r_j)
    surprise: f64,
    /// Σ over timed (t_j − m_j)
    slowness: f64,
}

impl Agg {
    #[inline]
    fn add(&mut self, e: &Event) {
        let c = if e.correct { 1.0 } else { 0.0 };
        self.n += 1.0;
        self.correct += c;
        self.surprise += c - e.prior_rate;
        if let Some(t) = e.log_time {
            self.n_timed += 1.0;
            self.log_time += t;
            self.slowness += t - e.prior_log_time;
        }
    }

    fn rate(&self, prior: f64) -> f64 {
        (self.correct + K_LEARNER * prior) / (self.n + K_LEARNER)
    }

    fn mean_log_time(&self, prior: f64) -> f64 {
        (self.log_time + K_LEARNER * prior) / (self.n_timed + K_LEARNER)
    }

    fn ability(&self) -> f64 {
        self.surprise / (self.n + K_LEARNER)
    }

    fn speed(&self) -> f64 {
        self.slowness / (self.n_timed + K_LEARNER)
    }
}

/// The candidate-independent summary of one history window.
#[derive(Clone, Debug)]
pub struct FeatureContext<'h> {
    history: &'h [Event],
    population: Prior,
    overall: Agg,
    recent: Agg,
    /// Per-key sums, when built with [`FeatureContext::indexed`].
    groups: Option<Groups>,
}

/// The window's attempts summed by topic, difficulty and item; key 0 ("none")
/// is left out because a candidate without the label matches nothing.
#[derive(Clone, Debug, Default)]
struct Groups {
    topics: KeyMap<Agg>,
    difficulties: KeyMap<Agg>,
    /// Attempts at the item and whether the last one was right (+1) or wrong (−1).
    items: KeyMap<(f64, f64)>,
}

impl Groups {
    fn new(history: &[Event]) -> Self {
        let mut g = Groups::default();
        // Events are added in window order, so each group's floating-point
        // sums are accumulated exactly as `FeatureContext::row`'s pass does.
        for e in history {
            if e.topic != 0 {
                g.topics.entry(e.topic).or_default().add(e);
            }
            if e.difficulty != 0 {
                g.difficulties.entry(e.difficulty).or_default().add(e);
            }
            if e.item != 0 {
                let (n, last) = g.items.entry(e.item).or_default();
                *n += 1.0;
                *last = if e.correct { 1.0 } else { -1.0 };
            }
        }
        g
    }
}

/// One candidate's features and whether they rest on priors alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// The model input row.
    pub row: FeatureRow,
    /// The learner has no attempt in the candidate's topic.
    pub cold_start: bool,
}

impl<'h> FeatureContext<'h> {
    /// Summarises `history`, which must already be cut to the model's window
    /// ([`window`]) and ordered oldest first.
    pub fn new(history: &'h [Event], table: &PriorTable) -> Self {
        let mut overall = Agg::default();
        for e in history {
            overall.add(e);
        }
        let mut recent = Agg::default();
        for e in &history[history.len().saturating_sub(RECENT)..] {
            recent.add(e);
        }
        FeatureContext {
            history,
            population: table.population(),
            overall,
            recent,
            groups: None,
        }
    }

    /// As [`FeatureContext::new`], plus per-topic, per-difficulty and
    /// per-item sums, which makes [`FeatureContext::row`] independent of the
    /// window's length. Worth it from a few candidates per history on; the
    /// rows are identical either way.
    pub fn indexed(history: &'h [Event], table: &PriorTable) -> Self {
        let mut ctx = Self::new(history, table);
        ctx.groups = Some(Groups::new(history));
        ctx
    }

    /// The cheaper context for `candidates` rows over this history: one
    /// candidate scans the window once, which costs less than grouping it;
    /// more share the grouping. The rows are identical either way.
    pub fn for_candidates(history: &'h [Event], table: &PriorTable, candidates: usize) -> Self {
        if candidates > 1 {
            Self::indexed(history, table)
        } else {
            Self::new(history, table)
        }
    }

    /// One pass over the window: the candidate's topic and difficulty sums,
    /// and its item's attempt count and last outcome.
    fn scan(&self, cand: &CandidateKey) -> (Agg, Agg, (f64, f64)) {
        let mut topic = Agg::default();
        let mut difficulty = Agg::default();
        let mut item_n = 0f64;
        let mut item_last = 0f64;
        for e in self.history {
            if cand.topic != 0 && e.topic == cand.topic {
                topic.add(e);
            }
            if cand.difficulty != 0 && e.difficulty == cand.difficulty {
                difficulty.add(e);
            }
            if cand.item != 0 && e.item == cand.item {
                item_n += 1.0;
                item_last = if e.correct { 1.0 } else { -1.0 };
            }
        }
        (topic, difficulty, (item_n, item_last))
    }

    /// The feature row for one candidate.
    pub fn row(&self, cand: &CandidateKey, table: &PriorTable) -> Features {
        let (topic, difficulty, (item_n, item_last)) = match &self.groups {
            Some(g) => (
                g.topics.get(&cand.topic).copied().unwrap_or_default(),
                g.difficulties
                    .get(&cand.difficulty)
                    .copied()
                    .unwrap_or_default(),
                g.items.get(&cand.item).copied().unwrap_or_default(),
            ),
            None => self.scan(cand),
        };
        let p_item = table.item(cand.item, cand.topic);
        let p_topic = table.topic(cand.topic);
        let p_diff = if cand.difficulty != 0 {
            table.difficulty(cand.difficulty)
        } else {
            self.population
        };
        let pop = self.population;
        let overall_rate = self.overall.rate(pop.rate);
        let overall_time = self.overall.mean_log_time(pop.log_time);
        let values: [f64; FEATURE_COUNT] = [
            logit(p_item.rate),
            p_item.log_time,
            logit(p_topic.rate),
            p_topic.log_time,
            logit(p_diff.rate),
            p_diff.log_time,
            logit(overall_rate),
            overall_time,
            (1.0 + self.overall.n).ln(),
            logit(topic.rate(p_topic.rate)),
            topic.mean_log_time(p_topic.log_time),
            (1.0 + topic.n).ln(),
            logit(difficulty.rate(p_diff.rate)),
            difficulty.mean_log_time(p_diff.log_time),
            (1.0 + difficulty.n).ln(),
            logit(self.recent.rate(overall_rate)),
            self.recent.mean_log_time(overall_time),
            self.overall.ability(),
            topic.ability(),
            self.recent.ability(),
            self.overall.speed(),
            topic.speed(),
            (1.0 + item_n).ln(),
            item_last,
        ];
        Features {
            row: values.map(|v| v as f32),
            cold_start: topic.n == 0.0,
        }
    }
}

#[cfg(test)]
mod tests;
