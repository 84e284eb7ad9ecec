//! Pacing: calling one site's product API through one grant, the way Atlassian asks to be called:
//! timeouts, retries with jitter (every call atlassync makes is a read, so all are
//! idempotent), `Retry-After` honoured exactly, a burst 429 slowing only that endpoint of
//! that site, a tenant quota 429 pausing only that site, a global quota 429 pausing the app's
//! requests to that product (Jira and Confluence have separate pools) until the reset, every
//! request costed against the hourly points budget of its product, one run held to its slice
//! of that budget, and a 401 answered by one refresh and one retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::app::App;
use crate::atlassian::{ApiError, ProductCall, RateLimitHeaders};
use crate::domain::{AccessToken, CloudId, GrantId, Product, SiteKey};
use crate::lifecycle::{Refresher, TokenUnavailable};
use crate::store::{api_budget, synced_sites};

/// Why a call gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No access token could be had for the grant.
    #[error(transparent)]
    Token(#[from] TokenUnavailable),
    /// An API error that retries did not cure, or that no retry can cure.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Atlassian's hourly quota of this product is exhausted: no request to it until `until`.
    #[error(
        "the app's hourly {product} points quota is exhausted; {product} requests wait until {until}"
    )]
    QuotaPaused {
        /// The product whose pool is spent; the other product carries on.
        product: Product,
        /// When requests may resume: `Retry-After` (believed up to 2 h) or the next UTC hour.
        until: DateTime<Utc>,
    },
    /// This site's own (tenant) pool is spent; the site waits, the others carry on.
    #[error("this site's own points quota is exhausted; it waits until {until}")]
    SitePaused {
        /// When the site's requests may resume.
        until: DateTime<Utc>,
    },
    /// Sync has spent its share of this hour's points of this product; it resumes next hour.
    #[error("sync has used its share of this hour's {product} points budget; resuming at {until}")]
    BudgetDeferred {
        /// The product whose share is spent.
        product: Product,
        /// The start of the next UTC hour.
        until: DateTime<Utc>,
    },
    /// This run has spent its slice of the hour's share (`sync.run_share_percent`): it stops
    /// so that other sites' runs get their turn. What it committed stays; the site goes on
    /// from there at its next tick.
    #[error(
        "this run reached its slice of this hour's points ({spent} of {slice}: \
         sync.run_share_percent of what was left when it started); the site continues at the next tick"
    )]
    SliceSpent {
        /// What the run spent, or would have spent with the work it was about to start.
        spent: i64,
        /// The run's slice.
        slice: i64,
    },
    /// The database failed (budget, scope error or alert writes).
    #[error("database error: {0}")]
    Store(#[from] sqlx::Error),
    /// A listing stopped before Atlassian said it was complete. What was read is kept (and
    /// the watermark moves only as far as it proves); nothing is deleted on its evidence.
    #[error("scan cut short ({0}); what was read is kept and the next run resumes from it")]
    Incomplete(String),
}

/// A site whose own (tenant) pool has fewer points left than this pauses until its reset: one
/// more page could hit the wall.
const TENANT_FLOOR: i64 = 101;

/// A burst 429 asking for a longer wait than this is treated as a quota wall.
const LONGEST_BURST_WAIT: Duration = Duration::from_secs(60);
/// Quota windows are hourly; a Retry-After beyond this is not believed.
const LONGEST_QUOTA_WAIT: Duration = Duration::from_secs(2 * 3600);

/// Process-wide pacing state: per (site, endpoint) "not before" instants set by burst 429s.
/// Shared by every session so that one endpoint's slowdown is honoured by all workers.
#[derive(Debug, Default, Clone)]
pub struct Throttles {
    not_before: Arc<Mutex<HashMap<(CloudId, String), Instant>>>,
}

impl Throttles {
    fn wait_until(&self, key: &(CloudId, String)) -> Option<Instant> {
        let map = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().filter(|at| *at > Instant::now())
    }

