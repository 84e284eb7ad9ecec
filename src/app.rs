//! The wiring every subcommand shares: validated configuration, the database pool, the
//! clock and the Atlassian clients.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use url::Url;

use crate::atlassian::ApiClient;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::domain::AccountId;
use crate::invite::Invite;
use crate::oauth::TokenClient;
use crate::telemetry::Telemetry;

/// Shared services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct App {
    /// The validated configuration; a reload builds a new `App` rather than changing this one.
    pub config: Arc<Config>,
    /// The Postgres pool (`database.url`, `database.max_connections`), kept across reloads.
    pub pool: PgPool,
    /// Business time: the system clock in production, a manual clock in tests and the demo.
    pub clock: Arc<dyn Clock>,
    /// The token endpoint client, on `atlassian.auth_base_url`.
    pub tokens: TokenClient,
    /// The gateway client, on `atlassian.api_base_url`.
    pub api: ApiClient,
    /// The shared HTTP client (one connection pool) for product calls and webhooks.
    pub http: reqwest::Client,
    /// The process's counters and scheduler pulse; outlives reloads.
    pub telemetry: Arc<Telemetry>,
}

impl App {
    /// Builds the clients for `config` over an open pool.
    pub fn new(config: Config, pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self::with_telemetry(config, pool, clock, Arc::default())
    }

    /// The same services for a new configuration, keeping pool, clock and counters.
    pub fn reconfigured(&self, config: Config) -> Self {
        Self::with_telemetry(
            config,
            self.pool.clone(),
            self.clock.clone(),
            self.telemetry.clone(),
        )
    }

    fn with_telemetry(
        config: Config,
        pool: PgPool,
        clock: Arc<dyn Clock>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.atlassian.request_timeout)
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("atlassync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the TLS backend initialises");
        let tokens = TokenClient::new(&config.atlassian, http.clone());
        let api = ApiClient::new(
            config.atlassian.api_base_url.clone(),
            http.clone(),
            telemetry.clone(),
        );
        Self {
            config: Arc::new(config),
            pool,
            clock,
            tokens,
            api,
            http,
            telemetry,
        }
    }

    /// The keys sealing tokens at rest.
    pub fn keyring(&self) -> &Keyring {
        &self.config.crypto.keyring
    }

    /// A fresh invite link for `label`, valid for `http.invite_ttl`.
    pub fn invite_link(&self, label: &str) -> Url {
        let ttl = self.config.http.invite_ttl;
        Invite::new(label, self.clock.now() + ttl)
            .link(self.keyring(), &self.config.http.public_url)
    }

    /// A fresh re-consent link for a grant: only `account_id` may consent through it (when
    /// the account is known), and it stays valid until a day after `deadline`, the instant
    /// the alert carrying it warns about, and at least `http.invite_ttl`.
    pub fn reconsent_link(
        &self,
        label: &str,
        account_id: Option<&AccountId>,
        deadline: Option<DateTime<Utc>>,
    ) -> Url {
        let now = self.clock.now();
        let mut expires_at = now + self.config.http.invite_ttl;
        if let Some(deadline) = deadline {
            expires_at = expires_at.max(deadline + chrono::TimeDelta::days(1));
        }
        let mut invite = Invite::new(label, expires_at);
        if let Some(account_id) = account_id {
            invite = invite.for_account(account_id.clone());
        }
        invite.link(self.keyring(), &self.config.http.public_url)
    }
}
