//! JSM Operations alerts through the gateway (`/ex/jira/{cloudid}/jsm/ops/api/v1/alerts…`) and
//! the control route `GET /_emulator/sites/{cloud_id}/jsm/alerts`, over real HTTP.

use std::sync::Arc;

use atlassian_emulator::{
    ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultKind, NewUser, Product,
};
use atlassync_clock::ManualClock;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "https://app.example.com/callback";
const OPS_SCOPES: &str =
    "read:ops-alert:jira-service-management write:ops-alert:jira-service-management offline_access";
const READ_ONLY: &str = "read:ops-alert:jira-service-management offline_access";
const JIRA_ONLY: &str = "read:jira-work offline_access";

struct Env {
    emu: EmulatorHandle,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    site: String,
    /// A Jira site the user cannot access.
    other_site: String,
    /// A Confluence-only site the user can access.
    wiki_site: String,
    mia: String,
}

async fn start() -> Env {
    let start = DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
        .expect("valid instant")
        .with_timezone(&Utc);
    let clock = Arc::new(ManualClock::new(start));
    let emu = Emulator::start(
        EmulatorConfig::default(),
        clock.clone(),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("emulator starts");
    let site = emu.add_site("acme", &[Product::Jira]);
    let other_site = emu.add_site("globex", &[Product::Jira]);
    let wiki_site = emu.add_site("wiki", &[Product::Confluence]);
    let mia = emu.add_user(NewUser {
        name: "Mia Krystof".into(),
        email: "mia@example.com".into(),
        zoneinfo: "UTC".into(),
        jira_time_zone: "UTC".into(),
        sites: vec![site.clone(), wiki_site.clone()],
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    Env {
        emu,
        clock,
        http,
        site,
        other_site,
        wiki_site,
        mia,
    }
}

impl Env {
    fn url(&self, path: &str) -> Url {
        self.emu.base_url().join(path).expect("url")
    }

    /// `…/jsm/ops/api/v1/alerts{rest}` on `site`.
    fn alerts_on(&self, site: &str, rest: &str) -> Url {
        self.url(&format!("ex/jira/{site}/jsm/ops/api/v1/alerts{rest}"))
    }

    fn alerts(&self, rest: &str) -> Url {
        self.alerts_on(&self.site, rest)
    }

    /// Consent plus code exchange for Mia with `scopes`; returns the access token.
    async fn token(&self, scopes: &str) -> String {
        self.emu.queue_consent(ConsentDecision::Accept {
            account_id: self.mia.clone(),
            sites: None,
        });
        let mut authorize = self.url("authorize");
        authorize
            .query_pairs_mut()
            .append_pair("audience", "api.atlassian.com")
            .append_pair("client_id", "emulator-client")
            .append_pair("scope", scopes)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "s")
            .append_pair("response_type", "code");
        let response = self.http.get(authorize).send().await.expect("authorize");
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = Url::parse(
            response.headers()[reqwest::header::LOCATION]
                .to_str()
                .expect("ascii"),
        )
        .expect("absolute");
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code");
        let body: Value = self
            .http
            .post(self.url("oauth/token"))
            .json(&json!({
                "grant_type": "authorization_code",
                "client_id": "emulator-client",
                "client_secret": "emulator-secret",
                "code": code,
                "redirect_uri": REDIRECT,
            }))
            .send()
            .await
            .expect("token call")
            .json()
            .await
            .expect("json");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    async fn get(&self, url: Url, token: &str) -> reqwest::Response {
        self.http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    async fn post(&self, url: Url, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Creates an alert (expects the documented 200) and returns its request id.
    async fn create(&self, token: &str, body: Value) -> String {
        let response = self.post(self.alerts(""), token, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = json_of(response).await;
        assert_eq!(body["result"], json!("Request will be processed"));
        assert!(body["took"].is_number(), "{body}");
        body["requestId"].as_str().expect("requestId").to_owned()
    }

    /// The request's status, which must exist.
    async fn request_status(&self, token: &str, request_id: &str) -> Value {
        let response = self
            .get(self.alerts(&format!("/requests/{request_id}")), token)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        json_of(response).await
    }

    /// Closes alert `id` (expects 202) and returns the request's status.
    async fn close(&self, token: &str, id: &str, body: &Value) -> Value {
        let response = self
            .post(self.alerts(&format!("/{id}/close")), token, body)
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted = json_of(response).await;
        assert_eq!(accepted["result"], json!("Request will be processed"));
        let request_id = accepted["requestId"].as_str().expect("requestId");
        self.request_status(token, request_id).await
    }

    /// `GET …/v1/alerts` with these query pairs.
    async fn list(&self, token: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        let mut url = self.alerts("");
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        self.get(url, token).await
    }

    async fn control_alerts(&self, site: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("_emulator/sites/{site}/jsm/alerts")))
            .send()
            .await
            .expect("control call")
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("json body")
}

fn aliases(page: &Value) -> Vec<String> {
    page["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|a| a["alias"].as_str().expect("alias").to_owned())
        .collect()
}

#[tokio::test]
async fn create_is_tracked_by_its_request_and_the_alert_is_open() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    let request_id = env
        .create(
            &token,
            json!({
                "message": "Grant of Mia is broken",
                "alias": "atlassync:grant:7",
                "description": "The refresh token was revoked.",
                "tags": ["atlassync"],
                "extraProperties": {"grant": "7"},
                "entity": "atlassync",
                "source": "atlassync",
                "responders": [{"id": "4513b7ea-3b91-438f-b7e4-e3e54af9147c", "type": "team"}],
            }),
        )
        .await;
    let status = env.request_status(&token, &request_id).await;
    assert_eq!(status["action"], json!("Create"));
    assert_eq!(status["isSuccess"], json!(true));
    assert_eq!(status["alias"], json!("atlassync:grant:7"));
    assert_eq!(status["processedAt"], json!("2026-11-22T09:00:00.000Z"));
    let alert_id = status["alertId"].as_str().expect("alertId");
    assert!(alert_id.ends_with(&format!("-{}", env.emu.now().timestamp_millis())));

    let response = env.get(env.alerts(&format!("/{alert_id}")), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let alert = json_of(response).await;
    assert_eq!(alert["id"], json!(alert_id));
    assert_eq!(alert["tinyId"], json!("1"));
    assert_eq!(alert["status"], json!("open"));
    assert_eq!(alert["count"], json!(1));
    assert_eq!(alert["priority"], json!("P3"), "the documented default");
    assert_eq!(alert["message"], json!("Grant of Mia is broken"));
    assert_eq!(alert["extraProperties"], json!({"grant": "7"}));
    assert_eq!(alert["tags"], json!(["atlassync"]));
    assert_eq!(alert["acknowledged"], json!(false));
    assert_eq!(alert["createdAt"], json!("2026-11-22T09:00:00.000Z"));
    assert!(alert.get("closeTime").is_none());

    // Looked up by alias too.
    let mut by_alias = env.alerts("/alias");
    by_alias
        .query_pairs_mut()
        .append_pair("alias", "atlassync:grant:7");
    let found = json_of(env.get(by_alias, &token).await).await;
    assert_eq!(found["id"], json!(alert_id));

    // The control API shows the stored truth.
    let response = env.control_alerts(&env.site).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stored = json_of(response).await;
    assert_eq!(stored.as_array().expect("array").len(), 1);
    let stored = &stored[0];
    assert_eq!(stored["id"], json!(alert_id));
    assert_eq!(stored["alias"], json!("atlassync:grant:7"));
    assert_eq!(stored["status"], json!("open"));
    assert_eq!(stored["priority"], json!("P3"));
    assert_eq!(
        stored["description"],
        json!("The refresh token was revoked.")
    );
    assert_eq!(stored["details"], json!({"grant": "7"}));
    assert_eq!(stored["closedAt"], Value::Null);
    assert_eq!(env.emu.jsm_alerts(&env.site).len(), 1);
}

#[tokio::test]
async fn the_same_alias_while_open_counts_then_a_closed_alias_starts_a_new_alert() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    let alias = "atlassync:grant:9";
    let first = env
        .create(&token, json!({"message": "Grant broken", "alias": alias}))
        .await;
    let alert_id = env.request_status(&token, &first).await["alertId"]
        .as_str()
        .expect("alertId")
        .to_owned();
    env.clock.advance(TimeDelta::minutes(5));
    let second = env
        .create(
            &token,
            json!({"message": "Grant still broken", "alias": alias}),
        )
        .await;
    assert_eq!(
        env.request_status(&token, &second).await["alertId"],
        json!(alert_id)
    );
    let stored = env.emu.jsm_alerts(&env.site);
    assert_eq!(stored.len(), 1, "de-duplicated by alias");
    assert_eq!(stored[0].count, 2);
    assert_eq!(
        stored[0].message, "Grant broken",
        "the first create's content stays"
    );
    let alert = json_of(env.get(env.alerts(&format!("/{alert_id}")), &token).await).await;
    assert_eq!(alert["count"], json!(2));
    assert_eq!(alert["lastOccuredAt"], json!("2026-11-22T09:05:00.000Z"));

    // Close (with the older APIs' optional body), then close again: harmless.
    env.clock.advance(TimeDelta::minutes(5));
    let closed = env
        .close(
            &token,
            &alert_id,
            &json!({"note": "condition cleared", "source": "atlassync", "user": "atlassync"}),
        )
        .await;
    assert_eq!(closed["action"], json!("Close"));
    assert_eq!(closed["isSuccess"], json!(true));
    assert_eq!(closed["alertId"], json!(alert_id));
    let alert = json_of(env.get(env.alerts(&format!("/{alert_id}")), &token).await).await;
    assert_eq!(alert["status"], json!("closed"));
    assert_eq!(alert["closeTime"], json!("2026-11-22T09:10:00.000Z"));
    env.clock.advance(TimeDelta::minutes(1));
    let again = env.close(&token, &alert_id, &json!({})).await;
    assert_eq!(again["isSuccess"], json!(true));
    let stored = env.emu.jsm_alerts(&env.site);
    assert_eq!(stored[0].status, "closed");
    assert_eq!(
        stored[0].closed_at.map(|t| t.to_rfc3339()),
        Some("2026-11-22T09:10:00+00:00".to_owned()),
        "a second close changes nothing"
    );
    assert_eq!(stored[0].notes, vec!["condition cleared".to_owned()]);

    // The alias is free again: a new alert.
    let third = env
        .create(
            &token,
            json!({"message": "Grant broken again", "alias": alias}),
        )
        .await;
    let new_id = env.request_status(&token, &third).await["alertId"]
        .as_str()
        .expect("alertId")
        .to_owned();
    assert_ne!(new_id, alert_id);
    let stored = json_of(env.control_alerts(&env.site).await).await;
    let stored = stored.as_array().expect("array");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["status"], json!("closed"));
    assert_eq!(stored[0]["closedAt"], json!("2026-11-22T09:10:00Z"));
    assert_eq!(stored[1]["status"], json!("open"));
    assert_eq!(stored[1]["count"], json!(1));
}

#[tokio::test]
async fn list_filters_with_the_search_query_and_pages_with_offset_and_size() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    for n in 0..5 {
        env.create(
            &token,
            json!({"message": format!("Grant {n} broken"), "alias": format!("grant-{n}")}),
        )
        .await;
        env.clock.advance(TimeDelta::seconds(1));
    }
    let closed_id = env.emu.jsm_alerts(&env.site)[1].id.clone();
    env.close(&token, &closed_id, &json!({})).await;

    for query in [
        "alias:grant-1 AND status:open",
        "alias:\"grant-1\" and status: open",
    ] {
        let page = json_of(env.list(&token, &[("query", query)]).await).await;
        assert_eq!(page["values"], json!([]), "{query}");
        assert_eq!(page["count"], json!(0));
    }
    let page = json_of(
        env.list(&token, &[("query", "alias:\"grant-1\" AND status:closed")])
            .await,
    )
    .await;
    assert_eq!(aliases(&page), vec!["grant-1"]);
    let page = json_of(
        env.list(&token, &[("query", "alias:grant-3 AND status:open")])
            .await,
    )
    .await;
    assert_eq!(aliases(&page), vec!["grant-3"]);
    assert_eq!(page["values"][0]["status"], json!("open"));

    // Newest first by default; offset/size paging with links.next.
    let response = env
        .list(&token, &[("query", "status:open"), ("size", "3")])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = json_of(response).await;
    assert_eq!(aliases(&page), vec!["grant-4", "grant-3", "grant-2"]);
    assert_eq!(page["count"], json!(4));
    let next = page["links"]["next"].as_str().expect("next link");
    assert_eq!(next, "/v1/alerts?offset=3&size=3&query=status%3Aopen");
    let next_url = env.url(&format!("ex/jira/{}/jsm/ops/api{next}", env.site));
    let page = json_of(env.get(next_url, &token).await).await;
    assert_eq!(aliases(&page), vec!["grant-0"]);
    assert!(page["links"].get("next").is_none(), "{page}");

    let page = json_of(env.list(&token, &[("order", "asc"), ("size", "2")]).await).await;
    assert_eq!(aliases(&page), vec!["grant-0", "grant-1"]);

    for bad in [
        vec![("size", "0")],
        vec![("size", "101")],
        vec![("offset", "19990"), ("size", "20")],
        vec![("query", "alias:")],
        vec![("query", "owner:mia")],
        vec![("sort", "updatedAt")],
    ] {
        let response = env.list(&token, &bad).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad:?}"
        );
        let body = json_of(response).await;
        assert!(body["errors"][0]["title"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn unknown_alerts_and_requests_are_404_and_closing_one_fails_in_its_request() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    let response = env.get(env.alerts("/nope"), &token).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["code"], json!("NOT_FOUND"));
    let response = env.get(env.alerts("/requests/nope"), &token).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let mut by_alias = env.alerts("/alias");
    by_alias.query_pairs_mut().append_pair("alias", "nope");
    assert_eq!(
        env.get(by_alias, &token).await.status(),
        StatusCode::NOT_FOUND
    );
    let status = env.close(&token, "nope", &json!({})).await;
    assert_eq!(status["isSuccess"], json!(false));
    assert_eq!(status["status"], json!("Alert does not exist"));
}

#[tokio::test]
async fn a_too_long_message_is_refused_with_422_and_nothing_is_stored() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    for body in [
        json!({"message": "x".repeat(131)}),
        json!({"alias": "no-message"}),
        json!({"message": "m", "priority": "P9"}),
    ] {
        let response = env.post(env.alerts(""), &token, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let error = json_of(response).await;
        assert_eq!(error["errors"][0]["code"], json!("BAD_REQUEST"));
    }
    let response = env
        .post(env.alerts(""), &token, &json!({"message": "x".repeat(130)}))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "130 characters are fine");
    assert_eq!(env.emu.jsm_alerts(&env.site).len(), 1);
}

#[tokio::test]
async fn scopes_token_and_site_are_checked_like_every_gateway_route() {
    let env = start().await;
    let body = json!({"message": "m", "alias": "a"});

    // No token: 401.
    let response = env
        .http
        .post(env.alerts(""))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"code": 401, "message": "Unauthorized"})
    );

    // Read scope only: reads work, create and close are refused.
    let read_only = env.token(READ_ONLY).await;
    assert_eq!(env.list(&read_only, &[]).await.status(), StatusCode::OK);
    let response = env.post(env.alerts(""), &read_only, &body).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"code": 401, "message": "Unauthorized; scope does not match"})
    );
    let response = env
        .post(env.alerts("/some-id/close"), &read_only, &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Jira scopes without the JSM Operations ones: nothing.
    let jira_only = env.token(JIRA_ONLY).await;
    assert_eq!(
        env.list(&jira_only, &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(env.emu.jsm_alerts(&env.site).is_empty());

    // Wrong site: an unknown cloud id, a site outside the grant, a site without Jira.
    let token = env.token(OPS_SCOPES).await;
    for site in [
        "11223344-a1b2-3b33-c444-def123456789",
        env.other_site.as_str(),
        env.wiki_site.as_str(),
    ] {
        let response = env.post(env.alerts_on(site, ""), &token, &body).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{site}");
        assert_eq!(
            json_of(response).await,
            json!({"code": 404, "message": "Not Found"})
        );
    }
    assert!(env.emu.jsm_alerts(&env.other_site).is_empty());
    assert_eq!(
        env.control_alerts("no-such-site").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn alert_routes_pass_faults_the_request_log_and_the_rate_limiter() {
    let env = start().await;
    let token = env.token(OPS_SCOPES).await;
    env.emu.clear_request_log();
    env.emu.inject_fault(Fault::new(
        FaultKind::InternalError,
        format!("/ex/jira/{}/jsm/", env.site),
    ));
    let response = env.list(&token, &[]).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let response = env.list(&token, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok()),
        Some("65000"),
        "charged to Jira's quota"
    );
    let log = env.emu.request_log();
    let jsm: Vec<_> = log
        .iter()
        .filter(|r| r.path.ends_with("/jsm/ops/api/v1/alerts"))
        .collect();
    assert_eq!(jsm.len(), 2);
    assert_eq!(jsm[0].fault.as_deref(), Some("internal_error"));
    assert_eq!(jsm[1].status, Some(200));
    let used = env.emu.quota_usage(Product::Jira).used;
    assert!(used >= 1, "{used}");
}
