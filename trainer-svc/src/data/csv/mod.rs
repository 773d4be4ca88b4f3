//! Reading `user_id,item_id,topic,correct,seconds,ts` CSV files (plain or gzip).
//!
//! [`CsvSource`] yields one [`TaskRow`] at a time with its 1-based line number,
//! so a file of any size is read in constant memory. Gzip is detected by its
//! magic bytes, not the file name; concatenated gzip members are read through.
//!
//! Columns are found by header name, in any order; `difficulty`,
//! `task_id` and `started_at` are optional. Fields are trimmed.
//! - `started_at`: when the task was handed out (the moment the app would
//!   call Predict), in `ts`'s forms; empty means not recorded. It is what
//!   lets a model use "now" (`taskcast_contract::features`); `ts` is read
//!   as when the attempt was finished, and is never a row's own "now".
//! - `task_id`: the client's key for the task; empty means none. Rows whose
//!   key is already in `completed_tasks` (or earlier in the file) are not
//!   imported twice (see [`crate::data::import`]).
//! - `user_id`, `topic`: must not be empty.
//! - `correct`: `0`/`1` or `true`/`false` (any case).
//! - `seconds`: empty means not recorded; otherwise a finite number >= 0.
//! - `item_id`: empty means none.
//! - `ts` (required): see [`parse_ts`]. A number is Unix seconds, integer or
//!   fractional (`1414749956.58917`, `1.4e9`), or Unix milliseconds with
//!   [`TsUnit::Ms`] (`--ts-unit ms`); the unit is never guessed from the
//!   magnitude. Otherwise RFC 3339 with `Z` or any offset, `T` or space
//!   between date and time (`2014-10-31T10:05:56.589Z`,
//!   `2014-10-31 12:05:56+02:00`; `+0200` and `+02` are accepted too), or
//!   `YYYY-MM-DD HH:MM:SS[.f]` without an offset, taken as UTC. Fractions of
//!   a millisecond are dropped (rounded down). Years 1 to 9999.
//!
//! Rows the trainer cannot use (empty `user_id` or `topic`, negative
//! `seconds`) are rejected here, with their line, rather than accepted and
//! skipped later without one: an import never stores a row that training
//! skips, and every rejection is reported with its line number.
//!
//! Strict mode (the default) stops at the first bad line with a [`CsvError`]
//! naming the line, the column and the value. Lenient mode
//! ([`CsvSource::lenient`]) skips such lines. Either way [`CsvSource::summary`]
//! counts rows read, accepted and rejected by reason, with the first line
//! numbers of each reason.

mod summary;
mod ts;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use taskcast_contract::{RowProblem, TaskRow};

pub use summary::{FIRST_LINES, Rejected, RowSummary};
pub use ts::{TsError, TsUnit, parse_ts};

/// What is wrong with a CSV file.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    // The I/O causes are in the messages, not `#[source]`s, so that
    // printing the error chain (`{:#}`) does not repeat them.
    /// The file cannot be opened.
    #[error("cannot open {path}: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// Reading (or decompressing) failed; not a problem of one line.
    #[error("reading failed near line {line}: {error}")]
    Read {
        /// The last line reached.
        line: u64,
        /// The cause.
        error: io::Error,
    },
    /// The file is empty.
    #[error(
        "the file is empty: a header line user_id,item_id,topic,correct,seconds,ts is required"
    )]
    NoHeader,
    /// The header lacks a required column.
    #[error(
        "line 1: header has no `{column}` column (required: user_id,item_id,topic,correct,seconds,ts; found: {found})"
    )]
    MissingColumn {
        /// The missing column.
        column: &'static str,
        /// The header as read.
        found: String,
    },
    /// A line has the wrong number of fields.
    #[error("line {line}: expected {expected} columns, found {found}")]
    ColumnCount {
        /// 1-based line number.
        line: u64,
        /// Columns in the header.
        expected: usize,
        /// Columns on this line.
        found: usize,
    },
    /// A field cannot be parsed or cannot be used.
    #[error("line {line}, column `{column}`: {problem}: {value:?}")]
    BadValue {
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: &'static str,
        /// The offending text.
        value: String,
        /// What is wrong with it (also the reason a summary counts it under).
        problem: &'static str,
    },
    /// The line is not valid CSV (e.g. invalid UTF-8 or a stray quote).
    #[error("line {line}: malformed CSV: {detail}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// Parser message.
        detail: String,
    },
}

impl CsvError {
    /// The 1-based line the error is about, if it is about one line.
    pub fn line(&self) -> Option<u64> {
        match self {
            CsvError::ColumnCount { line, .. }
            | CsvError::BadValue { line, .. }
            | CsvError::Malformed { line, .. } => Some(*line),
            CsvError::MissingColumn { .. } => Some(1),
            CsvError::Open { .. } | CsvError::Read { .. } | CsvError::NoHeader => None,
        }
    }

