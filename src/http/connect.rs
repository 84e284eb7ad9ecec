//! The consent flow: an invite link starts it, the OAuth callback finishes it.
//!
//! CSRF defence: `/connect` binds a random state to the browser with a cookie and records its
//! digest; the callback requires the cookie, the query state and a recorded, unconsumed,
//! unexpired state to agree, and consumes it. Anything else is refused with nothing stored.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{constant_time_eq, cookie};
use super::pages::{escape, page, refused};
use crate::app::App;
use crate::crypto::random_token;
use crate::domain::AuthorizationCode;
use crate::invite::{Invite, InviteError};
use crate::onboarding::{self, OnboardError};
use crate::store::oauth_states::{self, InviteOrigin, StateRejection};
use crate::store::spent_invites;

/// The cookie carrying the state between `/connect` and the callback.
pub const STATE_COOKIE: &str = "atlassync_state";
/// How long a user has between opening the invite and returning from Atlassian.
const STATE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

#[derive(Deserialize)]
pub struct ConnectQuery {
    invite: Option<String>,
}

/// `GET /connect?invite=...`: checks the invite, then sends the browser to Atlassian.
pub async fn start(State(app): State<App>, Query(query): Query<ConnectQuery>) -> Response {
    let now = app.clock.now();
    let Some(signed) = query.invite else {
        return refused("Invite link incomplete", "The link has no invite in it.");
    };
    let invite = match Invite::verify(app.keyring(), &signed, now) {
        Ok(invite) => invite,
        Err(e @ (InviteError::Tampered | InviteError::Expired(_))) => {
            tracing::warn!(reason = %e, "invite link refused");
            return refused("Invite link not valid", &e.to_string());
        }
    };
    let origin = InviteOrigin {
        label: invite.label.clone(),
        invite_digest: Some(Invite::spend_key(&signed)),
        invite_expires_at: Some(invite.expires_at),
        account_id: invite.account_id.clone(),
    };
    let state = random_token();
    let recorded = async {
        let mut conn = app.pool.acquire().await?;
        if let Some(digest) = &origin.invite_digest
            && spent_invites::is_spent(&mut conn, digest).await?
        {
            return Ok(false);
        }
        oauth_states::record_state(&mut conn, &state, &origin, now, now + STATE_TTL).await?;
        Ok::<_, sqlx::Error>(true)
    }
    .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(grant.label = %invite.label, "spent invite link refused");
            return spent_link();
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record OAuth state");
            return unavailable();
        }
    }
    let secure = if app.config.http.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{STATE_COOKIE}={state}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        STATE_TTL.num_seconds()
    );
    let location = app.tokens.authorization_url(&state);
    let mut response = StatusCode::FOUND.into_response();
    for (name, value) in [
        (header::LOCATION, location.as_str()),
        (header::SET_COOKIE, &cookie),
    ] {
        match HeaderValue::from_str(value) {
            Ok(value) => {
                response.headers_mut().insert(name, value);
            }
            Err(_) => return unavailable(),
        }
    }
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The OAuth callback at the path of `atlassian.redirect_uri`.
pub async fn finish(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let mut response = finish_inner(&app, &headers, query).await;
    // The state is single-use whatever happened; drop the cookie.
    let clear = format!("{STATE_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn finish_inner(app: &App, headers: &HeaderMap, query: CallbackQuery) -> Response {
    let now = app.clock.now();
    let Some(cookie_state) = cookie(headers, STATE_COOKIE) else {
        tracing::warn!("callback without state cookie refused");
        return refused(
            "Sign-in could not be verified",
            "This browser did not start the sign-in (the state cookie is missing). Open the invite link again in the same browser.",
        );
    };
    let Some(state) = query.state.filter(|s| !s.is_empty()) else {
        return refused(
            "Sign-in could not be verified",
            "Atlassian's answer carried no state.",
        );
    };
    if !constant_time_eq(cookie_state.as_bytes(), state.as_bytes()) {
        tracing::warn!("callback with a state that does not match the cookie refused");
        return refused(
            "Sign-in could not be verified",
            "The state in Atlassian's answer does not match this browser's sign-in.",
        );
    }
    let consumed = async {
        let mut conn = app.pool.acquire().await?;
        oauth_states::consume_state(&mut conn, &state, now).await
    }
    .await;
    let origin = match consumed {
        Ok(Ok(origin)) => origin,
        Ok(Err(rejection)) => {
            let why = match rejection {
                StateRejection::Unknown => "This sign-in was not started here.",
                StateRejection::Replayed => {
                    "This sign-in was already completed; it cannot be used twice."
                }
                StateRejection::Expired => "This sign-in took too long and expired.",
            };
            tracing::warn!(?rejection, "callback state refused");
            return refused("Sign-in could not be verified", why);
        }
        Err(e) => {
            tracing::error!(error = %e, "could not consume OAuth state");
            return unavailable();
        }
    };

    let label = origin.label.clone();
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        tracing::info!(grant.label = %label, oauth.error = %error, "consent not granted");
        return page(
            StatusCode::BAD_REQUEST,
            "Access was not granted",
            &format!(
                "<p>Atlassian reported <code>{}</code>: {}.</p><p>Nothing was stored. If this was a mistake, open the invite link again.</p>",
                escape(&error),
                escape(&description)
            ),
        );
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        return refused(
            "Sign-in incomplete",
            "Atlassian's answer carried no authorization code.",
        );
    };

    // The link is spent by this consent; given back if nothing ends up stored.
    if let (Some(digest), Some(expires_at)) = (&origin.invite_digest, origin.invite_expires_at) {
        let spent = async {
            let mut conn = app.pool.acquire().await?;
            spent_invites::spend(&mut conn, digest, &label, now, expires_at).await
        }
        .await;
        match spent {
            Ok(true) => {}
            Ok(false) => return spent_link(),
            Err(e) => {
                tracing::error!(error = %e, "could not spend the invite link");
                return unavailable();
            }
        }
    }
    // Its own task: a browser that goes away (which drops this handler) must not leave the
    // link spent with nothing stored, nor cut a code exchange in half.
    let task = tokio::spawn({
        let app = app.clone();
        async move {
            let response = complete(&app, &origin, code).await;
            if !response.status().is_success()
                && let Some(digest) = &origin.invite_digest
            {
                let given_back = async {
                    let mut conn = app.pool.acquire().await?;
                    spent_invites::unspend(&mut conn, digest).await
                }
                .await;
                if let Err(e) = given_back {
                    tracing::warn!(error = %e, "could not give the invite link back after a failed consent");
                }
            }
            response
        }
    });
    task.await.unwrap_or_else(|_| unavailable())
}

