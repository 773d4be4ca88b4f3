//! The figures of one run, as a table for people and JSON for scripts; both
//! carry the same numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::tally::Tally;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Everything a run measured, and how it was driven.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// How the run was driven (flattened into the JSON object).
    #[serde(flatten)]
    pub setup: Setup,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Successful calls.
    pub requests_ok: u64,
    /// Failed calls.
    pub errors_total: u64,
    /// Failed calls by gRPC status code name (`BAD_RESPONSE`: an answer with
    /// the wrong number of predictions).
    pub errors: BTreeMap<String, u64>,
    /// Successful calls per second.
    pub throughput_rps: f64,
    /// Candidate scores per second (successful calls × candidates).
    pub scores_per_s: f64,
    /// Latency of successful calls, µs: from the intended send time in open
    /// loop, from the send in closed loop.
    pub latency_us: Percentiles,
    /// From the actual send to the answer, µs (open loop: `latency_us` minus
    /// the time a due call waited for a free slot).
    pub service_us: Percentiles,
    /// CPU this process used over the whole run (warm-up included) as a
    /// percentage of one core; `None` where `/proc/self/stat` is not readable.
    /// With `--self-test` it includes the null server.
    pub client_cpu_percent: Option<f64>,
}

/// The run's settings, repeated in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setup {
    /// The server driven (`self-test` for the in-process null server).
    pub target: String,
    /// Open loop: the scheduled calls per second.
    pub rate: Option<f64>,
    /// Workers or in-flight cap.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Candidates per call.
    pub candidates: usize,
    /// Attempts per history.
    pub history: usize,
    /// Whether explanations were requested.
    pub explain: bool,
    /// Simulator seed.
    pub seed: u64,
    /// Distinct requests cycled through.
    pub distinct_requests: usize,
    /// Mean encoded request size in bytes.
    pub request_bytes: usize,
    /// Recorded seconds.
    pub duration_s: f64,
    /// Unrecorded seconds before them.
    pub warmup_s: f64,
}

impl Report {
    /// Puts the settings and the observations together.
    pub fn new(setup: Setup, tally: &Tally, client_cpu_percent: Option<f64>) -> Report {
        let per_s = |n: f64| n / setup.duration_s;
        Report {
            mode: if setup.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            throughput_rps: per_s(tally.ok as f64),
            scores_per_s: per_s((tally.ok as f64) * setup.candidates as f64),
            requests_ok: tally.ok,
            errors_total: tally.error_count(),
            errors: tally
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            latency_us: Percentiles::of(&tally.latency),
            service_us: Percentiles::of(&tally.service),
            client_cpu_percent,
            setup,
        }
    }

    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let setup = &self.setup;
        let mode = match setup.rate {
            Some(r) => format!("open loop at {r:.0} calls/s (latency from the intended send time)"),
            None => "closed loop".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(s, "target      {}", setup.target);
        let _ = writeln!(
            s,
            "load        {mode}; concurrency {}, {} connection(s)",
            setup.concurrency, setup.connections
        );
        let _ = writeln!(
            s,
            "requests    {} candidates, {} attempts of history{}; {} distinct, {} B each (seed {})",
            setup.candidates,
            setup.history,
            if setup.explain { ", explain" } else { "" },
            setup.distinct_requests,
            setup.request_bytes,
            setup.seed
        );
        let _ = writeln!(
            s,
            "measured    {:.1} s after {:.1} s warm-up",
            setup.duration_s, setup.warmup_s
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| ok calls | calls/s | scores/s | errors | client CPU |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
        let cpu = self
            .client_cpu_percent
            .map_or("n/a".to_string(), |c| format!("{c:.0} %"));
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {} | {cpu} |",
            self.requests_ok, self.throughput_rps, self.scores_per_s, self.errors_total
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| µs | p50 | p90 | p99 | p99.9 | max | mean |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let mut row = |name: &str, p: &Percentiles| {
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                p.p50, p.p90, p.p99, p.p999, p.max, p.mean
            );
        };
        row("latency", &self.latency_us);
        if setup.rate.is_some() {
            row("service", &self.service_us);
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "| error code | calls |");
            let _ = writeln!(s, "|---|---:|");
            for (code, n) in &self.errors {
                let _ = writeln!(s, "| {code} | {n} |");
            }
        }
        s
    }
}

/// CPU seconds this process has used (user + system, all threads), from
/// `/proc/self/stat`; `None` off Linux.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, i.e. the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture Rust targets.
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::Outcome;
    use std::time::Duration;

    #[test]
    fn table_and_json_carry_the_same_figures() {
        let mut t = Tally::default();
        for us in [100, 200, 300, 400] {
            let d = Duration::from_micros(us);
            t.record(Outcome::Ok, d, d);
        }
        t.record(
            Outcome::Error("INVALID_ARGUMENT"),
            Duration::ZERO,
            Duration::ZERO,
        );
        let setup = Setup {
            target: "http://x".into(),
            rate: None,
            concurrency: 1,
            connections: 1,
            candidates: 10,
            history: 50,
            explain: false,
            seed: 1,
            distinct_requests: 4,
            request_bytes: 100,
            duration_s: 2.0,
            warmup_s: 0.0,
        };
        let r = Report::new(setup, &t, None);
        assert_eq!(r.requests_ok, 4);
        assert_eq!(r.throughput_rps, 2.0);
        assert_eq!(r.scores_per_s, 20.0);
        assert_eq!(r.errors.get("INVALID_ARGUMENT"), Some(&1));
        assert!((r.latency_us.p50 - 200.0).abs() < 1.0, "{:?}", r.latency_us);
        assert!((r.latency_us.max - 400.0).abs() < 1.0);
        let table = r.table();
        assert!(table.contains("| INVALID_ARGUMENT | 1 |"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(json["errors"]["INVALID_ARGUMENT"], 1);
        assert_eq!(json["mode"], "closed");
    }

    #[test]
    fn cpu_seconds_reads_proc_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}
