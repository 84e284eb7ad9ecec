//! The `spent_invites` table: links a completed consent has used, by the digest of the
//! signed link, so that no link serves twice.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Whether the link with `digest` has been spent.
pub async fn is_spent(conn: &mut PgConnection, digest: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM spent_invites WHERE digest = $1)")
        .bind(digest)
        .fetch_one(conn)
        .await
}

/// Spends the link with `digest`. Returns false when it was spent already (by another
/// consent that got there first).
pub async fn spend(
    conn: &mut PgConnection,
    digest: &[u8],
    label: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO spent_invites (digest, label, spent_at, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest)
    .bind(label)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Gives a link back after the consent through it failed (nothing was stored).
pub async fn unspend(conn: &mut PgConnection, digest: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM spent_invites WHERE digest = $1")
        .bind(digest)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets spent links that have expired anyway.
pub async fn purge_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("DELETE FROM spent_invites WHERE expires_at < $1")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}
