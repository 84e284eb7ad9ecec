//! The built-in Atlassian Cloud emulator.
//!
//! A product feature, not a test mock: it is written from Atlassian's published API
//! documentation alone and shares no code with the daemon's clients (`oauth`, `atlassian`), so
//! the two cannot agree on a misreading.
//! One axum router on one port serves both hosts of the real service: the authorization server
//! (`/authorize`, `/oauth/token`) and the API gateway (`/oauth/token/accessible-resources`,
//! `/me`, `/ex/{product}/{cloudid}/...`), plus a JSON control API under `/_emulator/`.
//!
//! Layout (one job per module):
//! - [`state`]: the model (sites, users, grants, token families) and the rotation rules, as plain
//!   functions over an explicit `now`;
//! - `token`: JWT-looking random token material and the SHA-256 digests that are all we keep;
//! - `oauth`: `/authorize`, `/authorize/decision`, `/oauth/token`;
//! - `consent_page`: the HTML consent and error pages;
//! - `gateway`: bearer authentication (reusable by later endpoints), accessible-resources, `/me`,
//!   Jira `myself`;
//! - `products`: the Jira and Confluence data of every site (its own lock), with `issues` (one
//!   site's projects, issues and ordered indexes), `spaces` (one site's spaces) and
//!   `generator` (realistic reproducible data);
//! - `jql`: the JQL subset (parser, time-zone-aware compiler, evaluator);
//! - `issue_view`: Jira's issue JSON; `page_token`: sealed page tokens and cursors;
//! - `jira`: search/jql, approximate-count, bulkfetch, GET issue, the 410 legacy search;
//! - `confluence`: v2 spaces with cursor paging;
//! - `jsm`: JSM Operations alerts (create, list with search query, get, close, request status),
//!   with `jsm_alerts` (one site's alerts and requests) and `jsm_query` (the search syntax);
//! - `rate_limit`: points quota and burst buckets with their headers;
//! - `faults`: fault injection and the request log; `listener`: connections a fault can reset;
//! - `admin`: the data operations shared by the handle and the control API;
//! - `control`: the `/_emulator/` JSON API;
//! - `server`: shared state, router and the listening task.

mod admin;
mod confluence;
mod consent_page;
mod control;
mod faults;
mod gateway;
mod generator;
mod issue_view;
mod issues;
mod jira;
mod jql;
mod jsm;
mod jsm_alerts;
mod jsm_query;
mod listener;
mod oauth;
mod page_token;
mod products;
mod rate_limit;
mod server;
mod spaces;
mod state;
mod token;

pub use faults::{ErrorRate, Fault, FaultKind, LoggedRequest};
pub use issues::{IssueChange, IssueSnapshot};
pub use jsm_alerts::JsmAlertSnapshot;
pub use products::DataError;
pub use rate_limit::{BurstClock, QuotaUsage};
pub use spaces::{SpaceChange, SpaceSnapshot, SpaceStatus, SpaceType};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;

use atlassync_clock::{Clock, SystemClock};

