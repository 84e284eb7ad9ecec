//! The `jira_issues` table: the mirrored issues, written in batches (UNNEST), never one
//! statement per row; deletions are soft (`deleted_at`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{CloudId, IssueRow};

/// Upserts a page of issues in one statement. An older copy never overwrites a newer one
/// (overlapping windows fetch some issues twice), and an issue seen again is not deleted.
pub async fn upsert_issues(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if issues.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&IssueRow) -> Option<String>| issues.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<&str> = issues.iter().map(|i| i.issue_id.as_str()).collect();
    let keys: Vec<&str> = issues.iter().map(|i| i.issue_key.as_str()).collect();
    let created: Vec<Option<DateTime<Utc>>> = issues.iter().map(|i| i.created_at).collect();
    let updated: Vec<Option<DateTime<Utc>>> = issues.iter().map(|i| i.updated_at).collect();
    // Raw JSON goes over as text and becomes jsonb in the server, which parses it once.
    let raw: Vec<&str> = issues.iter().map(|i| i.raw.get()).collect();
    let result = sqlx::query(
        "INSERT INTO jira_issues (cloud_id, issue_id, issue_key, project_key, summary, status, issue_type,
                                 assignee_account_id, created_at, updated_at, raw, synced_at, deleted_at)
         SELECT $1, u.id, u.key, u.project, u.summary, u.status, u.kind, u.assignee, u.created,
                u.updated, u.raw::jsonb, $11, NULL
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::timestamptz[], $10::timestamptz[], $12::text[])
              AS u(id, key, project, summary, status, kind, assignee, created, updated, raw)
         ON CONFLICT (cloud_id, issue_id) DO UPDATE SET
            issue_key = EXCLUDED.issue_key, project_key = EXCLUDED.project_key, summary = EXCLUDED.summary,
            status = EXCLUDED.status, issue_type = EXCLUDED.issue_type,
            assignee_account_id = EXCLUDED.assignee_account_id, created_at = EXCLUDED.created_at,
            updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at,
            deleted_at = NULL
         WHERE jira_issues.updated_at IS NULL OR EXCLUDED.updated_at IS NULL
            OR jira_issues.updated_at <= EXCLUDED.updated_at OR jira_issues.deleted_at IS NOT NULL",
    )
    .bind(cloud_id)
    .bind(&ids)
    .bind(&keys)
    .bind(column(|i| i.project_key.clone()))
    .bind(column(|i| i.summary.clone()))
    .bind(column(|i| i.status.clone()))
    .bind(column(|i| i.issue_type.clone()))
    .bind(column(|i| i.assignee_account_id.clone()))
    .bind(&created)
    .bind(&updated)
    .bind(now)
    .bind(&raw)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Ids of a site's issues that are not marked deleted.
pub async fn live_issue_ids(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT issue_id FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL",
    )
    .bind(cloud_id)
    .fetch_all(conn)
    .await
}

/// Marks issues deleted (soft); rows synced after `seen_before` are left alone, since they
/// were written after the enumeration that missed them began.
pub async fn mark_issues_deleted(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
    seen_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jira_issues SET deleted_at = $4
         WHERE cloud_id = $1 AND issue_id = ANY($2) AND deleted_at IS NULL AND synced_at < $3",
    )
    .bind(cloud_id)
    .bind(ids)
    .bind(seen_before)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Clears `deleted_at` for issues that are back. Returns how many came back.
pub async fn restore_issues(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jira_issues SET deleted_at = NULL
         WHERE cloud_id = $1 AND issue_id = ANY($2) AND deleted_at IS NOT NULL",
    )
    .bind(cloud_id)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// How many rows a site has, deleted ones included.
pub async fn count_issues(conn: &mut PgConnection, cloud_id: &CloudId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM jira_issues WHERE cloud_id = $1")
        .bind(cloud_id)
        .fetch_one(conn)
        .await
}

/// A site's rows as (live, soft-deleted).
pub async fn live_and_deleted(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL)
         FROM jira_issues WHERE cloud_id = $1",
    )
    .bind(cloud_id)
    .fetch_one(conn)
    .await
}
