//! A seedable learner simulator: demo data, load and end-to-end test traffic.
//!
//! The generative model is deliberately the kind of thing the trainer is meant
//! to recover, so a model trained on simulated data has a known right answer:
//!
//! * learner `u`: ability `θ_u ~ N(0, 1)`, speed `σ_u ~ N(0, 0.3)`;
//! * topic `t`: difficulty offset `o_t ~ N(0, 0.4)`;
//! * item `i` in topic `t`: difficulty `d_i = o_t + b_i` with `b_i ~ N(0, 1)`,
//!   time intensity `β_i = ln 30 + 0.3·d_i + N(0, 0.4)` (log-seconds);
//! * after `k` earlier attempts in the topic, skill growth
//!   `g(k) = G·(1 − exp(−r·k / G))` (slope `r` = [`SimConfig::learning_rate`]
//!   at first, saturating at `G` = [`SimConfig::max_growth`]);
//! * `p(correct) = sigmoid(BASE_LOGIT + θ_u + g(k) − d_i)`;
//! * `ln seconds ~ N(β_i − σ_u + 0.3·wrong − s(k), 0.5²)` with practice
//!   speed-up `s(k) = 0.15·(1 − exp(−k/10))`, clamped to 1 s ..= 1 h;
//! * difficulty label: items ranked by `d_i`, easiest third "easy", then
//!   "medium", hardest third "hard", so the app's label carries signal.
//!
//! Learners work in sessions of a few attempts on one of the topics they are
//! studying, sometimes retrying an item they have seen, with think-time gaps of
//! seconds to a minute inside a session and hours to days between sessions.
//! Every learner draws from its own RNG derived from the seed, so a learner's
//! history does not change when other learners are added or continued.

use std::collections::HashMap;
use std::io;

use chrono::{DateTime, SecondsFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use taskcast_contract::TaskRow;

/// Topic names used in order; topics beyond these are called `topic-13`, ...
pub const TOPIC_NAMES: [&str; 12] = [
    "fractions",
    "algebra",
    "geometry",
    "decimals",
    "percentages",
    "ratios",
    "equations",
    "statistics",
    "probability",
    "integers",
    "exponents",
    "functions",
];

/// Population log-odds intercept; puts the overall correct rate near 0.7, the
/// range practice apps aim for.
pub const BASE_LOGIT: f64 = 0.4;

/// Difficulty labels in increasing difficulty, as written to `TaskRow::difficulty`.
pub const DIFFICULTY_LABELS: [&str; 3] = ["easy", "medium", "hard"];

const MS_PER_DAY: f64 = 86_400_000.0;
/// No attempt takes less than a second or more than an hour, like the clamps
/// a real app applies to abandoned tabs.
const MIN_SECONDS: f64 = 1.0;
const MAX_SECONDS: f64 = 3600.0;
/// Session lengths are capped so one unlucky draw cannot swallow a learner.
const MAX_SESSION_LEN: u32 = 40;

/// What to simulate. All fields have defaults, so
/// `SimConfig { learners: 20, ..Default::default() }` is the usual form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// RNG seed; the same config always yields the same rows.
    pub seed: u64,
    /// Number of learners, named `learner-0001`, `learner-0002`, ...
    pub learners: usize,
    /// Number of topics (see [`TOPIC_NAMES`]).
    pub topics: usize,
    /// Items per topic, named `fractions-001`, ...
    pub items_per_topic: usize,
    /// Mean length of a learner's initial history; each learner's own length
    /// is log-normal around it (some dabble, some binge), at least 1.
    pub attempts_per_learner: usize,
    /// Unix milliseconds at which the first learners start.
    pub start_ms: i64,
    /// Learners join uniformly over this many days after `start_ms`.
    pub join_spread_days: f64,
    /// Mean number of attempts in one session (at least 1).
    pub mean_session_len: f64,
    /// Probability that an attempt retries an item already seen in the topic.
    pub repeat_prob: f64,
    /// Initial skill gain per attempt in a topic, in log-odds.
    pub learning_rate: f64,
    /// The most skill practice in one topic can add, in log-odds.
    pub max_growth: f64,
    /// Probability that an attempt's time is not recorded (`seconds = None`).
    pub missing_seconds_prob: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            learners: 200,
            topics: 8,
            items_per_topic: 40,
            attempts_per_learner: 60,
            // 2024-01-01T00:00:00Z
            start_ms: 1_704_067_200_000,
            join_spread_days: 14.0,
            mean_session_len: 6.0,
            repeat_prob: 0.1,
            learning_rate: 0.1,
            max_growth: 1.5,
            missing_seconds_prob: 0.0,
        }
    }
}

