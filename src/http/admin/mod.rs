//! `/admin`: the operator's page, behind `http.admin_token`.
//!
//! Without an admin token the page says it is disabled (403) and shows nothing else. With
//! one, a browser logs in with the token (a signed session cookie, [`session`]) and scripts
//! send it as `Authorization: Bearer`. Every state-changing form carries a CSRF token
//! derived from the session. Every answer forbids caching, framing and referrers, and its
//! Content-Security-Policy allows no script at all.

mod session;
mod view;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;

use super::auth::{bearer_allows, constant_time_eq, cookie};
use crate::app::App;
use crate::crypto::random_token;
use crate::domain::GrantId;
use crate::store::grants;
use session::{SESSION_COOKIE, Session, SessionKey, clear_cookie};
use view::AdminData;

/// The admin routes, merged into the server's router.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(show))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/grants/{id}/reconsent", post(reconsent))
}

/// Who is asking.
enum Access {
    /// No `http.admin_token` is configured.
    Disabled,
    /// No valid session or bearer token.
    Denied,
    /// A script with `Authorization: Bearer <admin token>`: it may read, but it has no
    /// session, so no CSRF token and no forms.
    Bearer,
    /// A browser that logged in.
    Session(Session),
}

fn access(app: &App, key: Option<&SessionKey>, headers: &HeaderMap) -> Access {
    let Some(key) = key else {
        return Access::Disabled;
    };
    if let Some(session) =
        cookie(headers, SESSION_COOKIE).and_then(|value| key.verify(&value, app.clock.now()))
    {
        return Access::Session(session);
    }
    if bearer_allows(app, headers) {
        return Access::Bearer;
    }
    Access::Denied
}

fn secure(app: &App) -> bool {
    app.config.http.public_url.scheme() == "https"
}

/// `GET /admin`.
async fn show(State(app): State<App>, headers: HeaderMap) -> Response {
    let key = SessionKey::of(&app);
    let csrf = match access(&app, key.as_ref(), &headers) {
        Access::Disabled => return disabled(),
        Access::Denied => return login_form(None),
        Access::Bearer => None,
        Access::Session(session) => key.as_ref().map(|k| k.csrf_token(&session)),
    };
    match view::gather(&app).await {
        Ok(data) => render(StatusCode::OK, |nonce| AdminPage { nonce, csrf, data }),
        Err(e) => {
            tracing::error!(error = %e, "admin page: could not read the database");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unreachable",
                "The admin page could not read the database. Try again in a moment.",
            )
        }
    }
}

/// `POST /admin/login` with form field `token`.
async fn login(State(app): State<App>, body: Bytes) -> Response {
    let (Some(token), Some(key)) = (&app.config.http.admin_token, SessionKey::of(&app)) else {
        return disabled();
    };
    let presented = form_field(&body, "token").unwrap_or_default();
    if !constant_time_eq(
        presented.trim().as_bytes(),
        token.expose_secret().as_bytes(),
    ) {
        tracing::warn!("admin login refused: wrong token");
        return login_form(Some("That is not the admin token."));
    }
    let session = key.issue(app.clock.now());
    tracing::info!("admin login");
    let mut response = see_other("/admin");
    set_cookie(&mut response, &session.set_cookie(secure(&app)));
    response
}

/// `POST /admin/logout` with the CSRF token.
async fn logout(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = form_refusal(&app, &headers, &body) {
        return refusal;
    }
    let mut response = see_other("/admin");
    set_cookie(&mut response, &clear_cookie(secure(&app)));
    response
}

