//! The `api_budget` table: the app's points spent per UTC hour and any quota pause, shared
//! by every replica.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::SiteKey;

/// Where the points budget stands for a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Points the app spent this hour (all replicas, calibrated by Atlassian's count).
    pub used: i64,
    /// A pause of all the app's requests (a global quota 429), possibly set in an earlier
    /// hour and still holding.
    pub paused_until: Option<DateTime<Utc>>,
    /// A pause of the one site asked about (a tenant quota 429).
    pub site_paused_until: Option<DateTime<Utc>>,
}

/// The hour's budget, and the pause of `site` when one is given, in one round trip (it is
/// read before every product request).
pub async fn budget(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    site: Option<&SiteKey>,
) -> Result<Budget, sqlx::Error> {
    let (used, paused_until, site_paused_until) = sqlx::query_as(
        "SELECT COALESCE((SELECT points_used FROM api_budget WHERE hour_start = $1), 0),
                (SELECT max(paused_until) FROM api_budget
                 WHERE paused_until > $1 OR hour_start = $1),
                (SELECT quota_paused_until FROM synced_sites WHERE cloud_id = $2 AND product = $3)",
    )
    .bind(hour_start)
    .bind(site.map(|s| &s.cloud_id))
    .bind(site.map(|s| s.product))
    .fetch_one(conn)
    .await?;
    Ok(Budget {
        used,
        paused_until,
        site_paused_until,
    })
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

/// Raises the hour's spend to at least `used` (what Atlassian's `RateLimit` header says the
/// pool has spent, other installations and replicas included). Returns the new total.
pub async fn raise_spend_to(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    used: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_budget (hour_start, points_used) VALUES ($1, $2)
         ON CONFLICT (hour_start) DO UPDATE
            SET points_used = GREATEST(api_budget.points_used, EXCLUDED.points_used)
         RETURNING points_used",
    )
    .bind(hour_start)
    .bind(used)
    .fetch_one(conn)
    .await
}