    /// Whether the error is about one row, so lenient mode may skip it and go on.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            CsvError::ColumnCount { .. } | CsvError::BadValue { .. } | CsvError::Malformed { .. }
        )
    }
}

/// Counts bytes read from the underlying (possibly compressed) file, for progress.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Column positions taken from the header.
#[derive(Clone, Copy, Debug)]
struct Columns {
    user_id: usize,
    item_id: usize,
    topic: usize,
    correct: usize,
    seconds: usize,
    ts: usize,
    difficulty: Option<usize>,
    task_id: Option<usize>,
    started_at: Option<usize>,
    count: usize,
}

/// A streaming reader of task rows from CSV.
pub struct CsvSource {
    reader: csv::Reader<Box<dyn Read + Send>>,
    columns: Columns,
    record: csv::StringRecord,
    lenient: bool,
    ts_unit: TsUnit,
    summary: RowSummary,
    bytes_read: Arc<AtomicU64>,
    finished: bool,
}

impl std::fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("columns", &self.columns)
            .field("lenient", &self.lenient)
            .field("ts_unit", &self.ts_unit)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// A row with its line number and its `task_id` (`None` when absent).
pub type KeyedRow = (u64, Option<String>, TaskRow);

impl CsvSource {
    /// Opens a plain or gzip CSV file and reads its header.
    pub fn open(path: &Path) -> Result<CsvSource, CsvError> {
        let file = File::open(path).map_err(|error| CsvError::Open {
            path: path.to_owned(),
            error,
        })?;
        Self::from_reader(file)
    }

