//! Confluence v2 through the gateway: `GET /wiki/api/v2/spaces`.
//!
//! Cursor paging: the cursor is a sealed (sort, last position) pair, `_links.next` is relative
//! to the site (`/wiki/api/v2/spaces?cursor=…&limit=N` plus the request's other parameters),
//! `_links.base` is the site's `/wiki` URL, and the `Link` header carries both (`rel="next"`
//! only when more pages exist). `limit` defaults to 25; values above 250 are clamped to 250
//! (⚠ whether Confluence clamps or rejects is undocumented); values below 1 are a 400.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Product;
use super::gateway::{Caller, GatewayError, ScopeRequirement};
use super::issue_view::encode_query_value;
use super::rate_limit::Cost;
use super::server::Shared;
use super::spaces::{
    ConfluenceSite, Space, SpaceFilter, SpacePosition, SpaceSort, SpaceStatus, SpaceType,
};

/// v2 accepts granular scopes only.
const READ_SPACES: ScopeRequirement = ScopeRequirement::any_of(&[&["read:space:confluence"]]);

const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 250;

/// A v2 failure with the `{"errors":[…]}` envelope.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfluenceError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// 400 `INVALID_REQUEST_PARAMETER` with this title.
    #[error("{0}")]
    InvalidParameter(String),
}

impl IntoResponse for ConfluenceError {
    fn into_response(self) -> Response {
        match self {
            ConfluenceError::Gateway(error) => error.into_response(),
            ConfluenceError::InvalidParameter(title) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": [{
                    "status": 400,
                    "code": "INVALID_REQUEST_PARAMETER",
                    "title": title,
                    "detail": null,
                }]})),
            )
                .into_response(),
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route(
        "/ex/confluence/{cloud_id}/wiki/api/v2/spaces",
        get(list_spaces),
    )
}

/// The sealed content of a cursor.
#[derive(Debug, Serialize, Deserialize)]
struct SpaceCursor {
    sort: SpaceSort,
    after: SpacePosition,
}

/// The parsed query of a listing.
#[derive(Debug, Default)]
struct ListRequest {
    filter: SpaceFilter,
    /// `labels` / `favorited-by` were given: no emulated space has labels or favourites.
    matches_nothing: bool,
    sort: SpaceSort,
    description_format: Option<String>,
    include_icon: bool,
    cursor: Option<String>,
    limit: usize,
    /// The request's own parameters except `cursor` and `limit`, for the next link.
    carried: Vec<(String, String)>,
}

fn wrong_type(value: &str, name: &str, expected: &str) -> ConfluenceError {
    ConfluenceError::InvalidParameter(format!(
        "Provided value {{{value}}} for '{name}' is not the correct type. Expected type is {expected}."
    ))
}

fn list_values(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

impl ListRequest {
    fn parse(raw: Option<&str>) -> Result<Self, ConfluenceError> {
        let mut request = ListRequest {
            limit: usize::try_from(DEFAULT_LIMIT).unwrap_or(25),
            ..ListRequest::default()
        };
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (key, value) in pairs {
            match key.as_str() {
                "cursor" => {
                    if !value.is_empty() {
                        request.cursor = Some(value);
                    }
                    continue;
                }
                "limit" => {
                    let limit: i64 = value
                        .trim()
                        .parse()
                        .map_err(|_| wrong_type(&value, "limit", "int"))?;
                    if limit < 1 {
                        return Err(ConfluenceError::InvalidParameter(
                            "'limit' must be greater than or equal to 1".to_owned(),
                        ));
                    }
                    request.limit = usize::try_from(limit.min(MAX_LIMIT)).unwrap_or(25);
                    continue;
                }
                "ids" => {
                    let ids = request.filter.ids.get_or_insert_with(Vec::new);
                    for id in list_values(&value) {
                        ids.push(id.parse().map_err(|_| wrong_type(id, "ids", "long"))?);
                    }
                }
                "keys" => request
                    .filter
                    .keys
                    .get_or_insert_with(Vec::new)
                    .extend(list_values(&value).map(str::to_owned)),
                "type" => {
                    request.filter.space_type = Some(
                        SpaceType::parse(&value)
                            .ok_or_else(|| wrong_type(&value, "type", "SpaceType"))?,
                    );
                }
                "status" => {
                    request.filter.status = Some(
                        SpaceStatus::parse(&value)
                            .ok_or_else(|| wrong_type(&value, "status", "SpaceStatus"))?,
                    );
                }
                "labels" | "favorited-by" if !value.is_empty() => {
                    request.matches_nothing = true;
                }
                "sort" => {
                    request.sort = SpaceSort::parse(&value)
                        .ok_or_else(|| wrong_type(&value, "sort", "SpaceSortOrder"))?;
                }
                "description-format" => {
                    if !matches!(value.as_str(), "plain" | "view") {
                        return Err(wrong_type(
                            &value,
                            "description-format",
                            "SpaceDescriptionBodyRepresentation",
                        ));
                    }
                    request.description_format = Some(value.clone());
                }
                "include-icon" => {
                    request.include_icon = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(wrong_type(&value, "include-icon", "boolean")),
                    };
                }
                // `not-favorited-by` keeps everything: nothing is favourited.
                _ => {}
            }
            request.carried.push((key, value));
        }
        Ok(request)
    }
}

