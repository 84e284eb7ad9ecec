//! The `synced_sites` table: one row per (cloud id, product) any grant reaches, with its
//! elected grant, pin, watermark and the ticks it was last claimed for.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{CloudId, GrantId, Product, SiteKey, SyncKind};

/// A site as the sync sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SyncedSite {
    /// The site's cloud id.
    pub cloud_id: CloudId,
    /// Which product of the site.
    pub product: Product,
    /// The site's name, from the most recently seen `sites` row.
    pub name: String,
    /// The site's base URL, from the most recently seen `sites` row.
    pub url: String,
    /// The grant the site syncs through; `None` when no healthy grant reaches it.
    pub elected_grant_id: Option<GrantId>,
    /// The operator's preferred grant (`sites pin`), elected while it is `active` and healthy.
    pub pinned_grant_id: Option<GrantId>,
    /// Jira only: every issue updated before this instant has been committed.
    pub jira_watermark: Option<DateTime<Utc>>,
    /// Jira only: when the last wider re-scan completed.
    pub jira_rescanned_at: Option<DateTime<Utc>>,
    /// Jira only: the elected user's time zone, as last read from `/myself`.
    pub jira_time_zone: Option<String>,
    /// The grant whose time zone that is.
    pub jira_time_zone_grant: Option<GrantId>,
    /// When it was read.
    pub jira_time_zone_at: Option<DateTime<Utc>>,
}

impl SyncedSite {
    /// The site's key.
    pub fn key(&self) -> SiteKey {
        SiteKey {
            cloud_id: self.cloud_id.clone(),
            product: self.product,
        }
    }
}

/// Re-elects the grant of every site: the pinned grant while it is healthy, else the current
/// one while it is healthy, else the healthiest other grant that reaches the site with every
/// needed scope. Sites nobody healthy reaches keep no elected grant (and are not synced).
/// Returns the sites whose elected grant changed, as (cloud id, product, old, new).
pub async fn elect_grants(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(CloudId, Product, Option<GrantId>, Option<GrantId>)>, sqlx::Error> {
    // Replicas electing at the same tick take turns instead of deadlocking on row order.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('atlassync.elect_grants'))")
        .execute(&mut *conn)
        .await?;
    // Every (site, product) any grant has ever reached gets a row.
    sqlx::query(
        "INSERT INTO synced_sites (cloud_id, product, name, url)
         SELECT DISTINCT ON (cloud_id, product) cloud_id, product, name, url FROM sites
         ORDER BY cloud_id, product, last_seen_at DESC
         ON CONFLICT (cloud_id, product) DO UPDATE SET name = EXCLUDED.name, url = EXCLUDED.url
         WHERE (synced_sites.name, synced_sites.url) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.url)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "WITH healthy AS (
            SELECT s.cloud_id, s.product, g.id AS grant_id, g.status, g.last_refreshed_at
            FROM sites s JOIN grants g ON g.id = s.grant_id
            WHERE s.status = 'active' AND cardinality(s.missing_scopes) = 0 AND s.scope_error IS NULL
              AND g.status IN ('active', 'degraded')
         ),
         choice AS (
            SELECT ss.cloud_id, ss.product, ss.elected_grant_id AS old_grant,
              COALESCE(
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   AND h.grant_id = ss.pinned_grant_id AND h.status = 'active'),
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   AND h.grant_id = ss.elected_grant_id AND h.status = 'active'),
                (SELECT h.grant_id FROM healthy h WHERE h.cloud_id = ss.cloud_id AND h.product = ss.product
                   ORDER BY (h.status = 'active') DESC, h.last_refreshed_at DESC NULLS LAST, h.grant_id
                   LIMIT 1)
              ) AS new_grant
            FROM synced_sites ss
            FOR UPDATE OF ss
         )
         UPDATE synced_sites ss SET elected_grant_id = c.new_grant, elected_at = $1
         FROM choice c
         WHERE ss.cloud_id = c.cloud_id AND ss.product = c.product
           AND c.new_grant IS DISTINCT FROM c.old_grant
         RETURNING ss.cloud_id, ss.product, c.old_grant, c.new_grant",
    )
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Whether `grant_id` is the elected grant of some synced site (it has sync work).
pub async fn serves_a_site(
    conn: &mut PgConnection,
    grant_id: GrantId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM synced_sites WHERE elected_grant_id = $1)")
        .bind(grant_id)
        .fetch_one(conn)
        .await
}

