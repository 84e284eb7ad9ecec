//! Jira REST v3 through the gateway: `search/jql` (GET and POST), `search/approximate-count`,
//! `issue/bulkfetch`, `issue/{idOrKey}`, and the removed legacy search (410).
//!
//! Page tokens are sealed cursors (see [`page_token`](super::page_token)): the query's
//! fingerprint, the instant relative dates are read against (fixed at the first page, so a
//! scan's window does not slide), the token's issue time (tokens expire after
//! `page_token_ttl`), and the sort tuple of the page's last issue. The next page continues
//! strictly after that tuple, so issues updated during a scan may show up again later, and none
//! is skipped unless it moved backwards.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::{FaultKind, SearchQuirk};
use super::gateway::{Caller, GatewayError, ScopeRequirement};
use super::issue_view::FIELDS;
use super::issue_view::{FieldSelection, IssueView};
use super::issues::{SearchPage, SortValue};
use super::jql::{self, Context};
use super::page_token::fingerprint;
use super::rate_limit::Cost;
use super::server::Shared;
use super::{EmulatorConfig, Product};

/// `GET /search/jql`: classic, or the granular (Beta) set of the spec.
const SEARCH_GET: ScopeRequirement = ScopeRequirement::any_of(&[
    &["read:jira-work"],
    &[
        "read:issue-details:jira",
        "read:audit-log:jira",
        "read:avatar:jira",
        "read:field-configuration:jira",
        "read:issue-meta:jira",
    ],
]);

/// `POST /search/jql` and `POST /search/approximate-count`.
const SEARCH_POST: ScopeRequirement = ScopeRequirement::any_of(&[
    &["read:jira-work"],
    &[
        "read:issue-details:jira",
        "read:field.default-value:jira",
        "read:field.option:jira",
        "read:field:jira",
        "read:group:jira",
    ],
]);

/// `GET /issue/{idOrKey}` and `POST /issue/bulkfetch`.
const ISSUE_READ: ScopeRequirement = ScopeRequirement::any_of(&[
    &["read:jira-work"],
    &[
        "read:issue-meta:jira",
        "read:issue-security-level:jira",
        "read:issue.vote:jira",
        "read:issue.changelog:jira",
        "read:avatar:jira",
        "read:issue:jira",
        "read:status:jira",
        "read:user:jira",
        "read:field-configuration:jira",
    ],
]);

/// Jira's answer to a body it cannot read.
const INVALID_PAYLOAD: &str =
    "Invalid request payload. Refer to the REST API documentation and try again.";
/// Jira's 404 text for an issue that is unknown or hidden from the caller.
const ISSUE_NOT_FOUND: &str = "Issue does not exist or you do not have permission to see it.";
/// Jira's 410 text for the removed legacy search endpoints.
const SEARCH_REMOVED: &str = "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046";
/// ⚠ The real text for a bad or expired token is undocumented.
const BAD_PAGE_TOKEN: &str = "The provided next page token is invalid or expired.";

/// Default `maxResults` of `search/jql`.
const DEFAULT_MAX_RESULTS: i64 = 50;

/// Page size under the `ignored_max_results` fault.
const IGNORED_MAX_RESULTS_PAGE: usize = 10_000;

/// Search settings from [`EmulatorConfig`].
#[derive(Debug, Clone)]
pub(crate) struct JiraPolicy {
    page_token_ttl: TimeDelta,
    bulkfetch_max_issues: usize,
    null_next_page_token: bool,
}

impl JiraPolicy {
    pub(crate) fn from_config(config: &EmulatorConfig) -> Self {
        Self {
            page_token_ttl: TimeDelta::from_std(config.page_token_ttl).unwrap_or(TimeDelta::MAX),
            bulkfetch_max_issues: config.bulkfetch_max_issues,
            null_next_page_token: config.null_next_page_token_on_last_page,
        }
    }
}

/// Why a Jira request failed, with Jira's `ErrorCollection` body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JiraError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
}

impl From<jql::JqlError> for JiraError {
    fn from(error: jql::JqlError) -> Self {
        JiraError::BadRequest(error.to_string())
    }
}

