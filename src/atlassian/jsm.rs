//! Jira Service Management Operations alerts, below a Jira site's gateway base:
//! `{api}/ex/jira/{cloudid}/jsm/ops/api/v1/alerts`. The REST API addresses alerts by their id
//! only; an alias de-duplicates creates (a create with the alias of an open alert counts up
//! instead of opening a second one), and finding an alert by alias is a search.

use serde::{Deserialize, Serialize};

use super::{ApiClient, ApiError, classify};
use crate::domain::{AccessToken, CloudId, Product};
use crate::transport::{describe_transport_error, join};

/// The longest `message` JSM accepts.
pub const MESSAGE_LIMIT: usize = 130;

/// An alert to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewOpsAlert {
    /// A one-line summary, at most [`MESSAGE_LIMIT`] characters.
    pub message: String,
    /// The de-duplication key: atlassync's alert id.
    pub alias: String,
    /// The details: who, what broke, since when, the deadline, the re-consent link.
    pub description: String,
    /// `P1` (highest) to `P5`.
    pub priority: &'static str,
    /// Search tags.
    pub tags: Vec<String>,
    /// What the alert is about (the grant's label).
    pub entity: String,
    /// Who raised it.
    pub source: &'static str,
}

/// JSM's answer to an asynchronous request (create, close).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Follow the request with this id.
    pub request_id: String,
}

/// One alert as a search lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct OpsAlert {
    /// The id the other endpoints take.
    pub id: String,
    /// Its alias, if it has one.
    #[serde(default)]
    pub alias: Option<String>,
    /// `open` or `closed`.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AlertPage {
    #[serde(default)]
    values: Vec<OpsAlert>,
}

impl ApiClient {
    fn ops_alerts_url(&self, cloud_id: &CloudId, rest: &str) -> url::Url {
        join(
            &self.product_base_url(Product::Jira, cloud_id),
            &format!("jsm/ops/api/v1/alerts{rest}"),
        )
    }

    async fn ops_request(
        &self,
        request: reqwest::RequestBuilder,
        token: &AccessToken,
    ) -> Result<Vec<u8>, ApiError> {
        let response = request
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                self.count(Product::Jira, None);
                return Err(ApiError::Transient(describe_transport_error(&e)));
            }
        };
        let status = response.status();
        self.count(Product::Jira, Some(status.as_u16()));
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(describe_transport_error(&e)))?;
        if !status.is_success() {
            return Err(classify(status.as_u16(), &headers, &bytes));
        }
        Ok(bytes.to_vec())
    }

    /// Creates (or, for an open alias, counts up) an ops alert on `cloud_id`'s JSM.
    pub async fn create_ops_alert(
        &self,
        cloud_id: &CloudId,
        token: &AccessToken,
        alert: &NewOpsAlert,
    ) -> Result<Accepted, ApiError> {
        let request = self
            .http
            .post(self.ops_alerts_url(cloud_id, ""))
            .json(alert);
        let body = self.ops_request(request, token).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Transient(format!("unreadable JSM create answer: {e}")))
    }

    /// The alerts whose alias is `alias` (open and closed, newest first as JSM lists them).
    pub async fn ops_alerts_with_alias(
        &self,
        cloud_id: &CloudId,
        token: &AccessToken,
        alias: &str,
    ) -> Result<Vec<OpsAlert>, ApiError> {
        let query = format!("alias:\"{}\"", alias.replace('"', ""));
        let request = self
            .http
            .get(self.ops_alerts_url(cloud_id, ""))
            .query(&[("query", query.as_str()), ("size", "100")]);
        let body = self.ops_request(request, token).await?;
        let page: AlertPage = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Transient(format!("unreadable JSM alert list: {e}")))?;
        // The search is JSM's; the alias check is ours.
        Ok(page
            .values
            .into_iter()
            .filter(|a| a.alias.as_deref() == Some(alias))
            .collect())
    }

    /// Closes the ops alert `alert_id` with a note.
    pub async fn close_ops_alert(
        &self,
        cloud_id: &CloudId,
        token: &AccessToken,
        alert_id: &str,
        note: &str,
    ) -> Result<Accepted, ApiError> {
        let request = self
            .http
            .post(self.ops_alerts_url(cloud_id, &format!("/{alert_id}/close")))
            .json(&serde_json::json!({ "note": note, "source": "atlassync" }));
        let body = self.ops_request(request, token).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Transient(format!("unreadable JSM close answer: {e}")))
    }
}
