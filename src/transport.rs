//! What every HTTP client of atlassync shares with the others: joining paths onto configured
//! base URLs, describing a transport failure without leaking a URL or a body, and reading
//! `Retry-After`.

use std::time::Duration;

use reqwest::header::HeaderMap;
use url::Url;

/// A transport error in words, without the URL (which is configuration, not news) and
/// never with a body.
pub fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "response body interrupted"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Appends `path` to a base URL whether or not the base ends in a slash.
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().expect("http URLs have paths");
        segments.pop_if_empty();
        for part in path.split('/') {
            segments.push(part);
        }
    }
    url
}

/// The longest error text kept from a response, in characters.
const MAX_ERROR_TEXT: usize = 200;

/// Atlassian's own words from an error body field, made safe to store and log: one line,
/// no control characters, at most 200 characters. Raw bodies are never kept: a proxy's page
/// may reflect the request, and with it a token.
pub fn error_text(field: &str) -> String {
    let clean: String = field
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_TEXT)
        .collect();
    clean.trim().to_owned()
}

/// What is said of a body that carried no error field atlassync reads: its size only.
pub fn withheld_body(body: &[u8]) -> String {
    if body.is_empty() {
        "(empty body)".to_owned()
    } else {
        format!("({}-byte body not shown)", body.len())
    }
}

/// `Retry-After` as integer seconds, or an HTTP date read defensively.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // HTTP dates compare against the wall clock by definition, not business time.
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    Some((when.to_utc() - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_handles_trailing_slashes() {
        let a = Url::parse("http://127.0.0.1:9/").unwrap();
        let b = Url::parse("http://127.0.0.1:9/prefix").unwrap();
        assert_eq!(
            join(&a, "oauth/token").as_str(),
            "http://127.0.0.1:9/oauth/token"
        );
        assert_eq!(
            join(&b, "oauth/token").as_str(),
            "http://127.0.0.1:9/prefix/oauth/token"
        );
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "1847".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(1847)));
    }
}
