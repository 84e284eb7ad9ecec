//! A site whose sync has not succeeded for `alerts.sync_stale_after` (by default three
//! periods of that stream's schedule) raises `sync_stale`, one alert per site and stream,
//! resolved by the next success. Reports downstream read these tables: a silent gap is worse
//! than a loud one.

use chrono::{DateTime, TimeDelta, Utc};

use crate::app::App;
use crate::config::Config;
use crate::domain::{JobKind, SiteKey, SyncKind};
use crate::store::alerts::{self, AlertKind, SystemAlert};
use crate::store::synced_sites;

const STREAMS: [(SyncKind, JobKind); 3] = [
    (SyncKind::JiraIncremental, JobKind::JiraSync),
    (SyncKind::JiraReconcile, JobKind::JiraReconcile),
    (SyncKind::ConfluenceSpaces, JobKind::ConfluenceSync),
];

/// How long a stream may go without a success: `alerts.sync_stale_after`, or three of the
/// longest gaps between its next few schedule ticks (for reconciliation, at least a day).
pub fn stale_after(config: &Config, job: JobKind, now: DateTime<Utc>) -> TimeDelta {
    if let Some(after) = config.alerts.sync_stale_after {
        return after;
    }
    let schedule = config.schedule.of(job);
    let mut tick = schedule.latest_tick(now);
    let mut period = TimeDelta::zero();
    for _ in 0..4 {
        let Some(next) = schedule.next_after(tick) else {
            break;
        };
        period = period.max(next - tick);
        tick = next;
    }
    let floor = match job {
        // A full census of a large site spans several hours of the points budget.
        JobKind::JiraReconcile => TimeDelta::days(1),
        _ => TimeDelta::seconds(3),
    };
    (period * 3).max(floor)
}

/// The subject of a stream's alert: `cloud_id/product/kind`.
fn subject(cloud_id: &str, product: &str, kind: &str) -> String {
    format!("{cloud_id}/{product}/{kind}")
}

/// Raises `sync_stale` for stale streams and resolves it for streams that caught up.
/// Returns how many streams are stale.
pub async fn run_once(app: &App) -> Result<usize, sqlx::Error> {
    let now = app.clock.now();
    let cutoffs: Vec<_> = STREAMS
        .iter()
        .map(|(kind, job)| (*kind, now - stale_after(&app.config, *job, now)))
        .collect();
    let mut conn = app.pool.acquire().await?;
    let stale = synced_sites::stale_streams(&mut conn, &cutoffs).await?;
    let mut subjects = Vec::with_capacity(stale.len());
    for stream in &stale {
        let subject = subject(
            stream.cloud_id.as_str(),
            stream.product.as_str(),
            &stream.kind,
        );
        let reason = match (stream.last_success, &stream.last_error) {
            (Some(at), Some(error)) => format!(
                "{} of {} ({}) has not succeeded since {at}; last error: {error}",
                stream.kind, stream.name, stream.cloud_id
            ),
            (Some(at), None) => format!(
                "{} of {} ({}) has not succeeded since {at}",
                stream.kind, stream.name, stream.cloud_id
            ),
            (None, error) => format!(
                "{} of {} ({}) has never succeeded{}",
                stream.kind,
                stream.name,
                stream.cloud_id,
                error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        };
        let site = SiteKey {
            cloud_id: stream.cloud_id.clone(),
            product: stream.product,
        };
        let alert = SystemAlert {
            kind: AlertKind::SyncStale,
            subject: &subject,
            label: &stream.name,
            site: Some(&site),
            reason: &reason,
            since: stream.last_success.or(stream.first_run).unwrap_or(now),
        };
        if alerts::open_system_alert(&mut conn, &alert, now).await? {
            tracing::warn!(site.cloud_id = %stream.cloud_id, stream = %stream.kind, %reason, "site sync stale");
        }
        subjects.push(subject);
    }
    for open in alerts::open_system_subjects(&mut conn, AlertKind::SyncStale).await? {
        if !subjects.contains(&open) {
            alerts::resolve_system_alert(&mut conn, AlertKind::SyncStale, &open, now).await?;
            tracing::info!(stream = %open, "site sync caught up");
        }
    }
    Ok(stale.len())
}
