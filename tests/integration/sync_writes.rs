//! How a batch of issues reaches `jira_issues`: issues new to the site by a binary `COPY`,
//! the rest by the upsert, with the same stored values either way; a `COPY` that meets a row
//! stored meanwhile falls back to the upsert, and a refused value sets only its row aside.

use atlassync::atlassian::jira::issue_row;
use atlassync::domain::{CloudId, IssueRow};
use atlassync::store::jira_issues::{self, Stored};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::PgPool;

fn issue(id: u32, updated: &str, labels: &str) -> IssueRow {
    let text = format!(
        r#"{{"id":"{id}","key":"ENG-{id}","fields":{{"summary":"tab\there, quote \" and back\\slash","status":{{"name":"Done","statusCategory":{{"key":"done"}}}},"updated":"{updated}","created":"2026-02-27T16:02:44.120+1100","resolutiondate":null,"project":{{"key":"ENG"}},"issuetype":{{"name":"Bug"}},"assignee":{{"accountId":"a-{id}"}},"priority":{{"name":"High"}},"labels":{labels},"emoji":"✓ 日本"}}}}"#
    );
    issue_row(RawValue::from_string(text).unwrap()).unwrap()
}

/// When the batches are written: a fixed instant (business time comes from a clock).
fn sync_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
        .unwrap()
        .to_utc()
}

