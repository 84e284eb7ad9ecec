//! Running syncs: elect a grant per site, claim the sites due for this schedule tick, run
//! each through its elected grant, and write a `sync_runs` row per run. When the elected
//! grant turns out to need a new consent, the site is handed to another healthy grant and
//! the run continues through it.

use std::time::Instant;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{confluence_sync, jira_reconcile, jira_sync};
use crate::app::App;
use crate::atlassian::ApiError;
use crate::domain::{CloudId, GrantId, SyncKind};
use crate::lifecycle::{Refresher, TokenUnavailable};
use crate::pacing::{CallError, SiteSession, Throttles};
use crate::store::alerts::{self, AlertKind, SystemAlert};
use crate::store::sync_runs::RunTotals;
use crate::store::synced_sites::SyncedSite;
use crate::store::{sync_runs, synced_sites};

const BATCH: i64 = 8;

/// How long a claimed site's run is its own: renewed as the run commits, released when it
/// ends; a crashed run's site is free again after this.
pub const RUN_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
const CONCURRENCY: usize = 2;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Sites run (a site handed to another grant counts once).
    pub sites: usize,
    /// Runs that finished.
    pub ok: usize,
    /// Runs put off: the points budget, a quota pause, or no elected grant.
    pub deferred: usize,
    /// Runs that ended in an error (see `sync_runs.error`).
    pub failed: usize,
    /// Runs whose listing stopped before Atlassian said it was complete.
    pub incomplete: usize,
    /// Rows inserted or updated, over all runs.
    pub upserted: i64,
    /// Rows soft-deleted, over all runs.
    pub deleted: i64,
}

/// The pieces a sync needs, shared by every run of one process.
#[derive(Debug, Clone)]
pub struct Syncer {
    /// The services of the current configuration generation.
    pub app: App,
    /// This process's refresher, shared with the token sweep (single-flight per grant).
    pub refresher: Refresher,
    /// Burst-429 slowdowns per (site, endpoint); they carry over a reload.
    pub throttles: Throttles,
}

impl Syncer {
    /// A syncer over one process's refresher.
    pub fn new(app: App, refresher: Refresher) -> Self {
        Self {
            app,
            refresher,
            throttles: Throttles::default(),
        }
    }

    /// Runs `kind` for every site not yet done for `tick`.
    pub async fn run_once(
        &self,
        kind: SyncKind,
        tick: chrono::DateTime<chrono::Utc>,
        stop: &CancellationToken,
    ) -> Result<SyncReport, sqlx::Error> {
        self.elect().await?;
        self.close_abandoned_runs().await?;
        let mut report = SyncReport::default();
        while !stop.is_cancelled() {
            let sites = {
                let mut conn = self.app.pool.acquire().await?;
                let now = self.app.clock.now();
                synced_sites::claim_sites(&mut conn, kind, tick, BATCH, now, now + RUN_LEASE)
                    .await?
            };
            if sites.is_empty() {
                break;
            }
            let count = sites.len();
            let runs: Vec<_> = futures_util::stream::iter(sites)
                .map(|site| self.run_claimed(kind, site))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for run in runs {
                let (outcome, totals) = run?;
                report.sites += 1;
                report.upserted += totals.upserted;
                report.deleted += totals.deleted;
                match outcome {
                    Outcome::Ok => report.ok += 1,
                    Outcome::Deferred => report.deferred += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::Incomplete => report.incomplete += 1,
                }
            }
            if (count as i64) < BATCH {
                break;
            }
        }
        if report.sites > 0 {
            tracing::info!(kind = kind.as_str(), ?report, "sync pass");
        }
        Ok(report)
    }

