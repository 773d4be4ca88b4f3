//! Reading completed tasks from where the trainer finds them, for the
//! learning crate: the `completed_tasks` table and CSV files.
//!
//! - [`source`]: the database page by page, learner by learner, within the
//!   training budget; a CSV file read leniently into memory;
//! - [`csv`]: the CSV reader, which finds bad rows with their line numbers;
//! - [`import`]: a CSV file into `completed_tasks` (the one part that writes).

pub mod csv;
pub mod import;
pub mod source;
