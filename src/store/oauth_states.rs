//! Consent attempts in flight. Only a digest of each state value is stored, and consuming
//! one is a single conditional UPDATE, so a replayed callback finds nothing to consume.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::crypto::digest;
use crate::domain::AccountId;

/// Why a callback's state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRejection {
    /// Never issued here.
    Unknown,
    /// Already used by an earlier callback.
    Replayed,
    /// Issued too long ago.
    Expired,
}

/// The link a consent attempt started from.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InviteOrigin {
    /// The label the grant will carry.
    pub label: String,
    /// The digest of the signed link, which the completed consent spends.
    pub invite_digest: Option<Vec<u8>>,
    /// When the link itself expires.
    pub invite_expires_at: Option<DateTime<Utc>>,
    /// For a re-consent link: the only account allowed to consent.
    pub account_id: Option<AccountId>,
}

/// Records a new state for a consent started from `origin`.
pub async fn record_state(
    conn: &mut PgConnection,
    state: &str,
    origin: &InviteOrigin,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oauth_states (state_digest, label, created_at, expires_at, invite_digest,
                                   invite_expires_at, account_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(digest(state.as_bytes()))
    .bind(&origin.label)
    .bind(now)
    .bind(expires_at)
    .bind(&origin.invite_digest)
    .bind(origin.invite_expires_at)
    .bind(&origin.account_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes `state` and returns the link it was issued for.
pub async fn consume_state(
    conn: &mut PgConnection,
    state: &str,
    now: DateTime<Utc>,
) -> Result<Result<InviteOrigin, StateRejection>, sqlx::Error> {
    let state_digest = digest(state.as_bytes());
    let consumed: Option<InviteOrigin> = sqlx::query_as(
        "UPDATE oauth_states SET consumed_at = $2
         WHERE state_digest = $1 AND consumed_at IS NULL AND expires_at > $2
         RETURNING label, invite_digest, invite_expires_at, account_id",
    )
    .bind(&state_digest)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(origin) = consumed {
        return Ok(Ok(origin));
    }
    let known: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT consumed_at FROM oauth_states WHERE state_digest = $1")
            .bind(&state_digest)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Err(match known {
        None => StateRejection::Unknown,
        Some((Some(_),)) => StateRejection::Replayed,
        Some((None,)) => StateRejection::Expired,
    }))
}

/// Deletes states that can no longer be used.
pub async fn purge_expired_states(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
        .bind(older_than)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}
