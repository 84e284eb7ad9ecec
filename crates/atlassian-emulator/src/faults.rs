//! Fault injection and the request log.
//!
//! Every request outside `/_emulator/` passes [`inject_and_log`]: it takes the first queued
//! [`Fault`] whose path prefix matches (or rolls the configured [`ErrorRate`]), answers with the
//! fault instead of (or around) the real handler, and records a [`LoggedRequest`]. Tests read the
//! log to prove, for example, that no request came before a `Retry-After` elapsed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Product;
use super::listener::ConnTag;
use super::rate_limit::{next_hour, seconds_until, too_many_requests};
use super::server::Shared;
use super::state::shifted;
use atlassync_clock::{Clock as _, SystemClock};

/// Most entries the request log keeps (oldest dropped first).
const LOG_CAPACITY: usize = 100_000;

/// Bytes of a real body kept by [`FaultKind::MalformedJson`] (at most half of it).
const MALFORMED_KEEP: usize = 64;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// `500` with a Jira error body.
    InternalError,
    /// `502` with the gateway's HTML page.
    BadGateway,
    /// `503`, with `Retry-After` when given.
    ServiceUnavailable {
        /// Seconds for `Retry-After`.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// `429` burst limit (`RateLimit-Reason: jira-burst-based`) with `Retry-After`.
    BurstRateLimited {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// `429` quota (`RateLimit-Reason: jira-quota-global-based`), `Retry-After` = seconds to the
    /// top of the next UTC hour.
    QuotaExhausted,
    /// `401 {"code":401,"message":"Unauthorized"}`, as for an expired token.
    TokenExpired,
    /// The connection is dropped (reset) without any response.
    ConnectionReset,
    /// The real answer, `millis` later: the request waits before it is handled (a client
    /// that gives up first leaves it unhandled).
    Latency {
        /// Added delay in milliseconds.
        millis: u64,
    },
    /// The request is handled at once (a refresh token rotates) and the answer is sent
    /// `millis` later, whether or not the client still waits for it: what a slow network
    /// or gateway does to a response.
    SlowAnswer {
        /// Delay of the answer in milliseconds.
        millis: u64,
    },
    /// The request is handled (a refresh token rotates), then the connection is dropped
    /// without an answer: a response lost after the work was done.
    LostResponse,
    /// The real status and headers with the JSON body cut short.
    MalformedJson,
    /// `search/jql` answers with the `nextPageToken` it was sent (the JRACLOUD-94632 loop).
    /// Other endpoints answer normally.
    RepeatedPageToken,
    /// `search/jql` leaves `isLast` out (observed). Other endpoints answer normally.
    MissingIsLast,
    /// `search/jql` ignores `maxResults` and returns up to 10,000 issues (the 2025 regression).
    /// Other endpoints answer normally.
    IgnoredMaxResults,
    /// `400` with a `text/plain` body that repeats the request body, as a misconfigured proxy
    /// or WAF in front of the service may: whatever the client sent (a token) comes back.
    ReflectedRequest,
}

impl FaultKind {
    /// The `kind` name (as in the JSON form).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::InternalError => "internal_error",
            FaultKind::BadGateway => "bad_gateway",
            FaultKind::ServiceUnavailable { .. } => "service_unavailable",
            FaultKind::BurstRateLimited { .. } => "burst_rate_limited",
            FaultKind::QuotaExhausted => "quota_exhausted",
            FaultKind::TokenExpired => "token_expired",
            FaultKind::ConnectionReset => "connection_reset",
            FaultKind::Latency { .. } => "latency",
            FaultKind::SlowAnswer { .. } => "slow_answer",
            FaultKind::LostResponse => "lost_response",
            FaultKind::MalformedJson => "malformed_json",
            FaultKind::RepeatedPageToken => "repeated_page_token",
            FaultKind::MissingIsLast => "missing_is_last",
            FaultKind::IgnoredMaxResults => "ignored_max_results",
            FaultKind::ReflectedRequest => "reflected_request",
        }
    }

    /// Whether the fault changes how `search/jql` answers rather than replacing the answer.
    fn is_search_quirk(&self) -> bool {
        matches!(
            self,
            FaultKind::RepeatedPageToken | FaultKind::MissingIsLast | FaultKind::IgnoredMaxResults
        )
    }
}

/// A fault for the next `times` requests whose path starts with `path_prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Matched against the request path (e.g. `/ex/jira/`, `/oauth/token`); empty matches all.
    #[serde(default)]
    pub path_prefix: String,
    /// How many matching requests it applies to (default 1).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// `kind` for the next request under `path_prefix`.
    pub fn new(kind: FaultKind, path_prefix: impl Into<String>) -> Self {
        Self {
            kind,
            path_prefix: path_prefix.into(),
            times: 1,
        }
    }

    /// Applies to the next `times` matching requests instead.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }
}

