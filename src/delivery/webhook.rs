//! The generic webhook: one signed JSON `POST` per message; any 2xx acknowledges it.

use secrecy::ExposeSecret;

use super::message::{WebhookBody, signature};
use crate::app::App;
use crate::store::alert_outbox::Message;
use crate::transport::{describe_transport_error, withheld_body};

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Atlassync-Signature";
/// The header carrying the message's delivery id, the same on every retry.
pub const DELIVERY_HEADER: &str = "X-Atlassync-Delivery";

/// Sends `message`; the receipt is the answer's status line.
pub(super) async fn send(app: &App, message: &Message) -> Result<String, String> {
    let alerts = &app.config.alerts;
    let (Some(url), Some(secret)) = (&alerts.webhook_url, &alerts.webhook_secret) else {
        return Err("alerts.webhook_url is no longer configured".into());
    };
    let body = serde_json::to_vec(&WebhookBody::new(app, message))
        .map_err(|e| format!("cannot encode the message: {e}"))?;
    let signature = signature(secret.expose_secret().as_bytes(), &body);
    let response = app
        .http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(DELIVERY_HEADER, message.delivery_id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("webhook unreachable: {}", describe_transport_error(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("HTTP {}", status.as_u16()));
    }
    let answer = response.bytes().await.unwrap_or_default();
    Err(format!(
        "webhook answered HTTP {}: {}",
        status.as_u16(),
        withheld_body(&answer)
    ))
}
