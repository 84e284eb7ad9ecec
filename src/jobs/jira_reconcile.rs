//! Making a site's issues match Atlassian's census. There is no "deleted since" feed, and an
//! id census costs about a point per issue, so reconciliation works in passes that spend
//! points only where something changed, and that resume where they stopped:
//!
//! 1. **Drift check.** Atlassian's `approximate-count` (one point) of the site's scope is
//!    compared with the local count of live rows; a range that differs is halved at its
//!    local median and each half counted again, down to ranges of a few dozen local issues.
//!    A site where nothing vanished or appeared out of sight costs one point; one deleted
//!    issue among 100,000 costs about 25 counts and a census of a few dozen ids.
//! 2. **Census** of the ranges that drifted (every id with `sync --full`), in id order, page
//!    by page. Ids up to the last one listed are proven, and that progress is stored, so a
//!    census cut short by the hour's points budget, a restart or an incomplete listing
//!    resumes there at the next tick. In a proven stretch:
//!    - ids Atlassian lists and the table lacks (a project that became visible with old
//!      `updated` values, a hand-over to a grant that sees more, an edited `jira.jql`) are
//!      fetched with the sync's fields and inserted; listed ids whose row was soft-deleted
//!      are re-read and restored with current content;
//!    - live ids Atlassian does not list are confirmed with a bulk fetch (search is
//!      eventually consistent; bulk fetch reads the database): absent ones are gone
//!      (deleted, or no longer visible); present ones are checked against `jira.jql` with
//!      read-after-write consistency, and those outside it left the scope. Both are recorded
//!      as vanished.
//! 3. **End of the pass.** The vanished issues of the whole pass go through the deletion
//!    guard together: soft-deleted, or held for an operator when they are too many. Held
//!    ones are re-checked at the start of every later pass, and forgotten if they came back.

use std::collections::HashSet;

use chrono::TimeDelta;

use crate::app::App;
use crate::atlassian::jira::{self, PageEnd, SYNC_FIELDS, Scan};
use crate::domain::{IdRange, SyncKind};
use crate::jobs::deletion_guard::{self, Verdict};
use crate::jobs::sync::RUN_LEASE;
use crate::pacing::{CallError, SiteSession};
use crate::store::jira_census::{self, Pass, PendingRange};
use crate::store::jira_fields::{self, FieldRow};
use crate::store::jira_issues;
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites;
use crate::store::synced_sites::SyncedSite;

/// A drifted range with at most this many local issues is censused rather than halved
/// again. Halving costs two counts (a point each) and halves the census that follows, so it
/// pays down to small ranges; below this, the requests outweigh the points saved.
const LEAF: usize = 32;

/// The most ids an id-only search page carries.
const CENSUS_PAGE: i64 = 5000;

/// The fewest ids worth a census page of their own.
const LEAST_CENSUS_PAGE: i64 = 100;

/// Points kept back from a census page for the reads that settle it (a bulk fetch of the
/// few ids that differ, usually): a page is only paid for when it can also be settled.
const SETTLE_ROOM: i64 = 20;

/// Field names change rarely: listing them daily is enough.
const FIELDS_EVERY: TimeDelta = TimeDelta::days(1);

/// Reconciles the issues of `site`: continues its pass in progress, or starts one.
pub async fn reconcile(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let restriction = app.config.jira.jql_for(&site.cloud_id);
    let pass = {
        let mut conn = app.pool.acquire().await?;
        jira_census::pass(&mut conn, &site.cloud_id).await?
    };
    refresh_fields(app, session, site, pass.as_ref()).await?;
    let mut local = LocalIds::load(app, site).await?;
    let pass = match pass {
        Some(pass) => pass,
        None => begin_pass(app, session, site, restriction, &mut local).await?,
    };
    let pending = {
        let mut conn = app.pool.acquire().await?;
        jira_census::pending_ranges(&mut conn, &site.cloud_id).await?
    };
    for range in pending {
        census_range(app, session, site, restriction, &mut local, range, totals).await?;
    }
    end_pass(app, site, &pass, totals).await
}