/// Random faults: each request under `path_prefix` fails with `probability`, with a kind
/// chosen uniformly from `kinds` (queued faults take precedence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRate {
    /// Between 0 and 1.
    pub probability: f64,
    /// Matched against the request path; empty matches all.
    #[serde(default)]
    pub path_prefix: String,
    /// Faults to choose from (default: `503` with `Retry-After: 1`).
    #[serde(default)]
    pub kinds: Vec<FaultKind>,
}

/// A search quirk for the handler of this request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchQuirk(pub(crate) FaultKind);

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Arrival on the emulator clock.
    pub at: DateTime<Utc>,
    /// Arrival on the wall clock (for real-time `Retry-After` checks).
    pub wall_at: DateTime<Utc>,
    /// Status answered; `None` when the connection was reset.
    pub status: Option<u16>,
    /// The injected fault's kind name, if any.
    pub fault: Option<String>,
}

/// Queued faults and the error rate.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    queue: Vec<Fault>,
    error_rate: Option<ErrorRate>,
}

impl FaultBook {
    pub(crate) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.queue.push(fault);
        }
    }

    pub(crate) fn set_error_rate(&mut self, rate: Option<ErrorRate>) {
        self.error_rate = rate.filter(|r| r.probability > 0.0);
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.error_rate = None;
    }

    /// The fault for a request to `path`, consuming one use of a queued fault.
    fn take(&mut self, path: &str) -> Option<FaultKind> {
        if let Some(index) = self
            .queue
            .iter()
            .position(|f| path.starts_with(&f.path_prefix))
        {
            let fault = &mut self.queue[index];
            let kind = fault.kind.clone();
            fault.times -= 1;
            if fault.times == 0 {
                self.queue.remove(index);
            }
            return Some(kind);
        }
        let rate = self.error_rate.as_ref()?;
        if !path.starts_with(&rate.path_prefix)
            || !rand::rng().random_bool(rate.probability.clamp(0.0, 1.0))
        {
            return None;
        }
        if rate.kinds.is_empty() {
            return Some(FaultKind::ServiceUnavailable {
                retry_after_secs: Some(1),
            });
        }
        let index = rand::rng().random_range(0..rate.kinds.len());
        rate.kinds.get(index).cloned()
    }
}

/// The request log (bounded).
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
}

impl RequestLog {
    fn record(&mut self, entry: LoggedRequest) {
        if self.entries.len() >= LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

fn product_of(path: &str) -> Product {
    if path.starts_with("/ex/confluence/") {
        Product::Confluence
    } else {
        Product::Jira
    }
}

fn json_error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The canned answer of a fault that replaces the handler.
fn canned(kind: &FaultKind, path: &str, shared: &Shared, now: DateTime<Utc>) -> Response {
    let product = product_of(path);
    match kind {
        FaultKind::InternalError => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errorMessages": ["Internal server error"], "errors": {}}),
        ),
        FaultKind::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
        )
            .into_response(),
        FaultKind::ServiceUnavailable { retry_after_secs } => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": 503, "message": "Service Unavailable"}),
            );
            if let Some(secs) = retry_after_secs
                && let Ok(value) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        FaultKind::BurstRateLimited { retry_after_secs } => {
            let rate = shared.with_limits(|l| l.burst_rate()).unwrap_or(100);
            let secs = i64::try_from(*retry_after_secs).unwrap_or(i64::MAX);
            too_many_requests(
                product,
                "burst-based",
                u64::from(rate),
                secs,
                shifted(now, TimeDelta::seconds(secs.min(365 * 24 * 3600))),
            )
        }
        FaultKind::QuotaExhausted => {
            let limit = shared.with_limits(|l| l.quota(product)).unwrap_or(65_000);
            let resets_at = next_hour(now);
            too_many_requests(
                product,
                "quota-global-based",
                limit,
                seconds_until(resets_at, now),
                resets_at,
            )
        }
        FaultKind::TokenExpired => json_error(
            StatusCode::UNAUTHORIZED,
            json!({"code": 401, "message": "Unauthorized"}),
        ),
        // Handled by the caller; a placeholder that is never written.
        FaultKind::ConnectionReset
        | FaultKind::Latency { .. }
        | FaultKind::SlowAnswer { .. }
        | FaultKind::LostResponse
        | FaultKind::MalformedJson
        | FaultKind::RepeatedPageToken
        | FaultKind::MissingIsLast
        | FaultKind::IgnoredMaxResults
        | FaultKind::ReflectedRequest => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Cuts a real body short so it no longer parses as JSON.
async fn truncate_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let keep = (bytes.len() / 2).min(MALFORMED_KEEP);
    let mut cut = bytes.slice(..keep).to_vec();
    if cut.is_empty() {
        cut.extend_from_slice(b"{\"");
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(cut))
}