/// `POST /admin/grants/{id}/reconsent` with the CSRF token: mints a fresh re-consent link
/// for the grant and shows it once. The link is not stored or logged.
async fn reconsent(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = form_refusal(&app, &headers, &body) {
        return refusal;
    }
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            "No such grant",
            "That grant does not exist (it may have been deleted).",
        )
    };
    let Ok(id) = id.parse::<uuid::Uuid>().map(GrantId::from) else {
        return not_found();
    };
    let grant = async {
        let mut conn = app.pool.acquire().await?;
        grants::get_grant(&mut conn, id).await
    }
    .await;
    let grant = match grant {
        Ok(Some(grant)) => grant,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "admin page: could not read the grant");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unreachable",
                "The grant could not be read. Try again in a moment.",
            );
        }
    };
    let now = app.clock.now();
    let deadline =
        view::reconsent_deadline(grant.family_deadline, now, app.config.tokens.reauth_warning);
    let link = app.reconsent_link(&grant.label, grant.account_id.as_ref(), deadline);
    tracing::info!(grant.id = %grant.id, grant.label = %grant.label, "admin minted a re-consent link");
    render(StatusCode::OK, |nonce| LinkPage {
        nonce,
        label: grant.label.clone(),
        account: grant
            .account_id
            .as_ref()
            .map_or_else(|| "(unidentified)".to_owned(), ToString::to_string),
        bound: grant.account_id.is_some(),
        link: link.to_string(),
    })
}

/// The refusal to send to a state-changing request, unless it comes with a session and
/// that session's CSRF token.
fn form_refusal(app: &App, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let key = SessionKey::of(app);
    let session = match access(app, key.as_ref(), headers) {
        Access::Disabled => return Some(disabled()),
        Access::Session(session) => session,
        Access::Denied | Access::Bearer => {
            return Some(message(
                StatusCode::FORBIDDEN,
                "Not logged in",
                "Your admin session is missing or has expired. Log in again.",
            ));
        }
    };
    let presented = form_field(body, "csrf").unwrap_or_default();
    let key = key.expect("a session implies a key");
    if !key.csrf_matches(&session, &presented) {
        tracing::warn!("admin form refused: missing or wrong CSRF token");
        return Some(message(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not come from the admin page (its CSRF token is missing or wrong). \
             Reload the admin page and try again.",
        ));
    }
    None
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn disabled() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Admin page disabled",
        "The admin page is disabled until http.admin_token is set in the configuration.",
    )
}

fn login_form(error: Option<&str>) -> Response {
    let mut response = render(StatusCode::UNAUTHORIZED, |nonce| LoginPage {
        nonce,
        error: error.map(str::to_owned),
    });
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"atlassync admin\""),
    );
    response
}

fn message(status: StatusCode, title: &'static str, text: &'static str) -> Response {
    render(status, |nonce| MessagePage { nonce, title, text })
}

fn see_other(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    harden(response, None);
}

/// Renders a template with a fresh style nonce and the admin headers.
fn render<T: Template>(status: StatusCode, page: impl FnOnce(String) -> T) -> Response {
    let nonce = random_token();
    let mut response = match page(nonce.clone()).render() {
        Ok(html) => (status, html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin page: template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error\n").into_response()
        }
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    harden(&mut response, Some(&nonce));
    response
}

/// The headers every admin answer carries: no script, styles only from the page's own
/// `<style nonce>`, forms only to this origin, never framed, cached or referred.
fn harden(response: &mut Response, style_nonce: Option<&str>) {
    let style = style_nonce.map_or_else(|| "'none'".to_owned(), |nonce| format!("'nonce-{nonce}'"));
    let csp = format!(
        "default-src 'none'; style-src {style}; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The admin page itself.
#[derive(Template)]
#[template(path = "admin/page.html")]
struct AdminPage {
    nonce: String,
    /// `None` for a bearer request: no forms are drawn.
    csrf: Option<String>,
    data: AdminData,
}

/// The login form (401).
#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    nonce: String,
    error: Option<String>,
}

/// A freshly minted re-consent link, shown once.
#[derive(Template)]
#[template(path = "admin/link.html")]
struct LinkPage {
    nonce: String,
    label: String,
    account: String,
    bound: bool,
    link: String,
}

/// A title and a sentence: disabled, refused, not found.
#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage {
    nonce: String,
    title: &'static str,
    text: &'static str,
}
