//! Sync that stays right against the API as documented, not as the team first read it:
//! scans end complete only when Atlassian says so, reconciliation adds as well as removes,
//! a mass vanishing is held for an operator, one bad value never stops a site, a site whose
//! query is refused does not block others, and reports get typed columns and field names.

use atlassian_emulator::{
    EmulatorConfig, Fault, FaultKind, GenerateOptions, Product, SearchPaging,
};
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::{SyncReport, Syncer};
use chrono::Duration;
use sqlx::PgPool;

use crate::support::{NowForTests, TestApp, overrides};

struct Scene {
    app: TestApp,
    syncer: Syncer,
    cloud: String,
    account: String,
}

impl Scene {
    async fn start(pool: PgPool, keys: &[(&str, &str)]) -> Self {
        let app = TestApp::start_with(pool, EmulatorConfig::default(), overrides(keys)).await;
        let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
        let cloud = app
            .sandbox
            .emulator
            .add_site("acme", &[Product::Jira, Product::Confluence]);
        let account = app.user("Mia", "UTC", vec![cloud.clone()]);
        assert_eq!(app.consent("mia", &account).await.0, 200);
        Self {
            app,
            syncer,
            cloud,
            account,
        }
    }

    async fn run(&self, kind: SyncKind) -> SyncReport {
        self.app.sync_tick(&self.syncer, kind).await
    }

    async fn live_ids(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT issue_id FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL
             ORDER BY issue_id::bigint",
        )
        .bind(&self.cloud)
        .fetch_all(self.app.pool())
        .await
        .unwrap()
    }

    fn emulator_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .app
            .sandbox
            .emulator
            .issues(&self.cloud)
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort_by_key(|id| id.parse::<i64>().unwrap());
        ids
    }

    /// (outcome, added, refreshed, deleted, held, quarantined) of the latest run of `kind`.
    async fn last_run(&self, kind: SyncKind) -> (String, i32, i32, i32, i32, i32) {
        sqlx::query_as(
            "SELECT outcome, added, refreshed, deleted, held, quarantined FROM sync_runs
             WHERE kind = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(kind.as_str())
        .fetch_one(self.app.pool())
        .await
        .unwrap()
    }

    /// Search pages of at most 10 issues, so that a scan has several.
    fn small_pages(&self) {
        self.app.sandbox.emulator.set_search_paging(SearchPaging {
            page_cap: Some(10),
            empty_page_every: None,
        });
    }

    /// The next scan's second page sends back the token it was given (JRACLOUD-94632): the
    /// scan is cut short.
    fn repeat_the_next_page_token(&self) {
        let search = format!("/ex/jira/{}/rest/api/3/search/jql", self.cloud);
        self.app
            .sandbox
            .emulator
            .inject_fault(Fault::new(FaultKind::RepeatedPageToken, search).times(2));
    }

    async fn open_alerts(&self, kind: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT reason FROM alerts WHERE kind = $1 AND resolved_at IS NULL")
            .bind(kind)
            .fetch_all(self.app.pool())
            .await
            .unwrap()
    }
}

#[sqlx::test]
async fn sparse_and_empty_pages_are_followed_to_atlassians_last_page(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    s.app.sandbox.emulator.create_issues(&s.cloud, "ENG", 60);
    s.app.sandbox.emulator.set_search_paging(SearchPaging {
        page_cap: Some(7),
        empty_page_every: Some(3),
    });
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!((report.ok, report.incomplete), (1, 0), "{report:?}");
    assert_eq!(s.live_ids().await, s.emulator_ids());
    // The census pages the same way and finds nothing missing.
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.last_run(SyncKind::JiraReconcile).await.0, "ok");
    assert_eq!(s.live_ids().await.len(), 60);
}

