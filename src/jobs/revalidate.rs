//! Revalidation: ask accessible-resources which sites and scopes each grant still has, and
//! bring the `sites` table, the grant's status and the alerts in line with the answer.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgConnection;

use crate::alerts;
use crate::app::App;
use crate::atlassian::ApiError;
use crate::domain::GrantStatus;
use crate::domain::Site;
use crate::lifecycle::{Refresher, TokenUnavailable};
use crate::store::alerts::AlertKind;
use crate::store::grants::{self, Grant};
use crate::store::{sites, synced_sites};

const BATCH: i64 = 32;
const CONCURRENCY: usize = 4;

/// What one revalidation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevalidationReport {
    /// Grants whose accessible-resources answer was applied.
    pub checked: usize,
    /// Grants not checked this time: no token, an API error, or renewed while being read.
    pub skipped: usize,
    /// Sites newly marked revoked.
    pub sites_revoked: usize,
    /// Active sites lacking a required scope, or carrying a scope error from a sync.
    pub sites_with_missing_scopes: usize,
    /// Grants left without any active site (kept alive; `no_sites` raised).
    pub lost_all_sites: usize,
}

/// Revalidates every grant not yet done for the schedule tick `tick` (the same instant on
/// every replica, so each grant is checked once per tick cluster-wide).
pub async fn run_once(
    app: &App,
    refresher: &Refresher,
    tick: DateTime<Utc>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<RevalidationReport, sqlx::Error> {
    let mut report = RevalidationReport::default();
    while !stop.is_cancelled() {
        let claimed = {
            let mut conn = app.pool.acquire().await?;
            grants::claim_revalidations(&mut conn, tick, BATCH).await?
        };
        if claimed.is_empty() {
            break;
        }
        let count = claimed.len();
        let results: Vec<_> = futures_util::stream::iter(claimed)
            .map(|grant| revalidate_grant(app, refresher, grant))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            match result? {
                Some(changes) => {
                    report.checked += 1;
                    report.sites_revoked += changes.revoked;
                    report.sites_with_missing_scopes += changes.missing_scopes;
                    report.lost_all_sites += usize::from(changes.lost_all_sites);
                }
                None => report.skipped += 1,
            }
        }
        if (count as i64) < BATCH {
            break;
        }
    }
    if report != RevalidationReport::default() {
        tracing::info!(?report, "revalidation");
    }
    Ok(report)
}

/// What applying a fresh site list changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AppliedSites {
    /// Sites newly marked revoked.
    pub revoked: usize,
    /// Active sites lacking a required scope, or carrying a scope error from a sync.
    pub missing_scopes: usize,
    /// True when no site is active any more: `no_sites` is raised; the grant stays alive.
    pub lost_all_sites: bool,
}

/// Revalidates one grant. `None` when the check could not be made this time (the reason is
/// logged; token problems are the refresher's to record).
pub async fn revalidate_grant(
    app: &App,
    refresher: &Refresher,
    grant: Grant,
) -> Result<Option<AppliedSites>, sqlx::Error> {
    // An import whose `/me` failed left a grant without an account: identify it first.
    let grant = if grant.account_id.is_none() {
        match identify(app, refresher, grant).await? {
            Some(grant) => grant,
            None => return Ok(None),
        }
    } else {
        grant
    };
    if is_idle(app, &grant).await? {
        return Ok(None);
    }
    let sites = match fetch_sites(app, refresher, &grant).await {
        Ok(sites) => sites,
        Err(FetchError::Token(TokenUnavailable::Store(e))) => return Err(e),
        Err(e) => {
            tracing::warn!(grant.id = %grant.id, grant.label = %grant.label, error = %e, "revalidation skipped");
            return Ok(None);
        }
    };
    let mut tx = app.pool.begin().await?;
    // A consent that landed while accessible-resources was being read carries newer truth:
    // this answer, read with the old family's token, must not overwrite it.
    let family_now = grants::lock_family_start(&mut tx, grant.id).await?;
    if family_now != Some(grant.family_started_at) {
        tracing::info!(grant.id = %grant.id, "revalidation result discarded: the grant was renewed meanwhile");
        return Ok(None);
    }
    let applied = apply_sites(&mut tx, app, &grant, &sites).await?;
    grants::mark_revalidated(&mut tx, grant.id, app.clock.now()).await?;
    tx.commit().await?;
    Ok(Some(applied))
}

/// Ties a grant without an account to the user `/me` names. When that account already has a
/// grant, one family is kept: the existing grant's while it is healthy (the unidentified
/// duplicate is deleted), else the unidentified one's, which takes the account over.
/// Returns the grant to revalidate, or `None` when there is nothing more to do now.
async fn identify(
    app: &App,
    refresher: &Refresher,
    grant: Grant,
) -> Result<Option<Grant>, sqlx::Error> {
    let profile = match refresher.access_token(grant.id).await {
        Ok(token) => app.api.me(&token).await.map_err(FetchError::Api),
        Err(TokenUnavailable::Store(e)) => return Err(e),
        Err(e) => Err(FetchError::Token(e)),
    };
    let profile = match profile {
        Ok(profile) => profile,
        Err(e) => {
            tracing::warn!(grant.id = %grant.id, grant.label = %grant.label, error = %e, "identifying an imported grant failed; retried at the next revalidation");
            return Ok(None);
        }
    };
    let account = grants::Account {
        account_id: profile.account_id,
        name: profile.name,
        email: profile.email,
    };
    let now = app.clock.now();
    let mut tx = app.pool.begin().await?;
    let existing = grants::lock_grant_of_account(&mut tx, &account.account_id).await?;
    if let Some(existing) = existing.filter(|id| *id != grant.id) {
        let existing = grants::get_grant(&mut tx, existing)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        // A healthy grant, or one an operator disabled, is kept; the duplicate goes.
        if existing.status != GrantStatus::NeedsReauth {
            grants::delete_grant(&mut tx, grant.id).await?;
            tx.commit().await?;
            tracing::info!(grant.id = %grant.id, account.id = %account.account_id, kept = %existing.id, "an unidentified import duplicated a healthy grant of the same account; the duplicate is removed");
            return Ok(None);
        }
        grants::delete_grant(&mut tx, existing.id).await?;
        tracing::info!(grant.id = %grant.id, account.id = %account.account_id, replaced = %existing.id, "an unidentified import replaces the account's grant that needed a new consent");
    }
    grants::set_account(&mut tx, grant.id, &account, now).await?;
    let identified = grants::get_grant(&mut tx, grant.id).await?;
    tx.commit().await?;
    tracing::info!(grant.id = %grant.id, account.id = %account.account_id, "imported grant identified");
    Ok(identified)
}

