//! Jira Service Management Operations alerts through the gateway, at
//! `/ex/jira/{cloudid}/jsm/ops/api/v1/alerts…` (the 3LO form of the documented
//! `https://api.atlassian.com/jsm/ops/api/{cloudId}/v1/alerts…`).
//!
//! Written from the JSM Operations REST API reference, Alerts group
//! (<https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v2/api-group-alerts/>) and
//! its OpenAPI document (<https://developer.atlassian.com/cloud/jira/service-desk-ops/swagger.v3.json>):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/alerts` (`CreateAlertRequest`) | **200** `SuccessResponse` (the document says 200 here, 202 for the actions); 422 `ErrorResponses` |
//! | `GET /v1/alerts?offset&size&sort&order&query&from&to` | 200 `ListAlertResponse` `{values, count, links.next}`; 422 |
//! | `GET /v1/alerts/{id}` | 200 `AlertResponse`; 404 `ErrorResponses` |
//! | `GET /v1/alerts/alias?alias=` | 200 `AlertResponse` (the open one, else the newest); 404; 422 without `alias` |
//! | `POST /v1/alerts/{id}/close` | 202 `SuccessResponse`, whatever the alert's state (an unknown id fails in the request status) |
//! | `GET /v1/alerts/requests/{id}` | 200 `GetRequestStatusResponse`; 404 |
//!
//! Gateway rules as for the other products ([`Caller::authorize`]): 401 for the token, 401
//! "scope does not match" for the scopes, 404 for a cloud id outside the grant or a site without
//! Jira (JSM runs on a Jira site). The routes sit behind the rate limiter (Jira's pool: the path
//! is under `/ex/jira/`), fault injection and the request log like every product route.
//!
//! ⚠ Undocumented, chosen here: the `code` strings of `ErrorResponses` (`BAD_REQUEST`,
//! `NOT_FOUND`), the request-status texts other than "Alert does not exist", `count` of a list
//! being the number of matching alerts, `links.next` repeating the caller's `query`, `sort` and
//! `order` after `offset` and `size`, `sort=priority` with `desc` putting P1 first, and `from` /
//! `to` being accepted (integers) but not filtering, an empty `alias` counting as none, and the
//! close body (`note`, `source`, `user` of the older alert APIs; the document lists no body)
//! being accepted, its `note` kept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Product;
use super::gateway::{Caller, GatewayError, ScopeRequirement};
use super::jsm_alerts::{Alert, NewAlert, Priority, RequestRecord};
use super::jsm_query::{self, Query};
use super::listener::ConnTag;
use super::rate_limit::Cost;
use super::server::Shared;

/// Scope names: the OpenAPI document's `OAuth2` security of each operation. Reads (list, get,
/// get by alias, request status) need `read:ops-alert:jira-service-management`; writes (create,
/// close) list both the read and the write scope, so both are required.
const READ_SCOPE: &str = "read:ops-alert:jira-service-management";
/// See [`READ_SCOPE`].
const WRITE_SCOPE: &str = "write:ops-alert:jira-service-management";

/// List, get, get by alias, request status.
const ALERT_READ: ScopeRequirement = ScopeRequirement::any_of(&[&[READ_SCOPE]]);
/// Create, close.
const ALERT_WRITE: ScopeRequirement = ScopeRequirement::any_of(&[&[READ_SCOPE, WRITE_SCOPE]]);

/// Field limits of `CreateAlertRequest` (characters).
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_ENTITY: usize = 512;
const MAX_SOURCE: usize = 100;
const MAX_NOTE: usize = 25_000;
/// Characters of all `extraProperties` keys and values together.
const MAX_EXTRA_PROPERTIES: usize = 8_000;
/// Items of `responders` and of `visibleTo`.
const MAX_RESPONDERS: usize = 50;

/// List paging: `size` 1..=100 (default 20); `offset + size` must stay below 20,000.
const DEFAULT_SIZE: usize = 20;
const MAX_SIZE: usize = 100;
const MAX_WINDOW: usize = 20_000;

