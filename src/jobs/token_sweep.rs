//! The token sweep: keep alive (rotate idle refresh tokens), recover interrupted exchanges,
//! keep warm the grants that have work due, and warn before a family's absolute deadline.

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts;
use crate::app::App;
use crate::lifecycle::{RefreshOutcome, Refresher};
use crate::store::alerts::AlertKind;
use crate::store::grants;

/// How many exchanges run at once. A grant is claimed only into a free slot, so it starts at
/// once: a claimed grant waiting its turn would burn its lease.
const CONCURRENCY: usize = 8;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Exchanges persisted.
    pub rotated: usize,
    /// Grants whose token family the token endpoint declared gone.
    pub needs_reauth: usize,
    /// Failed exchanges rescheduled with backoff.
    pub retrying: usize,
    /// Grants whose lease was lost (nothing written), or abandoned by a failpoint.
    pub lease_lost: usize,
    /// `family_expiring` alerts raised.
    pub family_warnings: usize,
    /// Grants moved to `needs_reauth` because their family deadline passed.
    pub family_expired: usize,
    /// `inactivity_expiring` alerts raised.
    pub inactivity_warnings: usize,
    /// Exchanges held back while the token endpoint is in trouble (not failures).
    pub deferred: usize,
}

/// One pass of the sweep: until nothing is due (or `stop` is set) and every exchange started
/// has finished.
pub async fn run_once(
    app: &App,
    refresher: &Refresher,
    stop: &CancellationToken,
) -> Result<SweepReport, sqlx::Error> {
    run_pass(app, refresher, stop, &Notify::new()).await
}

