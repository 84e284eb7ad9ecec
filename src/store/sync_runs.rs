//! The `sync_runs` table: one row per sync run, with its counts, cost and outcome.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::synced_sites::SyncedSite;
use crate::domain::{CloudId, GrantId, Product, SyncKind};

/// Counters of one run, written when it ends.
#[derive(Debug, Default, Clone)]
pub struct RunTotals {
    /// Rows inserted or updated.
    pub upserted: i64,
    /// Rows soft-deleted.
    pub deleted: i64,
    /// Soft-deleted Jira issues a reconcile found again.
    pub restored: i64,
    /// Issues a reconcile found listed by Atlassian but missing here, fetched and inserted.
    pub added: i64,
    /// Rows a reconcile re-read because they came back (restored with current content).
    pub refreshed: i64,
    /// Deletions held for an operator (`sync.max_delete_fraction`).
    pub held: i64,
    /// Rows Postgres refused even after cleaning, set aside in the quarantine table.
    pub quarantined: i64,
    /// Requests sent, retries included.
    pub requests: i64,
    /// Points spent: 1 per request plus 1 per object returned.
    pub points_used: i64,
    /// The app's points left this UTC hour at the end, as far as atlassync knows.
    pub points_remaining: Option<i64>,
    /// The Jira watermark of the last committed batch; `None` when nothing was committed.
    pub watermark_after: Option<DateTime<Utc>>,
}

/// Opens a `sync_runs` row.
pub async fn start_run(
    conn: &mut PgConnection,
    site: &SyncedSite,
    kind: SyncKind,
    grant_id: GrantId,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO sync_runs (cloud_id, product, kind, grant_id, started_at, watermark_before)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&site.cloud_id)
    .bind(site.product)
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
            points_remaining = $11, watermark_after = $12, added = $13, refreshed = $14,
            held = $15, quarantined = $16
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(now)
    .bind(duration_ms)
    .bind(outcome)
    .bind(error)
    .bind(saturate(totals.upserted))
    .bind(saturate(totals.deleted))
    .bind(saturate(totals.restored))
    .bind(saturate(totals.requests))
    .bind(saturate(totals.points_used))
    .bind(totals.points_remaining.map(saturate))
    .bind(totals.watermark_after)
    .bind(saturate(totals.added))
    .bind(saturate(totals.refreshed))
    .bind(saturate(totals.held))
    .bind(saturate(totals.quarantined))
    .execute(conn)
    .await?;
    Ok(())
}

/// A counter as its `integer` column holds it: a run past 2^31 rows reads as the maximum
/// rather than wrapping negative.
fn saturate(count: i64) -> i32 {
    i32::try_from(count).unwrap_or(if count < 0 { i32::MIN } else { i32::MAX })
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

/// Runs counted by kind and outcome, as (kind, outcome, runs, requests).
pub async fn tally(
    conn: &mut PgConnection,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, outcome, count(*), sum(requests)::bigint FROM sync_runs
         GROUP BY kind, outcome ORDER BY kind, outcome",
    )
    .fetch_all(conn)
    .await
}

/// One sync run as the admin page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentRun {
    /// The site's cloud id.
    pub cloud_id: CloudId,
    /// Which product of the site.
    pub product: Product,
    /// The site's name, from `synced_sites`.
    pub site_name: String,
    /// `jira_incremental`, `jira_reconcile` or `confluence_spaces`.
    pub kind: String,
    /// `running`, `ok`, `failed` or `deferred`.
    pub outcome: String,
    /// Rows inserted or updated.
    pub upserted: i32,
    /// Rows soft-deleted.
    pub deleted: i32,
    /// Soft-deleted Jira issues found again.
    pub restored: i32,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed or was deferred.
    pub error: Option<String>,
}

/// The latest `per_site` runs of each of the first `site_limit` synced sites (by name and
/// product), newest first within a site. Each site is one index range scan
/// (`sync_runs_by_site`).
pub async fn recent_runs_per_site(
    conn: &mut PgConnection,
    per_site: i64,
    site_limit: i64,
) -> Result<Vec<RecentRun>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ss.cloud_id, ss.product, ss.name AS site_name, r.kind, r.outcome, r.upserted,
                r.deleted, r.restored, r.started_at, r.finished_at, r.error
         FROM (SELECT cloud_id, product, name FROM synced_sites
               ORDER BY name, product LIMIT $2) ss
         CROSS JOIN LATERAL (
             SELECT kind, outcome, upserted, deleted, restored, started_at, finished_at, error
             FROM sync_runs
             WHERE cloud_id = ss.cloud_id AND product = ss.product
             ORDER BY started_at DESC LIMIT $1) r
         ORDER BY ss.name, ss.product, r.started_at DESC",
    )
    .bind(per_site)
    .bind(site_limit)
    .fetch_all(conn)
    .await
}

/// Deletes up to `limit` finished runs that started before `before`. Returns how many went.
pub async fn prune(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM sync_runs WHERE id IN (
            SELECT id FROM sync_runs WHERE started_at < $1 AND outcome <> 'running'
            ORDER BY started_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// The freshness of one site's stream: its last success and what that run stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StreamFreshness {
    /// The site's cloud id.
    pub cloud_id: String,
    /// A sync kind name.
    pub kind: String,
    /// When it last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// Rows the last successful run upserted, deleted or restored.
    pub rows: Option<i64>,
}

/// Every site stream's freshness: one row per synced site and stream, each a short index
/// walk back to its latest successful run.
pub async fn freshness(conn: &mut PgConnection) -> Result<Vec<StreamFreshness>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ss.cloud_id, k.kind,
                CASE WHEN k.kind = 'jira_reconcile' THEN ss.last_reconciled_at
                     ELSE ss.last_synced_at END AS last_success,
                last_ok.rows
         FROM synced_sites ss
         JOIN (VALUES ('jira', 'jira_incremental'), ('jira', 'jira_reconcile'),
                      ('confluence', 'confluence_spaces')) AS k(product, kind)
           ON k.product = ss.product
         LEFT JOIN LATERAL (
             SELECT (r.upserted + r.deleted + r.restored)::bigint AS rows FROM sync_runs r
             WHERE r.cloud_id = ss.cloud_id AND r.product = ss.product AND r.kind = k.kind
               AND r.outcome = 'ok'
             ORDER BY r.started_at DESC LIMIT 1) last_ok ON true
         ORDER BY ss.cloud_id, k.kind",
    )
    .fetch_all(conn)
    .await
}