/// Pins `grant_id` (or clears the pin with `None`) for a site.
pub async fn pin_grant(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    product: Product,
    grant_id: Option<GrantId>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE synced_sites SET pinned_grant_id = $3 WHERE cloud_id = $1 AND product = $2",
    )
    .bind(cloud_id)
    .bind(product)
    .bind(grant_id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Claims up to `limit` sites with an elected grant not yet done for `tick`.
pub async fn claim_sites(
    conn: &mut PgConnection,
    kind: SyncKind,
    tick: DateTime<Utc>,
    limit: i64,
    now: DateTime<Utc>,
    leased_until: DateTime<Utc>,
) -> Result<Vec<SyncedSite>, sqlx::Error> {
    let query = match kind {
        SyncKind::JiraReconcile => {
            "WITH due AS (
                SELECT cloud_id, product FROM synced_sites
                WHERE product = $1 AND elected_grant_id IS NOT NULL
                  -- A site still in its first sync has nothing to reconcile yet: a census
                  -- would fetch again every issue the first sync is about to read.
                  AND last_synced_at IS NOT NULL
                  AND (reconciled_for IS NULL OR reconciled_for < $2)
                  AND (reconcile_leased_until IS NULL OR reconcile_leased_until < $4)
                ORDER BY reconciled_for NULLS FIRST LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE synced_sites ss SET reconciled_for = $2, reconcile_leased_until = $5 FROM due
             WHERE ss.cloud_id = due.cloud_id AND ss.product = due.product
             RETURNING ss.cloud_id, ss.product, ss.name, ss.url, ss.elected_grant_id, ss.pinned_grant_id, ss.jira_watermark,
                       ss.jira_rescanned_at, ss.jira_time_zone, ss.jira_time_zone_grant, ss.jira_time_zone_at"
        }
        SyncKind::JiraIncremental | SyncKind::ConfluenceSpaces => {
            "WITH due AS (
                SELECT cloud_id, product FROM synced_sites
                WHERE product = $1 AND elected_grant_id IS NOT NULL
                  AND (synced_for IS NULL OR synced_for < $2)
                  AND (sync_leased_until IS NULL OR sync_leased_until < $4)
                ORDER BY synced_for NULLS FIRST LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE synced_sites ss SET synced_for = $2, sync_leased_until = $5 FROM due
             WHERE ss.cloud_id = due.cloud_id AND ss.product = due.product
             RETURNING ss.cloud_id, ss.product, ss.name, ss.url, ss.elected_grant_id, ss.pinned_grant_id, ss.jira_watermark,
                       ss.jira_rescanned_at, ss.jira_time_zone, ss.jira_time_zone_grant, ss.jira_time_zone_at"
        }
    };
    sqlx::query_as(query)
        .bind(kind.product())
        .bind(tick)
        .bind(limit)
        .bind(now)
        .bind(leased_until)
        .fetch_all(conn)
        .await
}

/// Extends the lease of a site's running `kind` (a long run shows it is alive).
pub async fn renew_run_lease(
    conn: &mut PgConnection,
    site: &SiteKey,
    kind: SyncKind,
    leased_until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let query = match kind {
        SyncKind::JiraReconcile => {
            "UPDATE synced_sites SET reconcile_leased_until = $3 WHERE cloud_id = $1 AND product = $2"
        }
        _ => "UPDATE synced_sites SET sync_leased_until = $3 WHERE cloud_id = $1 AND product = $2",
    };
    sqlx::query(query)
        .bind(&site.cloud_id)
        .bind(site.product)
        .bind(leased_until)
        .execute(conn)
        .await?;
    Ok(())
}

/// Releases the lease of a site's `kind` when its run ends.
pub async fn release_run_lease(
    conn: &mut PgConnection,
    site: &SiteKey,
    kind: SyncKind,
) -> Result<(), sqlx::Error> {
    let query = match kind {
        SyncKind::JiraReconcile => {
            "UPDATE synced_sites SET reconcile_leased_until = NULL WHERE cloud_id = $1 AND product = $2"
        }
        _ => {
            "UPDATE synced_sites SET sync_leased_until = NULL WHERE cloud_id = $1 AND product = $2"
        }
    };
    sqlx::query(query)
        .bind(&site.cloud_id)
        .bind(site.product)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a site's Jira watermark forward (never back).
pub async fn advance_watermark(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    watermark: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET jira_watermark = GREATEST(COALESCE(jira_watermark, $2), $2)
         WHERE cloud_id = $1 AND product = 'jira'",
    )
    .bind(cloud_id)
    .bind(watermark)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the sites' last successful run time.
pub async fn mark_site_synced(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    product: Product,
    kind: SyncKind,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let query = match kind {
        SyncKind::JiraReconcile => {
            "UPDATE synced_sites SET last_reconciled_at = $3 WHERE cloud_id = $1 AND product = $2"
        }
        _ => "UPDATE synced_sites SET last_synced_at = $3 WHERE cloud_id = $1 AND product = $2",
    };
    sqlx::query(query)
        .bind(cloud_id)
        .bind(product)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a gateway "scope does not match" on a grant's site, which removes the grant from
/// that site's election until revalidation sees a fresh scope list.
pub async fn record_scope_error(
    conn: &mut PgConnection,
    grant_id: GrantId,
    cloud_id: &CloudId,
    product: Product,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sites SET scope_error = $4 WHERE grant_id = $1 AND cloud_id = $2 AND product = $3",
    )
    .bind(grant_id)
    .bind(cloud_id)
    .bind(product)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// One synced site, as it stands now.
pub async fn get_site(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    product: Product,
) -> Result<Option<SyncedSite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT cloud_id, product, name, url, elected_grant_id, pinned_grant_id, jira_watermark,
                jira_rescanned_at, jira_time_zone, jira_time_zone_grant, jira_time_zone_at
         FROM synced_sites WHERE cloud_id = $1 AND product = $2",
    )
    .bind(cloud_id)
    .bind(product)
    .fetch_optional(conn)
    .await
}

/// One line of the operators' site listing: a synced site with the labels of its elected
/// and pinned grants.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SiteOverview {
    /// The site's name.
    pub name: String,
    /// Which product of the site.
    pub product: Product,
    /// The site's cloud id.
    pub cloud_id: CloudId,
    /// The elected grant's label; `None` when no healthy grant reaches the site.
    pub elected: Option<String>,
    /// The pinned grant's label, if any.
    pub pinned: Option<String>,
    /// The Jira watermark; `None` for Confluence and before the first Jira sync.
    pub watermark: Option<DateTime<Utc>>,
    /// When the last successful incremental or spaces run ended.
    pub synced: Option<DateTime<Utc>>,
}