    fn hold(&self, key: (CloudId, String), until: Instant) {
        let mut map = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, at| *at > Instant::now());
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// A caller for one (site, grant) pair during one run. Counts what it spends.
#[derive(Debug)]
pub struct SiteSession<'a> {
    app: &'a App,
    refresher: &'a Refresher,
    throttles: &'a Throttles,
    grant_id: GrantId,
    site: SiteKey,
    token: Option<AccessToken>,
    /// Requests sent, including retries.
    pub requests: i64,
    /// Points spent, by Atlassian's 2026 model (1 + objects returned).
    pub points: i64,
    /// Points left this hour in the app's pool of the site's product after the last request,
    /// as far as atlassync knows.
    pub points_remaining: Option<i64>,
    /// The most this run may spend, fixed by its first budget check (`SyncConfig::run_slice`).
    slice: Option<i64>,
}

/// The UTC hour `at` falls in: quota windows reset at the top of each UTC hour.
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

impl<'a> SiteSession<'a> {
    /// A session for `site` through `grant_id`.
    pub fn new(
        app: &'a App,
        refresher: &'a Refresher,
        throttles: &'a Throttles,
        grant_id: GrantId,
        site: SiteKey,
    ) -> Self {
        Self {
            app,
            refresher,
            throttles,
            grant_id,
            site,
            token: None,
            requests: 0,
            points: 0,
            points_remaining: None,
            slice: None,
        }
    }

    /// The grant this session calls through.
    pub fn grant_id(&self) -> GrantId {
        self.grant_id
    }