/// A configuration the simulator cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// `topics` or `items_per_topic` is 0, so there is nothing to attempt.
    #[error("the simulator needs at least one topic and one item per topic")]
    EmptyCatalog,
    /// A numeric field is out of range.
    #[error("invalid simulator config: {0}")]
    InvalidConfig(&'static str),
}

/// One simulated item with its true parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SimItem {
    /// Item id, e.g. `fractions-017`.
    pub item_id: String,
    /// Topic name.
    pub topic: String,
    /// True difficulty `d_i` (topic offset plus item difficulty), in log-odds.
    pub difficulty: f64,
    /// True time intensity `β_i` in log-seconds.
    pub time_intensity: f64,
    /// `easy`, `medium` or `hard` by thirds of `difficulty`.
    pub label: &'static str,
}

/// One simulated learner's true traits.
#[derive(Clone, Debug, PartialEq)]
pub struct SimLearner {
    /// Learner id, e.g. `learner-0001`.
    pub user_id: String,
    /// Ability `θ_u` in log-odds.
    pub ability: f64,
    /// Speed `σ_u` in log-seconds (higher is faster).
    pub speed: f64,
}

/// A learner's evolving state. Kept apart from the catalog so the catalog can
/// be borrowed immutably while the learner advances.
#[derive(Clone, Debug)]
struct LearnerState {
    info: SimLearner,
    rng: StdRng,
    /// Attempts so far per topic index.
    practice: Vec<u32>,
    /// Items seen per topic index, for retries.
    seen: Vec<Vec<usize>>,
    /// Topic indices the learner is studying, in the order they were taken up.
    active: Vec<usize>,
    /// Completion time of the last attempt, or the join time before any.
    clock_ms: i64,
    started: bool,
    session_topic: usize,
    session_left: u32,
    /// Attempts of the initial history not yet generated.
    initial_left: usize,
}

/// Generates [`TaskRow`]s from [`SimConfig`]. See the module docs for the model.
#[derive(Clone, Debug)]
pub struct Simulator {
    config: SimConfig,
    topics: Vec<String>,
    items: Vec<SimItem>,
    item_index: HashMap<String, usize>,
    learners: Vec<LearnerState>,
    learner_index: HashMap<String, usize>,
}

/// SplitMix64 finaliser: decorrelates per-learner seeds so learner `i` and
/// `i + 1` do not get near-identical RNG streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

