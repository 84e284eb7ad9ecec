//! The points budget as a policy an operator can read: Atlassian keeps one hourly pool per app
//! *and product*, so Jira and Confluence spend separate budgets, a global quota 429 pauses
//! only the product that got it, and Atlassian's `RateLimit` count calibrates the product it
//! came with. Within a product, one run spends at most its slice of what is left of the hour
//! (`sync.run_share_percent`), so one site's backlog cannot starve the others' runs.

use atlassian_emulator::{EmulatorConfig, Fault, FaultKind, GenerateOptions, Product};
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::{SyncReport, Syncer};
use atlassync::sandbox::Overrides;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use crate::support::{NowForTests, TestApp};

/// The phrase of a run deferred because sync's share of the hour is spent.
const SHARE_SPENT: &str = "share of this hour";
/// The bearer token `/metrics` asks for.
const ADMIN_TOKEN: &str = "admin-test-token";

struct Scene {
    app: TestApp,
    syncer: Syncer,
}

/// A run as `sync_runs` recorded it.
#[derive(Debug)]
struct Run {
    outcome: String,
    error: Option<String>,
    upserted: i32,
    points_used: i32,
}

impl Scene {
    /// A sandbox whose app may spend `points_per_hour` points of each product's pool (the
    /// default when `None`), on a clock one minute past the top of an hour: every test's
    /// passes fall in one UTC hour unless it moves on to the next.
    async fn start(pool: PgPool, points_per_hour: Option<u32>) -> Self {
        let mut overrides = Overrides::new();
        overrides.insert("http.admin_token".to_owned(), format!("{ADMIN_TOKEN:?}"));
        if let Some(points) = points_per_hour {
            overrides.insert("sync.points_per_hour".to_owned(), points.to_string());
        }
        let app = TestApp::start_with(pool, EmulatorConfig::default(), overrides).await;
        let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
        let scene = Self { app, syncer };
        scene.next_hour();
        scene
    }

    /// One minute past the next top of the hour: Atlassian's pools (and the budget) reset.
    fn next_hour(&self) {
        let now = self.app.clock.now_for_tests();
        let top = atlassync::pacing::hour_start(now) + Duration::hours(1);
        self.app.clock.advance(top - now + Duration::minutes(1));
    }

    /// A site with `products`, reached by a user of its own who consents.
    async fn site(&self, name: &str, products: &[Product]) -> String {
        let cloud = self.app.sandbox.emulator.add_site(name, products);
        let user = self.app.user(name, "UTC", vec![cloud.clone()]);
        assert_eq!(self.app.consent(name, &user).await.0, 200);
        cloud
    }

    /// One schedule tick of `kind`, a second after the last.
    async fn pass(&self, kind: SyncKind) -> SyncReport {
        self.app.sync_tick(&self.syncer, kind).await
    }

    /// The latest run of `kind` on `cloud`.
    async fn last_run(&self, cloud: &str, kind: SyncKind) -> Run {
        let (outcome, error, upserted, points_used) = sqlx::query_as(
            "SELECT outcome, error, upserted, points_used FROM sync_runs
             WHERE cloud_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(cloud)
        .bind(kind.as_str())
        .fetch_one(self.app.pool())
        .await
        .unwrap();
        Run {
            outcome,
            error,
            upserted,
            points_used,
        }
    }

    /// Live Jira rows of `cloud`.
    async fn issue_rows(&self, cloud: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL",
        )
        .bind(cloud)
        .fetch_one(self.app.pool())
        .await
        .unwrap()
    }

    /// Points spent this hour on `product`, as the budget holds them.
    async fn spent(&self, product: &str) -> i64 {
        let hour = atlassync::pacing::hour_start(self.app.clock.now_for_tests());
        sqlx::query_scalar(
            "SELECT COALESCE(max(points_used), 0) FROM api_budget
             WHERE hour_start = $1 AND product = $2",
        )
        .bind(hour)
        .bind(product)
        .fetch_one(self.app.pool())
        .await
        .unwrap()
    }

