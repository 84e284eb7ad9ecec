//! Making a site's issues match Atlassian's census. There is no "deleted since" feed, so the
//! full id set of the synced scope is enumerated (ids only, 5,000 a page). Then:
//!
//! - ids Atlassian lists and the table lacks (a project that became visible with old
//!   `updated` values, a hand-over to a grant that sees more, an edited `jira.jql`) are
//!   fetched with the sync's fields and inserted; listed ids whose row was soft-deleted are
//!   re-read and restored with current content;
//! - live ids Atlassian does not list are confirmed with a bulk fetch (search is eventually
//!   consistent; bulk fetch reads the database): absent ones are gone (deleted, or no longer
//!   visible); present ones are checked against `jira.jql` with read-after-write consistency,
//!   and those outside it left the scope. Both stop being live rows, unless there are so many
//!   that the deletion is held for an operator (`deletion_guard`).

use std::collections::{HashMap, HashSet};

use crate::app::App;
use crate::atlassian::jira::{self, PageEnd, SYNC_FIELDS, Scan};
use crate::domain::SyncKind;
use crate::jobs::deletion_guard::{self, Verdict};
use crate::jobs::sync::RUN_LEASE;
use crate::pacing::{CallError, SiteSession};
use crate::store::jira_fields::{self, FieldRow};
use crate::store::jira_issues;
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites;
use crate::store::synced_sites::SyncedSite;