impl IntoResponse for JiraError {
    fn into_response(self) -> Response {
        let status = match &self {
            JiraError::Gateway(error) => return error.into_response(),
            JiraError::BadRequest(_) => StatusCode::BAD_REQUEST,
            JiraError::NotFound(_) => StatusCode::NOT_FOUND,
            JiraError::Gone(_) => StatusCode::GONE,
        };
        (
            status,
            Json(json!({"errorMessages": [self.to_string()], "errors": {}})),
        )
            .into_response()
    }
}

type JiraResult = Result<Response, JiraError>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let base = "/ex/jira/{cloud_id}/rest/api";
    let mut router = Router::new()
        .route(
            &format!("{base}/3/search/jql"),
            get(search_get).post(search_post),
        )
        .route(
            &format!("{base}/3/search/approximate-count"),
            post(approximate_count),
        )
        .route(&format!("{base}/3/issue/bulkfetch"), post(bulkfetch))
        .route(&format!("{base}/3/issue/{{issue}}"), get(get_issue))
        .route(&format!("{base}/3/field"), get(list_fields))
        .route(&format!("{base}/3/search/id"), any(legacy_search));
    for version in ["2", "3", "latest"] {
        router = router.route(&format!("{base}/{version}/search"), any(legacy_search));
    }
    router
}

/// A 200 JSON answer with the caller's `X-AAccountId` and the points it costs.
fn answer(body: Value, objects: u64, caller: &Caller) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&caller.user.account_id) {
        response.headers_mut().insert("x-aaccountid", value);
    }
    response.extensions_mut().insert(Cost(objects));
    response
}

/// The caller's Jira zone (the site default, UTC, when unset or invalid).
fn caller_zone(caller: &Caller) -> Tz {
    caller.user.jira_time_zone.parse().unwrap_or(chrono_tz::UTC)
}

/// What JQL is evaluated against for `caller` at `now`: their zone and account.
fn jql_context(caller: &Caller, now: DateTime<Utc>) -> Context {
    Context {
        now,
        zone: caller_zone(caller),
        account_id: caller.user.account_id.clone(),
    }
}

/// What rendering needs besides the data: the gateway API root, the site URL, the zone.
struct ViewSettings {
    api: String,
    site_url: String,
    zone: Tz,
}

fn view_settings(
    shared: &Shared,
    caller: &Caller,
    cloud_id: &str,
    site_name: &str,
) -> ViewSettings {
    ViewSettings {
        api: format!("{}ex/jira/{cloud_id}/rest/api/3", shared.base_url()),
        site_url: format!("https://{site_name}.atlassian.net"),
        zone: caller_zone(caller),
    }
}

/// A value given either as one (comma-separated) string or as a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(one) => vec![one],
            StringOrList::Many(many) => many,
        }
    }
}

/// A `search/jql` request, from either transport.
#[derive(Debug, Default)]
struct SearchRequest {
    jql: String,
    next_page_token: Option<String>,
    max_results: Option<i64>,
    fields: Vec<String>,
    expand: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    #[serde(default)]
    jql: Option<String>,
    #[serde(default)]
    next_page_token: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    fields: Option<StringOrList>,
    #[serde(default)]
    expand: Option<StringOrList>,
    // Accepted and ignored: the emulator is read-after-write consistent and has no properties.
    #[serde(default)]
    #[allow(dead_code)]
    reconcile_issues: Option<Vec<i64>>,
    #[serde(default)]
    #[allow(dead_code)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    fields_by_keys: Option<bool>,
}

