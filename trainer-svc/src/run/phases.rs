//! Where a run's time and memory go: each phase's wall time and the
//! process's resident and peak resident memory as it ends, logged as one
//! `run phase ended` line per phase (the scale benchmark reads them; an
//! operator sees which phase a slow or large run spends in).

use std::time::Instant;

use taskcast_learn::pipeline::Phase;

/// Times the phases of one run as progress reports move through them.
#[derive(Debug)]
pub struct PhaseClock {
    run: String,
    current: Option<(Phase, Instant)>,
}

impl PhaseClock {
    /// A clock for run `run`, before its first phase.
    pub fn new(run: &str) -> Self {
        PhaseClock {
            run: run.to_string(),
            current: None,
        }
    }

    /// Notes that the run is in `phase`; when that is a new phase, the one
    /// before it ended now.
    pub fn enter(&mut self, phase: Phase) {
        if self.current.is_some_and(|(p, _)| p == phase) {
            return;
        }
        self.finish();
        self.current = Some((phase, Instant::now()));
    }

    /// Ends the current phase, if any.
    pub fn finish(&mut self) {
        let Some((phase, started)) = self.current.take() else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64();
        match Memory::now() {
            Some(m) => tracing::info!(
                run = %self.run,
                phase = phase.name(),
                seconds,
                rss_mib = m.rss_mib,
                peak_rss_mib = m.peak_mib,
                "run phase ended"
            ),
            None => {
                tracing::info!(run = %self.run, phase = phase.name(), seconds, "run phase ended")
            }
        }
    }
}

/// The process's resident set now and at its peak, in MiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_mib: f64,
    /// `VmHWM`: the most the process has held since it started (or since
    /// the peak was last reset through `/proc/PID/clear_refs`).
    pub peak_mib: f64,
}

impl Memory {
    /// Read from `/proc/self/status`; `None` where there is no such file.
    pub fn now() -> Option<Memory> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        };
        Some(Memory {
            rss_mib: field("VmRSS:")?,
            peak_mib: field("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let m = Memory::now().expect("/proc/self/status");
            assert!(m.rss_mib > 0.0 && m.peak_mib >= m.rss_mib);
        }
    }

    #[test]
    fn a_repeated_phase_is_one_phase() {
        let mut clock = PhaseClock::new("run-x");
        clock.enter(Phase::Reading);
        let first = clock.current.map(|(_, t)| t);
        clock.enter(Phase::Reading);
        assert_eq!(clock.current.map(|(_, t)| t), first);
        clock.enter(Phase::Features);
        assert_eq!(clock.current.map(|(p, _)| p), Some(Phase::Features));
        clock.finish();
        assert!(clock.current.is_none());
    }
}
