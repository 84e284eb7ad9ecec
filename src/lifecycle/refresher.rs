//! The only code that exchanges refresh tokens.
//!
//! Invariants:
//! - one exchange per grant at a time, cluster-wide (the row lease) and in-process (a
//!   per-grant async mutex, so a 401 during a sync and the sweep never both refresh);
//! - the rotated refresh token is persisted in one conditional UPDATE, fenced on the lease
//!   and on the token version presented, before the new access token is handed to anyone;
//! - an exchange whose result is not persisted (crash, lost lease) leaves the old token in
//!   the row with `refresh_started_at` set and `next_refresh_at` at the lease expiry, so the
//!   next owner retries with it inside Atlassian's reuse leeway;
//! - only a terminal token error (`invalid_grant`) ends in `needs_reauth`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{keepalive_due, retry_delay};
use crate::alerts;
use crate::app::App;
use crate::domain::GrantStatus;
use crate::domain::{AccessToken, GrantId};
use crate::oauth::TokenError;
use crate::store::alerts::AlertKind;
use crate::store::grants::{self, Grant, Lease, Rotation};

/// No retry waits longer than this, whatever a server's `Retry-After` says.
const MAX_RETRY_DELAY: TimeDelta = TimeDelta::hours(1);

/// Deliberate crash points, for proving recovery. Off in production.
#[derive(Debug, Default, Clone)]
pub struct Failpoints {
    /// Abandon the work right after a successful exchange, before persisting anything and
    /// without releasing the lease: what a killed process leaves behind.
    pub crash_after_exchange: bool,
    /// Pause the token sweep between reading the grants past their family deadline and
    /// marking them: notifies the first, then waits for the second.
    pub pause_before_family_expiry: Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>,
}

