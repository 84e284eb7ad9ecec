//! The emulator's Jira and Confluence endpoints, rate limits and fault injection, over real HTTP
//! on 127.0.0.1:0, plus a check of every JSON body kind against Atlassian's published OpenAPI
//! documents (copies in `openapi/`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlassian_emulator::{
    BurstClock, ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, ErrorRate, Fault,
    FaultKind, IssueChange, NewUser, Product, SpaceChange, SpaceStatus, SpaceType,
};
use atlassync_clock::ManualClock;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "https://app.example.com/callback";
pub(crate) const ALL_SCOPES: &str =
    "read:jira-work read:jira-user read:space:confluence read:me offline_access";
const UNBOUNDED: &str = r#"{"errorMessages":["Unbounded JQL queries are not allowed here. Please add a search restriction to your query."],"errors":{}}"#;
const REMOVED: &str = r#"{"errorMessages":["The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"],"errors":{}}"#;
pub(crate) const ISSUE_404: &str = r#"{"errorMessages":["Issue does not exist or you do not have permission to see it."],"errors":{}}"#;

pub(crate) fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid instant")
        .with_timezone(&Utc)
}

pub(crate) struct Env {
    pub(crate) emu: EmulatorHandle,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) http: reqwest::Client,
    pub(crate) site: String,
    /// Jira zone Australia/Brisbane (UTC+10, no DST).
    pub(crate) mia: String,
    /// Jira zone America/Los_Angeles (UTC-8 in winter).
    pub(crate) sam: String,
}

