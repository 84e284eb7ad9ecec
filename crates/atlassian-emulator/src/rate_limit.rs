//! Rate limits of the product APIs, as Atlassian documents them: a points quota per app and
//! product per UTC hour, and burst token buckets per tenant × endpoint × method, with
//! Atlassian's rate-limit headers on every answer.
//!
//! - Quota: each answered request costs 1 point plus what the handler reports in a [`Cost`]
//!   extension (1 per issue or space returned, 2 per user). Once the hour's points are spent,
//!   every request of that product gets 429 until the top of the next UTC hour of the emulator
//!   clock (a hard wall, no gradual throttling). Jira and Confluence have separate pools; the
//!   emulator knows one app, so "per app" is "per product".
//! - Burst: a bucket of `rate` tokens refilled at `rate` per second; an empty bucket answers
//!   429 with `Retry-After: 1`. Refills follow the wall clock by default (so tests on a frozen
//!   emulator clock are not starved), or the emulator clock when configured.
//!
//! Only authenticated calls are limited: without a valid token there is no app to charge, and
//! the gateway answers 401 first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Product;
use super::gateway::bearer_token;
use super::server::Shared;
use super::state::shifted;

/// Points a response costs beyond the base point (set by handlers as a response extension).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost(pub(crate) u64);

/// Which clock refills burst buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurstClock {
    /// Real elapsed time (default): a frozen test clock does not starve the buckets.
    #[default]
    Wall,
    /// The emulator clock: deterministic tests advance it to refill.
    Emulator,
}

/// The state of one product's quota, for assertions and the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Points per UTC hour (`None`: unlimited).
    pub points_per_hour: Option<u64>,
    /// Points spent in the current hour.
    pub used: u64,
    /// When the current window ends (the top of the next UTC hour).
    pub resets_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct QuotaPool {
    limit: Option<u64>,
    /// The UTC hour (seconds since the epoch / 3600) `used` belongs to.
    window: i64,
    used: u64,
}

impl QuotaPool {
    fn roll(&mut self, now: DateTime<Utc>) {
        let window = now.timestamp().div_euclid(3600);
        if window != self.window {
            self.window = window;
            self.used = 0;
        }
    }

    fn remaining(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.used))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds on the burst clock at the last refill.
    at: f64,
}

/// Why a request was refused before reaching its handler.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejection {
    /// The product's hourly points are spent.
    Quota {
        product: Product,
        limit: u64,
        resets_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The site's per-tenant points for the product are spent.
    TenantQuota {
        product: Product,
        limit: u64,
        resets_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The endpoint's burst bucket is empty.
    Burst {
        product: Product,
        rate: u32,
        now: DateTime<Utc>,
    },
}

/// Seconds until `at`, rounded up, at least 1.
pub(crate) fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let millis = (at - now).num_milliseconds().max(0);
    ((millis + 999) / 1000).max(1)
}

/// The top of the UTC hour after `now`.
pub(crate) fn next_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    shifted(
        now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now),
        TimeDelta::hours(1),
    )
}

fn iso_second(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn reason(product: Product, kind: &str) -> String {
    let product = match product {
        Product::Jira => "jira",
        Product::Confluence => "confluence",
    };
    format!("{product}-{kind}")
}

/// A 429 as the gateway sends it: `Retry-After`, `X-RateLimit-*`, `RateLimit-Reason`.
pub(crate) fn too_many_requests(
    product: Product,
    kind: &str,
    limit: u64,
    retry_after_secs: i64,
    resets_at: DateTime<Utc>,
) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"code": 429, "message": "Rate limit exceeded"})),
    )
        .into_response();
    let headers = response.headers_mut();
    set(headers, "retry-after", &retry_after_secs.to_string());
    set(headers, "x-ratelimit-limit", &limit.to_string());
    set(headers, "x-ratelimit-remaining", "0");
    set(headers, "x-ratelimit-reset", &iso_second(resets_at));
    set(headers, "ratelimit-reason", &reason(product, kind));
    response
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Quota {
                product,
                limit,
                resets_at,
                now,
            } => too_many_requests(
                product,
                "quota-global-based",
                limit,
                seconds_until(resets_at, now),
                resets_at,
            ),
            Rejection::TenantQuota {
                product,
                limit,
                resets_at,
                now,
            } => too_many_requests(
                product,
                "quota-tenant-based",
                limit,
                seconds_until(resets_at, now),
                resets_at,
            ),
            Rejection::Burst { product, rate, now } => too_many_requests(
                product,
                "burst-based",
                u64::from(rate),
                1,
                shifted(now, TimeDelta::seconds(1)),
            ),
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Quotas and burst buckets.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    jira: QuotaPool,
    confluence: QuotaPool,
    /// Per-tenant pools: (cloud id, product) → pool.
    tenants: HashMap<(String, Product), QuotaPool>,
    burst_rate: Option<u32>,
    burst_clock: BurstClock,
    buckets: HashMap<(String, String, Method), Bucket>,
    started: Instant,
}