/// What one refresh attempt came to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// Rotated and persisted; the grant as now stored.
    Rotated(Box<Grant>),
    /// Atlassian says the family is gone; the grant now needs a new consent.
    NeedsReauth(String),
    /// A transient failure; retried later. `streak` counts failures in a row.
    Retrying {
        /// Failures in a row, this one included (`grants.failure_streak`).
        streak: i32,
        /// The failure, as recorded in `grants.last_error`.
        error: String,
    },
    /// The lease was lost to another worker; nothing was written.
    LeaseLost,
    /// The failpoint fired: the exchange happened and nothing was persisted.
    Crashed,
    /// Not attempted now: the token endpoint is in trouble (or refused the app), and this
    /// grant has slack; it is due again at the given instant. Not a failure of the grant.
    Deferred(DateTime<Utc>),
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenUnavailable {
    /// No grant has this id.
    #[error("grant {0} does not exist")]
    UnknownGrant(GrantId),
    /// The grant needs a new consent; carries the reason.
    #[error("grant needs a new consent: {0}")]
    NeedsReauth(String),
    /// The grant is `disabled`.
    #[error("grant is disabled")]
    Disabled,
    /// The refresh failed for now; the grant is rescheduled.
    #[error("token refresh failed, will retry: {0}")]
    Retrying(String),
    /// Another process kept the lease for longer than `tokens.lease_ttl` plus 5 s.
    #[error("another worker is refreshing this grant")]
    Busy,
    /// A stored token does not open with the configured keys.
    #[error("stored token cannot be opened: {0}")]
    Sealed(#[from] crate::crypto::OpenError),
    /// The database failed.
    #[error("database error: {0}")]
    Store(#[from] sqlx::Error),
}

/// Exchanges refresh tokens for one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Refresher {
    app: App,
    holder: String,
    in_flight: Arc<Mutex<HashMap<GrantId, Arc<tokio::sync::Mutex<()>>>>>,
    failpoints: Failpoints,
    /// Set when the token endpoint refused the app's client credentials: no exchange starts
    /// before it (business time).
    credentials_paused_until: Arc<Mutex<Option<DateTime<Utc>>>>,
    /// Whether an app-level credentials alert may be open: the next success resolves it.
    /// Starts true, so a process started after the fix resolves a stale one.
    credentials_alert_open: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the token endpoint timed out, failed or was cut off: until then only urgent
    /// exchanges go out (recoveries inside their leeway, grants near a deadline). A success
    /// clears it.
    endpoint_trouble_until: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl Refresher {
    /// A refresher whose leases carry `holder` (unique per process).
    pub fn new(app: App, holder: impl Into<String>) -> Self {
        Self {
            app,
            holder: holder.into(),
            in_flight: Arc::default(),
            failpoints: Failpoints::default(),
            credentials_paused_until: Arc::default(),
            credentials_alert_open: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            endpoint_trouble_until: Arc::default(),
        }
    }

    /// The same refresher with crash points armed (tests).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> Self {
        self.failpoints = failpoints;
        self
    }

    /// The crash points armed on this refresher (none in production).
    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    /// The name this process's leases carry.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn guard_for(&self, grant_id: GrantId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Forget guards nobody holds, so the map does not grow with every grant ever seen.
        if map.len() > 1024 {
            map.retain(|_, guard| Arc::strong_count(guard) > 1);
        }
        map.entry(grant_id).or_default().clone()
    }

    /// Refreshes a grant this process already leased (the sweep's path).
    pub async fn refresh_leased(&self, grant: Grant) -> Result<RefreshOutcome, sqlx::Error> {
        let guard = self.guard_for(grant.id);
        let _in_flight = guard.lock().await;
        self.exchange(grant).await
    }

    /// A usable access token for `grant_id`, refreshed first when it expires within
    /// `tokens.refresh_margin` (keep warm for work that is about to run).
    pub async fn access_token(&self, grant_id: GrantId) -> Result<AccessToken, TokenUnavailable> {
        self.obtain(grant_id, None).await
    }

    /// After an API call with `failed` answered 401: a refreshed token, unless someone already
    /// replaced `failed`, in which case the newer one is returned without another exchange.
    pub async fn access_token_after_unauthorized(
        &self,
        grant_id: GrantId,
        failed: &AccessToken,
    ) -> Result<AccessToken, TokenUnavailable> {
        self.obtain(grant_id, Some(failed)).await
    }

    async fn obtain(
        &self,
        grant_id: GrantId,
        failed: Option<&AccessToken>,
    ) -> Result<AccessToken, TokenUnavailable> {
        let keyring = self.app.keyring();
        let margin = self.app.config.tokens.refresh_margin;
        // Another process holds the lease for at most lease_ttl; wait that long, in real time.
        let patience = self
            .app
            .config
            .tokens
            .lease_ttl
            .to_std()
            .unwrap_or_default()
            + Duration::from_secs(5);
        let started = tokio::time::Instant::now();
        loop {
            let guard = self.guard_for(grant_id);
            let in_flight = guard.lock().await;
            let now = self.app.clock.now();
            let grant = {
                let mut conn = self.app.pool.acquire().await?;
                grants::get_grant(&mut conn, grant_id)
                    .await?
                    .ok_or(TokenUnavailable::UnknownGrant(grant_id))?
            };
            match grant.status {
                GrantStatus::NeedsReauth => {
                    return Err(TokenUnavailable::NeedsReauth(
                        grant.status_reason.unwrap_or_default(),
                    ));
                }
                GrantStatus::Disabled => return Err(TokenUnavailable::Disabled),
                GrantStatus::Active | GrantStatus::Degraded => {}
            }
            let stored = grant.access_token(keyring)?;
            let fresh = grant.access_fresh(now, margin);
            if let Some(stored) = stored {
                let replaced = failed.is_some_and(|f| f.expose() != stored.expose());
                if (fresh && failed.is_none()) || replaced {
                    return Ok(stored);
                }
            }
            // A grant backing off after failures is not exchanged early for a caller in a
            // hurry (a sync): the backoff is the grant's, whoever asks.
            if grant.failure_streak > 0 && grant.next_refresh_at > now {
                return Err(TokenUnavailable::Retrying(format!(
                    "{}; next attempt at {}",
                    grant
                        .last_error
                        .as_deref()
                        .unwrap_or("backing off after failures"),
                    grant.next_refresh_at
                )));
            }
            let leased = {
                let mut conn = self.app.pool.acquire().await?;
                grants::lease_grant(&mut conn, grant_id, now, &self.holder, self.lease_ttl())
                    .await?
            };
            match leased {
                Some(grant) => match self.exchange(grant).await? {
                    RefreshOutcome::Rotated(grant) => {
                        return grant.access_token(keyring)?.ok_or_else(|| {
                            TokenUnavailable::Retrying("no access token stored".into())
                        });
                    }
                    RefreshOutcome::NeedsReauth(reason) => {
                        return Err(TokenUnavailable::NeedsReauth(reason));
                    }
                    RefreshOutcome::Retrying { error, .. } => {
                        return Err(TokenUnavailable::Retrying(error));
                    }
                    RefreshOutcome::Crashed => {
                        return Err(TokenUnavailable::Retrying("crashed (failpoint)".into()));
                    }
                    RefreshOutcome::Deferred(until) => {
                        return Err(TokenUnavailable::Retrying(format!(
                            "the token endpoint is failing; next attempt at {until}"
                        )));
                    }
                    RefreshOutcome::LeaseLost => {}
                },
                None => {
                    // Leased by another process: wait for its result instead of racing it.
                    drop(in_flight);
                    if started.elapsed() > patience {
                        return Err(TokenUnavailable::Busy);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn lease_ttl(&self) -> TimeDelta {
        self.app.config.tokens.lease_ttl
    }

    /// One exchange under a lease this process holds. Callers hold the in-process guard.
    async fn exchange(&self, grant: Grant) -> Result<RefreshOutcome, sqlx::Error> {
        let now = self.app.clock.now();
        let Some(lease) = grant.lease(now).filter(|l| l.holder == self.holder) else {
            return Ok(RefreshOutcome::LeaseLost);
        };
        let recovering = grant
            .pending_recovery(now, self.app.config.tokens.reuse_leeway)
            .is_some();
        if let Some(until) = self.held_until(&grant, recovering, now) {
            let mut conn = self.app.pool.acquire().await?;
            return Ok(
                if grants::defer_exchange(&mut conn, grant.id, &lease, until, now).await? {
                    RefreshOutcome::Deferred(until)
                } else {
                    RefreshOutcome::LeaseLost
                },
            );
        }
        let presented = match grant.refresh_token(self.app.keyring()) {
            Ok(token) => token,
            Err(e) => {
                let error = format!("stored refresh token cannot be opened: {e}");
                return self
                    .record_failure(&grant, &lease, error, false, None, true)
                    .await;
            }
        };
        {
            // One statement marks the exchange and remembers the token as presented (so an
            // import of it later is refused); nothing touches the database between it and
            // the request.
            let mut conn = self.app.pool.acquire().await?;
            let retry_at = lease.until;
            if !grants::mark_refresh_started(
                &mut conn,
                grant.id,
                &lease,
                grant.token_version,
                &presented,
                now,
                retry_at,
            )
            .await?
            {
                return Ok(RefreshOutcome::LeaseLost);
            }
        }
        tracing::debug!(grant.id = %grant.id, interrupted = grant.refresh_started_at.is_some(), "exchanging refresh token");
        // A recovery waits longer for its answer: losing it too would leave no live token.
        // Twice the request timeout still fits the lease (validated) and the drain.
        let patience = recovering.then(|| self.app.config.atlassian.request_timeout * 2);
        let result = self.app.tokens.refresh_within(&presented, patience).await;
        self.note_endpoint_health(&result, now);
        self.app.telemetry.token_exchange(match &result {
            Ok(_) => "rotated",
            Err(TokenError::InvalidGrant { .. }) => "invalid_grant",
            Err(TokenError::ClientRejected { .. }) => "app_credentials_rejected",
            Err(_) => "transient",
        });
        if self.failpoints.crash_after_exchange && result.is_ok() {
            tracing::warn!(grant.id = %grant.id, "failpoint: abandoning a completed exchange");
            return Ok(RefreshOutcome::Crashed);
        }
        match result {
            Ok(set) => {
                let now = self.app.clock.now();
                let policy = &self.app.config.tokens;
                let keyring = self.app.keyring();
                let (refresh_idle_deadline, next_refresh_at) = match set.refresh_token {
                    Some(_) => (now + policy.inactivity_expiry, keepalive_due(policy, now)),
                    // No new refresh token: the old one stays current and its idle clock is not
                    // known to restart; confirm soon (inside the leeway, in case Atlassian did
                    // retire it) rather than trusting it for another month.
                    None => (grant.refresh_idle_deadline, now + policy.reuse_leeway / 4),
                };
                let rotation = Rotation {
                    refresh_token: set
                        .refresh_token
                        .as_ref()
                        .map(|t| grants::seal_refresh_token(keyring, grant.id, t)),
                    access_token: grants::seal_access_token(keyring, grant.id, &set.access_token),
                    // An absurd lifetime from the server must not overflow the arithmetic.
                    access_expires_at: now + set.expires_in.min(TimeDelta::days(1)),
                    scopes: set.scopes.clone(),
                    rotated_at: now,
                    refresh_idle_deadline,
                    next_refresh_at,
                };
                let Some(stored) = self.persist_until_landed(&grant, &rotation).await? else {
                    tracing::warn!(grant.id = %grant.id, "rotation discarded: a newer token was stored first");
                    return Ok(RefreshOutcome::LeaseLost);
                };
                if self
                    .credentials_alert_open
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    let mut conn = self.app.pool.acquire().await?;
                    crate::store::alerts::resolve_app_alert(
                        &mut conn,
                        AlertKind::AppCredentialsRejected,
                        now,
                    )
                    .await?;
                }
                tracing::info!(
                    grant.id = %grant.id,
                    grant.label = %grant.label,
                    rotated = set.refresh_token.is_some(),
                    recovered = grant.refresh_started_at.is_some(),
                    "refresh token rotated"
                );
                Ok(RefreshOutcome::Rotated(Box::new(stored)))
            }
            Err(TokenError::InvalidGrant { .. }) => {
                let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
                self.mark_needs_reauth(&grant, &lease, &reason).await
            }
            Err(e @ TokenError::Interrupted(_)) => {
                // The exchange may have rotated the token: retry soon, inside the leeway.
                self.record_failure(&grant, &lease, e.to_string(), true, None, true)
                    .await
            }
            Err(TokenError::RateLimited { retry_after }) => {
                let error = TokenError::RateLimited { retry_after }.to_string();
                self.record_failure(&grant, &lease, error, false, retry_after, true)
                    .await
            }
            Err(e @ TokenError::ClientRejected { .. }) => {
                self.credentials_rejected(&grant, &lease, &e.to_string())
                    .await
            }
            Err(e) => {
                self.record_failure(&grant, &lease, e.to_string(), false, None, true)
                    .await
            }
        }
    }

    /// Until when a non-urgent exchange of `grant` is held back, if it is: while the app's
    /// credentials are refused, or while the token endpoint is in trouble (keep-alive has
    /// weeks of slack; only recoveries inside their leeway and grants within
    /// `tokens.reauth_warning` of their idle deadline go out).
    fn held_until(
        &self,
        grant: &Grant,
        recovering: bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if recovering {
            return None;
        }
        let read = |slot: &Mutex<Option<DateTime<Utc>>>| {
            (*slot.lock().unwrap_or_else(|p| p.into_inner())).filter(|until| *until > now)
        };
        if let Some(until) = read(&self.credentials_paused_until) {
            return Some(until);
        }
        let near_deadline =
            grant.refresh_idle_deadline - self.app.config.tokens.reauth_warning <= now;
        read(&self.endpoint_trouble_until).filter(|_| !near_deadline)
    }

    /// Remembers a token endpoint in trouble: a timeout, a cut connection, a 5xx or a 429
    /// opens (or extends) a window of half the reuse leeway, at most 5 minutes. It is not
    /// closed by the next answer: a failing endpoint still answers some requests.
    fn note_endpoint_health(
        &self,
        result: &Result<crate::oauth::TokenSet, TokenError>,
        now: DateTime<Utc>,
    ) {
        let trouble = matches!(
            result,
            Err(TokenError::Interrupted(_)
                | TokenError::Transient(_)
                | TokenError::RateLimited { .. })
        );
        let mut slot = self
            .endpoint_trouble_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if trouble {
            let window = (self.app.config.tokens.reuse_leeway / 2).min(TimeDelta::minutes(5));
            *slot = Some(now + window);
        }
    }

    /// The app's client credentials were refused: an app-level problem, not this grant's.
    /// One app alert is raised, exchanges pause process-wide for a while (no grant is sent to
    /// a token endpoint that will refuse it), and the grant is neither degraded nor marked.
    async fn credentials_rejected(
        &self,
        grant: &Grant,
        lease: &Lease,
        error: &str,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let now = self.app.clock.now();
        let until = now + self.credential_pause();
        *self
            .credentials_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(until);
        {
            let mut conn = self.app.pool.acquire().await?;
            let reason = format!(
                "{error}; every token exchange is refused until this is fixed (token exchanges pause and are retried from {})",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            );
            if crate::store::alerts::open_app_alert(
                &mut conn,
                AlertKind::AppCredentialsRejected,
                &reason,
                now,
            )
            .await?
            {
                tracing::error!(
                    reason,
                    "app-level alert raised: client credentials rejected"
                );
            }
        }
        // Set after the alert exists, so the next success resolves it.
        self.credentials_alert_open
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let wait = (until - now).to_std().ok();
        self.record_failure(grant, lease, error.to_owned(), false, wait, false)
            .await
    }

    /// How long token exchanges pause after the client credentials were refused: five
    /// minutes, or less under compressed lifetimes (never beyond half the reuse leeway).
    fn credential_pause(&self) -> TimeDelta {
        TimeDelta::minutes(5).min(self.app.config.tokens.reuse_leeway / 2)
    }

    /// Persists `rotation` until it lands. Once Atlassian has rotated the token, the new one
    /// exists only in this process: presenting the old one after the reuse leeway would kill
    /// the family, so a database outage is waited out (with backoff) rather than given up on.
    /// The caller holds the grant's in-process guard, so no other exchange of this grant
    /// starts here meanwhile; other workers are stopped by the version fence.
    async fn persist_until_landed(
        &self,
        grant: &Grant,
        rotation: &Rotation,
    ) -> Result<Option<Grant>, sqlx::Error> {
        let what = format!("persisting the rotated token of grant {}", grant.id);
        let (stored, retried) =
            crate::store::until_reachable(&what, || self.persist(grant, rotation)).await?;
        if stored.is_some() || !retried {
            return Ok(stored);
        }
        // A commit whose answer was lost may have landed: it did if the row holds exactly
        // this rotation's sealed access token.
        let mut conn = self.app.pool.acquire().await?;
        let current = grants::get_grant(&mut conn, grant.id).await?;
        Ok(current.filter(|stored| {
            stored.access_token.as_ref().map(|s| &s.bytes) == Some(&rotation.access_token.bytes)
        }))
    }

    async fn persist(
        &self,
        grant: &Grant,
        rotation: &Rotation,
    ) -> Result<Option<Grant>, sqlx::Error> {
        let mut tx = self.app.pool.begin().await?;
        let Some(stored) =
            grants::persist_rotation(&mut tx, grant.id, grant.token_version, rotation).await?
        else {
            return Ok(None);
        };
        if grant.status == GrantStatus::Degraded {
            alerts::clear(&mut tx, &self.app, &stored, AlertKind::Degraded, None).await?;
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn mark_needs_reauth(
        &self,
        grant: &Grant,
        lease: &Lease,
        reason: &str,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let now = self.app.clock.now();
        let policy = &self.app.config.tokens;
        // Marks are counted and written under one cluster-wide lock, so concurrent marks
        // cannot all see a count below the threshold.
        let mut tx = self.app.pool.begin().await?;
        crate::store::alerts::lock_reauth_marks(&mut tx).await?;
        let marked_lately =
            crate::store::alerts::reauth_marks_since(&mut tx, now - policy.reuse_leeway).await?;
        if marked_lately >= i64::from(policy.reauth_breaker) {
            tx.rollback().await?;
            // Many families do not die within minutes of each other; the app (its
            // credentials, its status at Atlassian) is the likelier cause. Hold the mark and
            // say so once; the grant is retried later and marked when the burst is over.
            let mut conn = self.app.pool.acquire().await?;
            let alert = format!(
                "{marked_lately} grants were marked as needing a new consent within {} minutes; further marks are held (the grants are retried) until the rate drops. Check the app at Atlassian; the last refusal was: {reason}",
                policy.reuse_leeway.num_minutes()
            );
            if crate::store::alerts::open_app_alert(
                &mut conn,
                AlertKind::ReauthBreaker,
                &alert,
                now,
            )
            .await?
            {
                tracing::error!(
                    marked_lately,
                    "app-level alert raised: re-consent breaker open"
                );
            }
            drop(conn);
            return self
                .record_failure(grant, lease, reason.to_owned(), false, None, false)
                .await;
        }
        if !grants::release_lease_fenced(&mut tx, grant.id, lease).await? {
            return Ok(RefreshOutcome::LeaseLost);
        }
        alerts::transition(
            &mut tx,
            &self.app,
            grant,
            GrantStatus::NeedsReauth,
            alerts::Condition::new(AlertKind::NeedsReauth, reason, now),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(grant.id = %grant.id, grant.label = %grant.label, reason, "grant needs a new consent");
        Ok(RefreshOutcome::NeedsReauth(reason.to_owned()))
    }

    /// Records a failed attempt and when to retry. `degrades`: whether it counts towards
    /// `degraded` (an app-level failure does not: it is no grant's fault).
    async fn record_failure(
        &self,
        grant: &Grant,
        lease: &Lease,
        error: String,
        interrupted: bool,
        retry_after: Option<Duration>,
        degrades: bool,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let now = self.app.clock.now();
        let policy = &self.app.config.tokens;
        let streak = u32::try_from(grant.failure_streak).unwrap_or(0) + 1;
        // An earlier attempt of this exchange may have rotated the token at Atlassian (it was
        // interrupted, and nothing has been persisted since): every retry must land inside
        // the reuse leeway counted from that first attempt, whatever this failure was. When
        // that window has passed, a definite failure backs off normally; an interrupted one
        // may itself have rotated the token, so it opens a new window from now.
        let started = grant
            .pending_recovery(now, policy.reuse_leeway)
            .or_else(|| interrupted.then_some(now));
        let pending = started.is_some();
        let mut delay = retry_after
            .and_then(|wait| TimeDelta::from_std(wait).ok())
            .unwrap_or_else(|| retry_delay(streak));
        delay = delay.min(MAX_RETRY_DELAY);
        if pending {
            delay = delay.min(policy.reuse_leeway / 4);
        }
        let mut next_refresh_at: DateTime<Utc> = now + delay;
        if let Some(first) = started {
            let last_safe = first + policy.reuse_leeway / 2;
            next_refresh_at = next_refresh_at.min(last_safe.max(now + TimeDelta::seconds(5)));
        }
        let mut tx = self.app.pool.begin().await?;
        let Some(streak) = grants::record_transient_failure(
            &mut tx,
            grant.id,
            lease,
            &error,
            next_refresh_at,
            started,
            now,
        )
        .await?
        else {
            return Ok(RefreshOutcome::LeaseLost);
        };
        if degrades && streak >= policy.degraded_after as i32 {
            let reason = format!("{streak} refresh failures in a row; last: {error}");
            alerts::transition(
                &mut tx,
                &self.app,
                grant,
                GrantStatus::Degraded,
                alerts::Condition::new(AlertKind::Degraded, &reason, now),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::warn!(grant.id = %grant.id, grant.label = %grant.label, streak, retry_in_s = delay.num_seconds(), error = %error, "token refresh failed; will retry");
        Ok(RefreshOutcome::Retrying { streak, error })
    }
}
