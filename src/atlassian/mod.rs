//! Clients for the Atlassian API gateway (`api.atlassian.com` or the emulator): one HTTP
//! layer that turns responses into typed outcomes, and one module per API family.

pub mod confluence;
pub mod jira;
pub mod resources;
pub mod session;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

use crate::oauth::{AccessToken, describe_transport_error, join};

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
        retry_after: Option<Duration>,
        reason: String,
    },
    /// 5xx, timeouts, connection resets, unreadable bodies: retry later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Any other answer, with Atlassian's message.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
}

/// The gateway client. Cheap to clone; shares one connection pool.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: Url,
}

impl ApiClient {
    /// A client for the gateway at `base_url` (`atlassian.api_base_url`).
    pub fn new(base_url: Url, http: reqwest::Client) -> Self {
        Self { http, base_url }
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
            .map_err(|e| ApiError::Transient(describe_transport_error(&e)))?;
        let status = response.status();
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

/// Maps an unsuccessful gateway or product response to an [`ApiError`].
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
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
        408 | 500..=599 => ApiError::Transient(format!("HTTP {status}: {message}")),
        _ => ApiError::Http { status, message },
    }
}

/// Reads whichever error shape Atlassian used: gateway `{"code","message"}`, Jira
/// `{"errorMessages":[..]}`, Confluence v2 `{"errors":[{"title"}]}`, or plain text.
fn error_message(body: &[u8]) -> String {
    let text = || {
        String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_owned()
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return text();
    };
    if let Some(message) = value.get("message").and_then(|m| m.as_str()) {
        return message.to_owned();
    }
    if let Some(messages) = value.get("errorMessages").and_then(|m| m.as_array())
        && !messages.is_empty()
    {
        return messages
            .iter()
            .filter_map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
    }
    if let Some(errors) = value.get("errors").and_then(|m| m.as_array()) {
        return errors
            .iter()
            .filter_map(|e| e.get("title").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("; ");
    }
    text()
}

/// `Retry-After` as integer seconds, or an HTTP date read defensively.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // HTTP dates compare against the wall clock by definition, not business time.
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    Some((when.to_utc() - now).to_std().unwrap_or(Duration::ZERO))
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

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "1847".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(1847)));
    }
}
