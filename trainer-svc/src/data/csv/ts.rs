//! The `ts` column: Unix seconds or milliseconds (integer or fractional, by
//! the caller's choice, never guessed), RFC 3339, or a naive UTC date-time.

use chrono::{DateTime, NaiveDateTime};

use crate::db::completed_at_from_ms;

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
}
