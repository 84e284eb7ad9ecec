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

/// Records that `token` is about to be presented. Returns false when it must not be: it was
/// presented before (by an import or a rotation) and its result is stored in a grant, or
/// longer ago than `retry_window`. A presentation whose result never reached a grant (an
/// import that died after the exchange) may be repeated inside `retry_window`, which is
/// within Atlassian's reuse leeway, so the family is not lost with it.
pub async fn record_presented(
    conn: &mut PgConnection,
    token: &RefreshToken,
    grant_id: Option<GrantId>,
    now: DateTime<Utc>,
    retry_window: chrono::TimeDelta,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "INSERT INTO presented_refresh_tokens (digest, grant_id, presented_at)
         VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO UPDATE SET presented_at = presented_refresh_tokens.presented_at
         WHERE presented_refresh_tokens.grant_id IS NULL
           AND presented_refresh_tokens.presented_at > $3 - $4",
    )
    .bind(token_digest(token))
    .bind(grant_id)
    .bind(now)
    .bind(retry_window)
    .execute(conn)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Records which grant holds the result of presenting `token` (it may not be repeated).
pub async fn link(
    conn: &mut PgConnection,
    token: &RefreshToken,
    grant_id: GrantId,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE presented_refresh_tokens SET grant_id = $2 WHERE digest = $1")
        .bind(token_digest(token))
        .bind(grant_id)
        .execute(conn)
        .await?;
    Ok(())
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
