//! The `grants` table: identity, status, deadlines and sealed tokens of each grant.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::crypto::{Keyring, OpenError, Sealed};
use crate::domain::{AccessToken, AccountId, GrantId, GrantStatus, RefreshToken};

/// The user a grant belongs to, from `/me`.
#[derive(Debug, Clone)]
pub struct Account {
    /// Atlassian's account id; at most one grant per account.
    pub account_id: AccountId,
    /// The display name, if `/me` shared it.
    pub name: Option<String>,
    /// The email address, if `/me` shared it.
    pub email: Option<String>,
}

/// The associated data binding a sealed token to its grant and column.
fn context(grant_id: GrantId, column: &str) -> Vec<u8> {
    format!("atlassync:grant:{grant_id}:{column}").into_bytes()
}

/// Seals a refresh token for `grant_id`'s row.
pub fn seal_refresh_token(keyring: &Keyring, grant_id: GrantId, token: &RefreshToken) -> Sealed {
    keyring.seal(
        token.expose().as_bytes(),
        &context(grant_id, "refresh_token"),
    )
}

/// Seals an access token for `grant_id`'s row.
pub fn seal_access_token(keyring: &Keyring, grant_id: GrantId, token: &AccessToken) -> Sealed {
    keyring.seal(
        token.expose().as_bytes(),
        &context(grant_id, "access_token"),
    )
}

/// A new token family's tokens and deadlines, sealed for `grant_id`.
#[derive(Debug, Clone)]
pub struct FamilyRecord {
    /// The row the tokens are sealed for; they open only there.
    pub grant_id: GrantId,
    /// Sealed for `grant_id`'s refresh token column.
    pub refresh_token: Sealed,
    /// Sealed for `grant_id`'s access token column.
    pub access_token: Sealed,
    /// When the first access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// The granted scopes, from the token answer.
    pub scopes: Vec<String>,
    /// When the family began: the consent, or an import's `consented_at`.
    pub family_started_at: DateTime<Utc>,
    /// `family_started_at` + `tokens.absolute_expiry`.
    pub family_deadline: DateTime<Utc>,
    /// When the current refresh token was issued.
    pub rotated_at: DateTime<Utc>,
    /// `rotated_at` + `tokens.inactivity_expiry`.
    pub refresh_idle_deadline: DateTime<Utc>,
    /// When the sweep first rotates the refresh token to keep it alive.
    pub next_refresh_at: DateTime<Utc>,
}

