//! Ordinary events that must never kill a token family or raise a false alarm. Each test is
//! named for the event; the daemon and the emulator share one manual clock, so Atlassian's
//! 10-minute reuse leeway passes in a call to `advance`.

use std::time::Duration;

use crate::private_postgres::PrivatePostgres;
use crate::support::{TestApp, overrides};
use atlassian_emulator::{EmulatorConfig, Fault, FaultKind};
use atlassync::domain::GrantStatus;

#[tokio::test]
async fn a_database_outage_right_after_an_exchange_loses_no_rotation() {
    let postgres = PrivatePostgres::start();
    let pool = postgres.pool().await;
    atlassync::store::migrate(&pool).await.expect("migrations");
    let app = TestApp::start_with(pool, EmulatorConfig::default(), overrides(&[])).await;
    let (cloud_id, _) = app.site_and_user("acme", "Someone", "UTC");
    for i in 0..3 {
        let account = app.user(&format!("User {i}"), "UTC", vec![cloud_id.clone()]);
        assert_eq!(app.consent(&format!("user-{i}"), &account).await.0, 200);
    }
    // Every grant is due for a keep-alive rotation, and Atlassian answers slowly, so the
    // database can go away between the exchange and its persist.
    app.clock.advance(chrono::Duration::days(34));
    app.sandbox
        .emulator
        .inject_fault(Fault::new(FaultKind::Latency { millis: 1500 }, "/oauth/token").times(3));
    let refresher = app.refresher("worker-a");
    let sweep = tokio::spawn({
        let app = app.sandbox.app.clone();
        let refresher = refresher.clone();
        async move {
            atlassync::jobs::token_sweep::run_once(
                &app,
                &refresher,
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
        }
    });
    wait_until_exchanges_started(&app, 3).await;
    postgres.stop();
    // The exchanges complete at Atlassian while the database is down, and the outage lasts
    // more than twice the reuse leeway.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.clock.advance(chrono::Duration::minutes(25));
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.start_server();

    let report = tokio::time::timeout(Duration::from_secs(60), sweep)
        .await
        .expect("the sweep finishes once the database is back")
        .expect("the sweep task does not panic");
    let report = report.expect("the sweep persists what it exchanged");
    assert_eq!(report.rotated, 3, "{report:?}");

    // Each stored token is the current one: the next keep-alive (30 days plus up to 3 of
    // jitter) rotates every grant.
    app.clock.advance(chrono::Duration::days(34));
    let next = app.sweep(&app.refresher("worker-b")).await;
    assert_eq!(next.rotated, 3, "{next:?}");
    let counters = app.sandbox.emulator.counters();
    assert_eq!(counters.family_revocations, 0);
    assert_eq!(counters.invalid_grant_errors, 0);
    assert!(
        app.grants()
            .await
            .iter()
            .all(|g| g.status == GrantStatus::Active && g.refresh_started_at.is_none())
    );
}

/// Waits until `count` grants have an exchange under way.
async fn wait_until_exchanges_started(app: &TestApp, count: i64) {
    for _ in 0..500 {
        let started: i64 =
            sqlx::query_scalar("SELECT count(*) FROM grants WHERE refresh_started_at IS NOT NULL")
                .fetch_one(app.pool())
                .await
                .expect("count started exchanges");
        if started >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the exchanges never started");
}
