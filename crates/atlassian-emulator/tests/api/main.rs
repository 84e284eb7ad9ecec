//! The emulator held to Atlassian's published API documentation over real HTTP: the
//! authorization server's rotation rules (`oauth`) and the product endpoints, rate limits and
//! faults (`products`), and the JSM Operations alerts (`jsm`). No database.

mod jsm;
mod oauth;
mod products;
mod search;
