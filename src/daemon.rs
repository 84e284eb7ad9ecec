//! The long-running process: the HTTP server, the scheduler (tokio-cron-scheduler, UTC cron
//! jobs that only *trigger* workers), one worker loop per job kind, graceful shutdown on
//! SIGTERM/SIGINT, configuration reload on SIGHUP, and systemd notifications.
//!
//! Each job kind has one worker loop fed by a `Notify`: a trigger that arrives while the job
//! runs is coalesced into one more run, so a job never overlaps itself. Workers check for
//! shutdown between grants, never in the middle of a token exchange.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::{Config, Schedule};
use crate::jobs;
use crate::jobs::sync::Syncer;
use crate::lifecycle::Refresher;
use crate::store::sync::RunKind;

/// How long in-flight work may take to finish after SIGTERM (systemd allows 35 s).
const DRAIN_GRACE: Duration = Duration::from_secs(25);

/// What the workers read at the start of every run; replaced on SIGHUP.
#[derive(Debug, Clone)]
struct RunContext {
    app: App,
    refresher: Refresher,
    syncer: Syncer,
}

/// The job kinds and their triggers.
#[derive(Debug, Default)]
struct Triggers {
    token_sweep: Notify,
    revalidate: Notify,
    jira_sync: Notify,
    jira_reconcile: Notify,
    confluence_sync: Notify,
}

/// A name unique to this process, carried by its leases.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}:{}:{suffix}", std::process::id())
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration from `config_path`.
pub async fn run(app: App, config_path: PathBuf, config_given: bool) -> anyhow::Result<()> {
    // Signal handlers first: a SIGHUP or SIGTERM during start-up must not kill the process
    // with the default action.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let refresher = Refresher::new(app.clone(), worker_id());
    let syncer = Syncer::new(app.clone(), refresher.clone());
    let (context_tx, context_rx) = watch::channel(RunContext {
        app: app.clone(),
        refresher,
        syncer,
    });
    let triggers = Arc::new(Triggers::default());

    // The socket outlives configuration generations: a reload starts a server with the new
    // configuration over a duplicate of it and retires the old one, so the consent flow
    // (keys, client credentials, invite TTL) follows SIGHUP like the workers do.
    let listener = std::net::TcpListener::bind(app.config.http.listen)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .with_context(|| format!("cannot listen on http.listen {}", app.config.http.listen))?;
    tracing::info!(http.listen = %app.config.http.listen, "serving the consent flow and health");
    let mut server = HttpServer::start(app.clone(), &listener, &stop)?;

    spawn_workers(&tracker, &stop, &triggers, &context_rx);
    let mut scheduler = start_scheduler(&app.config, &triggers).await?;
    // Work that is due now should not wait for the first tick.
    triggers.token_sweep.notify_one();
    notify(&[NotifyState::Ready]);
    tracing::info!("atlassync running");

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = sighup.recv() => {
                notify(&[NotifyState::Reloading]);
                match reload(&context_tx, &config_path, config_given) {
                    Ok(config) => {
                        // In-flight runs finish with the old settings; new runs use the new.
                        let _ = scheduler.shutdown().await;
                        scheduler = start_scheduler(&config, &triggers).await?;
                        let app = context_rx.borrow().app.clone();
                        match HttpServer::start(app, &listener, &stop) {
                            Ok(next) => std::mem::replace(&mut server, next).retire(&tracker),
                            Err(e) => tracing::error!(error = %e, "the HTTP server keeps the previous configuration"),
                        }
                        tracing::info!("configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "configuration reload refused; keeping the running configuration"),
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }

    notify(&[NotifyState::Stopping]);
    stop.cancel();
    let _ = scheduler.shutdown().await;
    tracker.close();
    if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight work did not finish within {}s",
            DRAIN_GRACE.as_secs()
        );
    }
    match tokio::time::timeout(Duration::from_secs(3), server.task).await {
        Ok(joined) => joined.context("HTTP server task")?.context("HTTP server")?,
        Err(_) => tracing::warn!("HTTP server did not drain in time"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP server of one configuration generation, over a duplicate of the listening socket.
struct HttpServer {
    /// Cancelled when a reload replaces this generation, or at shutdown (a child of `stop`).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    fn start(
        app: App,
        listener: &std::net::TcpListener,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpListener::from_std(listener.try_clone()?)
            .context("sharing the http.listen socket")?;
        let own = stop.child_token();
        let task = tokio::spawn(crate::http::serve(app, socket, {
            let own = own.clone();
            async move { own.cancelled().await }
        }));
        Ok(Self { stop: own, task })
    }

    /// Stops accepting (the next generation does); requests in flight finish, tracked so
    /// that shutdown waits for them.
    fn retire(self, tracker: &TaskTracker) {
        self.stop.cancel();
        tracker.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        });
    }
}

/// Loads and validates the configuration again and, if it is sound, publishes a new context.
/// Database and listen address changes need a restart; everything else applies.
fn reload(
    context_tx: &watch::Sender<RunContext>,
    path: &std::path::Path,
    given: bool,
) -> anyhow::Result<Config> {
    let config = Config::load(path, given)?;
    let current = context_tx.borrow().clone();
    if config.http.listen != current.app.config.http.listen {
        tracing::warn!("http.listen changed; it takes effect at the next restart");
    }
    let app = App::new(
        config.clone(),
        current.app.pool.clone(),
        current.app.clock.clone(),
    );
    let refresher = Refresher::new(app.clone(), current.refresher.holder().to_owned());
    // Rate-limit slowdowns outlive a reload.
    let syncer = Syncer {
        app: app.clone(),
        refresher: refresher.clone(),
        throttles: current.syncer.throttles.clone(),
    };
    context_tx.send_replace(RunContext {
        app,
        refresher,
        syncer,
    });
    Ok(config)
}

fn spawn_workers(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    triggers: &Arc<Triggers>,
    context: &watch::Receiver<RunContext>,
) {
    let kinds: [(&'static str, TriggerOf); 5] = [
        ("token_sweep", |t| &t.token_sweep),
        ("revalidate", |t| &t.revalidate),
        ("jira_sync", |t| &t.jira_sync),
        ("jira_reconcile", |t| &t.jira_reconcile),
        ("confluence_sync", |t| &t.confluence_sync),
    ];
    for (name, pick) in kinds {
        let (stop, triggers, context) = (stop.clone(), triggers.clone(), context.clone());
        tracker.spawn(async move {
            while wait(pick(&triggers), &stop).await {
                let run = context.borrow().clone();
                // A bug in one run must not end the job for the life of the process: a dead
                // token sweep would let grants expire in silence.
                match AssertUnwindSafe(run_job(name, &run, &stop)).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(job = name, error = %e, "job failed; retrying at the next tick");
                    }
                    Err(_) => tracing::error!(job = name, "job panicked; retrying at the next tick"),
                }
            }
        });
    }
}

