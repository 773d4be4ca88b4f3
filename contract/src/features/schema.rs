//! The feature schemas a model may declare. Each schema's columns are a
//! prefix of the next one's, computed by the same formulas, so one feature
//! row of this build serves every schema it knows: a model declaring an
//! older schema reads the first [`Schema::width`] columns. That is what lets
//! a replica serve a v1 active version and a v2 candidate side by side, and
//! roll back from one to the other, without two feature codes.

/// Feature names in input order, the current schema's full list.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    // v1
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
    // v2: order of attempts
    "decayed_rate_logit",
    "decayed_ability",
    "topic_decayed_rate_logit",
    // v2: time between attempts
    "day_decayed_rate_logit",
    "topic_gap_log",
    "item_gap_log",
    "idle_log",
    "times_known",
    "clock_known",
];

/// Number of features of the current schema (the width of a [`FeatureRow`]).
pub const FEATURE_COUNT: usize = 33;

/// One model input row, in the current schema; older schemas use a prefix.
pub type FeatureRow = [f32; FEATURE_COUNT];

/// Identifier of the schema this build trains.
pub const FEATURE_SCHEMA: &str = Schema::CURRENT.id();

/// A feature schema: which prefix of [`FEATURE_NAMES`] a model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Schema {
    /// 24 features over the order and outcomes of attempts, no clock.
    V1,
    /// v1 plus decayed correctness and the time between attempts.
    V2,
}

impl Schema {
    /// What this build trains.
    pub const CURRENT: Schema = Schema::V2;
    /// Every schema this build can serve, oldest first.
    pub const ALL: [Schema; 2] = [Schema::V1, Schema::V2];

    /// The identifier a model file declares.
    pub const fn id(self) -> &'static str {
        match self {
            Schema::V1 => "taskcast.features/v1",
            Schema::V2 => "taskcast.features/v2",
        }
    }

    /// The schema a model file declares, when this build knows it.
    pub fn from_id(id: &str) -> Option<Schema> {
        Schema::ALL.into_iter().find(|s| s.id() == id)
    }

    /// How many columns a model of this schema reads.
    pub const fn width(self) -> usize {
        match self {
            Schema::V1 => 24,
            Schema::V2 => FEATURE_COUNT,
        }
    }

    /// Its feature names, in input order.
    pub fn names(self) -> &'static [&'static str] {
        &FEATURE_NAMES[..self.width()]
    }

    /// Whether this schema has the clock-dependent columns (`idle_log`).
    pub fn reads_clock(self) -> bool {
        self >= Schema::V2
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// Position of a feature by name.
pub fn feature_index(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}