/// Uniform in (0, 1], safe to take the log of.
fn open_unit(rng: &mut StdRng) -> f64 {
    1.0 - rng.random::<f64>()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Topic name for index `t`.
fn topic_name(t: usize) -> String {
    match TOPIC_NAMES.get(t) {
        Some(name) => (*name).to_string(),
        None => format!("topic-{:02}", t + 1),
    }
}

/// Learner id for index `u`.
fn learner_id(u: usize) -> String {
    format!("learner-{:04}", u + 1)
}

impl Simulator {
    /// Builds the item catalog and the learners' starting states; no rows are
    /// generated until [`Simulator::generate`], [`Simulator::history`] or
    /// [`Simulator::next_attempts`] is called.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        if config.topics == 0 || config.items_per_topic == 0 {
            return Err(SimError::EmptyCatalog);
        }
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        if !prob(config.repeat_prob) {
            return Err(SimError::InvalidConfig("repeat_prob must be in [0, 1]"));
        }
        if !prob(config.missing_seconds_prob) {
            return Err(SimError::InvalidConfig(
                "missing_seconds_prob must be in [0, 1]",
            ));
        }
        if !(config.mean_session_len.is_finite() && config.mean_session_len >= 1.0) {
            return Err(SimError::InvalidConfig(
                "mean_session_len must be at least 1",
            ));
        }
        if !(config.join_spread_days.is_finite() && config.join_spread_days >= 0.0) {
            return Err(SimError::InvalidConfig(
                "join_spread_days must be non-negative",
            ));
        }
        if !(config.learning_rate.is_finite() && config.learning_rate >= 0.0) {
            return Err(SimError::InvalidConfig(
                "learning_rate must be non-negative",
            ));
        }
        if !(config.max_growth.is_finite() && config.max_growth > 0.0) {
            return Err(SimError::InvalidConfig("max_growth must be positive"));
        }

        let mut rng = StdRng::seed_from_u64(config.seed);
        let topics: Vec<String> = (0..config.topics).map(topic_name).collect();
        let mut items = Vec::with_capacity(config.topics * config.items_per_topic);
        for topic in &topics {
            let offset = 0.4 * normal(&mut rng);
            for j in 0..config.items_per_topic {
                let difficulty = offset + normal(&mut rng);
                // Harder items also take longer, so time and difficulty are
                // correlated as they are in real item banks.
                let time_intensity = 30f64.ln() + 0.3 * difficulty + 0.4 * normal(&mut rng);
                items.push(SimItem {
                    item_id: format!("{topic}-{:03}", j + 1),
                    topic: topic.clone(),
                    difficulty,
                    time_intensity,
                    label: DIFFICULTY_LABELS[0],
                });
            }
        }
        let mut by_difficulty: Vec<usize> = (0..items.len()).collect();
        by_difficulty.sort_by(|&a, &b| items[a].difficulty.total_cmp(&items[b].difficulty));
        let n = items.len();
        for (rank, &i) in by_difficulty.iter().enumerate() {
            items[i].label = DIFFICULTY_LABELS[(rank * 3 / n).min(2)];
        }
        let item_index = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.item_id.clone(), i))
            .collect();

        let mut sim = Self {
            config,
            topics,
            items,
            item_index,
            learners: Vec::new(),
            learner_index: HashMap::new(),
        };
        for _ in 0..sim.config.learners {
            sim.push_learner(true);
        }
        Ok(sim)
    }

    fn push_learner(&mut self, with_history: bool) -> usize {
        let u = self.learners.len();
        let cfg = &self.config;
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(u as u64 + 1)));
        let ability = normal(&mut rng);
        let speed = 0.3 * normal(&mut rng);
        // Log-normal with sd 0.6 and the configured mean: exp(μ + 0.18) = mean.
        let mean_len = cfg.attempts_per_learner as f64;
        let initial_left = if with_history && cfg.attempts_per_learner > 0 {
            let len = (mean_len.ln() - 0.18 + 0.6 * normal(&mut rng))
                .exp()
                .round();
            (len as usize).max(1)
        } else {
            0
        };
        let join_ms = (rng.random::<f64>() * cfg.join_spread_days * MS_PER_DAY) as i64;
        // Most learners study two or three topics at a time, more join later.
        let n_active = (1 + rng.random_range(0..3usize)).min(cfg.topics);
        let mut all: Vec<usize> = (0..cfg.topics).collect();
        let mut active = Vec::with_capacity(n_active);
        for _ in 0..n_active {
            let k = rng.random_range(0..all.len());
            active.push(all.swap_remove(k));
        }
        let user_id = learner_id(u);
        let state = LearnerState {
            info: SimLearner {
                user_id: user_id.clone(),
                ability,
                speed,
            },
            rng,
            practice: vec![0; cfg.topics],
            seen: vec![Vec::new(); cfg.topics],
            active,
            clock_ms: cfg.start_ms.saturating_add(join_ms),
            started: false,
            session_topic: 0,
            session_left: 0,
            initial_left,
        };
        self.learners.push(state);
        self.learner_index.insert(user_id, u);
        u
    }

    /// The configuration this simulator was built from.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Topic names, in index order.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The item catalog with true parameters, grouped by topic.
    pub fn items(&self) -> &[SimItem] {
        &self.items
    }

    /// One item's true parameters.
    pub fn item(&self, item_id: &str) -> Option<&SimItem> {
        self.item_index.get(item_id).map(|&i| &self.items[i])
    }

    /// All learners' true traits, in id order.
    pub fn learners(&self) -> impl ExactSizeIterator<Item = &SimLearner> {
        self.learners.iter().map(|l| &l.info)
    }

    /// One learner's true traits.
    pub fn learner(&self, user_id: &str) -> Option<&SimLearner> {
        self.learner_index
            .get(user_id)
            .map(|&u| &self.learners[u].info)
    }

    /// Adds a learner with no history (for cold-start traffic) and returns its
    /// id; continue it with [`Simulator::next_attempts`].
    pub fn add_learner(&mut self) -> String {
        let u = self.push_learner(false);
        self.learners[u].info.user_id.clone()
    }

    /// Every learner's remaining initial history, grouped by learner in id
    /// order and chronological within a learner. A fresh simulator returns the
    /// full history; a second call returns nothing.
    pub fn generate(&mut self) -> Vec<TaskRow> {
        self.history().collect()
    }

    /// Lazily yields the same rows as [`Simulator::generate`], for datasets
    /// too large to hold at once.
    pub fn history(&mut self) -> History<'_> {
        History {
            sim: self,
            learner: 0,
        }
    }

    /// `n` further attempts by `user_id`, continuing from the learner's
    /// current state (practice, topics, clock), so they follow the learner's
    /// earlier rows in time and show the same ability and learning.
    /// `None` for an unknown learner.
    ///
    /// These attempts are separate from the initial history: calling this
    /// before [`Simulator::generate`] makes that learner's history start later.
    pub fn next_attempts(&mut self, user_id: &str, n: usize) -> Option<Vec<TaskRow>> {
        let u = *self.learner_index.get(user_id)?;
        let (cfg, topics, items) = (&self.config, &self.topics, &self.items);
        let state = &mut self.learners[u];
        Some((0..n).map(|_| state.step(cfg, topics, items)).collect())
    }

    /// The true p(correct) if `user_id` attempted `item_id` now, given the
    /// learner's practice so far. `None` if either is unknown.
    pub fn p_correct(&self, user_id: &str, item_id: &str) -> Option<f64> {
        let (state, item, t) = self.pair(user_id, item_id)?;
        Some(state.p_correct(&self.config, item, t))
    }

    /// The true median seconds if `user_id` attempted `item_id` now, over
    /// both outcomes. `None` if either is unknown.
    pub fn median_seconds(&self, user_id: &str, item_id: &str) -> Option<f64> {
        let (state, item, t) = self.pair(user_id, item_id)?;
        let p = state.p_correct(&self.config, item, t);
        // The exact median of the two-component mixture has no closed form;
        // the component mix of log-means is close enough at these scales.
        let log_mu = state.log_mu(item, t) + 0.3 * (1.0 - p);
        Some(log_mu.exp().clamp(MIN_SECONDS, MAX_SECONDS))
    }

    fn pair(&self, user_id: &str, item_id: &str) -> Option<(&LearnerState, &SimItem, usize)> {
        let state = &self.learners[*self.learner_index.get(user_id)?];
        let i = *self.item_index.get(item_id)?;
        Some((state, &self.items[i], i / self.config.items_per_topic))
    }
}