/// How the emulator behaves: the client it knows and the token lifetimes it enforces.
///
/// Every lifetime is configurable down to seconds so tests can compress a year into moments.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The only OAuth client (app) the emulator knows.
    pub client_id: String,
    /// That client's secret.
    pub client_secret: String,
    /// Access-token lifetime, reported as `expires_in` (Atlassian: 3600 s).
    pub access_token_ttl: Duration,
    /// A refresh token not exchanged for this long dies (Atlassian: 90 days).
    pub inactivity_expiry: Duration,
    /// A token family dies this long after its first token was issued (Atlassian: 365 days).
    pub absolute_expiry: Duration,
    /// A rotated refresh token may be exchanged again within this window (Atlassian: 10 minutes).
    pub reuse_leeway: Duration,
    /// Authorization codes die this long after consent (undocumented; 10 minutes).
    pub code_ttl: Duration,
    /// Whether revoking a family (reuse detection, password change, app revocation) also kills
    /// its outstanding access tokens at once, rather than letting them live until `exp`.
    /// Atlassian does not document which (⚠ uncertain).
    pub revocation_kills_access_tokens: bool,
    /// Which error body a failed refresh gets.
    pub refresh_error_variant: RefreshErrorVariant,
    /// Points per UTC hour of each product's app quota (Atlassian's Tier 1: 65,000);
    /// `None` disables the quota. Jira and Confluence have separate pools.
    pub quota_points_per_hour: Option<u64>,
    /// Burst limit per tenant × endpoint × method, in requests per second (Atlassian: 100);
    /// `None` disables it.
    pub burst_requests_per_second: Option<u32>,
    /// Which clock refills burst buckets (wall time by default, so a frozen test clock does not
    /// starve them).
    pub burst_clock: BurstClock,
    /// How long a `search/jql` `nextPageToken` stays valid (Atlassian: 7 days).
    pub page_token_ttl: Duration,
    /// Most ids or keys one `issue/bulkfetch` accepts (Atlassian: 100).
    pub bulkfetch_max_issues: usize,
    /// Serve `"nextPageToken": null` on the last search page instead of omitting it (both are
    /// observed; the schema only allows omission).
    pub null_next_page_token_on_last_page: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            client_id: "emulator-client".to_owned(),
            client_secret: "emulator-secret".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            inactivity_expiry: Duration::from_secs(90 * DAY),
            absolute_expiry: Duration::from_secs(365 * DAY),
            reuse_leeway: Duration::from_secs(10 * 60),
            code_ttl: Duration::from_secs(10 * 60),
            revocation_kills_access_tokens: true,
            refresh_error_variant: RefreshErrorVariant::InvalidGrant,
            quota_points_per_hour: Some(65_000),
            burst_requests_per_second: Some(100),
            burst_clock: BurstClock::Wall,
            page_token_ttl: Duration::from_secs(7 * DAY),
            bulkfetch_max_issues: 100,
            null_next_page_token_on_last_page: false,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("inactivity_expiry", &self.inactivity_expiry)
            .field("absolute_expiry", &self.absolute_expiry)
            .field("reuse_leeway", &self.reuse_leeway)
            .field("code_ttl", &self.code_ttl)
            .field(
                "revocation_kills_access_tokens",
                &self.revocation_kills_access_tokens,
            )
            .field("refresh_error_variant", &self.refresh_error_variant)
            .field("quota_points_per_hour", &self.quota_points_per_hour)
            .field("burst_requests_per_second", &self.burst_requests_per_second)
            .field("burst_clock", &self.burst_clock)
            .field("page_token_ttl", &self.page_token_ttl)
            .field("bulkfetch_max_issues", &self.bulkfetch_max_issues)
            .field(
                "null_next_page_token_on_last_page",
                &self.null_next_page_token_on_last_page,
            )
            .finish()
    }
}

/// How `search/jql` splits results into pages beyond `maxResults` and the field-dependent cap
/// (Atlassian: "pages may hold fewer issues than `maxResults`, and an empty page may still carry
/// a `nextPageToken` with `isLast: false`"). The default serves full pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPaging {
    /// At most this many issues per page, whatever `maxResults` asks for (at least 1).
    #[serde(default)]
    pub page_cap: Option<usize>,
    /// Every n-th page of a scan (pages 0-based: n-1, 2n-1, …; never the first, n ≥ 2) holds no
    /// issues but carries a `nextPageToken` and `isLast: false`; the next page continues where
    /// the previous non-empty one stopped. `isLast: true` comes only on the real last page.
    #[serde(default)]
    pub empty_page_every: Option<usize>,
}

/// Options of [`EmulatorHandle::create_issues_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// Every generated issue is created before this instant and last updated exactly at it
    /// (default: created over a period ending now, updated at varied instants up to now).
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The body a failed refresh gets (both are seen from the real service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshErrorVariant {
    /// `403 {"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}` (documented).
    #[default]
    InvalidGrant,
    /// `403 {"error":"unauthorized_client","error_description":"refresh_token is invalid"}` (observed).
    UnauthorizedClient,
}

/// An Atlassian product a site runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// Jira (container scopes contain `jira`).
    Jira,
    /// Confluence (container scopes contain `confluence`).
    Confluence,
}

