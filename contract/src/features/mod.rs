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
//! | 24 | `decayed_rate_logit` | `logit((Σ_H w_j c_j + K·R)/(Σ_H w_j + K))`, `w_j = ½^(a_j/5)`, `a_j` = attempts after `j` in `H` |
//! | 25 | `decayed_ability` | `Σ_H w_j (c_j − r_j) / (Σ_H w_j + K)` |
//! | 26 | `topic_decayed_rate_logit` | as 24 over `Ht` (age counted in topic attempts), toward the topic rate of 9 |
//! | 27 | `day_decayed_rate_logit` | as 24 with `w_j = ½^((A − τ_j)/1 day)` over timed attempts, toward `R`; `A` = the anchor |
//! | 28 | `topic_gap_log` | `g(A − τ_last(Ht))`: time since the topic's last attempt, up to the anchor |
//! | 29 | `item_gap_log` | `g(A − τ_last(Hi))` |
//! | 30 | `idle_log` | `g(now − A)`: how long the learner has been away, when the caller knows "now" |
//! | 31 | `times_known` | `1` when the anchor is known, else `0` |
//! | 32 | `clock_known` | `1` when "now" is known, else `0` |
//!
//! Columns 0–23 are schema v1, all 33 are v2 ([`Schema`]).
//!
//! # Time, and why a row never sees its own
//! `τ_j` is attempt `j`'s recorded time (completion, as the app stores it).
//! The **anchor** `A` is the last attempt's `τ`: known before the next attempt
//! starts, at training and at serving time alike. Gaps are measured to the
//! anchor, never to the attempt being predicted: an export's timestamp of an
//! attempt is usually when it was *finished*, so it contains the attempt's
//! own duration and, through it, its outcome (slow answers are more often
//! wrong). "Now" for `idle_log` is what the caller knew when it handed the
//! task out: at training time a recorded `started_at`, at serving time
//! `PredictRequest.as_of` or the server's clock, and only for models trained
//! with a clock ([`FeatureContext::at`]). `g(s) = ln(1 + s/60)` with `s`
//! clamped to `[0, 1 year]`; a topic or item never attempted gets
//! `g(1 year)`; a gap whose times are unknown gets `0`, with `times_known`
//! saying so, so histories without timestamps degrade to v1's information.
//!
//! With an empty history every learner feature equals its prior, so a new
//! learner gets the topic / difficulty / item / population prediction.

mod schema;

pub use crate::encode::{LOG_TIME_CAP, label_key, log_time, unix_seconds, unix_seconds_ms};
use crate::keymap::KeyMap;
use crate::priors::{Prior, PriorTable};
pub use schema::{FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, FeatureRow, Schema, feature_index};

/// Learner-level pseudo-count (see the module docs).
pub const K_LEARNER: f64 = 4.0;
/// Size of the "recent" window.
pub const RECENT: usize = 5;
/// Default number of most recent attempts the features look at.
pub const DEFAULT_HISTORY_WINDOW: u32 = 256;
/// Half-life of decayed correctness, in attempts: the prototype's value
/// (issue 30), with the day below; neither has been swept on the
/// developers' files yet (EVALUATION.md, "Feature schema v2").
pub const HALF_LIFE_ATTEMPTS: f64 = 5.0;
/// Half-life of day-decayed correctness, in seconds.
pub const HALF_LIFE_SECONDS: f64 = 86_400.0;
/// Longest gap the features tell apart, in seconds (a year).
pub const GAP_CAP_SECONDS: f64 = 365.0 * 86_400.0;
/// Timed attempts older than this many half-lives are left out of the
/// day-decayed sums: their weight is below 1e-12, and skipping them spares
/// the exponential.
const DAY_DECAY_HORIZON: f64 = 40.0;

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
    /// When it was recorded (Unix seconds), if the caller knows.
    pub at: Option<f64>,
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
            at: None,
        }
    }

    /// The same attempt, recorded at `at` (Unix seconds; `None`, or a value
    /// that is not finite, means unknown).
    pub fn at(mut self, at: Option<f64>) -> Self {
        self.at = at.filter(|t| t.is_finite());
        self
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

/// Per-attempt decay factor, `½^(1/HALF_LIFE_ATTEMPTS)`, written out because
/// `powf` is not `const` (a unit test holds the two equal).
const ATTEMPT_DECAY: f64 = 0.870_550_563_296_124_1;

/// `g(s)` of the module docs: a gap in seconds, clamped, as log-minutes.
fn gap_log(seconds: f64) -> f64 {
    (1.0 + seconds.clamp(0.0, GAP_CAP_SECONDS) / 60.0).ln()
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
    /// Σ w_j, Σ w_j c_j and Σ w_j (c_j − r_j) with per-attempt decay.
    decayed_n: f64,
    decayed_correct: f64,
    decayed_surprise: f64,
    /// The time of the last attempt added.
    last_at: Option<f64>,
}

impl Agg {
    #[inline]
    fn add(&mut self, e: &Event) {
        let c = if e.correct { 1.0 } else { 0.0 };
        self.n += 1.0;
        self.correct += c;
        self.surprise += c - e.prior_rate;
        self.decayed_n = self.decayed_n * ATTEMPT_DECAY + 1.0;
        self.decayed_correct = self.decayed_correct * ATTEMPT_DECAY + c;
        self.decayed_surprise = self.decayed_surprise * ATTEMPT_DECAY + (c - e.prior_rate);
        self.last_at = e.at;
        if let Some(t) = e.log_time {
            self.n_timed += 1.0;
            self.log_time += t;
            self.slowness += t - e.prior_log_time;
        }
    }

    fn rate(&self, prior: f64) -> f64 {
        (self.correct + K_LEARNER * prior) / (self.n + K_LEARNER)
    }

    fn decayed_rate(&self, prior: f64) -> f64 {
        (self.decayed_correct + K_LEARNER * prior) / (self.decayed_n + K_LEARNER)
    }

    fn mean_log_time(&self, prior: f64) -> f64 {
        (self.log_time + K_LEARNER * prior) / (self.n_timed + K_LEARNER)
    }

    fn ability(&self) -> f64 {
        self.surprise / (self.n + K_LEARNER)
    }

    fn decayed_ability(&self) -> f64 {
        self.decayed_surprise / (self.decayed_n + K_LEARNER)
    }

    fn speed(&self) -> f64 {
        self.slowness / (self.n_timed + K_LEARNER)
    }
}

/// Attempts at one item: how many, the last outcome (+1 / −1) and its time.
#[derive(Clone, Copy, Debug, Default)]
struct ItemSums {
    n: f64,
    last: f64,
    last_at: Option<f64>,
}

impl ItemSums {
    #[inline]
    fn add(&mut self, e: &Event) {
        self.n += 1.0;
        self.last = if e.correct { 1.0 } else { -1.0 };
        self.last_at = e.at;
    }
}

/// The candidate-independent summary of one history window.
#[derive(Clone, Debug)]
pub struct FeatureContext<'h> {
    history: &'h [Event],
    population: Prior,
    overall: Agg,
    recent: Agg,
    /// Σ w and Σ w·c with day decay, over timed attempts.
    day_n: f64,
    day_correct: f64,
    /// The last attempt's time (module docs).
    anchor: Option<f64>,
    /// "Now", when the caller knows it ([`FeatureContext::at`]).
    now: Option<f64>,
    /// Per-key sums, when built with [`FeatureContext::indexed`].
    groups: Option<Groups>,
}

