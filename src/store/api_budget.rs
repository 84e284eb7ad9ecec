//! The `api_budget` table: the app's points spent per UTC hour and any quota pause, shared
//! by every replica.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

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