/// One grant as stored.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Primary key; also bound into every sealed token of the row.
    pub id: GrantId,
    /// The invite's label; not unique.
    pub label: String,
    /// `None` only for an import whose account could not be identified.
    pub account_id: Option<AccountId>,
    /// The display name, if `/me` shared it.
    pub account_name: Option<String>,
    /// The email address, if `/me` shared it.
    pub account_email: Option<String>,
    /// Health, kept apart from the deadlines below.
    pub status: GrantStatus,
    /// Why the status was last set; cleared when the grant returns to `active`.
    pub status_reason: Option<String>,
    /// When the status last changed.
    pub status_since: DateTime<Utc>,
    /// The granted scopes, as of the latest token answer that listed any.
    pub scopes: Vec<String>,
    /// `refresh_token_sealed` with `refresh_token_key_id`; opened by [`Grant::refresh_token`].
    pub refresh_token: Sealed,
    /// Bumped on every persisted rotation: the fence that discards a stale exchange's result.
    pub token_version: i64,
    /// `access_token_sealed` with `access_token_key_id`; `None` if never stored.
    pub access_token: Option<Sealed>,
    /// When the stored access token expires.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the stored refresh token was issued; an answer without a new one leaves it.
    pub refresh_rotated_at: DateTime<Utc>,
    /// When the stored refresh token dies if not exchanged (Atlassian's inactivity expiry).
    pub refresh_idle_deadline: DateTime<Utc>,
    /// When the current token family began; a renewal changes it.
    pub family_started_at: DateTime<Utc>,
    /// When the family ends whatever happens (Atlassian's absolute expiry).
    pub family_deadline: DateTime<Utc>,
    /// Set when an exchange starts, cleared when its result is persisted: set on an unleased
    /// row, it means an exchange was interrupted.
    pub refresh_started_at: Option<DateTime<Utc>>,
    /// When the sweep next claims the grant: keep-alive, or a retry.
    pub next_refresh_at: DateTime<Utc>,
    /// When an exchange last succeeded.
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Failed exchanges in a row; `tokens.degraded_after` of them mark the grant `degraded`.
    pub failure_streak: i32,
    /// The last exchange failure; cleared by a success.
    pub last_error: Option<String>,
    /// Who holds the lease: a worker name, `host:pid:suffix` in the daemon.
    pub leased_by: Option<String>,
    /// When the lease expires; an expired lease is free to take.
    pub leased_until: Option<DateTime<Utc>>,
    /// Bumped on every lease taken: fences writes made under an older lease.
    pub lease_epoch: i64,
    /// When accessible-resources was last read for this grant.
    pub last_revalidated_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// Whether the stored access token is still good `margin` from `now` (keep-warm: no
    /// exchange is needed to use it).
    pub fn access_fresh(&self, now: DateTime<Utc>, margin: chrono::TimeDelta) -> bool {
        self.access_expires_at
            .is_some_and(|expires| expires - margin > now)
    }

    /// The start of the reuse-leeway window of an interrupted exchange still open at `now`:
    /// its recovery must present the same token before `leeway` has passed.
    pub fn pending_recovery(
        &self,
        now: DateTime<Utc>,
        leeway: chrono::TimeDelta,
    ) -> Option<DateTime<Utc>> {
        self.refresh_started_at
            .filter(|first| now < *first + leeway)
    }

    /// Opens the refresh token.
    pub fn refresh_token(&self, keyring: &Keyring) -> Result<RefreshToken, OpenError> {
        let plain = keyring.open(&self.refresh_token, &context(self.id, "refresh_token"))?;
        Ok(RefreshToken::new(
            String::from_utf8_lossy(&plain).into_owned(),
        ))
    }

    /// Opens the access token, if one is stored.
    pub fn access_token(&self, keyring: &Keyring) -> Result<Option<AccessToken>, OpenError> {
        let Some(sealed) = &self.access_token else {
            return Ok(None);
        };
        let plain = keyring.open(sealed, &context(self.id, "access_token"))?;
        Ok(Some(AccessToken::new(
            String::from_utf8_lossy(&plain).into_owned(),
        )))
    }

    /// A short name for logs and messages: the label and the account.
    pub fn display_name(&self) -> String {
        match &self.account_id {
            Some(account) => format!("{} ({account})", self.label),
            None => self.label.clone(),
        }
    }
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Grant {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        let access_sealed: Option<Vec<u8>> = row.try_get("access_token_sealed")?;
        let access_key: Option<String> = row.try_get("access_token_key_id")?;
        Ok(Self {
            id: row.try_get("id")?,
            label: row.try_get("label")?,
            account_id: row.try_get("account_id")?,
            account_name: row.try_get("account_name")?,
            account_email: row.try_get("account_email")?,
            status: row.try_get("status")?,
            status_reason: row.try_get("status_reason")?,
            status_since: row.try_get("status_since")?,
            scopes: row.try_get("scopes")?,
            refresh_token: Sealed {
                key_id: row.try_get("refresh_token_key_id")?,
                bytes: row.try_get("refresh_token_sealed")?,
            },
            token_version: row.try_get("token_version")?,
            access_token: access_sealed
                .zip(access_key)
                .map(|(bytes, key_id)| Sealed { key_id, bytes }),
            access_expires_at: row.try_get("access_expires_at")?,
            refresh_rotated_at: row.try_get("refresh_rotated_at")?,
            refresh_idle_deadline: row.try_get("refresh_idle_deadline")?,
            family_started_at: row.try_get("family_started_at")?,
            family_deadline: row.try_get("family_deadline")?,
            refresh_started_at: row.try_get("refresh_started_at")?,
            next_refresh_at: row.try_get("next_refresh_at")?,
            last_refreshed_at: row.try_get("last_refreshed_at")?,
            failure_streak: row.try_get("failure_streak")?,
            last_error: row.try_get("last_error")?,
            leased_by: row.try_get("leased_by")?,
            leased_until: row.try_get("leased_until")?,
            lease_epoch: row.try_get("lease_epoch")?,
            last_revalidated_at: row.try_get("last_revalidated_at")?,
        })
    }
}

