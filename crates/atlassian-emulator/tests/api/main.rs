//! The emulator held to the API document over real HTTP: the authorization server's rotation
//! rules (`oauth`) and the product endpoints, rate limits and faults (`products`). No database.

mod oauth;
mod products;