/// One run of the job called `name`.
async fn run_job(
    name: &str,
    run: &RunContext,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let RunContext {
        app,
        refresher,
        syncer,
    } = run;
    let schedule = &app.config.schedule;
    let now = app.clock.now();
    match name {
        "token_sweep" => jobs::token_sweep::run_once(app, refresher, stop)
            .await
            .map(drop),
        "revalidate" => {
            let tick = schedule.revalidate.latest_tick(now);
            jobs::revalidate::run_once(app, refresher, tick, stop)
                .await
                .map(drop)
        }
        "jira_sync" => {
            let tick = schedule.jira_sync.latest_tick(now);
            syncer
                .run_once(RunKind::JiraIncremental, tick, stop)
                .await
                .map(drop)
        }
        "jira_reconcile" => {
            let tick = schedule.jira_reconcile.latest_tick(now);
            syncer
                .run_once(RunKind::JiraReconcile, tick, stop)
                .await
                .map(drop)
        }
        "confluence_sync" => {
            let tick = schedule.confluence_sync.latest_tick(now);
            syncer
                .run_once(RunKind::ConfluenceSpaces, tick, stop)
                .await
                .map(drop)
        }
        other => unreachable!("unknown job {other}"),
    }
}

/// Waits for a trigger; false once shutdown began.
async fn wait(trigger: &Notify, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = trigger.notified() => !stop.is_cancelled(),
        _ = stop.cancelled() => false,
    }
}

/// Picks one job kind's trigger.
type TriggerOf = fn(&Triggers) -> &Notify;

async fn start_scheduler(
    config: &Config,
    triggers: &Arc<Triggers>,
) -> anyhow::Result<JobScheduler> {
    let scheduler = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    let jobs: [(&Schedule, TriggerOf); 5] = [
        (&config.schedule.token_sweep, |t| &t.token_sweep),
        (&config.schedule.revalidate, |t| &t.revalidate),
        (&config.schedule.jira_sync, |t| &t.jira_sync),
        (&config.schedule.jira_reconcile, |t| &t.jira_reconcile),
        (&config.schedule.confluence_sync, |t| &t.confluence_sync),
    ];
    for (schedule, pick) in jobs {
        let triggers = triggers.clone();
        let job = Job::new_async(schedule.as_six_fields(), move |_, _| {
            let triggers = triggers.clone();
            Box::pin(async move { pick(&triggers).notify_one() })
        })
        .with_context(|| format!("scheduling {schedule:?}"))?;
        scheduler.add(job).await?;
    }
    // The watchdog is fed from the scheduler's own ticks: if the scheduler stalls, systemd
    // restarts the service.
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = (interval.as_secs() / 2).clamp(1, 59);
        let job = Job::new_async(format!("*/{every} * * * * *").as_str(), |_, _| {
            Box::pin(async { notify(&[NotifyState::Watchdog]) })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await.context("starting the scheduler")?;
    Ok(scheduler)
}

/// Tells systemd, when it is listening (`NOTIFY_SOCKET`); a no-op otherwise.
fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
