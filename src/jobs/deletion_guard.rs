//! A vanished row is not always a deleted one: a permission change, or a hand-over to a grant
//! that sees less, makes issues and spaces invisible, not deleted. A run that would remove
//! more than `sync.max_delete_fraction` of a site's live rows holds the deletion, raises
//! `deletes_held`, and waits for an operator (`atlassync sync --confirm-deletes CLOUD_ID`).

use crate::app::App;
use crate::domain::SiteKey;
use crate::store::alerts::{self, AlertKind, SystemAlert};
use crate::store::synced_sites;

/// Whether a run may apply its deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delete (few enough, or confirmed by an operator).
    Apply,
    /// Keep every row; the hold is recorded and ops are told.
    Hold,
}

fn subject(site: &SiteKey) -> String {
    format!("{}/{}", site.cloud_id, site.product)
}

/// Decides on removing `removing` of a site's `live` rows.
pub async fn check(
    app: &App,
    site: &SiteKey,
    name: &str,
    removing: usize,
    live: usize,
) -> Result<Verdict, sqlx::Error> {
    let fraction = app.config.sync.max_delete_fraction;
    let mut conn = app.pool.acquire().await?;
    let hold = synced_sites::deletion_hold(&mut conn, site).await?;
    let large = removing as f64 > fraction * live as f64;
    if removing == 0 || !large || hold.deletes_confirmed_at.is_some() {
        return Ok(Verdict::Apply);
    }
    let now = app.clock.now();
    synced_sites::hold_deletions(&mut conn, site, removing as i64, now).await?;
    let reason = format!(
        "{name} ({}): {removing} of {live} live rows vanished from Atlassian's listing, more \
         than sync.max_delete_fraction ({fraction}); they are kept until an operator runs \
         `atlassync sync --confirm-deletes {}` (a permission change or a narrower grant hides \
         rows without deleting them)",
        site.product, site.cloud_id
    );
    let subject = subject(site);
    let alert = SystemAlert {
        kind: AlertKind::DeletesHeld,
        subject: &subject,
        label: name,
        site: Some(site),
        reason: &reason,
        since: hold.deletes_held_at.unwrap_or(now),
    };
    if alerts::open_system_alert(&mut conn, &alert, now).await? {
        tracing::warn!(site.cloud_id = %site.cloud_id, site.product = %site.product, removing, live, "deletions held for an operator");
    }
    Ok(Verdict::Hold)
}

/// After a run applied its deletions (or had none to hold): the hold and any confirmation
/// are cleared, and the alert resolves.
pub async fn settled(app: &App, site: &SiteKey) -> Result<(), sqlx::Error> {
    let mut conn = app.pool.acquire().await?;
    synced_sites::clear_deletion_hold(&mut conn, site).await?;
    alerts::resolve_system_alert(
        &mut conn,
        AlertKind::DeletesHeld,
        &subject(site),
        app.clock.now(),
    )
    .await?;
    Ok(())
}
