//! The `alerts` outbox. A condition opens at most one alert while it lasts (a partial unique
//! index on `dedupe_key`); clearing the condition resolves it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::domain::{AccountId, GrantId, SiteKey};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The grant needs a new consent: its family is gone or past its deadline.
    NeedsReauth,
    /// The family deadline is within `tokens.reauth_warning`; the alert carries the deadline.
    FamilyExpiring,
    /// accessible-resources no longer lists a site the grant reached.
    SiteRevoked,
    /// A site lacks a required scope, or the gateway answered "scope does not match".
    ScopesMissing,
    /// `tokens.degraded_after` refresh failures in a row.
    Degraded,
    /// accessible-resources lists no site for the grant (a site admin may have removed the
    /// user's product access for a while). The grant is kept alive and re-checked.
    NoSites,
    /// The refresh token nears Atlassian's inactivity expiry because keep-alive keeps failing;
    /// the alert carries the deadline.
    InactivityExpiring,
    /// App-level: the token endpoint rejected the app's client credentials; exchanges pause.
    AppCredentialsRejected,
    /// App-level: many grants turned terminal within minutes; further marks are held.
    ReauthBreaker,
    /// A site's sync has not succeeded for `alerts.sync_stale_after`.
    SyncStale,
    /// A delivery sink has not acknowledged a message for `alerts.sink_failing_after`.
    DeliveryFailing,
    /// A sync would remove more than `sync.max_delete_fraction` of a site's rows; held.
    DeletesHeld,
    /// Jira refused a site's search query (e.g. its `jira.jql` names a missing project).
    QueryRejected,
}

impl AlertKind {
    /// Every kind (the `alerts_open` gauge shows each, at zero when none is open).
    pub const ALL: [AlertKind; 13] = [
        Self::NeedsReauth,
        Self::FamilyExpiring,
        Self::SiteRevoked,
        Self::ScopesMissing,
        Self::Degraded,
        Self::NoSites,
        Self::InactivityExpiring,
        Self::AppCredentialsRejected,
        Self::ReauthBreaker,
        Self::SyncStale,
        Self::DeliveryFailing,
        Self::DeletesHeld,
        Self::QueryRejected,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsReauth => "needs_reauth",
            Self::FamilyExpiring => "family_expiring",
            Self::SiteRevoked => "site_revoked",
            Self::ScopesMissing => "scopes_missing",
            Self::Degraded => "degraded",
            Self::NoSites => "no_sites",
            Self::InactivityExpiring => "inactivity_expiring",
            Self::AppCredentialsRejected => "app_credentials_rejected",
            Self::ReauthBreaker => "reauth_breaker",
            Self::SyncStale => "sync_stale",
            Self::DeliveryFailing => "delivery_failing",
            Self::DeletesHeld => "deletes_held",
            Self::QueryRejected => "query_rejected",
        }
    }
}

/// An alert to open.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// Which condition.
    pub kind: AlertKind,
    /// The grant concerned; its alerts are deleted with it.
    pub grant_id: GrantId,
    /// Copied from the grant, so the row reads without a join; `None` for an unidentified import.
    pub account_id: Option<AccountId>,
    /// The grant's label, copied like `account_id`.
    pub label: String,
    /// For site alerts: which site.
    pub site: Option<SiteKey>,
    /// What broke, in words an operator can act on.
    pub reason: String,
    /// When the condition began, which may be before the alert is opened.
    pub since: DateTime<Utc>,
    /// When the condition becomes (or became) fatal, if it has a deadline.
    pub deadline: Option<DateTime<Utc>>,
}

impl NewAlert {
    /// The key that keeps one open alert per condition.
    pub fn dedupe_key(&self) -> String {
        dedupe_key(self.kind, self.grant_id, self.site.as_ref())
    }
}

/// The dedupe key of a condition.
pub fn dedupe_key(kind: AlertKind, grant_id: GrantId, site: Option<&SiteKey>) -> String {
    match site {
        Some(SiteKey { cloud_id, product }) => {
            format!("{}:{grant_id}:{cloud_id}:{product}", kind.as_str())
        }
        None => format!("{}:{grant_id}", kind.as_str()),
    }
}

