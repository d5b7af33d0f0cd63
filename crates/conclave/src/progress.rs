//! A progress bar on the terminal (stderr), silent when stderr is not a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Self {
        Progress {
            label: label.into(),
            total,
            started: Instant::now(),
            last: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws at most ten times a second.
    pub fn set(&mut self, done: u64) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                && done < self.total
        {
            return;
        }
        self.last = Some(Instant::now());
        let frac = if self.total == 0 {
            1.0
        } else {
            done as f64 / self.total as f64
        };
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let _ = write!(
            std::io::stderr(),
            "\r{} [{}{}] {:>5.1}% {}/{} ({:.0}/s) ",
            self.label,
            "█".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            frac * 100.0,
            done,
            self.total,
            rate
        );
    }

    pub fn finish(&mut self) {
        self.set(self.total);
        if self.enabled {
            let _ = writeln!(std::io::stderr());
        }
    }
}
