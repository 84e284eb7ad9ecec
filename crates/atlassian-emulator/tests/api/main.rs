//! The emulator held to Atlassian's published API documentation over real HTTP: the
//! authorization server's rotation rules (`oauth`) and the product endpoints, rate limits and
//! faults (`products`). No database.

mod oauth;
mod products;
