//! Configuration: defaults < TOML file < `ATLASSYNC_<SECTION>__<KEY>` environment variables.
//!
//! Loading validates everything up front and names the offending key, so a daemon never
//! starts half-configured. Secrets are read from the file, the environment, files they name
//! (`<key>_file`) or systemd credentials, and never printed.

mod sources;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::crypto::{Keyring, KeyringError};
use crate::domain::{CloudId, JobKind, Sink};
pub use sources::{
    CREDSTORE, CREDSTORE_PREFIX, ENV_PREFIX, NON_CONFIG_VARIABLES, SecretSource, variable_of,
};
use sources::{Credentials, secret};
use values::{DurationValue, LenientString};
pub use values::{Schedule, Scopes, format_duration};

/// Where the configuration file lives when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/atlassync/atlassync.toml";

/// The scopes atlassync asks for when `atlassian.scopes` is not set: identity, refresh
/// tokens, Jira reads and Confluence space reads.
pub const DEFAULT_SCOPES: &[&str] = &[
    "read:me",
    "offline_access",
    "read:jira-work",
    "read:jira-user",
    "read:space:confluence",
];

/// A configuration problem, always naming the key an operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is present but its value is unusable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `tokens.lease_ttl`.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
    /// A required key is absent.
    #[error("config key `{key}` is required but not set{hint}")]
    Missing {
        /// The dotted key that must be set.
        key: String,
        /// Appended to the message as is: empty, or text with a leading space.
        hint: String,
    },
    /// An `ATLASSYNC_` environment variable names no configuration key.
    #[error(
        "environment variable `{variable}` is not a configuration key; did you mean `{suggestion}` ({key})? Rename or unset it"
    )]
    UnknownVariable {
        /// The variable as it is spelt in the environment.
        variable: String,
        /// The variable of the nearest configuration key.
        suggestion: String,
        /// That key, dotted.
        key: String,
    },
    /// The file given with `--config` could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The configuration file, or `(inline)` for [`Config::from_toml`].
        path: PathBuf,
        /// Why it could not be read or parsed.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn missing(key: &str, hint: &str) -> Self {
        Self::Missing {
            key: key.to_owned(),
            hint: hint.to_owned(),
        }
    }

    /// The key the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::Missing { key, .. } => Some(key),
            Self::File { .. } | Self::UnknownVariable { .. } => None,
        }
    }
}

/// The validated configuration of one atlassync process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[database]`; changes need a restart (a reload keeps the pool).
    pub database: DatabaseConfig,
    /// `[atlassian]`: the OAuth app and Atlassian's hosts.
    pub atlassian: AtlassianConfig,
    /// `[tokens]`: the grant lifecycle policy.
    pub tokens: TokenPolicy,
    /// `[schedule]`: when each job runs.
    pub schedule: ScheduleConfig,
    /// `[http]`: the consent server; `listen` changes need a restart.
    pub http: HttpConfig,
    /// `[crypto]`: the keys, already loaded.
    pub crypto: CryptoConfig,
    /// `[alerts]`: validated, but nothing delivers alerts yet.
    pub alerts: AlertsConfig,
    /// `[jira]`: what the Jira sync covers.
    pub jira: JiraConfig,
    /// `[sync]`: pacing and windows of the sync.
    pub sync: SyncConfig,
    /// `[log]`: applied once at start-up; a reload does not change it.
    pub log: LogConfig,
    /// `[retention]`: how long history rows are kept.
    pub retention: RetentionConfig,
    /// Where each secret that is set came from (never the value), for `check-config`.
    pub secret_sources: Vec<SecretSource>,
}

/// `[retention]`: history that is pruned, a bounded batch at every token sweep.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Resolved alerts older than this (by `resolved_at`) are deleted.
    pub resolved_alerts: TimeDelta,
    /// `sync_runs` rows older than this (by `started_at`) are deleted.
    pub sync_runs: TimeDelta,
}

/// `[sync]`: pacing and windows of the Jira and Confluence sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The app's points quota per UTC hour of *each* product (Atlassian keeps one pool per
    /// app and product; the default Tier 1 pool is 65,000).
    pub points_per_hour: u32,
    /// Share of each product's hourly quota sync leaves unspent, for everything else.
    pub budget_reserve_percent: u32,
    /// Percent of what is left of sync's hourly share (of the run's product) that one run
    /// may spend, taken when the run starts; never less than [`RUN_SLICE_FLOOR`]. Keeps one
    /// site's backlog from starving the other sites' runs for the rest of the hour.
    pub run_share_percent: u32,
    /// How far before the watermark each incremental Jira query starts.
    pub jira_overlap: TimeDelta,
    /// How long Jira's search index may lag behind a change: a complete scan moves the
    /// watermark only to its start minus this.
    pub jira_index_lag: TimeDelta,
    /// How often an incremental run re-reads a wider window (`jira_rescan_window` more), to
    /// catch what index lag beyond the overlap missed.
    pub jira_rescan_every: TimeDelta,
    /// How much wider that periodic re-scan reaches back.
    pub jira_rescan_window: TimeDelta,
    /// Issues per search page (Atlassian caps pages with fields at 100).
    pub jira_page_size: u32,
    /// Retries of one request after transient failures.
    pub max_retries: u32,
    /// A run that would remove more than this share of a site's live rows holds the
    /// deletion for an operator (`sync --confirm-deletes`); 1 never holds.
    pub max_delete_fraction: f64,
}

