//! What a read found: rows read, accepted and rejected by reason with the
//! first line numbers of each, printed the same way by `import`, `train` and
//! `eval`.

use std::fmt::Write as _;

use super::CsvError;

/// How many line numbers a [`RowSummary`] keeps per reason.
pub const FIRST_LINES: usize = 5;

/// Longest rejected value a summary quotes, in characters.
const EXAMPLE_CHARS: usize = 40;

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

    pub(super) fn accept(&mut self) {
        self.read += 1;
        self.accepted += 1;
    }

    pub(super) fn reject(&mut self, e: &CsvError) {
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

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::data::csv::bad;
    use crate::data::csv::ts::{TsError, TsUnit};

    const S: TsUnit = TsUnit::S;

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