/// Whether checking `grant` now would cost a token exchange for nothing: it serves no
/// site, its access token has expired, and it was checked within
/// `tokens.idle_revalidate_after`. Idle grants are then checked at that slower cadence, or
/// for free right after a keep-alive rotation left a fresh access token; so revalidation
/// costs an idle grant about one exchange a week instead of four a day.
async fn is_idle(app: &App, grant: &Grant) -> Result<bool, sqlx::Error> {
    let now = app.clock.now();
    let policy = &app.config.tokens;
    let fresh = grant.access_fresh(now, policy.refresh_margin);
    let checked_recently = grant
        .last_revalidated_at
        .is_some_and(|at| at + policy.idle_revalidate_after > now);
    if fresh || !checked_recently {
        return Ok(false);
    }
    let mut conn = app.pool.acquire().await?;
    Ok(!synced_sites::serves_a_site(&mut conn, grant.id).await?)
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Token(#[from] TokenUnavailable),
    #[error("accessible-resources: {0}")]
    Api(#[from] ApiError),
}

/// accessible-resources with the grant's token; on a 401, refresh once and retry once.
async fn fetch_sites(
    app: &App,
    refresher: &Refresher,
    grant: &Grant,
) -> Result<Vec<Site>, FetchError> {
    let token = refresher.access_token(grant.id).await?;
    match app.api.accessible_sites(&token).await {
        Err(ApiError::Unauthorized(_)) => {
            let token = refresher
                .access_token_after_unauthorized(grant.id, &token)
                .await?;
            Ok(app.api.accessible_sites(&token).await?)
        }
        other => Ok(other?),
    }
}

/// Brings stored sites, status and alerts in line with `sites` (the truth from
/// accessible-resources), in the caller's transaction. Alerts fire on transitions only.
pub async fn apply_sites(
    conn: &mut PgConnection,
    app: &App,
    grant: &Grant,
    sites: &[Site],
) -> Result<AppliedSites, sqlx::Error> {
    let now = app.clock.now();
    let requested = &app.config.atlassian.scopes;
    let changes = sites::replace_sites(
        conn,
        grant.id,
        sites,
        |site| site.product.required_scopes(requested),
        now,
    )
    .await?;
    let mut applied = AppliedSites {
        revoked: changes.revoked.len(),
        ..Default::default()
    };
    for site in &changes.revoked {
        let reason = format!(
            "{} ({}) is no longer accessible to this grant: access was revoked or the site was removed; its sync has stopped",
            site.name, site.product
        );
        let key = site.key();
        alerts::raise(
            conn,
            app,
            grant,
            alerts::Condition::new(AlertKind::SiteRevoked, &reason, now).at_site(&key),
        )
        .await?;
        // A revoked site's scope problem is moot.
        alerts::clear(conn, app, grant, AlertKind::ScopesMissing, Some(&key)).await?;
    }
    for site in &changes.appeared {
        let key = site.key();
        alerts::clear(conn, app, grant, AlertKind::SiteRevoked, Some(&key)).await?;
    }
    for site in &changes.active {
        let key = site.key();
        if site.missing_scopes.is_empty() && site.scope_error.is_none() {
            alerts::clear(conn, app, grant, AlertKind::ScopesMissing, Some(&key)).await?;
        } else if site.missing_scopes.is_empty() {
            // A scope error seen by a sync stands until the scope list changes.
            applied.missing_scopes += 1;
        } else {
            applied.missing_scopes += 1;
            let reason = format!(
                "{} ({}) was granted without {}; the user must consent again with the full scope list",
                site.name,
                site.product,
                site.missing_scopes.join(", ")
            );
            alerts::raise(
                conn,
                app,
                grant,
                alerts::Condition::new(AlertKind::ScopesMissing, &reason, now).at_site(&key),
            )
            .await?;
        }
    }
    // No site at all is not proof that the family is dead (a site admin may have removed
    // the user's product access for a while): the grant stays active, is kept alive and
    // re-checked, and the alert resolves when a site returns. Only the token endpoint's
    // invalid_grant, or the family deadline, means a new consent is needed.
    if changes.active.is_empty() {
        applied.lost_all_sites = true;
        let reason = "no Jira or Confluence site is accessible to this grant for now; it is kept alive and re-checked at every revalidation (a site admin may have removed the user's product access)";
        alerts::raise(
            conn,
            app,
            grant,
            alerts::Condition::new(AlertKind::NoSites, reason, now),
        )
        .await?;
    } else {
        alerts::clear(conn, app, grant, AlertKind::NoSites, None).await?;
    }
    Ok(applied)
}