    /// Makes `call`, paced and costed, refreshing the token once after a 401 and retrying
    /// transient failures with backoff.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        call: ProductCall<T>,
    ) -> Result<T, CallError> {
        debug_assert_eq!(
            call.product, self.site.product,
            "a session calls one product"
        );
        let most_points = call.most_points();
        let path = call.path;
        let endpoint = (
            self.site.cloud_id.clone(),
            format!("{} {path}", call.method),
        );
        let max_retries = self.app.config.sync.max_retries;
        let mut backoff = backoff();
        let mut failures = 0u32;
        let mut refreshed_after_401 = false;
        loop {
            let slice = self.check_budget(most_points).await?;
            // The request that crosses the slice is the run's last: a page is never left
            // half-paid, and the hourly share above is checked against the worst case.
            if self.points >= slice {
                return Err(CallError::SliceSpent {
                    spent: self.points,
                    slice,
                });
            }
            if let Some(until) = self.throttles.wait_until(&endpoint) {
                tokio::time::sleep_until(until).await;
            }
            let token = match &self.token {
                Some(token) => token.clone(),
                None => {
                    let token = self.refresher.access_token(self.grant_id).await?;
                    self.token = Some(token.clone());
                    token
                }
            };
            self.requests += 1;
            let error = match self.app.api.send(&self.site.cloud_id, &token, &call).await {
                Ok(response) => {
                    self.spend(1 + (call.objects)(&response.value) as i64)
                        .await?;
                    self.calibrate(&response.rate_limit).await?;
                    return Ok(response.value);
                }
                Err(error) => error,
            };
            // A rejected request still costs its base point.
            self.spend(1).await?;
            match error {
                ApiError::Unauthorized(_) if !refreshed_after_401 => {
                    refreshed_after_401 = true;
                    let fresh = self
                        .refresher
                        .access_token_after_unauthorized(self.grant_id, &token)
                        .await?;
                    self.token = Some(fresh);
                }
                ApiError::ScopeMismatch(message) => {
                    self.record_scope_problem(path, &message).await?;
                    return Err(ApiError::ScopeMismatch(message).into());
                }
                // A tenant's own pool is spent: that site and product wait for its reset;
                // every other site carries on.
                ApiError::RateLimited {
                    retry_after,
                    reason,
                } if reason.contains("tenant") => {
                    let now = self.app.clock.now();
                    let until = quota_pause_end(now, retry_after);
                    let mut conn = self.app.pool.acquire().await?;
                    synced_sites::pause_site(&mut conn, &self.site, until).await?;
                    let pause = (until - now).to_std().unwrap_or_default();
                    self.app
                        .telemetry
                        .throttled(self.site.product.as_str(), pause);
                    tracing::warn!(site.cloud_id = %self.site.cloud_id, site.product = %self.site.product, %reason, %until, "tenant quota exhausted: pausing this site");
                    return Err(CallError::SitePaused { until });
                }
                // A long wait is a quota wall whatever the reason says (the header is sometimes
                // missing, and older reasons name no quota).
                ApiError::RateLimited {
                    retry_after,
                    reason,
                } if reason.contains("quota")
                    || retry_after.is_some_and(|wait| wait > LONGEST_BURST_WAIT) =>
                {
                    let now = self.app.clock.now();
                    let until = quota_pause_end(now, retry_after);
                    // Atlassian's pools are per app and product: only this product waits.
                    let product = self.site.product;
                    let mut conn = self.app.pool.acquire().await?;
                    api_budget::pause_app(&mut conn, hour_start(now), product, until).await?;
                    tracing::warn!(site.cloud_id = %self.site.cloud_id, site.product = %product, %reason, %until, "quota exhausted: pausing all requests to this product");
                    let pause = (until - now).to_std().unwrap_or_default();
                    self.app.telemetry.throttled(product.as_str(), pause);
                    return Err(CallError::QuotaPaused { product, until });
                }
                ApiError::RateLimited {
                    retry_after,
                    reason,
                } if failures < max_retries => {
                    failures += 1;
                    // Retry-After is the minimum; without one, back off.
                    let wait = retry_after
                        .unwrap_or_else(|| backoff.next().unwrap_or(Duration::from_secs(30)))
                        .min(LONGEST_BURST_WAIT);
                    tracing::info!(site.cloud_id = %self.site.cloud_id, endpoint = %endpoint.1, %reason, wait_ms = wait.as_millis() as u64, "rate limited: slowing this endpoint");
                    self.app
                        .telemetry
                        .throttled(self.site.product.as_str(), wait);
                    self.throttles.hold(endpoint.clone(), Instant::now() + wait);
                }
                // Atlassian said when to come back: no sooner (a wait longer than a burst
                // slowdown ends the run; the next tick tries again).
                ApiError::Unavailable {
                    retry_after,
                    message,
                    ..
                } if failures < max_retries && retry_after <= LONGEST_BURST_WAIT => {
                    failures += 1;
                    let wait = backoff
                        .next()
                        .unwrap_or(Duration::from_secs(30))
                        .max(retry_after);
                    tracing::info!(site.cloud_id = %self.site.cloud_id, endpoint = %endpoint.1, error = %message, wait_ms = wait.as_millis() as u64, "unavailable: retrying after Retry-After");
                    tokio::time::sleep(wait).await;
                }
                ApiError::Transient(message) if failures < max_retries => {
                    failures += 1;
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::info!(site.cloud_id = %self.site.cloud_id, endpoint = %endpoint.1, error = %message, wait_ms = wait.as_millis() as u64, "transient failure: retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return Err(other.into()),
            }
        }
    }

    /// How many points this run may still spend, when that is at least `least`: the rest of
    /// its slice, or of sync's share of the hour if that is less. Work that must not be
    /// interrupted once paid for (a census page and the reads that settle it) sizes itself to
    /// this, and stops with the error a request would get when there is not room for `least`.
    pub async fn room(&mut self, least: i64) -> Result<i64, CallError> {
        let slice = self.check_budget(least).await?;
        let slice_left = slice - self.points;
        if slice_left < least {
            return Err(CallError::SliceSpent {
                spent: self.points + least,
                slice,
            });
        }
        let sync = &self.app.config.sync;
        let reserve = i64::from(sync.points_per_hour) - sync.hourly_share();
        let share_left = self.points_remaining.unwrap_or(0) - reserve;
        Ok(slice_left.min(share_left))
    }

    /// A second 401 saying "scope does not match" is a scope problem, not an expired token:
    /// it is recorded on the site (taking this grant out of the site's election) and raised
    /// as a `scopes_missing` alert, in one transaction.
    async fn record_scope_problem(&self, path: &str, message: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.app.pool.begin().await?;
        let detail = format!("{message} (calling {path})");
        synced_sites::record_scope_error(
            &mut tx,
            self.grant_id,
            &self.site.cloud_id,
            self.site.product,
            &detail,
        )
        .await?;
        if let Some(grant) = crate::store::grants::get_grant(&mut tx, self.grant_id).await? {
            let reason = format!(
                "Atlassian refused this grant's token for {} on site {}: {detail}; the user must consent again with the full scope list",
                self.site.product, self.site.cloud_id
            );
            crate::alerts::raise(
                &mut tx,
                self.app,
                &grant,
                crate::alerts::Condition::new(
                    crate::store::alerts::AlertKind::ScopesMissing,
                    &reason,
                    self.app.clock.now(),
                )
                .at_site(&self.site),
            )
            .await?;
        }
        tx.commit().await
    }

    /// Refuses a request that could take sync past its share of the hour's points of the
    /// site's product, or that Atlassian asked to wait (the product's pool, or this site's
    /// own). Returns the run's slice, fixed at its first check from what was left then.
    async fn check_budget(&mut self, most_points: i64) -> Result<i64, CallError> {
        let now = self.app.clock.now();
        let hour = hour_start(now);
        let product = self.site.product;
        let api_budget::Budget {
            used,
            paused_until: paused,
            site_paused_until: site_paused,
        } = {
            let mut conn = self.app.pool.acquire().await?;
            api_budget::budget(&mut conn, hour, product, Some(&self.site.cloud_id)).await?
        };
        if let Some(until) = paused.filter(|until| *until > now) {
            return Err(CallError::QuotaPaused { product, until });
        }
        if let Some(until) = site_paused.filter(|until| *until > now) {
            return Err(CallError::SitePaused { until });
        }
        let sync = &self.app.config.sync;
        let share = sync.hourly_share();
        self.points_remaining = Some(i64::from(sync.points_per_hour) - used);
        let slice = *self
            .slice
            .get_or_insert_with(|| sync.run_slice(share - used));
        if used + most_points > share {
            return Err(CallError::BudgetDeferred {
                product,
                until: hour + TimeDelta::hours(1),
            });
        }
        Ok(slice)
    }

    /// Believes Atlassian's count over the local one: the app's pool of each product is shared
    /// with other installations of the app and other replicas, so when `RateLimit` on an
    /// answer of this site's product says less is left than atlassync counted, that product's
    /// spend this hour is raised to match (the other product's pool is not touched); and a
    /// site whose own pool is nearly spent pauses until its reset rather than run into the
    /// wall.
    async fn calibrate(&mut self, seen: &RateLimitHeaders) -> Result<(), CallError> {
        let now = self.app.clock.now();
        if let Some(remaining) = seen.global.and_then(|g| g.remaining) {
            let quota = seen
                .global_quota
                .unwrap_or_else(|| i64::from(self.app.config.sync.points_per_hour));
            let mut conn = self.app.pool.acquire().await?;
            let used = api_budget::raise_spend_to(
                &mut conn,
                hour_start(now),
                self.site.product,
                quota - remaining,
            )
            .await?;
            self.points_remaining = Some(i64::from(self.app.config.sync.points_per_hour) - used);
        }
        if let Some(state) = seen.tenant
            && let Some(remaining) = state.remaining
            && remaining < TENANT_FLOOR
        {
            let reset = state.reset_secs.unwrap_or(3600).clamp(1, 7200);
            let until = now + TimeDelta::seconds(reset);
            let mut conn = self.app.pool.acquire().await?;
            synced_sites::pause_site(&mut conn, &self.site, until).await?;
            tracing::info!(site.cloud_id = %self.site.cloud_id, remaining, %until, "this site's own quota is nearly spent: pausing it until the reset");
        }
        Ok(())
    }

    async fn spend(&mut self, points: i64) -> Result<(), CallError> {
        self.points += points;
        let hour = hour_start(self.app.clock.now());
        let mut conn = self.app.pool.acquire().await?;
        let used = api_budget::spend_points(&mut conn, hour, self.site.product, points).await?;
        self.points_remaining = Some(i64::from(self.app.config.sync.points_per_hour) - used);
        Ok(())
    }
}

/// When a quota 429 lets requests resume: after its `Retry-After` (believed up to
/// `LONGEST_QUOTA_WAIT`), or without one at the next UTC hour, when quota windows reset.
fn quota_pause_end(now: DateTime<Utc>, retry_after: Option<Duration>) -> DateTime<Utc> {
    match retry_after {
        Some(wait) => {
            now + TimeDelta::from_std(wait.min(LONGEST_QUOTA_WAIT)).unwrap_or(TimeDelta::hours(2))
        }
        None => hour_start(now) + TimeDelta::hours(1),
    }
}

/// Atlassian's recommended retry policy: exponential from 2 s, doubling, capped at 30 s,
/// with jitter.
fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}