#[sqlx::test]
async fn a_scan_cut_short_is_incomplete_and_the_next_run_resumes_where_rows_prove(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    s.app.sandbox.emulator.create_issues(&s.cloud, "ENG", 50);
    s.small_pages();
    s.app.clock.advance(Duration::minutes(10));
    s.repeat_the_next_page_token();
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.incomplete, 1, "{report:?}");
    let (outcome, ..) = s.last_run(SyncKind::JiraIncremental).await;
    assert_eq!(outcome, "incomplete");
    let read = s.live_ids().await.len();
    assert!(
        (10..50).contains(&read),
        "part of the scan was kept: {read}"
    );
    // A census cut short deletes nothing (the stretch its first page proved may add rows).
    let kept = s.live_ids().await;
    s.repeat_the_next_page_token();
    // (The schedule waits for a first complete sync; the operator's run does not.)
    s.syncer
        .run_site_now(
            SyncKind::JiraReconcile,
            &atlassync::domain::CloudId::new(s.cloud.clone()),
        )
        .await
        .unwrap();
    assert_eq!(s.last_run(SyncKind::JiraReconcile).await.0, "incomplete");
    let after = s.live_ids().await;
    assert!(
        kept.iter().all(|id| after.contains(id)),
        "{kept:?} {after:?}"
    );

    // Nothing changed at Atlassian since, yet the next run finds the rest: the watermark
    // moved only as far as the committed rows proved.
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{report:?}");
    assert_eq!(s.live_ids().await, s.emulator_ids());
}

#[sqlx::test]
async fn reconciliation_adds_what_the_incremental_sync_cannot_see_and_drops_what_left_the_scope(
    pool: PgPool,
) {
    let s = Scene::start(pool, &[("jira.jql", "project in (ENG, OPS)")]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 20);
    // OPS exists with issues last updated a month ago, but Mia cannot see it yet.
    let old = s.app.clock.now_for_tests() - Duration::days(30);
    let ops = emulator.create_issues_with(
        &s.cloud,
        "OPS",
        10,
        GenerateOptions {
            updated_at: Some(old),
        },
    );
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, false)
        .unwrap();
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.live_ids().await.len(), 20);

    // An admin grants Mia access to OPS: its issues are older than the watermark, so only the
    // census finds them; they are fetched with the sync's fields and inserted.
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, true)
        .unwrap();
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    assert_eq!(
        s.live_ids().await.len(),
        20,
        "the incremental sync cannot see them"
    );
    s.run(SyncKind::JiraReconcile).await;
    let (outcome, added, ..) = s.last_run(SyncKind::JiraReconcile).await;
    assert_eq!((outcome.as_str(), added), ("ok", 10));
    assert_eq!(s.live_ids().await, s.emulator_ids());
    let summary: String =
        sqlx::query_scalar("SELECT summary FROM jira_issues WHERE cloud_id = $1 AND issue_id = $2")
            .bind(&s.cloud)
            .bind(&ops[0])
            .fetch_one(s.app.pool())
            .await
            .unwrap();
    let truth = emulator.issues(&s.cloud);
    assert_eq!(
        summary,
        truth.iter().find(|i| i.id == ops[0]).unwrap().summary,
        "added rows carry their content"
    );

    // An issue moves to a project outside jira.jql: it exists, but is no longer synced.
    let moved = s.live_ids().await[0].clone();
    emulator.move_issue(&s.cloud, &moved, "HR").unwrap();
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraReconcile).await;
    let (_, _, _, deleted, ..) = s.last_run(SyncKind::JiraReconcile).await;
    assert_eq!(deleted, 1);
    assert!(!s.live_ids().await.contains(&moved));
}

#[sqlx::test]
async fn a_mass_vanishing_is_held_for_an_operator_and_applied_when_confirmed(pool: PgPool) {
    let s = Scene::start(pool.clone(), &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 20);
    emulator.create_issues(&s.cloud, "OPS", 20);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.live_ids().await.len(), 40);

    // A permission change hides OPS from Mia: half the site vanishes from her view.
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, false)
        .unwrap();
    s.run(SyncKind::JiraReconcile).await;
    let (outcome, _, _, deleted, held, _) = s.last_run(SyncKind::JiraReconcile).await;
    assert_eq!((outcome.as_str(), deleted, held), ("ok", 0, 20));
    assert_eq!(s.live_ids().await.len(), 40, "nothing is deleted");
    let reasons = s.open_alerts("deletes_held").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("--confirm-deletes"), "{reasons:?}");
    // Held, however often it runs.
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.live_ids().await.len(), 40);

    // A few real deletions on their own are applied at once (under 20 %).
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, true)
        .unwrap();
    let eng: Vec<String> = emulator
        .issues(&s.cloud)
        .into_iter()
        .filter(|i| i.project_key == "ENG")
        .map(|i| i.id)
        .take(3)
        .collect();
    emulator.delete_issues(&s.cloud, &eng);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.last_run(SyncKind::JiraReconcile).await.3, 3);
    assert!(
        s.open_alerts("deletes_held").await.is_empty(),
        "the hold cleared"
    );

    // The operator confirms a large deletion that is real.
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, false)
        .unwrap();
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.last_run(SyncKind::JiraReconcile).await.4, 20);
    // The binary runs on the system clock, which this test's manual clock has run ahead of:
    // put the rows' sync times back into the binary's past.
    sqlx::query("UPDATE jira_issues SET synced_at = synced_at - interval '1 day'")
        .execute(s.app.pool())
        .await
        .unwrap();
    let config = crate::support::write_config(&s.app, &pool);
    // The binary talks to this test's emulator: wait for it without blocking the runtime.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .arg("--config")
        .arg(&config)
        .args(["sync", "--confirm-deletes", &s.cloud])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("applying 20 held deletions"));
    assert_eq!(s.live_ids().await.len(), 17);
    assert!(s.open_alerts("deletes_held").await.is_empty());
}

