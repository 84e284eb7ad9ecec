//! The daemon as a component: built from an [`App`] (validated configuration, pool, clock),
//! then run until a shutdown future completes. Inside: the HTTP server, the scheduler
//! (tokio-cron-scheduler, UTC cron jobs that only *trigger* workers) and one worker loop per
//! [`JobKind`].
//!
//! Operating-system wiring stays outside: the binary turns SIGTERM into the shutdown future,
//! SIGHUP into a new [`Config`] sent on the reload channel, and [`DaemonEvent`]s into
//! systemd notifications. Tests drive the same component in-process.
//!
//! Safe state: on shutdown, workers stop taking new items and finish the one in hand; a
//! token exchange is never cancelled midway (its rotated token must be persisted), and the
//! drain waits up to [`drain_grace`] for that.

mod aligned_clock;
mod scheduler;
mod server;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::jobs::sync::Syncer;
use crate::lifecycle::Refresher;
pub use aligned_clock::DatabaseAlignedClock;
use server::HttpServer;
use workers::{RunContext, Triggers};

/// How long in-flight work may take to finish after shutdown begins: the longest token
/// exchange (a recovery waits twice the request timeout, then a pool wait for its persist)
/// plus a margin. An exchange cut short here would lose its rotated token. With the default
/// 15 s request timeout this is 43 s; `atlassian.request_timeout` is capped at 30 s so that
/// the grace (at most 73 s) stays inside systemd's `TimeoutStopSec` (80 s in the unit).
pub fn drain_grace(config: &Config) -> Duration {
    config.atlassian.request_timeout * 2 + crate::store::ACQUIRE_TIMEOUT + Duration::from_secs(3)
}

/// What the daemon tells its supervisor; the binary maps these to systemd notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// Serving and scheduling (after start-up, and after each reload).
    Ready,
    /// A new configuration is being applied.
    Reloading,
    /// Shutdown began: draining.
    Stopping,
    /// The scheduler ticked (fed to the watchdog: a stalled scheduler stops these).
    Heartbeat,
}

/// Receives [`DaemonEvent`]s.
pub type Notifier = Arc<dyn Fn(DaemonEvent) + Send + Sync>;

/// Why the daemon could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `http.listen` could not be bound.
    #[error("cannot listen on http.listen {address}: {source}")]
    Listen {
        /// The configured address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The scheduler could not be started or given a job.
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// A name unique to this process, carried by its leases.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}:{}:{suffix}", std::process::id())
}

/// The daemon, built and bound, not yet running.
pub struct Daemon {
    context: RunContext,
    /// Bound at build time, so that a port in use fails before anything runs; it outlives
    /// configuration generations (a reload serves the new one over a duplicate of it).
    listener: std::net::TcpListener,
    notifier: Notifier,
    heartbeat: Option<Duration>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("listen", &self.listener.local_addr().ok())
            .field("worker", &self.context.refresher.holder())
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Builds the daemon over `app` and binds `http.listen`.
    pub fn build(app: App) -> Result<Self, DaemonError> {
        let address = app.config.http.listen;
        let listener = std::net::TcpListener::bind(address)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| DaemonError::Listen { address, source })?;
        let refresher = Refresher::new(app.clone(), worker_id());
        let syncer = Syncer::new(app.clone(), refresher.clone());
        let deliverer = Deliverer::new(app.clone(), refresher.clone());
        Ok(Self {
            context: RunContext {
                app,
                refresher,
                syncer,
                deliverer,
            },
            listener,
            notifier: Arc::new(|_| {}),
            heartbeat: None,
        })
    }

    /// Sends lifecycle events to `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Emits [`DaemonEvent::Heartbeat`] from the scheduler about every `every`.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// The address the HTTP server listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `shutdown` completes, then drains: in-flight work reaches a safe state
    /// (no token exchange is abandoned) within [`drain_grace`]. Each configuration received
    /// on `reloads` replaces the running one; runs in flight finish with the old one.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::Receiver<Config>,
    ) -> Result<(), DaemonError> {
        let Self {
            context,
            listener,
            notifier,
            heartbeat,
        } = self;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let first_config = context.app.config.clone();
        let telemetry = context.app.telemetry.clone();
        let (context_tx, context_rx) = watch::channel(context);
        let triggers = Arc::new(Triggers::default());

        tracing::info!(http.listen = %first_config.http.listen, "serving the consent flow and health");
        let mut server = HttpServer::start(context_rx.borrow().app.clone(), &listener, &stop)?;
        workers::spawn(&tracker, &stop, &triggers, &context_rx);
        let mut scheduler =
            scheduler::start(&first_config, &triggers, heartbeat, &notifier, &telemetry).await?;
        // Work that is due now should not wait for the first tick.
        triggers.wake(crate::domain::JobKind::TokenSweep);
        notifier(DaemonEvent::Ready);
        tracing::info!("atlassync running");

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(config) = reloads.recv() => {
                    notifier(DaemonEvent::Reloading);
                    apply(&context_tx, config.clone());
                    // The old scheduler's jobs only trigger; stopping it loses nothing.
                    if let Err(e) = scheduler.shutdown().await {
                        tracing::warn!(error = %e, "stopping the previous scheduler");
                    }
                    scheduler = scheduler::start(&config, &triggers, heartbeat, &notifier, &telemetry).await?;
                    let app = context_rx.borrow().app.clone();
                    match HttpServer::start(app, &listener, &stop) {
                        Ok(next) => std::mem::replace(&mut server, next).retire(&tracker),
                        Err(e) => tracing::error!(error = %e, "the HTTP server keeps the previous configuration"),
                    }
                    tracing::info!("configuration reloaded");
                    notifier(DaemonEvent::Ready);
                }
            }
        }

        notifier(DaemonEvent::Stopping);
        stop.cancel();
        if let Err(e) = scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler");
        }
        tracker.close();
        let grace = drain_grace(&context_rx.borrow().app.config);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("in-flight work did not finish within {}s", grace.as_secs());
        }
        server.finish().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Publishes a context built from `config`. Database and listen address changes need a
/// restart; everything else applies to the next run of each job.
fn apply(context_tx: &watch::Sender<RunContext>, config: Config) {
    let current = context_tx.borrow().clone();
    if config.http.listen != current.app.config.http.listen {
        tracing::warn!("http.listen changed; it takes effect at the next restart");
    }
    let app = current.app.reconfigured(config);
    let refresher = Refresher::new(app.clone(), current.refresher.holder().to_owned());
    // Rate-limit slowdowns outlive a reload.
    let syncer = Syncer {
        app: app.clone(),
        refresher: refresher.clone(),
        throttles: current.syncer.throttles.clone(),
    };
    let deliverer = Deliverer::new(app.clone(), refresher.clone());
    context_tx.send_replace(RunContext {
        app,
        refresher,
        syncer,
        deliverer,
    });
}
