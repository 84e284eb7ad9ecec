//! The emulator's OAuth server, identity endpoints and gateway, over real HTTP on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use atlassian_emulator::{
    ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, NewUser, Product,
    RefreshErrorVariant,
};
use atlassync_clock::ManualClock;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "https://app.example.com/callback";
const ALL_SCOPES: &str =
    "read:jira-work read:jira-user read:space:confluence read:me offline_access";
const INVALID_REFRESH: &str =
    r#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#;

struct Env {
    emu: EmulatorHandle,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    account: String,
    /// A site running Jira and Confluence.
    site: String,
}

fn start_instant() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
        .expect("valid instant")
        .with_timezone(&Utc)
}

async fn start_with(config: EmulatorConfig) -> Env {
    let clock = Arc::new(ManualClock::new(start_instant()));
    let emu = Emulator::start(
        config,
        clock.clone(),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("emulator starts");
    let site = emu.add_site("acme", &[Product::Jira, Product::Confluence]);
    let account = emu.add_user(NewUser {
        name: "Mia Krystof".into(),
        email: "mia@example.com".into(),
        zoneinfo: "Australia/Sydney".into(),
        jira_time_zone: "America/New_York".into(),
        sites: vec![site.clone()],
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    Env {
        emu,
        clock,
        http,
        account,
        site,
    }
}

async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

impl Env {
    fn url(&self, path: &str) -> Url {
        self.emu.base_url().join(path).expect("url")
    }

    fn authorize_url(&self, scopes: &str) -> Url {
        let mut url = self.url("authorize");
        url.query_pairs_mut()
            .append_pair("audience", "api.atlassian.com")
            .append_pair("client_id", "emulator-client")
            .append_pair("scope", scopes)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "st4te")
            .append_pair("response_type", "code")
            .append_pair("prompt", "consent");
        url
    }

    /// GET /authorize with a queued accept; returns the code from the redirect.
    async fn code(&self, scopes: &str) -> String {
        self.emu.queue_consent(ConsentDecision::Accept {
            account_id: self.account.clone(),
            sites: None,
        });
        let response = self
            .http
            .get(self.authorize_url(scopes))
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = location(&response);
        assert_eq!(query(&location, "state").as_deref(), Some("st4te"));
        query(&location, "code").expect("code in redirect")
    }

    async fn exchange_json(&self, code: &str, redirect_uri: &str) -> reqwest::Response {
        self.http
            .post(self.url("oauth/token"))
            .json(&json!({
                "grant_type": "authorization_code",
                "client_id": "emulator-client",
                "client_secret": "emulator-secret",
                "code": code,
                "redirect_uri": redirect_uri,
            }))
            .send()
            .await
            .expect("token call")
    }

    /// Consent + code exchange; returns the token response body.
    async fn connect(&self, scopes: &str) -> Value {
        let code = self.code(scopes).await;
        let response = self.exchange_json(&code, REDIRECT).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.http
            .post(self.url("oauth/token"))
            .json(&json!({
                "grant_type": "refresh_token",
                "client_id": "emulator-client",
                "client_secret": "emulator-secret",
                "refresh_token": refresh_token,
            }))
            .send()
            .await
            .expect("token call")
    }

    /// Refreshes, expecting success; returns the new refresh token.
    async fn rotate(&self, refresh_token: &str) -> String {
        let response = self.refresh(refresh_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        text(&body, "refresh_token")
    }

    async fn get_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("gateway call")
    }

    fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }
}

fn location(response: &reqwest::Response) -> Url {
    let raw = response
        .headers()
        .get(reqwest::header::LOCATION)
        .expect("Location header")
        .to_str()
        .expect("ascii location");
    Url::parse(raw).expect("absolute location")
}

fn query(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn text(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {body}"))
        .to_owned()
}

async fn body_text(response: reqwest::Response) -> String {
    response.text().await.expect("body")
}

fn assert_jwt_shaped(token: &str) {
    assert!(token.starts_with("eyJ"), "{token}");
    assert_eq!(token.split('.').count(), 3, "{token}");
}

async fn assert_refresh_refused(env: &Env, token: &str) {
    let response = env.refresh(token).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_text(response).await, INVALID_REFRESH);
}

// ----- code exchange ---------------------------------------------------------------------------

#[tokio::test]
async fn code_exchange_with_a_json_body_returns_the_documented_fields() {
    let env = start().await;
    let body = env.connect(ALL_SCOPES).await;
    assert_jwt_shaped(&text(&body, "access_token"));
    assert_jwt_shaped(&text(&body, "refresh_token"));
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], ALL_SCOPES);
    assert_eq!(env.emu.counters().code_exchanges, 1);
}