/// The least a run's slice can be, whatever is left of the hour's share: a normal incremental
/// run (a `/myself`, one page of 100 issues) always fits.
pub const RUN_SLICE_FLOOR: i64 = 200;

impl SyncConfig {
    /// The points sync may spend on one product in one UTC hour: its quota less the reserve.
    pub fn hourly_share(&self) -> i64 {
        i64::from(self.points_per_hour) * (100 - i64::from(self.budget_reserve_percent)) / 100
    }

    /// The most points one run may spend when it starts with `left` points of the hour's
    /// share unspent: `run_share_percent` of them, at least [`RUN_SLICE_FLOOR`].
    pub fn run_slice(&self, left: i64) -> i64 {
        (left.max(0) * i64::from(self.run_share_percent) / 100).max(RUN_SLICE_FLOOR)
    }
}
/// `[database]`: the Postgres that holds all state.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// May carry a password, hence secret.
    pub url: SecretString,
    /// Pool size (`database.max_connections`, default 10).
    pub max_connections: u32,
}

/// `[atlassian]`: the OAuth 2.0 (3LO) app and the hosts it talks to.
#[derive(Debug, Clone)]
pub struct AtlassianConfig {
    /// The app's client id from Atlassian's developer console.
    pub client_id: String,
    /// From `client_secret` or `client_secret_file` (trimmed); never printed.
    pub client_secret: SecretString,
    /// The registered callback URL; the consent server serves the callback at its path.
    pub redirect_uri: Url,
    /// Requested at consent; validation guarantees `offline_access` and `read:me`.
    pub scopes: Vec<String>,
    /// The authorization server (`/authorize`, `/oauth/token`); default
    /// `https://auth.atlassian.com`.
    pub auth_base_url: Url,
    /// The API gateway; default `https://api.atlassian.com`.
    pub api_base_url: Url,
    /// Timeout of each HTTP request to Atlassian: a `std` duration for the HTTP client, not
    /// business time.
    pub request_timeout: Duration,
}

/// `[tokens]`: the grant lifecycle policy (docs/architecture.md, "Token lifecycle").
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Refresh an access token this long before it expires.
    pub refresh_margin: TimeDelta,
    /// Rotate a refresh token that has been idle this long.
    pub keepalive_after: TimeDelta,
    /// Atlassian's inactivity expiry of a refresh token (90 days).
    pub inactivity_expiry: TimeDelta,
    /// Atlassian's absolute expiry of a token family (365 days).
    pub absolute_expiry: TimeDelta,
    /// Atlassian's reuse leeway for a rotated refresh token (10 minutes).
    pub reuse_leeway: TimeDelta,
    /// Warn this long before a family's absolute deadline.
    pub reauth_warning: TimeDelta,
    /// How long a worker holds a grant while refreshing it; well under `reuse_leeway`.
    pub lease_ttl: TimeDelta,
    /// Consecutive transient failures before a grant is shown as `degraded`.
    pub degraded_after: u32,
    /// How many grants may be marked `needs_reauth` within `reuse_leeway` (10 minutes)
    /// before further marks are held and one app-level alert is raised instead: that many
    /// families dying at once points to the app, not to the users.
    pub reauth_breaker: u32,
    /// How often a grant with no work due (not serving a site, access token expired) is
    /// revalidated anyway. Each such check costs a token exchange, so idle grants are checked
    /// on this slower cadence instead of at every `schedule.revalidate` tick.
    pub idle_revalidate_after: TimeDelta,
}

/// `[schedule]`: cron expressions, UTC, seconds field optional.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// `schedule.token_sweep`; default every minute.
    pub token_sweep: Schedule,
    /// `schedule.revalidate`; default 00:07, 06:07, 12:07 and 18:07.
    pub revalidate: Schedule,
    /// `schedule.jira_sync`; default every 5 minutes.
    pub jira_sync: Schedule,
    /// `schedule.jira_reconcile`; default hourly at :23 (each tick continues a census pass or
    /// starts one with a drift check of about one point).
    pub jira_reconcile: Schedule,
    /// `schedule.confluence_sync`; default hourly at :17.
    pub confluence_sync: Schedule,
    /// `schedule.alerts`; default every 5 seconds: stale-site checks and alert delivery.
    pub alerts: Schedule,
}

impl ScheduleConfig {
    /// The schedule of `job` (`schedule.<job>`).
    pub fn of(&self, job: JobKind) -> &Schedule {
        match job {
            JobKind::TokenSweep => &self.token_sweep,
            JobKind::Revalidate => &self.revalidate,
            JobKind::JiraSync => &self.jira_sync,
            JobKind::JiraReconcile => &self.jira_reconcile,
            JobKind::ConfluenceSync => &self.confluence_sync,
            JobKind::Alerts => &self.alerts,
        }
    }
}

