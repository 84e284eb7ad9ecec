//! Downstream reporting: a second, real Postgres cluster subscribes to the publication
//! `atlassync_reporting` by logical replication and receives what sync writes (inserts,
//! updates, soft deletes), and nothing of atlassync's own state. A role that may not create
//! publications still migrates, and is told what an administrator should run.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::private_postgres::PrivatePostgres;
use crate::support::{NowForTests, TestApp};
use atlassian_emulator::{EmulatorConfig, IssueChange};
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::Syncer;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

/// What reporting reads.
const REPORTING: [&str; 4] = [
    "confluence_spaces",
    "jira_issues",
    "sync_runs",
    "synced_sites",
];
/// atlassync's own state: secrets, the grants' access map, alerts about people.
const NEVER_PUBLISHED: [&str; 8] = [
    "grants",
    "sites",
    "oauth_states",
    "presented_refresh_tokens",
    "spent_invites",
    "alerts",
    "alert_messages",
    "alert_deliveries",
];
/// How long a change may take to reach the subscriber.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_subscriber_cluster_receives_synced_inserts_updates_and_soft_deletes() {
    let publisher = PrivatePostgres::start_with(&[("wal_level", "logical")]);
    let subscriber = PrivatePostgres::start();
    let pool = publisher.pool().await;
    atlassync::store::migrate(&pool).await.expect("migrations");

    let tables = published_tables(&pool).await;
    let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    for table in REPORTING {
        assert!(names.contains(&table), "{table} is published: {names:?}");
    }
    for table in NEVER_PUBLISHED {
        assert!(
            !names.contains(&table),
            "{table} is never published: {names:?}"
        );
    }
    let without_identity: Vec<String> = sqlx::query_scalar(
        "SELECT p.tablename::text FROM pg_publication_tables p
         JOIN pg_class c ON c.oid = format('%I.%I', p.schemaname, p.tablename)::regclass
         WHERE p.pubname = 'atlassync_reporting'
           AND NOT (c.relreplident = 'f'
                OR (c.relreplident = 'd' AND EXISTS
                    (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND EXISTS
                    (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        without_identity.is_empty(),
        "updates and deletes of {without_identity:?} could not replicate"
    );

    // The reporting database has only the published tables, as the publisher defines them,
    // and no atlassync: no migrations, no daemon.
    copy_published_schema(&publisher, &subscriber, &tables);
    let downstream = subscriber.pool().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SUBSCRIPTION reporting
         CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=postgres'
         PUBLICATION atlassync_reporting",
        publisher.port()
    )))
    .execute(&downstream)
    .await
    .expect("the subscription is created");
    // The initial copy (of empty tables) is done: from here on, changes are streamed.
    wait_until("every table is synchronised", || async {
        let ready: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate = 'r'")
                .fetch_one(&downstream)
                .await
                .unwrap();
        ready == tables.len() as i64
    })
    .await;

    // Inserts: a first sync of a site with issues and spaces.
    let app =
        TestApp::start_with(pool.clone(), EmulatorConfig::default(), Default::default()).await;
    let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
    let (cloud, account) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("mia", &account).await.0, 200);
    let emulator = &app.sandbox.emulator;
    emulator.create_issues(&cloud, "ENG", 30);
    emulator.create_spaces(&cloud, 3);
    app.clock.advance(chrono::Duration::minutes(10));
    sync(&app, &syncer, SyncKind::JiraIncremental).await;
    sync(&app, &syncer, SyncKind::ConfluenceSpaces).await;
    replicated(&pool, &downstream, &tables, "the first sync").await;
    let counts: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jira_issues WHERE deleted_at IS NULL),
                (SELECT count(*) FROM confluence_spaces WHERE deleted_at IS NULL),
                (SELECT count(*) FROM synced_sites),
                (SELECT count(*) FROM sync_runs WHERE outcome = 'ok')",
    )
    .fetch_one(&downstream)
    .await
    .unwrap();
    assert_eq!(
        counts,
        (30, 3, 2, 2),
        "issues, spaces, sites, runs downstream"
    );

    // An update: Atlassian changes an issue, the next incremental sync takes it.
    let issues = emulator.issues(&cloud);
    let (changed, doomed) = (issues[0].id.clone(), issues[1].id.clone());
    emulator
        .upsert_issue(
            &cloud,
            IssueChange {
                issue: Some(changed.clone()),
                summary: Some("changed at Atlassian".into()),
                status: Some("Done".into()),
                updated: app.clock.now_for_tests(),
                ..Default::default()
            },
        )
        .unwrap();
    app.clock.advance(chrono::Duration::minutes(10));
    sync(&app, &syncer, SyncKind::JiraIncremental).await;
    replicated(&pool, &downstream, &tables, "the update").await;
    let (summary, status): (String, String) =
        sqlx::query_as("SELECT summary, status FROM jira_issues WHERE issue_id = $1")
            .bind(&changed)
            .fetch_one(&downstream)
            .await
            .unwrap();
    assert_eq!(
        (summary.as_str(), status.as_str()),
        ("changed at Atlassian", "Done")
    );

    // A soft delete: Atlassian deletes an issue, reconciliation marks it.
    assert_eq!(emulator.delete_issues(&cloud, &[&doomed]), 1);
    app.clock.advance(chrono::Duration::minutes(10));
    sync(&app, &syncer, SyncKind::JiraReconcile).await;
    replicated(&pool, &downstream, &tables, "the soft delete").await;
    let (deleted, live): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT deleted_at IS NOT NULL FROM jira_issues WHERE issue_id = $1),
                (SELECT count(*) FROM jira_issues WHERE deleted_at IS NULL)",
    )
    .bind(&doomed)
    .fetch_one(&downstream)
    .await
    .unwrap();
    assert!(deleted, "the deleted issue is marked deleted downstream");
    assert_eq!(live, 29);

    // The subscription's slot lives on the publisher: drop both while both run.
    sqlx::raw_sql("DROP SUBSCRIPTION reporting")
        .execute(&downstream)
        .await
        .expect("the subscription is dropped");
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(slots, 0, "no replication slot is left on the publisher");
    downstream.close().await;
}

