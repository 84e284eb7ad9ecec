//! The few HTML pages a consenting user sees. Everything interpolated is escaped.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with a title and paragraphs (already-escaped HTML allowed in `body_html`).
pub fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · atlassync</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#172b4d}}\
         h1{{font-size:1.4rem}}li{{margin:.2rem 0}}</style></head><body><h1>{title}</h1>{body_html}</body></html>",
        title = escape(title),
    );
    let mut response = (status, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Consent pages must never be cached or framed.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// A 400 page explaining why a link or callback was refused.
pub fn refused(title: &str, explanation: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        title,
        &format!(
            "<p>{}</p><p>Nothing was stored. Ask your administrator for a new invite link.</p>",
            escape(explanation)
        ),
    )
}