#[sqlx::test]
async fn a_nul_in_an_issue_is_cleaned_and_the_site_keeps_syncing(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    let ids = emulator.create_issues(&s.cloud, "ENG", 30);
    s.app.clock.advance(Duration::minutes(1));
    emulator
        .update_issue_summary(&s.cloud, &ids[5], "broken\u{0}summary")
        .unwrap();
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{report:?}");
    assert_eq!(s.live_ids().await.len(), 30);
    let (summary, raw): (String, String) = sqlx::query_as(
        "SELECT summary, raw->'fields'->>'summary' FROM jira_issues
         WHERE cloud_id = $1 AND issue_id = $2",
    )
    .bind(&s.cloud)
    .bind(&ids[5])
    .fetch_one(s.app.pool())
    .await
    .unwrap();
    assert_eq!(
        (summary.as_str(), raw.as_str()),
        ("brokensummary", "brokensummary")
    );
    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM jira_issue_quarantine")
        .fetch_one(s.app.pool())
        .await
        .unwrap();
    assert_eq!(quarantined, 0, "cleaning was enough");
}

#[sqlx::test]
async fn a_site_whose_query_is_refused_raises_an_alert_and_blocks_no_other_site(pool: PgPool) {
    let s = Scene::start(pool, &[("jira.jql", "project = ENG")]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 5);
    // A second site has no ENG project: the global restriction is refused there.
    let other = emulator.add_site("globex", &[Product::Jira]);
    let sam = s.app.user("Sam", "UTC", vec![other.clone()]);
    assert_eq!(s.app.consent("sam", &sam).await.0, 200);
    emulator.create_issues(&other, "OPS", 4);
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!((report.ok, report.failed), (1, 1), "{report:?}");
    assert_eq!(s.live_ids().await.len(), 5);
    let reasons = s.open_alerts("query_rejected").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains(&other) && reasons[0].contains("ENG"),
        "{reasons:?}"
    );

    // The operator gives that site its own restriction: it syncs and the alert resolves.
    let mut config = (*s.app.sandbox.app.config).clone();
    config
        .jira
        .site_jql
        .insert(other.clone(), Some("project = OPS".into()));
    let fixed = s.app.sandbox.app.reconfigured(config);
    let syncer = Syncer::new(
        fixed.clone(),
        atlassync::lifecycle::Refresher::new(fixed, "x"),
    );
    s.app.clock.advance(Duration::minutes(1));
    let report = syncer
        .run_once(
            SyncKind::JiraIncremental,
            s.app.clock.now_for_tests(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(s.open_alerts("query_rejected").await.is_empty());
    let other_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jira_issues WHERE cloud_id = $1")
            .bind(&other)
            .fetch_one(s.app.pool())
            .await
            .unwrap();
    assert_eq!(other_rows, 4);
}

/// id, priority, reporter, labels, has a custom field in raw, has a status category.
type ReportRow = (
    String,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    bool,
    bool,
);

#[sqlx::test]
async fn reports_get_every_navigable_field_typed_columns_and_field_names(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    s.app.sandbox.emulator.create_issues(&s.cloud, "ENG", 40);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    let truth = s.app.sandbox.emulator.issues(&s.cloud);
    let rows: Vec<ReportRow> = sqlx::query_as(
        "SELECT issue_id, priority, reporter_account_id, labels,
                    raw->'fields' ? 'customfield_10016', status_category IS NOT NULL
             FROM jira_issues WHERE cloud_id = $1",
    )
    .bind(&s.cloud)
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 40);
    for (id, priority, reporter, labels, has_custom, has_category) in rows {
        let issue = truth.iter().find(|i| i.id == id).unwrap();
        assert_eq!(priority, issue.priority, "{id}");
        assert_eq!(reporter, issue.reporter_account_id, "{id}");
        assert_eq!(labels.unwrap_or_default(), issue.labels, "{id}");
        assert!(has_custom, "raw holds every navigable field: {id}");
        assert!(has_category, "{id}");
    }
    let parents: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jira_issues WHERE cloud_id = $1 AND parent_key IS NOT NULL",
    )
    .bind(&s.cloud)
    .fetch_one(s.app.pool())
    .await
    .unwrap();
    assert!(parents > 0);
    let name: String = sqlx::query_scalar(
        "SELECT name FROM jira_fields WHERE cloud_id = $1 AND field_id = 'customfield_10016'",
    )
    .bind(&s.cloud)
    .fetch_one(s.app.pool())
    .await
    .unwrap();
    assert_eq!(name, "Story point estimate");
}

