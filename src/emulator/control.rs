//! The `/_emulator/` JSON control API: the [`EmulatorHandle`](super::EmulatorHandle) methods
//! over HTTP, for the standalone `atlassync emulator` process.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::TimeDelta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::server::Shared;
use super::state::ControlError;
use super::{ConsentDecision, NewUser, Product};

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
enum ControlApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Rejected(#[from] ControlError),
}

impl IntoResponse for ControlApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlApiError::BadRequest(_)
            | ControlApiError::Rejected(ControlError::BadTimeZone(_)) => StatusCode::BAD_REQUEST,
            ControlApiError::Rejected(
                ControlError::UnknownAccount(_)
                | ControlError::UnknownSite(_)
                | ControlError::NoGrant(_),
            ) => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

type ControlResult = Result<Response, ControlApiError>;

/// Parses a JSON body into `T`, answering 400 with serde's message otherwise.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ControlApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlApiError::BadRequest(format!("invalid body: {e}")))
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance_clock))
        .route("/sites", post(add_site))
        .route("/users", post(add_user))
        .route("/consent-queue", post(queue_consent))
        .route("/users/{account_id}/revoke-app", post(revoke_app))
        .route("/users/{account_id}/change-password", post(change_password))
        .route("/grants/{account_id}/revoke-site", post(revoke_site))
        .route("/grants/{account_id}/scopes", post(set_scopes))
        .route("/counters", get(counters))
}

fn clock_body(shared: &Shared) -> Json<serde_json::Value> {
    Json(json!({ "now": shared.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }))
}

/// `GET /_emulator/clock` → `{"now": RFC 3339}`.
async fn clock(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    clock_body(&shared).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

/// `POST /_emulator/clock/advance {"seconds": N}` (N ≥ 0, fractions allowed) → the new now.
async fn advance_clock(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let Advance { seconds } = parse(&body)?;
    let by = Some(seconds)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| TimeDelta::try_milliseconds((s * 1000.0).round() as i64))
        .ok_or_else(|| {
            ControlApiError::BadRequest("seconds must be a non-negative number".into())
        })?;
    shared.advance_clock(by);
    Ok(clock_body(&shared).into_response())
}

#[derive(Deserialize)]
struct NewSite {
    name: String,
    products: Vec<Product>,
}

/// `POST /_emulator/sites {"name","products":["jira","confluence"]}` → 201 `{"cloud_id"}`.
async fn add_site(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let site: NewSite = parse(&body)?;
    if site.name.trim().is_empty() {
        return Err(ControlApiError::BadRequest("name must not be empty".into()));
    }
    let cloud_id = shared.with_state(|s| s.add_site(&site.name, &site.products));
    Ok((StatusCode::CREATED, Json(json!({ "cloud_id": cloud_id }))).into_response())
}

/// `POST /_emulator/users {"name","email","zoneinfo","jira_time_zone","sites":[..]}` →
/// 201 `{"account_id"}`.
async fn add_user(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let user: NewUser = parse(&body)?;
    let account_id = shared.with_state(|s| s.add_user(user))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "account_id": account_id })),
    )
        .into_response())
}

/// `POST /_emulator/consent-queue {"decision":"accept","account_id":..,"sites":[..]?}` or
/// `{"decision":"deny"}` → 204.
async fn queue_consent(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let decision: ConsentDecision = parse(&body)?;
    shared.with_state(|s| {
        if let ConsentDecision::Accept { account_id, .. } = &decision
            && !s.has_user(account_id)
        {
            return Err(ControlError::UnknownAccount(account_id.clone()));
        }
        s.queue_consent(decision);
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /_emulator/users/{account_id}/revoke-app` → 204.
async fn revoke_app(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(account_id): Path<String>,
) -> ControlResult {
    let now = shared.now();
    shared.with_state(|s| s.revoke_app(&account_id, now))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /_emulator/users/{account_id}/change-password` → 204.
async fn change_password(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(account_id): Path<String>,
) -> ControlResult {
    let now = shared.now();
    shared.with_state(|s| s.change_password(&account_id, now))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct RevokeSite {
    cloud_id: String,
}

/// `POST /_emulator/grants/{account_id}/revoke-site {"cloud_id"}` → 204.
async fn revoke_site(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let RevokeSite { cloud_id } = parse(&body)?;
    shared.with_state(|s| s.revoke_site(&account_id, &cloud_id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct SetScopes {
    scopes: Vec<String>,
}

/// `POST /_emulator/grants/{account_id}/scopes {"scopes":[..]}` → 204.
async fn set_scopes(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let SetScopes { scopes } = parse(&body)?;
    shared.with_state(|s| s.set_scopes(&account_id, scopes))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /_emulator/counters` → [`Counters`](super::Counters).
async fn counters(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    Json(shared.with_state(|s| s.counters().clone())).into_response()
}