/// Why a JSM request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JsmError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// 422: "the payload cannot be validated".
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for JsmError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            JsmError::Gateway(error) => return error.into_response(),
            JsmError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "BAD_REQUEST"),
            JsmError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        };
        let body = json!({"errors": [{"title": self.to_string(), "code": code}]});
        (status, Json(body)).into_response()
    }
}

type JsmResult = Result<Response, JsmError>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let base = "/ex/jira/{cloud_id}/jsm/ops/api/v1/alerts";
    Router::new()
        .route(base, get(list_alerts).post(create_alert))
        .route(&format!("{base}/alias"), get(alert_by_alias))
        .route(
            &format!("{base}/requests/{{request_id}}"),
            get(request_status),
        )
        .route(&format!("{base}/{{alert_id}}"), get(get_alert))
        .route(&format!("{base}/{{alert_id}}/close"), post(close_alert))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `SuccessResponse`: the request was accepted; `took` in seconds.
fn accepted(status: StatusCode, request_id: &str, started: Instant) -> Response {
    let took = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let body =
        json!({"result": "Request will be processed", "took": took, "requestId": request_id});
    (status, Json(body)).into_response()
}

/// `AlertResponse`.
fn render(alert: &Alert) -> Value {
    let mut body = json!({
        "id": alert.id,
        "tinyId": alert.tiny_id,
        "alias": alert.alias,
        "message": alert.message,
        "status": alert.status.as_str(),
        "acknowledged": false,
        "seen": false,
        "tags": alert.tags,
        "snoozed": false,
        "count": alert.count,
        "lastOccuredAt": timestamp(alert.last_occurred_at),
        "createdAt": timestamp(alert.created_at),
        "updatedAt": timestamp(alert.updated_at),
        "source": alert.source,
        "owner": "",
        "priority": alert.priority.as_str(),
        "responders": alert.responders,
        "integrationType": "API",
        "integrationName": "Default API",
        "actions": alert.actions,
        "entity": alert.entity.as_deref().unwrap_or(""),
        "description": alert.description.as_deref().unwrap_or(""),
        "extraProperties": alert.extra_properties,
    });
    if let Some(closed) = alert.closed_at {
        body["closeTime"] = json!(timestamp(closed));
    }
    body
}

/// `GetRequestStatusResponse`.
fn render_request(record: &RequestRecord) -> Value {
    json!({
        "action": record.action,
        "processedAt": timestamp(record.processed_at),
        "integrationId": "",
        "isSuccess": record.is_success,
        "status": record.status,
        "alertId": record.alert_id,
        "alias": record.alias,
    })
}

fn with_cost(body: Value, objects: u64) -> Response {
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(Cost(objects));
    response
}

// ----- create --------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ResponderType {
    Team,
    User,
    Escalation,
    Schedule,
}

#[derive(Debug, Deserialize, Serialize)]
struct Responder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: ResponderType,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum VisibleToType {
    Team,
    User,
}

#[derive(Debug, Deserialize, Serialize)]
struct VisibleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: VisibleToType,
}

/// `CreateAlertRequest` (unknown members are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    message: String,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    responders: Option<Vec<Responder>>,
    #[serde(default)]
    visible_to: Option<Vec<VisibleTo>>,
    #[serde(default)]
    actions: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    extra_properties: Option<BTreeMap<String, String>>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    note: Option<String>,
}

fn at_most(field: &str, value: Option<&str>, max: usize) -> Result<(), JsmError> {
    match value {
        Some(v) if v.chars().count() > max => Err(JsmError::Invalid(format!(
            "{field} can not be longer than {max} characters"
        ))),
        _ => Ok(()),
    }
}

