//! The authorization server: `GET /authorize`, `POST /authorize/decision`, `POST /oauth/token`
//! (Atlassian's OAuth 2.0 (3LO) flow).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::consent_page::{consent_page, error_page};
use super::server::Shared;
use super::state::{AuthorizeRequest, ConsentError, IssuedTokens, Policy, State, dedup_in_order};
use super::{ConsentDecision, RefreshErrorVariant};

/// The only audience the authorization server issues tokens for.
const AUDIENCE: &str = "api.atlassian.com";

/// Description on the deny redirect (⚠ the real text is undocumented).
const DENIED_DESCRIPTION: &str = "User did not authorize the request";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/authorize", get(authorize))
        .route("/authorize/decision", post(decide))
        .route("/oauth/token", post(token))
}

/// Decodes `application/x-www-form-urlencoded` text (query strings and form bodies).
fn form_pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// First value of `key`, if present and non-empty.
fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so spaces become `%20`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ----- /authorize ------------------------------------------------------------------------------

/// Why an `/authorize` request is refused outright (an error page, never a redirect: the
/// redirect target itself is not trusted yet).
#[derive(Debug, thiserror::Error)]
enum AuthorizeError {
    #[error("Missing required parameter: {0}")]
    Missing(&'static str),
    #[error("Unknown client_id. Check the app's Client ID.")]
    UnknownClient,
    #[error("Invalid audience {0:?}; expected api.atlassian.com.")]
    BadAudience(String),
    #[error("Unsupported response_type {0:?}; only \"code\" is supported.")]
    BadResponseType(String),
    #[error("Invalid redirect_uri: it must be an absolute http(s) URL without a fragment.")]
    BadRedirectUri,
    #[error("Unsupported code_challenge_method {0:?}; only S256 is supported.")]
    BadChallengeMethod(String),
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Html(error_page(&self.to_string()))).into_response()
    }
}

fn validate_authorize(
    params: &[(String, String)],
    policy: &Policy,
) -> Result<AuthorizeRequest, AuthorizeError> {
    let client_id = first(params, "client_id").ok_or(AuthorizeError::Missing("client_id"))?;
    if client_id != policy.client_id {
        return Err(AuthorizeError::UnknownClient);
    }
    let redirect_uri =
        first(params, "redirect_uri").ok_or(AuthorizeError::Missing("redirect_uri"))?;
    let parsed = url::Url::parse(redirect_uri).map_err(|_| AuthorizeError::BadRedirectUri)?;
    let header_safe = redirect_uri.bytes().all(|b| b.is_ascii_graphic());
    if !matches!(parsed.scheme(), "http" | "https") || parsed.fragment().is_some() || !header_safe {
        return Err(AuthorizeError::BadRedirectUri);
    }
    let audience = first(params, "audience").ok_or(AuthorizeError::Missing("audience"))?;
    if audience != AUDIENCE {
        return Err(AuthorizeError::BadAudience(audience.to_owned()));
    }
    let response_type =
        first(params, "response_type").ok_or(AuthorizeError::Missing("response_type"))?;
    if response_type != "code" {
        return Err(AuthorizeError::BadResponseType(response_type.to_owned()));
    }
    let mut scopes: Vec<String> = first(params, "scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    dedup_in_order(&mut scopes);
    if scopes.is_empty() {
        return Err(AuthorizeError::Missing("scope"));
    }
    let code_challenge = first(params, "code_challenge").map(str::to_owned);
    if code_challenge.is_some() {
        let method = first(params, "code_challenge_method").unwrap_or("plain");
        if method != "S256" {
            return Err(AuthorizeError::BadChallengeMethod(method.to_owned()));
        }
    }
    Ok(AuthorizeRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state: first(params, "state").map(str::to_owned),
        code_challenge,
    })
}

/// 302 to the app's redirect URI with `params` (and `state`, when the app sent one) appended.
fn redirect_back(request: &AuthorizeRequest, params: &[(&str, &str)]) -> Response {
    let mut location = request.redirect_uri.clone();
    let mut separator = if location.contains('?') { '&' } else { '?' };
    let state = request.state.as_deref().map(|s| ("state", s));
    for (key, value) in params.iter().copied().chain(state) {
        location.push(separator);
        location.push_str(key);
        location.push('=');
        location.push_str(&percent_encode(value));
        separator = '&';
    }
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        // Unreachable: validation only admits printable-ASCII redirect URIs.
        Err(_) => (
            StatusCode::BAD_REQUEST,
            Html(error_page("Invalid redirect_uri.")),
        )
            .into_response(),
    }
}

fn deny(request: &AuthorizeRequest) -> Response {
    redirect_back(
        request,
        &[
            ("error", "access_denied"),
            ("error_description", DENIED_DESCRIPTION),
        ],
    )
}

