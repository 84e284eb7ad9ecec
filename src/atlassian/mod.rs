//! Clients for the Atlassian API gateway (`api.atlassian.com` or the emulator): requests,
//! responses, classified errors and the rate-limit headers seen. Nothing here knows the
//! database, the points budget or how a token is refreshed: one call is one HTTP exchange,
//! and the caller (`pacing`) decides what to do with the outcome.
//!
//! One module per API family: [`resources`] (accessible-resources, `/me`), [`jira`] and
//! [`confluence`] (which describe product calls as [`ProductCall`]s).

pub mod confluence;
pub mod jira;
pub mod jsm;
pub mod resources;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

use crate::domain::{AccessToken, CloudId, Product};
use crate::telemetry::Telemetry;
use crate::transport::{describe_transport_error, error_text, join, retry_after, withheld_body};

/// Empty pages that still point on are normal in a listing; this many in a row is a loop,
/// not a result, and ends the listing incomplete.
pub const MAX_EMPTY_PAGES: u32 = 100;

/// What a failed API call means to the caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The access token is missing, expired or revoked: refresh once and retry once.
    #[error("unauthorized (HTTP 401): {0}")]
    Unauthorized(String),
    /// The token is valid but lacks a scope this call needs; refreshing does not help.
    #[error("scope does not match (HTTP 401): {0}")]
    ScopeMismatch(String),
    /// The resource (or the whole site) is not visible to this grant.
    #[error("not found (HTTP 404): {0}")]
    NotFound(String),
    /// Rate limited; `reason` is Atlassian's `RateLimit-Reason`.
    #[error("rate limited (HTTP 429, {reason}){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// `Retry-After`, when the answer carried one.
        retry_after: Option<Duration>,
        /// `RateLimit-Reason`, or `unspecified` when the header is missing.
        reason: String,
    },
    /// 5xx, timeouts, connection resets, unreadable bodies: retry later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A 5xx (typically 503) that said when to come back (`Retry-After`).
    #[error("unavailable (HTTP {status}), retry after {}s: {message}", retry_after.as_secs())]
    Unavailable {
        /// The status.
        status: u16,
        /// `Retry-After`: the least wait before the next attempt.
        retry_after: Duration,
        /// Atlassian's message.
        message: String,
    },
    /// Any other answer, with Atlassian's message.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status: none of 401, 404, 408, 429 or 5xx, which have their own variants.
        status: u16,
        /// Atlassian's message, from the gateway, Jira or Confluence error body.
        message: String,
    },
}

/// The gateway client. Cheap to clone; shares one connection pool.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: Url,
    telemetry: Arc<Telemetry>,
}

impl ApiClient {
    /// A client for the gateway at `base_url` (`atlassian.api_base_url`).
    pub fn new(base_url: Url, http: reqwest::Client, telemetry: Arc<Telemetry>) -> Self {
        Self {
            http,
            base_url,
            telemetry,
        }
    }

    /// Counts one request to `product` (`identity` for the gateway's own endpoints) by its
    /// answer's status, or `error` when none came.
    fn count(&self, product: impl AsRef<str>, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.telemetry.api_request(product.as_ref(), &status);
    }

    /// `GET {base}/{path}` with a bearer token, decoded as `T`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        token: &AccessToken,
        path: &str,
    ) -> Result<T, ApiError> {
        let response = self
            .http
            .get(join(&self.base_url, path))
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                self.count("identity", None);
                ApiError::Transient(describe_transport_error(&e))
            })?;
        let status = response.status();
        self.count("identity", Some(status.as_u16()));
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(describe_transport_error(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Transient(format!("unreadable response from {path}: {e}")));
        }
        Err(classify(status.as_u16(), &headers, &bytes))
    }
}

