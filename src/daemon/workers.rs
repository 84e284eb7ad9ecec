//! One worker loop per [`JobKind`], fed by a `Notify`: a trigger that arrives while the job
//! runs is coalesced into one more run, so a job never overlaps itself. The token sweep is
//! the exception that listens: while its exchanges are in flight, a trigger claims the
//! grants that came due into its free slots (still one pass, never two). Workers check for
//! shutdown between items, never in the middle of a token exchange.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::delivery::Deliverer;
use crate::domain::JobKind;
use crate::jobs;
use crate::jobs::sync::Syncer;
use crate::lifecycle::Refresher;

/// What the workers read at the start of every run; replaced on reload.
#[derive(Debug, Clone)]
pub(super) struct RunContext {
    pub(super) app: App,
    pub(super) refresher: Refresher,
    pub(super) syncer: Syncer,
    pub(super) deliverer: Deliverer,
}

/// One trigger per job kind, indexed by [`JobKind::ALL`].
#[derive(Debug, Default)]
pub(super) struct Triggers {
    notify: [Notify; JobKind::ALL.len()],
}

impl Triggers {
    fn of(&self, job: JobKind) -> &Notify {
        let index = JobKind::ALL
            .iter()
            .position(|kind| *kind == job)
            .expect("every job kind is in JobKind::ALL");
        &self.notify[index]
    }

    /// Asks for one more run of `job`.
    pub(super) fn wake(&self, job: JobKind) {
        self.of(job).notify_one();
    }
}

/// Starts the worker loop of every job kind.
pub(super) fn spawn(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    triggers: &Arc<Triggers>,
    context: &watch::Receiver<RunContext>,
) {
    for job in JobKind::ALL {
        let (stop, triggers, context) = (stop.clone(), triggers.clone(), context.clone());
        tracker.spawn(async move {
            while wait(triggers.of(job), &stop).await {
                let run = context.borrow().clone();
                // A bug in one run must not end the job for the life of the process: a dead
                // token sweep would let grants expire in silence.
                match AssertUnwindSafe(run_job(job, &run, triggers.of(job), &stop))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(job = %job, error = %e, "job failed; retrying at the next tick");
                    }
                    Err(_) => tracing::error!(job = %job, "job panicked; retrying at the next tick"),
                }
            }
        });
    }
}

/// One run of `job`, for the latest tick of its schedule. The token sweep also hears the
/// ticks that arrive while it runs (`trigger`), so that grants coming due during a slow
/// exchange are claimed at the next tick rather than after it.
async fn run_job(
    job: JobKind,
    run: &RunContext,
    trigger: &Notify,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let RunContext {
        app,
        refresher,
        syncer,
        deliverer,
    } = run;
    let tick = app.config.schedule.of(job).latest_tick(app.clock.now());
    match job {
        JobKind::TokenSweep => jobs::token_sweep::run_pass(app, refresher, stop, trigger)
            .await
            .map(drop),
        JobKind::Revalidate => jobs::revalidate::run_once(app, refresher, tick, stop)
            .await
            .map(drop),
        JobKind::JiraSync | JobKind::JiraReconcile | JobKind::ConfluenceSync => {
            let kind = job.sync_kind().expect("sync jobs have a sync kind");
            syncer.run_once(kind, tick, stop).await.map(drop)
        }
        JobKind::Alerts => {
            // Staleness first, so that a new stale alert goes out in the same run.
            jobs::stale_sites::run_once(app).await?;
            deliverer.run_once(stop).await.map(drop)
        }
    }
}

/// Waits for a trigger; false once shutdown began.
async fn wait(trigger: &Notify, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = trigger.notified() => !stop.is_cancelled(),
        _ = stop.cancelled() => false,
    }
}
