//! Confluence spaces: a full listing (spaces are few), upserted, with what vanished
//! soft-deleted, all in one transaction once the listing is complete.

use crate::app::App;
use crate::atlassian::confluence;
use crate::domain::SpaceRow;
use crate::jobs::deletion_guard::{self, Verdict};
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
    let mut empty_in_a_row = 0;
    // Only a listing that ended on a page without a `next` link is complete. Empty pages
    // that point on are followed; a repeated cursor, or a link without a cursor, ends the
    // listing incomplete: what it saw is upserted and nothing is deleted, since a missing
    // space might simply not have been listed.
    let cut_short = loop {
        let page = session.call(confluence::spaces(cursor.as_deref())).await?;
        let has_next = page.links.next.is_some();
        let next = page.next_cursor();
        empty_in_a_row = if page.results.is_empty() {
            empty_in_a_row + 1
        } else {
            0
        };
        rows.extend(page.results.into_iter().filter_map(confluence::space_row));
        match next {
            _ if !has_next => break None,
            Some(next) if Some(&next) == cursor.as_ref() => {
                break Some("Confluence sent back the cursor it was given");
            }
            Some(_) if empty_in_a_row >= crate::atlassian::MAX_EMPTY_PAGES => {
                break Some("too many empty pages in a row");
            }
            Some(next) => cursor = Some(next),
            None => break Some("a next link without a cursor"),
        }
    };
    let key = site.key();
    let mut delete_missing = cut_short.is_none();
    if delete_missing {
        let listed: Vec<&str> = rows.iter().map(|r| r.space_id.as_str()).collect();
        let (live, unlisted) = {
            let mut conn = app.pool.acquire().await?;
            confluence_spaces::live_and_unlisted(&mut conn, &site.cloud_id, &listed).await?
        };
        let verdict =
            deletion_guard::check(app, &key, &site.name, unlisted as usize, live as usize).await?;
        if verdict == Verdict::Hold {
            totals.held = unlisted;
            delete_missing = false;
        }
    }
    let mut tx = app.pool.begin().await?;
    let (upserted, deleted) = confluence_spaces::replace_spaces(
        &mut tx,
        &site.cloud_id,
        &rows,
        delete_missing,
        app.clock.now(),
    )
    .await?;
    tx.commit().await?;
    totals.upserted = upserted as i64;
    totals.deleted = deleted as i64;
    if delete_missing {
        deletion_guard::settled(app, &key).await?;
    }
    match cut_short {
        None => Ok(()),
        Some(why) => Err(CallError::Incomplete(why.to_owned())),
    }
}