#[sqlx::test]
async fn a_change_hidden_by_index_lag_beyond_the_overlap_is_found_by_the_daily_rescan(
    pool: PgPool,
) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    // Created well before the late update below, so that update is a real step back.
    let long_ago = s.app.clock.now_for_tests() - Duration::days(2);
    emulator.create_issues_with(
        &s.cloud,
        "ENG",
        10,
        GenerateOptions {
            updated_at: Some(long_ago),
        },
    );
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    // An update the index only showed much later: its `updated` is an hour before the
    // watermark, beyond the 5-minute overlap and the 1-minute index lag.
    let late = s.live_ids().await[3].clone();
    let before = s.app.clock.now_for_tests() - Duration::hours(1);
    emulator
        .upsert_issue(
            &s.cloud,
            atlassian_emulator::IssueChange {
                issue: Some(late.clone()),
                summary: Some("changed while the index lagged".into()),
                updated: before,
                ..Default::default()
            },
        )
        .unwrap();
    let summary = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT summary FROM jira_issues WHERE cloud_id = $1 AND issue_id = $2",
        )
        .bind(&s.cloud)
        .bind(&late)
        .fetch_one(s.app.pool())
        .await
        .unwrap()
    };
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    assert_ne!(
        summary().await,
        "changed while the index lagged",
        "the overlap cannot see it"
    );
    // A day after the first scan, the wider re-scan reaches back a day and finds it.
    s.app.clock.advance(Duration::days(1));
    s.run(SyncKind::JiraIncremental).await;
    assert_eq!(summary().await, "changed while the index lagged");
}

#[sqlx::test]
async fn a_tenant_quota_pauses_that_site_only(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 250);
    let other = emulator.add_site("globex", &[Product::Jira]);
    let sam = s.app.user("Sam", "UTC", vec![other.clone()]);
    assert_eq!(s.app.consent("sam", &sam).await.0, 200);
    emulator.create_issues(&other, "OPS", 250);
    // acme's own (Tier 2) pool holds 150 points an hour; globex has no pool of its own.
    emulator.set_tenant_quota(&s.cloud, Product::Jira, Some(150));
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!((report.ok, report.deferred), (1, 1), "{report:?}");
    let pool = s.app.pool().clone();
    let rows = |cloud: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jira_issues WHERE cloud_id = $1")
                .bind(cloud)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        rows(other.clone()).await,
        250,
        "the other site is not held up"
    );
    assert!(rows(s.cloud.clone()).await < 250);
    let paused: Vec<(String, bool)> = sqlx::query_as(
        "SELECT cloud_id, quota_paused_until IS NOT NULL FROM synced_sites
         WHERE product = 'jira' ORDER BY cloud_id = $1 DESC",
    )
    .bind(&s.cloud)
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    assert_eq!(paused, [(s.cloud.clone(), true), (other.clone(), false)]);
    // The app's pool was never paused.
    let app_paused: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT max(paused_until) FROM api_budget")
            .fetch_one(s.app.pool())
            .await
            .unwrap();
    assert_eq!(app_paused, None);

    // Each hour its pool resets and it goes on where it stopped, until it is complete.
    let mut hours = 0;
    while rows(s.cloud.clone()).await < 250 {
        hours += 1;
        assert!(hours <= 4, "acme never finished");
        s.app.clock.advance(Duration::hours(1));
        s.run(SyncKind::JiraIncremental).await;
    }
    let (outcome, ..) = s.last_run(SyncKind::JiraIncremental).await;
    assert_eq!(outcome, "ok");
}