/// Locks and returns the id of the grant of `account_id`, if there is one.
pub async fn lock_grant_of_account(
    conn: &mut PgConnection,
    account_id: &AccountId,
) -> Result<Option<GrantId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM grants WHERE account_id = $1 FOR UPDATE")
        .bind(account_id)
        .fetch_optional(conn)
        .await
}

/// Inserts a grant with its first token family.
pub async fn insert_grant(
    conn: &mut PgConnection,
    label: &str,
    account: Option<&Account>,
    family: &FamilyRecord,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO grants (id, label, account_id, account_name, account_email, status, status_since,
            scopes, refresh_token_sealed, refresh_token_key_id, access_token_sealed, access_token_key_id,
            access_expires_at, refresh_rotated_at, refresh_idle_deadline, family_started_at, family_deadline,
            next_refresh_at, last_refreshed_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $13, $6, $6)",
    )
    .bind(family.grant_id)
    .bind(label)
    .bind(account.map(|a| a.account_id.as_str()))
    .bind(account.and_then(|a| a.name.as_deref()))
    .bind(account.and_then(|a| a.email.as_deref()))
    .bind(now)
    .bind(&family.scopes)
    .bind(&family.refresh_token.bytes)
    .bind(&family.refresh_token.key_id)
    .bind(&family.access_token.bytes)
    .bind(&family.access_token.key_id)
    .bind(family.access_expires_at)
    .bind(family.rotated_at)
    .bind(family.refresh_idle_deadline)
    .bind(family.family_started_at)
    .bind(family.family_deadline)
    .bind(family.next_refresh_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces a grant's token family after a new consent: new tokens and deadlines, status
/// back to active, failures forgotten, any lease released (the old family's exchange, if
/// one is in flight, will fail its fence).
pub async fn renew_grant(
    conn: &mut PgConnection,
    label: &str,
    account: &Account,
    family: &FamilyRecord,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE grants SET label = $2, account_name = COALESCE($3, account_name),
            account_email = COALESCE($4, account_email),
            status = 'active', status_reason = NULL, status_since = $5, scopes = $6,
            refresh_token_sealed = $7, refresh_token_key_id = $8,
            access_token_sealed = $9, access_token_key_id = $10, access_expires_at = $11,
            refresh_rotated_at = $12, refresh_idle_deadline = $13,
            family_started_at = $14, family_deadline = $15, next_refresh_at = $16,
            last_refreshed_at = $12, refresh_started_at = NULL, failure_streak = 0, last_error = NULL,
            token_version = token_version + 1, leased_by = NULL, leased_until = NULL,
            lease_epoch = lease_epoch + 1, updated_at = $5
         WHERE id = $1",
    )
    .bind(family.grant_id)
    .bind(label)
    .bind(account.name.as_deref())
    .bind(account.email.as_deref())
    .bind(now)
    .bind(&family.scopes)
    .bind(&family.refresh_token.bytes)
    .bind(&family.refresh_token.key_id)
    .bind(&family.access_token.bytes)
    .bind(&family.access_token.key_id)
    .bind(family.access_expires_at)
    .bind(family.rotated_at)
    .bind(family.refresh_idle_deadline)
    .bind(family.family_started_at)
    .bind(family.family_deadline)
    .bind(family.next_refresh_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records who an imported grant belongs to.
pub async fn set_account(
    conn: &mut PgConnection,
    grant_id: GrantId,
    account: &Account,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE grants SET account_id = $2, account_name = $3, account_email = $4, updated_at = $5
         WHERE id = $1",
    )
    .bind(grant_id)
    .bind(&account.account_id)
    .bind(account.name.as_deref())
    .bind(account.email.as_deref())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a grant (and, by cascade, its sites and alerts).
pub async fn delete_grant(conn: &mut PgConnection, grant_id: GrantId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM grants WHERE id = $1")
        .bind(grant_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One grant.
pub async fn get_grant(
    conn: &mut PgConnection,
    grant_id: GrantId,
) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM grants WHERE id = $1")
        .bind(grant_id)
        .fetch_optional(conn)
        .await
}

/// Every grant, by label.
pub async fn all_grants(conn: &mut PgConnection) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM grants ORDER BY label, account_id")
        .fetch_all(conn)
        .await
}

/// Up to `limit` grants, nearest cliff first: the earlier of the refresh idle deadline and
/// the family deadline (the admin page's list; a sort over the table, bounded by `limit`).
pub async fn grants_by_nearest_deadline(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM grants
         ORDER BY LEAST(refresh_idle_deadline, family_deadline), label, id
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How many grants there are.
pub async fn count_grants(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM grants")
        .fetch_one(conn)
        .await
}

/// A lease on one grant: the right to exchange its refresh token until `until`. Every write
/// made under it is fenced on (`id`, `holder`, `epoch`).
#[derive(Debug, Clone)]
pub struct Lease {
    /// The worker's name (`grants.leased_by`).
    pub holder: String,
    /// `grants.lease_epoch` as this lease set it.
    pub epoch: i64,
    /// When the lease expires.
    pub until: DateTime<Utc>,
}

impl Grant {
    /// The lease recorded on the row, if it is still valid at `now`.
    pub fn lease(&self, now: DateTime<Utc>) -> Option<Lease> {
        match (&self.leased_by, self.leased_until) {
            (Some(holder), Some(until)) if until > now => Some(Lease {
                holder: holder.clone(),
                epoch: self.lease_epoch,
                until,
            }),
            _ => None,
        }
    }
}

/// The claim of [`claim_due_grants`]: select due rows skipping locked ones, and lease them,
/// in one statement. Public so the benchmark can EXPLAIN the very statement that runs.
pub const CLAIM_DUE_GRANTS_SQL: &str = "WITH due AS (
            SELECT id FROM grants
            WHERE status IN ('active', 'degraded') AND next_refresh_at <= $1
              AND (leased_until IS NULL OR leased_until < $1)
            ORDER BY (refresh_started_at IS NULL), next_refresh_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED)
         UPDATE grants g SET leased_by = $3, leased_until = $1 + $4, lease_epoch = g.lease_epoch + 1
         FROM due WHERE g.id = due.id
         RETURNING g.*";

/// Claims up to `limit` grants whose refresh is due, in one statement: interrupted exchanges
/// first, then the most overdue. Rows leased by others are skipped, not waited on.
pub async fn claim_due_grants(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    holder: &str,
    lease_ttl: chrono::TimeDelta,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(CLAIM_DUE_GRANTS_SQL)
        .bind(now)
        .bind(limit)
        .bind(holder)
        .bind(lease_ttl)
        .fetch_all(conn)
        .await
}

/// Leases one grant if nobody else holds it; `None` when it is leased elsewhere.
pub async fn lease_grant(
    conn: &mut PgConnection,
    grant_id: GrantId,
    now: DateTime<Utc>,
    holder: &str,
    lease_ttl: chrono::TimeDelta,
) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE grants g SET leased_by = $3, leased_until = $2 + $4, lease_epoch = g.lease_epoch + 1
         WHERE g.id = $1 AND (g.leased_until IS NULL OR g.leased_until < $2)
         RETURNING g.*",
    )
    .bind(grant_id)
    .bind(now)
    .bind(holder)
    .bind(lease_ttl)
    .fetch_optional(conn)
    .await
}

