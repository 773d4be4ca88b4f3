//! Log output for both services: text for terminals, JSON for collectors,
//! filtered from `TASKCAST_LOG` / `RUST_LOG`.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}` (expected text or json)"
            )),
        }
    }
}

/// Whether text log lines may carry ANSI colour codes: only on a terminal,
/// and never when `NO_COLOR` is set (<https://no-color.org>).
fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global tracing subscriber. The filter comes from
/// `TASKCAST_LOG`, else `RUST_LOG`, else `default_filter` (e.g. `"info"`).
///
/// Idempotent: when a subscriber is already installed (a second call, or a
/// test harness) this does nothing, so tests can call it freely.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("TASKCAST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only for a person at a terminal: redirected to a file (the
    // `.run/*.log` of scripts/run.sh) or a pipe, escape codes would be noise
    // in every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(std::io::stdout().is_terminal()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The subscriber of a command-line tool: like [`init_tracing`], but to
/// stderr, so a command's own output on stdout (a table, `--json`) stays
/// clean, and at `default_filter` (e.g. `"warn"`: what a person running the
/// command should see) unless `TASKCAST_LOG` / `RUST_LOG` say otherwise.
pub fn init_command_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("TASKCAST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn no_colour_unless_a_terminal() {
        // The test's stdout is captured (not a terminal), like a log file.
        assert!(!colour(std::io::stdout().is_terminal()));
        assert!(!colour(false));
    }
}
