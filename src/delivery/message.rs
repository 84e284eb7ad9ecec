//! What a message says to a person: the webhook's JSON body, its Slack-compatible `text`, and
//! the re-consent link minted at send time.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::app::App;
use crate::domain::{AccountId, GrantId};
use crate::store::alert_outbox::Message;

/// Kinds a new consent cures: their open messages carry a re-consent link.
const CURED_BY_CONSENT: &[&str] = &[
    "needs_reauth",
    "family_expiring",
    "site_revoked",
    "scopes_missing",
    "degraded",
    "no_sites",
    "inactivity_expiring",
];

/// The webhook body: one alert transition.
#[derive(Debug, Serialize)]
pub struct WebhookBody {
    /// Stable across retries of this message; also in `X-Atlassync-Delivery`.
    pub delivery_id: Uuid,
    /// atlassync's alert id: the open and the resolved message of one alert share it.
    pub alert_id: i64,
    /// The alert kind, e.g. `needs_reauth`.
    pub kind: String,
    /// `open` or `resolved`.
    pub state: String,
    /// The grant concerned; `null` for an alert about the app, a site or a sink.
    pub grant_id: Option<GrantId>,
    /// The grant's label (or `(app)`, a site's name).
    pub label: String,
    /// The Atlassian account that consented, when known.
    pub account_id: Option<AccountId>,
    /// For site alerts: the site's cloud id.
    pub cloud_id: Option<String>,
    /// For site alerts: `jira` or `confluence`.
    pub product: Option<String>,
    /// What broke, in words an operator can act on.
    pub reason: String,
    /// When the condition began (RFC 3339).
    pub since: String,
    /// When it becomes (or became) fatal (RFC 3339), if it has a deadline.
    pub deadline: Option<String>,
    /// When this transition happened (RFC 3339).
    pub occurred_at: String,
    /// A link the user can consent again through; `null` when resolved or not curable so.
    pub reconsent_url: Option<String>,
    /// A one-line summary in Slack's message format.
    pub text: String,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The re-consent link of an open grant message, minted now and valid until (a day past) the
/// deadline it warns about.
pub fn reconsent_url(app: &App, message: &Message) -> Option<String> {
    let curable = message.is_open()
        && message.grant_id.is_some()
        && CURED_BY_CONSENT.contains(&message.kind.as_str());
    curable.then(|| {
        app.reconsent_link(
            &message.label,
            message.account_id.as_ref(),
            message.deadline,
        )
        .to_string()
    })
}

/// Slack treats `&`, `<` and `>` as markup.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A one-line summary: what, whom, why, by when, and the link.
pub fn summary(message: &Message, reconsent_url: Option<&str>) -> String {
    let mut text = if message.is_open() {
        format!(
            ":rotating_light: atlassync {}: {} — {}",
            message.kind,
            slack_escape(&message.label),
            slack_escape(&message.reason)
        )
    } else {
        format!(
            ":white_check_mark: atlassync {} resolved: {}",
            message.kind,
            slack_escape(&message.label)
        )
    };
    if message.is_open()
        && let Some(deadline) = message.deadline
    {
        text.push_str(&format!(" (deadline {})", rfc3339(deadline)));
    }
    if let Some(url) = reconsent_url {
        text.push_str(&format!(" <{url}|Re-consent>"));
    }
    text
}

impl WebhookBody {
    /// The body for `message`, with a freshly minted link.
    pub fn new(app: &App, message: &Message) -> Self {
        let reconsent_url = reconsent_url(app, message);
        let text = summary(message, reconsent_url.as_deref());
        Self {
            delivery_id: message.delivery_id,
            alert_id: message.alert_id,
            kind: message.kind.clone(),
            state: message.state.clone(),
            grant_id: message.grant_id,
            label: message.label.clone(),
            account_id: message.account_id.clone(),
            cloud_id: message.cloud_id.clone(),
            product: message.product.clone(),
            reason: message.reason.clone(),
            since: rfc3339(message.since),
            deadline: message.deadline.map(rfc3339),
            occurred_at: rfc3339(message.at),
            reconsent_url,
            text,
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn slack_markup_in_labels_is_escaped() {
        assert_eq!(slack_escape("a <b> & c"), "a &lt;b&gt; &amp; c");
    }
}
