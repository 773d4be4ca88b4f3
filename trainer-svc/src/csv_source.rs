//! Reading `user_id,item_id,topic,correct,seconds,ts` CSV files (plain or gzip).
//!
//! [`CsvSource`] yields one [`TaskRow`] at a time with its 1-based line number,
//! so a file of any size is read in constant memory. Gzip is detected by its
//! magic bytes, not the file name; concatenated gzip members are read through.
//!
//! Columns are found by header name, in any order; `difficulty` is optional.
//! - `correct`: `0`/`1` or `true`/`false` (any case).
//! - `seconds`: empty means not recorded; otherwise a finite number.
//! - `item_id`: empty means none.
//! - `ts`: an RFC 3339 timestamp, `YYYY-MM-DD HH:MM:SS[.f]` (UTC), or an
//!   integer. Integers are opaque order keys stored as milliseconds: values in
//!   `[10^9, 10^12)` look like Unix seconds and are multiplied by 1000, values
//!   `>= 10^12` look like Unix milliseconds and are kept, smaller values
//!   (row numbers) are kept as they are.
//!
//! Strict mode (the default) stops at the first malformed line with a
//! [`CsvError`] naming the line, the column and the value. Lenient mode
//! ([`CsvSource::lenient`]) skips such lines and counts them.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDateTime};
use flate2::read::MultiGzDecoder;

use crate::db::completed_at_from_ms;
use crate::rows::TaskRow;

/// The columns every file must have.
pub const REQUIRED_COLUMNS: [&str; 6] = ["user_id", "item_id", "topic", "correct", "seconds", "ts"];

/// How many skipped-line errors lenient mode keeps as examples.
const MAX_SKIP_EXAMPLES: usize = 20;

/// What is wrong with a CSV file.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading (or decompressing) failed; not a problem of one line.
    #[error("reading failed near line {line}: {source}")]
    Read {
        /// The last line reached.
        line: u64,
        /// The cause.
        source: io::Error,
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
    /// A field cannot be parsed.
    #[error("line {line}, column `{column}`: {problem}: {value:?}")]
    BadValue {
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: &'static str,
        /// The offending text.
        value: String,
        /// What was expected.
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

    /// Whether lenient mode may skip the line and go on.
    fn is_skippable(&self) -> bool {
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
    count: usize,
}

/// A streaming reader of task rows from CSV.
pub struct CsvSource {
    reader: csv::Reader<Box<dyn Read + Send>>,
    columns: Columns,
    record: csv::StringRecord,
    lenient: bool,
    skipped: u64,
    skip_examples: Vec<CsvError>,
    bytes_read: Arc<AtomicU64>,
    finished: bool,
}

impl std::fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("columns", &self.columns)
            .field("lenient", &self.lenient)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl CsvSource {
    /// Opens a plain or gzip CSV file and reads its header.
    pub fn open(path: &Path) -> Result<CsvSource, CsvError> {
        let file = File::open(path).map_err(|source| CsvError::Open {
            path: path.to_owned(),
            source,
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
            .map_err(|source| CsvError::Read { line: 0, source })?;
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
            skipped: 0,
            skip_examples: Vec::new(),
            bytes_read,
            finished: false,
        })
    }

    /// Switches to lenient mode: malformed lines are skipped and counted
    /// instead of ending the read. I/O errors still end it.
    pub fn lenient(mut self) -> CsvSource {
        self.lenient = true;
        self
    }

    /// Lines skipped so far (lenient mode).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The first few skipped lines' errors (lenient mode).
    pub fn skip_examples(&self) -> &[CsvError] {
        &self.skip_examples
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
                    parse_record(&self.record, &self.columns, line).map(|row| (line, row))
                }
                Err(e) => Err(csv_error(e, line_hint)),
            };
            match parsed {
                Ok(row) => return Some(Ok(row)),
                Err(e) if self.lenient && e.is_skippable() => {
                    self.skipped += 1;
                    if self.skip_examples.len() < MAX_SKIP_EXAMPLES {
                        self.skip_examples.push(e);
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
        csv::ErrorKind::Io(source) => CsvError::Read { line, source },
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

fn parse_record(rec: &csv::StringRecord, c: &Columns, line: u64) -> Result<TaskRow, CsvError> {
    if rec.len() != c.count {
        return Err(CsvError::ColumnCount {
            line,
            expected: c.count,
            found: rec.len(),
        });
    }
    // Indices come from the header and the length was just checked.
    let field = |i: usize| rec.get(i).unwrap_or("");
    let correct = parse_correct(field(c.correct)).ok_or_else(|| {
        bad(
            line,
            "correct",
            field(c.correct),
            "expected 0, 1, true or false",
        )
    })?;
    let seconds = parse_seconds(field(c.seconds)).ok_or_else(|| {
        bad(
            line,
            "seconds",
            field(c.seconds),
            "expected a finite number of seconds or nothing",
        )
    })?;
    let completed_at_ms = parse_ts(field(c.ts)).ok_or_else(|| {
        bad(
            line,
            "ts",
            field(c.ts),
            "expected an integer or an RFC 3339 timestamp between years 1 and 9999",
        )
    })?;
    let item_id = field(c.item_id);
    Ok(TaskRow {
        user_id: field(c.user_id).to_owned(),
        item_id: (!item_id.is_empty()).then(|| item_id.to_owned()),
        topic: field(c.topic).to_owned(),
        difficulty: c.difficulty.map(field).unwrap_or("").to_owned(),
        correct,
        seconds,
        completed_at_ms,
    })
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

/// `ts` to Unix milliseconds (see the module docs for integers).
pub fn parse_ts(s: &str) -> Option<i64> {
    let ms = if let Ok(v) = s.parse::<i64>() {
        if (1_000_000_000..1_000_000_000_000).contains(&v) {
            v.checked_mul(1000)?
        } else {
            v
        }
    } else if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.timestamp_millis()
    } else {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
            .ok()?;
        naive.and_utc().timestamp_millis()
    };
    completed_at_from_ms(ms).map(|_| ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_rules() {
        assert_eq!(parse_ts("0"), Some(0));
        assert_eq!(parse_ts("42"), Some(42));
        assert_eq!(parse_ts("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_ts("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(parse_ts("2024-01-02T03:04:05.5Z"), Some(1_704_164_645_500));
        assert_eq!(parse_ts("2024-01-02 03:04:05"), Some(1_704_164_645_000));
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(parse_ts("999999999999999999"), None);
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
}