/// Every column but `synced_at`, as text, ordered by issue id.
async fn stored(pool: &PgPool, cloud_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT row(issue_id, issue_key, project_key, summary, status, issue_type,
                    assignee_account_id, created_at, updated_at, deleted_at, raw,
                    status_category, priority, resolution, resolved_at, reporter_account_id,
                    parent_key, labels)::text
         FROM jira_issues WHERE cloud_id = $1 ORDER BY issue_id",
    )
    .bind(cloud_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn write(pool: &PgPool, cloud_id: &CloudId, rows: &[IssueRow], now: DateTime<Utc>) -> Stored {
    let mut tx = pool.begin().await.unwrap();
    let stored = jira_issues::upsert_or_set_aside(&mut tx, cloud_id, rows, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    stored
}

#[sqlx::test]
async fn copied_and_upserted_issues_are_stored_alike(pool: PgPool) {
    let rows = [
        issue(1, "2026-03-01T09:15:07.311+1100", "[]"),
        issue(
            2,
            "2026-03-01T09:15:08.000+0000",
            r#"["a","b \"c\" \\ d","日本"]"#,
        ),
    ];
    let now = sync_time();
    let mut conn = pool.acquire().await.unwrap();
    let copied = jira_issues::insert_new_issues(&mut conn, &CloudId::new("copied"), &rows, now)
        .await
        .unwrap();
    assert_eq!(copied, 2);
    jira_issues::upsert_issues(&mut conn, &CloudId::new("upserted"), &rows, now)
        .await
        .unwrap();
    let copied = stored(&pool, "copied").await;
    assert_eq!(copied.len(), 2);
    assert_eq!(copied, stored(&pool, "upserted").await);
    let labels: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT labels FROM jira_issues WHERE cloud_id = 'copied' ORDER BY issue_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = ["a", "b \"c\" \\ d", "日本"].map(str::to_owned).to_vec();
    assert_eq!(labels, [vec![], expected]);
    // A first write of new issues goes the same way, and counts them.
    let written = write(&pool, &CloudId::new("written"), &rows, now).await;
    assert_eq!(
        written,
        Stored {
            upserted: 2,
            quarantined: 0
        }
    );
    assert_eq!(
        stored(&pool, "written").await,
        stored(&pool, "upserted").await
    );
}

#[sqlx::test]
async fn a_copy_that_meets_an_issue_stored_meanwhile_falls_back_to_the_upsert(pool: PgPool) {
    let cloud_id = CloudId::new("site");
    let now = sync_time();
    // Another transaction stores a newer issue 2, not yet committed when the batch is probed.
    let mut other = pool.begin().await.unwrap();
    let newer = issue(2, "2026-03-05T00:00:00.000+0000", r#"["newer"]"#);
    jira_issues::upsert_issues(&mut other, &cloud_id, &[newer], now)
        .await
        .unwrap();
    let batch = [
        issue(2, "2026-03-01T00:00:00.000+0000", r#"["older"]"#),
        issue(3, "2026-03-02T00:00:00.000+0000", "[]"),
    ];
    let writer = {
        let (pool, cloud_id) = (pool.clone(), cloud_id.clone());
        tokio::spawn(async move { write(&pool, &cloud_id, &batch, now).await })
    };
    // The COPY waits on the other transaction's row; then that transaction commits.
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    other.commit().await.unwrap();
    let stored = writer.await.unwrap();
    assert_eq!(
        stored,
        Stored {
            upserted: 1,
            quarantined: 0
        },
        "issue 2 was newer"
    );
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT issue_id, labels FROM jira_issues WHERE cloud_id = 'site' ORDER BY issue_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("2".to_owned(), vec!["newer".to_owned()]),
            ("3".to_owned(), vec![])
        ]
    );
}

#[sqlx::test]
async fn a_batch_with_stored_issues_is_upserted_newer_copy_winning(pool: PgPool) {
    let cloud_id = CloudId::new("site");
    let now = sync_time();
    let newer = issue(2, "2026-03-05T00:00:00.000+0000", r#"["newer"]"#);
    write(&pool, &cloud_id, &[newer], now).await;
    // Issue 2 comes back older than stored, issue 3 is new: one batch, upserted.
    let older = issue(2, "2026-03-01T00:00:00.000+0000", r#"["older"]"#);
    let batch = [older, issue(3, "2026-03-02T00:00:00.000+0000", "[]")];
    let stored = write(&pool, &cloud_id, &batch, now).await;
    assert_eq!(
        stored,
        Stored {
            upserted: 1,
            quarantined: 0
        }
    );
    let labels = "SELECT labels FROM jira_issues WHERE cloud_id = 'site' AND issue_id = '2'";
    let kept: Vec<String> = sqlx::query_scalar(labels).fetch_one(&pool).await.unwrap();
    assert_eq!(kept, ["newer"]);
    // A soft-deleted row is replaced even by an older copy, and is live again.
    sqlx::query("UPDATE jira_issues SET deleted_at = $1 WHERE issue_id = '2'")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    let stored = write(&pool, &cloud_id, &batch[..1], now).await;
    assert_eq!(
        stored,
        Stored {
            upserted: 1,
            quarantined: 0
        }
    );
    let (labels, deleted): (Vec<String>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT labels, deleted_at FROM jira_issues WHERE cloud_id = 'site' AND issue_id = '2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((labels, deleted), (vec!["older".to_owned()], None));
}

#[sqlx::test]
async fn a_value_postgres_refuses_sets_aside_its_row_only(pool: PgPool) {
    let cloud_id = CloudId::new("site");
    let mut bad = issue(2, "2026-03-01T00:00:00.000+0000", "[]");
    // Not read from JSON (issue_row cleans text it reads); Postgres refuses a NUL in text.
    bad.assignee_account_id = Some("a\0b".to_owned());
    let batch = [
        issue(1, "2026-03-01T00:00:00.000+0000", "[]"),
        bad,
        issue(3, "2026-03-01T00:00:00.000+0000", "[]"),
    ];
    let stored = write(&pool, &cloud_id, &batch, sync_time()).await;
    assert_eq!(
        stored,
        Stored {
            upserted: 2,
            quarantined: 1
        }
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT issue_id FROM jira_issues ORDER BY issue_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ids, ["1", "3"]);
    let set_aside: Vec<String> = sqlx::query_scalar("SELECT issue_id FROM jira_issue_quarantine")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(set_aside, ["2"]);
}

#[sqlx::test]
async fn an_issue_listed_twice_in_one_batch_is_stored_once_as_its_later_copy(pool: PgPool) {
    // Paging by `updated`, an issue changed mid-scan is listed again further on: both copies
    // can land in one batch, new to the site (COPY) or not (upsert).
    let older = issue(7, "2026-03-01T09:15:07.311+0000", "[]");
    let newer = issue(7, "2026-03-01T10:00:00.000+0000", r#"["moved"]"#);
    let cloud = CloudId::new("twice");
    let stored_now = write(&pool, &cloud, &[older.clone(), newer.clone()], sync_time()).await;
    assert_eq!(stored_now.upserted, 1);
    write(&pool, &cloud, &[newer.clone(), older], sync_time()).await;
    let labels: Vec<Vec<String>> =
        sqlx::query_scalar("SELECT labels FROM jira_issues WHERE cloud_id = 'twice'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(labels, [vec!["moved".to_owned()]], "the later copy wins");
}
