//! Sync state: elected sites, the mirrored Jira and Confluence tables, sync runs and the
//! app's hourly points budget. Rows are written in batches (UNNEST), never one per statement.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A site as the sync sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SyncedSite {
    pub cloud_id: String,
    pub product: String,
    pub name: String,
    pub url: String,
    pub elected_grant_id: Option<Uuid>,
    pub pinned_grant_id: Option<Uuid>,
    pub jira_watermark: Option<DateTime<Utc>>,
}

/// Re-elects the grant of every site: the pinned grant while it is healthy, else the current
/// one while it is healthy, else the healthiest other grant that reaches the site with every
/// needed scope. Sites nobody healthy reaches keep no elected grant (and are not synced).
/// Returns the sites whose elected grant changed, as (cloud id, product, old, new).
pub async fn elect_grants(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String, Option<Uuid>, Option<Uuid>)>, sqlx::Error> {
    // Replicas electing at the same tick take turns instead of deadlocking on row order.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('atlassync.elect_grants'))")
        .execute(&mut *conn)
        .await?;
    // Every (site, product) any grant has ever reached gets a row.
    sqlx::query(
        "INSERT INTO synced_sites (cloud_id, product, name, url)
         SELECT DISTINCT ON (cloud_id, product) cloud_id, product, name, url FROM sites
         ORDER BY cloud_id, product, last_seen_at DESC
         ON CONFLICT (cloud_id, product) DO UPDATE SET name = EXCLUDED.name, url = EXCLUDED.url
         WHERE (synced_sites.name, synced_sites.url) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.url)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "WITH healthy AS (
            SELECT s.cloud_id, s.product, g.id AS grant_id, g.status, g.last_refreshed_at
            FROM sites s JOIN grants g ON g.id = s.grant_id
            WHERE s.status = 'active' AND cardinality(s.missing_scopes) = 0 AND s.scope_error IS NULL
              AND g.status IN ('active', 'degraded')
         ),
         choice AS (
            SELECT ss.cloud_id, ss.product, ss.elected_grant_id AS old_grant,
              COALESCE(
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   AND h.grant_id = ss.pinned_grant_id AND h.status = 'active'),
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   AND h.grant_id = ss.elected_grant_id AND h.status = 'active'),
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   ORDER BY (h.status = 'active') DESC, h.last_refreshed_at DESC NULLS LAST, h.grant_id
                   LIMIT 1)
              ) AS new_grant
            FROM synced_sites ss
            FOR UPDATE OF ss
         )
         UPDATE synced_sites ss SET elected_grant_id = c.new_grant, elected_at = $1
         FROM choice c
         WHERE ss.cloud_id = c.cloud_id AND ss.product = c.product
           AND c.new_grant IS DISTINCT FROM c.old_grant
         RETURNING ss.cloud_id, ss.product, c.old_grant, c.new_grant",
    )
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Pins `grant_id` (or clears the pin with `None`) for a site.
pub async fn pin_grant(
    conn: &mut PgConnection,
    cloud_id: &str,
    product: &str,
    grant_id: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE synced_sites SET pinned_grant_id = $3 WHERE cloud_id = $1 AND product = $2",
    )
    .bind(cloud_id)
    .bind(product)
    .bind(grant_id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Which tick column a kind of run claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    JiraIncremental,
    JiraReconcile,
    ConfluenceSpaces,
}

impl RunKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JiraIncremental => "jira_incremental",
            Self::JiraReconcile => "jira_reconcile",
            Self::ConfluenceSpaces => "confluence_spaces",
        }
    }

    /// The product it syncs.
    pub fn product(self) -> &'static str {
        match self {
            Self::JiraIncremental | Self::JiraReconcile => "jira",
            Self::ConfluenceSpaces => "confluence",
        }
    }
}

