//! The `confluence_spaces` table: the mirrored spaces, replaced by each complete listing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{CloudId, SpaceRow};

/// Upserts every listed space and, when the listing is `complete`, soft-deletes the ones
/// not listed. Returns (upserted, deleted).
pub async fn replace_spaces(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
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

/// Every site's spaces as (live, soft-deleted).
pub async fn live_and_deleted(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL)
         FROM confluence_spaces",
    )
    .fetch_one(conn)
    .await
}

/// A site's live spaces, and how many of them `listed_ids` lacks.
pub async fn live_and_unlisted(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    listed_ids: &[&str],
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT (space_id = ANY($2)))
         FROM confluence_spaces WHERE cloud_id = $1 AND deleted_at IS NULL",
    )
    .bind(cloud_id)
    .bind(listed_ids)
    .fetch_one(conn)
    .await
}