/// Every synced site, by name and product.
pub async fn overview(conn: &mut PgConnection) -> Result<Vec<SiteOverview>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ss.name, ss.product, ss.cloud_id, e.label AS elected, p.label AS pinned,
                ss.jira_watermark AS watermark, ss.last_synced_at AS synced
         FROM synced_sites ss
         LEFT JOIN grants e ON e.id = ss.elected_grant_id
         LEFT JOIN grants p ON p.id = ss.pinned_grant_id
         ORDER BY ss.name, ss.product",
    )
    .fetch_all(conn)
    .await
}

/// A site stream whose last success is older than its cutoff (or that never succeeded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaleStream {
    /// The site's cloud id.
    pub cloud_id: CloudId,
    /// Which product.
    pub product: Product,
    /// The site's name.
    pub name: String,
    /// A [`SyncKind`] name.
    pub kind: String,
    /// The last successful run, if any.
    pub last_success: Option<DateTime<Utc>>,
    /// The first run ever recorded for it (when it has never succeeded).
    pub first_run: Option<DateTime<Utc>>,
    /// The error of its latest failed run.
    pub last_error: Option<String>,
}

/// Site streams whose last success is before the cutoff of their kind (`cutoffs` pairs a
/// kind with its cutoff), or that have runs but never succeeded. Fresh streams are filtered
/// before the run history is read, so this costs little while everything is healthy.
pub async fn stale_streams(
    conn: &mut PgConnection,
    cutoffs: &[(SyncKind, DateTime<Utc>)],
) -> Result<Vec<StaleStream>, sqlx::Error> {
    let kinds: Vec<&str> = cutoffs.iter().map(|(k, _)| k.as_str()).collect();
    let products: Vec<&str> = cutoffs.iter().map(|(k, _)| k.product().as_str()).collect();
    let times: Vec<DateTime<Utc>> = cutoffs.iter().map(|(_, at)| *at).collect();
    sqlx::query_as(
        "WITH streams AS (
             SELECT ss.cloud_id, ss.product, ss.name, k.kind, k.cutoff,
                    CASE WHEN k.kind = 'jira_reconcile' THEN ss.last_reconciled_at
                         ELSE ss.last_synced_at END AS last_success
             FROM synced_sites ss
             JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(kind, product, cutoff)
               ON k.product = ss.product
         )
         SELECT s.cloud_id, s.product, s.name, s.kind, s.last_success, first.started_at AS first_run,
                failed.error AS last_error
         FROM streams s
         LEFT JOIN LATERAL (
             SELECT started_at FROM sync_runs r
             WHERE r.cloud_id = s.cloud_id AND r.product = s.product AND r.kind = s.kind
             ORDER BY started_at LIMIT 1) first ON true
         LEFT JOIN LATERAL (
             SELECT error FROM sync_runs r
             WHERE r.cloud_id = s.cloud_id AND r.product = s.product AND r.kind = s.kind
               AND r.outcome = 'failed'
             ORDER BY started_at DESC LIMIT 1) failed ON true
         WHERE (s.last_success IS NULL OR s.last_success < s.cutoff)
           AND COALESCE(s.last_success, first.started_at) < s.cutoff",
    )
    .bind(&kinds)
    .bind(&products)
    .bind(&times)
    .fetch_all(conn)
    .await
}

