//! Postgres access: one file per table family. Business time is always bound as a parameter
//! (never `NOW()`), so tests can move the clock.

pub mod alert_outbox;
pub mod alerts;
pub mod api_budget;
pub mod confluence_spaces;
pub mod grants;
pub mod jira_census;
pub mod jira_fields;
pub mod jira_issues;
pub mod oauth_states;
pub mod presented_tokens;
pub mod sites;
pub mod spent_invites;
pub mod sync_runs;
pub mod synced_sites;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the database could not be reached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection to `database.url` within the pool's 10 s acquire timeout.
    #[error("cannot connect to database.url: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// How long a query waits for a pooled connection before failing: the longest pool wait
/// a token exchange's persist can add to it (the daemon's drain covers it).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a pool on `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .map_err(StoreError::Connect)
}

/// Applies pending migrations. Safe to run from several replicas at once (sqlx takes an
/// advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether `error` is a unique-constraint violation (two writers raced for one key).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Whether `error` says the database could not be reached (down, restarting, connection cut,
/// pool exhausted waiting for it) rather than that a statement was wrong: worth retrying.
pub fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // Class 08 (connection exception) and 57P0x (shutdown, crash, cannot connect now).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

/// Runs `attempt` until the database takes it: while the database is unreachable
/// ([`is_connection_error`]) it is retried with backoff (0.1 s doubling to 5 s), logging
/// `what` at the first failure and every 20th; any other error is returned. Used where the
/// only copy of a rotated token is in memory. Returns the result and whether it was retried.
pub async fn until_reachable<T, F, Fut>(
    what: &str,
    mut attempt: F,
) -> Result<(T, bool), sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut wait = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(failures, "{what}: the database is back, written");
                }
                return Ok((value, failures > 0));
            }
            Err(e) if is_connection_error(&e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::error!(failures, error = %e, "{what}: database unreachable; retrying");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The database server's clock (`clock_timestamp()`), for aligning replicas' business time.
pub async fn database_now(pool: &PgPool) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}

/// Whether every migration this build carries is applied, successfully, and nothing newer
/// than it is (a newer release migrated the database: this one may misread it).
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    Ok(applied.len() == known.len()
        && applied
            .iter()
            .zip(&known)
            .all(|((version, success), expected)| *success && version == expected))
}