    /// Reads CSV (plain or gzip, detected by magic bytes) from any reader.
    pub fn from_reader(reader: impl Read + Send + 'static) -> Result<CsvSource, CsvError> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counting = CountingReader {
            inner: reader,
            count: bytes_read.clone(),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, counting);
        let head = buffered
            .fill_buf()
            .map_err(|error| CsvError::Read { line: 0, error })?;
        let input: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            // Column counts are checked here so the error can name the line.
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let mut header = csv::StringRecord::new();
        let got = reader
            .read_record(&mut header)
            .map_err(|e| csv_error(e, 1))?;
        if !got {
            return Err(CsvError::NoHeader);
        }
        let columns = parse_header(&header)?;
        Ok(CsvSource {
            reader,
            columns,
            record: csv::StringRecord::new(),
            lenient: false,
            ts_unit: TsUnit::default(),
            summary: RowSummary::default(),
            bytes_read,
            finished: false,
        })
    }

    /// Switches to lenient mode: bad rows are skipped and counted in the
    /// [`CsvSource::summary`] instead of ending the read. I/O errors still end it.
    pub fn lenient(mut self) -> CsvSource {
        self.lenient = true;
        self
    }

    /// Sets what a number in `ts` counts (default: seconds).
    pub fn ts_unit(mut self, unit: TsUnit) -> CsvSource {
        self.ts_unit = unit;
        self
    }

    /// Rows read, accepted and rejected so far.
    pub fn summary(&self) -> &RowSummary {
        &self.summary
    }

    /// The final [`CsvSource::summary`], once the rows are read.
    pub fn into_summary(self) -> RowSummary {
        self.summary
    }

    /// Whether the file has a `difficulty` column.
    pub fn has_difficulty(&self) -> bool {
        self.columns.difficulty.is_some()
    }

    /// Bytes read from the file so far (compressed bytes for gzip), for progress.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A shared counter of [`CsvSource::bytes_read`] usable from another thread.
    pub fn bytes_read_counter(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// Whether the file has a `task_id` column.
    pub fn has_task_id(&self) -> bool {
        self.columns.task_id.is_some()
    }

    /// The next row with its line and its `task_id` (`None` when the file
    /// has no such column or the field is empty), in strict or lenient
    /// mode; `None` at the end of the file. The iterator yields the same
    /// rows without the key.
    pub fn next_keyed(&mut self) -> Option<Result<KeyedRow, CsvError>> {
        loop {
            if self.finished {
                return None;
            }
            let line_hint = self.reader.position().line();
            let parsed = match self.reader.read_record(&mut self.record) {
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Ok(true) => {
                    let line = self.record.position().map_or(line_hint, |p| p.line());
                    parse_record(&self.record, &self.columns, self.ts_unit, line).map(|row| {
                        let key = self
                            .columns
                            .task_id
                            .and_then(|i| self.record.get(i))
                            .filter(|k| !k.is_empty())
                            .map(str::to_owned);
                        (line, key, row)
                    })
                }
                Err(e) => Err(csv_error(e, line_hint)),
            };
            match parsed {
                Ok(row) => {
                    self.summary.accept();
                    return Some(Ok(row));
                }
                Err(e) if e.is_row_error() => {
                    self.summary.reject(&e);
                    if !self.lenient {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Iterator for CsvSource {
    type Item = Result<(u64, TaskRow), CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_keyed()
            .map(|r| r.map(|(line, _key, row)| (line, row)))
    }
}

fn csv_error(e: csv::Error, line_hint: u64) -> CsvError {
    let line = e.position().map_or(line_hint, |p| p.line());
    if !e.is_io_error() {
        return CsvError::Malformed {
            line,
            detail: e.to_string(),
        };
    }
    match e.into_kind() {
        csv::ErrorKind::Io(error) => CsvError::Read { line, error },
        other => CsvError::Malformed {
            line,
            detail: format!("{other:?}"),
        },
    }
}

fn parse_header(header: &csv::StringRecord) -> Result<Columns, CsvError> {
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // A UTF-8 byte order mark would otherwise hide the first column.
            let h = if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                h
            };
            h.trim().to_ascii_lowercase()
        })
        .collect();
    let find = |col: &'static str| names.iter().position(|n| n == col);
    let need = |col: &'static str| {
        find(col).ok_or_else(|| CsvError::MissingColumn {
            column: col,
            found: names.join(","),
        })
    };
    Ok(Columns {
        user_id: need("user_id")?,
        item_id: need("item_id")?,
        topic: need("topic")?,
        correct: need("correct")?,
        seconds: need("seconds")?,
        ts: need("ts")?,
        difficulty: find("difficulty"),
        task_id: find("task_id"),
        started_at: find("started_at"),
        count: names.len(),
    })
}

fn bad(line: u64, column: &'static str, value: &str, problem: &'static str) -> CsvError {
    CsvError::BadValue {
        line,
        column,
        value: value.to_owned(),
        problem,
    }
}

fn parse_record(
    rec: &csv::StringRecord,
    c: &Columns,
    ts_unit: TsUnit,
    line: u64,
) -> Result<TaskRow, CsvError> {
    if rec.len() != c.count {
        return Err(CsvError::ColumnCount {
            line,
            expected: c.count,
            found: rec.len(),
        });
    }
    // Indices come from the header and the length was just checked.
    let field = |i: usize| rec.get(i).unwrap_or("");
    let correct = parse_correct(field(c.correct))
        .ok_or_else(|| bad(line, "correct", field(c.correct), "not 0, 1, true or false"))?;
    let seconds = parse_seconds(field(c.seconds))
        .ok_or_else(|| bad(line, "seconds", field(c.seconds), "not a finite number"))?;
    let completed_at_ms = parse_ts(field(c.ts), ts_unit)
        .map_err(|e| bad(line, "ts", field(c.ts), e.problem(ts_unit)))?;
    let started_at_ms = match c.started_at.map(field).filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            Some(parse_ts(v, ts_unit).map_err(|e| bad(line, "started_at", v, e.problem(ts_unit)))?)
        }
    };
    let item_id = field(c.item_id);
    let row = TaskRow {
        user_id: field(c.user_id).to_owned(),
        item_id: (!item_id.is_empty()).then(|| item_id.to_owned()),
        topic: field(c.topic).to_owned(),
        difficulty: c.difficulty.map(field).unwrap_or("").to_owned(),
        correct,
        seconds,
        completed_at_ms,
        started_at_ms,
    };
    // The very check training applies, so no row that passes here is
    // skipped later without a line number.
    if let Some(problem) = row.problem() {
        let (column, i, what) = match problem {
            RowProblem::EmptyUser => ("user_id", c.user_id, "empty"),
            RowProblem::EmptyTopic => ("topic", c.topic, "empty"),
            RowProblem::BadSeconds => ("seconds", c.seconds, "negative"),
        };
        return Err(bad(line, column, field(i), what));
    }
    Ok(row)
}

fn parse_correct(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ if s.eq_ignore_ascii_case("true") => Some(true),
        _ if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `Some(None)` for an empty field, `None` when unparsable.
fn parse_seconds(s: &str) -> Option<Option<f64>> {
    if s.is_empty() {
        return Some(None);
    }
    // "NaN" and "inf" parse as f64 but are not durations; SQLite would also
    // silently store NaN as NULL.
    s.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse_correct("TRUE"), Some(true));
        assert_eq!(parse_correct("2"), None);
        assert_eq!(parse_seconds(""), Some(None));
        assert_eq!(parse_seconds("1.5"), Some(Some(1.5)));
        assert_eq!(parse_seconds("NaN"), None);
        assert_eq!(parse_seconds("abc"), None);
    }
}
