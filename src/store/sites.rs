//! The `sites` table: which (cloud id, product) each grant reaches, and with which scopes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::domain::{CloudId, GrantId, Product, Site, SiteKey};

/// A site as stored for one grant.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct StoredSite {
    /// The grant that reaches the site.
    pub grant_id: GrantId,
    /// The site's cloud id.
    pub cloud_id: CloudId,
    /// Which product of the site.
    pub product: Product,
    /// The site's name, as last listed.
    pub name: String,
    /// The site's base URL, as last listed.
    pub url: String,
    /// The scopes the grant holds on it, as last listed.
    pub scopes: Vec<String>,
    /// Scopes this product needs (from `atlassian.scopes`) that `scopes` lacks.
    pub missing_scopes: Vec<String>,
    /// `active`, or `revoked` once accessible-resources stops listing it.
    pub status: String,
    /// A gateway "scope does not match" seen while syncing; cleared when the scope list changes.
    pub scope_error: Option<String>,
    /// When it was marked revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl StoredSite {
    /// The site's key.
    pub fn key(&self) -> SiteKey {
        SiteKey {
            cloud_id: self.cloud_id.clone(),
            product: self.product,
        }
    }
}

/// What changed when a grant's sites were replaced by a fresh accessible-resources answer.
#[derive(Debug, Default, Clone)]
pub struct SiteChanges {
    /// Sites seen now that were not active before (new, or back after a revocation).
    pub appeared: Vec<StoredSite>,
    /// Sites that were active and are no longer listed.
    pub revoked: Vec<StoredSite>,
    /// Every site now active, with its missing scopes.
    pub active: Vec<StoredSite>,
}

/// Makes the stored sites of `grant_id` match `sites` (the truth from accessible-resources):
/// listed ones are upserted as active with their missing scopes, unlisted ones are marked
/// revoked. `required` gives the scopes each product needs.
pub async fn replace_sites(
    conn: &mut PgConnection,
    grant_id: GrantId,
    sites: &[Site],
    required: impl Fn(&Site) -> Vec<String>,
    now: DateTime<Utc>,
) -> Result<SiteChanges, sqlx::Error> {
    let before: Vec<StoredSite> = sqlx::query_as(
        "SELECT grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at
         FROM sites WHERE grant_id = $1 FOR UPDATE",
    )
    .bind(grant_id)
    .fetch_all(&mut *conn)
    .await?;

    let mut changes = SiteChanges::default();
    for site in sites {
        let missing: Vec<String> = required(site)
            .into_iter()
            .filter(|scope| !site.scopes.contains(scope))
            .collect();
        let stored: StoredSite = sqlx::query_as(
            "INSERT INTO sites (grant_id, cloud_id, product, name, url, scopes, missing_scopes, status,
                                first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8)
             ON CONFLICT (grant_id, cloud_id, product) DO UPDATE SET
                name = EXCLUDED.name, url = EXCLUDED.url, scopes = EXCLUDED.scopes,
                missing_scopes = EXCLUDED.missing_scopes, status = 'active', revoked_at = NULL,
                -- a fresh scope list supersedes a scope error seen with the old one
                scope_error = CASE WHEN sites.scopes = EXCLUDED.scopes THEN sites.scope_error END,
                last_seen_at = EXCLUDED.last_seen_at
             RETURNING grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at",
        )
        .bind(grant_id)
        .bind(&site.cloud_id)
        .bind(site.product.as_str())
        .bind(&site.name)
        .bind(&site.url)
        .bind(&site.scopes)
        .bind(&missing)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        let was_active = before.iter().any(|b| {
            b.cloud_id == stored.cloud_id && b.product == stored.product && b.status == "active"
        });
        if !was_active {
            changes.appeared.push(stored.clone());
        }
        changes.active.push(stored);
    }

    for old in before.into_iter().filter(|b| b.status == "active") {
        let still_listed = sites
            .iter()
            .any(|s| s.cloud_id == old.cloud_id && s.product == old.product);
        if still_listed {
            continue;
        }
        let revoked: StoredSite = sqlx::query_as(
            "UPDATE sites SET status = 'revoked', revoked_at = $4
             WHERE grant_id = $1 AND cloud_id = $2 AND product = $3
             RETURNING grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at",
        )
        .bind(grant_id)
        .bind(&old.cloud_id)
        .bind(old.product)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        changes.revoked.push(revoked);
    }
    Ok(changes)
}

/// The sites of one grant, active first.
pub async fn sites_of_grant(
    conn: &mut PgConnection,
    grant_id: GrantId,
) -> Result<Vec<StoredSite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at
         FROM sites WHERE grant_id = $1 ORDER BY status, name, product",
    )
    .bind(grant_id)
    .fetch_all(conn)
    .await
}

/// Every site row, for listing.
pub async fn all_sites(conn: &mut PgConnection) -> Result<Vec<StoredSite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at
         FROM sites ORDER BY name, product",
    )
    .fetch_all(conn)
    .await
}

/// The site rows of the given grants, by name and product.
pub async fn sites_of_grants(
    conn: &mut PgConnection,
    grant_ids: &[GrantId],
) -> Result<Vec<StoredSite>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = grant_ids.iter().map(|id| id.as_uuid()).collect();
    sqlx::query_as(
        "SELECT grant_id, cloud_id, product, name, url, scopes, missing_scopes, status, scope_error, revoked_at
         FROM sites WHERE grant_id = ANY($1) ORDER BY status, name, product",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await
}
