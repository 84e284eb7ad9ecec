//! The HTTP server of one configuration generation, over a duplicate of the listening socket.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// How long requests in flight get to finish when a generation is retired or at shutdown.
const REQUEST_GRACE: Duration = Duration::from_secs(3);

/// A running server generation.
pub(super) struct HttpServer {
    /// Cancelled when a reload replaces this generation, or at shutdown (a child of `stop`).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Serves `app` on a duplicate of `listener` until `stop` (or a retirement).
    pub(super) fn start(
        app: App,
        listener: &std::net::TcpListener,
        stop: &CancellationToken,
    ) -> std::io::Result<Self> {
        let socket = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let own = stop.child_token();
        let task = tokio::spawn(crate::http::serve(app, socket, {
            let own = own.clone();
            async move { own.cancelled().await }
        }));
        Ok(Self { stop: own, task })
    }

    /// Stops accepting (the next generation does); requests in flight finish, tracked so
    /// that shutdown waits for them.
    pub(super) fn retire(self, tracker: &TaskTracker) {
        self.stop.cancel();
        tracker.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_GRACE, self.task).await;
        });
    }

    /// Waits for the server to finish after shutdown began.
    pub(super) async fn finish(self) -> std::io::Result<()> {
        match tokio::time::timeout(REQUEST_GRACE, self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("HTTP server did not drain in time");
                Ok(())
            }
        }
    }
}
