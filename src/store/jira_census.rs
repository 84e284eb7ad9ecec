//! The state of a site's Jira reconciliation pass (`jira_census_passes`, `jira_census_ranges`)
//! and the issues censuses found gone but not yet deleted (`jira_census_vanished`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{CloudId, IdRange};

/// A pass in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pass {
    /// When it began: rows synced since then are newer than its evidence.
    pub started_at: DateTime<Utc>,
    /// Whether it censuses every id (`sync --full`) rather than the ranges that drifted.
    pub full_census: bool,
}

/// A range still to census: `start` is its identity, `next` how far it is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRange {
    /// Where the range began.
    pub start: i64,
    /// The part not censused yet.
    pub rest: IdRange,
}

/// The site's pass in progress, if any.
pub async fn pass(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Option<Pass>, sqlx::Error> {
    sqlx::query_as("SELECT started_at, full_census FROM jira_census_passes WHERE cloud_id = $1")
        .bind(cloud_id)
        .fetch_optional(conn)
        .await
}

/// Starts a pass over `ranges`, replacing any pass the site had.
pub async fn begin_pass(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    started_at: DateTime<Utc>,
    full_census: bool,
    ranges: &[IdRange],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jira_census_passes (cloud_id, started_at, full_census) VALUES ($1, $2, $3)
         ON CONFLICT (cloud_id) DO UPDATE
            SET started_at = EXCLUDED.started_at, full_census = EXCLUDED.full_census",
    )
    .bind(cloud_id)
    .bind(started_at)
    .bind(full_census)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM jira_census_ranges WHERE cloud_id = $1")
        .bind(cloud_id)
        .execute(&mut *conn)
        .await?;
    let starts: Vec<i64> = ranges.iter().map(|r| r.start).collect();
    let ends: Vec<Option<i64>> = ranges.iter().map(|r| r.end).collect();
    sqlx::query(
        "INSERT INTO jira_census_ranges (cloud_id, start_id, next_id, end_id)
         SELECT $1, s, s, e FROM unnest($2::bigint[], $3::bigint[]) AS r(s, e)",
    )
    .bind(cloud_id)
    .bind(&starts)
    .bind(&ends)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ranges of the site's pass not yet censused, in id order.
pub async fn pending_ranges(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Vec<PendingRange>, sqlx::Error> {
    let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT start_id, next_id, end_id FROM jira_census_ranges WHERE cloud_id = $1
         ORDER BY start_id",
    )
    .bind(cloud_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start, next, end)| PendingRange {
            start,
            rest: IdRange { start: next, end },
        })
        .collect())
}

/// Records that a range is censused up to `next` (`None`: all of it, and it is done).
pub async fn advance_range(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    start: i64,
    next: Option<i64>,
) -> Result<(), sqlx::Error> {
    match next {
        Some(next) => {
            sqlx::query(
                "UPDATE jira_census_ranges SET next_id = $3 WHERE cloud_id = $1 AND start_id = $2",
            )
            .bind(cloud_id)
            .bind(start)
            .bind(next)
            .execute(conn)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM jira_census_ranges WHERE cloud_id = $1 AND start_id = $2")
                .bind(cloud_id)
                .bind(start)
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// Ends the site's pass (its ranges go with it; vanished issues stay until applied).
pub async fn end_pass(conn: &mut PgConnection, cloud_id: &CloudId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM jira_census_passes WHERE cloud_id = $1")
        .bind(cloud_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records issues a census found gone.
pub async fn add_vanished(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jira_census_vanished (cloud_id, issue_id, found_at)
         SELECT $1, id, $3 FROM unnest($2::text[]) AS id
         ON CONFLICT DO NOTHING",
    )
    .bind(cloud_id)
    .bind(ids)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The issues found gone and not yet deleted.
pub async fn vanished(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT issue_id FROM jira_census_vanished WHERE cloud_id = $1 ORDER BY issue_id",
    )
    .bind(cloud_id)
    .fetch_all(conn)
    .await
}

/// Forgets vanished issues: they came back, or their deletion was applied.
pub async fn forget_vanished(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM jira_census_vanished WHERE cloud_id = $1 AND issue_id = ANY($2)")
        .bind(cloud_id)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}