    /// The value of `metric` with `labels` (as written, e.g. `{product="jira"}`) on `/metrics`.
    async fn metric(&self, metric: &str, labels: &str) -> Option<f64> {
        let url = self.app.sandbox.http_base.join("metrics").unwrap();
        let text = reqwest::Client::new()
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{metric}{labels} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    }

    /// Runs `kind` tick after tick until sync's share of the hour for its product is spent.
    async fn spend_the_share(&self, cloud: &str, kind: SyncKind) {
        for _ in 0..12 {
            self.pass(kind).await;
            let run = self.last_run(cloud, kind).await;
            if run
                .error
                .as_deref()
                .is_some_and(|e| e.contains(SHARE_SPENT))
            {
                return;
            }
            assert_ne!(run.outcome, "ok", "the work was meant to outgrow the share");
        }
        panic!("{kind:?} never spent the hour's share");
    }
}

#[sqlx::test]
async fn jira_keeps_syncing_when_confluence_has_spent_its_pool(pool: PgPool) {
    // Sync's share: 900 points an hour of each product's pool.
    let s = Scene::start(pool, Some(1000)).await;
    let acme = s.site("acme", &[Product::Jira, Product::Confluence]).await;
    let emulator = &s.app.sandbox.emulator;
    // A listing of 1,200 spaces costs more than the share: it spends it all, tick by tick.
    emulator.create_spaces(&acme, 1200);
    emulator.create_issues(&acme, "ENG", 250);
    s.spend_the_share(&acme, SyncKind::ConfluenceSpaces).await;

    // Jira's pool is another one: three pages (and /myself) fit in it whole.
    let report = s.pass(SyncKind::JiraIncremental).await;
    assert_eq!(
        (report.ok, report.deferred),
        (1, 0),
        "Confluence's spending does not defer Jira: {report:?}"
    );
    assert_eq!(s.issue_rows(&acme).await, 250);
    let (jira, confluence) = (s.spent("jira").await, s.spent("confluence").await);
    assert!(confluence > 900 - 251 && confluence <= 900, "{confluence}");
    assert!(
        jira > 250 && jira < 400,
        "Jira paid for its own pages: {jira}"
    );
}

