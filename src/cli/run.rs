//! `atlassync run`: the operating-system wiring around [`Daemon`]. Signals become the shutdown
//! future (SIGTERM, SIGINT) and reloads (SIGHUP); daemon events become systemd notifications.

use std::path::PathBuf;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::Config;
use crate::daemon::{Daemon, DaemonEvent};

/// The process's signals, installed before anything slow (connecting, migrating) so that a
/// SIGHUP or SIGTERM during start-up never takes the default action.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// Runs the daemon over `app` until SIGTERM or SIGINT; SIGHUP reloads the configuration from
/// `config_path` (a configuration that fails validation is refused and the running one kept).
pub async fn run(
    app: App,
    signals: Signals,
    config_path: PathBuf,
    config_given: bool,
) -> anyhow::Result<()> {
    let Signals {
        mut terminate,
        mut interrupt,
        mut hangup,
    } = signals;
    let mut daemon = Daemon::build(app)?.with_notifier(std::sync::Arc::new(|event| {
        notify(match event {
            DaemonEvent::Ready => NotifyState::Ready,
            DaemonEvent::Reloading => NotifyState::Reloading,
            DaemonEvent::Stopping => NotifyState::Stopping,
            DaemonEvent::Heartbeat => NotifyState::Watchdog,
        });
    }));
    if let Some(interval) = sd_notify::watchdog_enabled() {
        daemon = daemon.with_heartbeat(interval / 2);
    }

    let (reload_tx, reload_rx) = mpsc::channel(1);
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = hangup.recv() => match Config::load(&config_path, config_given) {
                    Ok(config) => {
                        if reload_tx.send(config).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // Told to systemd as a reload that ended where it began.
                        notify(NotifyState::Reloading);
                        tracing::error!(error = %e, "configuration reload refused; keeping the running configuration");
                        notify(NotifyState::Ready);
                    }
                },
            }
        }
    };
    Box::pin(daemon.run(shutdown, reload_rx)).await?;
    Ok(())
}

/// Tells systemd, when it is listening (`NOTIFY_SOCKET`); a no-op otherwise.
fn notify(state: NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(&[state])
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