impl LearnerState {
    fn growth(&self, cfg: &SimConfig, topic: usize) -> f64 {
        let k = f64::from(self.practice[topic]);
        cfg.max_growth * (1.0 - (-cfg.learning_rate * k / cfg.max_growth).exp())
    }

    fn p_correct(&self, cfg: &SimConfig, item: &SimItem, topic: usize) -> f64 {
        sigmoid(BASE_LOGIT + self.info.ability + self.growth(cfg, topic) - item.difficulty)
    }

    /// Log-seconds mean for a correct answer, before noise.
    fn log_mu(&self, item: &SimItem, topic: usize) -> f64 {
        let k = f64::from(self.practice[topic]);
        let speed_up = 0.15 * (1.0 - (-k / 10.0).exp());
        item.time_intensity - self.info.speed - speed_up
    }

    fn start_session(&mut self, cfg: &SimConfig) {
        let rng = &mut self.rng;
        // Occasionally take up a new topic, as a curriculum moves on.
        if self.active.len() < cfg.topics && rng.random::<f64>() < 0.1 {
            let fresh: Vec<usize> = (0..cfg.topics)
                .filter(|t| !self.active.contains(t))
                .collect();
            if !fresh.is_empty() {
                self.active.push(fresh[rng.random_range(0..fresh.len())]);
            }
        }
        // Half the time carry on with the last topic, otherwise pick any active one.
        if !self.started || rng.random::<f64>() >= 0.5 {
            self.session_topic = self.active[rng.random_range(0..self.active.len())];
        }
        let extra = -open_unit(rng).ln() * (cfg.mean_session_len - 1.0);
        self.session_left = (1 + extra.floor() as u32).min(MAX_SESSION_LEN);
        if self.started {
            // Hours to days between sessions: median 18 h, clamped to 30 min ..= 21 days.
            let hours = (18f64.ln() + normal(rng)).exp().clamp(0.5, 21.0 * 24.0);
            self.clock_ms = self.clock_ms.saturating_add((hours * 3_600_000.0) as i64);
        }
    }