/// Records that an exchange is about to start, under the lease, presenting the token of
/// `presented_version`. Returns false when the lease was lost or a newer token was stored
/// since the grant was read (then the exchange must not happen: it would present a
/// superseded token).
///
/// `retry_at` becomes the grant's next due time if nothing else is written: when this
/// exchange's result is lost, the sweep retries right after the lease expires, inside the
/// reuse leeway.
pub async fn mark_refresh_started(
    conn: &mut PgConnection,
    grant_id: GrantId,
    lease: &Lease,
    presented_version: i64,
    presented: &RefreshToken,
    now: DateTime<Utc>,
    retry_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    // The token is recorded as presented in the same statement (a recovery presents it
    // again on purpose, inside the leeway: a repeat is no conflict).
    let marked: i64 = sqlx::query_scalar(
        "WITH marked AS (
            UPDATE grants SET refresh_started_at = COALESCE(refresh_started_at, $4),
                next_refresh_at = LEAST(next_refresh_at, $5)
            WHERE id = $1 AND leased_by = $2 AND lease_epoch = $3 AND token_version = $6
            RETURNING id),
         presented AS (
            INSERT INTO presented_refresh_tokens (digest, grant_id, presented_at)
            SELECT $7, id, $4 FROM marked
            ON CONFLICT (digest) DO NOTHING)
         SELECT count(*) FROM marked",
    )
    .bind(grant_id)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(now)
    .bind(retry_at)
    .bind(presented_version)
    .bind(super::presented_tokens::token_digest(presented))
    .fetch_one(conn)
    .await?;
    Ok(marked == 1)
}