/// Middleware: injects faults and records the request log.
pub(crate) async fn inject_and_log(
    AxumState(shared): AxumState<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = shared.now();
    let path = request.uri().path().to_owned();
    let mut entry = LoggedRequest {
        method: request.method().to_string(),
        path: path.clone(),
        query: request.uri().query().map(str::to_owned),
        at: now,
        wall_at: SystemClock.now(),
        status: None,
        fault: None,
    };
    let fault = shared.with_faults(|faults| faults.take(&path));
    entry.fault = fault.as_ref().map(|f| f.name().to_owned());
    let response = match fault {
        None => next.run(request).await,
        Some(FaultKind::Latency { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(request).await
        }
        Some(FaultKind::SlowAnswer { millis }) => {
            // Handled first (the work is done), answered later: a client that stops waiting
            // during the delay has lost an answer whose work happened.
            let response = next.run(request).await;
            tokio::time::sleep(Duration::from_millis(millis)).await;
            response
        }
        Some(FaultKind::LostResponse) => {
            let connection = request.extensions().get::<ConnectInfo<ConnTag>>().cloned();
            let _handled = next.run(request).await;
            match connection {
                Some(ConnectInfo(connection)) => connection.reset(),
                None => tracing::warn!("emulator: cannot drop a connection without its tag"),
            }
            shared.with_log(|log| log.record(entry));
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(FaultKind::MalformedJson) => truncate_body(next.run(request).await).await,
        Some(FaultKind::ReflectedRequest) => {
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let mut response = (StatusCode::BAD_REQUEST, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Some(quirk) if quirk.is_search_quirk() => {
            request.extensions_mut().insert(SearchQuirk(quirk));
            next.run(request).await
        }
        Some(FaultKind::ConnectionReset) => {
            match request.extensions().get::<ConnectInfo<ConnTag>>() {
                Some(ConnectInfo(connection)) => connection.reset(),
                None => tracing::warn!("emulator: cannot reset a connection without its tag"),
            }
            shared.with_log(|log| log.record(entry));
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(kind) => canned(&kind, &path, &shared, now),
    };
    entry.status = Some(response.status().as_u16());
    shared.with_log(|log| log.record(entry));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_match_by_prefix_and_run_out() {
        let mut book = FaultBook::default();
        book.push(Fault::new(FaultKind::InternalError, "/ex/jira/").times(2));
        book.push(Fault::new(FaultKind::TokenExpired, ""));
        assert_eq!(book.take("/ex/confluence/x"), Some(FaultKind::TokenExpired));
        assert_eq!(book.take("/ex/jira/x"), Some(FaultKind::InternalError));
        assert_eq!(book.take("/ex/jira/x"), Some(FaultKind::InternalError));
        assert_eq!(book.take("/ex/jira/x"), None);
    }

    #[test]
    fn error_rate_of_one_always_fails_and_zero_never() {
        let mut book = FaultBook::default();
        book.set_error_rate(Some(ErrorRate {
            probability: 1.0,
            path_prefix: "/ex/".into(),
            kinds: vec![FaultKind::BadGateway],
        }));
        assert_eq!(book.take("/ex/jira/x"), Some(FaultKind::BadGateway));
        assert_eq!(book.take("/me"), None);
        book.set_error_rate(Some(ErrorRate {
            probability: 0.0,
            path_prefix: String::new(),
            kinds: Vec::new(),
        }));
        assert_eq!(book.take("/ex/jira/x"), None);
    }

    #[test]
    fn faults_have_a_json_form() {
        let fault: Fault = serde_json::from_str(
            r#"{"kind":"service_unavailable","retry_after_secs":5,"path_prefix":"/ex/jira/","times":2}"#,
        )
        .expect("parses");
        assert_eq!(
            fault,
            Fault::new(
                FaultKind::ServiceUnavailable {
                    retry_after_secs: Some(5)
                },
                "/ex/jira/"
            )
            .times(2)
        );
        let fault: Fault = serde_json::from_str(r#"{"kind":"connection_reset"}"#).expect("parses");
        assert_eq!(fault.times, 1);
    }
}