/// `[http]`: the admin and consent server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The consent server's address; bound once at start-up, so a change needs a restart.
    pub listen: SocketAddr,
    /// The URL users reach this server at; invite links live under it.
    pub public_url: Url,
    /// Guards `/metrics` and `/admin` when set.
    pub admin_token: Option<SecretString>,
    /// How long an invite link stays valid.
    pub invite_ttl: TimeDelta,
}

/// `[crypto]`: keys that seal tokens at rest and sign invite links.
#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// The current key: seals new tokens and signs links.
    pub key_file: PathBuf,
    /// Older keys: only open values sealed, and verify links signed, before a rotation.
    pub previous_key_files: Vec<PathBuf>,
    /// Loaded from the files above during validation.
    pub keyring: Keyring,
}

/// `[alerts]`: where alert messages go and when ops hear about quiet failures.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The generic webhook: one signed JSON `POST` per alert transition.
    pub webhook_url: Option<Url>,
    /// Required when `webhook_url` is set: the HMAC-SHA256 key of `X-Atlassync-Signature`.
    pub webhook_secret: Option<SecretString>,
    /// JSM Operations: the site whose alerts API receives ops alerts.
    pub jsm_cloud_id: Option<CloudId>,
    /// JSM Operations: the label of the grant (with the ops-alert scopes) that calls it.
    pub jsm_grant: Option<String>,
    /// A site whose sync has not succeeded for this long raises `sync_stale`; `None` means
    /// three periods of that stream's schedule.
    pub sync_stale_after: Option<TimeDelta>,
    /// The first retry of a failed delivery waits about this long; each retry doubles it.
    pub retry_initial: TimeDelta,
    /// The longest wait between two delivery attempts.
    pub retry_max: TimeDelta,
    /// A sink whose oldest unacknowledged message has waited this long raises
    /// `delivery_failing`.
    pub sink_failing_after: TimeDelta,
}

impl AlertsConfig {
    /// The sinks messages are delivered to: the log always, then each configured one.
    pub fn sinks(&self) -> Vec<Sink> {
        let mut sinks = vec![Sink::Log];
        if self.webhook_url.is_some() {
            sinks.push(Sink::Webhook);
        }
        if self.jsm_cloud_id.is_some() {
            sinks.push(Sink::Jsm);
        }
        sinks
    }
}

/// `[jira]`
#[derive(Debug, Clone)]
pub struct JiraConfig {
    /// Optional restriction ANDed into every sync query.
    pub jql: Option<String>,
    /// `[jira.site_jql]`: per-site restrictions by cloud id, replacing `jql` for that site
    /// (an empty string syncs the whole site).
    pub site_jql: std::collections::BTreeMap<String, Option<String>>,
}