#[tokio::test]
async fn a_role_that_cannot_create_publications_migrates_and_is_told_what_to_run() {
    let cluster = PrivatePostgres::start();
    let admin = cluster.pool().await;
    for statement in ["CREATE ROLE atlassync LOGIN", "CREATE DATABASE atlassync"] {
        sqlx::raw_sql(statement).execute(&admin).await.unwrap();
    }
    // The database is the administrator's; atlassync may create tables, not publications.
    let database_url = format!("postgres://postgres@127.0.0.1:{}/atlassync", cluster.port());
    let admin_there = PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url)
        .await
        .unwrap();
    sqlx::raw_sql("GRANT CREATE ON SCHEMA public TO atlassync")
        .execute(&admin_there)
        .await
        .unwrap();
    let atlassync_url = format!(
        "postgres://atlassync@127.0.0.1:{}/atlassync",
        cluster.port()
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&atlassync_url)
        .await
        .unwrap();

    let notices = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let notices = notices.clone();
            move || notices.clone()
        })
        .with_ansi(false)
        .with_env_filter("sqlx::postgres::notice=info")
        .finish();
    {
        let _logging = tracing::subscriber::set_default(subscriber);
        atlassync::store::migrate(&pool)
            .await
            .expect("migrations succeed without the right to create a publication");
    }
    assert!(published_tables(&admin_there).await.is_empty());
    let logged = notices.text();
    let notice = logged
        .lines()
        .find(|l| l.contains("publication atlassync_reporting not changed"))
        .unwrap_or_else(|| panic!("a notice says what to run: {logged}"));
    assert!(notice.contains("permission denied"), "{notice}");
    let statement = notice
        .split_once("should run in database atlassync: ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(statement, _)| statement.to_owned())
        .unwrap_or_else(|| panic!("the statement to run: {notice}"));

    // The administrator runs it.
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(&admin_there)
        .await
        .expect("the administrator's statement runs");
    let names: Vec<String> = published_tables(&admin_there)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for table in REPORTING {
        assert!(names.iter().any(|n| n == table), "{table}: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "grants"), "{names:?}");
    atlassync::store::migrate(&pool)
        .await
        .expect("migrating again is a no-op");
    pool.close().await;
    admin_there.close().await;
}

/// (schema, table) of every table in the publication.
async fn published_tables(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_publication_tables
         WHERE pubname = 'atlassync_reporting' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Creates the published tables on the subscriber as an administrator would: `pg_dump
/// --schema-only` of just those tables, restored without their foreign keys (they point at
/// `grants`, which is not replicated).
fn copy_published_schema(
    publisher: &PrivatePostgres,
    subscriber: &PrivatePostgres,
    tables: &[(String, String)],
) {
    let dir = std::env::temp_dir().join(format!("atlassync-reporting-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("schema.dump");
    let mut pg_dump = Command::new(publisher.program("pg_dump"));
    pg_dump.args(["--schema-only", "--format=custom", "--file"]);
    pg_dump.arg(&dump).args(["--dbname", &publisher.url()]);
    for (schema, table) in tables {
        pg_dump.args(["--table", &format!("{schema}.{table}")]);
    }
    run(&mut pg_dump);
    let listing = run(Command::new(publisher.program("pg_restore"))
        .arg("--list")
        .arg(&dump));
    let list = dir.join("schema.list");
    let mut file = std::fs::File::create(&list).unwrap();
    for line in listing.lines() {
        let skip = if line.contains(" FK CONSTRAINT ") {
            ";"
        } else {
            ""
        };
        writeln!(file, "{skip}{line}").unwrap();
    }
    drop(file);
    run(Command::new(publisher.program("pg_restore"))
        .args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--use-list",
        ])
        .arg(&list)
        .args(["--dbname", &subscriber.url()])
        .arg(&dump));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a client program; returns its stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("a PostgreSQL client runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One run of `kind` for a fresh schedule tick; no site may fail.
async fn sync(app: &TestApp, syncer: &Syncer, kind: SyncKind) {
    app.clock.advance(chrono::Duration::seconds(1));
    let report = syncer
        .run_once(
            kind,
            app.clock.now_for_tests(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("sync runs");
    assert!(report.ok > 0 && report.failed == 0, "{kind:?}: {report:?}");
}

/// Every row of every published table, as text, by table.
async fn rows(pool: &PgPool, tables: &[(String, String)]) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for (schema, table) in tables {
        // Names come from the catalogue.
        let query = format!(
            "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM \"{schema}\".\"{table}\" t"
        );
        let text: String = sqlx::query_scalar(AssertSqlSafe(query))
            .fetch_one(pool)
            .await
            .unwrap();
        rows.insert(table.clone(), text);
    }
    rows
}

/// Waits until the subscriber's copy of every published table equals the publisher's.
async fn replicated(
    publisher: &PgPool,
    subscriber: &PgPool,
    tables: &[(String, String)],
    what: &str,
) {
    let expected = rows(publisher, tables).await;
    let started = Instant::now();
    loop {
        let got = rows(subscriber, tables).await;
        if got == expected {
            return;
        }
        assert!(
            started.elapsed() < REPLICATION_DEADLINE,
            "{what} did not reach the subscriber within {REPLICATION_DEADLINE:?}:\n\
             publisher: {expected:#?}\nsubscriber: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < REPLICATION_DEADLINE,
            "not within {REPLICATION_DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log output kept in memory.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
