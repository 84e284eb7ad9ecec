//! The OAuth 2.0 (3LO) client side: the authorization URL, code exchange and rotating
//! refresh against `POST {auth_base_url}/oauth/token`, and what each failure means.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::AtlassianConfig;
use crate::domain::{AccessToken, AuthorizationCode, RefreshToken};
use crate::transport::{describe_transport_error, error_text, join, withheld_body};

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// Good for `expires_in` (an hour at Atlassian).
    pub access_token: AccessToken,
    /// Absent when Atlassian did not rotate (observed occasionally): keep the old one.
    pub refresh_token: Option<RefreshToken>,
    /// The access token's lifetime (`expires_in`; 3600 s when the answer omits it).
    pub expires_in: chrono::TimeDelta,
    /// The granted scopes (`scope`, space-separated); empty when the answer omits it.
    pub scopes: Vec<String>,
}

/// What a failed token call means for the grant, which decides what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token family is gone (expired, revoked, password changed, reused): only a new
    /// consent helps. Never retry with the same token.
    #[error("HTTP {status} {error}: {description}")]
    InvalidGrant {
        /// The HTTP status of the answer.
        status: u16,
        /// The OAuth `error` code: `invalid_grant` or `unauthorized_client`.
        error: String,
        /// `error_description`, or the start of the body when there is none.
        description: String,
    },
    /// Atlassian rejected the app's own credentials: a configuration problem affecting every
    /// grant, not a reason to give up on any one of them.
    #[error(
        "the app's client credentials were rejected (HTTP {status} {error}: {description}); check atlassian.client_id and atlassian.client_secret"
    )]
    ClientRejected {
        /// The HTTP status: 401, or any with `invalid_client` or `access_denied`.
        status: u16,
        /// The OAuth `error` code, or `(no error code)`.
        error: String,
        /// `error_description`, or the start of the body when there is none.
        description: String,
    },
    /// Rate limited: wait at least `retry_after` if given.
    #[error("rate limited (HTTP 429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// `Retry-After`, when sent; the refresher waits at most an hour whatever it says.
        retry_after: Option<Duration>,
    },
    /// 5xx or a connection that never reached Atlassian: retry with backoff and the same
    /// token.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The request may have been processed (timeout, reset, unreadable success body): the
    /// presented token may already be rotated, so retry with it promptly, inside the reuse
    /// leeway.
    #[error("interrupted exchange: {0}")]
    Interrupted(String),
    /// A request Atlassian calls malformed: a bug here, not a grant problem.
    #[error("request rejected (HTTP {status} {error}: {description})")]
    Rejected {
        /// The HTTP status: an unsuccessful one no other variant covers (usually a 4xx).
        status: u16,
        /// The OAuth `error` code, or `(no error code)`.
        error: String,
        /// `error_description`, or the start of the body when there is none.
        description: String,
    },
}

impl TokenError {
    /// True when the grant must be re-consented.
    pub fn is_terminal_for_grant(&self) -> bool {
        matches!(self, Self::InvalidGrant { .. })
    }
}

/// Talks to the token endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    token_url: Url,
    authorize_url: Url,
    client_id: String,
    client_secret: secrecy::SecretString,
    redirect_uri: Url,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenClient {
    /// Builds a client for the configured app.
    pub fn new(config: &AtlassianConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            token_url: join(&config.auth_base_url, "oauth/token"),
            authorize_url: join(&config.auth_base_url, "authorize"),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            redirect_uri: config.redirect_uri.clone(),
            scopes: config.scopes.clone(),
        }
    }

    /// The consent URL for one attempt, carrying `state`.
    pub fn authorization_url(&self, state: &str) -> Url {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("audience", "api.atlassian.com")
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("state", state)
            .append_pair("response_type", "code")
            .append_pair("prompt", "consent");
        url
    }

    /// Exchanges an authorization code for the first token set of a new family.
    pub async fn exchange_code(&self, code: &AuthorizationCode) -> Result<TokenSet, TokenError> {
        use secrecy::ExposeSecret;
        let body = serde_json::json!({
            "grant_type": "authorization_code",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose_secret(),
            "code": code.expose(),
            "redirect_uri": self.redirect_uri.as_str(),
        });
        self.call(&body, None).await
    }

    /// Exchanges a refresh token; the answer carries its successor.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenSet, TokenError> {
        self.refresh_within(refresh_token, None).await
    }

    /// As [`TokenClient::refresh`], waiting up to `timeout` for the answer instead of the
    /// configured request timeout: the patient attempt that recovers an interrupted
    /// exchange, whose answer must not be lost to impatience.
    pub async fn refresh_within(
        &self,
        refresh_token: &RefreshToken,
        timeout: Option<Duration>,
    ) -> Result<TokenSet, TokenError> {
        use secrecy::ExposeSecret;
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose_secret(),
            "refresh_token": refresh_token.expose(),
        });
        self.call(&body, timeout).await
    }

    async fn call(
        &self,
        body: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<TokenSet, TokenError> {
        // Atlassian documents JSON bodies for this endpoint.
        let mut request = self.http.post(self.token_url.clone()).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                TokenError::Transient(describe_transport_error(&e))
            } else {
                TokenError::Interrupted(describe_transport_error(&e))
            }
        })?;
        let status = response.status();
        let retry_after = crate::transport::retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TokenError::Interrupted(describe_transport_error(&e)))?;
        if status.is_success() {
            let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
                TokenError::Interrupted(format!("unreadable token response (HTTP {status}): {e}"))
            })?;
            return Ok(TokenSet {
                access_token: AccessToken::new(parsed.access_token),
                refresh_token: parsed
                    .refresh_token
                    .filter(|t| !t.is_empty())
                    .map(RefreshToken::new),
                // Atlassian says an hour; an absurd answer is capped at a day, so that
                // instant arithmetic on it can never overflow.
                expires_in: chrono::TimeDelta::seconds(
                    i64::try_from(parsed.expires_in.unwrap_or(3600))
                        .unwrap_or(i64::MAX)
                        .min(86_400),
                ),
                scopes: parsed
                    .scope
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            });
        }
        Err(classify_failure(status.as_u16(), &bytes, retry_after))
    }
}

