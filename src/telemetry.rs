//! In-process counters for `/metrics` (what the database cannot tell: requests made, waits,
//! exchange outcomes, delivery attempts), and the scheduler's pulse for `/readyz`. One
//! `Telemetry` lives for the whole process; reloads keep it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters by name and label values, in exposition order.
#[derive(Debug, Default)]
pub struct Telemetry {
    counters: Mutex<BTreeMap<CounterKey, f64>>,
    scheduler_tick: Mutex<Option<(Instant, i64)>>,
}

/// A counter's name and its label pairs.
pub type CounterKey = (&'static str, Vec<(&'static str, String)>);

impl Telemetry {
    /// Adds `by` to the counter `name` with `labels`.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: f64) {
        let key = (
            name,
            labels
                .iter()
                .map(|(label, value)| (*label, (*value).to_owned()))
                .collect(),
        );
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry(key).or_insert(0.0) += by;
    }

    /// Counts one token exchange by its outcome class.
    pub fn token_exchange(&self, outcome: &str) {
        self.add(
            "atlassync_token_exchanges_total",
            &[("outcome", outcome)],
            1.0,
        );
    }

    /// Counts one answered (or failed) Atlassian request; `status` is the HTTP status, or
    /// `error` when no answer came.
    pub fn api_request(&self, product: &str, status: &str) {
        self.add(
            "atlassync_api_requests_total",
            &[("product", product), ("status", status)],
            1.0,
        );
    }

    /// Counts a 429 and the time it made this process wait.
    pub fn throttled(&self, product: &str, waited: Duration) {
        self.add(
            "atlassync_api_throttled_total",
            &[("product", product)],
            1.0,
        );
        self.add(
            "atlassync_api_throttle_wait_seconds_total",
            &[("product", product)],
            waited.as_secs_f64(),
        );
    }

    /// Counts one delivery attempt to `sink` (`delivered` or `failed`).
    pub fn delivery(&self, sink: &str, outcome: &str) {
        self.add(
            "atlassync_alert_deliveries_total",
            &[("sink", sink), ("outcome", outcome)],
            1.0,
        );
    }

    /// A copy of every counter.
    pub fn counters(&self) -> Vec<(CounterKey, f64)> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The scheduler ticked; `unix_seconds` is the tick's wall-clock time.
    pub fn scheduler_ticked(&self, unix_seconds: i64) {
        *self
            .scheduler_tick
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), unix_seconds));
    }

    /// When the scheduler last ticked: how long ago (monotonic) and its wall-clock time.
    pub fn last_scheduler_tick(&self) -> Option<(Duration, i64)> {
        self.scheduler_tick
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(at, unix)| (at.elapsed(), unix))
    }
}
