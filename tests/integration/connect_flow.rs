//! The consent flow end to end over real HTTP: invite link, state cookie, the emulator's
//! authorize redirect, callback, code exchange, /me, accessible-resources, and the store.

use crate::support::{NowForTests, TestApp};
use atlassian_emulator::ConsentDecision;
use atlassync::http::STATE_COOKIE;
use atlassync::sandbox::Sandbox;
use sqlx::PgPool;

#[sqlx::test]
async fn a_user_who_consents_gets_a_sealed_grant_with_every_site(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (cloud_id, account_id) = app.site_and_user("acme", "Mia Krystof", "Australia/Sydney");

    let (status, body) = app.consent("mia", &account_id).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Connected"), "{body}");

    let (label, stored_account, status, name): (String, String, String, String) =
        sqlx::query_as("SELECT label, account_id, status, account_name FROM grants")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((label.as_str(), status.as_str()), ("mia", "active"));
    assert_eq!(stored_account, account_id);
    assert_eq!(name, "Mia Krystof");

    let sites: Vec<(String, String, String)> =
        sqlx::query_as("SELECT cloud_id, product, status FROM sites ORDER BY product")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(
        sites,
        vec![
            (cloud_id.clone(), "confluence".into(), "active".into()),
            (cloud_id, "jira".into(), "active".into()),
        ]
    );

    // The stored tokens open with the configured key and work against the emulator.
    let grant = {
        let mut conn = app.pool().acquire().await.unwrap();
        atlassync::store::grants::all_grants(&mut conn)
            .await
            .unwrap()
            .remove(0)
    };
    let keyring = app.sandbox.app.keyring();
    let access = grant
        .access_token(keyring)
        .unwrap()
        .expect("access token stored");
    let me = app
        .sandbox
        .app
        .api
        .me(&access)
        .await
        .expect("access token works");
    assert_eq!(me.account_id.as_str(), account_id);
    let refreshed = app
        .sandbox
        .app
        .tokens
        .refresh(&grant.refresh_token(keyring).unwrap())
        .await;
    assert!(
        refreshed.is_ok(),
        "stored refresh token works: {refreshed:?}"
    );
    assert_eq!(app.sandbox.emulator.counters().code_exchanges, 1);
}

#[sqlx::test]
async fn consenting_again_renews_the_same_grant_with_a_new_family(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Sam Ortiz", "America/New_York");
    assert_eq!(app.consent("sam", &account_id).await.0, 200);
    let (id_before, family_before): (uuid::Uuid, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT id, family_started_at FROM grants")
            .fetch_one(app.pool())
            .await
            .unwrap();
    // Mark it broken, as the sweep would after invalid_grant, then consent again later.
    sqlx::query("UPDATE grants SET status = 'needs_reauth', status_reason = 'invalid_grant'")
        .execute(app.pool())
        .await
        .unwrap();
    app.clock.advance(chrono::Duration::days(200));

    let (status, body) = app.consent("sam-renewed", &account_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.grant_count().await, 1, "no duplicate grant");
    let (id_after, family_after, status, label): (
        uuid::Uuid,
        chrono::DateTime<chrono::Utc>,
        String,
        String,
    ) = sqlx::query_as("SELECT id, family_started_at, status, label FROM grants")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(id_after, id_before);
    assert_eq!(status, "active");
    assert_eq!(label, "sam-renewed");
    assert_eq!(family_after - family_before, chrono::Duration::days(200));
    let sites: i64 = sqlx::query_scalar("SELECT count(*) FROM sites")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(sites, 2, "sites upserted, not duplicated");
}

#[sqlx::test]
async fn a_user_who_declines_leaves_nothing_stored(pool: PgPool) {
    let app = TestApp::start(pool).await;
    app.site_and_user("acme", "Priya Raman", "Asia/Kolkata");
    let (status, body) = app
        .sandbox
        .consent("priya", ConsentDecision::Deny)
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("access_denied"), "{body}");
    assert_eq!(app.grant_count().await, 0);
}

/// Opens the invite without following redirects; returns (state cookie, authorize URL).
async fn start_consent(app: &TestApp, label: &str) -> (String, url::Url) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(app.sandbox.app.invite_link(label))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.strip_prefix(&format!("{STATE_COOKIE}=")))
        .expect("state cookie set")
        .to_owned();
    let location = response.headers()["location"].to_str().unwrap();
    (cookie, url::Url::parse(location).unwrap())
}

/// Asks the emulator to authorize (consent queued) and returns the callback URL it sends to.
async fn authorize(app: &TestApp, account_id: &str, authorize_url: &url::Url) -> url::Url {
    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: account_id.to_owned(),
        sites: None,
    });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(authorize_url.clone()).send().await.unwrap();
    assert_eq!(response.status(), 302, "Atlassian redirects with 302 Found");
    url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

async fn call_back(callback: &url::Url, cookie: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(callback.clone());
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("{STATE_COOKIE}={cookie}"));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn with_state(callback: &url::Url, state: &str) -> url::Url {
    let mut url = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let value = if k == "state" {
                state.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), value)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