/// `GET /wiki/api/v2/spaces`.
async fn list_spaces(
    caller: Caller,
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(cloud_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConfluenceError> {
    let site = caller.authorize(READ_SPACES, &cloud_id, Product::Confluence)?;
    let site_wiki = format!("https://{}.atlassian.net/wiki", site.name);
    let request = ListRequest::parse(query.as_deref())?;
    let after = match &request.cursor {
        None => None,
        Some(cursor) => {
            let cursor: SpaceCursor = shared
                .page_key()
                .open(cursor)
                .filter(|c: &SpaceCursor| c.sort == request.sort)
                .ok_or_else(|| {
                    ConfluenceError::InvalidParameter("The cursor is invalid.".to_owned())
                })?;
            Some(cursor.after)
        }
    };
    let (results, next_cursor) = shared.with_products(|products| {
        let site = products.confluence(&cloud_id);
        if request.matches_nothing {
            return (Vec::new(), None);
        }
        let (page, more) = site.list(&request.filter, request.sort, after.as_ref(), request.limit);
        let next = more.then(|| page.last()).flatten().map(|last| SpaceCursor {
            sort: request.sort,
            after: ConfluenceSite::position(last, request.sort),
        });
        let results: Vec<Value> = page.iter().map(|s| space_json(s, &request)).collect();
        (results, next)
    });
    let returned = results.len() as u64;
    let mut links = json!({"base": site_wiki});
    let mut link_header = format!("<{site_wiki}>; rel=\"base\"");
    if let Some(cursor) = next_cursor {
        let mut next = format!(
            "/wiki/api/v2/spaces?cursor={}&limit={}",
            encode_query_value(&shared.page_key().seal(&cursor)),
            request.limit
        );
        for (key, value) in &request.carried {
            next.push_str(&format!(
                "&{}={}",
                encode_query_value(key),
                encode_query_value(value)
            ));
        }
        link_header = format!("<{next}>; rel=\"next\", {link_header}");
        links["next"] = json!(next);
    }
    let mut response = Json(json!({"results": results, "_links": links})).into_response();
    if let Ok(value) = HeaderValue::from_str(&link_header) {
        response.headers_mut().insert(header::LINK, value);
    }
    response.extensions_mut().insert(Cost(returned));
    Ok(response)
}

/// A `SpaceBulk`: `description` and `icon` are `null` unless asked for (as real responses are).
fn space_json(space: &Space, request: &ListRequest) -> Value {
    let description = match request.description_format.as_deref() {
        None => Value::Null,
        Some(format) => {
            let text = space.description.clone().unwrap_or_default();
            let value = if format == "view" && !text.is_empty() {
                format!("<p>{}</p>", super::consent_page::escape(&text))
            } else {
                text
            };
            json!({format: {"representation": format, "value": value}})
        }
    };
    let icon = if !request.include_icon {
        Value::Null
    } else if space.space_type == SpaceType::Personal {
        json!({"path": format!("/wiki/aa-avatar/{}", space.author_id)})
    } else {
        json!({
            "path": format!(
                "/wiki/download/attachments/{}/{}?version=1&api=v2",
                space.homepage_id, space.key
            ),
            "apiDownloadLink": format!(
                "/wiki/rest/api/space/{}/icon/download",
                space.key
            ),
        })
    };
    json!({
        "id": space.id.to_string(),
        "key": space.key,
        "name": space.name,
        "type": space.space_type.as_str(),
        "status": space.status.as_str(),
        "authorId": space.author_id,
        "spaceOwnerId": space.author_id,
        "createdAt": space.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "homepageId": space.homepage_id.to_string(),
        "description": description,
        "icon": icon,
        "currentActiveAlias": space.key,
        "_links": {"webui": format!("/spaces/{}", space.key)},
    })
}
