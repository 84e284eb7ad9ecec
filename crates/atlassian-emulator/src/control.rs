//! The `/_emulator/` JSON control API: the [`EmulatorHandle`](super::EmulatorHandle) methods
//! over HTTP, for the standalone `atlassync emulator` process.
//!
//! Phase 2 adds, per site, `issues` and `spaces` (`GET` list, `PUT` upsert, `POST …/generate`,
//! `POST …/delete`, `GET issues/deleted`), and globally `faults` (`POST` one, `DELETE` all),
//! `faults/error-rate` (`PUT`), `requests` (`GET` the log, `DELETE` it), `quota` (`GET`, `PUT`)
//! and `burst` (`PUT`). Per site, `jsm/alerts` (`GET`) lists the JSM Operations alerts.
//! Later: per site `issues/move` (`POST`), `projects/{key}/visibility` (`PUT`) and `quota`
//! (`PUT`, the per-tenant quota), and globally `search-paging` (`PUT`).
//! Control calls are neither faulted nor logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::TimeDelta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::server::Shared;
use super::state::ControlError;
use super::{
    ConsentDecision, DataError, ErrorRate, Fault, IssueChange, NewUser, Product, SearchPaging,
    SpaceChange, admin,
};

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
enum ControlApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Rejected(#[from] ControlError),
    #[error(transparent)]
    Data(#[from] DataError),
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
            ControlApiError::Data(error) => match error {
                DataError::InvalidValue { .. } => StatusCode::BAD_REQUEST,
                DataError::DuplicateKey(_) => StatusCode::CONFLICT,
                DataError::UnknownSite(_)
                | DataError::ProductNotRunning { .. }
                | DataError::UnknownIssue(_)
                | DataError::UnknownProject(_)
                | DataError::UnknownSpace(_)
                | DataError::UnknownAccount(_) => StatusCode::NOT_FOUND,
            },
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
        .route("/grants/{account_id}/restore-site", post(restore_site))
        .route("/grants/{account_id}/scopes", post(set_scopes))
        .route("/counters", get(counters))
        .route(
            "/sites/{cloud_id}/issues",
            get(list_issues).put(upsert_issue),
        )
        .route("/sites/{cloud_id}/issues/generate", post(generate_issues))
        .route("/sites/{cloud_id}/issues/delete", post(delete_issues))
        .route("/sites/{cloud_id}/issues/move", post(move_issue))
        .route(
            "/sites/{cloud_id}/projects/{project_key}/visibility",
            put(set_project_visibility),
        )
        .route("/sites/{cloud_id}/quota", put(set_tenant_quota))
        .route("/search-paging", put(set_search_paging))
        .route("/sites/{cloud_id}/issues/deleted", get(deleted_issues))
        .route(
            "/sites/{cloud_id}/spaces",
            get(list_spaces).put(upsert_space),
        )
        .route("/sites/{cloud_id}/spaces/generate", post(generate_spaces))
        .route("/sites/{cloud_id}/spaces/delete", post(delete_spaces))
        .route("/sites/{cloud_id}/jsm/alerts", get(jsm_alerts))
        .route("/faults", post(inject_fault).delete(clear_faults))
        .route("/faults/error-rate", put(set_error_rate))
        .route("/requests", get(request_log).delete(clear_request_log))
        .route("/quota", get(quota).put(set_quota))
        .route("/burst", put(set_burst))
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

/// `POST /_emulator/grants/{account_id}/restore-site {"cloud_id"}` → 204.
async fn restore_site(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let RevokeSite { cloud_id } = parse(&body)?;
    shared.with_state(|s| s.restore_site(&account_id, &cloud_id))?;
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

#[derive(Deserialize)]
struct GenerateIssues {
    project_key: String,
    count: usize,
    #[serde(default)]
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /_emulator/sites/{cloud_id}/issues/generate {"project_key","count","updated_at"?}` →
/// 201 `{"ids"}`.
async fn generate_issues(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let GenerateIssues {
        project_key,
        count,
        updated_at,
    } = parse(&body)?;
    let ids = admin::create_issues(&shared, &cloud_id, &project_key, count, updated_at)?;
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response())
}

/// `GET /_emulator/sites/{cloud_id}/issues` → `[IssueSnapshot]`, ascending by id.
async fn list_issues(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
) -> ControlResult {
    Ok(Json(admin::issues(&shared, &cloud_id)?).into_response())
}

/// `PUT /_emulator/sites/{cloud_id}/issues` with an `IssueChange` → the `IssueSnapshot`.
async fn upsert_issue(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let change: IssueChange = parse(&body)?;
    Ok(Json(admin::upsert_issue(&shared, &cloud_id, &change)?).into_response())
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

/// `POST /_emulator/sites/{cloud_id}/issues/delete {"ids":[id or key]}` → `{"deleted": n}`.
async fn delete_issues(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let Ids { ids } = parse(&body)?;
    let deleted = admin::delete_issues(&shared, &cloud_id, &ids)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Deserialize)]
struct MoveIssue {
    issue: String,
    project_key: String,
}

/// `POST /_emulator/sites/{cloud_id}/issues/move {"issue": id or key, "project_key"}` → the
/// moved `IssueSnapshot`.
async fn move_issue(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let MoveIssue { issue, project_key } = parse(&body)?;
    Ok(Json(admin::move_issue(&shared, &cloud_id, &issue, &project_key)?).into_response())
}

#[derive(Deserialize)]
struct Visibility {
    account_id: String,
    visible: bool,
}

/// `PUT /_emulator/sites/{cloud_id}/projects/{project_key}/visibility
/// {"account_id","visible"}` → 204.
async fn set_project_visibility(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((cloud_id, project_key)): Path<(String, String)>,
    body: Bytes,
) -> ControlResult {
    let Visibility {
        account_id,
        visible,
    } = parse(&body)?;
    admin::set_project_visibility(&shared, &cloud_id, &project_key, &account_id, visible)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /_emulator/sites/{cloud_id}/quota {"product","points_per_hour":N|null}` → 204 (the
/// site's per-tenant quota).
async fn set_tenant_quota(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let SetQuota {
        product,
        points_per_hour,
    } = parse(&body)?;
    admin::check_site(&shared, &cloud_id, product)?;
    shared.with_limits(|limits| limits.set_tenant_quota(&cloud_id, product, points_per_hour));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /_emulator/search-paging {"page_cap":N|null,"empty_page_every":N|null}` → 204.
async fn set_search_paging(
    AxumState(shared): AxumState<Arc<Shared>>,
    body: Bytes,
) -> ControlResult {
    let paging: SearchPaging = parse(&body)?;
    shared.set_search_paging(paging);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /_emulator/sites/{cloud_id}/issues/deleted` → `{"ids": [..]}`.
async fn deleted_issues(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
) -> ControlResult {
    let ids = admin::deleted_issue_ids(&shared, &cloud_id)?;
    Ok(Json(json!({ "ids": ids })).into_response())
}

#[derive(Deserialize)]
struct GenerateSpaces {
    count: usize,
}

/// `POST /_emulator/sites/{cloud_id}/spaces/generate {"count"}` → 201 `{"ids"}`.
async fn generate_spaces(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let GenerateSpaces { count } = parse(&body)?;
    let ids = admin::create_spaces(&shared, &cloud_id, count)?;
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response())
}

/// `GET /_emulator/sites/{cloud_id}/spaces` → `[SpaceSnapshot]`, ascending by id.
async fn list_spaces(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
) -> ControlResult {
    Ok(Json(admin::spaces(&shared, &cloud_id)?).into_response())
}

/// `PUT /_emulator/sites/{cloud_id}/spaces` with a `SpaceChange` → the `SpaceSnapshot`.
async fn upsert_space(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let change: SpaceChange = parse(&body)?;
    Ok(Json(admin::upsert_space(&shared, &cloud_id, &change)?).into_response())
}

/// `POST /_emulator/sites/{cloud_id}/spaces/delete {"ids":[id or key]}` → `{"deleted": n}`.
async fn delete_spaces(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> ControlResult {
    let Ids { ids } = parse(&body)?;
    let deleted = admin::delete_spaces(&shared, &cloud_id, &ids)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

/// `GET /_emulator/sites/{cloud_id}/jsm/alerts` → `[JsmAlertSnapshot]`, oldest first.
async fn jsm_alerts(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
) -> ControlResult {
    Ok(Json(admin::jsm_alerts(&shared, &cloud_id)?).into_response())
}

/// `POST /_emulator/faults` with a `Fault` (`{"kind":..,"path_prefix":..,"times":..}`) → 204.
async fn inject_fault(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let fault: Fault = parse(&body)?;
    shared.with_faults(|faults| faults.push(fault));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /_emulator/faults` → 204 (queue and error rate cleared).
async fn clear_faults(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    shared.with_faults(|faults| faults.clear());
    StatusCode::NO_CONTENT.into_response()
}

/// `PUT /_emulator/faults/error-rate` with an `ErrorRate` or `null` → 204.
async fn set_error_rate(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let rate: Option<ErrorRate> = parse(&body)?;
    if rate
        .as_ref()
        .is_some_and(|r| !(0.0..=1.0).contains(&r.probability))
    {
        return Err(ControlApiError::BadRequest(
            "probability must be between 0 and 1".into(),
        ));
    }
    shared.with_faults(|faults| faults.set_error_rate(rate));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /_emulator/requests` → `[LoggedRequest]`, oldest first.
async fn request_log(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    Json(shared.with_log(|log| log.entries())).into_response()
}

/// `DELETE /_emulator/requests` → 204.
async fn clear_request_log(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    shared.with_log(|log| log.clear());
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_emulator/quota` → `{"jira": QuotaUsage, "confluence": QuotaUsage,
/// "burst_requests_per_second": N|null, "tenants": [{"cloud_id","product","usage"}]}`.
async fn quota(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let now = shared.now();
    let body = shared.with_limits(|limits| {
        json!({
            "jira": limits.usage(Product::Jira, now),
            "confluence": limits.usage(Product::Confluence, now),
            "burst_requests_per_second": limits.burst_rate(),
            "tenants": limits
                .tenant_usages(now)
                .into_iter()
                .map(|(cloud_id, product, usage)| {
                    json!({"cloud_id": cloud_id, "product": product, "usage": usage})
                })
                .collect::<Vec<_>>(),
        })
    });
    Json(body).into_response()
}

#[derive(Deserialize)]
struct SetQuota {
    product: Product,
    points_per_hour: Option<u64>,
}

/// `PUT /_emulator/quota {"product":"jira","points_per_hour":N|null}` → 204.
async fn set_quota(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let SetQuota {
        product,
        points_per_hour,
    } = parse(&body)?;
    shared.with_limits(|limits| limits.set_quota(product, points_per_hour));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct SetBurst {
    requests_per_second: Option<u32>,
}

/// `PUT /_emulator/burst {"requests_per_second":N|null}` → 204.
async fn set_burst(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> ControlResult {
    let SetBurst {
        requests_per_second,
    } = parse(&body)?;
    shared.with_limits(|limits| limits.set_burst_rate(requests_per_second));
    Ok(StatusCode::NO_CONTENT.into_response())
}
