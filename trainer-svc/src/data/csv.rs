//! Reading `user_id,item_id,topic,correct,seconds,ts` CSV files (plain or gzip).
//!
//! [`CsvSource`] yields one [`TaskRow`] at a time with its 1-based line number,
//! so a file of any size is read in constant memory. Gzip is detected by its
//! magic bytes, not the file name; concatenated gzip members are read through.
//!
//! Columns are found by header name, in any order; `difficulty` is optional.
//! Fields are trimmed.
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

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDateTime};
use flate2::read::MultiGzDecoder;
use taskcast_contract::{RowProblem, TaskRow};

use crate::db::completed_at_from_ms;

/// How many line numbers a [`RowSummary`] keeps per reason.
pub const FIRST_LINES: usize = 5;

/// Longest rejected value a summary quotes, in characters.
const EXAMPLE_CHARS: usize = 40;

/// What a number in the `ts` column counts. Chosen by the caller, never
/// guessed from the magnitude: a guess is wrong for some file (row numbers,
/// dates before 2001 in milliseconds) and wrong silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TsUnit {
    /// Unix seconds, integer or fractional (what most logging code writes).
    #[default]
    S,
    /// Unix milliseconds, integer or fractional.
    Ms,
}

impl TsUnit {
    /// Powers of ten from this unit to milliseconds.
    fn ms_exponent(self) -> i64 {
        match self {
            TsUnit::S => 3,
            TsUnit::Ms => 0,
        }
    }
}

/// Why a `ts` value is not a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsError {
    /// The field is empty; `ts` is required.
    Empty,
    /// Neither a number nor a date-time in an accepted form.
    Unrecognised,
    /// A timestamp outside the years 1 to 9999 (what both databases store).
    OutOfRange,
}

impl TsError {
    /// The reason as the error message and the summary print it.
    pub fn problem(self, unit: TsUnit) -> &'static str {
        match (self, unit) {
            (TsError::Empty, _) => "empty (ts is required)",
            (TsError::Unrecognised, TsUnit::S) => {
                "not Unix seconds, RFC 3339 or YYYY-MM-DD HH:MM:SS[.f]"
            }
            (TsError::Unrecognised, TsUnit::Ms) => {
                "not Unix milliseconds, RFC 3339 or YYYY-MM-DD HH:MM:SS[.f]"
            }
            // Milliseconds read as seconds land far beyond the year 9999
            // (any date since 1978), so this is where a wrong unit shows.
            (TsError::OutOfRange, TsUnit::S) => {
                "outside the years 1 to 9999 (for Unix milliseconds use --ts-unit ms)"
            }
            (TsError::OutOfRange, TsUnit::Ms) => "outside the years 1 to 9999",
        }
    }
}

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

/// Rows of one reason that were rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The column at fault, when one is.
    pub column: Option<&'static str>,
    /// What is wrong (e.g. "empty", "wrong number of columns").
    pub problem: &'static str,
    /// Rows rejected for this reason.
    pub count: u64,
    /// The first [`FIRST_LINES`] of them, in file order.
    pub first_lines: Vec<u64>,
    /// The first rejected value, quoted, when there is one to show.
    pub example: Option<String>,
}

impl Rejected {
    /// `column: problem`, or the problem alone.
    pub fn reason(&self) -> String {
        match self.column {
            Some(c) => format!("{c}: {}", self.problem),
            None => self.problem.to_string(),
        }
    }
}

/// What reading a file did with its rows: read, accepted, and rejected by
/// reason with the first line numbers. Its size is bounded by the number of
/// distinct reasons, not by the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowSummary {
    /// Data rows read (the header is not one).
    pub read: u64,
    /// Rows accepted.
    pub accepted: u64,
    /// Rejected rows by reason, in the order each reason first appeared.
    pub rejected: Vec<Rejected>,
}