/// Plans a census of every id for the site's next reconcile run, replacing any pass in
/// progress (`sync --full`).
pub async fn plan_full_census(app: &App, site: &SyncedSite) -> Result<(), sqlx::Error> {
    let mut tx = app.pool.begin().await?;
    jira_census::begin_pass(
        &mut tx,
        &site.cloud_id,
        app.clock.now(),
        true,
        &[IdRange::ALL],
    )
    .await?;
    tx.commit().await
}

/// The site's rows by numeric id, with the issues known to have vanished.
struct LocalIds {
    /// (id, id text, soft-deleted), ascending by id.
    rows: Vec<(i64, String, bool)>,
    /// Live rows found gone and not yet deleted (held, or found earlier in this pass).
    vanished: HashSet<String>,
}

impl LocalIds {
    async fn load(app: &App, site: &SyncedSite) -> Result<Self, sqlx::Error> {
        let mut conn = app.pool.acquire().await?;
        let mut rows: Vec<(i64, String, bool)> = jira_issues::id_states(&mut conn, &site.cloud_id)
            .await?
            .into_iter()
            // Jira issue ids are numbers; anything else can never be listed by id.
            .filter_map(|(id, deleted)| Some((id.parse().ok()?, id, deleted)))
            .collect();
        rows.sort_unstable_by_key(|(id, ..)| *id);
        let vanished = jira_census::vanished(&mut conn, &site.cloud_id)
            .await?
            .into_iter()
            .collect();
        Ok(Self { rows, vanished })
    }

    /// The rows in `range`.
    fn in_range(&self, range: IdRange) -> &[(i64, String, bool)] {
        range.slice_by(&self.rows, |(id, ..)| *id)
    }

    /// Ids of the live rows not known to have vanished, ascending: what Atlassian should list.
    fn expected(&self) -> Vec<i64> {
        self.rows
            .iter()
            .filter(|(_, id, deleted)| !deleted && !self.vanished.contains(id))
            .map(|(id, ..)| *id)
            .collect()
    }
}

/// Starts a pass: re-checks the issues held as vanished, then finds the ranges that drifted.
async fn begin_pass(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    restriction: Option<&str>,
    local: &mut LocalIds,
) -> Result<Pass, CallError> {
    let started_at = app.clock.now();
    if !local.vanished.is_empty() {
        let held: Vec<String> = local.vanished.iter().cloned().collect();
        let gone: HashSet<String> = confirm_gone(session, restriction, &held)
            .await?
            .into_iter()
            .collect();
        let back: Vec<String> = held.into_iter().filter(|id| !gone.contains(id)).collect();
        if !back.is_empty() {
            let mut conn = app.pool.acquire().await?;
            jira_census::forget_vanished(&mut conn, &site.cloud_id, &back).await?;
        }
        local.vanished = gone;
    }
    let drifted = drifted_ranges(session, restriction, &local.expected()).await?;
    let mut tx = app.pool.begin().await?;
    jira_census::begin_pass(&mut tx, &site.cloud_id, started_at, false, &drifted).await?;
    tx.commit().await?;
    if !drifted.is_empty() {
        tracing::info!(site.cloud_id = %site.cloud_id, ranges = drifted.len(), "issue ids drifted: censusing those ranges");
    }
    Ok(Pass {
        started_at,
        full_census: false,
    })
}

/// The ranges where Atlassian's count differs from `expected` (ascending ids), narrowed
/// by halving down to ranges of at most `LEAF` local issues.
async fn drifted_ranges(
    session: &mut SiteSession<'_>,
    restriction: Option<&str>,
    expected: &[i64],
) -> Result<Vec<IdRange>, CallError> {
    let mut drifted = Vec::new();
    let whole = remote_count(session, restriction, IdRange::ALL).await?;
    let mut work = vec![(IdRange::ALL, whole)];
    while let Some((range, remote)) = work.pop() {
        let here = range.slice(expected);
        if here.len() as i64 == remote {
            continue;
        }
        if here.len() <= LEAF {
            drifted.push(range);
            continue;
        }
        // Split at the local median: both halves hold local issues, so each step halves
        // what a census of the drift would cost.
        let (low, high) = range.split_at(here[here.len() / 2]);
        let low_count = remote_count(session, restriction, low).await?;
        let high_count = remote_count(session, restriction, high).await?;
        work.push((high, high_count));
        work.push((low, low_count));
    }
    drifted.sort_unstable();
    Ok(drifted)
}

