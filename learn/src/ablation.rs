//! Feature groups switched off for `eval --without`: the ablation study
//! behind EVALUATION.md's feature table. A group's columns are zeroed in
//! every training and hold-out row, so no family can learn from them (the
//! linear family drops constant columns; the MLP's input there is constant
//! zero), and the rest of the row is unchanged. Only offline evaluation uses
//! this: a served model always reads its schema's columns as computed.

use taskcast_contract::features::{FEATURE_COUNT, Schema, feature_index};

use crate::dataset::Dataset;

/// A group of feature columns, switched off as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureGroup {
    /// Every column schema v2 added: what v1 saw.
    V2,
    /// Correctness decayed per attempt (overall, prior-adjusted, per topic).
    Decay,
    /// The time between attempts: correctness decayed per day, time since
    /// the topic's and the item's last attempt, whether times are known.
    Gaps,
    /// "Now": time away since the last attempt, and whether it is known.
    Clock,
    /// The item's own columns: its prior, attempts and last outcome.
    Item,
}

impl std::str::FromStr for FeatureGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeatureGroup::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FeatureGroup::ALL.iter().map(|g| g.name()).collect();
                format!("unknown feature group `{s}` (one of {})", names.join(", "))
            })
    }
}

impl FeatureGroup {
    /// Every group.
    pub const ALL: [FeatureGroup; 5] = [
        FeatureGroup::V2,
        FeatureGroup::Decay,
        FeatureGroup::Gaps,
        FeatureGroup::Clock,
        FeatureGroup::Item,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FeatureGroup::V2 => "v2",
            FeatureGroup::Decay => "decay",
            FeatureGroup::Gaps => "gaps",
            FeatureGroup::Clock => "clock",
            FeatureGroup::Item => "item",
        }
    }

    /// The group's column names.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            FeatureGroup::V2 => &taskcast_contract::FEATURE_NAMES[Schema::V1.width()..],
            FeatureGroup::Decay => &[
                "decayed_rate_logit",
                "decayed_ability",
                "topic_decayed_rate_logit",
            ],
            FeatureGroup::Gaps => &[
                "day_decayed_rate_logit",
                "topic_gap_log",
                "item_gap_log",
                "times_known",
            ],
            FeatureGroup::Clock => &["idle_log", "clock_known"],
            FeatureGroup::Item => &[
                "prior_item_logit",
                "prior_item_log_time",
                "item_count",
                "item_last_correct",
                "item_gap_log",
            ],
        }
    }
}

/// Zeroes `groups`' columns in both sides of `ds`.
pub fn without(ds: &mut Dataset, groups: &[FeatureGroup]) {
    zero(&mut ds.train.x, groups);
    zero(&mut ds.holdout.x, groups);
}

/// Zeroes `groups`' columns in row-major full rows `x`.
pub fn zero(x: &mut [f32], groups: &[FeatureGroup]) {
    let mut off = [false; FEATURE_COUNT];
    for name in groups.iter().flat_map(|g| g.names()) {
        if let Some(i) = feature_index(name) {
            off[i] = true;
        }
    }
    for row in x.chunks_exact_mut(FEATURE_COUNT) {
        for (v, off) in row.iter_mut().zip(&off) {
            if *off {
                *v = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_names_real_columns() {
        for g in FeatureGroup::ALL {
            assert_eq!(g.name().parse::<FeatureGroup>(), Ok(g));
            assert!(!g.names().is_empty());
            for n in g.names() {
                assert!(feature_index(n).is_some(), "{n}");
            }
        }
    }

    #[test]
    fn v2_groups_cover_the_v2_columns() {
        let mut named: Vec<&str> = [FeatureGroup::Decay, FeatureGroup::Gaps, FeatureGroup::Clock]
            .iter()
            .flat_map(|g| g.names().iter().copied())
            .collect();
        named.sort_unstable();
        let mut v2 = FeatureGroup::V2.names().to_vec();
        v2.sort_unstable();
        assert_eq!(named, v2);
    }
}
