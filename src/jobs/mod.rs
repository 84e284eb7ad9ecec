//! Scheduled work, each a plain async function over the store and the clients, with a
//! `run_once` that tests drive directly.

pub mod revalidate;
pub mod token_sweep;