impl RowSummary {
    /// Rows rejected, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|r| r.count).sum()
    }

    fn accept(&mut self) {
        self.read += 1;
        self.accepted += 1;
    }

    fn reject(&mut self, e: &CsvError) {
        let (line, column, problem, example) = match e {
            CsvError::BadValue {
                line,
                column,
                value,
                problem,
            } => (*line, Some(*column), *problem, Some(quote(value))),
            CsvError::ColumnCount {
                line,
                expected,
                found,
            } => (
                *line,
                None,
                "wrong number of columns",
                Some(format!("{found} instead of {expected}")),
            ),
            CsvError::Malformed { line, .. } => (*line, None, "malformed CSV", None),
            // Not about a row: nothing to count.
            _ => return,
        };
        self.read += 1;
        let i = match self
            .rejected
            .iter()
            .position(|r| r.column == column && r.problem == problem)
        {
            Some(i) => i,
            None => {
                self.rejected.push(Rejected {
                    column,
                    problem,
                    count: 0,
                    first_lines: Vec::with_capacity(FIRST_LINES),
                    example,
                });
                self.rejected.len() - 1
            }
        };
        let r = &mut self.rejected[i];
        r.count += 1;
        if r.first_lines.len() < FIRST_LINES {
            r.first_lines.push(line);
        }
    }

    /// The summary as printed: `read N rows; <verb> M; rejected K:` and one
    /// line per reason with its count, first line numbers and first value.
    pub fn render(&self, verb: &str) -> String {
        let rejected = self.rejected_total();
        let mut out = format!(
            "read {} rows; {verb} {}; rejected {rejected}",
            self.read, self.accepted
        );
        if rejected > 0 {
            out.push(':');
        }
        for r in &self.rejected {
            let lines: Vec<String> = r.first_lines.iter().map(u64::to_string).collect();
            let lines = lines.join(", ");
            let at = if r.count == 1 {
                format!("line {lines}")
            } else if r.count > r.first_lines.len() as u64 {
                format!("first lines {lines}, …")
            } else {
                format!("lines {lines}")
            };
            let _ = write!(out, "\n  {} → {} ({at}", r.reason(), r.count);
            if let Some(example) = &r.example {
                let label = if r.count == 1 { ":" } else { "; first" };
                let _ = write!(out, "{label} {example}");
            }
            out.push(')');
        }
        out
    }
}

/// `value` in quotes, cut short if long (a summary line stays one line).
fn quote(value: &str) -> String {
    if value.chars().count() <= EXAMPLE_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(EXAMPLE_CHARS).collect();
        format!("{head:?}…")
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

    /// The next row in strict or lenient mode; `None` at the end of the file.
    fn next_row(&mut self) -> Option<Result<(u64, TaskRow), CsvError>> {
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
                    parse_record(&self.record, &self.columns, self.ts_unit, line)
                        .map(|row| (line, row))
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
        self.next_row()
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
    let item_id = field(c.item_id);
    let row = TaskRow {
        user_id: field(c.user_id).to_owned(),
        item_id: (!item_id.is_empty()).then(|| item_id.to_owned()),
        topic: field(c.topic).to_owned(),
        difficulty: c.difficulty.map(field).unwrap_or("").to_owned(),
        correct,
        seconds,
        completed_at_ms,
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

/// `ts` to Unix milliseconds.
///
/// A number (`1414749956`, `1414749956.58917`, `-1.5`, `1.4e9`) counts
/// `unit`s since 1970-01-01T00:00:00Z; a row number such as the shared
/// data's becomes seconds 0, 1, 2…, which keeps its order. Otherwise RFC 3339
/// (`T`, `t` or space between date and time; `Z` or an offset, also as
/// `+0200` or `+02`) or `YYYY-MM-DD HH:MM:SS[.f]` / `YYYY-MM-DDTHH:MM:SS[.f]`
/// without an offset, taken as UTC. Any number of fraction digits; what is
/// below a millisecond is rounded down. Surrounding whitespace is ignored.
pub fn parse_ts(s: &str, unit: TsUnit) -> Result<i64, TsError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(TsError::Empty);
    }
    let ms = match decimal_ms(s, unit) {
        Some(ms) => ms?,
        None => datetime_ms(s).ok_or(TsError::Unrecognised)?,
    };
    completed_at_from_ms(ms)
        .map(|_| ms)
        .ok_or(TsError::OutOfRange)
}

/// A decimal number (optional sign, digits with an optional point, optional
/// exponent) as whole milliseconds, rounded down; `None` when `s` is not one.
///
/// Exact decimal arithmetic rather than `f64`: `1414749956.589` times 1000 in
/// floating point can come out as `…588.9999` and floor to the wrong
/// millisecond.
fn decimal_ms(s: &str, unit: TsUnit) -> Option<Result<i64, TsError>> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let exponent = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return None;
            }
            match e.parse::<i32>() {
                Ok(v) => i64::from(v),
                Err(_) => return Some(Err(TsError::OutOfRange)),
            }
        }
    };
    // The digits of int and frac in a row; the millisecond point sits after
    // `point` of them.
    let n_digits = (int.len() + frac.len()) as i64;
    let point = int.len() as i64 + exponent + unit.ms_exponent();
    let limit = i128::from(i64::MAX);
    let mut whole: i128 = 0;
    let mut below_ms = false;
    for (i, b) in int.bytes().chain(frac.bytes()).enumerate() {
        let d = i128::from(b - b'0');
        if (i as i64) < point {
            whole = whole * 10 + d;
            if whole > limit {
                return Some(Err(TsError::OutOfRange));
            }
        } else if d != 0 {
            below_ms = true;
        }
    }
    // Zeros implied by an exponent past the last digit; a non-zero value
    // overflows within 20 of them, so the loop is short whatever the exponent.
    let mut implied = point - n_digits;
    while implied > 0 && whole != 0 {
        whole *= 10;
        if whole > limit {
            return Some(Err(TsError::OutOfRange));
        }
        implied -= 1;
    }
    // Rounding down, also below zero, keeps every value's order.
    let ms = if negative {
        -whole - i128::from(below_ms)
    } else {
        whole
    };
    Some(i64::try_from(ms).map_err(|_| TsError::OutOfRange))
}