fn split_list(values: Vec<String>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_max_results(text: &str) -> Result<i64, JiraError> {
    text.trim().parse().map_err(|_| {
        JiraError::BadRequest(format!(
            "The value '{text}' is not a valid number for the parameter 'maxResults'."
        ))
    })
}

impl SearchRequest {
    fn from_query(raw: Option<&str>) -> Result<Self, JiraError> {
        let mut request = SearchRequest::default();
        let mut jql = None;
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "jql" => {
                    jql.get_or_insert(value);
                }
                "nextPageToken" if !value.is_empty() => {
                    request.next_page_token.get_or_insert(value);
                }
                "maxResults" => request.max_results = Some(parse_max_results(&value)?),
                "fields" => request.fields.push(value),
                "expand" => request.expand.push(value),
                _ => {}
            }
        }
        request.jql = jql.unwrap_or_default();
        request.expand = split_list(request.expand);
        Ok(request)
    }

    fn from_body(body: &[u8]) -> Result<Self, JiraError> {
        let body: SearchBody = serde_json::from_slice(body)
            .map_err(|_| JiraError::BadRequest(INVALID_PAYLOAD.to_owned()))?;
        Ok(SearchRequest {
            jql: body.jql.unwrap_or_default(),
            next_page_token: body.next_page_token.filter(|t| !t.is_empty()),
            max_results: body.max_results,
            fields: body.fields.map(StringOrList::into_vec).unwrap_or_default(),
            expand: split_list(body.expand.map(StringOrList::into_vec).unwrap_or_default()),
        })
    }
}