#[tokio::test]
async fn code_exchange_with_a_form_body_works_too() {
    let env = start().await;
    let code = env.code(ALL_SCOPES).await;
    let response = env
        .http
        .post(env.url("oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "emulator-client"),
            ("client_secret", "emulator-secret"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .expect("token call");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_jwt_shaped(&text(&body, "access_token"));
    let refreshed = env
        .http
        .post(env.url("oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "emulator-client"),
            ("client_secret", "emulator-secret"),
            ("refresh_token", text(&body, "refresh_token").as_str()),
        ])
        .send()
        .await
        .expect("token call");
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[tokio::test]
async fn no_refresh_token_is_issued_without_offline_access() {
    let env = start().await;
    let body = env.connect("read:me read:jira-user").await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "read:me read:jira-user");
}

#[tokio::test]
async fn authorization_code_is_single_use() {
    let env = start().await;
    let code = env.code(ALL_SCOPES).await;
    assert_eq!(
        env.exchange_json(&code, REDIRECT).await.status(),
        StatusCode::OK
    );
    let again = env.exchange_json(&code, REDIRECT).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body_text(again).await,
        r#"{"error":"invalid_grant","error_description":"Invalid authorization code"}"#
    );
}

#[tokio::test]
async fn code_exchange_refuses_a_redirect_mismatch_and_an_expired_code() {
    let env = start().await;
    let code = env.code(ALL_SCOPES).await;
    let mismatch = env
        .exchange_json(&code, "https://app.example.com/callback/")
        .await;
    assert_eq!(mismatch.status(), StatusCode::FORBIDDEN);

    let code = env.code(ALL_SCOPES).await;
    env.advance(TimeDelta::minutes(10));
    let expired = env.exchange_json(&code, REDIRECT).await;
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
    assert_eq!(env.emu.counters().invalid_grant_errors, 2);
}

#[tokio::test]
async fn token_endpoint_answers_client_and_request_errors_with_their_bodies() {
    let env = start().await;
    let post = |body: Value| env.http.post(env.url("oauth/token")).json(&body).send();

    let wrong_secret = post(
        json!({"grant_type": "refresh_token", "client_id": "emulator-client",
        "client_secret": "nope", "refresh_token": "x"}),
    )
    .await
    .expect("call");
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body_text(wrong_secret).await,
        r#"{"error":"access_denied","error_description":"Unauthorized"}"#
    );

    let missing_code = post(
        json!({"grant_type": "authorization_code", "client_id": "emulator-client",
        "client_secret": "emulator-secret", "redirect_uri": REDIRECT}),
    )
    .await
    .expect("call");
    assert_eq!(missing_code.status(), StatusCode::BAD_REQUEST);
    let body: Value = missing_code.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");

    let bad_grant = post(
        json!({"grant_type": "password", "client_id": "emulator-client",
        "client_secret": "emulator-secret"}),
    )
    .await
    .expect("call");
    assert_eq!(bad_grant.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad_grant.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");

    let not_json = env
        .http
        .post(env.url("oauth/token"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("call");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let body: Value = not_json.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
}

// ----- rotation rules --------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_the_token_and_the_new_one_works() {
    let env = start().await;
    let first = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.advance(TimeDelta::minutes(50));
    let response = env.refresh(&first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], ALL_SCOPES);
    let second = text(&body, "refresh_token");
    assert_ne!(first, second);
    env.advance(TimeDelta::minutes(50));
    env.rotate(&second).await;
    assert_eq!(env.emu.counters().refreshes, 2);
}

#[tokio::test]
async fn reuse_inside_the_leeway_is_allowed_and_counted() {
    let env = start().await;
    let first = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.rotate(&first).await;
    env.advance(TimeDelta::minutes(9));
    let newest = env.rotate(&first).await;
    let counters = env.emu.counters();
    assert_eq!(counters.reuses_in_leeway, 1);
    assert_eq!(counters.family_revocations, 0);
    env.rotate(&newest).await;
}

#[tokio::test]
async fn reuse_after_the_leeway_kills_the_family_so_even_the_newest_token_fails() {
    let env = start().await;
    let connected = env.connect(ALL_SCOPES).await;
    let first = text(&connected, "refresh_token");
    let newest = env.rotate(&first).await;
    env.advance(TimeDelta::minutes(10) + TimeDelta::seconds(1));
    assert_refresh_refused(&env, &first).await;
    assert_refresh_refused(&env, &newest).await;
    // Revocation also kills the family's access tokens (the default).
    let me = env
        .get_bearer("me", &text(&connected, "access_token"))
        .await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let counters = env.emu.counters();
    assert_eq!(counters.family_revocations, 1);
    assert_eq!(counters.invalid_grant_errors, 2);
}

#[tokio::test]
async fn refresh_token_dies_after_the_inactivity_expiry() {
    let env = start().await;
    let first = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.advance(TimeDelta::days(89));
    let second = env.rotate(&first).await;
    env.advance(TimeDelta::days(90) + TimeDelta::seconds(1));
    assert_refresh_refused(&env, &second).await;
}

#[tokio::test]
async fn family_dies_at_the_absolute_expiry_even_when_rotated_often() {
    let env = start().await;
    let mut token = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    for _ in 0..4 {
        env.advance(TimeDelta::days(80));
        token = env.rotate(&token).await;
    }
    env.advance(TimeDelta::days(45) + TimeDelta::seconds(1)); // 365 d + 1 s after consent
    assert_refresh_refused(&env, &token).await;
    // A new consent starts a new family.
    let fresh = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.rotate(&fresh).await;
}

#[tokio::test]
async fn lifetimes_are_configurable_down_to_seconds() {
    let env = start_with(EmulatorConfig {
        access_token_ttl: Duration::from_secs(2),
        inactivity_expiry: Duration::from_secs(5),
        ..EmulatorConfig::default()
    })
    .await;
    let body = env.connect(ALL_SCOPES).await;
    assert_eq!(body["expires_in"], 2);
    env.advance(TimeDelta::seconds(6));
    let me = env.get_bearer("me", &text(&body, "access_token")).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    assert_refresh_refused(&env, &text(&body, "refresh_token")).await;
}

#[tokio::test]
async fn password_change_kills_refresh_tokens_issued_before_it() {
    let env = start().await;
    let token = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.advance(TimeDelta::minutes(1));
    env.emu.change_password(&env.account);
    assert_refresh_refused(&env, &token).await;
    let after = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    env.rotate(&after).await;
}

#[tokio::test]
async fn revoking_the_app_kills_refresh_and_access_tokens() {
    let env = start().await;
    let body = env.connect(ALL_SCOPES).await;
    env.emu.revoke_app(&env.account);
    assert_refresh_refused(&env, &text(&body, "refresh_token")).await;
    let resources = env
        .get_bearer(
            "oauth/token/accessible-resources",
            &text(&body, "access_token"),
        )
        .await;
    assert_eq!(resources.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_unauthorized_client_refresh_variant_is_configurable() {
    let env = start_with(EmulatorConfig {
        refresh_error_variant: RefreshErrorVariant::UnauthorizedClient,
        ..EmulatorConfig::default()
    })
    .await;
    let response = env.refresh("eyJunknown.token.here").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body_text(response).await,
        r#"{"error":"unauthorized_client","error_description":"refresh_token is invalid"}"#
    );
}

// ----- identity and gateway --------------------------------------------------------------------

#[tokio::test]
async fn accessible_resources_lists_a_jira_and_confluence_site_twice_with_the_same_id() {
    let env = start().await;
    let access = text(&env.connect(ALL_SCOPES).await, "access_token");
    let response = env
        .get_bearer("oauth/token/accessible-resources", &access)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!([
            {"id": env.site, "name": "acme", "url": "https://acme.atlassian.net",
             "scopes": ["read:jira-work", "read:jira-user"],
             "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png"},
            {"id": env.site, "name": "acme", "url": "https://acme.atlassian.net",
             "scopes": ["read:space:confluence"],
             "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png"},
        ])
    );

    env.emu.revoke_site(&env.account, &env.site);
    let body: Value = env
        .get_bearer("oauth/token/accessible-resources", &access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn accessible_resources_is_empty_for_a_read_me_only_grant() {
    let env = start().await;
    let access = text(&env.connect("read:me").await, "access_token");
    let body: Value = env
        .get_bearer("oauth/token/accessible-resources", &access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn me_returns_the_profile_and_needs_read_me() {
    let env = start().await;
    let access = text(&env.connect(ALL_SCOPES).await, "access_token");
    let response = env.get_bearer("me", &access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["account_type"], "atlassian");
    assert_eq!(body["account_id"], env.account.as_str());
    assert_eq!(body["email"], "mia@example.com");
    assert_eq!(body["name"], "Mia Krystof");
    assert_eq!(body["account_status"], "active");
    assert_eq!(body["zoneinfo"], "Australia/Sydney");
    for field in ["picture", "nickname", "locale", "extended_profile"] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }

    let jira_only = text(&env.connect("read:jira-user").await, "access_token");
    let response = env.get_bearer("me", &jira_only).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body_text(response).await,
        r#"{"code":401,"message":"Unauthorized; scope does not match"}"#
    );
}

#[tokio::test]
async fn gateway_answers_the_documented_401_and_404_bodies() {
    let env = start().await;
    let access = text(&env.connect(ALL_SCOPES).await, "access_token");
    let unauthorized = r#"{"code":401,"message":"Unauthorized"}"#;

    let no_token = env.http.get(env.url("me")).send().await.expect("call");
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(no_token).await, unauthorized);

    let garbage = env
        .get_bearer("oauth/token/accessible-resources", "garbage")
        .await;
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(garbage).await, unauthorized);

    let myself = format!("ex/jira/{}/rest/api/3/myself", env.site);
    let response = env.get_bearer(&myself, &access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-aaccountid")
            .and_then(|v| v.to_str().ok()),
        Some(env.account.as_str())
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["accountId"], env.account.as_str());
    assert_eq!(body["timeZone"], "America/New_York");
    assert!(
        text(&body, "self").starts_with(&format!("{}ex/jira/{}/", env.emu.base_url(), env.site)),
        "{body}"
    );

    let unknown_site = env
        .get_bearer(
            "ex/jira/00000000-0000-0000-0000-000000000000/rest/api/3/myself",
            &access,
        )
        .await;
    assert_eq!(unknown_site.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body_text(unknown_site).await,
        r#"{"code":404,"message":"Not Found"}"#
    );

    let confluence_only = text(&env.connect("read:space:confluence").await, "access_token");
    let mismatch = env.get_bearer(&myself, &confluence_only).await;
    assert_eq!(mismatch.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body_text(mismatch).await,
        r#"{"code":401,"message":"Unauthorized; scope does not match"}"#
    );

    env.advance(TimeDelta::hours(1));
    let expired = env.get_bearer(&myself, &access).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(expired).await, unauthorized);

    let counters = env.emu.counters();
    assert_eq!(counters.api_calls, 6);
    assert_eq!(counters.unauthorized_api_calls, 4);
}

#[tokio::test]
async fn unemulated_product_paths_still_get_the_gateway_checks() {
    let env = start().await;
    let access = text(&env.connect(ALL_SCOPES).await, "access_token");
    let path = format!("ex/confluence/{}/wiki/api/v2/pages", env.site);
    let anonymous = env.http.get(env.url(&path)).send().await.expect("call");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let jira_path = format!("ex/jira/{}/rest/api/3/nothing-here", env.site);
    let authed = env.get_bearer(&jira_path, &access).await;
    assert_eq!(authed.status(), StatusCode::NOT_FOUND);
    let body: Value = authed.json().await.expect("json");
    assert!(body.get("errorMessages").is_some(), "{body}");
}

#[tokio::test]
async fn set_scopes_rescopes_accessible_resources_and_gateway_checks() {
    let env = start().await;
    let access = text(&env.connect(ALL_SCOPES).await, "access_token");
    env.emu
        .set_scopes(&env.account, &["read:space:confluence", "offline_access"]);
    let body: Value = env
        .get_bearer("oauth/token/accessible-resources", &access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body[0]["scopes"], json!(["read:space:confluence"]));
    let me = env.get_bearer("me", &access).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}

// ----- consent page ----------------------------------------------------------------------------

/// The hidden request id from the consent page.
fn request_id(html: &str) -> String {
    let marker = "name=\"request_id\" value=\"";
    let start = html.find(marker).expect("request_id field") + marker.len();
    let end = html[start..].find('"').expect("end of value") + start;
    html[start..end].to_owned()
}

async fn consent_page(env: &Env) -> String {
    let response = env
        .http
        .get(env.authorize_url(ALL_SCOPES))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    body_text(response).await
}

#[tokio::test]
async fn consent_page_accept_redirects_with_a_working_code() {
    let env = start().await;
    let html = consent_page(&env).await;
    assert!(html.contains(&format!("<option value=\"{}\">", env.account)));
    assert!(html.contains(&format!("name=\"site\" value=\"{}\"", env.site)));
    assert!(html.contains("<code>read:space:confluence</code>"));
    assert!(html.contains("action=\"/authorize/decision\""));

    let id = request_id(&html);
    let response = env
        .http
        .post(env.url("authorize/decision"))
        .form(&[
            ("request_id", id.as_str()),
            ("account_id", env.account.as_str()),
            ("site", env.site.as_str()),
            ("decision", "accept"),
        ])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = location(&response);
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    assert_eq!(query(&location, "state").as_deref(), Some("st4te"));
    let code = query(&location, "code").expect("code");
    assert_eq!(
        env.exchange_json(&code, REDIRECT).await.status(),
        StatusCode::OK
    );

    // The parked request is single use.
    let replay = env
        .http
        .post(env.url("authorize/decision"))
        .form(&[("request_id", id.as_str()), ("decision", "deny")])
        .send()
        .await
        .expect("decision");
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn consent_page_deny_redirects_with_access_denied() {
    let env = start().await;
    let id = request_id(&consent_page(&env).await);
    let response = env
        .http
        .post(env.url("authorize/decision"))
        .form(&[("request_id", id.as_str()), ("decision", "deny")])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::FOUND);
    let raw = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        raw,
        format!(
            "{REDIRECT}?error=access_denied&error_description=User%20did%20not%20authorize%20the%20request&state=st4te"
        )
    );
}