impl Product {
    /// The product a scope string belongs to, if any (`read:me`, `offline_access`: none).
    pub fn of_scope(scope: &str) -> Option<Product> {
        if scope.contains("jira") {
            Some(Product::Jira)
        } else if scope.contains("confluence") {
            Some(Product::Confluence)
        } else {
            None
        }
    }
}

/// An Atlassian account to create in the emulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Atlassian-account profile zone (IANA), served by `/me` as `zoneinfo`.
    pub zoneinfo: String,
    /// Jira profile zone (IANA), served by `/rest/api/3/myself` as `timeZone`.
    pub jira_time_zone: String,
    /// Cloud ids of the sites this user can access (and so may grant).
    #[serde(default)]
    pub sites: Vec<String>,
}

/// What the (non-interactive) user answers at the next `/authorize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum ConsentDecision {
    /// The user consents as `account_id`, granting `sites` (`None`: every site they can access).
    Accept {
        /// The consenting account.
        account_id: String,
        /// Sites to add to the grant; `None` means all of the user's sites.
        #[serde(default)]
        sites: Option<Vec<String>>,
    },
    /// The user declines: redirect with `error=access_denied`.
    Deny,
}

/// What happened so far, for assertions and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Successful authorization-code exchanges.
    pub code_exchanges: u64,
    /// Successful refreshes (including reuses inside the leeway).
    pub refreshes: u64,
    /// Refreshes that presented an already-rotated token inside the reuse leeway.
    pub reuses_in_leeway: u64,
    /// Families revoked by breach detection (reuse outside the leeway, or of an older token).
    pub family_revocations: u64,
    /// Token-endpoint answers reporting a dead code or refresh token (whatever the configured body).
    pub invalid_grant_errors: u64,
    /// Gateway calls answered 401.
    pub unauthorized_api_calls: u64,
    /// Gateway calls (every bearer endpoint, whatever the outcome).
    pub api_calls: u64,
}

/// Namespace for starting the emulator.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Binds `listen` (use `127.0.0.1:0` in tests) and serves until every clone of the handle
    /// is dropped or [`EmulatorHandle::shutdown`] is called.
    pub async fn start(
        config: EmulatorConfig,
        clock: Arc<dyn Clock>,
        listen: SocketAddr,
    ) -> std::io::Result<EmulatorHandle> {
        let (handle, _task) = server::start(config, clock, listen).await?;
        Ok(handle)
    }
}

/// Cancels the server when the last handle clone goes away.
struct ServerLifetime {
    cancel: CancellationToken,
}

impl Drop for ServerLifetime {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A running emulator: its address, its clock, and the same controls as the `/_emulator/` API.
#[derive(Clone)]
pub struct EmulatorHandle {
    shared: Arc<server::Shared>,
    base_url: Url,
    lifetime: Arc<ServerLifetime>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The root URL, e.g. `http://127.0.0.1:PORT/`; it serves both the auth-host and the
    /// api-host paths.
    pub fn base_url(&self) -> Url {
        self.base_url.clone()
    }

    /// The emulator's now: the injected clock plus the emulator's own offset.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// Moves the emulator's own clock forward (adds to its offset; the injected clock is untouched).
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.shared.advance_clock(by);
    }

    /// Creates a site running `products`; returns its new cloud id (a UUID string).
    pub fn add_site(&self, name: &str, products: &[Product]) -> String {
        self.shared.with_state(|s| s.add_site(name, products))
    }

    /// Creates an Atlassian account; returns its account id. Unknown cloud ids in
    /// `user.sites` are dropped with a warning.
    pub fn add_user(&self, mut user: NewUser) -> String {
        self.shared.with_state(|s| {
            user.sites.retain(|cloud_id| {
                let known = s.has_site(cloud_id);
                if !known {
                    tracing::warn!(site.cloud_id = %cloud_id, "emulator: add_user ignores an unknown site");
                }
                known
            });
            s.add_user_unchecked(user)
        })
    }

