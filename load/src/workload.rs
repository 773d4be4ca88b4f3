//! The requests: Predict calls for simulated learners, built once before the
//! run and kept encoded, so sending one costs a memcpy rather than building
//! and serialising ~50 attempts (which would make this tool, not the server,
//! the bottleneck).

use bytes::Bytes;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskcast_proto::{Attempt, Candidate, PredictRequest};
use taskcast_sim::{SimConfig, SimError, Simulator};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Simulator seed.
    pub seed: u64,
    /// Distinct learners, one request each.
    pub learners: usize,
    /// Attempts per history.
    pub history: usize,
    /// Candidates per request.
    pub candidates: usize,
    /// Whether to ask for explanations.
    pub explain: bool,
}

/// The encoded requests, cycled through in order by the workers.
#[derive(Clone, Debug)]
pub struct Workload {
    requests: Vec<Bytes>,
    /// Mean encoded request size, for the report.
    pub mean_request_bytes: usize,
}

impl Workload {
    /// One request per simulated learner: that learner's next `history`
    /// attempts (so ability, learning and timing are the simulator's), and
    /// `candidates` items drawn from the whole catalog with the app's
    /// difficulty labels, the way a backend ranks what it could hand out next.
    pub fn build(shape: Shape) -> Result<Workload, SimError> {
        if shape.learners == 0 {
            return Err(SimError::InvalidConfig("learners must be at least 1"));
        }
        let mut sim = Simulator::new(SimConfig {
            seed: shape.seed,
            learners: shape.learners,
            // Histories come from `next_attempts`, exactly `history` long.
            attempts_per_learner: 0,
            ..SimConfig::default()
        })?;
        let ids: Vec<String> = sim.learners().map(|l| l.user_id.clone()).collect();
        let mut rng = StdRng::seed_from_u64(shape.seed ^ 0x6c6f_6164);
        let mut requests = Vec::with_capacity(ids.len());
        for user in ids {
            let rows = sim.next_attempts(&user, shape.history).unwrap_or_default();
            let history = rows
                .into_iter()
                .map(|r| Attempt {
                    topic: r.topic,
                    difficulty: r.difficulty,
                    item_id: r.item_id.unwrap_or_default(),
                    correct: r.correct,
                    seconds: r.seconds.unwrap_or(0.0),
                    completed_at: Some(prost_types::Timestamp {
                        seconds: r.completed_at_ms.div_euclid(1000),
                        nanos: (r.completed_at_ms.rem_euclid(1000) * 1_000_000) as i32,
                    }),
                })
                .collect();
            let items = sim.items();
            let candidates = (0..shape.candidates)
                .map(|i| {
                    let item = &items[rng.random_range(0..items.len())];
                    Candidate {
                        task_id: format!("task-{i}-{}", item.item_id),
                        topic: item.topic.clone(),
                        difficulty: item.label.to_string(),
                        item_id: item.item_id.clone(),
                    }
                })
                .collect();
            let req = PredictRequest {
                user_id: user,
                history,
                candidates,
                explain: shape.explain,
                as_of: None,
            };
            requests.push(Bytes::from(req.encode_to_vec()));
        }
        let total: usize = requests.iter().map(Bytes::len).sum();
        let mean_request_bytes = total / requests.len().max(1);
        Ok(Workload {
            requests,
            mean_request_bytes,
        })
    }

    /// The `i`-th request, cycling; cloning `Bytes` is a reference count.
    pub fn get(&self, i: usize) -> Bytes {
        self.requests[i % self.requests.len()].clone()
    }

    /// Number of distinct requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are none (never, for a built workload).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}
