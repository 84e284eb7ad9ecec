//! The `api_budget` table: the app's points spent per UTC hour and product, and any quota
//! pause of a product, shared by every replica. Atlassian keeps one pool per app and product:
//! Jira's spend never uses up Confluence's points, nor the other way round.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{CloudId, Product};

/// Where one product's points budget stands for a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Points the app spent on the product this hour (all replicas, calibrated by
    /// Atlassian's count).
    pub used: i64,
    /// A pause of all the app's requests to the product (a global quota 429), possibly set
    /// in an earlier hour and still holding.
    pub paused_until: Option<DateTime<Utc>>,
    /// A pause of the one site asked about, for this product (a tenant quota 429).
    pub site_paused_until: Option<DateTime<Utc>>,
}

/// The hour's budget of `product`, and the pause of that product on `site` when one is given,
/// in one round trip (it is read before every product request).
pub async fn budget(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    product: Product,
    site: Option<&CloudId>,
) -> Result<Budget, sqlx::Error> {
    let (used, paused_until, site_paused_until) = sqlx::query_as(
        "SELECT COALESCE((SELECT points_used FROM api_budget
                          WHERE hour_start = $1 AND product = $2), 0),
                (SELECT max(paused_until) FROM api_budget
                 WHERE product = $2 AND (paused_until > $1 OR hour_start = $1)),
                (SELECT quota_paused_until FROM synced_sites WHERE cloud_id = $3 AND product = $2)",
    )
    .bind(hour_start)
    .bind(product)
    .bind(site)
    .fetch_one(conn)
    .await?;
    Ok(Budget {
        used,
        paused_until,
        site_paused_until,
    })
}

/// Adds `points` to the hour's spend of `product`; returns the new total.
pub async fn spend_points(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    product: Product,
    points: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_budget (hour_start, product, points_used) VALUES ($1, $2, $3)
         ON CONFLICT (hour_start, product)
            DO UPDATE SET points_used = api_budget.points_used + EXCLUDED.points_used
         RETURNING points_used",
    )
    .bind(hour_start)
    .bind(product)
    .bind(points)
    .fetch_one(conn)
    .await
}

/// Pauses every request of the app to `product` until `until` (a global quota 429 of that
/// product's pool); the other product carries on.
pub async fn pause_app(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    product: Product,
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_budget (hour_start, product, paused_until) VALUES ($1, $2, $3)
         ON CONFLICT (hour_start, product)
            DO UPDATE SET paused_until = GREATEST(api_budget.paused_until, EXCLUDED.paused_until)",
    )
    .bind(hour_start)
    .bind(product)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Raises the hour's spend of `product` to at least `used` (what Atlassian's `RateLimit`
/// header on an answer of that product says its pool has spent, other installations and
/// replicas included). Returns the new total.
pub async fn raise_spend_to(
    conn: &mut PgConnection,
    hour_start: DateTime<Utc>,
    product: Product,
    used: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_budget (hour_start, product, points_used) VALUES ($1, $2, $3)
         ON CONFLICT (hour_start, product) DO UPDATE
            SET points_used = GREATEST(api_budget.points_used, EXCLUDED.points_used)
         RETURNING points_used",
    )
    .bind(hour_start)
    .bind(product)
    .bind(used)
    .fetch_one(conn)
    .await
}
