//! `atlassync grants import`: refresh tokens from an existing integration, JSON lines on
//! stdin, each exchanged once with the rotated token persisted first.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{NowForTests, TestApp, write_config};
use atlassian_emulator::{ConsentDecision, Fault, FaultKind};
use atlassync::domain::RefreshToken;
use atlassync::onboarding::{OnboardError, import_refresh_token};
use sqlx::PgPool;

/// A refresh token issued to "another integration": a code flow run directly against the
/// emulator, outside atlassync.
async fn foreign_refresh_token(app: &TestApp, account_id: &str) -> String {
    let emulator = &app.sandbox.emulator;
    emulator.queue_consent(ConsentDecision::Accept {
        account_id: account_id.to_owned(),
        sites: None,
    });
    let redirect_uri = "https://other-integration.example.com/cb";
    let mut authorize = emulator.base_url().join("authorize").unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("audience", "api.atlassian.com")
        .append_pair("client_id", "emulator-client")
        .append_pair(
            "scope",
            "read:me offline_access read:jira-work read:jira-user read:space:confluence",
        )
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", "s")
        .append_pair("response_type", "code")
        .append_pair("prompt", "consent");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(authorize).send().await.unwrap();
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: serde_json::Value = client
        .post(emulator.base_url().join("oauth/token").unwrap())
        .json(&serde_json::json!({
            "grant_type": "authorization_code",
            "client_id": "emulator-client",
            "client_secret": "emulator-secret",
            "code": code,
            "redirect_uri": redirect_uri,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn import_exchanges_each_token_and_reports_bad_lines_by_number(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let sam = app.user("Sam", "UTC", vec![]);
    let mia_token = foreign_refresh_token(&app, &mia).await;
    let sam_token = foreign_refresh_token(&app, &sam).await;
    let config = write_config(&app, &pool);

    let input = format!(
        "{{\"label\":\"mia\",\"refresh_token\":\"{mia_token}\",\"consented_at\":\"2026-06-01T00:00:00Z\"}}\n\
         this is not json\n\
         {{\"label\":\"ghost\",\"refresh_token\":\"eyJ-not-a-real-token\"}}\n\
         \n\
         {{\"label\":\"sam\",\"refresh_token\":\"{sam_token}\"}}\n"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .arg("--config")
        .arg(&config)
        .args(["grants", "import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a line failed: {stderr}");
    assert!(
        stderr.contains("line 2: not a valid import line"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3 (ghost)") && stderr.contains("invalid_grant"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 imported, 0 already imported, 2 failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(&mia_token) && !stderr.contains(&sam_token));

    let rows: Vec<(String, Option<String>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT label, account_id, family_started_at FROM grants ORDER BY label")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "mia");
    assert_eq!(rows[0].1.as_deref(), Some(mia.as_str()));
    assert_eq!(rows[0].2.to_rfc3339(), "2026-06-01T00:00:00+00:00");
    assert_eq!(rows[1].1.as_deref(), Some(sam.as_str()));
    let sites: i64 = sqlx::query_scalar("SELECT count(*) FROM sites")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sites, 2, "mia's site, once per product");
    // Each token was exchanged exactly once: the old ones are now superseded.
    assert_eq!(app.sandbox.emulator.counters().refreshes, 2);
}

#[sqlx::test]
async fn importing_an_account_that_already_consented_renews_its_grant(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    let token = foreign_refresh_token(&app, &mia).await;
    let connected = import_refresh_token(
        &app.sandbox.app,
        "mia-imported",
        &RefreshToken::new(token),
        None,
    )
    .await
    .unwrap();
    assert!(connected.renewed);
    assert_eq!(app.grant_count().await, 1);
}

/// Runs `atlassync grants import` with `input` on stdin.
async fn run_import(config: &std::path::Path, input: String) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .arg("--config")
        .arg(config)
        .args(["grants", "import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[sqlx::test]
async fn importing_the_same_file_twice_after_the_leeway_revokes_no_family(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    let mia_token = foreign_refresh_token(&app, &mia).await;
    let sam_token = foreign_refresh_token(&app, &sam).await;
    let config = write_config(&app, &pool);
    let input = format!(
        "{{\"label\":\"mia\",\"refresh_token\":\"{mia_token}\"}}\n\
         {{\"label\":\"sam\",\"refresh_token\":\"{sam_token}\"}}\n"
    );
    let first = run_import(&config, input.clone()).await;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // An operator re-runs the whole file later, after Atlassian's 10-minute reuse leeway.
    app.clock.advance(chrono::Duration::minutes(11));
    let second = run_import(&config, input).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("0 imported, 2 already imported, 0 failed"),
        "{stderr}"
    );

    let counters = app.sandbox.emulator.counters();
    assert_eq!(counters.family_revocations, 0, "{counters:?}");
    assert_eq!(counters.refreshes, 2, "each token was presented once");
    assert_eq!(app.grant_count().await, 2, "one grant per account");
    // The stored tokens are the live ones.
    app.clock.advance(chrono::Duration::days(35));
    let report = app.sweep(&app.refresher("worker")).await;
    assert_eq!(report.rotated, 2, "{report:?}");
    assert_eq!(app.sandbox.emulator.counters().family_revocations, 0);
}

#[sqlx::test]
async fn an_import_whose_profile_lookup_failed_is_identified_at_the_next_revalidation(
    pool: PgPool,
) {
    let app = TestApp::start(pool.clone()).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    // Sam has consented already; his imported duplicate must not become a second grant.
    assert_eq!(app.consent("sam", &sam).await.0, 200);
    for (label, account) in [("mia", &mia), ("sam-imported", &sam)] {
        let token = foreign_refresh_token(&app, account).await;
        app.sandbox
            .emulator
            .inject_fault(Fault::new(FaultKind::InternalError, "/me"));
        let result =
            import_refresh_token(&app.sandbox.app, label, &RefreshToken::new(token), None).await;
        assert!(
            matches!(result, Err(OnboardError::Unidentified { .. })),
            "{result:?}"
        );
    }
    assert_eq!(app.grant_count().await, 3);

    let report = app.revalidate(&app.refresher("worker")).await;
    assert_eq!(report.checked, 2, "{report:?}");
    let grants = app.grants().await;
    assert_eq!(grants.len(), 2, "one grant per account: {grants:#?}");
    let mia_grant = grants
        .iter()
        .find(|g| g.label == "mia")
        .expect("mia's grant");
    assert_eq!(
        mia_grant.account_id.as_ref().map(|a| a.as_str()),
        Some(mia.as_str())
    );
    let sites: i64 = sqlx::query_scalar("SELECT count(*) FROM sites WHERE grant_id = $1")
        .bind(mia_grant.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sites, 2, "identified and revalidated: Jira and Confluence");
    assert_eq!(app.sandbox.emulator.counters().family_revocations, 0);
}

#[sqlx::test]
async fn an_import_that_died_after_its_exchange_may_be_rerun_inside_the_leeway(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let token = RefreshToken::new(foreign_refresh_token(&app, &mia).await);
    // A first run presented the token, Atlassian rotated, and the process died before
    // writing anything: the digest is there, no grant holds the result.
    app.sandbox
        .app
        .tokens
        .refresh(&token)
        .await
        .expect("the first run's exchange");
    {
        let mut conn = pool.acquire().await.unwrap();
        let window = chrono::Duration::minutes(5);
        let now = app.clock.now_for_tests();
        assert!(
            atlassync::store::presented_tokens::record_presented(
                &mut conn, &token, None, now, window
            )
            .await
            .unwrap()
        );
    }
    // Re-run two minutes later: still inside the leeway, so the family is saved.
    app.clock.advance(chrono::Duration::minutes(2));
    let connected = import_refresh_token(&app.sandbox.app, "mia", &token, None)
        .await
        .expect("the re-run imports");
    assert_eq!(connected.account.account_id.as_str(), mia);
    // Once a grant holds the result, the token is never presented again.
    app.clock.advance(chrono::Duration::minutes(1));
    let again = import_refresh_token(&app.sandbox.app, "mia", &token, None).await;
    assert!(
        matches!(again, Err(OnboardError::AlreadyPresented)),
        "{again:?}"
    );
    let counters = app.sandbox.emulator.counters();
    assert_eq!(counters.family_revocations, 0, "{counters:?}");
    assert_eq!(counters.reuses_in_leeway, 1, "{counters:?}");
}