impl JiraConfig {
    /// The restriction of one site: its own, else the global one.
    pub fn jql_for(&self, cloud_id: &CloudId) -> Option<&str> {
        match self.site_jql.get(cloud_id.as_str()) {
            Some(own) => own.as_deref(),
            None => self.jql.as_deref(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `auto`, `pretty`, `json` or `journald`; applied once at start-up.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,atlassync=debug`.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The journal's native protocol when stderr is the journal (`JOURNAL_STREAM`, as under
    /// systemd), else `Pretty` (the default).
    Auto,
    /// Human-readable lines; coloured only when stderr is a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
    /// Entries sent to journald with structured fields.
    Journald,
}

impl Config {
    /// Loads `path` overlaid by `ATLASSYNC_*` variables from the process environment, then
    /// validates. A missing file is an error only when the operator named it with `--config`.
    /// A variable that names no key is refused before anything is read. Secrets that are not
    /// set come from `$CREDENTIALS_DIRECTORY` when it is set, else from [`CREDSTORE`].
    pub fn load(path: &Path, path_was_given: bool) -> Result<Self, ConfigError> {
        let known = sources::leaf_keys(
            &serde_json::to_value(raw::RawConfig::default()).unwrap_or_default(),
        );
        sources::check_environment(std::env::vars_os(), &known)?;
        let mut figment = Figment::from(Serialized::defaults(raw::RawConfig::default()));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(path));
        } else if path_was_given {
            return Err(ConfigError::File {
                path: path.to_owned(),
                message: "no such file".into(),
            });
        }
        let non_config: Vec<&str> = NON_CONFIG_VARIABLES
            .iter()
            .filter_map(|v| v.strip_prefix(ENV_PREFIX))
            .collect();
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&non_config).split("__"));
        let raw: raw::RawConfig = figment.extract().map_err(|e| from_figment(e, path))?;
        raw.validate(&Credentials::from_environment())
    }
}

impl Config {
    /// Parses and validates a TOML document alone, without environment overrides (the demo
    /// and tests build their configuration this way).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = Figment::from(Serialized::defaults(raw::RawConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| from_figment(e, Path::new("(inline)")))?;
        raw.validate(&Credentials::Disabled)
    }
}

fn from_figment(error: figment::Error, file: &Path) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.join(".");
    match &error.kind {
        Kind::Message(message) if path.is_empty() => ConfigError::File {
            path: file.to_owned(),
            message: message.clone(),
        },
        Kind::MissingField(field) => {
            append_field(&mut path, &error.path, field);
            ConfigError::missing(&path, "")
        }
        Kind::UnknownField(field, _) => {
            append_field(&mut path, &error.path, field);
            ConfigError::invalid(&path, "unknown key (check the spelling)")
        }
        other => ConfigError::invalid(&path, other.to_string()),
    }
}

/// figment sometimes includes the field in the error path and sometimes not.
fn append_field(path: &mut String, segments: &[String], field: &str) {
    if segments.last().map(String::as_str) != Some(field) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field);
    }
}

mod raw {
    //! The shape of the configuration as written, before validation.

    use super::*;

    #[derive(Debug, Default, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawConfig {
        pub database: RawDatabase,
        pub atlassian: RawAtlassian,
        pub tokens: RawTokens,
        pub schedule: RawSchedule,
        pub http: RawHttp,
        pub crypto: RawCrypto,
        pub alerts: RawAlerts,
        pub jira: RawJira,
        pub sync: RawSync,
        pub log: RawLog,
        pub retention: RawRetention,
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawRetention {
        pub resolved_alerts: DurationValue,
        pub sync_runs: DurationValue,
    }

    impl Default for RawRetention {
        fn default() -> Self {
            Self {
                resolved_alerts: "90d".into(),
                sync_runs: "30d".into(),
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawSync {
        pub points_per_hour: u32,
        pub budget_reserve_percent: u32,
        pub run_share_percent: u32,
        pub jira_overlap: DurationValue,
        pub jira_index_lag: DurationValue,
        pub jira_rescan_every: DurationValue,
        pub jira_rescan_window: DurationValue,
        pub jira_page_size: u32,
        pub max_retries: u32,
        pub max_delete_fraction: f64,
    }

    impl Default for RawSync {
        fn default() -> Self {
            Self {
                points_per_hour: 65_000,
                budget_reserve_percent: 10,
                run_share_percent: 50,
                jira_overlap: "5m".into(),
                jira_index_lag: "1m".into(),
                jira_rescan_every: "1d".into(),
                jira_rescan_window: "1d".into(),
                jira_page_size: 100,
                max_retries: 4,
                max_delete_fraction: 0.2,
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawDatabase {
        pub url: Option<LenientString>,
        pub url_file: Option<PathBuf>,
        pub password_file: Option<PathBuf>,
        pub max_connections: u32,
    }

    impl Default for RawDatabase {
        fn default() -> Self {
            Self {
                url: None,
                url_file: None,
                password_file: None,
                max_connections: 10,
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawAtlassian {
        pub client_id: Option<LenientString>,
        pub client_secret: Option<LenientString>,
        pub client_secret_file: Option<PathBuf>,
        pub redirect_uri: Option<LenientString>,
        pub scopes: Scopes,
        pub auth_base_url: LenientString,
        pub api_base_url: LenientString,
        /// Unset: derived from `tokens.lease_ttl` (see [`super::TokenPolicy`]).
        pub request_timeout: Option<DurationValue>,
    }

    impl Default for RawAtlassian {
        fn default() -> Self {
            Self {
                client_id: None,
                client_secret: None,
                client_secret_file: None,
                redirect_uri: None,
                scopes: Scopes(DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()),
                auth_base_url: "https://auth.atlassian.com".into(),
                api_base_url: "https://api.atlassian.com".into(),
                request_timeout: None,
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawTokens {
        pub refresh_margin: DurationValue,
        /// Unset: a third of `inactivity_expiry`.
        pub keepalive_after: Option<DurationValue>,
        pub inactivity_expiry: DurationValue,
        pub absolute_expiry: DurationValue,
        pub reuse_leeway: DurationValue,
        /// Unset: 14/365 of `absolute_expiry` (14 days of a year).
        pub reauth_warning: Option<DurationValue>,
        /// Unset: a fifth of `reuse_leeway`, at most 2 minutes.
        pub lease_ttl: Option<DurationValue>,
        pub degraded_after: u32,
        pub reauth_breaker: u32,
        /// Unset: a twelfth of `inactivity_expiry`, at most 7 days.
        pub idle_revalidate_after: Option<DurationValue>,
    }

    impl Default for RawTokens {
        fn default() -> Self {
            Self {
                refresh_margin: "5m".into(),
                keepalive_after: None,
                inactivity_expiry: "90d".into(),
                absolute_expiry: "365d".into(),
                reuse_leeway: "10m".into(),
                reauth_warning: None,
                lease_ttl: None,
                degraded_after: 3,
                reauth_breaker: 20,
                idle_revalidate_after: None,
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawSchedule {
        pub token_sweep: LenientString,
        pub revalidate: LenientString,
        pub jira_sync: LenientString,
        pub jira_reconcile: LenientString,
        pub confluence_sync: LenientString,
        pub alerts: LenientString,
    }

    impl Default for RawSchedule {
        fn default() -> Self {
            Self {
                token_sweep: "0 * * * * *".into(),
                revalidate: "0 7 */6 * * *".into(),
                jira_sync: "0 */5 * * * *".into(),
                jira_reconcile: "0 23 * * * *".into(),
                confluence_sync: "0 17 * * * *".into(),
                alerts: "*/5 * * * * *".into(),
            }
        }
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawHttp {
        pub listen: LenientString,
        pub public_url: Option<LenientString>,
        pub admin_token: Option<LenientString>,
        pub admin_token_file: Option<PathBuf>,
        pub invite_ttl: DurationValue,
    }

    impl Default for RawHttp {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:8080".into(),
                public_url: None,
                admin_token: None,
                admin_token_file: None,
                invite_ttl: "7d".into(),
            }
        }
    }

    #[derive(Debug, Default, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawCrypto {
        pub key_file: Option<PathBuf>,
        pub previous_key_files: Vec<PathBuf>,
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawAlerts {
        pub webhook_url: Option<LenientString>,
        pub webhook_secret: Option<LenientString>,
        pub webhook_secret_file: Option<PathBuf>,
        pub jsm_cloud_id: Option<LenientString>,
        pub jsm_grant: Option<LenientString>,
        pub sync_stale_after: Option<DurationValue>,
        pub retry_initial: DurationValue,
        pub retry_max: DurationValue,
        pub sink_failing_after: DurationValue,
    }

    impl Default for RawAlerts {
        fn default() -> Self {
            Self {
                webhook_url: None,
                webhook_secret: None,
                webhook_secret_file: None,
                jsm_cloud_id: None,
                jsm_grant: None,
                sync_stale_after: None,
                retry_initial: "5s".into(),
                retry_max: "10m".into(),
                sink_failing_after: "15m".into(),
            }
        }
    }

    #[derive(Debug, Default, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawJira {
        pub jql: Option<LenientString>,
        pub site_jql: std::collections::BTreeMap<String, LenientString>,
    }

    #[derive(Debug, Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawLog {
        pub format: LenientString,
        pub filter: LenientString,
    }

    impl Default for RawLog {
        fn default() -> Self {
            Self {
                format: "auto".into(),
                filter: "info".into(),
            }
        }
    }

    impl RawConfig {
        /// Validates into a [`Config`]; secrets that are not set are looked up in
        /// `credentials`.
        pub fn validate(self, credentials: &Credentials) -> Result<Config, ConfigError> {
            let mut secret_sources = Vec::new();
            let sources = &mut secret_sources;
            let unset_hint = |key: &str, credential: &str| {
                format!(" (or {key}_file, or {})", credentials.describe(credential))
            };
            let d = self.database;
            let database = DatabaseConfig {
                url: {
                    let url = secret(
                        d.url,
                        d.url_file,
                        "database.url",
                        "database_url",
                        credentials,
                        sources,
                    )?
                    .ok_or_else(|| {
                        ConfigError::missing(
                            "database.url",
                            &unset_hint("database.url", "database_url"),
                        )
                    })?;
                    let mut parsed = Url::parse(url.expose_secret()).map_err(|e| {
                        ConfigError::invalid("database.url", format!("not a URL: {e}"))
                    })?;
                    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                        return Err(ConfigError::invalid(
                            "database.url",
                            "must start with postgres:// or postgresql://",
                        ));
                    }
                    // The password may live apart from the URL, so the URL can stay in the
                    // file that every operator reads.
                    match secret(
                        None,
                        d.password_file,
                        "database.password",
                        "database_password",
                        credentials,
                        sources,
                    )? {
                        None => url,
                        Some(_) if parsed.password().is_some() => {
                            return Err(ConfigError::invalid(
                                "database.password",
                                "database.url already carries a password; keep it in one place",
                            ));
                        }
                        Some(password) => {
                            parsed
                                .set_password(Some(password.expose_secret()))
                                .map_err(|()| {
                                    ConfigError::invalid(
                                        "database.url",
                                        "cannot carry a password (it needs a host)",
                                    )
                                })?;
                            SecretString::from(String::from(parsed))
                        }
                    }
                },
                max_connections: positive(d.max_connections, "database.max_connections")?,
            };

            let a = self.atlassian;
            let client_secret = secret(
                a.client_secret,
                a.client_secret_file,
                "atlassian.client_secret",
                "client_secret",
                credentials,
                sources,
            )?
            .ok_or_else(|| {
                ConfigError::missing(
                    "atlassian.client_secret",
                    &unset_hint("atlassian.client_secret", "client_secret"),
                )
            })?;
            let scopes = a.scopes.0;
            if scopes.is_empty() {
                return Err(ConfigError::invalid(
                    "atlassian.scopes",
                    "must list at least one scope",
                ));
            }
            if !scopes.iter().any(|s| s == "offline_access") {
                return Err(ConfigError::invalid(
                    "atlassian.scopes",
                    "must include offline_access, or Atlassian issues no refresh token",
                ));
            }
            if !scopes.iter().any(|s| s == "read:me") {
                return Err(ConfigError::invalid(
                    "atlassian.scopes",
                    "must include read:me, which identifies the user who consented",
                ));
            }
            let mut atlassian = AtlassianConfig {
                client_id: required(a.client_id, "atlassian.client_id", "")?,
                client_secret,
                redirect_uri: http_url(
                    required(a.redirect_uri, "atlassian.redirect_uri", "")?,
                    "atlassian.redirect_uri",
                )?,
                scopes,
                auth_base_url: http_url(a.auth_base_url.0, "atlassian.auth_base_url")?,
                api_base_url: http_url(a.api_base_url.0, "atlassian.api_base_url")?,
                request_timeout: Duration::ZERO, // derived below when unset
            };

            // Settings that must stay below Atlassian's lifetimes default to values derived
            // from them, so a configuration that only compresses the lifetimes is valid.
            let t = self.tokens;
            let inactivity_expiry = t.inactivity_expiry.parse_span("tokens.inactivity_expiry")?;
            let absolute_expiry = t.absolute_expiry.parse_span("tokens.absolute_expiry")?;
            let reuse_leeway = t.reuse_leeway.parse_span("tokens.reuse_leeway")?;
            let derived_or = |value: Option<DurationValue>, key: &str, derived: TimeDelta| {
                value.map_or(Ok(derived), |v| v.parse_span(key))
            };
            let tokens = TokenPolicy {
                refresh_margin: t.refresh_margin.parse_span("tokens.refresh_margin")?,
                keepalive_after: derived_or(
                    t.keepalive_after,
                    "tokens.keepalive_after",
                    inactivity_expiry / 3,
                )?,
                inactivity_expiry,
                absolute_expiry,
                reuse_leeway,
                reauth_warning: derived_or(
                    t.reauth_warning,
                    "tokens.reauth_warning",
                    absolute_expiry * 14 / 365,
                )?,
                lease_ttl: derived_or(
                    t.lease_ttl,
                    "tokens.lease_ttl",
                    (reuse_leeway / 5).min(TimeDelta::minutes(2)),
                )?,
                degraded_after: positive(t.degraded_after, "tokens.degraded_after")?,
                reauth_breaker: positive(t.reauth_breaker, "tokens.reauth_breaker")?,
                idle_revalidate_after: derived_or(
                    t.idle_revalidate_after,
                    "tokens.idle_revalidate_after",
                    (inactivity_expiry / 12).min(TimeDelta::days(7)),
                )?,
            };
            atlassian.request_timeout = match a.request_timeout {
                Some(value) => value.parse("atlassian.request_timeout")?,
                // Leaves room for two attempts inside one lease, and keeps a SIGTERM drain
                // (one request plus a pool wait) under 30 s.
                None => (tokens.lease_ttl / 3)
                    .to_std()
                    .unwrap_or_default()
                    .min(Duration::from_secs(15)),
            };
            if atlassian.request_timeout > Duration::from_secs(30) {
                return Err(ConfigError::invalid(
                    "atlassian.request_timeout",
                    "must be at most 30s: a shutdown waits for the exchange in flight (a recovery waits twice as long), and systemd's TimeoutStopSec must cover it",
                ));
            }
            if atlassian.request_timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "atlassian.request_timeout",
                    "must be longer than zero (set it, or a longer tokens.lease_ttl)",
                ));
            }
            if tokens.keepalive_after >= tokens.inactivity_expiry {
                return Err(ConfigError::invalid(
                    "tokens.keepalive_after",
                    format!(
                        "must be shorter than tokens.inactivity_expiry ({}), or idle grants expire",
                        format_duration(tokens.inactivity_expiry.to_std().unwrap_or_default())
                    ),
                ));
            }
            if tokens.reauth_warning >= tokens.absolute_expiry {
                return Err(ConfigError::invalid(
                    "tokens.reauth_warning",
                    "must be shorter than tokens.absolute_expiry",
                ));
            }
            if tokens.lease_ttl >= tokens.reuse_leeway {
                return Err(ConfigError::invalid(
                    "tokens.lease_ttl",
                    "must be shorter than tokens.reuse_leeway, so a crashed refresher's token can be retried inside the leeway",
                ));
            }

            if TimeDelta::from_std(atlassian.request_timeout * 2).unwrap_or(TimeDelta::MAX)
                >= tokens.lease_ttl
            {
                return Err(ConfigError::invalid(
                    "tokens.lease_ttl",
                    "must be more than twice atlassian.request_timeout, so an exchange always finishes inside its lease",
                ));
            }

            let s = self.schedule;
            let schedule = ScheduleConfig {
                token_sweep: Schedule::parse(&s.token_sweep.0, "schedule.token_sweep")?,
                revalidate: Schedule::parse(&s.revalidate.0, "schedule.revalidate")?,
                jira_sync: Schedule::parse(&s.jira_sync.0, "schedule.jira_sync")?,
                jira_reconcile: Schedule::parse(&s.jira_reconcile.0, "schedule.jira_reconcile")?,
                confluence_sync: Schedule::parse(&s.confluence_sync.0, "schedule.confluence_sync")?,
                alerts: Schedule::parse(&s.alerts.0, "schedule.alerts")?,
            };

            let h = self.http;
            let listen: SocketAddr = h.listen.0.parse().map_err(|e| {
                ConfigError::invalid(
                    "http.listen",
                    format!("not an address like 127.0.0.1:8080: {e}"),
                )
            })?;
            let public_url = match h.public_url {
                Some(url) => http_url(url.0, "http.public_url")?,
                None => http_url(format!("http://{listen}/"), "http.listen")?,
            };
            let http = HttpConfig {
                listen,
                public_url,
                admin_token: secret(
                    h.admin_token,
                    h.admin_token_file,
                    "http.admin_token",
                    "admin_token",
                    credentials,
                    sources,
                )?,
                invite_ttl: h.invite_ttl.parse_span("http.invite_ttl")?,
            };

            let key_file = match self.crypto.key_file {
                Some(file) => file,
                None => credentials
                    .find("crypto_key", "crypto.key_file")?
                    .ok_or_else(|| {
                        ConfigError::missing(
                            "crypto.key_file",
                            &format!(
                                " (32 random bytes, base64: openssl rand -base64 32; or {})",
                                credentials.describe("crypto_key")
                            ),
                        )
                    })?,
            };
            sources.push(SecretSource {
                key: "crypto.key_file".into(),
                from: format!("file {}", key_file.display()),
            });
            let keyring = Keyring::from_files(&key_file, &self.crypto.previous_key_files).map_err(
                |e| match e {
                    KeyringError::Previous { .. } => {
                        ConfigError::invalid("crypto.previous_key_files", e.to_string())
                    }
                    _ => ConfigError::invalid("crypto.key_file", e.to_string()),
                },
            )?;
            let crypto = CryptoConfig {
                key_file,
                previous_key_files: self.crypto.previous_key_files,
                keyring,
            };

            let alerts = AlertsConfig {
                webhook_url: self
                    .alerts
                    .webhook_url
                    .map(|u| http_url(u.0, "alerts.webhook_url"))
                    .transpose()?,
                webhook_secret: secret(
                    self.alerts.webhook_secret,
                    self.alerts.webhook_secret_file,
                    "alerts.webhook_secret",
                    "webhook_secret",
                    credentials,
                    sources,
                )?,
                jsm_cloud_id: self
                    .alerts
                    .jsm_cloud_id
                    .map(|c| c.0.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .map(CloudId::from),
                jsm_grant: self
                    .alerts
                    .jsm_grant
                    .map(|g| g.0.trim().to_owned())
                    .filter(|g| !g.is_empty()),
                sync_stale_after: self
                    .alerts
                    .sync_stale_after
                    .map(|d| d.parse_span("alerts.sync_stale_after"))
                    .transpose()?,
                retry_initial: self
                    .alerts
                    .retry_initial
                    .parse_span("alerts.retry_initial")?,
                retry_max: self.alerts.retry_max.parse_span("alerts.retry_max")?,
                sink_failing_after: self
                    .alerts
                    .sink_failing_after
                    .parse_span("alerts.sink_failing_after")?,
            };
            match (&alerts.jsm_cloud_id, &alerts.jsm_grant) {
                (Some(_), None) => {
                    return Err(ConfigError::missing(
                        "alerts.jsm_grant",
                        " (the label of the grant that opens JSM alerts on alerts.jsm_cloud_id)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::missing(
                        "alerts.jsm_cloud_id",
                        " (the site whose JSM Operations receives alerts.jsm_grant's alerts)",
                    ));
                }
                _ => {}
            }
            if alerts.retry_initial <= TimeDelta::zero() || alerts.retry_max < alerts.retry_initial
            {
                return Err(ConfigError::invalid(
                    "alerts.retry_max",
                    "must be at least alerts.retry_initial, which must be above zero",
                ));
            }
            if alerts.webhook_url.is_some() && alerts.webhook_secret.is_none() {
                return Err(ConfigError::missing(
                    "alerts.webhook_secret",
                    &format!(
                        " (webhook deliveries are signed with it; or alerts.webhook_secret_file, or {})",
                        credentials.describe("webhook_secret")
                    ),
                ));
            }

            let restriction = |text: String| Some(text.trim().to_owned()).filter(|j| !j.is_empty());
            let jira = JiraConfig {
                jql: self.jira.jql.and_then(|j| restriction(j.0)),
                site_jql: self
                    .jira
                    .site_jql
                    .into_iter()
                    .map(|(cloud_id, jql)| (cloud_id.trim().to_owned(), restriction(jql.0)))
                    .collect(),
            };
            let restrictions = std::iter::once(("jira.jql".to_owned(), &jira.jql)).chain(
                jira.site_jql
                    .iter()
                    .map(|(cloud_id, jql)| (format!("jira.site_jql.\"{cloud_id}\""), jql)),
            );
            for (key, jql) in restrictions {
                if let Some(jql) = jql
                    && jql.to_ascii_lowercase().contains("order by")
                {
                    return Err(ConfigError::invalid(
                        &key,
                        "must be a restriction only; atlassync adds its own ORDER BY",
                    ));
                }
            }

            let sync = SyncConfig {
                points_per_hour: positive(self.sync.points_per_hour, "sync.points_per_hour")?,
                budget_reserve_percent: match self.sync.budget_reserve_percent {
                    p @ 0..=90 => p,
                    _ => {
                        return Err(ConfigError::invalid(
                            "sync.budget_reserve_percent",
                            "must be between 0 and 90",
                        ));
                    }
                },
                run_share_percent: match self.sync.run_share_percent {
                    p @ 1..=100 => p,
                    _ => {
                        return Err(ConfigError::invalid(
                            "sync.run_share_percent",
                            "must be between 1 and 100 (100: one run may spend all that is left of the hour's share)",
                        ));
                    }
                },
                jira_overlap: self.sync.jira_overlap.parse_span("sync.jira_overlap")?,
                jira_index_lag: self.sync.jira_index_lag.parse_span("sync.jira_index_lag")?,
                jira_rescan_every: self
                    .sync
                    .jira_rescan_every
                    .parse_span("sync.jira_rescan_every")?,
                jira_rescan_window: self
                    .sync
                    .jira_rescan_window
                    .parse_span("sync.jira_rescan_window")?,
                jira_page_size: match self.sync.jira_page_size {
                    p @ 1..=5000 => p,
                    _ => {
                        return Err(ConfigError::invalid(
                            "sync.jira_page_size",
                            "must be between 1 and 5000",
                        ));
                    }
                },
                max_retries: self.sync.max_retries,
                max_delete_fraction: match self.sync.max_delete_fraction {
                    f if (0.0..=1.0).contains(&f) => f,
                    _ => {
                        return Err(ConfigError::invalid(
                            "sync.max_delete_fraction",
                            "must be between 0 and 1 (e.g. 0.2 holds deletions of more than a fifth of a site)",
                        ));
                    }
                },
            };

            let log = LogConfig {
                format: match self.log.format.0.as_str() {
                    "auto" => LogFormat::Auto,
                    "pretty" => LogFormat::Pretty,
                    "json" => LogFormat::Json,
                    "journald" => LogFormat::Journald,
                    other => {
                        return Err(ConfigError::invalid(
                            "log.format",
                            format!("`{other}` is not one of auto, pretty, json, journald"),
                        ));
                    }
                },
                filter: {
                    let filter = self.log.filter.0;
                    tracing_subscriber::EnvFilter::try_new(&filter)
                        .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?;
                    filter
                },
            };

            let retention = RetentionConfig {
                resolved_alerts: self
                    .retention
                    .resolved_alerts
                    .parse_span("retention.resolved_alerts")?,
                sync_runs: self.retention.sync_runs.parse_span("retention.sync_runs")?,
            };

            Ok(Config {
                retention,
                database,
                atlassian,
                tokens,
                schedule,
                http,
                crypto,
                alerts,
                jira,
                sync,
                log,
                secret_sources,
            })
        }
    }

    fn required(
        value: Option<LenientString>,
        key: &str,
        hint: &str,
    ) -> Result<String, ConfigError> {
        match value {
            Some(v) if !v.0.trim().is_empty() => Ok(v.0.trim().to_owned()),
            Some(_) => Err(ConfigError::invalid(key, "must not be empty")),
            None => Err(ConfigError::missing(key, hint)),
        }
    }

    fn positive(value: u32, key: &str) -> Result<u32, ConfigError> {
        if value == 0 {
            Err(ConfigError::invalid(key, "must be at least 1"))
        } else {
            Ok(value)
        }
    }

    fn http_url(value: String, key: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(value.trim())
            .map_err(|e| ConfigError::invalid(key, format!("`{value}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::invalid(
                key,
                format!("`{value}` must be an http:// or https:// URL with a host"),
            ));
        }
        Ok(url)
    }
}

