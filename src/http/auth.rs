//! Who may see operator pages: the holder of `http.admin_token`, as a bearer header (for
//! Prometheus and scripts) or as the session cookie the admin login sets (for browsers).

use axum::http::{HeaderMap, header};
use secrecy::ExposeSecret;

use crate::app::App;

/// Whether the request may see operator data. Without a configured admin token every
/// request may (the operator chose an unprotected listener, e.g. on localhost).
pub fn bearer_allows(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.config.http.admin_token else {
        return true;
    };
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.strip_prefix("Bearer "))
        .any(|presented| {
            constant_time_eq(
                presented.trim().as_bytes(),
                token.expose_secret().as_bytes(),
            )
        })
}

/// Compares secrets without revealing, through timing, how much of them matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}