fn to_values<T: Serialize>(items: Option<Vec<T>>) -> Vec<Value> {
    items
        .unwrap_or_default()
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

/// Validates a create body; `peer` is the documented default `source`.
fn new_alert(body: &Bytes, peer: Option<SocketAddr>) -> Result<NewAlert, JsmError> {
    let body: CreateBody = serde_json::from_slice(body)
        .map_err(|e| JsmError::Invalid(format!("Invalid request payload: {e}")))?;
    if body.message.trim().is_empty() {
        return Err(JsmError::Invalid("message can not be empty".to_owned()));
    }
    at_most("message", Some(&body.message), MAX_MESSAGE)?;
    at_most("alias", body.alias.as_deref(), MAX_ALIAS)?;
    at_most("description", body.description.as_deref(), MAX_DESCRIPTION)?;
    at_most("entity", body.entity.as_deref(), MAX_ENTITY)?;
    at_most("source", body.source.as_deref(), MAX_SOURCE)?;
    at_most("note", body.note.as_deref(), MAX_NOTE)?;
    for (field, len) in [
        ("responders", body.responders.as_ref().map_or(0, Vec::len)),
        ("visibleTo", body.visible_to.as_ref().map_or(0, Vec::len)),
    ] {
        if len > MAX_RESPONDERS {
            return Err(JsmError::Invalid(format!(
                "{field} can not have more than {MAX_RESPONDERS} items"
            )));
        }
    }
    let extra_properties = body.extra_properties.unwrap_or_default();
    let extra_len: usize = extra_properties
        .iter()
        .map(|(k, v)| k.chars().count() + v.chars().count())
        .sum();
    if extra_len > MAX_EXTRA_PROPERTIES {
        return Err(JsmError::Invalid(format!(
            "extraProperties can not be longer than {MAX_EXTRA_PROPERTIES} characters"
        )));
    }
    let source = body
        .source
        .filter(|s| !s.is_empty())
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_default();
    Ok(NewAlert {
        message: body.message,
        // An empty alias is no alias: the service assigns one.
        alias: body.alias.filter(|a| !a.trim().is_empty()),
        description: body.description,
        responders: to_values(body.responders),
        visible_to: to_values(body.visible_to),
        actions: body.actions.unwrap_or_default(),
        tags: body.tags.unwrap_or_default(),
        extra_properties,
        entity: body.entity,
        source,
        priority: body.priority.unwrap_or_default(),
        note: body.note,
    })
}

/// `POST …/v1/alerts`: validates, then creates or de-duplicates at once; 200 with the request id.
async fn create_alert(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    connection: Option<Extension<ConnectInfo<ConnTag>>>,
    body: Bytes,
) -> JsmResult {
    let started = Instant::now();
    caller.authorize(ALERT_WRITE, &cloud_id, Product::Jira)?;
    let peer = connection.map(|Extension(ConnectInfo(tag))| tag.peer());
    let alert = new_alert(&body, peer)?;
    let now = shared.now();
    let request_id = shared.with_products(|p| p.jsm(&cloud_id).create(alert, now));
    Ok(accepted(StatusCode::OK, &request_id, started))
}

// ----- close ---------------------------------------------------------------------------------

/// The optional close body of the older alert APIs (`note`, `source`, `user`): the document
/// lists none, so anything is accepted; a `note` is kept on the alert.
fn close_note(body: &Bytes) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("note")?.as_str().map(str::to_owned)
}

/// `POST …/v1/alerts/{id}/close`: 202 whatever the alert's state.
async fn close_alert(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((cloud_id, alert_id)): Path<(String, String)>,
    body: Bytes,
) -> JsmResult {
    let started = Instant::now();
    caller.authorize(ALERT_WRITE, &cloud_id, Product::Jira)?;
    let note = close_note(&body);
    let now = shared.now();
    let request_id = shared.with_products(|p| p.jsm(&cloud_id).close(&alert_id, note, now));
    Ok(accepted(StatusCode::ACCEPTED, &request_id, started))
}

// ----- reads ---------------------------------------------------------------------------------

fn alert_not_found() -> JsmError {
    JsmError::NotFound("Alert does not exist".to_owned())
}

/// `GET …/v1/alerts/{id}`.
async fn get_alert(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((cloud_id, alert_id)): Path<(String, String)>,
) -> JsmResult {
    caller.authorize(ALERT_READ, &cloud_id, Product::Jira)?;
    let body = shared.with_products(|p| p.jsm(&cloud_id).alert(&alert_id).map(render));
    Ok(with_cost(body.ok_or_else(alert_not_found)?, 1))
}