    /// Queues the answer of the next `/authorize` (first in, first out). While the queue is
    /// non-empty `/authorize` redirects at once instead of showing the consent page.
    pub fn queue_consent(&self, decision: ConsentDecision) {
        self.shared.with_state(|s| s.queue_consent(decision));
    }

    /// The user revokes the app in "Connected apps": every family dies and the grant is emptied.
    pub fn revoke_app(&self, account_id: &str) {
        let now = self.now();
        if let Err(error) = self.shared.with_state(|s| s.revoke_app(account_id, now)) {
            tracing::warn!(%error, "emulator: revoke_app ignored");
        }
    }

    /// The user changes their password: every refresh token issued before now dies.
    pub fn change_password(&self, account_id: &str) {
        let now = self.now();
        if let Err(error) = self
            .shared
            .with_state(|s| s.change_password(account_id, now))
        {
            tracing::warn!(%error, "emulator: change_password ignored");
        }
    }

    /// Drops one site from the user's grant (accessible-resources stops listing it and the
    /// gateway answers 404 for it).
    pub fn revoke_site(&self, account_id: &str, cloud_id: &str) {
        if let Err(error) = self
            .shared
            .with_state(|s| s.revoke_site(account_id, cloud_id))
        {
            tracing::warn!(%error, "emulator: revoke_site ignored");
        }
    }

    /// Gives a revoked site back to the user's grant: accessible-resources lists it again.
    pub fn restore_site(&self, account_id: &str, cloud_id: &str) {
        if let Err(error) = self
            .shared
            .with_state(|s| s.restore_site(account_id, cloud_id))
        {
            tracing::warn!(%error, "emulator: restore_site ignored");
        }
    }