#[sqlx::test]
async fn the_budget_believes_atlassians_count_of_the_shared_pool(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    // Atlassian's pool resets at the top of each UTC hour: start just after one, so the
    // spending and the sync below fall in the same hour.
    let now = s.app.clock.now_for_tests();
    let next_hour = atlassync::pacing::hour_start(now) + Duration::hours(1);
    s.app.clock.advance(next_hour - now + Duration::minutes(1));
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 20);
    emulator.set_quota(Product::Jira, Some(10_000));
    emulator.set_burst_limit(None);
    // Another installation of the same app spends most of the shared pool, which
    // atlassync's own count cannot see.
    let token = s
        .app
        .refresher("other-installation")
        .access_token(s.app.grants().await[0].id)
        .await
        .unwrap();
    let myself = format!(
        "{}ex/jira/{}/rest/api/3/myself",
        emulator.base_url(),
        s.cloud
    );
    let client = reqwest::Client::new();
    for _ in 0..2800 {
        let answer = client
            .get(&myself)
            .bearer_auth(token.expose())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    }
    let spent_elsewhere = emulator.quota_usage(Product::Jira).used as i64;
    assert!(spent_elsewhere > 8_000, "{spent_elsewhere}");
    s.app.clock.advance(Duration::minutes(10));
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{report:?}");
    let used: i64 = sqlx::query_scalar("SELECT max(points_used) FROM api_budget")
        .fetch_one(s.app.pool())
        .await
        .unwrap();
    assert!(
        used >= spent_elsewhere,
        "the hour's spend follows RateLimit ({spent_elsewhere} spent at Atlassian): {used}"
    );
}

#[sqlx::test]
async fn a_503_is_retried_no_sooner_than_its_retry_after(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 30);
    s.app.clock.advance(Duration::minutes(10));
    let search = format!("/ex/jira/{}/rest/api/3/search/jql", s.cloud);
    emulator.inject_fault(Fault::new(
        FaultKind::ServiceUnavailable {
            retry_after_secs: Some(5),
        },
        search,
    ));
    emulator.clear_request_log();
    let report = s.run(SyncKind::JiraIncremental).await;
    assert_eq!(report.ok, 1, "{report:?}");
    let log: Vec<_> = emulator
        .request_log()
        .into_iter()
        .filter(|r| r.path.contains("/search/jql"))
        .collect();
    let unavailable = log
        .iter()
        .position(|r| r.fault.as_deref() == Some("service_unavailable"))
        .expect("the 503 was served");
    let waited = (log[unavailable + 1].wall_at - log[unavailable].wall_at).num_milliseconds();
    assert!(
        waited >= 5_000,
        "retried after {waited} ms; Retry-After said 5 s"
    );
}

#[sqlx::test]
async fn a_run_longer_than_its_tick_is_not_claimed_again_while_it_goes_on(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 300);
    s.app.clock.advance(Duration::minutes(10));
    // Every page is slow: replica A's run outlasts the next schedule tick.
    emulator.inject_fault(
        Fault::new(
            FaultKind::Latency { millis: 400 },
            format!("/ex/jira/{}/rest/api/3/search/jql", s.cloud),
        )
        .times(10),
    );
    let replica = |name: &str| {
        Syncer::new(
            s.app.sandbox.app.clone(),
            atlassync::lifecycle::Refresher::new(s.app.sandbox.app.clone(), name),
        )
    };
    let (a, b) = (replica("replica-a"), replica("replica-b"));
    let stop = tokio_util::sync::CancellationToken::new();
    let first_tick = s.app.clock.now_for_tests();
    let running = a.run_once(SyncKind::JiraIncremental, first_tick, &stop);
    let second = async {
        // The next tick comes while A is still reading pages.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        s.app.clock.advance(Duration::minutes(5));
        b.run_once(
            SyncKind::JiraIncremental,
            s.app.clock.now_for_tests(),
            &stop,
        )
        .await
        .unwrap()
    };
    let (first, second) = tokio::join!(running, second);
    assert_eq!(first.unwrap().ok, 1);
    assert_eq!(second.sites, 0, "B left the site to A: {second:?}");
    // Once A is done, the site is free for the next tick.
    s.app.clock.advance(Duration::minutes(5));
    let third = b
        .run_once(
            SyncKind::JiraIncremental,
            s.app.clock.now_for_tests(),
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(third.ok, 1, "{third:?}");
    assert_eq!(s.live_ids().await.len(), 300);
}

