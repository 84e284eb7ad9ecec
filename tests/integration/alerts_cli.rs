//! `atlassync alerts list`: what ops sees, from the binary.

use std::process::Command;

use crate::support::{TestApp, write_config};
use sqlx::PgPool;

#[sqlx::test]
async fn alerts_list_shows_open_alerts_newest_first_with_a_fresh_link(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (acme, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    assert_eq!(app.consent("sam", &sam).await.0, 200);
    let refresher = app.refresher("worker");
    // Sam revokes the app; later a site admin takes one of Mia's sites away.
    app.sandbox.emulator.revoke_app(&sam);
    app.clock.advance(chrono::Duration::days(34));
    app.sweep(&refresher).await;
    app.clock.advance(chrono::Duration::hours(1));
    app.sandbox.emulator.revoke_site(&mia, &acme);
    app.revalidate(&refresher).await;

    let config = write_config(&app, &pool);
    let output = Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .arg("--config")
        .arg(&config)
        .args(["alerts", "list", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let alerts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let alerts = alerts.as_array().unwrap();
    let kinds: Vec<&str> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    // Mia's revalidation opened two site alerts and then no_sites; Sam's alert is oldest.
    assert_eq!(
        kinds,
        ["no_sites", "site_revoked", "site_revoked", "needs_reauth"],
        "newest first"
    );
    let sam_alert = alerts.last().unwrap();
    assert_eq!(sam_alert["label"], "sam");
    assert_eq!(sam_alert["account_id"], sam.as_str());
    assert!(
        sam_alert["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    assert!(
        sam_alert["reconsent_url"]
            .as_str()
            .unwrap()
            .contains("/connect?invite="),
        "{sam_alert}"
    );
}
