//! What the benches share: a database of their own on the `DATABASE_URL` server.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// A database of its own on the `DATABASE_URL` server, migrated; dropped by `drop_database`.
pub struct BenchDb {
    server: PgConnectOptions,
    /// The database's name (`atlassync_bench_<bench>_<random>`).
    pub name: String,
    /// A pool on it.
    pub pool: PgPool,
}

impl BenchDb {
    /// Creates and migrates a database named after `bench`.
    pub async fn create(url: &str, bench: &str) -> anyhow::Result<Self> {
        let server = PgConnectOptions::from_str(url).context("DATABASE_URL")?;
        let name = format!(
            "atlassync_bench_{bench}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect_with(&server).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server.clone().database(&name))
            .await?;
        atlassync::store::migrate(&pool).await?;
        Ok(Self { server, name, pool })
    }

    /// Drops the database (best effort: a failure is printed).
    pub async fn drop_database(self) {
        self.pool.close().await;
        let dropped = async {
            let mut admin = PgConnection::connect_with(&self.server).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await?;
            admin.close().await
        };
        if let Err(error) = dropped.await {
            eprintln!("bench: could not drop database {}: {error}", self.name);
        }
    }
}