impl Scene {
    /// A syncer over the same services with `points_per_hour` as the app's quota.
    fn syncer_with_quota(&self, points_per_hour: u32, name: &str) -> Syncer {
        let mut config = (*self.app.sandbox.app.config).clone();
        config.sync.points_per_hour = points_per_hour;
        let small = self.app.sandbox.app.reconfigured(config);
        Syncer::new(
            small.clone(),
            atlassync::lifecycle::Refresher::new(small, name),
        )
    }

    /// (outcome, points used, deleted, held) of the latest reconcile run.
    async fn last_reconcile(&self) -> (String, i32, i32, i32) {
        sqlx::query_as(
            "SELECT outcome, points_used, deleted, held FROM sync_runs
             WHERE kind = 'jira_reconcile' ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(self.app.pool())
        .await
        .unwrap()
    }

    /// Runs `syncer`'s reconciliation once an hour until a run ends `ok` (at most 6 hours);
    /// returns each run's (outcome, points used, deleted, held).
    async fn reconcile_hourly_until_done(&self, syncer: &Syncer) -> Vec<(String, i32, i32, i32)> {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut runs = Vec::new();
        for _ in 0..6 {
            self.app.clock.advance(Duration::hours(1));
            syncer
                .run_once(
                    SyncKind::JiraReconcile,
                    self.app.clock.now_for_tests(),
                    &stop,
                )
                .await
                .unwrap();
            let run = self.last_reconcile().await;
            let done = run.0 == "ok";
            runs.push(run);
            if done {
                break;
            }
        }
        runs
    }

    async fn census_progress(&self) -> Option<i64> {
        sqlx::query_scalar("SELECT max(next_id) FROM jira_census_ranges WHERE cloud_id = $1")
            .bind(&self.cloud)
            .fetch_one(self.app.pool())
            .await
            .unwrap()
    }
}

#[sqlx::test]
async fn a_census_larger_than_an_hours_share_resumes_across_hours_and_holds_as_one(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 900);
    emulator.create_issues(&s.cloud, "OPS", 300);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    assert_eq!(s.live_ids().await.len(), 1200);
    let stop = tokio_util::sync::CancellationToken::new();

    // Four deletions spread over the id range; then a census of every id (`sync --full`)
    // with a quota whose hourly share (1,170 points) cannot pay for 1,200 ids.
    let ids = s.emulator_ids();
    let doomed = [&ids[0], &ids[400], &ids[800], &ids[1199]];
    emulator.delete_issues(&s.cloud, &doomed);
    let small = s.syncer_with_quota(1300, "small-1");
    s.app.clock.advance(Duration::hours(1));
    assert!(
        small
            .plan_full_census(&atlassync::domain::CloudId::new(s.cloud.clone()))
            .await
            .unwrap()
    );
    let report = small
        .run_once(SyncKind::JiraReconcile, s.app.clock.now_for_tests(), &stop)
        .await
        .unwrap();
    assert_eq!(report.deferred, 1, "{report:?}");
    let (_, first_spent, deleted, _) = s.last_reconcile().await;
    assert!(
        first_spent <= 1170,
        "within the hour's share: {first_spent}"
    );
    assert_eq!(deleted, 0, "nothing is deleted before the pass ends");
    let proven = s.census_progress().await.expect("progress is stored");
    assert!(proven > ids[0].parse().unwrap(), "{proven}");

    // From the next hour on, another process (a restart) picks up where the census stopped,
    // one slice of the hour's share per tick, until the pass ends.
    let restarted = s.syncer_with_quota(1300, "small-2");
    let runs = s.reconcile_hourly_until_done(&restarted).await;
    assert!(
        runs.iter().all(|(_, spent, ..)| *spent <= 1170),
        "each within its hour's share: {runs:?}"
    );
    let (last, earlier) = runs.split_last().unwrap();
    assert!(
        earlier.iter().all(|(_, _, deleted, _)| *deleted == 0),
        "{runs:?}"
    );
    assert_eq!((last.0.as_str(), last.2), ("ok", 4), "{runs:?}");
    assert_eq!(s.live_ids().await, s.emulator_ids());
    // 1,200 ids, a page per 292, the field listing and four confirmations: no stretch was
    // read twice.
    let read: i32 = first_spent + runs.iter().map(|(_, spent, ..)| spent).sum::<i32>();
    assert!(read < 1300, "{first_spent} then {runs:?}");

