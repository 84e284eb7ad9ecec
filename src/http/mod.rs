//! The HTTP server: health and readiness, metrics, the consent flow (invite links and the
//! OAuth callback), and the operator's `/admin` page.

mod admin;
mod auth;
mod connect;
mod metrics;
pub mod pages;

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::app::App;
pub use connect::STATE_COOKIE;

/// The router, with the callback at the path of `atlassian.redirect_uri`.
pub fn router(app: App) -> Router {
    let callback_path = match app.config.atlassian.redirect_uri.path() {
        "" | "/" => "/callback".to_owned(),
        path => path.to_owned(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route(
            &format!("/{}", crate::invite::CONNECT_PATH),
            get(connect::start),
        )
        .route(&callback_path, get(connect::finish))
        .merge(admin::routes())
        .with_state(app)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Liveness: the process serves. Whether it can work (the database, migrations, the
/// scheduler) is `/readyz`'s question; a supervisor that restarted a live process during a
/// database outage would only add a restart to the outage.
async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}