/// Opens `alert` unless the same condition already has an open alert. Returns whether a
/// row was written.
pub async fn open_alert(
    conn: &mut PgConnection,
    alert: &NewAlert,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (cloud_id, product) = match &alert.site {
        Some(site) => (Some(&site.cloud_id), Some(site.product)),
        None => (None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO alerts (kind, dedupe_key, grant_id, account_id, label, cloud_id, product, reason,
                             since, deadline, opened_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (dedupe_key) WHERE resolved_at IS NULL DO NOTHING",
    )
    .bind(alert.kind.as_str())
    .bind(alert.dedupe_key())
    .bind(alert.grant_id)
    .bind(&alert.account_id)
    .bind(&alert.label)
    .bind(cloud_id)
    .bind(product)
    .bind(&alert.reason)
    .bind(alert.since)
    .bind(alert.deadline)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Resolves the open alert of one condition. Returns whether one was open.
pub async fn resolve_alert(
    conn: &mut PgConnection,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let resolved = sqlx::query(
        "UPDATE alerts SET resolved_at = $2 WHERE dedupe_key = $1 AND resolved_at IS NULL",
    )
    .bind(key)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(resolved.rows_affected() > 0)
}

/// An alert about no single grant: the app's credentials, a site's sync, a delivery sink.
#[derive(Debug, Clone, Copy)]
pub struct SystemAlert<'a> {
    /// Which condition.
    pub kind: AlertKind,
    /// What it is about within its kind (a site and stream, a sink); empty for app-wide
    /// conditions. With `kind` it makes the dedupe key.
    pub subject: &'a str,
    /// Shown where a grant label would be, e.g. `(app)` or a site's name.
    pub label: &'a str,
    /// For site conditions: the site.
    pub site: Option<&'a SiteKey>,
    /// What broke, in words an operator can act on.
    pub reason: &'a str,
    /// When the condition began.
    pub since: DateTime<Utc>,
}

fn system_key(kind: AlertKind, subject: &str) -> String {
    if subject.is_empty() {
        format!("app:{}", kind.as_str())
    } else {
        format!("app:{}:{subject}", kind.as_str())
    }
}

/// Opens `alert` unless its condition is already open. Returns whether a row was written.
pub async fn open_system_alert(
    conn: &mut PgConnection,
    alert: &SystemAlert<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO alerts (kind, dedupe_key, label, cloud_id, product, reason, since, opened_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (dedupe_key) WHERE resolved_at IS NULL DO NOTHING",
    )
    .bind(alert.kind.as_str())
    .bind(system_key(alert.kind, alert.subject))
    .bind(alert.label)
    .bind(alert.site.map(|s| &s.cloud_id))
    .bind(alert.site.map(|s| s.product))
    .bind(alert.reason)
    .bind(alert.since)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Resolves the system alert of `kind` about `subject`, if open.
pub async fn resolve_system_alert(
    conn: &mut PgConnection,
    kind: AlertKind,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    resolve_alert(conn, &system_key(kind, subject), now).await
}

/// Opens an app-wide alert of `kind` (one per kind while it lasts). Returns whether a row
/// was written.
pub async fn open_app_alert(
    conn: &mut PgConnection,
    kind: AlertKind,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let alert = SystemAlert {
        kind,
        subject: "",
        label: "(app)",
        site: None,
        reason,
        since: now,
    };
    open_system_alert(conn, &alert, now).await
}

/// Resolves the app-wide alert of `kind`, if open.
pub async fn resolve_app_alert(
    conn: &mut PgConnection,
    kind: AlertKind,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    resolve_system_alert(conn, kind, "", now).await
}

/// The open system alerts of `kind`, as their subjects.
pub async fn open_system_subjects(
    conn: &mut PgConnection,
    kind: AlertKind,
) -> Result<Vec<String>, sqlx::Error> {
    let prefix = format!("app:{}:", kind.as_str());
    sqlx::query_scalar(
        "SELECT substr(dedupe_key, length($2) + 1) FROM alerts
         WHERE kind = $1 AND resolved_at IS NULL AND starts_with(dedupe_key, $2)",
    )
    .bind(kind.as_str())
    .bind(prefix)
    .fetch_all(conn)
    .await
}

/// Open alerts by kind (the `atlassync_alerts_open` gauge).
pub async fn open_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT kind, count(*) FROM alerts WHERE resolved_at IS NULL GROUP BY kind")
        .fetch_all(conn)
        .await
}

/// Takes the transaction-scoped lock that serialises re-consent marks cluster-wide (they
/// are rare; the breaker counts them).
pub async fn lock_reauth_marks(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('atlassync.reauth_marks'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// How many `needs_reauth` alerts were opened since `since` (the breaker's count).
pub async fn reauth_marks_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    // Family-deadline expiries carry a deadline and are expected in cohorts: not counted.
    sqlx::query_scalar(
        "SELECT count(*) FROM alerts
         WHERE kind = 'needs_reauth' AND deadline IS NULL AND opened_at > $1",
    )
    .bind(since)
    .fetch_one(conn)
    .await
}

/// Resolves every open alert of a grant of the given kinds (a new consent clears them).
pub async fn resolve_grant_alerts(
    conn: &mut PgConnection,
    grant_id: GrantId,
    kinds: &[AlertKind],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let resolved = sqlx::query(
        "UPDATE alerts SET resolved_at = $3
         WHERE grant_id = $1 AND kind = ANY($2) AND resolved_at IS NULL",
    )
    .bind(grant_id)
    .bind(&kinds)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(resolved.rows_affected())
}

/// An alert row as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct StoredAlert {
    /// Increases in the order alerts are opened.
    pub id: i64,
    /// An [`AlertKind`] name, e.g. `needs_reauth`.
    pub kind: String,
    /// The grant concerned; `None` for an app-level alert.
    pub grant_id: Option<GrantId>,
    /// The grant's account when the alert was opened; `None` for an unidentified import.
    pub account_id: Option<AccountId>,
    /// The grant's label when the alert was opened.
    pub label: String,
    /// For site alerts: the site's cloud id.
    pub cloud_id: Option<String>,
    /// For site alerts: `jira` or `confluence`.
    pub product: Option<String>,
    /// What broke, in words an operator can act on.
    pub reason: String,
    /// When the condition began.
    pub since: DateTime<Utc>,
    /// When the condition becomes (or became) fatal, if it has a deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Links minted before they stopped being stored; new rows hold none (links are minted
    /// when a message is sent, see `App::reconsent_link`).
    pub reconsent_url: Option<String>,
    /// When the row was written.
    pub opened_at: DateTime<Utc>,
    /// When the condition cleared; `None` while open.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Open alerts, oldest first.
pub async fn open_alerts(conn: &mut PgConnection) -> Result<Vec<StoredAlert>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, grant_id, account_id, label, cloud_id, product, reason, since, deadline,
                reconsent_url, opened_at, resolved_at
         FROM alerts WHERE resolved_at IS NULL ORDER BY opened_at, id",
    )
    .fetch_all(conn)
    .await
}

/// Up to `limit` open alerts, newest first (the admin page's list).
pub async fn recent_open_alerts(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<StoredAlert>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, grant_id, account_id, label, cloud_id, product, reason, since, deadline,
                reconsent_url, opened_at, resolved_at
         FROM alerts WHERE resolved_at IS NULL ORDER BY opened_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How many alerts are open.
pub async fn count_open_alerts(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM alerts WHERE resolved_at IS NULL")
        .fetch_one(conn)
        .await
}

/// Deletes up to `limit` alerts resolved before `before`. Returns how many went.
pub async fn prune_resolved(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM alerts WHERE id IN (
            SELECT id FROM alerts WHERE resolved_at < $1 ORDER BY resolved_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Alerts raised after the one numbered `after`, oldest first, as (id, kind, label, reason).
pub async fn alerts_after(
    conn: &mut PgConnection,
    after: i64,
) -> Result<Vec<(i64, String, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, kind, label, reason FROM alerts WHERE id > $1 ORDER BY id")
        .bind(after)
        .fetch_all(conn)
        .await
}