/// The result of a successful exchange, sealed.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// `None` when Atlassian did not rotate: the stored refresh token stays.
    pub refresh_token: Option<Sealed>,
    /// The new access token, sealed for the grant.
    pub access_token: Sealed,
    /// When the new access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// The answer's scopes; empty keeps the stored ones.
    pub scopes: Vec<String>,
    /// When the exchange completed; becomes `refresh_rotated_at` only with a new refresh token.
    pub rotated_at: DateTime<Utc>,
    /// The refresh token's inactivity deadline (unchanged without a new refresh token).
    pub refresh_idle_deadline: DateTime<Utc>,
    /// When the sweep next claims the grant.
    pub next_refresh_at: DateTime<Utc>,
}

/// Persists a rotation in one conditional UPDATE, fenced on the token the exchange presented
/// (`token_version`), and releases the lease. Not fenced on the lease: a persist retried
/// after a database outage must still land, because the rotated token exists nowhere else
/// and is newer than anything stored; a worker that took the grant meanwhile is stopped by
/// the version fence on its own writes. Returns the updated grant, or `None` when a newer
/// token was stored first (the result must be discarded unused).
pub async fn persist_rotation(
    conn: &mut PgConnection,
    grant_id: GrantId,
    presented_version: i64,
    rotation: &Rotation,
) -> Result<Option<Grant>, sqlx::Error> {
    let (refresh_bytes, refresh_key) = match &rotation.refresh_token {
        Some(sealed) => (Some(&sealed.bytes), Some(&sealed.key_id)),
        None => (None, None),
    };
    sqlx::query_as(
        "UPDATE grants g SET
            refresh_token_sealed = COALESCE($3, g.refresh_token_sealed),
            refresh_token_key_id = COALESCE($4, g.refresh_token_key_id),
            token_version = g.token_version + 1,
            access_token_sealed = $5, access_token_key_id = $6, access_expires_at = $7,
            scopes = CASE WHEN cardinality($8::text[]) > 0 THEN $8 ELSE g.scopes END,
            -- Without a new refresh token the old one stays, and so does its rotation time.
            refresh_rotated_at = CASE WHEN $3::bytea IS NULL THEN g.refresh_rotated_at ELSE $9 END,
            refresh_idle_deadline = $10, next_refresh_at = $11,
            last_refreshed_at = $9, refresh_started_at = NULL, failure_streak = 0, last_error = NULL,
            status = CASE WHEN g.status = 'degraded' THEN 'active' ELSE g.status END,
            status_reason = CASE WHEN g.status = 'degraded' THEN NULL ELSE g.status_reason END,
            status_since = CASE WHEN g.status = 'degraded' THEN $9 ELSE g.status_since END,
            leased_by = NULL, leased_until = NULL, updated_at = $9
         WHERE g.id = $1 AND g.token_version = $2
         RETURNING g.*",
    )
    .bind(grant_id)
    .bind(presented_version)
    .bind(refresh_bytes)
    .bind(refresh_key)
    .bind(&rotation.access_token.bytes)
    .bind(&rotation.access_token.key_id)
    .bind(rotation.access_expires_at)
    .bind(&rotation.scopes)
    .bind(rotation.rotated_at)
    .bind(rotation.refresh_idle_deadline)
    .bind(rotation.next_refresh_at)
    .fetch_optional(conn)
    .await
}