impl RateLimiter {
    pub(crate) fn new(
        quota: Option<u64>,
        burst_rate: Option<u32>,
        burst_clock: BurstClock,
    ) -> Self {
        let pool = QuotaPool {
            limit: quota,
            window: i64::MIN,
            used: 0,
        };
        Self {
            jira: pool.clone(),
            confluence: pool,
            tenants: HashMap::new(),
            burst_rate,
            burst_clock,
            buckets: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn pool(&mut self, product: Product) -> &mut QuotaPool {
        match product {
            Product::Jira => &mut self.jira,
            Product::Confluence => &mut self.confluence,
        }
    }

    /// Sets a product's hourly points (`None`: unlimited). Points already spent this hour stay.
    pub(crate) fn set_quota(&mut self, product: Product, points_per_hour: Option<u64>) {
        self.pool(product).limit = points_per_hour;
    }

    /// Sets (`None`: removes) a per-tenant quota. Points already spent this hour stay.
    pub(crate) fn set_tenant_quota(
        &mut self,
        tenant: &str,
        product: Product,
        points_per_hour: Option<u64>,
    ) {
        match points_per_hour {
            Some(limit) => {
                self.tenants
                    .entry((tenant.to_owned(), product))
                    .or_insert(QuotaPool {
                        limit: None,
                        window: i64::MIN,
                        used: 0,
                    })
                    .limit = Some(limit);
            }
            None => {
                self.tenants.remove(&(tenant.to_owned(), product));
            }
        }
    }

    /// A tenant's quota now (`points_per_hour: None` when none is configured).
    pub(crate) fn tenant_usage(
        &mut self,
        tenant: &str,
        product: Product,
        now: DateTime<Utc>,
    ) -> QuotaUsage {
        let (limit, used) = match self.tenants.get_mut(&(tenant.to_owned(), product)) {
            Some(pool) => {
                pool.roll(now);
                (pool.limit, pool.used)
            }
            None => (None, 0),
        };
        QuotaUsage {
            points_per_hour: limit,
            used,
            resets_at: next_hour(now),
        }
    }

    /// Every configured tenant quota: (cloud id, product, usage).
    pub(crate) fn tenant_usages(
        &mut self,
        now: DateTime<Utc>,
    ) -> Vec<(String, Product, QuotaUsage)> {
        let mut keys: Vec<(String, Product)> = self.tenants.keys().cloned().collect();
        keys.sort();
        keys.into_iter()
            .map(|(tenant, product)| {
                let usage = self.tenant_usage(&tenant, product, now);
                (tenant, product, usage)
            })
            .collect()
    }

    /// Sets the burst rate (`None`: no burst limit) and forgets the buckets.
    pub(crate) fn set_burst_rate(&mut self, rate: Option<u32>) {
        self.burst_rate = rate;
        self.buckets.clear();
    }

    /// The configured burst rate.
    pub(crate) fn burst_rate(&self) -> Option<u32> {
        self.burst_rate
    }

    /// A product's quota now.
    pub(crate) fn usage(&mut self, product: Product, now: DateTime<Utc>) -> QuotaUsage {
        let pool = self.pool(product);
        pool.roll(now);
        QuotaUsage {
            points_per_hour: pool.limit,
            used: pool.used,
            resets_at: next_hour(now),
        }
    }

    /// The configured quota of `product`.
    pub(crate) fn quota(&self, product: Product) -> Option<u64> {
        match product {
            Product::Jira => self.jira.limit,
            Product::Confluence => self.confluence.limit,
        }
    }

    fn burst_seconds(&self, now: DateTime<Utc>) -> f64 {
        match self.burst_clock {
            BurstClock::Wall => self.started.elapsed().as_secs_f64(),
            BurstClock::Emulator => now.timestamp_millis() as f64 / 1000.0,
        }
    }

    /// Admits a request or says why not. Admission takes a burst token but no points.
    pub(crate) fn admit(
        &mut self,
        product: Product,
        tenant: &str,
        endpoint: &str,
        method: &Method,
        now: DateTime<Utc>,
    ) -> Result<(), Rejection> {
        let pool = self.pool(product);
        pool.roll(now);
        if let Some(limit) = pool.limit
            && pool.used >= limit
        {
            return Err(Rejection::Quota {
                product,
                limit,
                resets_at: next_hour(now),
                now,
            });
        }
        if let Some(pool) = self.tenants.get_mut(&(tenant.to_owned(), product)) {
            pool.roll(now);
            if let Some(limit) = pool.limit
                && pool.used >= limit
            {
                return Err(Rejection::TenantQuota {
                    product,
                    limit,
                    resets_at: next_hour(now),
                    now,
                });
            }
        }
        let Some(rate) = self.burst_rate else {
            return Ok(());
        };
        let seconds = self.burst_seconds(now);
        let capacity = f64::from(rate.max(1));
        let bucket = self
            .buckets
            .entry((tenant.to_owned(), endpoint.to_owned(), method.clone()))
            .or_insert(Bucket {
                tokens: capacity,
                at: seconds,
            });
        let elapsed = (seconds - bucket.at).max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * capacity).min(capacity);
        bucket.at = bucket.at.max(seconds);
        if bucket.tokens < 1.0 {
            return Err(Rejection::Burst { product, rate, now });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Charges `points` to the product's pool (and the tenant's, when it has one) and returns
    /// the headers a normal answer carries.
    pub(crate) fn charge(
        &mut self,
        product: Product,
        tenant: &str,
        points: u64,
        now: DateTime<Utc>,
    ) -> Vec<(&'static str, String)> {
        let burst_rate = self.burst_rate;
        let reset = seconds_until(next_hour(now), now);
        let mut pools: Vec<(&'static str, QuotaPool)> = Vec::new();
        let pool = self.pool(product);
        pool.roll(now);
        pool.used = pool.used.saturating_add(points);
        pools.push(("global-app-quota", pool.clone()));
        if let Some(pool) = self.tenants.get_mut(&(tenant.to_owned(), product)) {
            pool.roll(now);
            pool.used = pool.used.saturating_add(points);
            pools.push(("tenant-app-quota", pool.clone()));
        }
        let mut headers = Vec::new();
        let mut policies = Vec::new();
        let mut states = Vec::new();
        let mut near = false;
        for (name, pool) in &pools {
            let (Some(limit), Some(remaining)) = (pool.limit, pool.remaining()) else {
                continue;
            };
            // The X-RateLimit-* pair reports the first configured pool (the global one).
            if policies.is_empty() {
                headers.push(("x-ratelimit-limit", limit.to_string()));
                headers.push(("x-ratelimit-remaining", remaining.to_string()));
            }
            near |= remaining.saturating_mul(5) < limit;
            policies.push(format!("\"{name}\";q={limit};w=3600"));
            // `r` appears only once more than 80 % of the budget is spent (Atlassian's rule).
            states.push(if pool.used.saturating_mul(5) > limit.saturating_mul(4) {
                format!("\"{name}\";r={remaining};t={reset}")
            } else {
                format!("\"{name}\";t={reset}")
            });
        }
        if near {
            headers.push(("x-ratelimit-nearlimit", "true".to_owned()));
        }
        if !states.is_empty() {
            headers.push(("ratelimit", states.join(", ")));
        }
        if let Some(rate) = burst_rate {
            policies.push(format!(
                "\"{}\";q={rate};w=1",
                reason(product, "burst-based")
            ));
        }
        if !policies.is_empty() {
            headers.push(("ratelimit-policy", policies.join(", ")));
        }
        headers
    }
}

/// `(product, cloud id)` of an `/ex/{product}/{cloud_id}/...` path.
fn product_route(path: &str) -> Option<(Product, &str)> {
    let mut segments = path.trim_start_matches('/').split('/');
    if segments.next()? != "ex" {
        return None;
    }
    let product = match segments.next()? {
        "jira" => Product::Jira,
        "confluence" => Product::Confluence,
        _ => return None,
    };
    Some((product, segments.next()?))
}

/// Middleware for the product routes: authenticates once (the [`Caller`](super::state::Caller)
/// extractor reuses the result), admits or refuses, charges the quota and adds the headers.
pub(crate) async fn enforce(
    AxumState(shared): AxumState<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let Some((product, tenant)) = product_route(&path) else {
        return next.run(request).await;
    };
    let now = shared.now();
    let caller = bearer_token(request.headers())
        .and_then(|token| shared.with_state(|state| state.authenticate(token, now)));
    let Some(caller) = caller else {
        return next.run(request).await;
    };
    request.extensions_mut().insert(caller);
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    if let Err(rejection) =
        shared.with_limits(|limits| limits.admit(product, tenant, &endpoint, &method, now))
    {
        return rejection.into_response();
    }
    let mut response = next.run(request).await;
    let extra = response
        .extensions()
        .get::<Cost>()
        .copied()
        .unwrap_or_default();
    let headers = shared.with_limits(|limits| limits.charge(product, tenant, 1 + extra.0, now));
    for (name, value) in headers {
        set(response.headers_mut(), name, &value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn quota_is_a_hard_wall_until_the_top_of_the_hour() {
        let mut limits = RateLimiter::new(Some(10), None, BurstClock::Emulator);
        let now = at("2026-11-22T09:29:30Z");
        assert!(
            limits
                .admit(Product::Jira, "t", "/e", &Method::GET, now)
                .is_ok()
        );
        limits.charge(Product::Jira, "t", 10, now);
        let rejection = limits
            .admit(Product::Jira, "t", "/e", &Method::GET, now)
            .expect_err("wall");
        assert_eq!(
            rejection,
            Rejection::Quota {
                product: Product::Jira,
                limit: 10,
                resets_at: at("2026-11-22T10:00:00Z"),
                now,
            }
        );
        assert_eq!(seconds_until(at("2026-11-22T10:00:00Z"), now), 1830);
        // Confluence has its own pool.
        assert!(
            limits
                .admit(Product::Confluence, "t", "/e", &Method::GET, now)
                .is_ok()
        );
        assert!(
            limits
                .admit(
                    Product::Jira,
                    "t",
                    "/e",
                    &Method::GET,
                    at("2026-11-22T10:00:00Z")
                )
                .is_ok()
        );
    }

    #[test]
    fn burst_buckets_are_per_tenant_endpoint_and_method() {
        let mut limits = RateLimiter::new(None, Some(2), BurstClock::Emulator);
        let now = at("2026-11-22T09:00:00Z");
        for _ in 0..2 {
            assert!(
                limits
                    .admit(Product::Jira, "a", "/x", &Method::GET, now)
                    .is_ok()
            );
        }
        assert!(
            limits
                .admit(Product::Jira, "a", "/x", &Method::GET, now)
                .is_err()
        );
        assert!(
            limits
                .admit(Product::Jira, "a", "/x", &Method::POST, now)
                .is_ok()
        );
        assert!(
            limits
                .admit(Product::Jira, "b", "/x", &Method::GET, now)
                .is_ok()
        );
        assert!(
            limits
                .admit(Product::Jira, "a", "/y", &Method::GET, now)
                .is_ok()
        );
        let later = now + TimeDelta::milliseconds(500);
        assert!(
            limits
                .admit(Product::Jira, "a", "/x", &Method::GET, later)
                .is_ok()
        );
        assert!(
            limits
                .admit(Product::Jira, "a", "/x", &Method::GET, later)
                .is_err()
        );
    }

    #[test]
    fn headers_report_the_budget_and_near_limit() {
        let mut limits = RateLimiter::new(Some(100), Some(100), BurstClock::Wall);
        let now = at("2026-11-22T09:59:00Z");
        let headers: HashMap<_, _> = limits
            .charge(Product::Jira, "t", 3, now)
            .into_iter()
            .collect();
        assert_eq!(headers["x-ratelimit-remaining"], "97");
        assert_eq!(headers["ratelimit"], "\"global-app-quota\";t=60");
        assert_eq!(
            headers["ratelimit-policy"],
            "\"global-app-quota\";q=100;w=3600, \"jira-burst-based\";q=100;w=1"
        );
        assert!(!headers.contains_key("x-ratelimit-nearlimit"));
        let headers: HashMap<_, _> = limits
            .charge(Product::Jira, "t", 82, now)
            .into_iter()
            .collect();
        assert_eq!(headers["x-ratelimit-nearlimit"], "true");
        assert_eq!(headers["ratelimit"], "\"global-app-quota\";r=15;t=60");
    }
}