#[sqlx::test]
async fn confluence_keeps_syncing_when_jira_has_spent_its_pool(pool: PgPool) {
    let s = Scene::start(pool, Some(1000)).await;
    let acme = s.site("acme", &[Product::Jira, Product::Confluence]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.create_issues(&acme, "ENG", 1500);
    emulator.create_spaces(&acme, 3);
    s.spend_the_share(&acme, SyncKind::JiraIncremental).await;

    // One page of spaces may cost 251 points, far more than Jira left of a shared pool.
    let report = s.pass(SyncKind::ConfluenceSpaces).await;
    assert_eq!(
        (report.ok, report.deferred),
        (1, 0),
        "Jira's spending does not defer Confluence: {report:?}"
    );
    assert!(s.spent("jira").await > 900 - 101);
    assert!(s.spent("confluence").await < 10);
}

#[sqlx::test]
async fn a_confluence_quota_429_pauses_confluence_sites_only(pool: PgPool) {
    let s = Scene::start(pool, None).await;
    let acme = s.site("acme", &[Product::Jira, Product::Confluence]).await;
    let globex = s
        .site("globex", &[Product::Jira, Product::Confluence])
        .await;
    let emulator = &s.app.sandbox.emulator;
    for cloud in [&acme, &globex] {
        emulator.create_issues(cloud, "ENG", 20);
        emulator.create_spaces(cloud, 3);
    }
    // Atlassian answers the next Confluence request: the app's Confluence pool is spent.
    emulator.inject_fault(Fault::new(FaultKind::QuotaExhausted, "/ex/confluence/"));
    emulator.clear_request_log();
    let first = s.pass(SyncKind::ConfluenceSpaces).await;
    assert!(first.deferred >= 1, "{first:?}");
    let confluence_requests = || {
        emulator
            .request_log()
            .iter()
            .filter(|r| r.path.starts_with("/ex/confluence/"))
            .count()
    };
    let asked = confluence_requests();
    // Every Confluence site now waits for the reset, without asking again.
    let second = s.pass(SyncKind::ConfluenceSpaces).await;
    assert_eq!((second.ok, second.deferred), (0, 2), "{second:?}");
    assert_eq!(
        confluence_requests(),
        asked,
        "no Confluence request while paused"
    );

    // Jira's pool was not touched: both Jira sites sync.
    let jira = s.pass(SyncKind::JiraIncremental).await;
    assert_eq!(
        (jira.ok, jira.deferred),
        (2, 0),
        "a Confluence quota 429 does not pause Jira: {jira:?}"
    );
    for cloud in [&acme, &globex] {
        assert_eq!(s.issue_rows(cloud).await, 20);
    }
    let error = s
        .last_run(&acme, SyncKind::ConfluenceSpaces)
        .await
        .error
        .unwrap_or_default();
    assert!(error.contains("confluence points quota"), "{error}");
    let paused: Vec<String> =
        sqlx::query_scalar("SELECT product FROM api_budget WHERE paused_until IS NOT NULL")
            .fetch_all(s.app.pool())
            .await
            .unwrap();
    assert_eq!(paused, ["confluence"]);

    // At the top of the hour Confluence resumes.
    s.next_hour();
    let resumed = s.pass(SyncKind::ConfluenceSpaces).await;
    assert_eq!(resumed.ok, 2, "{resumed:?}");
}

#[sqlx::test]
async fn a_jira_ratelimit_header_raises_jiras_spend_and_not_confluences(pool: PgPool) {
    // Atlassian's Jira pool and atlassync's idea of it agree: 1,000 points an hour.
    let s = Scene::start(pool, Some(1000)).await;
    let acme = s.site("acme", &[Product::Jira, Product::Confluence]).await;
    let emulator = &s.app.sandbox.emulator;
    emulator.set_quota(Product::Jira, Some(1000));
    emulator.set_burst_limit(None);
    emulator.create_issues(&acme, "ENG", 20);
    emulator.create_spaces(&acme, 3);
    // Another installation of the app spends most of the Jira pool, which atlassync's own
    // count cannot see.
    let token = s
        .app
        .refresher("other-installation")
        .access_token(s.app.grants().await[0].id)
        .await
        .unwrap();
    let myself = format!("{}ex/jira/{}/rest/api/3/myself", emulator.base_url(), acme);
    let client = reqwest::Client::new();
    while emulator.quota_usage(Product::Jira).used < 850 {
        let answer = client
            .get(&myself)
            .bearer_auth(token.expose())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    }
    let spent_elsewhere = emulator.quota_usage(Product::Jira).used as i64;

    // The first Jira answer says how little is left: Jira's spend follows, and the next
    // page no longer fits Jira's share.
    s.pass(SyncKind::JiraIncremental).await;
    let jira = s.last_run(&acme, SyncKind::JiraIncremental).await;
    assert_eq!(jira.outcome, "deferred", "{jira:?}");
    // Confluence's pool is another one.
    let report = s.pass(SyncKind::ConfluenceSpaces).await;
    assert_eq!(
        (report.ok, report.deferred),
        (1, 0),
        "Jira's RateLimit count does not spend Confluence's pool: {report:?}"
    );
    let (jira, confluence) = (s.spent("jira").await, s.spent("confluence").await);
    assert!(jira >= spent_elsewhere, "{jira} < {spent_elsewhere}");
    assert!(confluence < 10, "{confluence}");
    // `/metrics` shows each pool.
    let used = "atlassync_api_points_used";
    assert_eq!(
        s.metric(used, r#"{product="jira"}"#).await,
        Some(jira as f64)
    );
    assert_eq!(
        s.metric(used, r#"{product="confluence"}"#).await,
        Some(confluence as f64)
    );
    assert_eq!(
        s.metric(
            "atlassync_api_points_remaining",
            r#"{product="confluence"}"#
        )
        .await,
        Some((1000 - confluence) as f64)
    );
}

#[sqlx::test]
async fn a_large_first_sync_is_sliced_so_a_small_site_still_syncs_in_the_same_hour(pool: PgPool) {
    // Sync's share: 1,800 points an hour; one run may spend half of what is left.
    let s = Scene::start(pool, Some(2000)).await;
    let big = s.site("acme", &[Product::Jira]).await;
    let small = s.site("globex", &[Product::Jira]).await;
    let emulator = &s.app.sandbox.emulator;
    // 2,000 issues of history, a hundred every three days: a first sync costs more than the
    // hour's share, and each sliced run moves the watermark past what it committed.
    let start = s.app.clock.now_for_tests() - Duration::days(70);
    for chunk in 0..20 {
        emulator.create_issues_with(
            &big,
            "ENG",
            100,
            GenerateOptions {
                updated_at: Some(start + Duration::days(3 * chunk)),
            },
        );
    }
    emulator.create_issues(&small, "OPS", 5);

    s.pass(SyncKind::JiraIncremental).await;
    let first = s.last_run(&big, SyncKind::JiraIncremental).await;
    assert_eq!(first.outcome, "deferred", "{first:?}");
    let kept = s.issue_rows(&big).await;
    assert!(kept > 0, "what the first run read is committed");
    // The watermark moved only as far as the committed rows prove.
    let (watermark, newest): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT (SELECT jira_watermark FROM synced_sites WHERE cloud_id = $1 AND product = 'jira'),
                (SELECT max(updated_at) FROM jira_issues WHERE cloud_id = $1)",
    )
    .bind(&big)
    .fetch_one(s.app.pool())
    .await
    .unwrap();
    assert_eq!(watermark, newest);

    // Five minutes later the small site has a change, and its run still fits the hour.
    s.app.clock.advance(Duration::minutes(5));
    let now = s.app.clock.now_for_tests();
    emulator.create_issues_with(
        &small,
        "OPS",
        1,
        GenerateOptions {
            updated_at: Some(now),
        },
    );
    s.pass(SyncKind::JiraIncremental).await;
    let run = s.last_run(&small, SyncKind::JiraIncremental).await;
    assert_eq!(
        run.outcome, "ok",
        "the large first sync left room for the small site's run: {run:?}"
    );
    assert_eq!(s.issue_rows(&small).await, 6);
    assert!(
        s.issue_rows(&big).await > kept,
        "the large site went on too"
    );

    // The first run stopped at its slice, not at the hour's share.
    let error = first.error.as_deref().unwrap_or_default();
    assert!(error.contains("slice"), "{error}");
    assert!(
        (900..=900 + 101).contains(&first.points_used),
        "half of the 1,800-point share, and the page that crossed it: {first:?}"
    );
    assert_eq!(i64::from(first.upserted), kept);

    // The large site goes on where its committed rows end, tick after tick (and into the
    // next hour once the share is spent), until it is complete.
    let mut rows = s.issue_rows(&big).await;
    assert!(rows >= kept, "committed rows stay");
    for _ in 0..20 {
        let run = s.last_run(&big, SyncKind::JiraIncremental).await;
        if run.outcome == "ok" {
            break;
        }
        assert_eq!(run.outcome, "deferred", "{run:?}");
        if run
            .error
            .as_deref()
            .is_some_and(|e| e.contains(SHARE_SPENT))
        {
            s.next_hour();
        } else {
            s.app.clock.advance(Duration::minutes(5));
        }
        s.pass(SyncKind::JiraIncremental).await;
        let now = s.issue_rows(&big).await;
        assert!(now >= rows, "committed rows stay: {now} < {rows}");
        rows = now;
    }
    let last = s.last_run(&big, SyncKind::JiraIncremental).await;
    assert_eq!(last.outcome, "ok", "{last:?}");
    assert_eq!(s.issue_rows(&big).await, 2000);
}
