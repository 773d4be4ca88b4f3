//! The priors a row's features are computed with: from every training
//! attempt for serving (and the hold-out), and for each fold from the other
//! folds only, so no training row's own outcome reaches its features.

use std::collections::BTreeMap;

use taskcast_contract::features::label_key;
use taskcast_contract::priors::{DERIVED_DIFFICULTIES, derived_index};
use taskcast_contract::{PriorTable, Priors};

use super::FOLDS;
use super::census::{Census, FoldCounts};

/// Priors for serving (all training rows) and for each fold (all but that fold).
#[derive(Clone, Debug)]
pub struct PriorSet {
    /// From every training attempt: shipped in the artifact.
    pub serving: Priors,
    /// `folds[f]` leaves out learners of fold `f`.
    pub folds: Vec<Priors>,
}

impl PriorSet {
    /// The same `priors` for serving and every fold: rows featurised as a
    /// deployment serving `priors` would see them, whatever the data knows
    /// (`trainer-svc pretrain` uses empty priors, a new app's condition).
    pub fn uniform(priors: Priors) -> Self {
        PriorSet {
            folds: vec![priors.clone(); FOLDS],
            serving: priors,
        }
    }

    /// Builds every prior from the census.
    pub fn new(census: &Census) -> Self {
        let mut total = FoldCounts::default();
        for f in &census.folds {
            total.merge(f);
        }
        let item_topics: BTreeMap<String, String> = census
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
