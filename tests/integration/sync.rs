//! Jira and Confluence sync against the emulator: the tables equal the emulator's truth,
//! whatever the users' time zones, deletions, 401s and rate limits.

use std::collections::BTreeMap;

use crate::support::{NowForTests, TestApp};
use atlassian_emulator::{EmulatorConfig, Fault, FaultKind, IssueChange, Product, SpaceChange};
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::{SyncReport, Syncer};
use chrono::{DateTime, Duration, Utc};
use rand::{RngExt, SeedableRng};
use sqlx::PgPool;

struct SyncApp {
    app: TestApp,
    syncer: Syncer,
}

impl SyncApp {
    async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, EmulatorConfig::default()).await
    }

    async fn start_with(pool: PgPool, emulator: EmulatorConfig) -> Self {
        let app = TestApp::start_with(pool, emulator, Default::default()).await;
        let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
        Self { app, syncer }
    }

    async fn run(&self, kind: SyncKind) -> SyncReport {
        self.app.sync_tick(&self.syncer, kind).await
    }

    async fn last_run(&self) -> (String, i32, i32, i32, Option<String>) {
        sqlx::query_as("SELECT outcome, requests, upserted, deleted, error FROM sync_runs ORDER BY id DESC LIMIT 1")
            .fetch_one(self.app.pool())
            .await
            .unwrap()
    }
}

/// key, project, summary, status, type, assignee, created, updated.
type IssueColumns = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);
/// Issue id → its columns.
type IssueTruth = BTreeMap<String, IssueColumns>;
/// id, then the columns, as selected.
type StoredRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

async fn stored_issues(pool: &PgPool, cloud_id: &str) -> IssueTruth {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT issue_id, issue_key, project_key, summary, status, issue_type, assignee_account_id, created_at, updated_at
         FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL",
    )
    .bind(cloud_id)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(id, key, project, summary, status, kind, assignee, created, updated)| {
                (
                    id,
                    (
                        key,
                        project,
                        summary,
                        status,
                        kind,
                        assignee,
                        trunc(created),
                        trunc(updated),
                    ),
                )
            },
        )
        .collect()
}

fn truth(app: &TestApp, cloud_id: &str) -> IssueTruth {
    app.sandbox
        .emulator
        .issues(cloud_id)
        .into_iter()
        .map(|i| {
            (
                i.id,
                (
                    i.key,
                    i.project_key,
                    i.summary,
                    i.status,
                    i.issue_type,
                    i.assignee_account_id,
                    trunc(i.created),
                    trunc(i.updated),
                ),
            )
        })
        .collect()
}

