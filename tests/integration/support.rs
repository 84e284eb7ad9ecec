//! Shared wiring for integration tests: a sandbox (emulator + consent server) over the
//! per-test database that `#[sqlx::test]` provides, on a manual clock.

use std::sync::Arc;

use atlassian_emulator::{ConsentDecision, EmulatorConfig, NewUser, Product};
use atlassync::clock::ManualClock;
use atlassync::sandbox::{Overrides, Sandbox};
use sqlx::PgPool;

/// A sandbox plus the clock it runs on.
pub struct TestApp {
    pub sandbox: Sandbox,
    pub clock: Arc<ManualClock>,
}

impl TestApp {
    /// Default configuration and emulator.
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, EmulatorConfig::default(), Overrides::new()).await
    }

    /// With an emulator configuration and configuration overrides.
    pub async fn start_with(pool: PgPool, emulator: EmulatorConfig, overrides: Overrides) -> Self {
        // Tests read revalidation outcomes at 6-hour steps; the slower cadence for idle grants
        // has a test of its own, which sets its own value.
        let mut overrides = overrides;
        overrides
            .entry("tokens.idle_revalidate_after".to_owned())
            .or_insert_with(|| "\"1s\"".to_owned());
        let clock = Arc::new(ManualClock::starting_now());
        let sandbox = Sandbox::start(pool, clock.clone(), emulator, &overrides)
            .await
            .expect("sandbox starts");
        Self { sandbox, clock }
    }

    pub fn pool(&self) -> &PgPool {
        &self.sandbox.app.pool
    }

    /// A site with both products and a user who can reach it; returns (cloud id, account id).
    pub fn site_and_user(&self, site: &str, user: &str, zone: &str) -> (String, String) {
        let cloud_id = self
            .sandbox
            .emulator
            .add_site(site, &[Product::Jira, Product::Confluence]);
        let account_id = self.user(user, zone, vec![cloud_id.clone()]);
        (cloud_id, account_id)
    }

    /// A user who can reach `sites`.
    pub fn user(&self, name: &str, zone: &str, sites: Vec<String>) -> String {
        self.sandbox.emulator.add_user(NewUser {
            name: name.to_owned(),
            email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
            zoneinfo: zone.to_owned(),
            jira_time_zone: zone.to_owned(),
            sites,
        })
    }

    /// Consents through the real flow as `account_id`, granting all their sites.
    pub async fn consent(&self, label: &str, account_id: &str) -> (u16, String) {
        self.sandbox
            .consent(
                label,
                ConsentDecision::Accept {
                    account_id: account_id.to_owned(),
                    sites: None,
                },
            )
            .await
            .expect("consent flow completes")
    }

    pub async fn grant_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM grants")
            .fetch_one(self.pool())
            .await
            .expect("count grants")
    }

    /// Every value of every row of every table, as text, for scanning.
    pub async fn database_dump(&self) -> String {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .fetch_all(self.pool())
        .await
        .expect("list tables");
        let mut dump = String::new();
        for table in tables {
            // Table names come from the catalogue, not from input.
            let query = format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t");
            let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
                .fetch_one(self.pool())
                .await
                .expect("dump table");
            dump.push_str(&rows);
            dump.push('\n');
        }
        dump
    }
}

/// A database URL for the same per-test database as `pool`, for spawning the binary.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// Configuration overrides from `(key, value)` pairs; values are quoted as TOML strings.
pub fn overrides(pairs: &[(&str, &str)]) -> Overrides {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), format!("{v:?}")))
        .collect()
}

impl TestApp {
    /// A refresher for this app, as one process would have.
    pub fn refresher(&self, holder: &str) -> atlassync::lifecycle::Refresher {
        atlassync::lifecycle::Refresher::new(self.sandbox.app.clone(), holder)
    }

    /// Runs the token sweep once.
    pub async fn sweep(
        &self,
        refresher: &atlassync::lifecycle::Refresher,
    ) -> atlassync::jobs::token_sweep::SweepReport {
        atlassync::jobs::token_sweep::run_once(
            &self.sandbox.app,
            refresher,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("sweep runs")
    }

    /// Runs `syncer`'s `kind` for one schedule tick, a second after the last.
    pub async fn sync_tick(
        &self,
        syncer: &atlassync::jobs::sync::Syncer,
        kind: atlassync::domain::SyncKind,
    ) -> atlassync::jobs::sync::SyncReport {
        self.clock.advance(chrono::Duration::seconds(1));
        syncer
            .run_once(
                kind,
                self.clock.now_for_tests(),
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
            .expect("sync runs")
    }

    /// Runs a revalidation pass for a fresh tick.
    pub async fn revalidate(
        &self,
        refresher: &atlassync::lifecycle::Refresher,
    ) -> atlassync::jobs::revalidate::RevalidationReport {
        atlassync::jobs::revalidate::run_once(
            &self.sandbox.app,
            refresher,
            self.clock.now_for_tests(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("revalidation runs")
    }

    /// Every grant as stored.
    pub async fn grants(&self) -> Vec<atlassync::store::grants::Grant> {
        let mut conn = self.pool().acquire().await.unwrap();
        atlassync::store::grants::all_grants(&mut conn)
            .await
            .unwrap()
    }

    /// (kind, label, resolved) of every alert row.
    pub async fn alerts(&self) -> Vec<(String, String, bool)> {
        sqlx::query_as("SELECT kind, label, resolved_at IS NOT NULL FROM alerts ORDER BY id")
            .fetch_all(self.pool())
            .await
            .unwrap()
    }
}

/// `ManualClock::now` through the trait, without importing it everywhere.
pub trait NowForTests {
    fn now_for_tests(&self) -> chrono::DateTime<chrono::Utc>;
}

impl NowForTests for ManualClock {
    fn now_for_tests(&self) -> chrono::DateTime<chrono::Utc> {
        atlassync::clock::Clock::now(self)
    }
}

/// A configuration file for running the `atlassync` binary against this sandbox: its
/// database, its emulator and its key.
pub fn write_config(app: &TestApp, pool: &PgPool) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("atlassync-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    // The sandbox's own key, so that its services can open what the binary sealed.
    let key = app.sandbox.app.config.crypto.key_file.clone();
    let base = app.sandbox.emulator.base_url();
    let config = dir.join("atlassync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[database]
url = "{db}"
[atlassian]
client_id = "emulator-client"
client_secret = "emulator-secret"
redirect_uri = "http://127.0.0.1:1/callback"
auth_base_url = "{base}"
api_base_url = "{base}"
[crypto]
key_file = "{key}"
"#,
            db = database_url(pool),
            key = key.display(),
        ),
    )
    .unwrap();
    config
}