/// Records a failed exchange that may be retried. `started` becomes `refresh_started_at`:
/// the start of the reuse-leeway window of an exchange that may have happened at Atlassian
/// (a timeout or reset), inside which the same token must be retried; `None` when no such
/// exchange is pending. Returns the new failure streak, or `None` when the lease was lost.
pub async fn record_transient_failure(
    conn: &mut PgConnection,
    grant_id: GrantId,
    lease: &Lease,
    error: &str,
    next_refresh_at: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE grants SET failure_streak = failure_streak + 1, last_error = $4,
            next_refresh_at = $5,
            refresh_started_at = $6,
            leased_by = NULL, leased_until = NULL, updated_at = $7
         WHERE id = $1 AND leased_by = $2 AND lease_epoch = $3
         RETURNING failure_streak",
    )
    .bind(grant_id)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(error)
    .bind(next_refresh_at)
    .bind(started)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// Puts off a leased grant's exchange until `until` without counting a failure (the token
/// endpoint is in trouble, or the app's credentials were refused: nothing about this grant),
/// and releases the lease. A pending recovery keeps its `refresh_started_at`. Returns false
/// when the lease was lost.
pub async fn defer_exchange(
    conn: &mut PgConnection,
    grant_id: GrantId,
    lease: &Lease,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE grants SET next_refresh_at = $4, leased_by = NULL, leased_until = NULL,
            updated_at = $5
         WHERE id = $1 AND leased_by = $2 AND lease_epoch = $3",
    )
    .bind(grant_id)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(until)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Moves a grant to `status` with a reason, if it is not there already. Returns whether the
/// status changed (the caller raises alerts on transitions only).
pub async fn set_status(
    conn: &mut PgConnection,
    grant_id: GrantId,
    status: GrantStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE grants SET status = $2, status_reason = $3, status_since = $4, updated_at = $4,
            refresh_started_at = CASE WHEN $2 = 'needs_reauth' THEN NULL ELSE refresh_started_at END
         WHERE id = $1 AND status <> $2 AND status <> 'disabled'
           -- A transient failure never hides a terminal state.
           AND NOT (status = 'needs_reauth' AND $2 = 'degraded')",
    )
    .bind(grant_id)
    .bind(status.as_str())
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(changed.rows_affected() == 1)
}

/// Marks a grant whose family deadline has passed as needing a new consent, in one
/// conditional UPDATE: a grant re-consented since it was read (a new family, a later
/// deadline) is left alone. Returns whether the grant was marked.
pub async fn expire_family(
    conn: &mut PgConnection,
    grant_id: GrantId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE grants SET status = 'needs_reauth', status_reason = $2, status_since = $3,
            updated_at = $3, refresh_started_at = NULL
         WHERE id = $1 AND family_deadline <= $3 AND status IN ('active', 'degraded')",
    )
    .bind(grant_id)
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(changed.rows_affected() == 1)
}

/// Grants whose refresh token will reach Atlassian's inactivity expiry within `warning`
/// (keep-alive has been failing) and that have no open `inactivity_expiring` alert.
pub async fn grants_nearing_inactivity_deadline(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    warning: chrono::TimeDelta,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.* FROM grants g
         WHERE g.status IN ('active', 'degraded') AND g.refresh_idle_deadline <= $1 + $2
           -- Only when keep-alive is actually failing or overdue, not a healthy schedule.
           AND (g.failure_streak > 0 OR g.next_refresh_at <= $1)
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.grant_id = g.id
                           AND a.kind = 'inactivity_expiring' AND a.resolved_at IS NULL)",
    )
    .bind(now)
    .bind(warning)
    .fetch_all(conn)
    .await
}