/// The user consented: mint a code and redirect back with it, or show why not.
fn accept(
    state: &mut State,
    request: &AuthorizeRequest,
    account_id: &str,
    sites: Option<&[String]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Response, ConsentError> {
    let code = state.approve(request, account_id, sites, now)?;
    tracing::debug!(account.id = %account_id, "emulator: consent granted");
    Ok(redirect_back(request, &[("code", &code)]))
}

fn consent_refused(error: &ConsentError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(error_page(&error.to_string())),
    )
        .into_response()
}

async fn authorize(
    AxumState(shared): AxumState<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form_pairs(query.unwrap_or_default().as_bytes());
    let now = shared.now();
    shared.with_state(|state| {
        let request = match validate_authorize(&params, state.policy()) {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        };
        match state.next_queued_consent() {
            Some(ConsentDecision::Deny) => deny(&request),
            Some(ConsentDecision::Accept { account_id, sites }) => {
                accept(state, &request, &account_id, sites.as_deref(), now)
                    .unwrap_or_else(|e| consent_refused(&e))
            }
            None => {
                let users = state.consent_choices();
                let id = state.park_consent(request.clone(), now);
                Html(consent_page(&id, &request, &users)).into_response()
            }
        }
    })
}

async fn decide(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let bad = |message: &str| (StatusCode::BAD_REQUEST, Html(error_page(message))).into_response();
    let Some(request_id) = first(&form, "request_id") else {
        return bad("Missing request_id.");
    };
    let now = shared.now();
    shared.with_state(|state| {
        let Some(pending) = state.take_consent(request_id, now) else {
            return bad(
                "This authorization request is unknown or has expired. Start again from the app.",
            );
        };
        match first(&form, "decision") {
            Some("deny") => deny(&pending.request),
            Some("accept") => {
                let Some(account_id) = first(&form, "account_id") else {
                    state.restore_consent(request_id.to_owned(), pending);
                    return bad("Choose an Atlassian account.");
                };
                let sites: Vec<String> = form
                    .iter()
                    .filter(|(k, v)| k == "site" && !v.is_empty())
                    .map(|(_, v)| v.clone())
                    .collect();
                let request = pending.request.clone();
                accept(state, &request, account_id, Some(&sites), now).unwrap_or_else(|e| {
                    state.restore_consent(request_id.to_owned(), pending);
                    consent_refused(&e)
                })
            }
            _ => {
                state.restore_consent(request_id.to_owned(), pending);
                bad("Choose Accept or Deny.")
            }
        }
    })
}

// ----- /oauth/token ----------------------------------------------------------------------------

/// Token-endpoint failures and their wire bodies, as Atlassian documents them.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    /// 400 `invalid_request`: malformed body or a missing parameter.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `unsupported_grant_type`.
    #[error("Unsupported grant type: {0}")]
    UnsupportedGrantType(String),
    /// 401 `access_denied`: wrong or missing client credentials.
    #[error("Unauthorized")]
    InvalidClient,
    /// 403 `invalid_grant`: bad, used or expired code, or redirect mismatch.
    #[error("Invalid authorization code")]
    InvalidCode,
    /// 403: any refresh failure, body per the configured variant.
    #[error("invalid refresh token")]
    InvalidRefreshToken(RefreshErrorVariant),
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let (status, error, description) = match &self {
            TokenError::InvalidRequest(text) => {
                (StatusCode::BAD_REQUEST, "invalid_request", text.as_str())
            }
            TokenError::UnsupportedGrantType(_) => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant type",
            ),
            TokenError::InvalidClient => {
                (StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized")
            }
            TokenError::InvalidCode => (
                StatusCode::FORBIDDEN,
                "invalid_grant",
                "Invalid authorization code",
            ),
            TokenError::InvalidRefreshToken(RefreshErrorVariant::InvalidGrant) => (
                StatusCode::FORBIDDEN,
                "invalid_grant",
                "Unknown or invalid refresh token.",
            ),
            TokenError::InvalidRefreshToken(RefreshErrorVariant::UnauthorizedClient) => (
                StatusCode::FORBIDDEN,
                "unauthorized_client",
                "refresh_token is invalid",
            ),
        };
        json_response(
            status,
            serde_json::json!({"error": error, "error_description": description}),
        )
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The token request's parameters, whichever encoding carried them. No `Debug`: it holds
/// secrets and tokens.
#[derive(Default)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
    code_verifier: Option<String>,
}