/// Whether an `unauthorized_client` description is about the OAuth client rather than a
/// refresh token ("client is not authorized to use this grant type" vs "refresh_token is
/// invalid").
fn names_the_client_not_a_token(description: &str) -> bool {
    let text = description.to_lowercase();
    text.contains("client") && !text.contains("token")
}

/// Maps an unsuccessful token response to what it means for the grant.
fn classify_failure(status: u16, body: &[u8], retry_after: Option<Duration>) -> TokenError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error = if parsed.error.is_empty() {
        "(no error code)".to_owned()
    } else {
        parsed.error
    };
    // Only Atlassian's error and error_description fields are kept, never the raw body.
    let error = error_text(&error);
    let description = if parsed.error_description.is_empty() {
        withheld_body(body)
    } else {
        error_text(&parsed.error_description)
    };
    match (status, error.as_str()) {
        (429, _) => TokenError::RateLimited { retry_after },
        // A 5xx may come after Atlassian rotated the token (a gateway timing out on a slow
        // backend): retry inside the leeway, like an interrupted exchange.
        (500..=599, _) => TokenError::Interrupted(format!("HTTP {status} {error}: {description}")),
        // Atlassian answers a dead refresh token with invalid_grant (documented) or
        // unauthorized_client "refresh_token is invalid" (observed); both end the family.
        (_, "invalid_grant") => TokenError::InvalidGrant {
            status,
            error,
            description,
        },
        // An unauthorized_client that speaks of the client and not of a token is about the
        // app (its grant types, its status): an app-level problem, like rejected client
        // credentials. Any other wording, or none, is the observed dead-token variant.
        (_, "unauthorized_client") if names_the_client_not_a_token(&description) => {
            TokenError::ClientRejected {
                status,
                error,
                description,
            }
        }
        (_, "unauthorized_client") => TokenError::InvalidGrant {
            status,
            error,
            description,
        },
        (401, _) | (_, "invalid_client" | "access_denied") => TokenError::ClientRejected {
            status,
            error,
            description,
        },
        // Proxies and gateways answer 408 and friends; nothing about the grant is known.
        (408 | 425, _) => TokenError::Transient(format!("HTTP {status}: {description}")),
        _ => TokenError::Rejected {
            status,
            error,
            description,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_refresh_tokens_are_terminal_and_outages_are_not() {
        let dead =
            br#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#;
        assert!(classify_failure(403, dead, None).is_terminal_for_grant());
        let variant =
            br#"{"error":"unauthorized_client","error_description":"refresh_token is invalid"}"#;
        assert!(classify_failure(403, variant, None).is_terminal_for_grant());
        assert!(!classify_failure(503, b"", None).is_terminal_for_grant());
        assert!(matches!(
            classify_failure(502, b"", None),
            TokenError::Interrupted(_)
        ));
        assert!(!classify_failure(500, dead, None).is_terminal_for_grant());
        assert!(matches!(
            classify_failure(429, b"", None),
            TokenError::RateLimited { .. }
        ));
        assert!(matches!(
            classify_failure(
                401,
                br#"{"error":"access_denied","error_description":"Unauthorized"}"#,
                None
            ),
            TokenError::ClientRejected { .. }
        ));
    }

    #[test]
    fn invalid_grant_error_names_status_and_description() {
        let dead =
            br#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#;
        let message = classify_failure(403, dead, None).to_string();
        assert_eq!(
            message,
            "HTTP 403 invalid_grant: Unknown or invalid refresh token."
        );
    }
}
