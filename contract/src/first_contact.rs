//! What a model must do for the complaints the original app's learners
//! made: a prediction that moves the right way after every completed task,
//! a topic the learner has mastered ranked above one they have never tried,
//! and a time that follows how long they took.
//!
//! Weights fitted on data can violate this while scoring well there: a
//! learner feature's weight compensating a prior's (a slower topic than its
//! prior predicts, a higher rate) stops being compensated where the priors
//! are empty or thin. So the scenarios are played over empty priors (the
//! bootstrap, a new app's first day) and over a small app's priors, at
//! several answer speeds (fast, typical, slow, untimed) and with and without
//! item ids, because a time or item feature pulling the wrong way is how
//! such weights fail. `trainer-svc pretrain` refuses to write weights that
//! fail, and the bootstrap's test runs the same checks.

use crate::features::{CandidateKey, Event, FeatureContext, FeatureRow};
use crate::priors::{PriorTable, Priors, Stat};

/// Answer times the scenarios are played at (`None`: not recorded).
const SPEEDS: [Option<f64>; 4] = [Some(8.0), Some(45.0), Some(240.0), None];
/// The fast and slow answer times of the time check.
const FAST_SLOW: [f64; 2] = [8.0, 240.0];
/// Attempts in each scenario's topic.
const STREAK: usize = 6;
/// Earlier attempts of "a learner with history": 60 s each, three in four right.
const HISTORY: usize = 20;
/// Attempts in the mastered / failed topic of the ranking checks.
const MASTERED: usize = 10;

/// One failed check, in words an operator can act on.
pub type Failure = String;

/// Plays every scenario with `predict` (a feature row → `(p_correct, [q10,
/// q50, q90] log-seconds)`) and returns the checks it failed; empty means it
/// passes.
pub fn check(predict: impl Fn(&FeatureRow) -> (f32, [f32; 3])) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (priors, table) in [
        ("empty priors", PriorTable::new(&Priors::default())),
        ("a small app's priors", PriorTable::new(&small_app())),
    ] {
        for with_items in [false, true] {
            let scenario = Scenario {
                table: &table,
                with_items,
                predict: &predict,
            };
            let items = if with_items { "with" } else { "without" };
            let setting = format!("{items} item ids, over {priors}");
            let at = |seconds: Option<f64>| {
                let speed = seconds.map_or("untimed".into(), |s| format!("{s} s"));
                format!("({speed} answers, {setting})")
            };
            for seconds in SPEEDS {
                for correct in [true, false] {
                    if let Some(f) = scenario.streak(correct, seconds) {
                        failures.push(format!("{f} {}", at(seconds)));
                    }
                    if let Some(f) = scenario.ranking(correct, seconds) {
                        failures.push(format!("{f} {}", at(seconds)));
                    }
                }
            }
            if let Some(f) = scenario.time() {
                failures.push(format!("{f} ({setting})"));
            }
        }
    }
    failures
}

/// The priors of a small app: two topics of a few hundred attempts each, one
/// easier and quicker than the other (item ids unknown to them).
fn small_app() -> Priors {
    let stat = |n: u64, rate: f64, seconds: f64| {
        let mut s = Stat::default();
        for i in 0..n {
            s.add((i as f64) < rate * n as f64, Some(seconds));
        }
        s
    };
    let (a, b) = (stat(300, 0.75, 30.0), stat(300, 0.5, 90.0));
    let mut population = a;
    population.merge(&b);
    Priors {
        population,
        topics: [("a".to_string(), a), ("b".to_string(), b)].into(),
        ..Priors::default()
    }
}

/// One prior table and item setting the scenarios are played in.
struct Scenario<'a, P> {
    table: &'a PriorTable,
    with_items: bool,
    predict: &'a P,
}

impl<P: Fn(&FeatureRow) -> (f32, [f32; 3])> Scenario<'_, P> {
    /// A distinct item per attempt, as generated or bank-drawn tasks have.
    fn item(&self, topic: &str, i: usize) -> String {
        if self.with_items {
            format!("{topic}-{i}")
        } else {
            String::new()
        }
    }

    fn attempts(&self, topic: &str, correct: bool, n: usize, seconds: Option<f64>) -> Vec<Event> {
        (0..n)
            .map(|i| {
                Event::resolve(
                    topic,
                    "",
                    &self.item(topic, i),
                    correct,
                    seconds,
                    self.table,
                )
            })
            .collect()
    }

    /// The prediction for a new task in `topic` after `history`.
    fn next(&self, history: &[Event], topic: &str) -> (f32, [f32; 3]) {
        let cand = CandidateKey::new(topic, "", &self.item(topic, 1000), self.table);
        let row = FeatureContext::new(history, self.table)
            .row(&cand, self.table)
            .row;
        (self.predict)(&row)
    }

    /// Every right (wrong) answer in a topic raises (lowers) p there, for a
    /// new learner and for one with a history in the topic at another pace
    /// (answering faster or slower than before must not turn a right answer
    /// into a lower p).
    fn streak(&self, correct: bool, seconds: Option<f64>) -> Option<Failure> {
        let history: Vec<Event> = (0..HISTORY)
            .map(|i| {
                let item = self.item("a", 500 + i);
                Event::resolve("a", "", &item, i % 4 != 3, Some(60.0), self.table)
            })
            .collect();
        let streak = self.attempts("a", correct, STREAK, seconds);
        for (who, before) in [
            ("a new learner", &[][..]),
            ("a learner with history", &history),
        ] {
            let mut events = before.to_vec();
            let mut p = self.next(&events, "a").0;
            for n in 1..=STREAK {
                events.push(streak[n - 1]);
                let after = self.next(&events, "a").0;
                let moved = if correct { after > p } else { after < p };
                if !moved {
                    let word = if correct { "right" } else { "wrong" };
                    return Some(format!(
                        "answer {n} {word} in a topic moved p there from {p:.4} to {after:.4} for {who}"
                    ));
                }
                p = after;
            }
        }
        None
    }

    /// A topic answered 10/10 (0/10) ranks above (below) a never-tried one
    /// of the same prior.
    fn ranking(&self, correct: bool, seconds: Option<f64>) -> Option<Failure> {
        // Both topics unknown to the priors, so only the history differs.
        let history = self.attempts("x", correct, MASTERED, seconds);
        let (known, new) = (self.next(&history, "x").0, self.next(&history, "y").0);
        let ranked = if correct { known > new } else { known < new };
        (!ranked).then(|| {
            let (done, order) = if correct {
                ("answered 10/10", "below")
            } else {
                ("answered 0/10", "above")
            };
            format!("a topic {done} ({known:.4}) ranked {order} a never-tried one ({new:.4})")
        })
    }

    /// A learner who took minutes in a topic is expected to take longer
    /// there than one who took seconds.
    fn time(&self) -> Option<Failure> {
        let median_after = |seconds: f64| {
            let streak = self.attempts("a", true, STREAK, Some(seconds));
            self.next(&streak, "a").1[1].exp()
        };
        let (fast, slow) = (median_after(FAST_SLOW[0]), median_after(FAST_SLOW[1]));
        (slow <= fast).then(|| {
            format!(
                "after {STREAK} answers of {} s the median time predicted ({slow:.1} s) is not \
                 above that after answers of {} s ({fast:.1} s)",
                FAST_SLOW[1], FAST_SLOW[0]
            )
        })
    }
}