/// `GET …/v1/alerts/alias?alias=`.
async fn alert_by_alias(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> JsmResult {
    caller.authorize(ALERT_READ, &cloud_id, Product::Jira)?;
    let params = Params::parse(raw.as_deref());
    let alias = params
        .get("alias")
        .ok_or_else(|| JsmError::Invalid("alias is required".to_owned()))?;
    let body = shared.with_products(|p| p.jsm(&cloud_id).alert_by_alias(alias).map(render));
    Ok(with_cost(body.ok_or_else(alert_not_found)?, 1))
}

/// `GET …/v1/alerts/requests/{id}`.
async fn request_status(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((cloud_id, request_id)): Path<(String, String)>,
) -> JsmResult {
    caller.authorize(ALERT_READ, &cloud_id, Product::Jira)?;
    let body = shared.with_products(|p| p.jsm(&cloud_id).request(&request_id).map(render_request));
    body.map(|b| Json(b).into_response())
        .ok_or_else(|| JsmError::NotFound("Request does not exist".to_owned()))
}

/// Query parameters, first occurrence of each name.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<i64>, JsmError> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| JsmError::Invalid(format!("{name} must be an integer")))
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    InsertedAt,
    CreatedAt,
    LastOccurredAt,
    Priority,
}

/// A validated `GET …/v1/alerts`.
struct Listing {
    offset: usize,
    size: usize,
    sort: Sort,
    descending: bool,
    query: Option<Query>,
}

impl Listing {
    fn parse(params: &Params) -> Result<Self, JsmError> {
        let size = params.number("size")?.unwrap_or(DEFAULT_SIZE as i64);
        if !(1..=MAX_SIZE as i64).contains(&size) {
            return Err(JsmError::Invalid(format!(
                "size must be between 1 and {MAX_SIZE}"
            )));
        }
        let offset = params.number("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(JsmError::Invalid("offset can not be negative".to_owned()));
        }
        let (offset, size) = (offset as usize, size as usize);
        if offset.saturating_add(size) >= MAX_WINDOW {
            return Err(JsmError::Invalid(format!(
                "the sum of offset and size must be lower than {MAX_WINDOW}"
            )));
        }
        let sort = match params.get("sort") {
            None | Some("insertedAt") => Sort::InsertedAt,
            Some("createdAt") => Sort::CreatedAt,
            Some("lastOccurredAt") => Sort::LastOccurredAt,
            Some("priority") => Sort::Priority,
            Some(other) => return Err(JsmError::Invalid(format!("invalid sort field {other}"))),
        };
        let descending = match params.get("order") {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => return Err(JsmError::Invalid(format!("invalid order {other}"))),
        };
        params.number("from")?;
        params.number("to")?;
        let query = jsm_query::parse(params.get("query").unwrap_or_default())
            .map_err(|e| JsmError::Invalid(e.to_string()))?;
        Ok(Self {
            offset,
            size,
            sort,
            descending,
            query,
        })
    }

    /// The matching alerts in order.
    fn select<'a>(&self, alerts: &'a [Alert]) -> Vec<&'a Alert> {
        let mut matching: Vec<&Alert> = alerts
            .iter()
            .filter(|a| self.query.as_ref().is_none_or(|q| q.matches(a)))
            .collect();
        matching.sort_by(|a, b| {
            let primary = match self.sort {
                Sort::InsertedAt => std::cmp::Ordering::Equal,
                Sort::CreatedAt => a.created_at.cmp(&b.created_at),
                Sort::LastOccurredAt => a.last_occurred_at.cmp(&b.last_occurred_at),
                // P1 ranks highest.
                Sort::Priority => b.priority.cmp(&a.priority),
            };
            let order = primary.then(a.seq.cmp(&b.seq));
            if self.descending {
                order.reverse()
            } else {
                order
            }
        });
        matching
    }

    /// `links.next` for the page after this one, if there is one.
    fn next_link(&self, total: usize, params: &Params) -> Option<String> {
        let next = self.offset + self.size;
        if next >= total || next.saturating_add(self.size) >= MAX_WINDOW {
            return None;
        }
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        link.append_pair("offset", &next.to_string())
            .append_pair("size", &self.size.to_string());
        for name in ["query", "sort", "order", "from", "to"] {
            if let Some(value) = params.get(name) {
                link.append_pair(name, value);
            }
        }
        Some(format!("/v1/alerts?{}", link.finish()))
    }
}