async fn remote_count(
    session: &mut SiteSession<'_>,
    restriction: Option<&str>,
    range: IdRange,
) -> Result<i64, CallError> {
    let jql = scope_jql(restriction, range);
    Ok(session.call(jira::approximate_count(&jql)).await?.count)
}

/// The bounded JQL of the site's scope within `range` (no ordering).
fn scope_jql(restriction: Option<&str>, range: IdRange) -> String {
    // A query must be bounded; every issue was created after 1970.
    let mut clauses = vec!["created >= \"1970-01-01\"".to_owned()];
    if let Some(restriction) = restriction {
        clauses.insert(0, format!("({restriction})"));
    }
    clauses.extend(range.jql());
    clauses.join(" AND ")
}

/// Censuses what is left of `pending`, page by page, storing its progress after each.
async fn census_range(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    restriction: Option<&str>,
    local: &mut LocalIds,
    pending: PendingRange,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let mut from = pending.rest.start;
    let mut jql = String::new();
    let mut scan = Scan::default();
    let mut scan_page_size = 0;
    loop {
        // Each page fits what the run may still spend, with room to settle it: a page paid
        // for but not settled would be read again by the next run.
        let room = session.room(LEAST_CENSUS_PAGE + SETTLE_ROOM).await?;
        let page_size = (room - SETTLE_ROOM - 1).clamp(LEAST_CENSUS_PAGE, CENSUS_PAGE) as u32;
        if page_size != scan_page_size {
            // A page token belongs to its query and page size: a new size starts a new query
            // from the first id not yet proven.
            let rest = IdRange {
                start: from,
                end: pending.rest.end,
            };
            jql = format!("{} ORDER BY id ASC", scope_jql(restriction, rest));
            scan = Scan::default();
            scan_page_size = page_size;
        }
        let page = session
            .call(jira::search(&jql, &["id"], page_size, scan.token()))
            .await?;
        let listed: Vec<(i64, String)> = page
            .issues
            .iter()
            .filter_map(|raw| jira::issue_id(raw))
            .filter_map(|id| Some((id.parse().ok()?, id)))
            .collect();
        // Listed in id order: every id up to the last one listed is accounted for.
        let next = match scan.after(&page) {
            PageEnd::Complete => None,
            PageEnd::More(_) => match listed.iter().map(|(id, _)| *id).max() {
                Some(last) => Some(last + 1),
                // An empty page proves nothing; follow its token.
                None => continue,
            },
            PageEnd::CutShort(why) => return Err(CallError::Incomplete(why.to_owned())),
        };
        let proven = IdRange {
            start: from,
            end: next.or(pending.rest.end),
        };
        let listed: HashSet<String> = listed.into_iter().map(|(_, id)| id).collect();
        settle(
            app,
            session,
            site,
            restriction,
            local,
            proven,
            &listed,
            totals,
        )
        .await?;
        let gone: Vec<String> = local
            .in_range(proven)
            .iter()
            .filter(|(_, id, _)| local.vanished.contains(id))
            .map(|(_, id, _)| id.clone())
            .collect();
        let back: Vec<String> = listed
            .iter()
            .filter(|id| local.vanished.contains(*id))
            .cloned()
            .collect();
        let mut tx = app.pool.begin().await?;
        jira_census::add_vanished(&mut tx, &site.cloud_id, &gone, app.clock.now()).await?;
        jira_census::forget_vanished(&mut tx, &site.cloud_id, &back).await?;
        jira_census::advance_range(&mut tx, &site.cloud_id, pending.start, next).await?;
        // The census may take a while on a large site: the run is still alive.
        let until = app.clock.now() + RUN_LEASE;
        synced_sites::renew_run_lease(&mut tx, &site.key(), SyncKind::JiraReconcile, until).await?;
        tx.commit().await?;
        for id in &back {
            local.vanished.remove(id);
        }
        match next {
            Some(next) => from = next,
            None => return Ok(()),
        }
    }
}