/// One read of a site's product API (below `/ex/{product}/{cloudid}/`), described before it is
/// sent, with what its answer may cost: Atlassian's 2026 points model charges one point per
/// request plus one per object returned.
#[derive(Debug, Clone)]
pub struct ProductCall<T> {
    /// The product API it calls.
    pub product: Product,
    /// `GET`, or `POST` for reads that take a body (search, bulk fetch).
    pub method: reqwest::Method,
    /// The path below the product's gateway base.
    pub path: &'static str,
    /// Query pairs.
    pub query: Vec<(&'static str, String)>,
    /// A JSON body, for `POST` reads.
    pub body: Option<serde_json::Value>,
    /// The most objects the answer can carry, which bounds its cost.
    pub most_objects: usize,
    /// How many objects an answer carried.
    pub objects: fn(&T) -> usize,
    response: PhantomData<fn() -> T>,
}

impl<T> ProductCall<T> {
    /// A `GET` of `path` with `query`.
    pub fn get(
        product: Product,
        path: &'static str,
        query: Vec<(&'static str, String)>,
        most_objects: usize,
        objects: fn(&T) -> usize,
    ) -> Self {
        Self {
            product,
            method: reqwest::Method::GET,
            path,
            query,
            body: None,
            most_objects,
            objects,
            response: PhantomData,
        }
    }

    /// A `POST` read of `path` with a JSON `body`.
    pub fn post(
        product: Product,
        path: &'static str,
        body: serde_json::Value,
        most_objects: usize,
        objects: fn(&T) -> usize,
    ) -> Self {
        Self {
            product,
            method: reqwest::Method::POST,
            path,
            query: Vec::new(),
            body: Some(body),
            most_objects,
            objects,
            response: PhantomData,
        }
    }

    /// The most points the call can cost.
    pub fn most_points(&self) -> i64 {
        1 + self.most_objects as i64
    }
}

/// The rate-limit headers of one answer (`X-RateLimit-*`, `RateLimit-Reason`), as seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `X-RateLimit-Limit`.
    pub limit: Option<i64>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<i64>,
    /// `X-RateLimit-Reset`, as sent (an ISO 8601 instant).
    pub reset: Option<String>,
    /// `X-RateLimit-NearLimit: true`: less than a fifth of the budget is left.
    pub near_limit: bool,
    /// `RateLimit`'s `"global-app-quota"` entry: points left in the app's pool of the
    /// answer's product (sent once ~80 % is spent) and seconds to its reset.
    pub global: Option<QuotaState>,
    /// `RateLimit`'s `"tenant-app-quota"` entry: the same for this site's own pool.
    pub tenant: Option<QuotaState>,
    /// `RateLimit-Policy`'s `"global-app-quota"` size (`q`), when sent.
    pub global_quota: Option<i64>,
}

/// One pool's entry of the structured `RateLimit` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaState {
    /// `r`: points left; absent until most of the pool is spent.
    pub remaining: Option<i64>,
    /// `t`: seconds until the pool resets.
    pub reset_secs: Option<i64>,
}

/// The entries of a structured rate-limit header (`"name";k=v;k=v, "name";...`), by name.
fn structured_entries(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    value
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let name = parts.next()?.trim_matches('"').to_owned();
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
                .collect();
            Some((name, params))
        })
        .collect()
}

impl RateLimitHeaders {
    fn read(headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        let state = text("ratelimit")
            .map(|v| structured_entries(&v))
            .unwrap_or_default();
        let pool = |name: &str| {
            state.iter().find(|(n, _)| n == name).map(|(_, params)| {
                let number = |key: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| v.parse().ok())
                };
                QuotaState {
                    remaining: number("r"),
                    reset_secs: number("t"),
                }
            })
        };
        let policy = text("ratelimit-policy")
            .map(|v| structured_entries(&v))
            .unwrap_or_default();
        Self {
            limit: text("x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: text("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset: text("x-ratelimit-reset"),
            near_limit: text("x-ratelimit-nearlimit").is_some_and(|v| v == "true"),
            global: pool("global-app-quota"),
            tenant: pool("tenant-app-quota"),
            global_quota: policy
                .iter()
                .find(|(n, _)| n == "global-app-quota")
                .and_then(|(_, params)| params.iter().find(|(k, _)| k == "q"))
                .and_then(|(_, v)| v.parse().ok()),
        }
    }
}

