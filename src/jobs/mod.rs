//! Scheduled work, each a plain async function over the store and the clients, with a
//! `run_once` that tests drive directly.

pub mod confluence_sync;
pub mod deletion_guard;
pub mod jira_reconcile;
pub mod jira_sync;
pub mod revalidate;
pub mod stale_sites;
pub mod sync;
pub mod token_sweep;
