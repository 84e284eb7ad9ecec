//! Finding deleted Jira issues: there is no "deleted since" feed, so the full id set of the
//! synced scope is enumerated (ids only, 5,000 a page), local ids missing from it are
//! confirmed gone with a bulk fetch (search is eventually consistent; bulk fetch reads the
//! database), and confirmed ones are soft-deleted. Issues that come back are restored.

use std::collections::HashSet;

use crate::app::App;
use crate::atlassian::jira;
use crate::pacing::{CallError, SiteSession};
use crate::store::jira_issues;
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites::SyncedSite;

/// Reconciles the issue ids of `site`.
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
    session
        .reserve(local_count + local_count / 5000 + 1)
        .await?;
    let bound = "created >= \"1970-01-01\"";
    let jql = match app.config.jira.jql.as_deref() {
        Some(restriction) => format!("({restriction}) AND {bound} ORDER BY id ASC"),
        None => format!("{bound} ORDER BY id ASC"),
    };
    let mut remote: HashSet<String> = HashSet::new();
    let mut sent: Option<String> = None;
    loop {
        let page = session
            .call(jira::search(&jql, &["id"], 5000, sent.as_deref()))
            .await?;
        let next = page.next(sent.as_deref());
        remote.extend(page.issues.iter().filter_map(|raw| jira::issue_id(raw)));
        match next {
            Some(token) => sent = Some(token),
            None => break,
        }
    }

    let local = {
        let mut conn = app.pool.acquire().await?;
        jira_issues::live_issue_ids(&mut conn, &site.cloud_id).await?
    };
    let candidates: Vec<String> = local
        .into_iter()
        .filter(|id| !remote.contains(id))
        .collect();
    let mut gone = Vec::new();
    for chunk in candidates.chunks(100) {
        let present: HashSet<String> = session
            .call(jira::bulk_fetch(chunk))
            .await?
            .existing_ids()
            .into_iter()
            .collect();
        gone.extend(chunk.iter().filter(|id| !present.contains(*id)).cloned());
    }
    let remote: Vec<String> = remote.into_iter().collect();
    let mut tx = app.pool.begin().await?;
    totals.deleted =
        jira_issues::mark_issues_deleted(&mut tx, &site.cloud_id, &gone, started, app.clock.now())
            .await? as i64;
    totals.restored = jira_issues::restore_issues(&mut tx, &site.cloud_id, &remote).await? as i64;
    tx.commit().await?;
    Ok(())
}