/// One pass of the sweep, as [`run_once`], that also claims again at each `tick` while its
/// exchanges are in flight (the daemon passes its schedule's trigger). A slow exchange (up
/// to twice the request timeout) must not hold back the grants that come due meanwhile: they
/// are claimed into the free slots at the next tick, not after the slowest exchange of the
/// pass has returned.
pub async fn run_pass(
    app: &App,
    refresher: &Refresher,
    stop: &CancellationToken,
    tick: &Notify,
) -> Result<SweepReport, sqlx::Error> {
    let mut report = SweepReport::default();
    // The checks and chores come first but never stand between a grant and its keep-alive:
    // a failure is logged and the rotations go on.
    if let Err(e) = warn_and_expire_families(app, refresher, &mut report).await {
        tracing::error!(error = %e, "family-deadline checks failed; keep-alive continues");
    }
    if let Err(e) = warn_of_inactivity(app, &mut report).await {
        tracing::error!(error = %e, "inactivity checks failed; keep-alive continues");
    }
    if let Err(e) = prune_history(app).await {
        tracing::warn!(error = %e, "pruning history failed; retried at the next sweep");
    }
    if let Err(e) = close_reauth_breaker(app).await {
        tracing::warn!(error = %e, "checking the re-consent breaker failed");
    }
    // Each exchange is a task of its own, so that it progresses (and gives its pool connection
    // back) while the pass waits on a claim.
    let mut in_flight = JoinSet::new();
    // Whether more grants may be due than were last claimed: at the start, after a claim
    // that filled every free slot, and after a tick.
    let mut more_due = true;
    let mut failure = None;
    let mut panicked = None;
    loop {
        let free = CONCURRENCY - in_flight.len();
        let healthy = failure.is_none() && panicked.is_none();
        if more_due && free > 0 && healthy && !stop.is_cancelled() {
            match claim(app, refresher, free).await {
                Ok(claimed) => {
                    more_due = claimed.len() == free;
                    // Once claimed, an exchange runs to completion even if shutdown begins
                    // or another fails: stopping in the middle is what loses rotations.
                    for grant in claimed {
                        let refresher = refresher.clone();
                        in_flight.spawn(async move { refresher.refresh_leased(grant).await });
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if in_flight.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = in_flight.join_next() => match joined {
                Ok(Ok(RefreshOutcome::Rotated(_))) => report.rotated += 1,
                Ok(Ok(RefreshOutcome::NeedsReauth(_))) => report.needs_reauth += 1,
                Ok(Ok(RefreshOutcome::Retrying { .. })) => report.retrying += 1,
                Ok(Ok(RefreshOutcome::LeaseLost | RefreshOutcome::Crashed)) => {
                    report.lease_lost += 1;
                }
                Ok(Ok(RefreshOutcome::Deferred(_))) => report.deferred += 1,
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                // A panic ends the pass once the other exchanges have finished (the worker
                // logs it); nothing here aborts a task.
                Err(e) => {
                    if let Ok(payload) = e.try_into_panic() {
                        panicked.get_or_insert(payload);
                    }
                }
            },
            () = tick.notified() => more_due = true,
        }
    }
    if let Some(payload) = panicked {
        std::panic::resume_unwind(payload);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if report != SweepReport::default() {
        tracing::info!(?report, "token sweep");
    }
    Ok(report)
}

/// Leases up to `free` due grants to this process.
async fn claim(
    app: &App,
    refresher: &Refresher,
    free: usize,
) -> Result<Vec<grants::Grant>, sqlx::Error> {
    let mut conn = app.pool.acquire().await?;
    let limit = i64::try_from(free).unwrap_or(i64::MAX);
    grants::claim_due_grants(
        &mut conn,
        app.clock.now(),
        limit,
        refresher.holder(),
        app.config.tokens.lease_ttl,
    )
    .await
}

/// Resolves the re-consent breaker's alert once marks have slowed below its threshold.
async fn close_reauth_breaker(app: &App) -> Result<(), sqlx::Error> {
    let now = app.clock.now();
    let policy = &app.config.tokens;
    let mut conn = app.pool.acquire().await?;
    let marked =
        crate::store::alerts::reauth_marks_since(&mut conn, now - policy.reuse_leeway).await?;
    if marked < i64::from(policy.reauth_breaker) {
        crate::store::alerts::resolve_app_alert(&mut conn, AlertKind::ReauthBreaker, now).await?;
    }
    Ok(())
}

/// Rows pruned per table and sweep: bounded, so a backlog is worked off over several ticks
/// instead of in one long statement.
const PRUNE_BATCH: i64 = 1000;

/// Deletes what is no longer needed: consent attempts nobody finished, spent links that
/// expired, digests of tokens older than any family, and history past `[retention]`.
async fn prune_history(app: &App) -> Result<(), sqlx::Error> {
    let now = app.clock.now();
    let retention = &app.config.retention;
    let mut conn = app.pool.acquire().await?;
    crate::store::oauth_states::purge_expired_states(&mut conn, now).await?;
    crate::store::spent_invites::purge_expired(&mut conn, now).await?;
    let family_life = app.config.tokens.absolute_expiry + app.config.tokens.reuse_leeway;
    crate::store::presented_tokens::prune(&mut conn, now - family_life, PRUNE_BATCH).await?;
    crate::store::alerts::prune_resolved(&mut conn, now - retention.resolved_alerts, PRUNE_BATCH)
        .await?;
    crate::store::sync_runs::prune(&mut conn, now - retention.sync_runs, PRUNE_BATCH).await?;
    crate::store::alert_outbox::prune_delivered(
        &mut conn,
        now - retention.resolved_alerts,
        PRUNE_BATCH,
    )
    .await?;
    Ok(())
}

/// Raises `family_expiring` for grants within `reauth_warning` of their 365-day deadline, and
/// marks grants past it as needing a new consent (the refresh would fail anyway; saying so
/// now names the real cause).
async fn warn_and_expire_families(
    app: &App,
    refresher: &Refresher,
    report: &mut SweepReport,
) -> Result<(), sqlx::Error> {
    let now = app.clock.now();
    let warning = app.config.tokens.reauth_warning;
    let mut conn = app.pool.acquire().await?;
    for grant in grants::grants_nearing_family_deadline(&mut conn, now, warning).await? {
        let reason = format!(
            "the token family ends on {}; the user must consent again before then",
            grant.family_deadline.format("%Y-%m-%d %H:%M UTC")
        );
        if alerts::raise(
            &mut conn,
            app,
            &grant,
            alerts::Condition::new(AlertKind::FamilyExpiring, &reason, now)
                .due(grant.family_deadline),
        )
        .await?
        {
            report.family_warnings += 1;
        }
    }
    let expired = grants::grants_past_family_deadline(&mut conn, now).await?;
    if let Some((reached, resume)) = &refresher.failpoints().pause_before_family_expiry
        && !expired.is_empty()
    {
        reached.notify_one();
        resume.notified().await;
    }
    for grant in expired {
        let reason = format!(
            "the token family reached its absolute deadline ({})",
            grant.family_deadline.format("%Y-%m-%d %H:%M UTC")
        );
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        // The write carries the condition: a consent since the read keeps the grant alive.
        if grants::expire_family(&mut tx, grant.id, &reason, now).await? {
            alerts::raise(
                &mut tx,
                app,
                &grant,
                alerts::Condition::new(AlertKind::NeedsReauth, &reason, grant.family_deadline)
                    .due(grant.family_deadline),
            )
            .await?;
            report.family_expired += 1;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Raises `inactivity_expiring` for grants whose refresh token nears Atlassian's inactivity
/// expiry because keep-alive keeps failing (warned `tokens.reauth_warning` ahead, like the
/// family deadline), and resolves it once a rotation moved the deadline away.
async fn warn_of_inactivity(app: &App, report: &mut SweepReport) -> Result<(), sqlx::Error> {
    let now = app.clock.now();
    let warning = app.config.tokens.reauth_warning;
    let mut conn = app.pool.acquire().await?;
    for grant in grants::grants_nearing_inactivity_deadline(&mut conn, now, warning).await? {
        let reason = format!(
            "the refresh token has not rotated since {} (keep-alive keeps failing: {}); Atlassian expires it on {} and the user must then consent again",
            grant.refresh_rotated_at.format("%Y-%m-%d %H:%M UTC"),
            grant.last_error.as_deref().unwrap_or("no error recorded"),
            grant.refresh_idle_deadline.format("%Y-%m-%d %H:%M UTC")
        );
        if alerts::raise(
            &mut conn,
            app,
            &grant,
            alerts::Condition::new(AlertKind::InactivityExpiring, &reason, now)
                .due(grant.refresh_idle_deadline),
        )
        .await?
        {
            report.inactivity_warnings += 1;
        }
    }
    for grant in grants::grants_past_inactivity_risk(&mut conn, now, warning).await? {
        alerts::clear(&mut conn, app, &grant, AlertKind::InactivityExpiring, None).await?;
    }
    Ok(())
}
