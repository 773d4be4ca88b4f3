//! Taskcast's learning core: from completed-task rows to a judged, exported
//! model. It knows no database, no gRPC and no async runtime: rows arrive
//! through [`source::LearnerSource`], and what comes out is ONNX bytes with
//! their metrics and the gate's verdict. The trainer service (its database,
//! runs, triggers and commands) and tools call it; so do its own tests,
//! which need no database.
//!
//! In the order of one run:
//! - [`source`] and [`budget`]: where rows come from, and which learners a
//!   run reads when there are more rows than its budget; [`vocab`]: label
//!   interning, shared by sources and the dataset;
//! - [`dataset`]: two streaming passes from rows to features, with
//!   out-of-fold priors, the hold-out and the baselines' predictions;
//!   [`time_support`]: whether the data can teach and judge a time head;
//! - [`families`]: fitting a model family, calibrating and exporting it;
//! - [`judge`]: hold-out metrics, the active version on the same attempts,
//!   the promotion gate;
//! - [`pipeline`]: those stages in order, for any source;
//! - [`itemless`] and [`pretrain`]: the offline variants (a hold-out without
//!   item ids; weights pooled over several files for the bootstrap);
//!   [`ablation`]: feature groups switched off for the ablation study.

pub mod ablation;
pub mod budget;
pub mod dataset;
pub mod families;
pub mod itemless;
pub mod judge;
pub mod pipeline;
pub mod pretrain;
pub mod source;
pub mod time_support;
pub mod vocab;
