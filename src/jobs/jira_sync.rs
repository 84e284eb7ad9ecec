//! Incremental Jira sync by `updated`.
//!
//! JQL date literals are minute-precise and read in the *calling user's* Jira time zone, so
//! the watermark (a UTC instant) is converted into that zone before it is written into the
//! query, floored to the minute, and moved back by `sync.jira_overlap`. Upserts make the
//! overlap harmless. The watermark advances in the same transaction as each page's rows, so
//! a run that dies mid-way resumes after the last committed page; a complete scan moves it
//! to the instant the scan started, so the next run re-reads only the overlap window (index
//! lag and clock skew), not the previous run's changes.

use chrono::{DateTime, DurationRound, LocalResult, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::app::App;
use crate::atlassian::jira::{self, PageEnd, SYNC_FIELDS, Scan};
use crate::domain::{CloudId, IssueRow, Product, SiteKey, SyncKind};
use crate::jobs::sync::RUN_LEASE;
use crate::pacing::{CallError, SiteSession};
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites::SyncedSite;
use crate::store::{jira_issues, synced_sites};

/// Rows per write transaction: fewer, larger commits are markedly cheaper than one per page.
const WRITE_BATCH: usize = 1000;

/// Syncs the issues of `site` updated since its watermark.
pub async fn incremental(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
    totals: &mut RunTotals,
) -> Result<(), CallError> {
    let (zone, margin) = user_zone(app, session, site).await?;
    let run_started = app.clock.now();
    let watermark = site.jira_watermark.unwrap_or(DateTime::UNIX_EPOCH);
    let sync = &app.config.sync;
    // Once a day (by default) the window reaches a day further back: what index lag beyond
    // the overlap hid from earlier runs is found then.
    let rescan = site
        .jira_rescanned_at
        .is_none_or(|at| run_started - at >= sync.jira_rescan_every);
    let widening = if rescan && site.jira_watermark.is_some() {
        sync.jira_rescan_window
    } else {
        TimeDelta::zero()
    };
    let jql = incremental_jql(
        app.config.jira.jql_for(&site.cloud_id),
        watermark,
        sync.jira_overlap + margin + widening,
        zone,
    );
    tracing::debug!(site.cloud_id = %site.cloud_id, %jql, "incremental search");
    let page_size = app.config.sync.jira_page_size.min(100);
    let index_lag = app.config.sync.jira_index_lag;

    // Downloading and writing run side by side: the fetcher hands batches of about
    // WRITE_BATCH rows to the writer through a short queue, and the writer commits them in
    // order, each with the watermark its rows prove.
    let (batches, mut queue) = tokio::sync::mpsc::channel::<Batch>(2);
    let fetcher = async move {
        let mut scan = Scan::default();
        let mut high_water = watermark;
        let mut pending: Vec<IssueRow> = Vec::new();
        loop {
            let mut page = match session
                .call(jira::search(&jql, SYNC_FIELDS, page_size, scan.token()))
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    // What was read before the failure (a pause, a dead grant) is kept: the
                    // next run starts after it instead of reading it again.
                    if !pending.is_empty() {
                        let batch = Batch {
                            rows: std::mem::take(&mut pending),
                            watermark: high_water,
                        };
                        let _ = batches.send(batch).await;
                    }
                    return Err(e);
                }
            };
            let end = scan.after(&page);
            pending.extend(
                std::mem::take(&mut page.issues)
                    .into_iter()
                    .filter_map(jira::issue_row),
            );
            if end == PageEnd::Complete {
                // Atlassian says the scan is complete: everything updated before it started
                // has been seen, apart from what the index had not caught up with yet.
                high_water = high_water.max(run_started - index_lag);
            } else if let Some(max) = pending.iter().filter_map(|r| r.updated_at).max() {
                // Otherwise only what the rows prove, and never past the run's start.
                high_water = high_water.max(max.min(run_started));
            }
            let more = matches!(end, PageEnd::More(_));
            if !more || pending.len() >= WRITE_BATCH {
                let batch = Batch {
                    rows: std::mem::take(&mut pending),
                    watermark: high_water,
                };
                if batches.send(batch).await.is_err() {
                    // The writer failed; its error is the one reported.
                    return Ok::<(), CallError>(());
                }
            }
            match end {
                PageEnd::More(_) => {}
                PageEnd::Complete => return Ok(()),
                PageEnd::CutShort(why) => return Err(CallError::Incomplete(why.to_owned())),
            }
        }
    };
    let writer = async {
        let mut stored = jira_issues::Stored::default();
        let mut committed = None;
        while let Some(batch) = queue.recv().await {
            let page = commit_page(app, &site.cloud_id, &batch.rows, batch.watermark).await?;
            stored.upserted += page.upserted;
            stored.quarantined += page.quarantined;
            committed = Some(batch.watermark);
        }
        Ok::<_, CallError>((stored, committed))
    };
    let (fetched, written) = tokio::join!(fetcher, writer);
    // What was committed counts even when the scan failed part-way.
    let written = written.map(|(stored, committed)| {
        totals.upserted += stored.upserted as i64;
        totals.quarantined += stored.quarantined as i64;
        totals.watermark_after = committed;
    });
    fetched?;
    written?;
    if rescan {
        let mut conn = app.pool.acquire().await?;
        synced_sites::mark_rescanned(&mut conn, &site.cloud_id, run_started).await?;
    }
    Ok(())
}