/// Exchanges the code and stores the grant; the page the user sees.
async fn complete(app: &App, origin: &InviteOrigin, code: String) -> Response {
    let label = &origin.label;
    let tokens = match app
        .tokens
        .exchange_code(&AuthorizationCode::new(code))
        .await
    {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(grant.label = %label, error = %e, "authorization code exchange failed");
            return page(
                StatusCode::BAD_GATEWAY,
                "Could not complete the connection",
                &format!(
                    "<p>Atlassian refused the authorization: {}.</p><p>Nothing was stored. Open the invite link again.</p>",
                    escape(&e.to_string())
                ),
            );
        }
    };
    match onboarding::connect_consented(app, label, tokens, origin.account_id.as_ref()).await {
        Ok(connected) => {
            let sites: String = connected
                .sites
                .iter()
                .map(|s| {
                    format!(
                        "<li>{} ({})</li>",
                        escape(&s.name),
                        escape(s.product.as_str())
                    )
                })
                .collect();
            let verb = if connected.renewed {
                "renewed"
            } else {
                "connected"
            };
            page(
                StatusCode::OK,
                "Connected",
                &format!(
                    "<p>Thank you{}. atlassync {verb} your Atlassian account and can now reach:</p><ul>{sites}</ul><p>You can close this page.</p>",
                    connected
                        .account
                        .name
                        .as_deref()
                        .map(|n| format!(", {}", escape(n)))
                        .unwrap_or_default()
                ),
            )
        }
        Err(e) => {
            tracing::error!(grant.label = %label, error = %e, "storing a consented grant failed");
            let status = match e {
                OnboardError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                OnboardError::WrongAccount { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            page(
                status,
                "Could not complete the connection",
                &format!(
                    "<p>{}</p><p>Open the invite link again in a few minutes.</p>",
                    escape(&e.to_string())
                ),
            )
        }
    }
}

fn spent_link() -> Response {
    page(
        StatusCode::GONE,
        "Invite link already used",
        "<p>This link was already used to connect an account; each link works once. Ask for a new link.</p>",
    )
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "<p>atlassync cannot reach its database right now. Try again in a few minutes.</p>",
    )
}