    /// Runs `kind` for one site now, whatever its schedule (the operator's `sync --site`).
    /// `None` when no synced site has that cloud id and product.
    pub async fn run_site_now(
        &self,
        kind: SyncKind,
        cloud_id: &CloudId,
    ) -> Result<Option<SyncReport>, sqlx::Error> {
        self.elect().await?;
        let site = {
            let mut conn = self.app.pool.acquire().await?;
            synced_sites::get_site(&mut conn, cloud_id, kind.product()).await?
        };
        let Some(site) = site else {
            return Ok(None);
        };
        let (outcome, totals) = self.run_site(kind, site).await?;
        let mut report = SyncReport {
            sites: 1,
            upserted: totals.upserted,
            deleted: totals.deleted,
            ..SyncReport::default()
        };
        match outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Deferred => report.deferred += 1,
            Outcome::Failed => report.failed += 1,
            Outcome::Incomplete => report.incomplete += 1,
        }
        Ok(Some(report))
    }

    /// Forgets a Jira site's watermark, so that its next incremental run re-reads every
    /// issue (a backfill after changing the fields or the restriction).
    pub async fn forget_watermark(&self, cloud_id: &CloudId) -> Result<bool, sqlx::Error> {
        let mut conn = self.app.pool.acquire().await?;
        synced_sites::reset_watermark(&mut conn, cloud_id).await
    }

    /// Plans a census of every issue id of a Jira site for its next reconcile run (a backfill
    /// after changing the restriction). False when no synced Jira site has that cloud id.
    pub async fn plan_full_census(&self, cloud_id: &CloudId) -> Result<bool, sqlx::Error> {
        let site = {
            let mut conn = self.app.pool.acquire().await?;
            synced_sites::get_site(&mut conn, cloud_id, crate::domain::Product::Jira).await?
        };
        let Some(site) = site else {
            return Ok(false);
        };
        jira_reconcile::plan_full_census(&self.app, &site).await?;
        Ok(true)
    }

    /// A Jira site whose search query Jira refuses (400: its `jira.jql` names a project the
    /// site lacks, say) raises `query_rejected` for that site alone; the next accepted query
    /// resolves it. Other sites are not held up either way.
    async fn note_query_verdict(
        &self,
        conn: &mut sqlx::PgConnection,
        site: &SyncedSite,
        error: Option<&CallError>,
    ) -> Result<(), sqlx::Error> {
        if site.product != crate::domain::Product::Jira {
            return Ok(());
        }
        let subject = format!("{}/{}", site.cloud_id, site.product);
        let now = self.app.clock.now();
        match error {
            Some(CallError::Api(ApiError::Http {
                status: 400,
                message,
            })) => {
                let restriction = self.app.config.jira.jql_for(&site.cloud_id);
                let reason = format!(
                    "Jira refused the search query of {} ({}): {message}; restriction: {}. \
                     Fix jira.jql or set jira.site_jql for this cloud id",
                    site.name,
                    site.cloud_id,
                    restriction.unwrap_or("(none)")
                );
                let alert = SystemAlert {
                    kind: AlertKind::QueryRejected,
                    subject: &subject,
                    label: &site.name,
                    site: Some(&site.key()),
                    reason: &reason,
                    since: now,
                };
                if alerts::open_system_alert(conn, &alert, now).await? {
                    tracing::error!(site.cloud_id = %site.cloud_id, %reason, "search query refused");
                }
            }
            // Jira answered the query: accepted.
            None | Some(CallError::Incomplete(_)) => {
                alerts::resolve_system_alert(conn, AlertKind::QueryRejected, &subject, now).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Runs left `running` by a process that stopped mid-run are closed as failed, so
    /// `sync_runs` never shows a run in progress that nobody is doing.
    async fn close_abandoned_runs(&self) -> Result<(), sqlx::Error> {
        let now = self.app.clock.now();
        let mut conn = self.app.pool.acquire().await?;
        sync_runs::close_abandoned_runs(&mut conn, now - chrono::TimeDelta::hours(6), now).await?;
        Ok(())
    }

    async fn revalidate(&self, grant_id: GrantId) -> Result<(), sqlx::Error> {
        let grant = {
            let mut conn = self.app.pool.acquire().await?;
            crate::store::grants::get_grant(&mut conn, grant_id).await?
        };
        if let Some(grant) = grant {
            crate::jobs::revalidate::revalidate_grant(&self.app, &self.refresher, grant).await?;
        }
        Ok(())
    }

    async fn elect(&self) -> Result<(), sqlx::Error> {
        // One transaction: the advisory lock inside is held until it ends.
        let mut tx = self.app.pool.begin().await?;
        let changes = synced_sites::elect_grants(&mut tx, self.app.clock.now()).await?;
        tx.commit().await?;
        for (cloud_id, product, old, new) in changes {
            tracing::info!(site.cloud_id = %cloud_id, site.product = %product, ?old, ?new, "site elected a grant");
        }
        Ok(())
    }

    /// Runs a site this process claimed, then releases its lease.
    async fn run_claimed(
        &self,
        kind: SyncKind,
        site: SyncedSite,
    ) -> Result<(Outcome, RunTotals), sqlx::Error> {
        let key = site.key();
        let run = self.run_site(kind, site).await;
        let mut conn = self.app.pool.acquire().await?;
        synced_sites::release_run_lease(&mut conn, &key, kind).await?;
        run
    }

    /// Runs one site, handing it over once if its grant needs a new consent.
    async fn run_site(
        &self,
        kind: SyncKind,
        mut site: SyncedSite,
    ) -> Result<(Outcome, RunTotals), sqlx::Error> {
        let mut handed_over = false;
        loop {
            let Some(grant_id) = site.elected_grant_id else {
                return Ok((Outcome::Deferred, RunTotals::default()));
            };
            let (outcome, totals, error) = self.run_with_grant(kind, &site, grant_id).await?;
            // The grant can no longer serve this site: re-elect and continue through another.
            let lost_grant = matches!(
                error,
                Some(CallError::Token(TokenUnavailable::NeedsReauth(_)))
                    | Some(CallError::Api(ApiError::ScopeMismatch(_)))
            );
            // The gateway no longer knows this site for the grant: learn why from
            // accessible-resources now, rather than at the next scheduled revalidation.
            let lost_site = matches!(error, Some(CallError::Api(ApiError::NotFound(_))));
            if (lost_grant || lost_site) && !handed_over {
                handed_over = true;
                if lost_site {
                    self.revalidate(grant_id).await?;
                }
                self.elect().await?;
                let mut conn = self.app.pool.acquire().await?;
                let reloaded =
                    synced_sites::get_site(&mut conn, &site.cloud_id, site.product).await?;
                match reloaded {
                    Some(next)
                        if next.elected_grant_id.is_some()
                            && next.elected_grant_id != Some(grant_id) =>
                    {
                        tracing::info!(site.cloud_id = %site.cloud_id, from = %grant_id, to = ?next.elected_grant_id, "site handed to another grant");
                        site = next;
                        continue;
                    }
                    _ => {}
                }
            }
            return Ok((outcome, totals));
        }
    }

    async fn run_with_grant(
        &self,
        kind: SyncKind,
        site: &SyncedSite,
        grant_id: GrantId,
    ) -> Result<(Outcome, RunTotals, Option<CallError>), sqlx::Error> {
        let started = Instant::now();
        let run_id = {
            let mut conn = self.app.pool.acquire().await?;
            sync_runs::start_run(&mut conn, site, kind, grant_id, self.app.clock.now()).await?
        };
        let mut session = SiteSession::new(
            &self.app,
            &self.refresher,
            &self.throttles,
            grant_id,
            site.key(),
        );
        let mut totals = RunTotals::default();
        let result = match kind {
            SyncKind::JiraIncremental => {
                jira_sync::incremental(&self.app, &mut session, site, &mut totals).await
            }
            SyncKind::JiraReconcile => {
                jira_reconcile::reconcile(&self.app, &mut session, site, &mut totals).await
            }
            SyncKind::ConfluenceSpaces => {
                confluence_sync::spaces(&self.app, &mut session, site, &mut totals).await
            }
        };
        totals.requests = session.requests;
        totals.points_used = session.points;
        totals.points_remaining = session.points_remaining;
        let (outcome, error) = match result {
            Ok(()) => (Outcome::Ok, None),
            Err(CallError::Store(e)) => return Err(e),
            Err(
                e @ (CallError::BudgetDeferred { .. }
                | CallError::SliceSpent { .. }
                | CallError::QuotaPaused { .. }
                | CallError::SitePaused { .. }),
            ) => (Outcome::Deferred, Some(e)),
            Err(e @ CallError::Incomplete(_)) => (Outcome::Incomplete, Some(e)),
            Err(e) => (Outcome::Failed, Some(e)),
        };
        let message = error.as_ref().map(ToString::to_string);
        let now = self.app.clock.now();
        let mut conn = self.app.pool.acquire().await?;
        sync_runs::finish_run(
            &mut conn,
            run_id,
            outcome.as_str(),
            message.as_deref(),
            &totals,
            started.elapsed().as_millis() as i64,
            now,
        )
        .await?;
        if outcome == Outcome::Ok {
            synced_sites::mark_site_synced(&mut conn, &site.cloud_id, site.product, kind, now)
                .await?;
        }
        self.note_query_verdict(&mut conn, site, error.as_ref())
            .await?;
        tracing::info!(
            sync.kind = kind.as_str(),
            site.cloud_id = %site.cloud_id,
            grant.id = %grant_id,
            outcome = outcome.as_str(),
            upserted = totals.upserted,
            deleted = totals.deleted,
            requests = totals.requests,
            points = totals.points_used,
            points_remaining = totals.points_remaining,
            error = message.as_deref(),
            "sync run"
        );
        Ok((outcome, totals, error))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Deferred,
    Failed,
    /// The listing stopped before Atlassian said it was complete; what it read is kept.
    Incomplete,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
        }
    }
}
