//! Confluence spaces: a full listing (spaces are few), upserted, with what vanished
//! soft-deleted, all in one transaction once the listing is complete.

use crate::app::App;
use crate::atlassian::confluence;
use crate::domain::SpaceRow;
use crate::pacing::{CallError, SiteSession};
use crate::store::confluence_spaces;
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites::SyncedSite;

/// Lists every space of `site` and makes the table match.
pub async fn spaces(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let mut rows: Vec<SpaceRow> = Vec::new();
    let mut cursor: Option<String> = None;
    // Only a listing that ended on a page without a `next` link is complete; anything else
    // (an empty page that still points on, a repeated cursor) upserts what it saw and
    // deletes nothing, since a missing space might simply not have been listed.
    let complete = loop {
        let page = session.call(confluence::spaces(cursor.as_deref())).await?;
        let has_next = page.links.next.is_some();
        let next = page.next_cursor();
        let empty = page.results.is_empty();
        rows.extend(page.results.into_iter().filter_map(confluence::space_row));
        match next {
            _ if !has_next => break true,
            Some(next) if !empty && Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => break false,
        }
    };
    if !complete {
        tracing::warn!(site.cloud_id = %site.cloud_id, "Confluence listing ended early; no space is deleted this run");
    }
    let mut tx = app.pool.begin().await?;
    let (upserted, deleted) = confluence_spaces::replace_spaces(
        &mut tx,
        &site.cloud_id,
        &rows,
        complete,
        app.clock.now(),
    )
    .await?;
    tx.commit().await?;
    totals.upserted = upserted as i64;
    totals.deleted = deleted as i64;
    Ok(())
}
