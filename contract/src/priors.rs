//! Priors: what is known before a learner's own history — the population,
//! each topic, each difficulty label and each item.
//!
//! Priors are stored as raw additive counts ([`Stat`]) rather than finished
//! rates, so that the trainer can subtract one fold's counts for out-of-fold
//! statistics and the shrinkage formulas live in exactly one place
//! ([`PriorTable`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::encode::{label_key, log_time};
use crate::keymap::KeyMap;

/// Pseudo-count pulling a topic's or difficulty's rate and time toward the population.
pub const K_GROUP: f64 = 20.0;
/// Pseudo-count pulling an item's rate and time toward its topic.
pub const K_ITEM: f64 = 10.0;
/// Population success rate assumed when nothing has been observed.
pub const DEFAULT_RATE: f64 = 0.6;
/// Population log-seconds assumed when no time has been observed: ln(60).
pub const DEFAULT_LOG_TIME: f64 = 4.094_344_562_222_1;

/// Derived difficulty labels for items without an app-provided label, easiest first.
pub const DERIVED_DIFFICULTIES: [&str; 3] = ["easy", "medium", "hard"];

/// Additive outcome counts for one group of attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Attempts.
    pub n: u64,
    /// Correct attempts.
    pub correct: u64,
    /// Attempts with a recorded time.
    pub n_timed: u64,
    /// Sum of `log_time(seconds)` over timed attempts.
    pub log_time_sum: f64,
}

impl Stat {
    /// Counts one attempt.
    pub fn add(&mut self, correct: bool, seconds: Option<f64>) {
        self.n += 1;
        self.correct += u64::from(correct);
        if let Some(lt) = log_time(seconds) {
            self.n_timed += 1;
            self.log_time_sum += lt;
        }
    }

    /// Adds another group's counts.
    pub fn merge(&mut self, other: &Stat) {
        self.n += other.n;
        self.correct += other.correct;
        self.n_timed += other.n_timed;
        self.log_time_sum += other.log_time_sum;
    }

    /// These counts without `other`'s (a fold's share of them).
    pub fn minus(&self, other: &Stat) -> Stat {
        Stat {
            n: self.n.saturating_sub(other.n),
            correct: self.correct.saturating_sub(other.correct),
            n_timed: self.n_timed.saturating_sub(other.n_timed),
            log_time_sum: if self.n_timed > other.n_timed {
                self.log_time_sum - other.log_time_sum
            } else {
                0.0
            },
        }
    }

    /// Success rate shrunk toward `prior_rate` with pseudo-count `k`.
    pub fn shrunk_rate(&self, prior_rate: f64, k: f64) -> f64 {
        (self.correct as f64 + k * prior_rate) / (self.n as f64 + k)
    }

    /// Mean log-seconds shrunk toward `prior_log_time` with pseudo-count `k`.
    pub fn shrunk_log_time(&self, prior_log_time: f64, k: f64) -> f64 {
        (self.log_time_sum + k * prior_log_time) / (self.n_timed as f64 + k)
    }
}

/// Everything known before a learner's history, as shipped in a model artifact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Priors {
    /// All training attempts.
    pub population: Stat,
    /// Per topic label.
    pub topics: BTreeMap<String, Stat>,
    /// Per difficulty label (app-provided or derived).
    pub difficulties: BTreeMap<String, Stat>,
    /// Per item id.
    pub items: BTreeMap<String, Stat>,
    /// The topic each item was most often seen under, so an item's prior can
    /// shrink toward the right topic even when a candidate omits the topic.
    pub item_topics: BTreeMap<String, String>,
    /// Item success-rate cut points `[hard_below, easy_from]` used to derive a
    /// difficulty label for items that come without one; `None` disables derivation.
    pub difficulty_cuts: Option<[f64; 2]>,
}

/// A fast lookup form of [`Priors`], keyed by [`label_key`]. Built once per
/// model load (inference) or once per fold (training).
#[derive(Clone, Debug)]
pub struct PriorTable {
    population_rate: f64,
    population_log_time: f64,
    topics: KeyMap<Stat>,
    difficulties: KeyMap<Stat>,
    items: KeyMap<(Stat, u64)>,
    difficulty_cuts: Option<[f64; 2]>,
    derived_keys: [u64; 3],
}

/// A resolved rate and mean log-time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Probability of a correct first answer.
    pub rate: f64,
    /// Expected log-seconds.
    pub log_time: f64,
}

impl PriorTable {
    /// Builds the lookup form.
    pub fn new(priors: &Priors) -> Self {
        let pop = &priors.population;
        let population_rate = if pop.n > 0 {
            pop.shrunk_rate(DEFAULT_RATE, 1.0)
        } else {
            DEFAULT_RATE
        };
        let population_log_time = if pop.n_timed > 0 {
            pop.shrunk_log_time(DEFAULT_LOG_TIME, 1.0)
        } else {
            DEFAULT_LOG_TIME
        };
        let keyed = |m: &BTreeMap<String, Stat>| -> KeyMap<Stat> {
            m.iter().map(|(k, v)| (label_key(k), *v)).collect()
        };
        let items = priors
            .items
            .iter()
            .map(|(item, stat)| {
                let topic = priors
                    .item_topics
                    .get(item)
                    .map(|t| label_key(t))
                    .unwrap_or(0);
                (label_key(item), (*stat, topic))
            })
            .collect();
        Self {
            population_rate,
            population_log_time,
            topics: keyed(&priors.topics),
            difficulties: keyed(&priors.difficulties),
            items,
            difficulty_cuts: priors.difficulty_cuts,
            derived_keys: DERIVED_DIFFICULTIES.map(label_key),
        }
    }

    /// The population prior.
    pub fn population(&self) -> Prior {
        Prior {
            rate: self.population_rate,
            log_time: self.population_log_time,
        }
    }

