//! atlassync keeps Atlassian Cloud OAuth 2.0 (3LO) grants alive and honest, and mirrors Jira
//! issues and Confluence spaces into Postgres for downstream reporting.

pub mod alerts;
pub mod app;
pub mod atlassian;
pub mod cli;
pub use atlassync_clock as clock;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod http;
pub mod invite;
pub mod jobs;
pub mod lifecycle;
pub mod oauth;
pub mod onboarding;
pub mod pacing;
pub mod report;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod transport;
