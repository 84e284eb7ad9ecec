//! Raising and clearing alerts. Each alert row is complete when written: who, which grant,
//! what broke, since when, and the deadline. Callers pass the transaction that changes the
//! grant, so the alert, its outbox message and the change commit together.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::app::App;
use crate::domain::{GrantStatus, SiteKey};
use crate::store::alerts::{self, AlertKind, NewAlert};
use crate::store::grants::{self, Grant};

/// A condition worth an alert.
#[derive(Debug, Clone, Copy)]
pub struct Condition<'a> {
    /// Which alert; with the grant and `site` it makes the dedupe key (one open alert each).
    pub kind: AlertKind,
    /// For site conditions: which site.
    pub site: Option<&'a SiteKey>,
    /// What broke, in words an operator can act on.
    pub reason: &'a str,
    /// When the condition began.
    pub since: DateTime<Utc>,
    /// When it becomes (or became) fatal, if it has a deadline.
    pub deadline: Option<DateTime<Utc>>,
}

impl<'a> Condition<'a> {
    /// A grant-level condition that began at `since`, with no deadline.
    pub fn new(kind: AlertKind, reason: &'a str, since: DateTime<Utc>) -> Self {
        Self {
            kind,
            site: None,
            reason,
            since,
            deadline: None,
        }
    }

    /// The same condition, about one site.
    pub fn at_site(self, site: &'a SiteKey) -> Self {
        Self {
            site: Some(site),
            ..self
        }
    }

    /// The same condition, fatal at `deadline`.
    pub fn due(self, deadline: DateTime<Utc>) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }
}

/// Opens an alert for `grant` unless one is already open for the same condition. Returns
/// whether a row was written.
pub async fn raise(
    conn: &mut PgConnection,
    app: &App,
    grant: &Grant,
    condition: Condition<'_>,
) -> Result<bool, sqlx::Error> {
    let Condition {
        kind,
        site,
        reason,
        since,
        deadline,
    } = condition;
    let alert = NewAlert {
        kind,
        grant_id: grant.id,
        account_id: grant.account_id.clone(),
        label: grant.label.clone(),
        site: site.cloned(),
        reason: reason.to_owned(),
        since,
        deadline,
    };
    let opened = alerts::open_alert(conn, &alert, app.clock.now()).await?;
    if opened {
        // The deliverer tells ops (log, webhook, JSM), with a freshly minted link.
        tracing::debug!(
            alert.kind = kind.as_str(),
            grant.id = %grant.id,
            site.cloud_id = site.map(|s| s.cloud_id.as_str()),
            reason,
            "alert raised"
        );
    }
    Ok(opened)
}

/// Moves `grant` to `status` for `condition.reason` and, when that is a change, raises the
/// condition's alert, in the caller's transaction. Returns whether the status changed.
pub async fn transition(
    conn: &mut PgConnection,
    app: &App,
    grant: &Grant,
    status: GrantStatus,
    condition: Condition<'_>,
) -> Result<bool, sqlx::Error> {
    let changed =
        grants::set_status(conn, grant.id, status, condition.reason, app.clock.now()).await?;
    if changed {
        raise(conn, app, grant, condition).await?;
    }
    Ok(changed)
}

/// Resolves the open alert of a condition, if any.
pub async fn clear(
    conn: &mut PgConnection,
    app: &App,
    grant: &Grant,
    kind: AlertKind,
    site: Option<&SiteKey>,
) -> Result<bool, sqlx::Error> {
    let key = alerts::dedupe_key(kind, grant.id, site);
    let resolved = alerts::resolve_alert(conn, &key, app.clock.now()).await?;
    if resolved {
        tracing::info!(alert.kind = kind.as_str(), grant.id = %grant.id, "alert resolved");
    }
    Ok(resolved)
}