/// The elected user's Jira time zone (JQL date literals are read in it) and the margin its
/// uncertainty costs. `/myself` is asked once a day per grant, not on every run.
async fn user_zone(
    app: &App,
    session: &mut SiteSession<'_>,
    site: &SyncedSite,
) -> Result<(Tz, TimeDelta), CallError> {
    // An unknown zone could be anywhere from UTC-12 to UTC+14: write the literal in UTC and
    // widen the window by the largest possible offset rather than guess.
    const UNKNOWN_ZONE_MARGIN: TimeDelta = TimeDelta::hours(14);
    let now = app.clock.now();
    let fresh = site.jira_time_zone_grant == Some(session.grant_id())
        && site
            .jira_time_zone_at
            .is_some_and(|at| now - at < TimeDelta::days(1) && at <= now);
    let name = if fresh {
        site.jira_time_zone.clone()
    } else {
        let name = session.call(jira::myself()).await?.time_zone;
        let mut conn = app.pool.acquire().await?;
        synced_sites::remember_time_zone(
            &mut conn,
            &site.cloud_id,
            session.grant_id(),
            name.as_deref(),
            now,
        )
        .await?;
        name
    };
    Ok(match name {
        Some(name) => match name.parse::<Tz>() {
            Ok(zone) => (zone, TimeDelta::zero()),
            Err(_) => {
                tracing::warn!(site.cloud_id = %site.cloud_id, time_zone = %name, "unknown Jira time zone; widening the window by 14 h");
                (Tz::UTC, UNKNOWN_ZONE_MARGIN)
            }
        },
        None => (Tz::UTC, UNKNOWN_ZONE_MARGIN),
    })
}

/// Rows committed together, and the watermark they prove.
struct Batch {
    rows: Vec<IssueRow>,
    watermark: DateTime<Utc>,
}

async fn commit_page(
    app: &App,
    cloud_id: &CloudId,
    rows: &[IssueRow],
    watermark: DateTime<Utc>,
) -> Result<jira_issues::Stored, CallError> {
    let mut tx = app.pool.begin().await?;
    let now = app.clock.now();
    let written = jira_issues::upsert_or_set_aside(&mut tx, cloud_id, rows, now).await?;
    synced_sites::advance_watermark(&mut tx, cloud_id, watermark).await?;
    let site = SiteKey {
        cloud_id: cloud_id.clone(),
        product: Product::Jira,
    };
    synced_sites::renew_run_lease(&mut tx, &site, SyncKind::JiraIncremental, now + RUN_LEASE)
        .await?;
    tx.commit().await?;
    Ok(written)
}

/// `[(restriction) AND ] updated >= "<watermark - overlap, in zone, floored>" ORDER BY updated ASC, id ASC`.
pub fn incremental_jql(
    restriction: Option<&str>,
    watermark: DateTime<Utc>,
    overlap: TimeDelta,
    zone: Tz,
) -> String {
    let mut from = (watermark - overlap).max(DateTime::UNIX_EPOCH);
    // In the hour a clock falls back, a wall time names two instants; Jira may read the
    // later one, which would skip up to an hour. Write the wall time of the earlier reading.
    if let LocalResult::Ambiguous(earlier, later) =
        zone.from_local_datetime(&zone.from_utc_datetime(&from.naive_utc()).naive_local())
    {
        from -= later.signed_duration_since(earlier);
    }
    let local = zone.from_utc_datetime(&from.naive_utc());
    // Flooring to the minute only widens the window.
    let local = local.duration_trunc(TimeDelta::minutes(1)).unwrap_or(local);
    let bound = format!("updated >= \"{}\"", local.format("%Y-%m-%d %H:%M"));
    match restriction {
        Some(restriction) => format!("({restriction}) AND {bound} ORDER BY updated ASC, id ASC"),
        None => format!("{bound} ORDER BY updated ASC, id ASC"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn the_watermark_is_written_in_the_users_zone_with_the_overlap() {
        let watermark = at("2026-03-01T09:14:30Z");
        let overlap = TimeDelta::minutes(5);
        assert_eq!(
            incremental_jql(None, watermark, overlap, Tz::UTC),
            "updated >= \"2026-03-01 09:09\" ORDER BY updated ASC, id ASC"
        );
        // UTC+10 (Brisbane has no DST) and UTC-8 (Los Angeles in winter).
        assert!(
            incremental_jql(None, watermark, overlap, Tz::Australia__Brisbane)
                .contains("\"2026-03-01 19:09\"")
        );
        assert!(
            incremental_jql(None, watermark, overlap, Tz::America__Los_Angeles)
                .contains("\"2026-03-01 01:09\"")
        );
        // New York falls back at 02:00 EDT on 2026-11-01: 01:35 happens twice. The literal is
        // written an hour earlier, so either reading of it starts the window in time.
        let fall_back = at("2026-11-01T05:40:00Z"); // 01:40 EDT, the first 01:40
        assert!(
            incremental_jql(None, fall_back, overlap, Tz::America__New_York)
                .contains("\"2026-11-01 00:35\""),
            "{}",
            incremental_jql(None, fall_back, overlap, Tz::America__New_York)
        );
        assert_eq!(
            incremental_jql(Some("project in (ENG, OPS)"), watermark, overlap, Tz::UTC),
            "(project in (ENG, OPS)) AND updated >= \"2026-03-01 09:09\" ORDER BY updated ASC, id ASC"
        );
    }
}