/// Jira timestamps carry milliseconds.
fn trunc(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

async fn connect_site(app: &TestApp, zone: &str) -> (String, String) {
    let cloud_id = app
        .sandbox
        .emulator
        .add_site("acme", &[Product::Jira, Product::Confluence]);
    let account = app.user("Mia", zone, vec![cloud_id.clone()]);
    assert_eq!(app.consent("mia", &account).await.0, 200);
    (cloud_id, account)
}

#[sqlx::test]
async fn after_many_random_cycles_the_tables_equal_the_emulator(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "Australia/Sydney").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 250);
    emulator.create_issues(&cloud, "OPS", 80);
    emulator.create_spaces(&cloud, 12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    for cycle in 0..12 {
        let now = s.app.clock.now_for_tests();
        let live: Vec<String> = emulator.issues(&cloud).into_iter().map(|i| i.id).collect();
        for _ in 0..rng.random_range(0..15) {
            emulator
                .upsert_issue(
                    &cloud,
                    IssueChange {
                        project_key: Some("ENG".into()),
                        summary: Some(format!("created in cycle {cycle}")),
                        updated: now,
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        for _ in 0..rng.random_range(0..25) {
            let id = &live[rng.random_range(0..live.len())];
            let _ = emulator.upsert_issue(
                &cloud,
                IssueChange {
                    issue: Some(id.clone()),
                    summary: Some(format!("changed in cycle {cycle}")),
                    status: Some(["To Do", "In Progress", "Done"][rng.random_range(0..3)].into()),
                    updated: now - Duration::seconds(rng.random_range(0..60)),
                    ..Default::default()
                },
            );
        }
        let doomed: Vec<&String> = (0..rng.random_range(0..6))
            .map(|_| &live[rng.random_range(0..live.len())])
            .collect();
        emulator.delete_issues(&cloud, &doomed);
        let spaces = emulator.spaces(&cloud);
        if cycle % 3 == 1 && !spaces.is_empty() {
            emulator.delete_spaces(
                &cloud,
                &[spaces[rng.random_range(0..spaces.len())].id.clone()],
            );
            emulator
                .upsert_space(
                    &cloud,
                    SpaceChange {
                        key: Some(format!("NEW{cycle}")),
                        name: Some(format!("Space of cycle {cycle}")),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        s.app.clock.advance(Duration::minutes(10));
        let report = s.run(SyncKind::JiraIncremental).await;
        assert_eq!(report.failed, 0, "{report:?} {:?}", s.last_run().await);
        s.run(SyncKind::ConfluenceSpaces).await;
        if cycle % 4 == 3 {
            s.run(SyncKind::JiraReconcile).await;
        }
    }
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.last_run().await.0, "ok", "{:?}", s.last_run().await);

    assert_eq!(
        stored_issues(s.app.pool(), &cloud).await,
        truth(&s.app, &cloud),
        "issues equal the emulator's"
    );
    let deleted: Vec<String> = sqlx::query_scalar(
        "SELECT issue_id FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NOT NULL ORDER BY issue_id",
    )
    .bind(&cloud)
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    let mut emulator_deleted = emulator.deleted_issue_ids(&cloud);
    emulator_deleted.sort();
    assert!(!deleted.is_empty());
    assert!(
        deleted.iter().all(|id| emulator_deleted.contains(id)),
        "only deleted issues are marked deleted"
    );

    let stored_spaces: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT space_id, space_key, name FROM confluence_spaces WHERE cloud_id = $1 AND deleted_at IS NULL ORDER BY space_id",
    )
    .bind(&cloud)
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    let mut spaces: Vec<(String, String, String)> = emulator
        .spaces(&cloud)
        .into_iter()
        .map(|sp| (sp.id, sp.key, sp.name))
        .collect();
    spaces.sort();
    assert_eq!(stored_spaces, spaces);
    let gone: i64 =
        sqlx::query_scalar("SELECT count(*) FROM confluence_spaces WHERE deleted_at IS NOT NULL")
            .fetch_one(s.app.pool())
            .await
            .unwrap();
    assert_eq!(gone, 4, "each deleted space is soft-deleted");
}

#[sqlx::test]
async fn updates_minutes_after_the_watermark_are_not_missed_in_any_time_zone(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let emulator = &s.app.sandbox.emulator;
    let mut sites = Vec::new();
    for (name, zone) in [
        ("east", "Australia/Brisbane"),
        ("west", "America/Los_Angeles"),
    ] {
        let cloud = emulator.add_site(name, &[Product::Jira]);
        let account = s.app.user(name, zone, vec![cloud.clone()]);
        assert_eq!(s.app.consent(name, &account).await.0, 200);
        emulator.create_issues(&cloud, "ENG", 20);
        sites.push(cloud);
    }
    s.app.clock.advance(Duration::minutes(30));
    s.run(SyncKind::JiraIncremental).await;
    for round in 1..=5 {
        // Changes land one to three minutes after the previous run began (the watermark).
        let watermark: DateTime<Utc> =
            sqlx::query_scalar("SELECT max(jira_watermark) FROM synced_sites")
                .fetch_one(s.app.pool())
                .await
                .unwrap();
        for cloud in &sites {
            let target = emulator.issues(cloud)[round].id.clone();
            emulator
                .upsert_issue(
                    cloud,
                    IssueChange {
                        issue: Some(target),
                        summary: Some(format!("round {round}")),
                        updated: watermark + Duration::minutes(round as i64 % 3 + 1),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        s.app.clock.advance(Duration::minutes(4));
        let report = s.run(SyncKind::JiraIncremental).await;
        assert_eq!(report.ok, 2, "{report:?}");
        for cloud in &sites {
            assert_eq!(
                stored_issues(s.app.pool(), cloud).await,
                truth(&s.app, cloud),
                "round {round}"
            );
        }
    }
}

#[sqlx::test]
async fn an_incremental_cycle_costs_one_request_per_page_plus_a_constant(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 1200);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    let ids: Vec<String> = emulator.issues(&cloud).into_iter().map(|i| i.id).collect();
    for k in [0usize, 1, 99, 100, 101, 250, 1000] {
        let now = s.app.clock.now_for_tests();
        for id in &ids[..k] {
            emulator
                .upsert_issue(
                    &cloud,
                    IssueChange {
                        issue: Some(id.clone()),
                        summary: Some(format!("k={k}")),
                        updated: now,
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        s.app.clock.advance(Duration::minutes(10));
        s.run(SyncKind::JiraIncremental).await;
        let (outcome, requests, upserted, _, error) = s.last_run().await;
        assert_eq!(outcome, "ok", "{error:?}");
        let pages = k.div_ceil(100).max(1) as i32;
        // One request per page: the user's time zone was read by the first run and is
        // remembered for a day.
        assert_eq!(requests, pages, "k = {k}");
        assert_eq!(upserted, k as i32, "k = {k}");
    }
}

#[sqlx::test]
async fn a_mid_sync_401_refreshes_once_and_continues(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 350);
    s.app.clock.advance(Duration::minutes(10));
    emulator.inject_fault(Fault::new(FaultKind::TokenExpired, "/ex/jira/"));
    let before = emulator.counters().refreshes;
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{:?}", s.last_run().await);
    assert_eq!(
        emulator.counters().refreshes,
        before + 1,
        "exactly one refresh"
    );
    assert_eq!(stored_issues(s.app.pool(), &cloud).await.len(), 350);
}

/// A Jira site reached by two users' grants, with `issues` issues, synced once.
async fn two_grants_on_one_site(s: &SyncApp, issues: usize) -> (String, String, String) {
    let emulator = &s.app.sandbox.emulator;
    let cloud = emulator.add_site("acme", &[Product::Jira]);
    let first = s.app.user("first", "UTC", vec![cloud.clone()]);
    let second = s.app.user("second", "UTC", vec![cloud.clone()]);
    assert_eq!(s.app.consent("first", &first).await.0, 200);
    assert_eq!(s.app.consent("second", &second).await.0, 200);
    emulator.create_issues(&cloud, "ENG", issues);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    (cloud, first, second)
}

/// The grant the (only) site is synced through, and its label.
async fn elected_grant(s: &SyncApp) -> (uuid::Uuid, String) {
    sqlx::query_as(
        "SELECT g.id, g.label FROM synced_sites ss JOIN grants g ON g.id = ss.elected_grant_id",
    )
    .fetch_one(s.app.pool())
    .await
    .unwrap()
}

#[sqlx::test]
async fn an_elected_grant_that_needs_reauth_hands_the_site_to_another(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, first, second) = two_grants_on_one_site(&s, 30).await;
    let emulator = &s.app.sandbox.emulator;
    let (elected, elected_label) = elected_grant(&s).await;
    let elected_account = if elected_label == "first" {
        &first
    } else {
        &second
    };
    emulator.revoke_app(elected_account);
    // The access token expires, so the next run must refresh, and learns the grant is gone.
    s.app.clock.advance(Duration::hours(2));
    for i in 0..5 {
        emulator
            .upsert_issue(
                &cloud,
                IssueChange {
                    project_key: Some("ENG".into()),
                    summary: Some(format!("filed while the grant was revoked {i}")),
                    updated: s.app.clock.now_for_tests(),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{report:?} {:?}", s.last_run().await);
    let (now_elected, _) = elected_grant(&s).await;
    assert_ne!(now_elected, elected, "another grant took over");
    assert_eq!(
        stored_issues(s.app.pool(), &cloud).await,
        truth(&s.app, &cloud)
    );
    let status: String = sqlx::query_scalar("SELECT status FROM grants WHERE id = $1")
        .bind(elected)
        .fetch_one(s.app.pool())
        .await
        .unwrap();
    assert_eq!(status, "needs_reauth");
}

#[sqlx::test]
async fn no_request_is_made_before_retry_after_elapses(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 250);
    s.app.clock.advance(Duration::minutes(10));
    emulator.inject_fault(
        Fault::new(
            FaultKind::BurstRateLimited {
                retry_after_secs: 2,
            },
            "/ex/jira/",
        )
        .times(2),
    );
    emulator.inject_fault(Fault::new(
        FaultKind::ServiceUnavailable {
            retry_after_secs: Some(1),
        },
        "/ex/jira/",
    ));
    emulator.clear_request_log();
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{:?}", s.last_run().await);
    let log: Vec<_> = emulator
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/ex/jira/"))
        .collect();
    let mut waits = 0;
    for pair in log.windows(2) {
        if let Some(fault) = &pair[0].fault {
            let needed = if fault == "burst_rate_limited" {
                2_000
            } else if fault == "service_unavailable" {
                1_000
            } else {
                0
            };
            let waited = (pair[1].wall_at - pair[0].wall_at).num_milliseconds();
            assert!(
                waited >= needed,
                "{fault}: next request after {waited} ms, Retry-After {needed} ms"
            );
            waits += 1;
        }
    }
    assert_eq!(waits, 3);
    assert_eq!(stored_issues(s.app.pool(), &cloud).await.len(), 250);
}

#[sqlx::test]
async fn a_jira_quota_429_pauses_jira_until_the_reset(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 40);
    emulator.create_spaces(&cloud, 3);
    s.app.clock.advance(Duration::minutes(10));
    emulator.inject_fault(Fault::new(FaultKind::QuotaExhausted, "/ex/jira/"));
    emulator.clear_request_log();
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.deferred, 1, "{report:?}");
    let (outcome, _, _, _, error) = s.last_run().await;
    assert_eq!(outcome, "deferred");
    assert!(error.unwrap().contains("quota"));
    // Jira waits at every tick without asking again.
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.deferred, 1, "{report:?}");
    assert_eq!(
        emulator
            .request_log()
            .iter()
            .filter(|r| r.path.starts_with("/ex/"))
            .count(),
        1,
        "no retry storm"
    );
    // Confluence has a pool of its own and carries on.
    let report = s.run(SyncKind::ConfluenceSpaces).await;
    assert_eq!(report.ok, 1, "{report:?}");
    // After the top of the hour, Jira resumes.
    s.app.clock.advance(Duration::hours(1));
    assert_eq!(s.run(SyncKind::JiraIncremental).await.ok, 1);
}

#[sqlx::test]
async fn sync_stays_within_its_share_of_the_hourly_points_budget(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 900);
    s.app.clock.advance(Duration::minutes(10));
    // A tiny quota: 500 points an hour, 10% held back.
    sqlx::query("INSERT INTO api_budget (hour_start, product, points_used) VALUES (date_trunc('hour', $1::timestamptz), 'jira', 0)")
        .bind(s.app.clock.now_for_tests())
        .execute(s.app.pool())
        .await
        .unwrap();
    let small = atlassync::app::App::new(
        {
            let mut config = (*s.app.sandbox.app.config).clone();
            config.sync.points_per_hour = 500;
            // One run may spend the whole share: this test is about the share alone.
            config.sync.run_share_percent = 100;
            config
        },
        s.app.sandbox.app.pool.clone(),
        s.app.sandbox.app.clock.clone(),
    );
    let syncer = Syncer::new(
        small.clone(),
        atlassync::lifecycle::Refresher::new(small, "budgeted"),
    );
    let report = syncer
        .run_once(
            SyncKind::JiraIncremental,
            s.app.clock.now_for_tests(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.deferred, 1, "{report:?}");
    let (points, remaining): (i32, Option<i32>) = sqlx::query_as(
        "SELECT points_used, points_remaining FROM sync_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(s.app.pool())
    .await
    .unwrap();
    assert!(
        points <= 450,
        "stayed within its share (90% of 500): {points}"
    );
    assert!(points >= 450 - 102, "used most of its share: {points}");
    assert!(remaining.unwrap() >= 50, "the reserve is untouched");
    assert!(emulator.quota_usage(Product::Jira).used <= 450);
}

#[sqlx::test]
async fn the_jql_restriction_is_honoured_by_sync_and_reconciliation(pool: PgPool) {
    let app = TestApp::start_with(
        pool,
        EmulatorConfig::default(),
        crate::support::overrides(&[("jira.jql", "project = ENG")]),
    )
    .await;
    let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
    let s = SyncApp { app, syncer };
    let (cloud, _) = connect_site(&s.app, "UTC").await;
    s.app.sandbox.emulator.create_issues(&cloud, "ENG", 30);
    s.app.sandbox.emulator.create_issues(&cloud, "OPS", 20);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    let projects: Vec<(String, i64)> = sqlx::query_as(
        "SELECT project_key, count(*) FROM jira_issues WHERE deleted_at IS NULL GROUP BY project_key",
    )
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    assert_eq!(projects, vec![("ENG".to_owned(), 30)]);
}

#[sqlx::test]
async fn a_scope_mismatch_is_recorded_on_the_site_and_the_site_moves_on(pool: PgPool) {
    let s = SyncApp::start(pool).await;
    let (_, first, second) = two_grants_on_one_site(&s, 10).await;
    let emulator = &s.app.sandbox.emulator;
    let (elected, label) = elected_grant(&s).await;
    let account = if label == "first" { &first } else { &second };
    // Jira still listed, but the token no longer carries read:jira-work.
    emulator.set_scopes(account, &["read:me", "offline_access", "read:jira-user"]);
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "handed to the other grant: {report:?}");
    let scope_error: Option<String> =
        sqlx::query_scalar("SELECT scope_error FROM sites WHERE grant_id = $1")
            .bind(elected)
            .fetch_one(s.app.pool())
            .await
            .unwrap();
    assert!(scope_error.unwrap().contains("scope does not match"));
    let alerts = s.app.alerts().await;
    assert_eq!(
        alerts
            .iter()
            .filter(|(k, l, r)| k == "scopes_missing" && *l == label && !r)
            .count(),
        1,
        "{alerts:?}"
    );
    // It stays flagged through revalidation while the scopes are unchanged.
    s.app.revalidate(&s.app.refresher("r")).await;
    let alerts = s.app.alerts().await;
    assert_eq!(
        alerts
            .iter()
            .filter(|(k, l, r)| k == "scopes_missing" && *l == label && !r)
            .count(),
        1,
        "{alerts:?}"
    );
    let (now_elected, _) = elected_grant(&s).await;
    assert_ne!(now_elected, elected);
}
