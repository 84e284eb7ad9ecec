//! The daemon as a component, in-process: built from the sandbox's configuration, run with a
//! shutdown future the test controls, on the manual clock.

use std::time::Duration;

use crate::support::{TestApp, overrides};
use atlassian_emulator::{EmulatorConfig, Fault, FaultKind};
use atlassync::daemon::Daemon;
use sqlx::PgPool;

const GRANTS: usize = 20;

#[sqlx::test]
async fn a_daemon_cancelled_mid_sweep_finishes_every_exchange_it_started(pool: PgPool) {
    let app = TestApp::start_with(
        pool,
        EmulatorConfig::default(),
        overrides(&[("http.listen", "127.0.0.1:0")]),
    )
    .await;
    let (cloud_id, _) = app.site_and_user("acme", "Someone", "UTC");
    for i in 0..GRANTS {
        let account = app.user(&format!("User {i}"), "UTC", vec![cloud_id.clone()]);
        assert_eq!(app.consent(&format!("user-{i}"), &account).await.0, 200);
    }
    let before = app.grants().await;
    // Every grant is due for a keep-alive rotation (30 days plus up to 3 of jitter), and
    // every exchange is slow.
    app.clock.advance(chrono::Duration::days(34));
    app.sandbox.emulator.inject_fault(
        Fault::new(FaultKind::Latency { millis: 600 }, "/oauth/token").times(GRANTS as u32),
    );
    let refreshes_before = app.sandbox.emulator.counters().refreshes;

    let daemon = Daemon::build(app.sandbox.app.clone()).expect("the daemon builds");
    let (_reloads, reload_rx) = tokio::sync::mpsc::channel(1);
    // Shut down as soon as the first exchange is under way.
    let pool = app.pool().clone();
    let shutdown = async move {
        loop {
            let in_flight: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM grants WHERE refresh_started_at IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .expect("count exchanges in flight");
            if in_flight > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), daemon.run(shutdown, reload_rx))
        .await
        .expect("the daemon drains within its grace")
        .expect("the daemon stops cleanly");

    let after = app.grants().await;
    let rotated = after
        .iter()
        .filter(|grant| {
            let old = before
                .iter()
                .find(|b| b.id == grant.id)
                .expect("same grants");
            grant.token_version > old.token_version
        })
        .count();
    let counters = app.sandbox.emulator.counters();
    assert!(
        after.iter().all(|g| g.refresh_started_at.is_none()),
        "an exchange was left half-done: {after:#?}"
    );
    assert_eq!(
        rotated as u64,
        counters.refreshes - refreshes_before,
        "every rotation Atlassian answered is persisted"
    );
    assert!(
        rotated > 0 && rotated < GRANTS,
        "the sweep stopped between batches, not before or after them ({rotated} rotated)"
    );
    assert_eq!(counters.family_revocations, 0);

    // The stored tokens are the current ones: the next sweep rotates every grant cleanly.
    let report = app.sweep(&app.refresher("after-restart")).await;
    assert_eq!(report.rotated, GRANTS - rotated);
    assert_eq!(app.sandbox.emulator.counters().family_revocations, 0);
}