    /// Replaces the scopes of the user's grant (seen by accessible-resources, the gateway's
    /// scope checks and later token responses).
    pub fn set_scopes(&self, account_id: &str, scopes: &[&str]) {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        if let Err(error) = self.shared.with_state(|s| s.set_scopes(account_id, scopes)) {
            tracing::warn!(%error, "emulator: set_scopes ignored");
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.with_state(|s| s.counters().clone())
    }

    // ----- Jira data ----------------------------------------------------------------------------

    /// Generates `n` realistic issues in project `project_key` of `cloud_id` (the project is
    /// created on first use; issues are assigned among the site's users, created over a period
    /// ending now); returns their ids. An unknown site or one without Jira yields none.
    pub fn create_issues(&self, cloud_id: &str, project_key: &str, n: usize) -> Vec<String> {
        self.create_issues_with(cloud_id, project_key, n, GenerateOptions::default())
    }

    /// Like [`create_issues`](Self::create_issues), with options (e.g. `updated_at` in the
    /// past, so the issues are older than a sync's bookmark).
    pub fn create_issues_with(
        &self,
        cloud_id: &str,
        project_key: &str,
        n: usize,
        options: GenerateOptions,
    ) -> Vec<String> {
        admin::create_issues(&self.shared, cloud_id, project_key, n, options.updated_at)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "emulator: create_issues ignored");
                Vec::new()
            })
    }

    /// Moves an issue (id or key) to project `new_project_key` (created on first use): the id
    /// stays, the key becomes the target project's next key, `updated` becomes now, and the old
    /// key keeps resolving (GET issue, bulkfetch).
    pub fn move_issue(
        &self,
        cloud_id: &str,
        issue_id: &str,
        new_project_key: &str,
    ) -> Result<IssueSnapshot, DataError> {
        admin::move_issue(&self.shared, cloud_id, issue_id, new_project_key)
    }

    /// Makes project `project_key` (created on first use) invisible (`visible: false`) or
    /// visible again to `account_id`: search/jql, approximate-count, bulkfetch and GET issue
    /// leave its issues out for that user, as Jira does for projects a user cannot browse.
    pub fn set_project_visibility(
        &self,
        cloud_id: &str,
        project_key: &str,
        account_id: &str,
        visible: bool,
    ) -> Result<(), DataError> {
        admin::set_project_visibility(&self.shared, cloud_id, project_key, account_id, visible)
    }

    /// Sets an issue's summary to `text` verbatim (any characters, U+0000 included, served
    /// JSON-escaped as `\u0000`) and its `updated` to now.
    pub fn update_issue_summary(
        &self,
        cloud_id: &str,
        issue_id: &str,
        text: &str,
    ) -> Result<IssueSnapshot, DataError> {
        self.upsert_issue(
            cloud_id,
            IssueChange {
                issue: Some(issue_id.to_owned()),
                summary: Some(text.to_owned()),
                updated: self.now(),
                ..IssueChange::default()
            },
        )
    }

    /// How `search/jql` pages (see [`SearchPaging`]); the default serves full pages.
    pub fn set_search_paging(&self, paging: SearchPaging) {
        self.shared.set_search_paging(paging);
    }

    /// Creates or changes one issue with an explicit `updated` instant.
    pub fn upsert_issue(
        &self,
        cloud_id: &str,
        change: IssueChange,
    ) -> Result<IssueSnapshot, DataError> {
        admin::upsert_issue(&self.shared, cloud_id, &change)
    }

    /// Deletes issues by id or key (they join the deleted-issues set); returns how many existed.
    pub fn delete_issues<S: AsRef<str>>(&self, cloud_id: &str, ids: &[S]) -> usize {
        admin::delete_issues(&self.shared, cloud_id, ids).unwrap_or_else(|error| {
            tracing::warn!(%error, "emulator: delete_issues ignored");
            0
        })
    }

    /// The truth about the site's live issues, ascending by id (empty for an unknown site).
    pub fn issues(&self, cloud_id: &str) -> Vec<IssueSnapshot> {
        admin::issues(&self.shared, cloud_id).unwrap_or_default()
    }

    /// Ids of the site's deleted issues, ascending.
    pub fn deleted_issue_ids(&self, cloud_id: &str) -> Vec<String> {
        admin::deleted_issue_ids(&self.shared, cloud_id).unwrap_or_default()
    }

    // ----- Confluence data ----------------------------------------------------------------------

    /// Generates `n` spaces (team spaces, personal spaces for the site's users, a few archived);
    /// returns their ids.
    pub fn create_spaces(&self, cloud_id: &str, n: usize) -> Vec<String> {
        admin::create_spaces(&self.shared, cloud_id, n).unwrap_or_else(|error| {
            tracing::warn!(%error, "emulator: create_spaces ignored");
            Vec::new()
        })
    }

    /// Creates or changes one space.
    pub fn upsert_space(
        &self,
        cloud_id: &str,
        change: SpaceChange,
    ) -> Result<SpaceSnapshot, DataError> {
        admin::upsert_space(&self.shared, cloud_id, &change)
    }

    /// Deletes spaces by id or key; returns how many existed.
    pub fn delete_spaces<S: AsRef<str>>(&self, cloud_id: &str, ids: &[S]) -> usize {
        admin::delete_spaces(&self.shared, cloud_id, ids).unwrap_or_else(|error| {
            tracing::warn!(%error, "emulator: delete_spaces ignored");
            0
        })
    }

    /// The truth about the site's live spaces, ascending by id.
    pub fn spaces(&self, cloud_id: &str) -> Vec<SpaceSnapshot> {
        admin::spaces(&self.shared, cloud_id).unwrap_or_default()
    }

    // ----- JSM Operations ------------------------------------------------------------------------

    /// The truth about the site's JSM Operations alerts, oldest first (empty for an unknown site
    /// or one without Jira).
    pub fn jsm_alerts(&self, cloud_id: &str) -> Vec<JsmAlertSnapshot> {
        admin::jsm_alerts(&self.shared, cloud_id).unwrap_or_default()
    }

    // ----- faults, log, limits ------------------------------------------------------------------

    /// Queues a fault for the next matching requests (first queued, first served).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.with_faults(|faults| faults.push(fault));
    }

    /// Sets (or with `None` clears) the random error rate.
    pub fn set_error_rate(&self, rate: Option<ErrorRate>) {
        self.shared
            .with_faults(|faults| faults.set_error_rate(rate));
    }

    /// Drops every queued fault and the error rate.
    pub fn clear_faults(&self) {
        self.shared.with_faults(|faults| faults.clear());
    }

    /// Every request seen outside `/_emulator/` (the latest 100,000), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.with_log(|log| log.entries())
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.shared.with_log(|log| log.clear());
    }

    /// Sets a product's points per UTC hour (`None`: unlimited); points spent this hour stay.
    pub fn set_quota(&self, product: Product, points_per_hour: Option<u64>) {
        self.shared
            .with_limits(|limits| limits.set_quota(product, points_per_hour));
    }

    /// A product's quota and what is spent of it this hour.
    pub fn quota_usage(&self, product: Product) -> QuotaUsage {
        let now = self.now();
        self.shared.with_limits(|limits| limits.usage(product, now))
    }

    /// Sets (or with `None` removes) a per-tenant quota of one site and product, in points per
    /// UTC hour (Atlassian's Tier 2 "Per-Tenant Pool"). Requests to that site and product are
    /// charged to it as well as to the product's global quota; once it is spent they get 429
    /// with `RateLimit-Reason: {jira|confluence}-quota-tenant-based` until the top of the hour,
    /// other sites and products unaffected.
    pub fn set_tenant_quota(&self, cloud_id: &str, product: Product, points_per_hour: Option<u64>) {
        self.shared
            .with_limits(|limits| limits.set_tenant_quota(cloud_id, product, points_per_hour));
    }

    /// A site's per-tenant quota for `product` and what is spent of it this hour.
    pub fn tenant_quota_usage(&self, cloud_id: &str, product: Product) -> QuotaUsage {
        let now = self.now();
        self.shared
            .with_limits(|limits| limits.tenant_usage(cloud_id, product, now))
    }

    /// Sets the burst rate per tenant × endpoint × method (`None`: no burst limit).
    pub fn set_burst_limit(&self, requests_per_second: Option<u32>) {
        self.shared
            .with_limits(|limits| limits.set_burst_rate(requests_per_second));
    }

    /// Stops serving (in-flight requests finish). Idempotent.
    pub fn shutdown(&self) {
        self.lifetime.cancel.cancel();
    }
}

