//! `atlassync sync`: one pass now, for every site or one; a full re-read of a site; or the
//! operator's confirmation of held deletions.

use std::process::ExitCode;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::domain::{CloudId, Product, SyncKind};
use crate::jobs::sync::{SyncReport, Syncer};
use crate::store::synced_sites;

/// What the operator asked for.
#[derive(Debug)]
pub(super) enum SyncRequest {
    /// Every site, once.
    All {
        /// Also reconcile Jira issue ids.
        reconcile: bool,
    },
    /// One site, now.
    Site {
        /// The site.
        cloud_id: CloudId,
        /// Re-read every issue (the watermark is forgotten first).
        full: bool,
        /// Also reconcile Jira issue ids.
        reconcile: bool,
    },
    /// Apply the site's held deletions.
    ConfirmDeletes(CloudId),
}

/// Runs the request; exit 0 when every run ended well, 1 when one failed, 2 for an unknown
/// site.
pub(super) async fn run(
    app: &App,
    syncer: &Syncer,
    request: SyncRequest,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    match request {
        SyncRequest::All { reconcile } => {
            let stop = tokio_util::sync::CancellationToken::new();
            // A tick of "now" is newer than any scheduled tick, so every site runs.
            let tick = SystemClock.now();
            for kind in kinds(reconcile) {
                let report = syncer.run_once(kind, tick, &stop).await?;
                print_report(kind, &report);
                failed += report.failed + report.incomplete;
            }
        }
        SyncRequest::Site {
            cloud_id,
            full,
            reconcile,
        } => {
            if full
                && !(syncer.forget_watermark(&cloud_id).await?
                    && syncer.plan_full_census(&cloud_id).await?)
            {
                eprintln!(
                    "sync --full: no Jira site has cloud id {cloud_id} (see `atlassync sites list`)"
                );
                return Ok(ExitCode::from(2));
            }
            let mut known = false;
            for kind in kinds(reconcile || full) {
                let Some(report) = syncer.run_site_now(kind, &cloud_id).await? else {
                    continue;
                };
                known = true;
                print_report(kind, &report);
                failed += report.failed + report.incomplete;
            }
            if !known {
                eprintln!(
                    "sync --site: no synced site has cloud id {cloud_id} (see `atlassync sites list`)"
                );
                return Ok(ExitCode::from(2));
            }
        }
        SyncRequest::ConfirmDeletes(cloud_id) => {
            let confirmed = {
                let mut conn = app.pool.acquire().await?;
                synced_sites::confirm_deletions(&mut conn, &cloud_id, app.clock.now()).await?
            };
            if confirmed.is_empty() {
                eprintln!(
                    "sync --confirm-deletes: no synced site has cloud id {cloud_id} (see `atlassync sites list`)"
                );
                return Ok(ExitCode::from(2));
            }
            for (product, held) in confirmed {
                match held {
                    Some(held) => eprintln!("{product}: applying {held} held deletions"),
                    None => eprintln!("{product}: no deletion was held; reconciling anyway"),
                }
                let kind = match product {
                    Product::Jira => SyncKind::JiraReconcile,
                    Product::Confluence => SyncKind::ConfluenceSpaces,
                };
                if let Some(report) = syncer.run_site_now(kind, &cloud_id).await? {
                    print_report(kind, &report);
                    failed += report.failed + report.incomplete + report.deferred;
                }
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn kinds(reconcile: bool) -> Vec<SyncKind> {
    let mut kinds = vec![SyncKind::JiraIncremental, SyncKind::ConfluenceSpaces];
    if reconcile {
        kinds.push(SyncKind::JiraReconcile);
    }
    kinds
}

fn print_report(kind: SyncKind, report: &SyncReport) {
    eprintln!(
        "{}: {} sites, {} ok, {} deferred, {} incomplete, {} failed, {} upserted, {} deleted",
        kind.as_str(),
        report.sites,
        report.ok,
        report.deferred,
        report.incomplete,
        report.failed,
        report.upserted,
        report.deleted
    );
}