pub(crate) async fn start_with(config: EmulatorConfig) -> Env {
    let clock = Arc::new(ManualClock::new(instant("2026-11-22T09:00:00Z")));
    let emu = Emulator::start(
        config,
        clock.clone(),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("emulator starts");
    let site = emu.add_site("acme", &[Product::Jira, Product::Confluence]);
    let user = |name: &str, zone: &str| NewUser {
        name: name.to_owned(),
        email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
        zoneinfo: zone.to_owned(),
        jira_time_zone: zone.to_owned(),
        sites: vec![site.clone()],
    };
    let mia = emu.add_user(user("Mia Krystof", "Australia/Brisbane"));
    let sam = emu.add_user(user("Sam Ortiz", "America/Los_Angeles"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    Env {
        emu,
        clock,
        http,
        site,
        mia,
        sam,
    }
}

pub(crate) async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

impl Env {
    pub(crate) fn url(&self, path: &str) -> Url {
        self.emu.base_url().join(path).expect("url")
    }

    pub(crate) fn jira(&self, rest: &str) -> Url {
        self.url(&format!("ex/jira/{}/rest/api/3/{rest}", self.site))
    }

    pub(crate) fn wiki(&self, rest: &str) -> Url {
        self.url(&format!("ex/confluence/{}/wiki/{rest}", self.site))
    }

    /// Consent plus code exchange for `account`; returns the access token.
    pub(crate) async fn token(&self, account: &str, scopes: &str) -> String {
        self.emu.queue_consent(ConsentDecision::Accept {
            account_id: account.to_owned(),
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

    pub(crate) async fn get(&self, url: Url, token: &str) -> reqwest::Response {
        self.http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn post(&self, url: Url, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn search(&self, token: &str, body: Value) -> reqwest::Response {
        self.post(self.jira("search/jql"), token, &body).await
    }

    /// An issue in ENG with an explicit `updated` instant.
    fn issue_at(&self, summary: &str, updated: &str) -> String {
        self.emu
            .upsert_issue(
                &self.site,
                IssueChange {
                    project_key: Some("ENG".into()),
                    summary: Some(summary.into()),
                    created: Some(instant("2026-01-10T08:00:00Z")),
                    updated: instant(updated),
                    ..IssueChange::default()
                },
            )
            .expect("issue created")
            .id
    }
}

pub(crate) async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("json body")
}

pub(crate) fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn ids(body: &Value) -> Vec<String> {
    body["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

fn summaries(body: &Value) -> BTreeSet<String> {
    body["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| i["fields"]["summary"].as_str().expect("summary").to_owned())
        .collect()
}

// ----- Jira search ---------------------------------------------------------------------------

#[tokio::test]
async fn search_pages_to_the_end_with_next_page_token() {
    let env = start().await;
    let created = env.emu.create_issues(&env.site, "ENG", 120);
    env.emu.create_issues(&env.site, "OPS", 30);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let jql = "project = ENG ORDER BY id ASC";
    let mut seen = Vec::new();
    let mut page_token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut body = json!({"jql": jql, "maxResults": 50});
        if let Some(t) = &page_token {
            body["nextPageToken"] = json!(t);
        }
        let response = env.search(&token, body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = json_of(response).await;
        pages.push(page["issues"].as_array().expect("issues").len());
        seen.extend(ids(&page));
        if page["isLast"] == json!(true) {
            assert!(
                page.get("nextPageToken").is_none(),
                "last page omits the token: {page}"
            );
            break;
        }
        assert_eq!(page["isLast"], json!(false));
        let next = page["nextPageToken"].as_str().expect("token").to_owned();
        assert_ne!(Some(&next), page_token.as_ref(), "tokens move forward");
        page_token = Some(next);
    }
    assert_eq!(pages, vec![50, 50, 20]);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn get_search_defaults_to_ids_only_with_gateway_self_links() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 3);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let mut url = env.jira("search/jql");
    url.query_pairs_mut().append_pair("jql", "project = ENG");
    let response = env.get(url, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-aaccountid"), Some(env.mia.as_str()));
    let body = json_of(response).await;
    assert_eq!(body["isLast"], json!(true));
    for issue in body["issues"].as_array().expect("issues") {
        let keys: BTreeSet<&str> = issue
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["expand", "id", "key", "self"]));
        assert_eq!(issue["expand"], json!(""));
        let id = issue["id"].as_str().expect("id");
        assert_eq!(
            issue["self"],
            json!(format!(
                "{}ex/jira/{}/rest/api/3/issue/{id}",
                env.emu.base_url(),
                env.site
            ))
        );
        assert!(issue["key"].as_str().expect("key").starts_with("ENG-"));
    }
}

#[tokio::test]
async fn pages_are_capped_at_5000_for_ids_and_100_with_fields() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 5100);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    for (fields, expected) in [
        (json!(["id"]), 5000),
        (json!(["key", "id"]), 5000),
        (json!(["summary"]), 100),
        (json!(["*all"]), 100),
    ] {
        let page = json_of(
            env.search(
                &token,
                json!({"jql": "project = ENG", "maxResults": 10000, "fields": fields}),
            )
            .await,
        )
        .await;
        assert_eq!(page["issues"].as_array().expect("issues").len(), expected);
        assert_eq!(page["isLast"], json!(false));
        assert!(page["nextPageToken"].is_string());
    }
    let page = json_of(env.search(&token, json!({"jql": "project = ENG"})).await).await;
    assert_eq!(
        page["issues"].as_array().expect("issues").len(),
        50,
        "default"
    );
}

#[tokio::test]
async fn unbounded_jql_and_long_order_by_get_the_exact_400s() {
    let env = start().await;
    let token = env.token(&env.mia, ALL_SCOPES).await;
    for jql in ["", "order by key desc", "  ORDER BY updated"] {
        let response = env.search(&token, json!({"jql": jql})).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{jql:?}");
        assert_eq!(response.text().await.expect("body"), UNBOUNDED);
    }
    let response = env.get(env.jira("search/jql"), &token).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().await.expect("body"), UNBOUNDED);
    let response = env
        .post(
            env.jira("search/approximate-count"),
            &token,
            &json!({"jql": "order by created"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().await.expect("body"), UNBOUNDED);

    env.emu.create_issues(&env.site, "ENG", 1);
    let eight = "project = ENG ORDER BY updated, created, key, id, updated, created, key, id";
    let response = env.search(&token, json!({"jql": eight})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"errorMessages":["JQL can be ordered by at most 7 fields."],"errors":{}}"#
    );
    let seven = "project = ENG ORDER BY updated, created, key, id";
    assert_eq!(
        env.search(&token, json!({"jql": seven})).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn jql_errors_name_the_field_or_the_syntax_problem() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 1);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let message = |body: Value| {
        body["errorMessages"][0]
            .as_str()
            .expect("message")
            .to_owned()
    };
    let response = env.search(&token, json!({"jql": "updatd >= -1d"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        message(json_of(response).await),
        "Field 'updatd' does not exist or you do not have permission to view it."
    );
    let response = env
        .search(&token, json!({"jql": "project = ENG AND"}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(message(json_of(response).await).starts_with("Error in the JQL Query: "));
    let response = env.search(&token, json!({"jql": "project = XYZ"})).await;
    assert_eq!(
        message(json_of(response).await),
        "The value 'XYZ' does not exist for the field 'project'."
    );
    let response = env
        .post(env.jira("search/jql"), &token, &json!("not an object"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn jql_date_literals_are_read_in_each_callers_jira_zone() {
    let env = start().await;
    env.issue_at("A", "2026-03-01T00:00:00Z");
    env.issue_at("B", "2026-03-01T12:00:00Z");
    env.issue_at("C", "2026-03-01T20:00:00Z");
    let brisbane = env.token(&env.mia, ALL_SCOPES).await;
    let los_angeles = env.token(&env.sam, ALL_SCOPES).await;
    let run = |token: String, jql: &'static str| {
        let env = &env;
        async move {
            let response = env
                .search(
                    &token,
                    json!({"jql": jql, "fields": ["summary", "updated"]}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{jql}");
            json_of(response).await
        }
    };
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };

    // Brisbane is UTC+10: the window is 2026-03-01 00:00Z .. 13:00Z (UTC would give B, C).
    let body = run(
        brisbane.clone(),
        r#"project = ENG AND updated >= "2026-03-01 10:00" AND updated < "2026-03-01 23:00""#,
    )
    .await;
    assert_eq!(summaries(&body), set(&["A", "B"]));
    // Los Angeles is UTC-8 on March 1: 11:00Z .. 21:00Z (UTC would give B only).
    let body = run(
        los_angeles.clone(),
        r#"project = ENG AND updated >= "2026/03/01 03:00" AND updated < "2026/03/01 13:00""#,
    )
    .await;
    assert_eq!(summaries(&body), set(&["B", "C"]));
    // Date-only literals are local midnight.
    let body = run(
        los_angeles.clone(),
        r#"project = ENG AND updated < "2026-03-01""#,
    )
    .await;
    assert_eq!(summaries(&body), set(&["A"]));
    let body = run(
        brisbane.clone(),
        r#"project = ENG AND updated >= "2026/03/02""#,
    )
    .await;
    assert_eq!(summaries(&body), set(&["C"]));

    // Timestamps are rendered in the caller's zone with Jira's offset form.
    let body = run(
        brisbane,
        r#"project = ENG AND updated = "2026-03-01 22:00""#,
    )
    .await;
    assert_eq!(
        body["issues"][0]["fields"]["updated"],
        json!("2026-03-01T22:00:00.000+1000")
    );
    let body = run(
        los_angeles,
        r#"project = ENG AND updated = "2026-03-01 04:00""#,
    )
    .await;
    assert_eq!(
        body["issues"][0]["fields"]["updated"],
        json!("2026-03-01T04:00:00.000-0800")
    );
}

#[tokio::test]
async fn incremental_search_sees_updates_made_between_pages() {
    let env = start().await;
    let created = env.emu.create_issues(&env.site, "ENG", 10);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let jql = r#"project = ENG AND updated >= "2020-01-01" ORDER BY updated ASC, id ASC"#;
    let first = json_of(
        env.search(&token, json!({"jql": jql, "maxResults": 5}))
            .await,
    )
    .await;
    // The first page's first issue changes now: it moves to the end of the scan.
    let moved = ids(&first)[0].clone();
    env.emu
        .upsert_issue(
            &env.site,
            IssueChange {
                issue: Some(moved.clone()),
                summary: Some("Changed mid-scan".into()),
                updated: env.emu.now(),
                ..IssueChange::default()
            },
        )
        .expect("updated");
    let second = json_of(
        env.search(
            &token,
            json!({"jql": jql, "maxResults": 50, "nextPageToken": first["nextPageToken"]}),
        )
        .await,
    )
    .await;
    let mut all = ids(&first);
    all.extend(ids(&second));
    assert_eq!(
        all.len(),
        created.len() + 1,
        "the moved issue is seen twice"
    );
    assert_eq!(all.last(), Some(&moved));
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), created.len(), "every issue seen");
}

#[tokio::test]
async fn page_tokens_expire_after_seven_days_and_are_bound_to_the_query() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 5);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let page = json_of(
        env.search(&token, json!({"jql": "project = ENG", "maxResults": 2}))
            .await,
    )
    .await;
    let next = page["nextPageToken"].clone();
    let other = env
        .search(
            &token,
            json!({"jql": "project = ENG ORDER BY key", "nextPageToken": next}),
        )
        .await;
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    let forged = env
        .search(
            &token,
            json!({"jql": "project = ENG", "nextPageToken": "CAEaAggB"}),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    env.clock
        .advance(TimeDelta::days(7) - TimeDelta::minutes(1));
    // Access tokens live an hour: get a fresh one.
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let ok = env
        .search(
            &token,
            json!({"jql": "project = ENG", "nextPageToken": next}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    env.clock.advance(TimeDelta::minutes(2));
    let expired = env
        .search(
            &token,
            json!({"jql": "project = ENG", "nextPageToken": next}),
        )
        .await;
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    let body = json_of(expired).await;
    assert_eq!(body["errors"], json!({}));
    assert!(body["errorMessages"][0].is_string());
}

#[tokio::test]
async fn approximate_count_counts_what_search_would_return() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 42);
    env.emu.create_issues(&env.site, "OPS", 8);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let count = |jql: &'static str| {
        let env = &env;
        let token = token.clone();
        async move {
            let response = env
                .post(
                    env.jira("search/approximate-count"),
                    &token,
                    &json!({"jql": jql}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            json_of(response).await
        }
    };
    assert_eq!(count("project = ENG").await, json!({"count": 42}));
    assert_eq!(count("project in (ENG, OPS)").await, json!({"count": 50}));
    assert_eq!(
        count("project = OPS AND created >= -3650d").await,
        json!({"count": 8})
    );
}

#[tokio::test]
async fn legacy_search_answers_410_with_the_exact_body() {
    let env = start().await;
    let token = env.token(&env.mia, ALL_SCOPES).await;
    for version in ["2", "3", "latest"] {
        let url = env.url(&format!(
            "ex/jira/{}/rest/api/{version}/search?jql=project%3DENG",
            env.site
        ));
        let response = env.get(url.clone(), &token).await;
        assert_eq!(response.status(), StatusCode::GONE, "{version}");
        assert_eq!(response.text().await.expect("body"), REMOVED);
        let response = env
            .post(url, &token, &json!({"jql": "project = ENG"}))
            .await;
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(response.text().await.expect("body"), REMOVED);
    }
}

#[tokio::test]
async fn get_issue_returns_all_fields_and_the_exact_404_for_missing_issues() {
    let env = start().await;
    let ids = env.emu.create_issues(&env.site, "ENG", 3);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let response = env.get(env.jira("issue/ENG-2"), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let issue = json_of(response).await;
    assert_eq!(issue["id"], json!(ids[1]));
    assert_eq!(issue["fields"]["project"]["key"], json!("ENG"));
    assert!(issue["fields"]["status"]["statusCategory"]["key"].is_string());
    assert!(issue["fields"].get("labels").is_some());
    let response = env
        .get(env.jira(&format!("issue/{}", ids[0])), &token)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(env.emu.delete_issues(&env.site, &[ids[0].as_str()]), 1);
    for missing in [ids[0].as_str(), "ENG-1", "ENG-99", "99999"] {
        let response = env.get(env.jira(&format!("issue/{missing}")), &token).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(response.text().await.expect("body"), ISSUE_404);
    }
    assert_eq!(env.emu.deleted_issue_ids(&env.site), vec![ids[0].clone()]);
    let snapshot_ids: Vec<_> = env
        .emu
        .issues(&env.site)
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(snapshot_ids, ids[1..].to_vec());
}

#[tokio::test]
async fn bulkfetch_leaves_out_missing_issues_silently_and_caps_the_request() {
    let env = start().await;
    let ids = env.emu.create_issues(&env.site, "ENG", 5);
    env.emu.delete_issues(&env.site, &[ids[2].clone()]);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let response = env
        .post(
            env.jira("issue/bulkfetch"),
            &token,
            &json!({"issueIdsOrKeys": [ids[4], "ENG-1", ids[2], "ENG-404", "eng-4"], "fields": ["summary", "status", "updated"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(
        ids_of(&body),
        vec![ids[0].clone(), ids[3].clone(), ids[4].clone()]
    );
    assert_eq!(body["issueErrors"], json!([]));
    let fields = body["issues"][0]["fields"].as_object().expect("fields");
    assert_eq!(
        fields.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["status", "summary", "updated"])
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("ENG-{i}")).collect();
    let response = env
        .post(
            env.jira("issue/bulkfetch"),
            &token,
            &json!({"issueIdsOrKeys": too_many}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = env
        .post(
            env.jira("issue/bulkfetch"),
            &token,
            &json!({"issueIdsOrKeys": []}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

fn ids_of(body: &Value) -> Vec<String> {
    ids(body)
}

#[tokio::test]
async fn jira_endpoints_need_read_jira_work() {
    let env = start().await;
    let token = env
        .token(&env.mia, "read:me read:jira-user read:space:confluence")
        .await;
    let response = env.search(&token, json!({"jql": "project = ENG"})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"code": 401, "message": "Unauthorized; scope does not match"})
    );
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let unknown = env.url("ex/jira/00000000-0000-0000-0000-000000000000/rest/api/3/search/jql");
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let response = env
        .post(unknown, &token, &json!({"jql": "project = ENG"}))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

// ----- Confluence ----------------------------------------------------------------------------

#[tokio::test]
async fn confluence_spaces_page_with_an_opaque_cursor_and_link_header() {
    let env = start().await;
    let created = env.emu.create_spaces(&env.site, 7);
    assert_eq!(created.len(), 7);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let gateway_root = env.url(&format!("ex/confluence/{}", env.site));
    let mut url = env.wiki("api/v2/spaces?limit=3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let response = env.get(url.clone(), &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let link = header(&response, "link").expect("Link header").to_owned();
        let body = json_of(response).await;
        pages += 1;
        assert_eq!(
            body["_links"]["base"],
            json!("https://acme.atlassian.net/wiki")
        );
        seen.extend(
            body["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|s| s["id"].as_str().expect("id").to_owned()),
        );
        match body["_links"]["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with("/wiki/api/v2/spaces?cursor="), "{next}");
                assert!(next.ends_with("&limit=3"), "{next}");
                assert_eq!(
                    link,
                    format!(
                        "<{next}>; rel=\"next\", <https://acme.atlassian.net/wiki>; rel=\"base\""
                    )
                );
                // A gateway client resolves the relative link against the gateway root.
                url = Url::parse(&format!(
                    "{}{next}",
                    gateway_root.as_str().trim_end_matches('/')
                ))
                .expect("next url");
            }
            None => {
                assert!(!link.contains("rel=\"next\""), "{link}");
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "default order is id ascending");
}

#[tokio::test]
async fn confluence_filters_limits_and_parameter_errors() {
    let env = start().await;
    env.emu.create_spaces(&env.site, 30);
    for (key, status) in [
        ("ALPHA", SpaceStatus::Current),
        ("BETA", SpaceStatus::Archived),
    ] {
        env.emu
            .upsert_space(
                &env.site,
                SpaceChange {
                    key: Some(key.into()),
                    name: Some(format!("{key} team")),
                    space_type: Some(SpaceType::Collaboration),
                    status: Some(status),
                    description: Some(Some("About us".into())),
                    ..SpaceChange::default()
                },
            )
            .expect("space");
    }
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let body = json_of(env.get(env.wiki("api/v2/spaces"), &token).await).await;
    assert_eq!(
        body["results"].as_array().expect("results").len(),
        25,
        "default limit"
    );
    let body = json_of(env.get(env.wiki("api/v2/spaces?limit=1000"), &token).await).await;
    assert_eq!(
        body["results"].as_array().expect("results").len(),
        32,
        "clamped to 250"
    );
    assert!(body["_links"].get("next").is_none());
    let body = json_of(
        env.get(
            env.wiki("api/v2/spaces?keys=ALPHA,BETA&status=current&description-format=plain&include-icon=true"),
            &token,
        )
        .await,
    )
    .await;
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["key"], json!("ALPHA"));
    assert_eq!(results[0]["type"], json!("collaboration"));
    assert_eq!(
        results[0]["description"],
        json!({"plain": {"representation": "plain", "value": "About us"}})
    );
    assert!(results[0]["icon"]["path"].is_string());
    let body = json_of(env.get(env.wiki("api/v2/spaces?keys=ALPHA"), &token).await).await;
    assert_eq!(body["results"][0]["description"], Value::Null);
    assert_eq!(body["results"][0]["icon"], Value::Null);

    for bad in [
        "limit=abc",
        "limit=0",
        "ids=Docs",
        "type=wiki",
        "sort=size",
        "cursor=bogus",
    ] {
        let response = env
            .get(env.wiki(&format!("api/v2/spaces?{bad}")), &token)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body = json_of(response).await;
        assert_eq!(body["errors"][0]["status"], json!(400), "{bad}");
        assert_eq!(
            body["errors"][0]["code"],
            json!("INVALID_REQUEST_PARAMETER")
        );
        assert_eq!(body["errors"][0]["detail"], Value::Null);
        assert!(body["errors"][0]["title"].is_string());
    }
    let response = env.get(env.wiki("api/v2/spaces?ids=Docs"), &token).await;
    assert_eq!(
        json_of(response).await["errors"][0]["title"],
        json!("Provided value {Docs} for 'ids' is not the correct type. Expected type is long.")
    );
}

#[tokio::test]
async fn spaces_with_classic_scopes_get_401_scope_mismatch() {
    let env = start().await;
    let token = env
        .token(
            &env.mia,
            "read:confluence-space.summary read:jira-work read:me",
        )
        .await;
    let response = env.get(env.wiki("api/v2/spaces"), &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"code":401,"message":"Unauthorized; scope does not match"}"#
    );
}

// ----- rate limits -----------------------------------------------------------------------------

#[tokio::test]
async fn normal_answers_carry_the_rate_limit_headers() {
    let env = start_with(EmulatorConfig {
        quota_points_per_hour: Some(100),
        ..EmulatorConfig::default()
    })
    .await;
    env.emu.create_issues(&env.site, "ENG", 10);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    // Each page of 10 issues costs 1 + 10 points.
    let mut seen = Vec::new();
    for _ in 0..8 {
        let response = env
            .search(&token, json!({"jql": "project = ENG", "maxResults": 10}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        seen.push(response.headers().clone());
    }
    let get = |index: usize, name: &str| {
        seen[index]
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(get(0, "x-ratelimit-limit").as_deref(), Some("100"));
    assert_eq!(get(0, "x-ratelimit-remaining").as_deref(), Some("89"));
    assert_eq!(get(0, "x-ratelimit-nearlimit"), None);
    assert_eq!(
        get(0, "ratelimit-policy").as_deref(),
        Some("\"global-app-quota\";q=100;w=3600, \"jira-burst-based\";q=100;w=1")
    );
    assert_eq!(
        get(0, "ratelimit").as_deref(),
        Some("\"global-app-quota\";t=3600")
    );
    // 23 left (77 % spent): not near the limit yet, `r` still hidden.
    assert_eq!(get(6, "x-ratelimit-remaining").as_deref(), Some("23"));
    assert_eq!(get(6, "x-ratelimit-nearlimit"), None);
    assert_eq!(
        get(6, "ratelimit").as_deref(),
        Some("\"global-app-quota\";t=3600")
    );
    // 12 left: under 20 %, and past 80 % spent.
    assert_eq!(get(7, "x-ratelimit-remaining").as_deref(), Some("12"));
    assert_eq!(get(7, "x-ratelimit-nearlimit").as_deref(), Some("true"));
    assert_eq!(
        get(7, "ratelimit").as_deref(),
        Some("\"global-app-quota\";r=12;t=3600")
    );
    assert_eq!(env.emu.quota_usage(Product::Jira).used, 88);
    assert_eq!(env.emu.quota_usage(Product::Confluence).used, 0);
}

#[tokio::test]
async fn spent_quota_answers_429_until_the_top_of_the_utc_hour() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 3);
    env.emu.set_quota(Product::Jira, Some(5));
    env.clock
        .advance(TimeDelta::minutes(29) + TimeDelta::seconds(30));
    let token = env.token(&env.mia, ALL_SCOPES).await;
    // GET issue costs 2 points: 2, 4, 6 ≥ 5.
    for _ in 0..3 {
        assert_eq!(
            env.get(env.jira("issue/ENG-1"), &token).await.status(),
            StatusCode::OK
        );
    }
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("1830"));
    assert_eq!(
        header(&response, "ratelimit-reason"),
        Some("jira-quota-global-based")
    );
    assert_eq!(header(&response, "x-ratelimit-limit"), Some("5"));
    assert_eq!(header(&response, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        header(&response, "x-ratelimit-reset"),
        Some("2026-11-22T10:00:00Z")
    );
    // Every Jira endpoint is walled off; Confluence has its own pool.
    let response = env.search(&token, json!({"jql": "project = ENG"})).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        env.get(env.wiki("api/v2/spaces"), &token).await.status(),
        StatusCode::OK
    );
    env.clock.advance(TimeDelta::minutes(30));
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("30"));
    env.clock.advance(TimeDelta::seconds(30));
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::OK, "reset at 10:00:00");
    assert_eq!(env.emu.quota_usage(Product::Jira).used, 2);
}

#[tokio::test]
async fn burst_limit_answers_429_with_retry_after_1_per_endpoint() {
    let env = start_with(EmulatorConfig {
        burst_requests_per_second: Some(3),
        burst_clock: BurstClock::Emulator,
        ..EmulatorConfig::default()
    })
    .await;
    env.emu.create_issues(&env.site, "ENG", 2);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    for _ in 0..3 {
        assert_eq!(
            env.get(env.jira("issue/ENG-1"), &token).await.status(),
            StatusCode::OK
        );
    }
    let response = env.get(env.jira("issue/ENG-2"), &token).await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same endpoint template"
    );
    assert_eq!(header(&response, "retry-after"), Some("1"));
    assert_eq!(
        header(&response, "ratelimit-reason"),
        Some("jira-burst-based")
    );
    assert_eq!(header(&response, "x-ratelimit-limit"), Some("3"));
    // Another endpoint (or method) has its own bucket.
    assert_eq!(
        env.search(&token, json!({"jql": "project = ENG"}))
            .await
            .status(),
        StatusCode::OK
    );
    env.clock.advance(TimeDelta::seconds(1));
    assert_eq!(
        env.get(env.jira("issue/ENG-1"), &token).await.status(),
        StatusCode::OK
    );
}

// ----- faults and the request log ---------------------------------------------------------------

#[tokio::test]
async fn each_fault_kind_answers_as_documented() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 2);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let issue = || env.jira("issue/ENG-1");
    let inject = |kind: FaultKind| env.emu.inject_fault(Fault::new(kind, "/ex/jira/"));

    inject(FaultKind::InternalError);
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(json_of(response).await["errorMessages"].is_array());

    inject(FaultKind::BadGateway);
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("502 Bad Gateway")
    );

    inject(FaultKind::ServiceUnavailable {
        retry_after_secs: Some(7),
    });
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("7"));

    inject(FaultKind::BurstRateLimited {
        retry_after_secs: 4,
    });
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("4"));
    assert_eq!(
        header(&response, "ratelimit-reason"),
        Some("jira-burst-based")
    );

    inject(FaultKind::QuotaExhausted);
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("3600"));
    assert_eq!(
        header(&response, "ratelimit-reason"),
        Some("jira-quota-global-based")
    );
    assert_eq!(
        header(&response, "x-ratelimit-reset"),
        Some("2026-11-22T10:00:00Z")
    );

    inject(FaultKind::TokenExpired);
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"code": 401, "message": "Unauthorized"})
    );

    inject(FaultKind::ConnectionReset);
    let error = env
        .http
        .get(issue())
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("connection dropped without a response");
    assert!(!error.is_status(), "{error}");

    inject(FaultKind::Latency { millis: 300 });
    let started = Instant::now();
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    inject(FaultKind::MalformedJson);
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    // Every fault was used up: the next request is normal.
    let response = env.get(issue(), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let log = env.emu.request_log();
    let faults: Vec<_> = log.iter().filter_map(|r| r.fault.clone()).collect();
    assert_eq!(
        faults,
        [
            "internal_error",
            "bad_gateway",
            "service_unavailable",
            "burst_rate_limited",
            "quota_exhausted",
            "token_expired",
            "connection_reset",
            "latency",
            "malformed_json"
        ]
    );
    let reset = log
        .iter()
        .find(|r| r.fault.as_deref() == Some("connection_reset"))
        .expect("logged");
    assert_eq!(reset.status, None);
}

#[tokio::test]
async fn faults_match_by_path_prefix_count_and_error_rate() {
    let env = start().await;
    let token = env.token(&env.mia, ALL_SCOPES).await;
    env.emu.inject_fault(
        Fault::new(
            FaultKind::ServiceUnavailable {
                retry_after_secs: None,
            },
            "/oauth/token",
        )
        .times(2),
    );
    // Other paths are untouched.
    assert_eq!(
        env.get(env.wiki("api/v2/spaces"), &token).await.status(),
        StatusCode::OK
    );
    for _ in 0..2 {
        let response = env
            .http
            .post(env.url("oauth/token"))
            .json(&json!({"grant_type": "refresh_token"}))
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&response, "retry-after"), None);
    }
    env.emu.set_error_rate(Some(ErrorRate {
        probability: 1.0,
        path_prefix: "/ex/confluence/".into(),
        kinds: vec![FaultKind::BadGateway],
    }));
    for _ in 0..3 {
        assert_eq!(
            env.get(env.wiki("api/v2/spaces"), &token).await.status(),
            StatusCode::BAD_GATEWAY
        );
    }
    env.emu.clear_faults();
    assert_eq!(
        env.get(env.wiki("api/v2/spaces"), &token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn search_quirks_exercise_the_client_termination_rules() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 30);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let first = json_of(
        env.search(&token, json!({"jql": "project = ENG", "maxResults": 10}))
            .await,
    )
    .await;
    let sent = first["nextPageToken"].clone();
    env.emu
        .inject_fault(Fault::new(FaultKind::RepeatedPageToken, "/ex/jira/"));
    let repeated = json_of(
        env.search(
            &token,
            json!({"jql": "project = ENG", "maxResults": 10, "nextPageToken": sent}),
        )
        .await,
    )
    .await;
    assert_eq!(
        repeated["nextPageToken"], sent,
        "the server echoes the token"
    );
    assert_eq!(repeated["isLast"], json!(false));

    env.emu
        .inject_fault(Fault::new(FaultKind::MissingIsLast, "/ex/jira/"));
    let page = json_of(env.search(&token, json!({"jql": "project = ENG"})).await).await;
    assert!(page.get("isLast").is_none(), "{page}");
    assert!(page.get("nextPageToken").is_none());

    env.emu
        .inject_fault(Fault::new(FaultKind::IgnoredMaxResults, "/ex/jira/"));
    let page = json_of(
        env.search(
            &token,
            json!({"jql": "project = ENG", "maxResults": 5, "fields": ["summary"]}),
        )
        .await,
    )
    .await;
    assert_eq!(page["issues"].as_array().expect("issues").len(), 30);
    assert_eq!(page["isLast"], json!(true));
}

#[tokio::test]
async fn the_last_page_token_can_be_served_as_null() {
    let env = start_with(EmulatorConfig {
        null_next_page_token_on_last_page: true,
        ..EmulatorConfig::default()
    })
    .await;
    env.emu.create_issues(&env.site, "ENG", 3);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let page = json_of(env.search(&token, json!({"jql": "project = ENG"})).await).await;
    assert_eq!(page["isLast"], json!(true));
    assert_eq!(page.get("nextPageToken"), Some(&Value::Null));
}

#[tokio::test]
async fn request_log_proves_a_client_waited_for_retry_after() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 1);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    env.emu.clear_request_log();
    env.emu.inject_fault(Fault::new(
        FaultKind::ServiceUnavailable {
            retry_after_secs: Some(5),
        },
        "/ex/jira/",
    ));
    let first = env.get(env.jira("issue/ENG-1"), &token).await;
    let wait: i64 = header(&first, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    // A well-behaved client waits (here: on the shared clock) before retrying.
    env.clock.advance(TimeDelta::seconds(wait));
    let second = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(second.status(), StatusCode::OK);

    let log = env.emu.request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "GET");
    assert_eq!(
        log[0].path,
        format!("/ex/jira/{}/rest/api/3/issue/ENG-1", env.site)
    );
    assert_eq!(log[0].status, Some(503));
    assert_eq!(log[0].at, instant("2026-11-22T09:00:00Z"));
    assert_eq!(log[1].status, Some(200));
    assert!(log[1].at - log[0].at >= TimeDelta::seconds(wait));
    assert!(log[1].wall_at >= log[0].wall_at);
}

// ----- control API -------------------------------------------------------------------------------

#[tokio::test]
async fn control_api_manages_issues_spaces_faults_quota_and_the_log() {
    let env = start().await;
    let control = |path: &str| env.url(&format!("_emulator/{path}"));
    let site = env.site.clone();
    let response = env
        .http
        .post(control(&format!("sites/{site}/issues/generate")))
        .json(&json!({"project_key": "OPS", "count": 4}))
        .send()
        .await
        .expect("generate");
    assert_eq!(response.status(), StatusCode::CREATED);
    let generated = json_of(response).await;
    assert_eq!(generated["ids"].as_array().expect("ids").len(), 4);
    let response = env
        .http
        .put(control(&format!("sites/{site}/issues")))
        .json(&json!({"issue": "OPS-2", "status": "Done", "assignee": env.sam, "updated": "2026-11-22T08:30:00Z"}))
        .send()
        .await
        .expect("upsert");
    assert_eq!(response.status(), StatusCode::OK);
    let snapshot = json_of(response).await;
    assert_eq!(snapshot["status"], json!("Done"));
    assert_eq!(snapshot["assignee_account_id"], json!(env.sam));
    assert_eq!(snapshot["updated"], json!("2026-11-22T08:30:00Z"));
    let response = env
        .http
        .put(control(&format!("sites/{site}/issues")))
        .json(&json!({"issue": "OPS-3", "status": "Nope", "updated": "2026-11-22T08:30:00Z"}))
        .send()
        .await
        .expect("upsert");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = env
        .http
        .post(control(&format!("sites/{site}/issues/delete")))
        .json(&json!({"ids": ["OPS-1", "OPS-404"]}))
        .send()
        .await
        .expect("delete");
    assert_eq!(json_of(response).await, json!({"deleted": 1}));
    let listed = json_of(
        env.http
            .get(control(&format!("sites/{site}/issues")))
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(listed.as_array().expect("list").len(), 3);
    let deleted = json_of(
        env.http
            .get(control(&format!("sites/{site}/issues/deleted")))
            .send()
            .await
            .expect("deleted"),
    )
    .await;
    assert_eq!(deleted["ids"], json!([generated["ids"][0]]));

    let response = env
        .http
        .post(control(&format!("sites/{site}/spaces/generate")))
        .json(&json!({"count": 2}))
        .send()
        .await
        .expect("spaces");
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = env
        .http
        .put(control(&format!("sites/{site}/spaces")))
        .json(&json!({"key": "KB", "name": "Knowledge", "space_type": "knowledge_base"}))
        .send()
        .await
        .expect("space upsert");
    assert_eq!(
        json_of(response).await["space_type"],
        json!("knowledge_base")
    );
    let response = env
        .http
        .put(control(&format!("sites/{site}/spaces")))
        .json(&json!({"key": "KB"}))
        .send()
        .await
        .expect("duplicate");
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let response = env
        .http
        .post(control(&format!("sites/{site}/spaces/delete")))
        .json(&json!({"ids": ["KB"]}))
        .send()
        .await
        .expect("delete");
    assert_eq!(json_of(response).await, json!({"deleted": 1}));
    assert_eq!(env.emu.spaces(&site).len(), 2);
    let response = env
        .http
        .get(control("sites/00000000-0000-0000-0000-000000000000/spaces"))
        .send()
        .await
        .expect("unknown site");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = env
        .http
        .put(control("quota"))
        .json(&json!({"product": "confluence", "points_per_hour": 7}))
        .send()
        .await
        .expect("quota");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let quota = json_of(env.http.get(control("quota")).send().await.expect("quota")).await;
    assert_eq!(quota["confluence"]["points_per_hour"], json!(7));
    assert_eq!(quota["jira"]["points_per_hour"], json!(65000));
    assert_eq!(quota["burst_requests_per_second"], json!(100));
    let response = env
        .http
        .put(control("burst"))
        .json(&json!({"requests_per_second": null}))
        .send()
        .await
        .expect("burst");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let response = env
        .http
        .post(control("faults"))
        .json(&json!({"kind": "token_expired", "path_prefix": "/me"}))
        .send()
        .await
        .expect("fault");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    assert_eq!(
        env.get(env.url("me"), &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.get(env.url("me"), &token).await.status(),
        StatusCode::OK
    );
    let response = env
        .http
        .put(control("faults/error-rate"))
        .json(&json!({"probability": 1.0, "path_prefix": "/me", "kinds": [{"kind": "internal_error"}]}))
        .send()
        .await
        .expect("rate");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(env.url("me"), &token).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let response = env
        .http
        .delete(control("faults"))
        .send()
        .await
        .expect("clear");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(env.url("me"), &token).await.status(),
        StatusCode::OK
    );
    let log = json_of(env.http.get(control("requests")).send().await.expect("log")).await;
    let statuses: Vec<_> = log
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| r["path"] == json!("/me"))
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(401), json!(200), json!(500), json!(200)]
    );
    assert!(
        log.as_array()
            .expect("log")
            .iter()
            .all(|r| !r["path"].as_str().expect("path").starts_with("/_emulator")),
        "control calls are not logged"
    );
    let response = env
        .http
        .delete(control("requests"))
        .send()
        .await
        .expect("clear log");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(env.emu.request_log().is_empty());
}

// ----- OpenAPI schemas -----------------------------------------------------------------------

/// A structural checker for OpenAPI 3.0 schemas: `$ref`, `allOf`/`anyOf`/`oneOf`, `type` with
/// `nullable`, `enum`, `required`, `properties`, `additionalProperties` (false, true or a schema),
/// `items`, and the formats `uri`, `date-time`, `uuid`, `int32`/`int64`. Anything else in a schema
/// (descriptions, `readOnly`, `xml`, examples) does not constrain the instance.
pub(crate) struct OpenApi {
    pub(crate) doc: Value,
}

impl OpenApi {
    pub(crate) fn load(file: &str) -> Self {
        let path = format!("{}/openapi/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        Self {
            doc: serde_json::from_str(&text).expect("OpenAPI JSON"),
        }
    }

    pub(crate) fn component(&self, name: &str) -> Value {
        let schema = &self.doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no component schema {name}");
        schema.clone()
    }

    fn resolve(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported: {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    /// Every violation of `schema` by `value`, as `path: problem`.
    fn check(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk(schema, value, "$", &mut errors);
        errors
    }

    fn walk(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let nullable = schema["nullable"] == json!(true);
        if value.is_null() && nullable {
            return;
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let target = self.resolve(reference);
            self.walk(target, value, at, errors);
            return;
        }
        if let Some(all) = schema["allOf"].as_array() {
            for part in all {
                self.walk(part, value, at, errors);
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(options) = schema[keyword].as_array() {
                let passing = options
                    .iter()
                    .filter(|o| self.check_at(o, value, at).is_empty())
                    .count();
                if passing == 0 || (exactly_one && passing > 1) {
                    errors.push(format!("{at}: {passing} alternatives of {keyword} match"));
                }
            }
        }
        let kind = schema["type"].as_str().or_else(|| {
            (schema.get("properties").is_some() || schema.get("additionalProperties").is_some())
                .then_some("object")
        });
        if let Some(kind) = kind {
            let ok = match kind {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("unknown type {other}"),
            };
            if !ok {
                errors.push(format!("{at}: expected {kind}, got {value}"));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} not in {allowed:?}"));
        }
        self.check_format(schema, value, at, errors);
        if let Some(object) = value.as_object() {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().expect("required names are strings");
                if !object.contains_key(name) {
                    errors.push(format!("{at}: missing required {name}"));
                }
            }
            let properties = schema["properties"].as_object();
            for (name, field) in object {
                let path = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => self.walk(property, field, &path, errors),
                    None => match &schema["additionalProperties"] {
                        Value::Bool(false) => {
                            errors.push(format!("{at}: property {name} is not allowed"));
                        }
                        extra @ Value::Object(_) => self.walk(extra, field, &path, errors),
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (index, item) in array.iter().enumerate() {
                self.walk(items, item, &format!("{at}[{index}]"), errors);
            }
        }
    }

    fn check_at(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk(schema, value, at, &mut errors);
        errors
    }

    fn check_format(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(format) = schema["format"].as_str() else {
            return;
        };
        let ok = match (format, value) {
            ("uri", Value::String(s)) => Url::parse(s).is_ok(),
            ("date-time", Value::String(s)) => DateTime::parse_from_rfc3339(s).is_ok(),
            ("uuid", Value::String(s)) => uuid::Uuid::parse_str(s).is_ok(),
            ("int32", v) => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            ("int64", v) => v.is_i64(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {value} is not a valid {format}"));
        }
    }
}

pub(crate) fn assert_valid(api: &OpenApi, schema: &Value, body: &Value, what: &str) {
    let errors = api.check(schema, body);
    assert!(
        errors.is_empty(),
        "{what} violates the schema:\n{}",
        errors.join("\n")
    );
}

fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

/// `IssueBean.fields` is `additionalProperties: {}` in the spec; hold each field the emulator
/// renders to the component schema Jira documents for it, too.
pub(crate) fn assert_fields_valid(api: &OpenApi, issue: &Value, what: &str) {
    let Some(fields) = issue["fields"].as_object() else {
        return;
    };
    let string = json!({"type": "string"});
    for (name, value) in fields {
        let schema = match name.as_str() {
            "status" => api.component("StatusDetails"),
            "issuetype" => api.component("IssueTypeDetails"),
            "project" => api.component("ProjectDetails"),
            // A requested-but-empty field is `null`, as Atlassian documents.
            "priority" => nullable(api.component("Priority")),
            "assignee" | "reporter" | "creator" => nullable(api.component("UserDetails")),
            "labels" => json!({"type": "array", "items": {"type": "string"}}),
            "summary" => string.clone(),
            "description" => {
                json!({"type": "object", "nullable": true, "required": ["type", "version", "content"]})
            }
            "resolution" => nullable(api.component("Resolution")),
            "customfield_10016" => json!({"type": "number", "nullable": true}),
            "customfield_10020" => json!({"type": "array", "nullable": true, "items": {
                "type": "object",
                "required": ["id", "name", "state", "boardId"],
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "state": {"type": "string", "enum": ["future", "active", "closed"]},
                    "boardId": {"type": "integer"},
                    "startDate": {"type": "string", "format": "date-time"},
                    "endDate": {"type": "string", "format": "date-time"},
                },
            }}),
            "comment" => api.component("PageOfComments"),
            "parent" => {
                if value.is_null() {
                    continue;
                }
                assert_valid(
                    api,
                    &json!({"type": "object", "required": ["id", "key", "self", "fields"],
                        "properties": {"id": {"type": "string"}, "key": {"type": "string"},
                            "self": {"type": "string", "format": "uri"},
                            "fields": {"type": "object", "required": ["summary", "status", "issuetype"]}}}),
                    value,
                    &format!("{what}.fields.parent"),
                );
                assert_fields_valid(api, value, &format!("{what}.fields.parent"));
                continue;
            }
            "created" | "updated" | "resolutiondate" => {
                if name == "resolutiondate" && value.is_null() {
                    continue;
                }
                let text = value.as_str().unwrap_or_default();
                assert!(
                    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3f%z").is_ok()
                        && text.len() == "2026-03-01T09:15:07.311+1100".len(),
                    "{what}.{name}: {text} is not a Jira timestamp"
                );
                continue;
            }
            other => panic!("{what}: unexpected field {other}"),
        };
        assert_valid(api, &schema, value, &format!("{what}.fields.{name}"));
    }
}

#[tokio::test]
async fn served_bodies_validate_against_the_published_openapi_schemas() {
    let jira = OpenApi::load("jira-platform-v3.json");
    let confluence = OpenApi::load("confluence-v2.json");
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 30);
    env.emu
        .upsert_issue(
            &env.site,
            IssueChange {
                project_key: Some("ENG".into()),
                summary: Some("Unassigned, no priority label".into()),
                labels: Some(vec![]),
                assignee: Some(None),
                reporter: Some(Some(env.sam.clone())),
                updated: env.emu.now(),
                ..IssueChange::default()
            },
        )
        .expect("issue");
    env.emu.create_spaces(&env.site, 12);
    let token = env.token(&env.mia, ALL_SCOPES).await;

    // search/jql: ids only, all fields, names+schema, and the last page.
    let results = jira.component("SearchAndReconcileResults");
    for body in [
        json!({"jql": "project = ENG", "maxResults": 10}),
        json!({"jql": "project = ENG", "fields": ["*all"], "maxResults": 40, "expand": "names,schema"}),
        json!({"jql": "project = ENG", "fields": ["summary", "status", "assignee", "updated"], "maxResults": 7}),
    ] {
        let response = env.search(&token, body.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = json_of(response).await;
        assert_valid(&jira, &results, &page, &format!("search/jql {body}"));
        for issue in page["issues"].as_array().expect("issues") {
            assert_fields_valid(&jira, issue, "search/jql issue");
        }
    }
    let mut url = env.jira("search/jql");
    url.query_pairs_mut()
        .append_pair("jql", "project = ENG ORDER BY key DESC")
        .append_pair("fields", "*navigable,-description");
    let page = json_of(env.get(url, &token).await).await;
    assert_valid(&jira, &results, &page, "GET search/jql");

    // Every navigable field, and a sparse paging with an empty page (still a valid body).
    env.emu.set_search_paging(atlassian_emulator::SearchPaging {
        page_cap: Some(4),
        empty_page_every: Some(2),
    });
    let first = json_of(
        env.search(
            &token,
            json!({"jql": "project = ENG", "fields": ["*navigable", "comment"], "maxResults": 10}),
        )
        .await,
    )
    .await;
    assert_valid(&jira, &results, &first, "search/jql *navigable");
    for issue in first["issues"].as_array().expect("issues") {
        assert_fields_valid(&jira, issue, "search/jql *navigable issue");
    }
    let empty = json_of(
        env.search(
            &token,
            json!({"jql": "project = ENG", "fields": ["*navigable", "comment"], "maxResults": 10, "nextPageToken": first["nextPageToken"]}),
        )
        .await,
    )
    .await;
    assert_eq!(empty["issues"], json!([]));
    assert_valid(&jira, &results, &empty, "empty search/jql page");
    env.emu
        .set_search_paging(atlassian_emulator::SearchPaging::default());

    // GET field.
    let fields = json_of(env.get(env.jira("field"), &token).await).await;
    let field_list = jira.doc["paths"]["/rest/api/3/field"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]
        .clone();
    assert_valid(&jira, &field_list, &fields, "GET /field");

    // GET issue.
    let issue = json_of(env.get(env.jira("issue/ENG-31"), &token).await).await;
    assert_valid(&jira, &jira.component("IssueBean"), &issue, "issue");
    assert_fields_valid(&jira, &issue, "issue");
    assert_eq!(issue["fields"]["assignee"], Value::Null);

    // bulkfetch. Documented exception: real responses (per Atlassian's documentation, and the
    // OpenAPI document's own example) carry a top-level `expand` that `BulkIssueResults` does
    // not declare.
    let mut bulk = json_of(
        env.post(
            env.jira("issue/bulkfetch"),
            &token,
            &json!({"issueIdsOrKeys": ["ENG-1", "ENG-2", "10005"]}),
        )
        .await,
    )
    .await;
    assert!(bulk["expand"].is_string());
    bulk.as_object_mut().expect("object").remove("expand");
    assert_valid(
        &jira,
        &jira.component("BulkIssueResults"),
        &bulk,
        "bulkfetch",
    );

    // approximate-count and the error bodies.
    let count = json_of(
        env.post(
            env.jira("search/approximate-count"),
            &token,
            &json!({"jql": "project = ENG"}),
        )
        .await,
    )
    .await;
    assert_valid(
        &jira,
        &jira.component("JQLCountResultsBean"),
        &count,
        "count",
    );
    let error = json_of(env.search(&token, json!({"jql": ""})).await).await;
    assert_valid(
        &jira,
        &jira.component("ErrorCollection"),
        &error,
        "400 body",
    );

    // myself.
    let myself = json_of(env.get(env.jira("myself"), &token).await).await;
    assert_valid(&jira, &jira.component("User"), &myself, "myself");

    // Confluence spaces, with and without description and icon. Documented exception
    // (docs/architecture.md, "The emulator"): `description` and `icon` are `null` unless asked for,
    // which the schema's `$ref`s do not allow.
    let mut listing = confluence.doc["paths"]["/spaces"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]
        .clone();
    assert_eq!(listing["title"], json!("MultiEntityResult<Space>"));
    assert_eq!(
        listing["properties"]["results"]["items"]["$ref"],
        json!("#/components/schemas/SpaceBulk")
    );
    let mut space_bulk = confluence.component("SpaceBulk");
    for nullable in ["description", "icon"] {
        space_bulk["properties"][nullable]["nullable"] = json!(true);
    }
    listing["properties"]["results"]["items"] = space_bulk;
    for query in [
        "api/v2/spaces?limit=5",
        "api/v2/spaces?limit=250&description-format=plain&include-icon=true",
        "api/v2/spaces?description-format=view&type=personal",
        "api/v2/spaces?sort=-name&status=current",
    ] {
        let body = json_of(env.get(env.wiki(query), &token).await).await;
        assert!(
            !body["results"].as_array().expect("results").is_empty(),
            "{query}"
        );
        assert_valid(&confluence, &listing, &body, query);
    }
    // The strict schema fails only where the documented exception applies.
    let strict = confluence.doc["paths"]["/spaces"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]
        .clone();
    let body = json_of(env.get(env.wiki("api/v2/spaces?limit=3"), &token).await).await;
    let errors = confluence.check(&strict, &body);
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .all(|e| e.ends_with("expected object, got null")
                && (e.contains(".description:") || e.contains(".icon:"))),
        "{errors:?}"
    );
}

#[test]
fn the_schema_checker_catches_what_it_claims_to() {
    let api = OpenApi {
        doc: json!({"components": {"schemas": {
            "Thing": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id"],
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                    "when": {"type": "string", "format": "date-time"},
                    "link": {"type": "string", "format": "uri"},
                    "count": {"type": "integer", "format": "int32"},
                    "child": {"allOf": [{"$ref": "#/components/schemas/Thing"}]},
                    "maybe": {"type": "string", "nullable": true},
                    "list": {"type": "array", "items": {"type": "boolean"}}
                }
            }
        }}}),
    };
    let thing = api.component("Thing");
    assert!(
        api.check(&thing, &json!({"id": "1", "maybe": null, "list": [true]}))
            .is_empty()
    );
    for bad in [
        json!({}),
        json!({"id": 1}),
        json!({"id": "1", "kind": "c"}),
        json!({"id": "1", "when": "yesterday"}),
        json!({"id": "1", "link": "not a url"}),
        json!({"id": "1", "count": 5_000_000_000_i64}),
        json!({"id": "1", "child": {"id": 2}}),
        json!({"id": "1", "extra": true}),
        json!({"id": "1", "list": ["x"]}),
        json!({"id": null}),
    ] {
        assert!(!api.check(&thing, &bad).is_empty(), "{bad} should fail");
    }
}