#[tokio::test]
async fn queued_deny_redirects_at_once() {
    let env = start().await;
    env.emu.queue_consent(ConsentDecision::Deny);
    let response = env
        .http
        .get(env.authorize_url(ALL_SCOPES))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = location(&response);
    assert_eq!(query(&location, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&location, "state").as_deref(), Some("st4te"));
}

#[tokio::test]
async fn authorize_refuses_invalid_requests_with_an_html_page_and_no_redirect() {
    let env = start().await;
    let with = |key: &str, value: Option<&str>| {
        let mut url = env.authorize_url(ALL_SCOPES);
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != key)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .chain(value.map(|v| (key.to_owned(), v.to_owned())))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url
    };
    for url in [
        with("client_id", Some("someone-else")),
        with("audience", Some("example.com")),
        with("response_type", Some("token")),
        with("redirect_uri", None),
        with("redirect_uri", Some("not a url")),
        with("scope", Some("  ")),
    ] {
        let response = env.http.get(url.clone()).send().await.expect("authorize");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(response.headers().get(reqwest::header::LOCATION).is_none());
        assert!(body_text(response).await.contains("<html"));
    }
}

// ----- control API and lifecycle ---------------------------------------------------------------

#[tokio::test]
async fn control_api_mirrors_the_handle() {
    let env = start().await;
    let post = |path: &str, body: Value| env.http.post(env.url(path)).json(&body).send();

    let site: Value = post(
        "_emulator/sites",
        json!({"name": "beta", "products": ["jira"]}),
    )
    .await
    .expect("call")
    .json()
    .await
    .expect("json");
    let cloud_id = text(&site, "cloud_id");
    let user = post(
        "_emulator/users",
        json!({"name": "Sam Ortiz", "email": "sam@example.com", "zoneinfo": "America/New_York",
               "jira_time_zone": "America/New_York", "sites": [cloud_id]}),
    )
    .await
    .expect("call");
    assert_eq!(user.status(), StatusCode::CREATED);
    let account = text(&user.json::<Value>().await.expect("json"), "account_id");

    let queued = post(
        "_emulator/consent-queue",
        json!({"decision": "accept", "account_id": account}),
    )
    .await
    .expect("call");
    assert_eq!(queued.status(), StatusCode::NO_CONTENT);
    let response = env
        .http
        .get(env.authorize_url(ALL_SCOPES))
        .send()
        .await
        .expect("authorize");
    let code = query(&location(&response), "code").expect("code");
    let tokens: Value = env
        .exchange_json(&code, REDIRECT)
        .await
        .json()
        .await
        .expect("json");
    let access = text(&tokens, "access_token");
    let resources: Value = env
        .get_bearer("oauth/token/accessible-resources", &access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(resources[0]["id"], cloud_id.as_str());

    let rescoped = post(
        &format!("_emulator/grants/{account}/scopes"),
        json!({"scopes": ["read:me", "offline_access"]}),
    )
    .await
    .expect("call");
    assert_eq!(rescoped.status(), StatusCode::NO_CONTENT);
    let revoked_site = post(
        &format!("_emulator/grants/{account}/revoke-site"),
        json!({"cloud_id": cloud_id}),
    )
    .await
    .expect("call");
    assert_eq!(revoked_site.status(), StatusCode::NO_CONTENT);

    let before: Value = env
        .http
        .get(env.url("_emulator/clock"))
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(before["now"], "2026-11-22T09:00:00.000Z");
    let advanced: Value = post("_emulator/clock/advance", json!({"seconds": 3600}))
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(advanced["now"], "2026-11-22T10:00:00.000Z");
    assert_eq!(
        env.emu.now(),
        start_instant() + TimeDelta::hours(1),
        "the handle sees the control API's offset"
    );

    let refused = env.refresh(&text(&tokens, "refresh_token")).await;
    assert_eq!(
        refused.status(),
        StatusCode::OK,
        "1 h is inside every lifetime"
    );
    let password = post(
        &format!("_emulator/users/{account}/change-password"),
        json!({}),
    )
    .await
    .expect("call");
    assert_eq!(password.status(), StatusCode::NO_CONTENT);
    let revoke = post(&format!("_emulator/users/{account}/revoke-app"), json!({}))
        .await
        .expect("call");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);

    let unknown = post("_emulator/users/nobody/revoke-app", json!({}))
        .await
        .expect("call");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad = post("_emulator/clock/advance", json!({"seconds": -1}))
        .await
        .expect("call");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let counters: Value = env
        .http
        .get(env.url("_emulator/counters"))
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(counters["code_exchanges"], 1);
    assert_eq!(counters["refreshes"], 1);
    assert_eq!(counters["api_calls"], 1);
}