/// A site's deletion hold: how many deletions wait, since when, and whether an operator
/// confirmed them.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct DeletionHold {
    /// Deletions held at the last run, if any.
    pub deletes_held: Option<i32>,
    /// When they were first held.
    pub deletes_held_at: Option<DateTime<Utc>>,
    /// When an operator confirmed them (`sync --confirm-deletes`).
    pub deletes_confirmed_at: Option<DateTime<Utc>>,
}

/// The deletion hold of one site.
pub async fn deletion_hold(
    conn: &mut PgConnection,
    site: &SiteKey,
) -> Result<DeletionHold, sqlx::Error> {
    let hold = sqlx::query_as(
        "SELECT deletes_held, deletes_held_at, deletes_confirmed_at FROM synced_sites
         WHERE cloud_id = $1 AND product = $2",
    )
    .bind(&site.cloud_id)
    .bind(site.product)
    .fetch_optional(conn)
    .await?;
    Ok(hold.unwrap_or_default())
}

/// Records `held` deletions waiting for an operator (the first hold's time is kept).
pub async fn hold_deletions(
    conn: &mut PgConnection,
    site: &SiteKey,
    held: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET deletes_held = $3, deletes_held_at = COALESCE(deletes_held_at, $4)
         WHERE cloud_id = $1 AND product = $2",
    )
    .bind(&site.cloud_id)
    .bind(site.product)
    .bind(i32::try_from(held).unwrap_or(i32::MAX))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the hold and any confirmation (after deletions were applied, or nothing is held).
pub async fn clear_deletion_hold(
    conn: &mut PgConnection,
    site: &SiteKey,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET deletes_held = NULL, deletes_held_at = NULL,
                                 deletes_confirmed_at = NULL
         WHERE cloud_id = $1 AND product = $2
           AND (deletes_held IS NOT NULL OR deletes_confirmed_at IS NOT NULL)",
    )
    .bind(&site.cloud_id)
    .bind(site.product)
    .execute(conn)
    .await?;
    Ok(())
}

/// An operator confirms the held deletions of `cloud_id` (every product); returns the sites
/// confirmed, with the counts that were held.
pub async fn confirm_deletions(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    now: DateTime<Utc>,
) -> Result<Vec<(Product, Option<i32>)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE synced_sites SET deletes_confirmed_at = $2
         WHERE cloud_id = $1 RETURNING product, deletes_held",
    )
    .bind(cloud_id)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Clears a Jira site's watermark (a full re-read at its next incremental run). Returns
/// whether the site exists.
pub async fn reset_watermark(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<bool, sqlx::Error> {
    let reset = sqlx::query(
        "UPDATE synced_sites SET jira_watermark = NULL WHERE cloud_id = $1 AND product = 'jira'",
    )
    .bind(cloud_id)
    .execute(conn)
    .await?;
    Ok(reset.rows_affected() > 0)
}

/// Remembers the elected user's Jira time zone for a site.
pub async fn remember_time_zone(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    grant_id: GrantId,
    zone: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET jira_time_zone = $3, jira_time_zone_grant = $2,
                                 jira_time_zone_at = $4
         WHERE cloud_id = $1 AND product = 'jira'",
    )
    .bind(cloud_id)
    .bind(grant_id)
    .bind(zone)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a completed wider re-scan.
pub async fn mark_rescanned(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET jira_rescanned_at = $2 WHERE cloud_id = $1 AND product = 'jira'",
    )
    .bind(cloud_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pauses one site and product until `until` (a tenant quota is spent). Never shortens a
/// pause already set.
pub async fn pause_site(
    conn: &mut PgConnection,
    site: &SiteKey,
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE synced_sites SET quota_paused_until = GREATEST(quota_paused_until, $3)
         WHERE cloud_id = $1 AND product = $2",
    )
    .bind(&site.cloud_id)
    .bind(site.product)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}