impl TokenRequest {
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "grant_type" => &mut self.grant_type,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            "code" => &mut self.code,
            "redirect_uri" => &mut self.redirect_uri,
            "refresh_token" => &mut self.refresh_token,
            "code_verifier" => &mut self.code_verifier,
            _ => return None,
        })
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), TokenError> {
        if let Some(slot) = self.slot(key) {
            if slot.is_some() {
                return Err(TokenError::InvalidRequest(format!(
                    "Parameter {key} given more than once"
                )));
            }
            // Empty counts as missing.
            *slot = Some(value).filter(|v| !v.is_empty());
        }
        Ok(())
    }

    /// Accepts `application/json` (documented) and `application/x-www-form-urlencoded` (observed).
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, TokenError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let mut request = TokenRequest::default();
        match content_type.as_str() {
            "application/json" => {
                let object: Map<String, Value> = serde_json::from_slice(body).map_err(|_| {
                    TokenError::InvalidRequest("Request body must be a JSON object".to_owned())
                })?;
                for (key, value) in object {
                    match value {
                        Value::String(text) => request.set(&key, text)?,
                        Value::Null => {}
                        _ if request.slot(&key).is_some() => {
                            return Err(TokenError::InvalidRequest(format!(
                                "Parameter {key} must be a string"
                            )));
                        }
                        _ => {}
                    }
                }
            }
            "application/x-www-form-urlencoded" => {
                for (key, value) in form_pairs(body) {
                    request.set(&key, value)?;
                }
            }
            _ => {
                return Err(TokenError::InvalidRequest(
                    "Content-Type must be application/json or application/x-www-form-urlencoded"
                        .to_owned(),
                ));
            }
        }
        Ok(request)
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, TokenError> {
    value
        .as_deref()
        .ok_or_else(|| TokenError::InvalidRequest(format!("Missing required parameter: {name}")))
}

fn success(issued: IssuedTokens, policy: &Policy) -> Response {
    let mut body = Map::new();
    body.insert("access_token".into(), issued.access_token.into());
    body.insert("expires_in".into(), policy.expires_in_secs().into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("scope".into(), issued.scope.into());
    if let Some(refresh_token) = issued.refresh_token {
        body.insert("refresh_token".into(), refresh_token.into());
    }
    json_response(StatusCode::OK, Value::Object(body))
}

async fn token(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.now();
    let result = TokenRequest::parse(&headers, &body)
        .and_then(|request| shared.with_state(|state| grant_tokens(state, &request, now)));
    result.unwrap_or_else(IntoResponse::into_response)
}

fn grant_tokens(
    state: &mut State,
    request: &TokenRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Response, TokenError> {
    let grant_type = required(&request.grant_type, "grant_type")?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(TokenError::UnsupportedGrantType(grant_type.to_owned()));
    }
    let policy = state.policy().clone();
    // Wrong *or missing* client credentials are a 401, as Atlassian documents.
    if request.client_id.as_deref() != Some(policy.client_id.as_str())
        || request.client_secret.as_deref() != Some(policy.client_secret.as_str())
    {
        return Err(TokenError::InvalidClient);
    }
    if grant_type == "authorization_code" {
        let code = required(&request.code, "code")?;
        let redirect_uri = required(&request.redirect_uri, "redirect_uri")?;
        let issued = state
            .exchange_code(
                &policy.client_id,
                code,
                redirect_uri,
                request.code_verifier.as_deref(),
                now,
            )
            .map_err(|rejection| {
                tracing::info!(reason = %rejection, "emulator: code exchange refused");
                TokenError::InvalidCode
            })?;
        tracing::debug!(account.id = %issued.account_id, "emulator: code exchanged");
        Ok(success(issued, &policy))
    } else {
        let refresh_token = required(&request.refresh_token, "refresh_token")?;
        let (issued, rotation) = state.refresh(refresh_token, now).map_err(|rejection| {
            tracing::info!(reason = %rejection, "emulator: refresh refused");
            TokenError::InvalidRefreshToken(policy.refresh_error_variant)
        })?;
        tracing::debug!(account.id = %issued.account_id, ?rotation, "emulator: refresh token rotated");
        Ok(success(issued, &policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_uses_percent_20_for_spaces() {
        assert_eq!(
            percent_encode("User did not authorize"),
            "User%20did%20not%20authorize"
        );
        assert_eq!(percent_encode("a+b/c~"), "a%2Bb%2Fc~");
    }

    #[test]
    fn token_request_rejects_duplicates_and_non_strings() {
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(TokenRequest::parse(&form, b"code=a&code=b").is_err());
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(TokenRequest::parse(&json, br#"{"code": 5}"#).is_err());
        assert!(TokenRequest::parse(&json, b"not json").is_err());
        let parsed = TokenRequest::parse(&json, br#"{"code":"x","extra":1}"#).expect("valid");
        assert_eq!(parsed.code.as_deref(), Some("x"));
    }
}
