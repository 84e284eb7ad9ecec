//! Shared state, the router, and the listening task.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::middleware;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::faults::{self, FaultBook, RequestLog};
use super::jira::JiraPolicy;
use super::listener::{ConnTag, ResettableListener};
use super::page_token::PageKey;
use super::products::Products;
use super::rate_limit::RateLimiter;
use super::state::{Policy, State};
use super::{
    EmulatorConfig, EmulatorHandle, SearchPaging, ServerLifetime, control, gateway, oauth,
};
use atlassync_clock::Clock;

/// Everything a request handler needs. Cheap to share (`Arc`).
pub(crate) struct Shared {
    clock: Arc<dyn Clock>,
    /// The emulator's own offset on top of the injected clock.
    offset: Mutex<TimeDelta>,
    state: Mutex<State>,
    /// Jira and Confluence data. Never locked together with `state`.
    products: Mutex<Products>,
    limits: Mutex<RateLimiter>,
    faults: Mutex<FaultBook>,
    log: Mutex<RequestLog>,
    /// Seals page tokens and cursors.
    page_key: PageKey,
    jira_policy: JiraPolicy,
    /// Sparse and empty `search/jql` pages.
    search_paging: Mutex<SearchPaging>,
    /// Root URL of this server, used to build gateway `self` links.
    base_url: Url,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Injected clock plus own offset.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let offset = *self.offset.lock().unwrap_or_else(|p| p.into_inner());
        self.clock
            .now()
            .checked_add_signed(offset)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub(crate) fn advance_clock(&self, by: TimeDelta) {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset = offset.checked_add(&by).unwrap_or(*offset);
    }

    /// Runs `f` with the state locked. `f` must not block or await.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Runs `f` with the product data locked. `f` must not block or await.
    pub(crate) fn with_products<R>(&self, f: impl FnOnce(&mut Products) -> R) -> R {
        let mut products = self.products.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut products)
    }

    /// Runs `f` with the rate limiter locked.
    pub(crate) fn with_limits<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut limits)
    }

    /// Runs `f` with the fault book locked.
    pub(crate) fn with_faults<R>(&self, f: impl FnOnce(&mut FaultBook) -> R) -> R {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut faults)
    }

    /// Runs `f` with the request log locked.
    pub(crate) fn with_log<R>(&self, f: impl FnOnce(&mut RequestLog) -> R) -> R {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut log)
    }

    pub(crate) fn page_key(&self) -> &PageKey {
        &self.page_key
    }

    pub(crate) fn jira_policy(&self) -> &JiraPolicy {
        &self.jira_policy
    }

    pub(crate) fn search_paging(&self) -> SearchPaging {
        *self.search_paging.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_search_paging(&self, paging: SearchPaging) {
        *self.search_paging.lock().unwrap_or_else(|p| p.into_inner()) = paging;
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base_url
    }
}

/// All routes on one router: auth host and API gateway (behind fault injection and the request
/// log), and the control API (outside them).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(oauth::routes())
        .merge(gateway::routes(shared.clone()))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults::inject_and_log,
        ))
        .nest("/_emulator", control::routes())
        .with_state(shared)
}

/// Binds, spawns the server, and returns the handle plus the server task.
pub(crate) async fn start(
    config: EmulatorConfig,
    clock: Arc<dyn Clock>,
    listen: SocketAddr,
) -> std::io::Result<(EmulatorHandle, JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let base_url = base_url_for(local)?;
    let shared = Arc::new(Shared {
        clock,
        offset: Mutex::new(TimeDelta::zero()),
        state: Mutex::new(State::new(Policy::from_config(&config))),
        products: Mutex::new(Products::default()),
        limits: Mutex::new(RateLimiter::new(
            config.quota_points_per_hour,
            config.burst_requests_per_second,
            config.burst_clock,
        )),
        faults: Mutex::new(FaultBook::default()),
        log: Mutex::new(RequestLog::default()),
        page_key: PageKey::random(),
        jira_policy: JiraPolicy::from_config(&config),
        search_paging: Mutex::new(SearchPaging::default()),
        base_url: base_url.clone(),
    });
    let cancel = CancellationToken::new();
    let stopped = cancel.clone();
    let app = router(shared.clone()).into_make_service_with_connect_info::<ConnTag>();
    let listener = ResettableListener::new(listener);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    tracing::debug!(base_url = %base_url, "emulator started");
    let handle = EmulatorHandle {
        shared,
        base_url,
        lifetime: Arc::new(ServerLifetime { cancel }),
    };
    Ok((handle, task))
}

/// `http://ADDR:PORT/`, with a wildcard bind address replaced by loopback.
fn base_url_for(local: SocketAddr) -> std::io::Result<Url> {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/", SocketAddr::new(ip, local.port()));
    Url::parse(&url).map_err(|e| std::io::Error::other(format!("base url {url}: {e}")))
}
