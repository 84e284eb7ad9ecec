//! The token lifecycle: when a grant's tokens must be exchanged, and the one component that
//! exchanges them. docs/architecture.md, "Token lifecycle", walks through the whole protocol.

mod refresher;

use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngExt;

use crate::config::TokenPolicy;
pub use refresher::{Failpoints, RefreshOutcome, Refresher, TokenUnavailable};

/// When a grant whose refresh token rotated at `rotated_at` is next due for a keep-alive
/// rotation: `keepalive_after`, plus jitter so that grants connected on the same day do not
/// all come due in the same minute. The jitter never eats more than half of the margin left
/// before the inactivity expiry.
pub fn keepalive_due(policy: &TokenPolicy, rotated_at: DateTime<Utc>) -> DateTime<Utc> {
    let keepalive = policy.keepalive_after;
    let slack = policy.inactivity_expiry - keepalive;
    let spread = (keepalive / 10).min(slack / 2).max(TimeDelta::zero());
    let jitter_ms = match spread.num_milliseconds() {
        ms if ms > 0 => rand::rng().random_range(0..ms),
        _ => 0,
    };
    rotated_at + keepalive + TimeDelta::milliseconds(jitter_ms)
}

/// The delay before retry number `streak` (1-based) of a failed refresh: exponential with
/// jitter from 15 s to 15 min.
pub fn retry_delay(streak: u32) -> TimeDelta {
    let delay = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(15))
        .with_max_delay(Duration::from_secs(15 * 60))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(streak.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(15 * 60));
    TimeDelta::from_std(delay).unwrap_or(TimeDelta::minutes(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            refresh_margin: TimeDelta::minutes(5),
            keepalive_after: TimeDelta::days(30),
            inactivity_expiry: TimeDelta::days(90),
            absolute_expiry: TimeDelta::days(365),
            reuse_leeway: TimeDelta::minutes(10),
            reauth_warning: TimeDelta::days(14),
            lease_ttl: TimeDelta::minutes(2),
            idle_revalidate_after: TimeDelta::days(7),
            reauth_breaker: 20,
            degraded_after: 3,
        }
    }

    #[test]
    fn keepalive_is_spread_but_always_well_before_the_inactivity_expiry() {
        let policy = policy();
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        let dues: Vec<_> = (0..200).map(|_| keepalive_due(&policy, now)).collect();
        assert!(dues.iter().all(|d| *d >= now + TimeDelta::days(30)));
        assert!(dues.iter().all(|d| *d <= now + TimeDelta::days(33)));
        let distinct: std::collections::HashSet<_> =
            dues.iter().map(|d| d.timestamp() / 60).collect();
        assert!(
            distinct.len() > 100,
            "rotations are spread over many minutes"
        );
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        assert!(retry_delay(1) <= TimeDelta::seconds(30));
        assert!(retry_delay(30) <= TimeDelta::minutes(30));
        assert!(retry_delay(30) >= TimeDelta::minutes(15));
    }
}