/// Grants with an open `inactivity_expiring` alert whose idle deadline has moved out of the
/// warning window again (a rotation finally landed).
pub async fn grants_past_inactivity_risk(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    warning: chrono::TimeDelta,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.* FROM grants g
         WHERE g.refresh_idle_deadline > $1 + $2
           AND EXISTS (SELECT 1 FROM alerts a WHERE a.grant_id = g.id
                       AND a.kind = 'inactivity_expiring' AND a.resolved_at IS NULL)",
    )
    .bind(now)
    .bind(warning)
    .fetch_all(conn)
    .await
}

/// Releases a lease, clearing the exchange marker. Returns false when the lease was no
/// longer held (then nothing else may be written under it).
pub async fn release_lease_fenced(
    conn: &mut PgConnection,
    grant_id: GrantId,
    lease: &Lease,
) -> Result<bool, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE grants SET leased_by = NULL, leased_until = NULL, refresh_started_at = NULL
         WHERE id = $1 AND leased_by = $2 AND lease_epoch = $3",
    )
    .bind(grant_id)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .execute(conn)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// Grants whose family deadline is within `warning` of `now` and that have no open
/// `family_expiring` alert.
pub async fn grants_nearing_family_deadline(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    warning: chrono::TimeDelta,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.* FROM grants g
         WHERE g.status IN ('active', 'degraded') AND g.family_deadline <= $1 + $2
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.grant_id = g.id
                           AND a.kind = 'family_expiring' AND a.resolved_at IS NULL)",
    )
    .bind(now)
    .bind(warning)
    .fetch_all(conn)
    .await
}

/// Grants whose family deadline has passed while they still look alive.
pub async fn grants_past_family_deadline(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.* FROM grants g WHERE g.status IN ('active', 'degraded') AND g.family_deadline <= $1",
    )
    .bind(now)
    .fetch_all(conn)
    .await
}

/// The statement [`claim_revalidations`] runs (benchmarks EXPLAIN it): `$1` the tick,
/// `$2` the batch size. It walks `grants_revalidation_order`, so a claim reads about `$2`
/// rows whatever the number of grants.
pub const CLAIM_REVALIDATIONS_SQL: &str = "WITH due AS (
        SELECT id FROM grants
        WHERE status IN ('active', 'degraded')
          AND (revalidated_for IS NULL OR revalidated_for < $1)
        ORDER BY revalidated_for NULLS FIRST
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
     UPDATE grants g SET revalidated_for = $1
     FROM due WHERE g.id = due.id
     RETURNING g.*";

/// Claims up to `limit` grants not yet revalidated for the tick at `tick`.
pub async fn claim_revalidations(
    conn: &mut PgConnection,
    tick: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as(CLAIM_REVALIDATIONS_SQL)
        .bind(tick)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Records a completed revalidation.
pub async fn mark_revalidated(
    conn: &mut PgConnection,
    grant_id: GrantId,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE grants SET last_revalidated_at = $2 WHERE id = $1")
        .bind(grant_id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks a grant's row for the rest of the transaction and returns when its current token
/// family began (`None` when the grant is gone): a renewal changes it.
pub async fn lock_family_start(
    conn: &mut PgConnection,
    grant_id: GrantId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT family_started_at FROM grants WHERE id = $1 FOR UPDATE")
        .bind(grant_id)
        .fetch_optional(conn)
        .await
}

/// The ids of the grants labelled `label` (labels are not unique).
pub async fn ids_labelled(
    conn: &mut PgConnection,
    label: &str,
) -> Result<Vec<GrantId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM grants WHERE label = $1")
        .bind(label)
        .fetch_all(conn)
        .await
}

/// Grants by status, from the counts a trigger keeps exact (no scan of `grants`).
pub async fn status_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, grants FROM grant_status_counts ORDER BY status")
        .fetch_all(conn)
        .await
}

/// The nearest family deadline of a grant still kept alive (one index probe).
pub async fn nearest_family_deadline(
    conn: &mut PgConnection,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(family_deadline) FROM grants WHERE status IN ('active', 'degraded')",
    )
    .fetch_one(conn)
    .await
}