/// Claims up to `limit` sites with an elected grant not yet done for `tick`.
pub async fn claim_sites(
    conn: &mut PgConnection,
    kind: RunKind,
    tick: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SyncedSite>, sqlx::Error> {
    let query = match kind {
        RunKind::JiraReconcile => {
            "WITH due AS (
                SELECT cloud_id, product FROM synced_sites
                WHERE product = $1 AND elected_grant_id IS NOT NULL
                  AND (reconciled_for IS NULL OR reconciled_for < $2)
                ORDER BY reconciled_for NULLS FIRST LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE synced_sites ss SET reconciled_for = $2 FROM due
             WHERE ss.cloud_id = due.cloud_id AND ss.product = due.product
             RETURNING ss.cloud_id, ss.product, ss.name, ss.url, ss.elected_grant_id, ss.pinned_grant_id, ss.jira_watermark"
        }
        RunKind::JiraIncremental | RunKind::ConfluenceSpaces => {
            "WITH due AS (
                SELECT cloud_id, product FROM synced_sites
                WHERE product = $1 AND elected_grant_id IS NOT NULL
                  AND (synced_for IS NULL OR synced_for < $2)
                ORDER BY synced_for NULLS FIRST LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE synced_sites ss SET synced_for = $2 FROM due
             WHERE ss.cloud_id = due.cloud_id AND ss.product = due.product
             RETURNING ss.cloud_id, ss.product, ss.name, ss.url, ss.elected_grant_id, ss.pinned_grant_id, ss.jira_watermark"
        }
    };
    sqlx::query_as(query)
        .bind(kind.product())
        .bind(tick)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// One Jira issue's columns, extracted from its JSON.
#[derive(Debug, Clone)]
pub struct IssueRow {
    pub issue_id: String,
    pub issue_key: String,
    pub project_key: Option<String>,
    pub summary: Option<String>,
    pub status: Option<String>,
    pub issue_type: Option<String>,
    pub assignee_account_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The issue's JSON exactly as Atlassian sent it.
    pub raw: Box<serde_json::value::RawValue>,
}

/// Upserts a page of issues in one statement. An older copy never overwrites a newer one
/// (overlapping windows fetch some issues twice), and an issue seen again is not deleted.
pub async fn upsert_issues(
    conn: &mut PgConnection,
    cloud_id: &str,
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

/// Moves a site's Jira watermark forward (never back).
pub async fn advance_watermark(
    conn: &mut PgConnection,
    cloud_id: &str,
    watermark: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET jira_watermark = GREATEST(COALESCE(jira_watermark, $2), $2)
         WHERE cloud_id = $1 AND product = 'jira'",
    )
    .bind(cloud_id)
    .bind(watermark)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ids of a site's issues that are not marked deleted.
pub async fn live_issue_ids(
    conn: &mut PgConnection,
    cloud_id: &str,
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
    cloud_id: &str,
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
    cloud_id: &str,
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

/// One Confluence space's columns.
#[derive(Debug, Clone)]
pub struct SpaceRow {
    pub space_id: String,
    pub space_key: String,
    pub name: Option<String>,
    pub space_type: Option<String>,
    pub status: Option<String>,
    pub raw: serde_json::Value,
}

/// Upserts every listed space and, when the listing is `complete`, soft-deletes the ones
/// not listed. Returns (upserted, deleted).
pub async fn replace_spaces(
    conn: &mut PgConnection,
    cloud_id: &str,
    spaces: &[SpaceRow],
    complete: bool,
    now: DateTime<Utc>,
) -> Result<(u64, u64), sqlx::Error> {
    let ids: Vec<&str> = spaces.iter().map(|s| s.space_id.as_str()).collect();
    let keys: Vec<&str> = spaces.iter().map(|s| s.space_key.as_str()).collect();
    let names: Vec<Option<&str>> = spaces.iter().map(|s| s.name.as_deref()).collect();
    let types: Vec<Option<&str>> = spaces.iter().map(|s| s.space_type.as_deref()).collect();
    let statuses: Vec<Option<&str>> = spaces.iter().map(|s| s.status.as_deref()).collect();
    let raw: Vec<&serde_json::Value> = spaces.iter().map(|s| &s.raw).collect();
    let upserted = sqlx::query(
        "INSERT INTO confluence_spaces (cloud_id, space_id, space_key, name, type, status, raw, synced_at, deleted_at)
         SELECT $1, *, $8, NULL FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
         ON CONFLICT (cloud_id, space_id) DO UPDATE SET
            space_key = EXCLUDED.space_key, name = EXCLUDED.name, type = EXCLUDED.type,
            status = EXCLUDED.status, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at, deleted_at = NULL",
    )
    .bind(cloud_id)
    .bind(&ids)
    .bind(&keys)
    .bind(&names)
    .bind(&types)
    .bind(&statuses)
    .bind(&raw)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if !complete {
        return Ok((upserted, 0));
    }
    let deleted = sqlx::query(
        "UPDATE confluence_spaces SET deleted_at = $3
         WHERE cloud_id = $1 AND deleted_at IS NULL AND NOT (space_id = ANY($2))",
    )
    .bind(cloud_id)
    .bind(&ids)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((upserted, deleted))
}

/// Counters of one run, written when it ends.
#[derive(Debug, Default, Clone)]
pub struct RunTotals {
    pub upserted: i64,
    pub deleted: i64,
    pub restored: i64,
    pub requests: i64,
    pub points_used: i64,
    pub points_remaining: Option<i64>,
    pub watermark_after: Option<DateTime<Utc>>,
}

/// Opens a `sync_runs` row.
pub async fn start_run(
    conn: &mut PgConnection,
    site: &SyncedSite,
    kind: RunKind,
    grant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO sync_runs (cloud_id, product, kind, grant_id, started_at, watermark_before)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&site.cloud_id)
    .bind(&site.product)
    .bind(kind.as_str())
    .bind(grant_id)
    .bind(now)
    .bind(site.jira_watermark)
    .fetch_one(conn)
    .await
}

/// Closes a `sync_runs` row with its outcome and counts.
pub async fn finish_run(
    conn: &mut PgConnection,
    run_id: i64,
    outcome: &str,
    error: Option<&str>,
    totals: &RunTotals,
    duration_ms: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sync_runs SET finished_at = $2, duration_ms = $3, outcome = $4, error = $5,
            upserted = $6, deleted = $7, restored = $8, requests = $9, points_used = $10,
            points_remaining = $11, watermark_after = $12
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(now)
    .bind(duration_ms)
    .bind(outcome)
    .bind(error)
    .bind(totals.upserted as i32)
    .bind(totals.deleted as i32)
    .bind(totals.restored as i32)
    .bind(totals.requests as i32)
    .bind(totals.points_used as i32)
    .bind(totals.points_remaining.map(|p| p as i32))
    .bind(totals.watermark_after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Closes runs still `running` that started before `started_before` (their process is gone).
pub async fn close_abandoned_runs(
    conn: &mut PgConnection,
    started_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let closed = sqlx::query(
        "UPDATE sync_runs SET outcome = 'failed', finished_at = $2,
            error = 'abandoned: the process running it stopped before it finished'
         WHERE outcome = 'running' AND started_at < $1",
    )
    .bind(started_before)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(closed.rows_affected())
}

/// Records the sites' last successful run time.
pub async fn mark_site_synced(
    conn: &mut PgConnection,
    cloud_id: &str,
    product: &str,
    kind: RunKind,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let query = match kind {
        RunKind::JiraReconcile => {
            "UPDATE synced_sites SET last_reconciled_at = $3 WHERE cloud_id = $1 AND product = $2"
        }
        _ => "UPDATE synced_sites SET last_synced_at = $3 WHERE cloud_id = $1 AND product = $2",
    };
    sqlx::query(query)
        .bind(cloud_id)
        .bind(product)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a gateway "scope does not match" on a grant's site, which removes the grant from
/// that site's election until revalidation sees a fresh scope list.
pub async fn record_scope_error(
    conn: &mut PgConnection,
    grant_id: Uuid,
    cloud_id: &str,
    product: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sites SET scope_error = $4 WHERE grant_id = $1 AND cloud_id = $2 AND product = $3",
    )
    .bind(grant_id)
    .bind(cloud_id)
    .bind(product)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// The hour's budget: points used and any quota pause.
pub async fn budget(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row: Option<(i64, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT points_used, paused_until FROM api_budget WHERE hour_start = $1")
            .bind(hour_start)
            .fetch_optional(&mut *conn)
            .await?;
    // A pause may have been set in an earlier hour and still hold.
    let paused: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(paused_until) FROM api_budget WHERE paused_until > $1")
            .bind(hour_start)
            .fetch_one(conn)
            .await?;
    Ok((
        row.map(|r| r.0).unwrap_or(0),
        paused.or(row.and_then(|r| r.1)),
    ))
}

/// Adds `points` to the hour's spend; returns the new total.
pub async fn spend_points(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    points: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_budget (hour_start, points_used) VALUES ($1, $2)
         ON CONFLICT (hour_start) DO UPDATE SET points_used = api_budget.points_used + EXCLUDED.points_used
         RETURNING points_used",
    )
    .bind(hour_start)
    .bind(points)
    .fetch_one(conn)
    .await
}

/// Pauses every request of the app until `until` (a quota 429).
pub async fn pause_app(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_budget (hour_start, paused_until) VALUES ($1, $2)
         ON CONFLICT (hour_start) DO UPDATE SET paused_until = GREATEST(api_budget.paused_until, EXCLUDED.paused_until)",
    )
    .bind(hour_start)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}
