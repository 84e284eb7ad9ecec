//! The cron side: one scheduler job per [`JobKind`] that only wakes its worker, and the
//! heartbeat that proves the scheduler still ticks.

use std::sync::Arc;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::workers::Triggers;
use super::{DaemonEvent, Notifier};
use crate::config::Config;
use crate::domain::JobKind;
use crate::telemetry::Telemetry;

/// Starts a scheduler for `config`'s schedules.
pub(super) async fn start(
    config: &Config,
    triggers: &Arc<Triggers>,
    heartbeat: Option<Duration>,
    notifier: &Notifier,
    telemetry: &Arc<Telemetry>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for job in JobKind::ALL {
        let triggers = triggers.clone();
        let cron = config.schedule.of(job).as_six_fields();
        let scheduled = Job::new_async(cron, move |_, _| {
            let triggers = triggers.clone();
            Box::pin(async move { triggers.wake(job) })
        })
        .inspect_err(
            |e| tracing::error!(job = %job, schedule = cron, error = %e, "cannot schedule"),
        )?;
        scheduler.add(scheduled).await?;
    }
    // The pulse `/readyz` checks: a scheduler that stops ticking makes the replica unready.
    let pulse = telemetry.clone();
    scheduler
        .add(Job::new_async("* * * * * *", move |_, _| {
            let pulse = pulse.clone();
            Box::pin(async move { pulse.scheduler_ticked(wall_clock_seconds()) })
        })?)
        .await?;
    // Fed from the scheduler's own ticks: if the scheduler stalls, the heartbeat stops and
    // the supervisor (systemd's watchdog) restarts the service.
    if let Some(every) = heartbeat {
        let seconds = every.as_secs().clamp(1, 59);
        let notifier = notifier.clone();
        let beat = Job::new_async(format!("*/{seconds} * * * * *").as_str(), move |_, _| {
            let notifier = notifier.clone();
            Box::pin(async move { notifier(DaemonEvent::Heartbeat) })
        })?;
        scheduler.add(beat).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// Seconds since the epoch by the host clock: the tick's real time, for the metric.
#[allow(clippy::disallowed_methods)] // Wall-clock time of a tick, not business time.
fn wall_clock_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}
