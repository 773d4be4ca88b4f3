//! Reading: completed tasks from wherever they are (the `completed_tasks`
//! table, a CSV file, memory) into the rows a model is fitted and judged on.
//!
//! - [`source`]: the sources, each yielding one learner's attempts at a time;
//! - [`budget`]: which learners a run reads when the table outgrows its budget;
//! - [`csv`]: the CSV reader, which finds bad rows with their line numbers;
//! - [`import`]: a CSV file into `completed_tasks`;
//! - [`dataset`]: two streaming passes from a source to features;
//! - [`time_support`]: whether the data can teach and judge a time head.

pub mod budget;
pub mod csv;
pub mod dataset;
pub mod import;
pub mod source;
pub mod time_support;