impl Config {
    /// The timing settings that may be derived from Atlassian's lifetimes, as `key = value`
    /// lines, for `check-config` to show what is in force.
    pub fn derived_timings(&self) -> Vec<String> {
        let span = |d: TimeDelta| format_duration(d.to_std().unwrap_or_default());
        vec![
            format!("tokens.lease_ttl = {}", span(self.tokens.lease_ttl)),
            format!(
                "atlassian.request_timeout = {}",
                format_duration(self.atlassian.request_timeout)
            ),
            format!(
                "tokens.keepalive_after = {}",
                span(self.tokens.keepalive_after)
            ),
            format!(
                "tokens.reauth_warning = {}",
                span(self.tokens.reauth_warning)
            ),
        ]
    }

    /// The database URL, for connecting.
    pub fn database_url(&self) -> &str {
        self.database.url.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(points_per_hour: u32, run_share_percent: u32) -> SyncConfig {
        SyncConfig {
            points_per_hour,
            budget_reserve_percent: 10,
            run_share_percent,
            jira_overlap: TimeDelta::minutes(5),
            jira_index_lag: TimeDelta::minutes(1),
            jira_rescan_every: TimeDelta::days(1),
            jira_rescan_window: TimeDelta::days(1),
            jira_page_size: 100,
            max_retries: 4,
            max_delete_fraction: 0.2,
        }
    }

    #[test]
    fn a_runs_slice_is_its_share_of_what_is_left_and_never_below_the_floor() {
        let defaults = sync(65_000, 50);
        assert_eq!(defaults.hourly_share(), 58_500);
        assert_eq!(defaults.run_slice(58_500), 29_250);
        assert_eq!(defaults.run_slice(10_000), 5_000);
        // Late in a busy hour a normal incremental run still fits.
        assert_eq!(defaults.run_slice(300), RUN_SLICE_FLOOR);
        assert_eq!(defaults.run_slice(-5), RUN_SLICE_FLOOR);
        // 100: one run may spend all that is left, as before slices existed.
        assert_eq!(sync(65_000, 100).run_slice(58_500), 58_500);
    }
}
