//! The baselines every model is compared with: the population's success
//! rate and times, the learner's running rate and times, the topic's. Each is
//! predicted for every hold-out row during the row pass, where the learner's
//! earlier attempts are at hand.

use std::collections::HashMap;

use taskcast_contract::features::{label_key, log_time};
use taskcast_contract::priors::Prior;
use taskcast_contract::{PriorTable, TaskRow};

use super::census::Census;

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

/// What the baselines know before the row pass: the population's rate from
/// the serving priors, and the training rows' time quantiles overall and per
/// topic.
pub(super) struct BaselineInputs {
    population: Prior,
    population_times: Option<[f64; 3]>,
    topic_times: HashMap<u64, Option<[f64; 3]>>,
}

impl BaselineInputs {
    /// Moves the census's training log-times out (they are a value per timed
    /// row and nothing needs them after their quantiles).
    pub(super) fn new(census: &mut Census, serving: &PriorTable) -> Self {
        BaselineInputs {
            population: serving.population(),
            population_times: quantiles(&sorted(std::mem::take(&mut census.train_log_times))),
            topic_times: std::mem::take(&mut census.topic_log_times)
                .into_iter()
                .map(|(t, v)| (label_key(&t), quantiles(&sorted(v))))
                .collect(),
        }
    }

    /// Appends each baseline's prediction for one hold-out row of topic key
    /// `topic`, after the learner's attempts in `earlier`.
    pub(super) fn predict(
        &self,
        out: &mut Baselines,
        earlier: &EarlierAttempts,
        topic: u64,
        serving: &PriorTable,
    ) {
        let (pop, pop_q) = (self.population, self.population_times);
        out.population.push((pop.rate, pop_q));
        out.learner.push((
            (earlier.correct + pop.rate) / (earlier.n + 1.0),
            quantiles(&earlier.log_times).or(pop_q),
        ));
        let tq = self.topic_times.get(&topic).copied().flatten().or(pop_q);
        out.topic.push((serving.topic(topic).rate, tq));
    }
}

/// A learner's attempts so far, hold-out ones included: the learner
/// baseline's running rate and times.
#[derive(Default)]
pub(super) struct EarlierAttempts {
    n: f64,
    correct: f64,
    /// Sorted.
    log_times: Vec<f64>,
}

impl EarlierAttempts {
    pub(super) fn push(&mut self, r: &TaskRow) {
        self.n += 1.0;
        self.correct += f64::from(u8::from(r.correct));
        if let Some(lt) = log_time(r.seconds) {
            let at = self.log_times.partition_point(|v| *v < lt);
            self.log_times.insert(at, lt);
        }
    }
}

/// The 10th, 50th and 90th percentile of sorted log-times, as seconds.
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