#[sqlx::test]
async fn a_callback_without_the_state_cookie_is_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Mia", "UTC");
    let (_cookie, authorize_url) = start_consent(&app, "mia").await;
    let callback = authorize(&app, &account_id, &authorize_url).await;
    let (status, body) = call_back(&callback, None).await;
    assert_eq!(status, 400);
    assert!(body.contains("state cookie is missing"), "{body}");
    assert_eq!(app.grant_count().await, 0);
    assert_eq!(
        app.sandbox.emulator.counters().code_exchanges,
        0,
        "code never exchanged"
    );
}

#[sqlx::test]
async fn a_callback_whose_state_differs_from_the_cookie_is_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Mia", "UTC");
    let (cookie, authorize_url) = start_consent(&app, "mia").await;
    let callback = authorize(&app, &account_id, &authorize_url).await;
    // An attacker's own valid state, delivered to the victim's browser.
    let (attacker_cookie, _) = start_consent(&app, "attacker").await;
    let forged = with_state(&callback, &attacker_cookie);
    let (status, body) = call_back(&forged, Some(&cookie)).await;
    assert_eq!(status, 400);
    assert!(body.contains("does not match"), "{body}");
    assert_eq!(app.grant_count().await, 0);
}

#[sqlx::test]
async fn a_replayed_callback_is_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Mia", "UTC");
    let (cookie, authorize_url) = start_consent(&app, "mia").await;
    let callback = authorize(&app, &account_id, &authorize_url).await;
    assert_eq!(call_back(&callback, Some(&cookie)).await.0, 200);
    sqlx::query("DELETE FROM grants")
        .execute(app.pool())
        .await
        .unwrap();

    let (status, body) = call_back(&callback, Some(&cookie)).await;
    assert_eq!(status, 400);
    assert!(body.contains("already completed"), "{body}");
    assert_eq!(app.grant_count().await, 0);
}

#[sqlx::test]
async fn an_expired_state_is_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Mia", "UTC");
    let (cookie, authorize_url) = start_consent(&app, "mia").await;
    let callback = authorize(&app, &account_id, &authorize_url).await;
    app.clock.advance(chrono::Duration::hours(1));
    let (status, body) = call_back(&callback, Some(&cookie)).await;
    assert_eq!(status, 400);
    assert!(body.contains("expired"), "{body}");
    assert_eq!(app.grant_count().await, 0);
}

#[sqlx::test]
async fn a_tampered_or_expired_invite_is_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let browser = Sandbox::browser();
    let link = app.sandbox.app.invite_link("mia");

    let mut tampered = link.clone();
    let signed = link
        .query_pairs()
        .find(|(k, _)| k == "invite")
        .unwrap()
        .1
        .into_owned();
    let (payload, tag) = signed.split_once('.').unwrap();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged_payload = String::from_utf8(engine.decode(payload).unwrap())
        .unwrap()
        .replace("mia", "eve");
    tampered.query_pairs_mut().clear().append_pair(
        "invite",
        &format!("{}.{tag}", engine.encode(forged_payload)),
    );
    let response = browser.get(tampered).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("altered"));

    app.clock.advance(chrono::Duration::days(8));
    let response = browser.get(link).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("expired"));

    let states: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_states")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(states, 0, "no consent attempt was started");
    assert_eq!(app.grant_count().await, 0);
}

#[sqlx::test]
async fn an_invite_link_works_once(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    let link = app.sandbox.app.invite_link("team");
    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: mia,
        sites: None,
    });
    let response = Sandbox::browser().get(link.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The same link again, by someone else: refused before Atlassian is asked.
    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: sam,
        sites: None,
    });
    let response = Sandbox::browser().get(link).send().await.unwrap();
    assert_eq!(response.status(), 410);
    assert!(response.text().await.unwrap().contains("already used"));
    assert_eq!(app.grant_count().await, 1);
    assert_eq!(app.sandbox.emulator.counters().code_exchanges, 1);
}

#[sqlx::test]
async fn a_reconsent_link_is_refused_to_another_account_and_outlives_its_deadline(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, eve) = app.site_and_user("evil", "Eve", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    let grant = app.grants().await.remove(0);
    // A re-consent link for a deadline 30 days away (longer than the 7-day invite TTL).
    let deadline = app.clock.now_for_tests() + chrono::Duration::days(30);
    let link =
        app.sandbox
            .app
            .reconsent_link(&grant.label, grant.account_id.as_ref(), Some(deadline));
    app.clock.advance(chrono::Duration::days(20));

    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: eve.clone(),
        sites: None,
    });
    let response = Sandbox::browser().get(link.clone()).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("nothing was stored")
    );
    assert_eq!(app.grant_count().await, 1, "Eve got no grant");
    let eve_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM grants WHERE account_id = $1")
        .bind(&eve)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(eve_rows, 0);

    // The refused attempt did not spend the link: Mia can still use it, 20 days on.
    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: mia,
        sites: None,
    });
    let response = Sandbox::browser().get(link).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let renewed = app.grants().await.remove(0);
    assert_eq!(renewed.id, grant.id);
    assert!(renewed.family_started_at > grant.family_started_at);
}