/// The sealed content of a `nextPageToken`.
#[derive(Debug, Serialize, Deserialize)]
struct PageCursor {
    /// Fingerprint of the JQL text.
    q: String,
    /// Epoch ms relative dates are read against.
    n: i64,
    /// Epoch ms the token was issued.
    i: i64,
    /// Sort tuple of the last issue returned.
    a: Vec<SortValue>,
    /// Index of the page this token asks for (the first page is 0).
    #[serde(default)]
    p: u64,
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn search_get(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    quirk: Option<Extension<SearchQuirk>>,
    RawQuery(query): RawQuery,
) -> JiraResult {
    let site = caller.authorize(SEARCH_GET, &cloud_id, Product::Jira)?;
    let request = SearchRequest::from_query(query.as_deref())?;
    let quirk = quirk.map(|Extension(SearchQuirk(kind))| kind);
    search(&shared, &caller, &cloud_id, &site.name, request, quirk)
}

async fn search_post(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    quirk: Option<Extension<SearchQuirk>>,
    body: Bytes,
) -> JiraResult {
    let site = caller.authorize(SEARCH_POST, &cloud_id, Product::Jira)?;
    let request = SearchRequest::from_body(&body)?;
    let quirk = quirk.map(|Extension(SearchQuirk(kind))| kind);
    search(&shared, &caller, &cloud_id, &site.name, request, quirk)
}

/// One page of `search/jql`, possibly with an injected quirk.
fn search(
    shared: &Shared,
    caller: &Caller,
    cloud_id: &str,
    site_name: &str,
    request: SearchRequest,
    quirk: Option<FaultKind>,
) -> JiraResult {
    let policy = shared.jira_policy();
    let fields = FieldSelection::parse(&request.fields, "id");
    let cap = i64::try_from(fields.page_cap()).unwrap_or(100);
    let requested = request.max_results.unwrap_or(DEFAULT_MAX_RESULTS);
    let mut limit = usize::try_from(requested.clamp(1, cap)).unwrap_or(1);
    if quirk == Some(FaultKind::IgnoredMaxResults) {
        limit = IGNORED_MAX_RESULTS_PAGE;
    }
    let now = shared.now();
    let query_print = fingerprint(&request.jql);
    let bad_token = || JiraError::BadRequest(BAD_PAGE_TOKEN.to_owned());
    let (anchor, after, page_index) = match &request.next_page_token {
        None => (now, None, 0),
        Some(token) => {
            let cursor: PageCursor = shared.page_key().open(token).ok_or_else(bad_token)?;
            if cursor.q != query_print || now - from_millis(cursor.i) > policy.page_token_ttl {
                return Err(bad_token());
            }
            (from_millis(cursor.n), Some(cursor.a), cursor.p)
        }
    };
    let paging = shared.search_paging();
    if let Some(cap) = paging.page_cap {
        limit = limit.min(cap.max(1));
    }
    // Sparse paging: every n-th page (never the first) is empty but carries a token that
    // continues where the previous page stopped.
    let empty_page = paging
        .empty_page_every
        .map(|n| n.max(2) as u64)
        .is_some_and(|n| page_index % n == n - 1);
    let context = jql_context(caller, anchor);
    let settings = view_settings(shared, caller, cloud_id, site_name);
    let (body, returned) = shared.with_products(|products| {
        let (site, people) = products.jira_with_people(cloud_id);
        let compiled = jql::compile_bounded(&request.jql, &context, site)?;
        if after
            .as_ref()
            .is_some_and(|a| a.len() != compiled.order.len())
        {
            return Err(bad_token());
        }
        let viewer = Some(caller.user.account_id.as_str());
        let page = if empty_page {
            SearchPage {
                issues: Vec::new(),
                last: Some(after.clone().unwrap_or_default()),
                more: true,
            }
        } else {
            site.search(&compiled, after.as_deref(), limit, viewer)
        };
        let view = IssueView {
            api: settings.api,
            site_url: settings.site_url,
            zone: settings.zone,
            people,
            site,
        };
        let issues: Vec<Value> = page
            .issues
            .iter()
            .map(|issue| view.issue(issue, &fields))
            .collect();
        let returned = issues.len();
        let mut body = json!({"issues": issues, "isLast": !page.more});
        let next = page.last.filter(|_| page.more).map(|last| {
            shared.page_key().seal(&PageCursor {
                q: query_print,
                n: anchor.timestamp_millis(),
                i: now.timestamp_millis(),
                a: last,
                p: page_index + 1,
            })
        });
        match (&quirk, &request.next_page_token, next) {
            // JRACLOUD-94632: the same token comes back, so a naive client loops forever.
            (Some(FaultKind::RepeatedPageToken), Some(sent), _) => {
                body["isLast"] = json!(false);
                body["nextPageToken"] = json!(sent);
            }
            (_, _, Some(next)) => body["nextPageToken"] = json!(next),
            (_, _, None) if policy.null_next_page_token => body["nextPageToken"] = Value::Null,
            (_, _, None) => {}
        }
        if request.expand.iter().any(|e| e == "names") {
            body["names"] = fields.names();
        }
        if request.expand.iter().any(|e| e == "schema") {
            body["schema"] = fields.schema();
        }
        if quirk == Some(FaultKind::MissingIsLast)
            && let Some(object) = body.as_object_mut()
        {
            object.remove("isLast");
        }
        Ok((body, returned))
    })?;
    Ok(answer(body, returned as u64, caller))
}

#[derive(Debug, Deserialize)]
struct CountBody {
    #[serde(default)]
    jql: Option<String>,
}

/// `POST /search/approximate-count`: exact in the emulator.
async fn approximate_count(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> JiraResult {
    caller.authorize(SEARCH_POST, &cloud_id, Product::Jira)?;
    let body: CountBody = serde_json::from_slice(&body)
        .map_err(|_| JiraError::BadRequest(INVALID_PAYLOAD.to_owned()))?;
    let context = jql_context(&caller, shared.now());
    let jql = body.jql.unwrap_or_default();
    let count = shared.with_products(|products| {
        let (site, _) = products.jira_with_people(&cloud_id);
        let compiled = jql::compile_bounded(&jql, &context, site)?;
        Ok::<_, JiraError>(site.count(&compiled.filter, Some(&caller.user.account_id)))
    })?;
    Ok(answer(json!({"count": count}), 0, &caller))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkFetchBody {
    #[serde(default)]
    issue_ids_or_keys: Option<Vec<String>>,
    #[serde(default)]
    fields: Option<StringOrList>,
    #[serde(default)]
    #[allow(dead_code)]
    expand: Option<StringOrList>,
    #[serde(default)]
    #[allow(dead_code)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    fields_by_keys: Option<bool>,
}

/// `POST /issue/bulkfetch`: up to the configured cap, ascending id, unknown or deleted
/// issues silently left out.
async fn bulkfetch(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    body: Bytes,
) -> JiraResult {
    let site = caller.authorize(ISSUE_READ, &cloud_id, Product::Jira)?;
    let body: BulkFetchBody = serde_json::from_slice(&body)
        .map_err(|_| JiraError::BadRequest(INVALID_PAYLOAD.to_owned()))?;
    let wanted = body.issue_ids_or_keys.unwrap_or_default();
    let max = shared.jira_policy().bulkfetch_max_issues;
    if wanted.is_empty() {
        return Err(JiraError::BadRequest(
            "issueIdsOrKeys must contain at least one issue id or key.".to_owned(),
        ));
    }
    if wanted.len() > max {
        return Err(JiraError::BadRequest(format!(
            "issueIdsOrKeys must contain at most {max} issue ids or keys."
        )));
    }
    let fields = FieldSelection::parse(
        &body.fields.map(StringOrList::into_vec).unwrap_or_default(),
        "*navigable",
    );
    let settings = view_settings(&shared, &caller, &cloud_id, &site.name);
    let issues = shared.with_products(|products| {
        let (site, people) = products.jira_with_people(&cloud_id);
        let viewer = Some(caller.user.account_id.as_str());
        let mut found: Vec<_> = wanted
            .iter()
            .filter_map(|w| site.issue(w))
            .filter(|issue| site.visible(issue, viewer))
            .collect();
        found.sort_by_key(|issue| issue.id);
        found.dedup_by_key(|issue| issue.id);
        let view = IssueView {
            api: settings.api,
            site_url: settings.site_url,
            zone: settings.zone,
            people,
            site,
        };
        found
            .iter()
            .map(|issue| view.issue(issue, &fields))
            .collect::<Vec<_>>()
    });
    let returned = issues.len() as u64;
    Ok(answer(
        json!({"expand": "schema,names", "issues": issues, "issueErrors": []}),
        returned,
        &caller,
    ))
}

/// `GET /issue/{idOrKey}`: default fields `*all`; 404 with Jira's text when the issue is
/// unknown or deleted.
async fn get_issue(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((cloud_id, id_or_key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> JiraResult {
    let site = caller.authorize(ISSUE_READ, &cloud_id, Product::Jira)?;
    let requested: Vec<String> = query_pairs(query.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "fields")
        .map(|(_, v)| v)
        .collect();
    let fields = FieldSelection::parse(&requested, "*all");
    let settings = view_settings(&shared, &caller, &cloud_id, &site.name);
    let issue = shared.with_products(|products| {
        let (site, people) = products.jira_with_people(&cloud_id);
        let issue = site
            .issue(&id_or_key)
            .filter(|issue| site.visible(issue, Some(&caller.user.account_id)))?;
        let view = IssueView {
            api: settings.api,
            site_url: settings.site_url,
            zone: settings.zone,
            people,
            site,
        };
        Some(view.issue(issue, &fields))
    });
    match issue {
        Some(issue) => Ok(answer(issue, 1, &caller)),
        None => Err(JiraError::NotFound(ISSUE_NOT_FOUND.to_owned())),
    }
}

/// `GET /field`: classic, or the granular (Beta) set of the spec.
const FIELD_READ: ScopeRequirement = ScopeRequirement::any_of(&[
    &["read:jira-work"],
    &[
        "read:field:jira",
        "read:avatar:jira",
        "read:project-category:jira",
        "read:project:jira",
        "read:field-configuration:jira",
    ],
]);

/// `GET /field`: every field of the site as `FieldDetails` (system fields, then the custom
/// fields generated issues carry). Costs the base point only.
async fn list_fields(caller: Caller, Path(cloud_id): Path<String>) -> JiraResult {
    caller.authorize(FIELD_READ, &cloud_id, Product::Jira)?;
    let fields: Vec<Value> = FIELDS.iter().map(|f| f.details()).collect();
    Ok(answer(Value::Array(fields), 0, &caller))
}

/// `/rest/api/{2,3,latest}/search` and `/rest/api/3/search/id`: removed by Atlassian (410).
async fn legacy_search(caller: Caller, Path(cloud_id): Path<String>) -> JiraResult {
    caller.authorize(SEARCH_GET, &cloud_id, Product::Jira)?;
    Err(JiraError::Gone(SEARCH_REMOVED.to_owned()))
}