#[tokio::test]
async fn emulator_clock_is_the_injected_clock_plus_its_own_offset() {
    let env = start().await;
    env.clock.advance(TimeDelta::days(1));
    env.emu.advance_clock(TimeDelta::hours(2));
    assert_eq!(
        env.emu.now(),
        start_instant() + TimeDelta::days(1) + TimeDelta::hours(2)
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let env = start().await;
    let url = env.url("_emulator/clock");
    assert!(env.http.get(url.clone()).send().await.is_ok());
    env.emu.shutdown();
    let fresh = reqwest::Client::new();
    let mut stopped = false;
    for _ in 0..50 {
        if fresh.get(url.clone()).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "server still answering after shutdown");
}

#[tokio::test]
async fn a_slow_answer_rotates_first_and_a_lost_response_after_rotating() {
    use atlassian_emulator::{Fault, FaultKind};
    let env = start().await;
    let first = text(&env.connect(ALL_SCOPES).await, "refresh_token");
    // The answer comes after 1.5 s; this client gives up after 0.5 s. The rotation happened.
    env.emu.inject_fault(Fault::new(
        FaultKind::SlowAnswer { millis: 1_500 },
        "/oauth/token",
    ));
    let impatient = env
        .http
        .post(env.url("oauth/token"))
        .timeout(Duration::from_millis(500))
        .json(&json!({
            "grant_type": "refresh_token",
            "client_id": "emulator-client",
            "client_secret": "emulator-secret",
            "refresh_token": first,
        }))
        .send()
        .await;
    assert!(impatient.is_err(), "the client timed out");
    assert_eq!(env.emu.counters().refreshes, 1, "rotated before answering");
    // The same token again, inside the leeway: a reuse. Its response is lost after rotating.
    env.emu
        .inject_fault(Fault::new(FaultKind::LostResponse, "/oauth/token"));
    let lost = env
        .http
        .post(env.url("oauth/token"))
        .json(&json!({
            "grant_type": "refresh_token",
            "client_id": "emulator-client",
            "client_secret": "emulator-secret",
            "refresh_token": first,
        }))
        .send()
        .await;
    assert!(
        lost.is_err() || lost.is_ok_and(|r| r.status().is_server_error()),
        "no usable answer"
    );
    let counters = env.emu.counters();
    assert_eq!(
        (counters.refreshes, counters.reuses_in_leeway),
        (2, 1),
        "{counters:?}"
    );
}
