//! The long-running process: the HTTP server, graceful shutdown on SIGTERM/SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Runs until SIGTERM or SIGINT.
pub async fn run(app: App, _config_path: PathBuf, _config_given: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(app.config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen {}", app.config.http.listen))?;
    tracing::info!(http.listen = %app.config.http.listen, "serving");
    let server = tokio::spawn(crate::http::serve(app.clone(), listener, {
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    }));

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    match tokio::time::timeout(std::time::Duration::from_secs(25), server).await {
        Ok(joined) => joined.context("HTTP server task")?.context("HTTP server")?,
        Err(_) => tracing::warn!("HTTP server did not drain within 25s"),
    }
    Ok(())
}
