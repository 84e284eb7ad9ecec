//! The daemon's integration tests, in one binary (linking is most of the suite's cost): each
//! test gets its own migrated Postgres database (`#[sqlx::test]`) and talks to the built-in
//! emulator over real HTTP.

mod admin_browser;
mod admin_page;
mod alert_delivery;
mod alert_delivery_process;
mod alerts_cli;
mod architecture;
mod budget_policy;
mod cli_config;
mod connect_flow;
mod daemon_component;
mod daemon_process;
mod grant_health;
mod grant_survival;
mod grants_import;
mod private_postgres;
mod reporting_replication;
mod secrets_stay_sealed;
mod support;
mod sync;
mod sync_truth;
mod sync_writes;