/// Reconciles the issues of `site`.
pub async fn reconcile(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let started = app.clock.now();
    // Enumeration costs about a point per issue and restarts from scratch if cut short, so
    // start only when this hour's share can pay for all of it.
    let local_count = {
        let mut conn = app.pool.acquire().await?;
        jira_issues::count_issues(&mut conn, &site.cloud_id).await?
    };
    let census_points = local_count + local_count / 5000 + 1;
    let share = app.config.sync.hourly_share();
    if census_points > share {
        // Waiting for a quieter hour would never help: say so, every run, instead of
        // deferring forever while deletions go unseen.
        return Err(CallError::TooLarge(format!(
            "reconciling this site needs about {census_points} points in one hour, more than \
             sync's hourly share ({share}); deletions on it are not found. Raise \
             sync.points_per_hour if the app has a larger (Tier 2) quota"
        )));
    }
    session.reserve(census_points).await?;
    sync_fields(app, session, site).await?;
    let restriction = app.config.jira.jql_for(&site.cloud_id);
    let remote = census(session, restriction).await?;
    {
        // The census may take a while on a large site: the run is still alive.
        let mut conn = app.pool.acquire().await?;
        let until = app.clock.now() + RUN_LEASE;
        synced_sites::renew_run_lease(&mut conn, &site.key(), SyncKind::JiraReconcile, until)
            .await?;
    }

    let local: HashMap<String, bool> = {
        let mut conn = app.pool.acquire().await?;
        jira_issues::id_states(&mut conn, &site.cloud_id)
            .await?
            .into_iter()
            .collect()
    };
    // Listed here and there: fetch what is missing or was marked deleted.
    let to_fetch: Vec<String> = remote
        .iter()
        .filter(|id| local.get(*id).is_none_or(|deleted| *deleted))
        .cloned()
        .collect();
    for chunk in to_fetch.chunks(100) {
        let fetched = session
            .call(jira::bulk_fetch_issues(chunk, SYNC_FIELDS))
            .await?;
        let rows: Vec<_> = fetched
            .issues
            .into_iter()
            .filter_map(jira::issue_row)
            .collect();
        let added = rows
            .iter()
            .filter(|r| !local.contains_key(&r.issue_id))
            .count() as i64;
        let refreshed = rows.len() as i64 - added;
        let mut tx = app.pool.begin().await?;
        let stored =
            jira_issues::upsert_or_set_aside(&mut tx, &site.cloud_id, &rows, app.clock.now())
                .await?;
        tx.commit().await?;
        totals.added += added;
        totals.refreshed += refreshed;
        totals.restored += refreshed;
        totals.upserted += stored.upserted as i64;
        totals.quarantined += stored.quarantined as i64;
    }

    // Live here, not listed there.
    let candidates: Vec<String> = local
        .iter()
        .filter(|(id, deleted)| !**deleted && !remote.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    let mut removing = Vec::new();
    let mut still_there = Vec::new();
    for chunk in candidates.chunks(100) {
        let present: HashSet<String> = session
            .call(jira::bulk_fetch(chunk))
            .await?
            .existing_ids()
            .into_iter()
            .collect();
        for id in chunk {
            if present.contains(id) {
                still_there.push(id.clone());
            } else {
                removing.push(id.clone());
            }
        }
    }
    // Present but not listed: without a restriction that is index lag (kept); with one, the
    // issue may have left the scope, which a consistent read of the restriction tells.
    if let Some(restriction) = restriction {
        for chunk in still_there.chunks(50) {
            let page = session
                .call(jira::search_in_scope(restriction, chunk))
                .await?;
            let in_scope: HashSet<String> = page
                .issues
                .iter()
                .filter_map(|raw| jira::issue_id(raw))
                .collect();
            removing.extend(chunk.iter().filter(|id| !in_scope.contains(*id)).cloned());
        }
    }

    let live = local.values().filter(|deleted| !**deleted).count();
    let key = site.key();
    match deletion_guard::check(app, &key, &site.name, removing.len(), live).await? {
        Verdict::Hold => {
            totals.held = removing.len() as i64;
        }
        Verdict::Apply => {
            let mut tx = app.pool.begin().await?;
            totals.deleted = jira_issues::mark_issues_deleted(
                &mut tx,
                &site.cloud_id,
                &removing,
                started,
                app.clock.now(),
            )
            .await? as i64;
            tx.commit().await?;
            deletion_guard::settled(app, &key).await?;
        }
    }
    Ok(())
}

/// Every issue id the site's scope holds, or `Incomplete` when the listing stopped before
/// Atlassian said it was complete (a partial census proves nothing about what is missing).
async fn census(
    session: &mut SiteSession<'_>,
    restriction: Option<&str>,
) -> Result<HashSet<String>, CallError> {
    let bound = "created >= \"1970-01-01\"";
    let jql = match restriction {
        Some(restriction) => format!("({restriction}) AND {bound} ORDER BY id ASC"),
        None => format!("{bound} ORDER BY id ASC"),
    };
    let mut remote = HashSet::new();
    let mut scan = Scan::default();
    loop {
        let page = session
            .call(jira::search(&jql, &["id"], 5000, scan.token()))
            .await?;
        remote.extend(page.issues.iter().filter_map(|raw| jira::issue_id(raw)));
        match scan.after(&page) {
            PageEnd::More(_) => {}
            PageEnd::Complete => return Ok(remote),
            PageEnd::CutShort(why) => return Err(CallError::Incomplete(why.to_owned())),
        }
    }
}

/// Refreshes the site's `jira_fields` (names of custom fields change rarely; daily is enough).
async fn sync_fields(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
) -> Result<(), CallError> {
    let listed = session.call(jira::fields()).await?;
    let rows: Vec<FieldRow> = listed
        .iter()
        .filter_map(|raw| {
            let info: jira::FieldInfo = serde_json::from_str(raw.get()).ok()?;
            Some(FieldRow {
                field_id: info.id,
                name: info.name,
                custom: info.custom,
                schema_type: info.schema.and_then(|s| s.kind),
                raw: raw.get().replace("\\u0000", ""),
            })
        })
        .collect();
    let mut conn = app.pool.acquire().await?;
    jira_fields::replace_fields(&mut conn, &site.cloud_id, &rows, app.clock.now()).await?;
    Ok(())
}