    fn step(&mut self, cfg: &SimConfig, topics: &[String], items: &[SimItem]) -> TaskRow {
        let first_in_session = self.session_left == 0;
        if first_in_session {
            self.start_session(cfg);
        }
        let t = self.session_topic;
        let per_topic = cfg.items_per_topic;
        let seen = &self.seen[t];
        let i = if !seen.is_empty() && self.rng.random::<f64>() < cfg.repeat_prob {
            seen[self.rng.random_range(0..seen.len())]
        } else {
            t * per_topic + self.rng.random_range(0..per_topic)
        };
        let item = &items[i];

        let p = self.p_correct(cfg, item, t);
        let correct = self.rng.random::<f64>() < p;
        let wrong = if correct { 0.0 } else { 1.0 };
        let log_s = self.log_mu(item, t) + 0.3 * wrong + 0.5 * normal(&mut self.rng);
        let seconds = (log_s.exp().clamp(MIN_SECONDS, MAX_SECONDS) * 10.0).round() / 10.0;

        if !first_in_session {
            // Think time between finishing one task and starting the next.
            let think = (8f64.ln() + 0.8 * normal(&mut self.rng)).exp().min(600.0);
            self.clock_ms = self.clock_ms.saturating_add((think * 1000.0) as i64);
        }
        self.clock_ms = self.clock_ms.saturating_add((seconds * 1000.0) as i64);
        self.started = true;
        self.session_left -= 1;
        self.practice[t] = self.practice[t].saturating_add(1);
        if !self.seen[t].contains(&i) {
            self.seen[t].push(i);
        }
        let recorded = self.rng.random::<f64>() >= cfg.missing_seconds_prob;

        TaskRow {
            user_id: self.info.user_id.clone(),
            item_id: Some(item.item_id.clone()),
            topic: topics[t].clone(),
            difficulty: item.label.to_string(),
            correct,
            seconds: recorded.then_some(seconds),
            completed_at_ms: self.clock_ms,
            // Handed out when the learner started, as an app records it.
            started_at_ms: Some(self.clock_ms.saturating_sub((seconds * 1000.0) as i64)),
        }
    }
}

/// Iterator over the simulator's initial histories; see [`Simulator::history`].
#[derive(Debug)]
pub struct History<'a> {
    sim: &'a mut Simulator,
    learner: usize,
}

impl Iterator for History<'_> {
    type Item = TaskRow;

    fn next(&mut self) -> Option<TaskRow> {
        let sim = &mut *self.sim;
        while let Some(state) = sim.learners.get_mut(self.learner) {
            if state.initial_left > 0 {
                state.initial_left -= 1;
                return Some(state.step(&sim.config, &sim.topics, &sim.items));
            }
            self.learner += 1;
        }
        None
    }
}

/// `ts` as RFC 3339 UTC with milliseconds (`2024-01-01T00:00:12.345Z`); a
/// value chrono cannot represent is written as integer milliseconds instead.
pub fn format_ts(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// Writes rows in the dataset CSV format, with a header:
/// `user_id,item_id,topic,correct,seconds,ts,difficulty,started_at`: `correct`
/// `0`/`1`, a missing value an empty field, times by [`format_ts`].
pub fn write_csv<'a, W: io::Write>(
    rows: impl IntoIterator<Item = &'a TaskRow>,
    writer: W,
) -> io::Result<()> {
    let mut out = csv::Writer::from_writer(writer);
    out.write_record([
        "user_id",
        "item_id",
        "topic",
        "correct",
        "seconds",
        "ts",
        "difficulty",
        "started_at",
    ])?;
    for row in rows {
        let seconds = row.seconds.map(|s| s.to_string()).unwrap_or_default();
        let started = row.started_at_ms.map(format_ts).unwrap_or_default();
        out.write_record([
            row.user_id.as_str(),
            row.item_id.as_deref().unwrap_or(""),
            row.topic.as_str(),
            if row.correct { "1" } else { "0" },
            seconds.as_str(),
            format_ts(row.completed_at_ms).as_str(),
            row.difficulty.as_str(),
            started.as_str(),
        ])?;
    }
    out.flush()
}