/// The window's attempts summed by topic, difficulty and item; key 0 ("none")
/// is left out because a candidate without the label matches nothing.
#[derive(Clone, Debug, Default)]
struct Groups {
    topics: KeyMap<Agg>,
    difficulties: KeyMap<Agg>,
    items: KeyMap<ItemSums>,
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
                g.items.entry(e.item).or_default().add(e);
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
    /// ([`window`]) and ordered oldest first. "Now" is unknown until
    /// [`FeatureContext::at`] sets it.
    pub fn new(history: &'h [Event], table: &PriorTable) -> Self {
        let anchor = history.last().and_then(|e| e.at);
        let mut overall = Agg::default();
        let (mut day_n, mut day_correct) = (0.0, 0.0);
        for e in history {
            overall.add(e);
            if let (Some(a), Some(t)) = (anchor, e.at) {
                let age = (a - t).max(0.0) / HALF_LIFE_SECONDS;
                if age < DAY_DECAY_HORIZON {
                    let w = (-age).exp2();
                    day_n += w;
                    day_correct += if e.correct { w } else { 0.0 };
                }
            }
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
            day_n,
            day_correct,
            anchor,
            now: None,
            groups: None,
        }
    }

    /// The same context for a prediction made at `now` (Unix seconds): the
    /// moment the task is handed out, never when an attempt finished (module
    /// docs). `None` (or a value that is not finite) leaves it unknown.
    pub fn at(mut self, now: Option<f64>) -> Self {
        self.now = now.filter(|t| t.is_finite());
        self
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
    /// and its item's attempts.
    fn scan(&self, cand: &CandidateKey) -> (Agg, Agg, ItemSums) {
        let mut topic = Agg::default();
        let mut difficulty = Agg::default();
        let mut item = ItemSums::default();
        for e in self.history {
            if cand.topic != 0 && e.topic == cand.topic {
                topic.add(e);
            }
            if cand.difficulty != 0 && e.difficulty == cand.difficulty {
                difficulty.add(e);
            }
            if cand.item != 0 && e.item == cand.item {
                item.add(e);
            }
        }
        (topic, difficulty, item)
    }

    /// `g` of the time since a group's last attempt, up to the anchor.
    fn since(&self, n: f64, last_at: Option<f64>) -> f64 {
        if n == 0.0 {
            return gap_log(GAP_CAP_SECONDS);
        }
        match (self.anchor, last_at) {
            (Some(a), Some(t)) => gap_log(a - t),
            _ => 0.0,
        }
    }

    /// The feature row for one candidate.
    pub fn row(&self, cand: &CandidateKey, table: &PriorTable) -> Features {
        let (topic, difficulty, item) = match &self.groups {
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
        let topic_rate = topic.rate(p_topic.rate);
        let day_rate = (self.day_correct + K_LEARNER * overall_rate) / (self.day_n + K_LEARNER);
        let idle = match (self.now, self.anchor) {
            (Some(now), Some(a)) => gap_log(now - a),
            _ => 0.0,
        };
        let known = |v: Option<f64>| if v.is_some() { 1.0 } else { 0.0 };
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
            logit(topic_rate),
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
            (1.0 + item.n).ln(),
            item.last,
            logit(self.overall.decayed_rate(overall_rate)),
            self.overall.decayed_ability(),
            logit(topic.decayed_rate(topic_rate)),
            logit(day_rate),
            self.since(topic.n, topic.last_at),
            self.since(item.n, item.last_at),
            idle,
            known(self.anchor),
            known(self.now),
        ];
        Features {
            row: values.map(|v| v as f32),
            cold_start: topic.n == 0.0,
        }
    }
}

#[cfg(test)]
mod tests;