/// A successful product answer and the rate-limit headers that came with it.
#[derive(Debug)]
pub struct ProductResponse<T> {
    /// The decoded body.
    pub value: T,
    /// What the gateway said about the app's limits.
    pub rate_limit: RateLimitHeaders,
}

impl ApiClient {
    /// The gateway base of one site's product API: `{api_base_url}/ex/{product}/{cloud_id}/`.
    pub fn product_base_url(&self, product: Product, cloud_id: &CloudId) -> Url {
        join(
            &self.base_url,
            &format!("ex/{}/{cloud_id}", product.as_str()),
        )
    }

    /// Sends `call` once for `cloud_id` with `token`. No retry, no pacing: a failure comes
    /// back classified for the caller to act on.
    pub async fn send<T: DeserializeOwned>(
        &self,
        cloud_id: &CloudId,
        token: &AccessToken,
        call: &ProductCall<T>,
    ) -> Result<ProductResponse<T>, ApiError> {
        let url = join(&self.product_base_url(call.product, cloud_id), call.path);
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            self.count(call.product, None);
            ApiError::Transient(describe_transport_error(&e))
        })?;
        let status = response.status();
        self.count(call.product, Some(status.as_u16()));
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(describe_transport_error(&e)))?;
        if !status.is_success() {
            return Err(classify(status.as_u16(), &headers, &bytes));
        }
        let value = serde_json::from_slice::<T>(&bytes).map_err(|e| {
            ApiError::Transient(format!("unreadable response from {}: {e}", call.path))
        })?;
        Ok(ProductResponse {
            value,
            rate_limit: RateLimitHeaders::read(&headers),
        })
    }
}

/// Maps an unsuccessful gateway or product response to an [`ApiError`].
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let message = error_message(body);
    match status {
        401 if message.contains("scope does not match") => ApiError::ScopeMismatch(message),
        401 => ApiError::Unauthorized(message),
        404 => ApiError::NotFound(message),
        429 => ApiError::RateLimited {
            retry_after: retry_after(headers),
            reason: headers
                .get("ratelimit-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unspecified")
                .to_owned(),
        },
        500..=599 if retry_after(headers).is_some() => ApiError::Unavailable {
            status,
            retry_after: retry_after(headers).unwrap_or_default(),
            message,
        },
        408 | 500..=599 => ApiError::Transient(format!("HTTP {status}: {message}")),
        _ => ApiError::Http { status, message },
    }
}

/// Reads whichever error shape Atlassian used: gateway `{"code","message"}`, Jira
/// `{"errorMessages":[..]}`, Confluence v2 `{"errors":[{"title"}]}`. Anything else (a
/// proxy's HTML page, plain text) is described by its size only: it may reflect the request.
fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return withheld_body(body);
    };
    if let Some(message) = value.get("message").and_then(|m| m.as_str()) {
        return error_text(message);
    }
    if let Some(messages) = value.get("errorMessages").and_then(|m| m.as_array())
        && !messages.is_empty()
    {
        let joined = messages
            .iter()
            .filter_map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return error_text(&joined);
    }
    if let Some(errors) = value.get("errors").and_then(|m| m.as_array()) {
        let joined = errors
            .iter()
            .filter_map(|e| e.get("title").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("; ");
        return error_text(&joined);
    }
    withheld_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_401s_are_told_apart() {
        let headers = HeaderMap::new();
        assert!(matches!(
            classify(401, &headers, br#"{"code":401,"message":"Unauthorized"}"#),
            ApiError::Unauthorized(_)
        ));
        assert!(matches!(
            classify(
                401,
                &headers,
                br#"{"code":401,"message":"Unauthorized; scope does not match"}"#
            ),
            ApiError::ScopeMismatch(_)
        ));
        assert!(matches!(
            classify(502, &headers, b"bad gateway"),
            ApiError::Transient(_)
        ));
    }
}
