//! Confluence spaces: a full listing (spaces are few), upserted, with what vanished
//! soft-deleted, all in one transaction once the listing is complete.

use crate::app::App;
use crate::atlassian::confluence;
use crate::atlassian::session::{CallError, SiteSession};
use crate::store::sync::{self as store, RunTotals, SpaceRow, SyncedSite};

/// Lists every space of `site` and makes the table match.
pub async fn spaces(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let mut rows: Vec<SpaceRow> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = confluence::spaces(session, cursor.as_deref()).await?;
        let next = page.next_cursor().filter(|c| Some(c) != cursor.as_ref());
        let empty = page.results.is_empty();
        rows.extend(page.results.into_iter().filter_map(confluence::space_row));
        match next {
            Some(next) if !empty => cursor = Some(next),
            _ => break,
        }
    }
    let mut tx = app.pool.begin().await?;
    let (upserted, deleted) =
        store::replace_spaces(&mut tx, &site.cloud_id, &rows, app.clock.now()).await?;
    tx.commit().await?;
    totals.upserted = upserted as i64;
    totals.deleted = deleted as i64;
    Ok(())
}
