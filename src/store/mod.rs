//! Postgres access: one file per table family. Business time is always bound as a parameter
//! (never `NOW()`), so tests can move the clock.

pub mod alerts;
pub mod api_budget;
pub mod confluence_spaces;
pub mod grants;
pub mod jira_issues;
pub mod oauth_states;
pub mod sites;
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

/// Opens a pool on `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
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

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