    // A permission change hides OPS (a quarter of the site) while a census spans hours:
    // the vanished rows of every stretch are held together, none deleted along the way.
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, false)
        .unwrap();
    assert!(
        small
            .plan_full_census(&atlassync::domain::CloudId::new(s.cloud.clone()))
            .await
            .unwrap()
    );
    let runs = s.reconcile_hourly_until_done(&small).await;
    assert!(runs.len() > 1, "{runs:?}");
    assert!(
        runs.iter().all(|(_, _, deleted, _)| *deleted == 0),
        "{runs:?}"
    );
    let (outcome, _, _, held) = runs.last().unwrap();
    assert_eq!(
        (outcome.as_str(), *held),
        ("ok", 299),
        "OPS lost one issue above"
    );
    assert_eq!(s.live_ids().await.len(), 1196);
    assert_eq!(s.open_alerts("deletes_held").await.len(), 1);
}

#[sqlx::test]
async fn the_drift_check_finds_a_few_changes_among_thousands_for_a_few_hundred_points(
    pool: PgPool,
) {
    let s = Scene::start(pool, &[]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&s.cloud, "ENG", 3000);
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    s.run(SyncKind::JiraReconcile).await;
    assert_eq!(s.last_reconcile().await.0, "ok");

    // Nothing changed out of sight: the hourly pass is one count.
    s.app.clock.advance(Duration::hours(1));
    s.run(SyncKind::JiraReconcile).await;
    let (outcome, spent, ..) = s.last_reconcile().await;
    assert_eq!((outcome.as_str(), spent), ("ok", 1));

    // One issue deleted in the middle of the range.
    let ids = s.emulator_ids();
    emulator.delete_issues(&s.cloud, &[&ids[1717]]);
    s.app.clock.advance(Duration::hours(1));
    s.run(SyncKind::JiraReconcile).await;
    let (outcome, spent, deleted, _) = s.last_reconcile().await;
    assert_eq!((outcome.as_str(), deleted), ("ok", 1));
    assert!(
        spent < 400,
        "a census of every id costs over 3,000 points: {spent}"
    );

    // Old issues become visible (a project opened to the syncing user): added the same way.
    let old = s.app.clock.now_for_tests() - Duration::days(60);
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, false)
        .unwrap();
    emulator.create_issues_with(
        &s.cloud,
        "OPS",
        5,
        GenerateOptions {
            updated_at: Some(old),
        },
    );
    s.app.clock.advance(Duration::minutes(10));
    s.run(SyncKind::JiraIncremental).await;
    emulator
        .set_project_visibility(&s.cloud, "OPS", &s.account, true)
        .unwrap();
    s.app.clock.advance(Duration::hours(1));
    s.run(SyncKind::JiraReconcile).await;
    let (outcome, spent, ..) = s.last_reconcile().await;
    assert_eq!(outcome, "ok");
    assert!(spent < 400, "{spent}");
    assert_eq!(s.live_ids().await, s.emulator_ids());
}

#[sqlx::test]
async fn the_reconciliation_waits_for_a_sites_first_complete_sync(pool: PgPool) {
    let s = Scene::start(pool, &[]).await;
    s.app.sandbox.emulator.create_issues(&s.cloud, "ENG", 40);
    s.small_pages();
    s.app.clock.advance(Duration::minutes(10));
    s.repeat_the_next_page_token();
    assert_eq!(s.run(SyncKind::JiraIncremental).await.incomplete, 1);

    // Mid first sync: a census would fetch again what the sync is about to read.
    let report = s.run(SyncKind::JiraReconcile).await;
    assert_eq!(report.sites, 0, "{report:?}");

    assert_eq!(s.run(SyncKind::JiraIncremental).await.ok, 1);
    let report = s.run(SyncKind::JiraReconcile).await;
    assert_eq!(report.ok, 1, "{report:?}");
    let (_, added, ..) = s.last_run(SyncKind::JiraReconcile).await;
    assert_eq!(added, 0);
}