/// `GET …/v1/alerts`.
async fn list_alerts(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> JsmResult {
    caller.authorize(ALERT_READ, &cloud_id, Product::Jira)?;
    let params = Params::parse(raw.as_deref());
    let listing = Listing::parse(&params)?;
    let (values, total) = shared.with_products(|p| {
        let matching = listing.select(p.jsm(&cloud_id).alerts());
        let values: Vec<Value> = matching
            .iter()
            .skip(listing.offset)
            .take(listing.size)
            .map(|a| render(a))
            .collect();
        (values, matching.len())
    });
    let mut links = serde_json::Map::new();
    if let Some(next) = listing.next_link(total, &params) {
        links.insert("next".to_owned(), json!(next));
    }
    let returned = values.len() as u64;
    Ok(with_cost(
        json!({"values": values, "count": total, "links": links}),
        returned,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(query: &str) -> Result<Listing, JsmError> {
        Listing::parse(&Params::parse(Some(query)))
    }

    #[test]
    fn list_parameters_follow_the_documented_bounds() {
        let l = listing("").expect("defaults");
        assert_eq!(
            (l.offset, l.size, l.sort, l.descending),
            (0, 20, Sort::InsertedAt, true)
        );
        assert!(l.query.is_none());
        for bad in [
            "size=0",
            "size=101",
            "size=x",
            "offset=-1",
            "offset=19900&size=100",
            "sort=updatedAt",
            "order=up",
            "query=alias%3A",
            "from=yesterday",
        ] {
            assert!(
                matches!(listing(bad), Err(JsmError::Invalid(_))),
                "{bad} must be refused"
            );
        }
        let l = listing("offset=10&size=5&query=status%3Aopen&order=asc").expect("valid");
        let params = Params::parse(Some("offset=10&size=5&query=status%3Aopen&order=asc"));
        assert_eq!(
            l.next_link(16, &params).as_deref(),
            Some("/v1/alerts?offset=15&size=5&query=status%3Aopen&order=asc")
        );
        assert_eq!(l.next_link(15, &params), None);
    }

    #[test]
    fn create_bodies_are_validated_as_documented() {
        let ok = |body: Value| new_alert(&Bytes::from(body.to_string()), None);
        let alert = ok(json!({"message": "m", "alias": "a", "priority": "P1",
            "extraProperties": {"k": "v"}, "responders": [{"id": "t", "type": "team"}]}))
        .expect("valid");
        assert_eq!(alert.priority, Priority::P1);
        assert_eq!(alert.responders, vec![json!({"id": "t", "type": "team"})]);
        assert_eq!(
            ok(json!({"message": "m"})).expect("valid").priority,
            Priority::P3
        );
        for bad in [
            json!({}),
            json!({"message": "  "}),
            json!({"message": "x".repeat(131)}),
            json!({"message": "m", "alias": "a".repeat(513)}),
            json!({"message": "m", "description": "d".repeat(15_001)}),
            json!({"message": "m", "priority": "P6"}),
            json!({"message": "m", "responders": [{"id": "x", "type": "robot"}]}),
            json!({"message": "m", "extraProperties": {"k": 1}}),
            json!({"message": "m", "extraProperties": {"k": "v".repeat(8_000)}}),
            json!({"message": 7}),
        ] {
            assert!(
                matches!(ok(bad.clone()), Err(JsmError::Invalid(_))),
                "{bad} must be refused"
            );
        }
        assert!(
            ok(json!({"message": "é".repeat(130)})).is_ok(),
            "characters, not bytes"
        );
    }
}