/// An RFC 3339 or `YYYY-MM-DD HH:MM:SS[.f][offset]` date-time as Unix
/// milliseconds; no offset means UTC.
fn datetime_ms(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    // `%#z` also takes `+0200` and `+02` (PostgreSQL's text output), which
    // RFC 3339 does not.
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, format) {
            return Some(dt.timestamp_millis());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, format) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: TsUnit = TsUnit::S;
    const MS: TsUnit = TsUnit::Ms;

    #[test]
    fn unix_numbers_are_seconds_by_default() {
        for (text, ms) in [
            ("0", 0),
            ("1", 1_000),
            ("42", 42_000),
            ("941501", 941_501_000),
            ("1414749956", 1_414_749_956_000),
            ("1414749956.58917", 1_414_749_956_589),
            ("1414749956.5", 1_414_749_956_500),
            ("1414749956.", 1_414_749_956_000),
            (".5", 500),
            ("+12", 12_000),
            ("0001414749956", 1_414_749_956_000),
            // Nine fraction digits and more: below a millisecond is dropped.
            ("1414749956.589171234", 1_414_749_956_589),
            ("1414749956.9999999999999", 1_414_749_956_999),
            // Exact where f64 * 1000 is not (1.005 * 1000 = 1004.99…).
            ("1.005", 1_005),
            ("1005e-3", 1_005),
            ("1414749956.589", 1_414_749_956_589),
            ("1.4e9", 1_400_000_000_000),
            ("1.414749956589E9", 1_414_749_956_589),
            ("14147499565.89e-1", 1_414_749_956_589),
            ("1e+3", 1_000_000),
            ("5e-4", 0),
            // Before 1970, rounded down like every other value.
            ("-1", -1_000),
            ("-1.5", -1_500),
            ("-0.0001", -1),
            ("-0", 0),
            // Leading and trailing spaces (the CSV reader trims too).
            ("  1414749956.5 ", 1_414_749_956_500),
        ] {
            assert_eq!(parse_ts(text, S), Ok(ms), "{text:?}");
        }
    }

    #[test]
    fn ms_unit_only_by_choice() {
        for (text, ms) in [
            ("0", 0),
            ("1414749956589", 1_414_749_956_589),
            ("1414749956589.7", 1_414_749_956_589),
            ("1.414749956589e12", 1_414_749_956_589),
            ("-1.5", -2),
            ("42", 42),
        ] {
            assert_eq!(parse_ts(text, MS), Ok(ms), "{text:?}");
        }
        // The same millisecond value read as seconds is out of range, not
        // silently divided: the message points at the flag.
        assert_eq!(parse_ts("1414749956589", S), Err(TsError::OutOfRange));
        assert!(TsError::OutOfRange.problem(S).contains("--ts-unit ms"));
        // And seconds stay seconds whatever their magnitude (no guessing).
        assert_eq!(parse_ts("1700000000", S), Ok(1_700_000_000_000));
        assert_eq!(parse_ts("1700000000", MS), Ok(1_700_000_000));
    }

    #[test]
    fn date_times() {
        let t = 1_414_749_956_589; // 2014-10-31T10:05:56.589Z
        for text in [
            "2014-10-31T10:05:56.589Z",
            "2014-10-31T10:05:56.589z",
            "2014-10-31t10:05:56.589Z",
            "2014-10-31 10:05:56.589Z",
            "2014-10-31T10:05:56.589+00:00",
            "2014-10-31T12:05:56.589+02:00",
            "2014-10-31 12:05:56.589+02:00",
            "2014-10-31T05:05:56.589-05:00",
            "2014-10-31T15:35:56.589+05:30",
            "2014-10-31T12:05:56.589+0200",
            "2014-10-31 12:05:56.589+02",
            "2014-10-31 12:05:56.589 +02:00",
            "2014-10-31T10:05:56.589123456Z",
            "2014-10-31T10:05:56.5891234567891Z",
            "2014-10-31 10:05:56.589",
            "2014-10-31T10:05:56.589",
            "2014-10-31 10:05:56.589171",
            " 2014-10-31 10:05:56.589 ",
        ] {
            assert_eq!(parse_ts(text, S), Ok(t), "{text:?}");
            // The unit is about numbers only.
            assert_eq!(parse_ts(text, MS), Ok(t), "{text:?} with ms");
        }
        assert_eq!(parse_ts("2014-10-31 10:05:56", S), Ok(1_414_749_956_000));
        assert_eq!(parse_ts("2014-10-31T10:05:56Z", S), Ok(1_414_749_956_000));
        assert_eq!(parse_ts("1969-12-31T23:59:59.9995Z", S), Ok(-1));
        assert_eq!(parse_ts("0001-01-01T00:00:00Z", S), Ok(-62_135_596_800_000));
        assert_eq!(
            parse_ts("9999-12-31T23:59:59.999Z", S),
            Ok(253_402_300_799_999)
        );
    }

    #[test]
    fn rejected_forms() {
        for (text, why) in [
            ("", TsError::Empty),
            ("   ", TsError::Empty),
            ("yesterday", TsError::Unrecognised),
            ("NaN", TsError::Unrecognised),
            ("inf", TsError::Unrecognised),
            ("-", TsError::Unrecognised),
            (".", TsError::Unrecognised),
            ("1e", TsError::Unrecognised),
            ("e5", TsError::Unrecognised),
            ("1.2.3", TsError::Unrecognised),
            ("1,5", TsError::Unrecognised),
            ("0x10", TsError::Unrecognised),
            ("1_000", TsError::Unrecognised),
            ("2014-10-31", TsError::Unrecognised),
            ("10:05:56", TsError::Unrecognised),
            ("2014-10-31T10:05", TsError::Unrecognised),
            ("2014-13-31T10:05:56Z", TsError::Unrecognised),
            ("2014-10-31T10:05:56 CET", TsError::Unrecognised),
            ("31/10/2014 10:05:56", TsError::Unrecognised),
            ("Fri, 31 Oct 2014 10:05:56 +0000", TsError::Unrecognised),
            ("999999999999999999", TsError::OutOfRange),
            ("253402300800", TsError::OutOfRange),
            ("-62135596801", TsError::OutOfRange),
            ("1e300", TsError::OutOfRange),
            ("1e99999999999", TsError::OutOfRange),
            (
                "99999999999999999999999999999999999999999",
                TsError::OutOfRange,
            ),
            ("0000-12-31T23:59:59Z", TsError::OutOfRange),
        ] {
            assert_eq!(parse_ts(text, S), Err(why), "{text:?}");
        }
        // Zeros stay zero however far an exponent shifts them.
        assert_eq!(parse_ts("0e999999999", S), Ok(0));
        assert_eq!(parse_ts("253402300799.999", S), Ok(253_402_300_799_999));
        assert_eq!(parse_ts("-62135596800", S), Ok(-62_135_596_800_000));
    }

    #[test]
    fn values() {
        assert_eq!(parse_correct("TRUE"), Some(true));
        assert_eq!(parse_correct("2"), None);
        assert_eq!(parse_seconds(""), Some(None));
        assert_eq!(parse_seconds("1.5"), Some(Some(1.5)));
        assert_eq!(parse_seconds("NaN"), None);
        assert_eq!(parse_seconds("abc"), None);
    }

    #[test]
    fn summary_counts_reasons_with_first_lines() {
        let mut s = RowSummary::default();
        s.accept();
        for line in [3, 5, 8, 9, 10, 11, 12] {
            s.reject(&bad(line, "ts", "", TsError::Empty.problem(S)));
        }
        s.reject(&bad(4, "correct", "maybe", "not 0, 1, true or false"));
        s.reject(&CsvError::ColumnCount {
            line: 6,
            expected: 6,
            found: 5,
        });
        s.reject(&CsvError::Read {
            line: 7,
            error: io::Error::other("disk"),
        });
        assert_eq!((s.read, s.accepted, s.rejected_total()), (10, 1, 9));
        assert_eq!(s.rejected[0].first_lines, [3, 5, 8, 9, 10]);
        assert_eq!(
            s.render("used"),
            "read 10 rows; used 1; rejected 9:\n  \
             ts: empty (ts is required) → 7 (first lines 3, 5, 8, 9, 10, …; first \"\")\n  \
             correct: not 0, 1, true or false → 1 (line 4: \"maybe\")\n  \
             wrong number of columns → 1 (line 6: 5 instead of 6)"
        );
        let long = "x".repeat(100);
        s.reject(&bad(13, "user_id", &long, "empty"));
        assert!(
            s.render("used")
                .ends_with(&format!("{:?}…)", "x".repeat(40)))
        );
        assert_eq!(
            RowSummary::default().render("imported"),
            "read 0 rows; imported 0; rejected 0"
        );
    }
}
