//! The `presented_refresh_tokens` table: digests of refresh tokens already presented to
//! Atlassian, so none is ever presented twice by an import (after the reuse leeway that
//! would revoke the family).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::crypto::digest;
use crate::domain::{GrantId, RefreshToken};

/// The digest a presented token is remembered by (SHA-256; the token itself is never kept).
pub fn token_digest(token: &RefreshToken) -> Vec<u8> {
    digest(token.expose().as_bytes())
}

/// Records that `token` is about to be presented. Returns false when it was presented
/// before (by an import or a rotation), in which case it must not be presented again.
pub async fn record_presented(
    conn: &mut PgConnection,
    token: &RefreshToken,
    grant_id: Option<GrantId>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO presented_refresh_tokens (digest, grant_id, presented_at)
         VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(token_digest(token))
    .bind(grant_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Forgets a presentation that Atlassian certainly did not act on (it answered with an
/// error before rotating), so the token may be presented again.
pub async fn forget_presented(
    conn: &mut PgConnection,
    token: &RefreshToken,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presented_refresh_tokens WHERE digest = $1")
        .bind(token_digest(token))
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets tokens presented before `before`: older than a family's whole life, they are
/// dead whatever happens. Returns how many went (at most `limit`).
pub async fn prune(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM presented_refresh_tokens WHERE digest IN (
            SELECT digest FROM presented_refresh_tokens WHERE presented_at < $1
            ORDER BY presented_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}