/// The command-line options of a standalone emulator (its own binary and the
/// `atlassync emulator` subcommand share them).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// The OAuth client id the emulator accepts.
    #[arg(long, default_value = "emulator-client")]
    pub client_id: String,
    /// The OAuth client secret the emulator accepts.
    #[arg(
        long,
        default_value = "emulator-secret",
        env = "ATLASSYNC_EMULATOR_CLIENT_SECRET"
    )]
    pub client_secret: String,
}

impl ServeArgs {
    /// The emulator configuration these options describe (documented lifetimes otherwise).
    pub fn config(&self) -> EmulatorConfig {
        EmulatorConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            ..Default::default()
        }
    }
}

/// Runs a standalone emulator on the system clock until SIGINT or SIGTERM (the
/// `atlassync emulator` subcommand).
pub async fn serve_forever(config: EmulatorConfig, listen: SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (handle, task) = server::start(config, Arc::new(SystemClock), listen)
        .await
        .with_context(|| format!("binding the emulator to {listen}"))?;
    tracing::info!(base_url = %handle.base_url(), "emulator listening");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("emulator: SIGTERM, stopping"),
        _ = interrupt.recv() => tracing::info!("emulator: SIGINT, stopping"),
    }
    handle.shutdown();
    // Keep-alive connections may hold the graceful shutdown open; do not wait for them forever.
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(joined) => joined.context("emulator server task")??,
        Err(_) => tracing::warn!("emulator: connections still open after 10s, exiting anyway"),
    }
    Ok(())
}
