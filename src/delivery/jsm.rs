//! Jira Service Management Operations: an open message creates an ops alert whose alias is
//! atlassync's alert id; a resolved message closes the alerts with that alias. The calls go
//! through the grant named by `alerts.jsm_grant`, with its tokens kept fresh like any other.

use super::message::{reconsent_url, summary};
use crate::app::App;
use crate::atlassian::ApiError;
use crate::atlassian::jsm::{MESSAGE_LIMIT, NewOpsAlert};
use crate::domain::{AccessToken, CloudId, GrantId};
use crate::lifecycle::Refresher;
use crate::store::alert_outbox::Message;
use crate::store::grants;

/// Closing waits this many attempts for a create JSM may still be processing (creates are
/// asynchronous) before concluding the alert is gone.
const CLOSE_PATIENCE: i32 = 5;

/// Sends `message` to JSM; the receipt is JSM's request id (or what was found to close).
pub(super) async fn send(
    app: &App,
    refresher: &Refresher,
    message: &Message,
    attempt: i32,
) -> Result<String, String> {
    let alerts = &app.config.alerts;
    let (Some(cloud_id), Some(label)) = (&alerts.jsm_cloud_id, &alerts.jsm_grant) else {
        return Err("alerts.jsm_cloud_id is no longer configured".into());
    };
    let grant_id = jsm_grant(app, label).await?;
    let alias = message.alert_id.to_string();
    let mut token = token(refresher, grant_id, None).await?;
    let mut refreshed = false;
    loop {
        let result = if message.is_open() {
            create(app, cloud_id, &token, message, &alias).await
        } else {
            close(app, cloud_id, &token, &alias, attempt).await
        };
        match result {
            Err(ApiError::Unauthorized(_)) if !refreshed => {
                refreshed = true;
                token = self::token(refresher, grant_id, Some(&token)).await?;
            }
            Err(e) => return Err(format!("JSM on site {cloud_id}: {e}")),
            Ok(receipt) => return Ok(receipt),
        }
    }
}

async fn jsm_grant(app: &App, label: &str) -> Result<GrantId, String> {
    let mut conn = app
        .pool
        .acquire()
        .await
        .map_err(|e| format!("database: {e}"))?;
    let ids = grants::ids_labelled(&mut conn, label)
        .await
        .map_err(|e| format!("database: {e}"))?;
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(format!(
            "no grant is labelled `{label}` (alerts.jsm_grant): connect one with the ops-alert scopes"
        )),
        _ => Err(format!(
            "{} grants are labelled `{label}` (alerts.jsm_grant); the label must name one",
            ids.len()
        )),
    }
}

async fn token(
    refresher: &Refresher,
    grant_id: GrantId,
    failed: Option<&AccessToken>,
) -> Result<AccessToken, String> {
    let token = match failed {
        None => refresher.access_token(grant_id).await,
        Some(failed) => {
            refresher
                .access_token_after_unauthorized(grant_id, failed)
                .await
        }
    };
    token.map_err(|e| format!("alerts.jsm_grant {grant_id}: {e}"))
}

async fn create(
    app: &App,
    cloud_id: &CloudId,
    token: &AccessToken,
    message: &Message,
    alias: &str,
) -> Result<String, ApiError> {
    let link = reconsent_url(app, message);
    let headline = format!("atlassync {}: {}", message.kind, message.label);
    let mut description = format!(
        "{}\n\nGrant: {} ({})\nAccount: {}\nSince: {}\n",
        message.reason,
        message.label,
        message
            .grant_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string()),
        message
            .account_id
            .as_ref()
            .map_or("unknown", |a| a.as_str()),
        message.since.to_rfc3339(),
    );
    if let Some(deadline) = message.deadline {
        description.push_str(&format!("Deadline: {}\n", deadline.to_rfc3339()));
    }
    if let Some(link) = &link {
        description.push_str(&format!("Re-consent link for the user: {link}\n"));
    }
    description.push_str(&format!("\n{}", summary(message, None)));
    let alert = NewOpsAlert {
        message: headline.chars().take(MESSAGE_LIMIT).collect(),
        alias: alias.to_owned(),
        description,
        priority: match message.kind.as_str() {
            "needs_reauth" | "app_credentials_rejected" | "reauth_breaker" => "P2",
            _ => "P3",
        },
        tags: vec!["atlassync".into(), message.kind.clone()],
        entity: message.label.clone(),
        source: "atlassync",
    };
    let accepted = app.api.create_ops_alert(cloud_id, token, &alert).await?;
    Ok(format!("request {}", accepted.request_id))
}

async fn close(
    app: &App,
    cloud_id: &CloudId,
    token: &AccessToken,
    alias: &str,
    attempt: i32,
) -> Result<String, ApiError> {
    let found = app
        .api
        .ops_alerts_with_alias(cloud_id, token, alias)
        .await?;
    if found.is_empty() {
        if attempt < CLOSE_PATIENCE {
            return Err(ApiError::Transient(format!(
                "JSM lists no alert with alias {alias} yet (its create may still be processing)"
            )));
        }
        return Ok(format!("no JSM alert with alias {alias} to close"));
    }
    let mut closed = Vec::new();
    for alert in found
        .iter()
        .filter(|a| a.status.as_deref() != Some("closed"))
    {
        let accepted = app
            .api
            .close_ops_alert(
                cloud_id,
                token,
                &alert.id,
                "Resolved: the condition cleared in atlassync.",
            )
            .await?;
        closed.push(format!("{} (request {})", alert.id, accepted.request_id));
    }
    Ok(if closed.is_empty() {
        format!("JSM alert {alias} was already closed")
    } else {
        format!("closed {}", closed.join(", "))
    })
}