/// Makes the rows in `proven` match `listed` (Atlassian's ids there): fetches what is
/// missing or soft-deleted here, and adds the live rows that are gone to `local.vanished`.
#[allow(clippy::too_many_arguments)]
async fn settle(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    restriction: Option<&str>,
    local: &mut LocalIds,
    proven: IdRange,
    listed: &HashSet<String>,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let here = local.in_range(proven);
    let known: HashSet<&str> = here.iter().map(|(_, id, _)| id.as_str()).collect();
    let restore: HashSet<&str> = here
        .iter()
        .filter(|(_, _, deleted)| *deleted)
        .map(|(_, id, _)| id.as_str())
        .collect();
    let mut to_fetch: Vec<String> = listed
        .iter()
        .filter(|id| !known.contains(id.as_str()) || restore.contains(id.as_str()))
        .cloned()
        .collect();
    to_fetch.sort_unstable();
    let candidates: Vec<String> = here
        .iter()
        .filter(|(_, id, deleted)| !deleted && !listed.contains(id) && !local.vanished.contains(id))
        .map(|(_, id, _)| id.clone())
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
            .filter(|r| !known.contains(r.issue_id.as_str()))
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
    let gone = confirm_gone(session, restriction, &candidates).await?;
    local.vanished.extend(gone);
    Ok(())
}

/// Which of `candidates` (live here, not listed by search) are really gone: absent from a
/// bulk fetch (deleted or no longer visible), or present but outside the restriction.
async fn confirm_gone(
    session: &mut SiteSession<'_>,
    restriction: Option<&str>,
    candidates: &[String],
) -> Result<Vec<String>, CallError> {
    let mut gone = Vec::new();
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
                gone.push(id.clone());
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
            gone.extend(chunk.iter().filter(|id| !in_scope.contains(*id)).cloned());
        }
    }
    Ok(gone)
}

/// Ends a pass whose ranges are all censused: its vanished issues are deleted, or held.
async fn end_pass(
    app: &App,
    site: &SyncedSite,
    pass: &Pass,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let (vanished, live) = {
        let mut conn = app.pool.acquire().await?;
        let vanished = jira_census::vanished(&mut conn, &site.cloud_id).await?;
        let (live, _) = jira_issues::live_and_deleted(&mut conn, &site.cloud_id).await?;
        (vanished, live as usize)
    };
    let key = site.key();
    let verdict = deletion_guard::check(app, &key, &site.name, vanished.len(), live).await?;
    let mut tx = app.pool.begin().await?;
    match verdict {
        Verdict::Hold => totals.held = vanished.len() as i64,
        Verdict::Apply => {
            // Rows synced since the pass began are newer than its evidence and stay.
            totals.deleted = jira_issues::mark_issues_deleted(
                &mut tx,
                &site.cloud_id,
                &vanished,
                pass.started_at,
                app.clock.now(),
            )
            .await? as i64;
            jira_census::forget_vanished(&mut tx, &site.cloud_id, &vanished).await?;
        }
    }
    jira_census::end_pass(&mut tx, &site.cloud_id).await?;
    tx.commit().await?;
    if verdict == Verdict::Apply {
        deletion_guard::settled(app, &key).await?;
    }
    Ok(())
}

/// Lists the site's fields when the last listing is a day old, or older than a full pass.
async fn refresh_fields(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    pass: Option<&Pass>,
) -> Result<(), CallError> {
    let listed_at = {
        let mut conn = app.pool.acquire().await?;
        jira_fields::listed_at(&mut conn, &site.cloud_id).await?
    };
    let due = match (listed_at, pass) {
        (None, _) => true,
        (Some(at), Some(pass)) if pass.full_census && at < pass.started_at => true,
        (Some(at), _) => at + FIELDS_EVERY <= app.clock.now(),
    };
    if !due {
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_query_is_bounded_and_restricted_to_the_range() {
        let range = IdRange {
            start: 10,
            end: Some(20),
        };
        assert_eq!(
            scope_jql(Some("project = ENG"), range),
            "(project = ENG) AND created >= \"1970-01-01\" AND id >= 10 AND id < 20"
        );
        assert_eq!(scope_jql(None, IdRange::ALL), "created >= \"1970-01-01\"");
    }
}
