//! Business time. Everything that decides expiry, due-ness or deadlines asks a [`Clock`];
//! nothing else in the crate reads the wall clock, so tests can compress months into seconds.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of "now" for business decisions.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place business time meets the wall clock.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Tests share one between the daemon and the emulator
/// so that a single `advance` moves both worlds.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// A clock stopped at the current wall-clock time.
    // Reads the wall clock once, by definition, to pick the starting instant.
    #[allow(clippy::disallowed_methods)]
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }

    /// Jumps to `to` (which may be in the past; tests decide).
    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A clock that runs `speed` times faster than the wall clock from the moment it is made;
/// the demo uses it to show a year of grant life in about a minute.
#[derive(Debug)]
pub struct AcceleratedClock {
    started_at_real: std::time::Instant,
    started_at: DateTime<Utc>,
    speed: f64,
}

impl AcceleratedClock {
    /// Starts at `start`, running `speed` times faster than real time.
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            started_at_real: std::time::Instant::now(),
            started_at: start,
            speed,
        }
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.started_at_real.elapsed().as_secs_f64();
        let virtual_ms = (real * self.speed * 1000.0) as i64;
        self.started_at + Duration::milliseconds(virtual_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        // Any instant will do as the starting point.
        #[allow(clippy::disallowed_methods)]
        let start = Utc::now();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::days(90));
        assert_eq!(clock.now(), start + Duration::days(90));
    }
}