    fn group(&self, stat: Option<&Stat>) -> Prior {
        match stat {
            Some(s) => Prior {
                rate: s.shrunk_rate(self.population_rate, K_GROUP),
                log_time: s.shrunk_log_time(self.population_log_time, K_GROUP),
            },
            None => self.population(),
        }
    }

    /// A topic's prior: its counts shrunk toward the population (the population if unseen).
    pub fn topic(&self, topic: u64) -> Prior {
        self.group(self.topics.get(&topic))
    }

    /// A difficulty label's prior (the population if unseen or empty).
    pub fn difficulty(&self, difficulty: u64) -> Prior {
        self.group(self.difficulties.get(&difficulty))
    }

    /// An item's prior: its counts shrunk toward its topic's prior; the topic's
    /// prior when the item is unknown or absent (`item == 0`).
    pub fn item(&self, item: u64, topic: u64) -> Prior {
        match self.items.get(&item) {
            Some((stat, item_topic)) => {
                let toward = self.topic(if topic != 0 { topic } else { *item_topic });
                Prior {
                    rate: stat.shrunk_rate(toward.rate, K_ITEM),
                    log_time: stat.shrunk_log_time(toward.log_time, K_ITEM),
                }
            }
            None => self.topic(topic),
        }
    }

    /// The difficulty key an attempt is judged by: the app's label when given,
    /// else one derived from the item's prior rate (easy / medium / hard) when
    /// the item is known and cuts exist, else 0 (no difficulty information).
    pub fn effective_difficulty(&self, difficulty: u64, item: u64, topic: u64) -> u64 {
        if difficulty != 0 {
            return difficulty;
        }
        match (self.difficulty_cuts, self.items.contains_key(&item)) {
            (Some(cuts), true) => {
                self.derived_keys[derived_index(self.item(item, topic).rate, cuts)]
            }
            _ => 0,
        }
    }
}

/// Index into [`DERIVED_DIFFICULTIES`] for an item success rate.
pub fn derived_index(rate: f64, cuts: [f64; 2]) -> usize {
    if rate >= cuts[1] {
        0
    } else if rate >= cuts[0] {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(n: u64, correct: u64, times: &[f64]) -> Stat {
        let mut s = Stat::default();
        for i in 0..n {
            let secs = times.get(i as usize).copied();
            s.add(i < correct, secs);
        }
        s
    }

    #[test]
    fn empty_priors_fall_back_to_defaults() {
        let t = PriorTable::new(&Priors::default());
        assert_eq!(
            t.population(),
            Prior {
                rate: DEFAULT_RATE,
                log_time: DEFAULT_LOG_TIME
            }
        );
        assert_eq!(t.topic(label_key("anything")), t.population());
        assert_eq!(t.item(label_key("x"), 0), t.population());
        assert_eq!(t.effective_difficulty(0, label_key("x"), 0), 0);
    }

    #[test]
    fn topic_and_item_shrinkage_by_hand() {
        let mut p = Priors::default();
        // Population: 8 of 10 correct, all at e^2 seconds.
        let e2 = 2f64.exp();
        p.population = stat(10, 8, &[e2; 10]);
        p.topics.insert("frac".into(), stat(20, 5, &[]));
        p.items.insert("q1".into(), stat(10, 10, &[]));
        p.item_topics.insert("q1".into(), "frac".into());
        let t = PriorTable::new(&p);
        // population rate: (8 + 1*0.6)/(10+1) = 8.6/11
        let pop = 8.6 / 11.0;
        assert!((t.population().rate - pop).abs() < 1e-12);
        // log time: (10*2 + 1*ln60)/(10+1)
        let pop_lt = (20.0 + DEFAULT_LOG_TIME) / 11.0;
        assert!((t.population().log_time - pop_lt).abs() < 1e-9);
        // topic: (5 + 20*pop)/(20+20); no times -> population log time
        let topic = (5.0 + 20.0 * pop) / 40.0;
        assert!((t.topic(label_key("frac")).rate - topic).abs() < 1e-12);
        assert!((t.topic(label_key("frac")).log_time - pop_lt).abs() < 1e-9);
        // item toward its recorded topic even when the candidate gives none
        let item = (10.0 + 10.0 * topic) / 20.0;
        assert!((t.item(label_key("q1"), 0).rate - item).abs() < 1e-12);
    }

    #[test]
    fn stat_minus_undoes_merge() {
        let a = stat(7, 3, &[5.0, 10.0]);
        let b = stat(4, 4, &[2.0]);
        let mut ab = a;
        ab.merge(&b);
        let back = ab.minus(&b);
        assert_eq!(
            (back.n, back.correct, back.n_timed),
            (a.n, a.correct, a.n_timed)
        );
        assert!((back.log_time_sum - a.log_time_sum).abs() < 1e-9);
    }

    #[test]
    fn derived_difficulty_uses_cuts() {
        assert_eq!(derived_index(0.9, [0.4, 0.7]), 0);
        assert_eq!(derived_index(0.5, [0.4, 0.7]), 1);
        assert_eq!(derived_index(0.1, [0.4, 0.7]), 2);
        let mut p = Priors::default();
        p.items.insert("hard-q".into(), stat(50, 0, &[]));
        p.difficulty_cuts = Some([0.4, 0.7]);
        let t = PriorTable::new(&p);
        assert_eq!(
            t.effective_difficulty(0, label_key("hard-q"), 0),
            label_key("hard")
        );
        assert_eq!(
            t.effective_difficulty(label_key("easy"), label_key("hard-q"), 0),
            label_key("easy")
        );
        assert_eq!(t.effective_difficulty(0, label_key("unknown"), 0), 0);
    }
}
