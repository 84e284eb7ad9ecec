//! The JSM Operations alerts of one site, and the asynchronous requests that changed them.
//!
//! Written from Atlassian's JSM Operations REST API reference (Alerts group,
//! <https://developer.atlassian.com/cloud/jira/service-desk-ops/rest/v2/api-group-alerts/>) and
//! its OpenAPI document, plus the support article on alert fields:
//! - an alert is addressed by its id (a UUID followed by `-` and the creation time in epoch
//!   milliseconds, as in the documentation's examples) and has a short `tinyId`;
//! - `alias` is the de-duplication key: creating an alert whose alias belongs to an alert that is
//!   not closed creates nothing new, it increments that alert's `count` (and `lastOccuredAt`);
//!   once that alert is closed the alias is free and the next create makes a new alert. Without
//!   an alias the service assigns a unique one;
//! - creating and closing are asynchronous: each answers a request id whose outcome
//!   `GET …/v1/alerts/requests/{id}` reports (the emulator processes at once).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Urgency of an alert (`P1` highest … `P5` lowest; `P3` when not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub(crate) enum Priority {
    P1,
    P2,
    #[default]
    P3,
    P4,
    P5,
}

impl Priority {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
            Priority::P4 => "P4",
            Priority::P5 => "P5",
        }
    }
}

/// Alert state. The service also knows `acked`, `resolved` and `snoozed`; the emulator models
/// only what creating and closing reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertStatus {
    Open,
    Closed,
}

impl AlertStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Closed => "closed",
        }
    }
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewAlert {
    pub(crate) message: String,
    pub(crate) alias: Option<String>,
    pub(crate) description: Option<String>,
    /// `{"id","type"}` objects, as given.
    pub(crate) responders: Vec<Value>,
    pub(crate) visible_to: Vec<Value>,
    pub(crate) actions: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) extra_properties: BTreeMap<String, String>,
    pub(crate) entity: Option<String>,
    /// Given, or the caller's IP address (the documented default).
    pub(crate) source: String,
    pub(crate) priority: Priority,
    pub(crate) note: Option<String>,
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Alert {
    pub(crate) id: String,
    pub(crate) tiny_id: String,
    /// Insertion order (the `insertedAt` sort).
    pub(crate) seq: u64,
    pub(crate) alias: String,
    pub(crate) message: String,
    pub(crate) description: Option<String>,
    pub(crate) priority: Priority,
    pub(crate) tags: Vec<String>,
    pub(crate) extra_properties: BTreeMap<String, String>,
    pub(crate) entity: Option<String>,
    pub(crate) source: String,
    pub(crate) responders: Vec<Value>,
    pub(crate) visible_to: Vec<Value>,
    pub(crate) actions: Vec<String>,
    /// Notes given on create (and on de-duplicated creates) and on close, oldest first.
    pub(crate) notes: Vec<String>,
    pub(crate) status: AlertStatus,
    pub(crate) count: u32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) last_occurred_at: DateTime<Utc>,
    pub(crate) closed_at: Option<DateTime<Utc>>,
}

/// What an asynchronous request did (`GetRequestStatusResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestRecord {
    /// `Create` or `Close`.
    pub(crate) action: &'static str,
    pub(crate) processed_at: DateTime<Utc>,
    pub(crate) is_success: bool,
    /// Human-readable outcome (⚠ the texts are undocumented except "Alert does not exist").
    pub(crate) status: String,
    pub(crate) alert_id: String,
    pub(crate) alias: String,
}

/// The alerts of one site, oldest first, and the requests made against them.
#[derive(Debug, Default)]
pub(crate) struct JsmSite {
    alerts: Vec<Alert>,
    requests: HashMap<String, RequestRecord>,
    next_seq: u64,
}

impl JsmSite {
    /// Every alert, oldest first.
    pub(crate) fn alerts(&self) -> &[Alert] {
        &self.alerts
    }

    /// The alert with this id.
    pub(crate) fn alert(&self, id: &str) -> Option<&Alert> {
        self.alerts.iter().find(|a| a.id == id)
    }

    /// The alert with this alias: the one not yet closed if any, else the newest.
    pub(crate) fn alert_by_alias(&self, alias: &str) -> Option<&Alert> {
        self.alerts
            .iter()
            .find(|a| a.alias == alias && a.status != AlertStatus::Closed)
            .or_else(|| self.alerts.iter().rev().find(|a| a.alias == alias))
    }

    /// The outcome of request `id`.
    pub(crate) fn request(&self, id: &str) -> Option<&RequestRecord> {
        self.requests.get(id)
    }

    fn record(&mut self, record: RequestRecord) -> String {
        let id = Uuid::new_v4().to_string();
        self.requests.insert(id.clone(), record);
        id
    }

    /// Creates an alert, or counts one more occurrence of the open alert with the same alias;
    /// returns the request id.
    pub(crate) fn create(&mut self, new: NewAlert, now: DateTime<Utc>) -> String {
        let existing = new.alias.as_deref().and_then(|alias| {
            self.alerts
                .iter_mut()
                .find(|a| a.alias == alias && a.status != AlertStatus::Closed)
        });
        let (alert_id, alias, status) = match existing {
            Some(alert) => {
                alert.count = alert.count.saturating_add(1);
                alert.last_occurred_at = now;
                alert.updated_at = now;
                alert.notes.extend(new.note);
                (
                    alert.id.clone(),
                    alert.alias.clone(),
                    "Alert already exists, its count is increased",
                )
            }
            None => {
                self.next_seq += 1;
                let alert = Alert {
                    id: format!("{}-{}", Uuid::new_v4(), now.timestamp_millis()),
                    tiny_id: self.next_seq.to_string(),
                    seq: self.next_seq,
                    alias: new.alias.unwrap_or_else(|| Uuid::new_v4().to_string()),
                    message: new.message,
                    description: new.description,
                    priority: new.priority,
                    tags: new.tags,
                    extra_properties: new.extra_properties,
                    entity: new.entity,
                    source: new.source,
                    responders: new.responders,
                    visible_to: new.visible_to,
                    actions: new.actions,
                    notes: new.note.into_iter().collect(),
                    status: AlertStatus::Open,
                    count: 1,
                    created_at: now,
                    updated_at: now,
                    last_occurred_at: now,
                    closed_at: None,
                };
                let ids = (alert.id.clone(), alert.alias.clone(), "Created alert");
                self.alerts.push(alert);
                ids
            }
        };
        self.record(RequestRecord {
            action: "Create",
            processed_at: now,
            is_success: true,
            status: status.to_owned(),
            alert_id,
            alias,
        })
    }

    /// Closes alert `id` (closing a closed alert changes nothing; an unknown id is a failed
    /// request, reported only by the request status); returns the request id.
    pub(crate) fn close(&mut self, id: &str, note: Option<String>, now: DateTime<Utc>) -> String {
        let record = match self.alerts.iter_mut().find(|a| a.id == id) {
            None => RequestRecord {
                action: "Close",
                processed_at: now,
                is_success: false,
                status: "Alert does not exist".to_owned(),
                alert_id: id.to_owned(),
                alias: String::new(),
            },
            Some(alert) => {
                let status = if alert.status == AlertStatus::Closed {
                    "Alert is already closed"
                } else {
                    alert.status = AlertStatus::Closed;
                    alert.closed_at = Some(now);
                    alert.updated_at = now;
                    "Closed alert"
                };
                alert.notes.extend(note);
                RequestRecord {
                    action: "Close",
                    processed_at: now,
                    is_success: true,
                    status: status.to_owned(),
                    alert_id: alert.id.clone(),
                    alias: alert.alias.clone(),
                }
            }
        };
        self.record(record)
    }

    /// Every alert as the control API shows it, oldest first.
    pub(crate) fn snapshots(&self) -> Vec<JsmAlertSnapshot> {
        self.alerts.iter().map(JsmAlertSnapshot::from).collect()
    }
}

/// The truth about one JSM Operations alert, for tests and the control API
/// (`GET /_emulator/sites/{cloud_id}/jsm/alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsmAlertSnapshot {
    /// Alert id (`<uuid>-<epoch millis>`).
    pub id: String,
    /// Short sequential id within the site (`"1"`, `"2"`, …).
    pub tiny_id: String,
    /// De-duplication key (given, or assigned by the service).
    pub alias: String,
    /// One-line summary.
    pub message: String,
    /// Longer description, if given.
    pub description: Option<String>,
    /// `P1` … `P5`.
    pub priority: String,
    /// `open` or `closed`.
    pub status: String,
    /// Occurrences: 1, plus one per de-duplicated create.
    pub count: u32,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change (creation, de-duplication or close).
    pub updated_at: DateTime<Utc>,
    /// Last occurrence (creation or de-duplicated create).
    pub last_occurred_at: DateTime<Utc>,
    /// When the alert was closed, if it is.
    pub closed_at: Option<DateTime<Utc>>,
    /// Tags.
    pub tags: Vec<String>,
    /// The alert's `extraProperties` (custom key-value details).
    pub details: BTreeMap<String, String>,
    /// Entity, if given.
    pub entity: Option<String>,
    /// Source (given, or the caller's IP address).
    pub source: String,
    /// Responders as given (`{"id","type"}` objects).
    pub responders: Vec<Value>,
    /// Custom action names.
    pub actions: Vec<String>,
    /// Notes from create, de-duplicated creates and close, oldest first.
    pub notes: Vec<String>,
}

impl From<&Alert> for JsmAlertSnapshot {
    fn from(alert: &Alert) -> Self {
        Self {
            id: alert.id.clone(),
            tiny_id: alert.tiny_id.clone(),
            alias: alert.alias.clone(),
            message: alert.message.clone(),
            description: alert.description.clone(),
            priority: alert.priority.as_str().to_owned(),
            status: alert.status.as_str().to_owned(),
            count: alert.count,
            created_at: alert.created_at,
            updated_at: alert.updated_at,
            last_occurred_at: alert.last_occurred_at,
            closed_at: alert.closed_at,
            tags: alert.tags.clone(),
            details: alert.extra_properties.clone(),
            entity: alert.entity.clone(),
            source: alert.source.clone(),
            responders: alert.responders.clone(),
            actions: alert.actions.clone(),
            notes: alert.notes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn new_alert(alias: Option<&str>) -> NewAlert {
        NewAlert {
            message: "Grant broken".to_owned(),
            alias: alias.map(str::to_owned),
            description: None,
            responders: Vec::new(),
            visible_to: Vec::new(),
            actions: Vec::new(),
            tags: Vec::new(),
            extra_properties: BTreeMap::new(),
            entity: None,
            source: "127.0.0.1".to_owned(),
            priority: Priority::default(),
            note: None,
        }
    }

    #[test]
    fn alias_deduplicates_only_while_the_alert_is_open() {
        let mut site = JsmSite::default();
        let t0 = at("2026-11-22T09:00:00Z");
        let first = site.create(new_alert(Some("g-1")), t0);
        let first_id = site.request(&first).expect("request").alert_id.clone();
        let second = site.create(new_alert(Some("g-1")), at("2026-11-22T09:05:00Z"));
        assert_eq!(site.request(&second).expect("request").alert_id, first_id);
        assert_eq!(site.alerts().len(), 1);
        assert_eq!(site.alerts()[0].count, 2);
        assert_eq!(site.alerts()[0].created_at, t0);
        site.close(&first_id, None, at("2026-11-22T09:10:00Z"));
        let third = site.create(new_alert(Some("g-1")), at("2026-11-22T09:15:00Z"));
        let third_id = site.request(&third).expect("request").alert_id.clone();
        assert_ne!(third_id, first_id);
        assert_eq!(site.alerts().len(), 2);
        assert_eq!(site.alert_by_alias("g-1").expect("alias").id, third_id);
        assert!(third_id.ends_with(&format!(
            "-{}",
            at("2026-11-22T09:15:00Z").timestamp_millis()
        )));
    }

    #[test]
    fn closing_twice_is_harmless_and_unknown_ids_fail_in_the_request_status() {
        let mut site = JsmSite::default();
        let created = site.create(new_alert(None), at("2026-11-22T09:00:00Z"));
        let id = site.request(&created).expect("request").alert_id.clone();
        site.close(&id, Some("fixed".into()), at("2026-11-22T09:01:00Z"));
        let again = site.close(&id, None, at("2026-11-22T09:02:00Z"));
        let alert = site.alert(&id).expect("alert");
        assert_eq!(alert.status, AlertStatus::Closed);
        assert_eq!(alert.closed_at, Some(at("2026-11-22T09:01:00Z")));
        assert_eq!(alert.notes, vec!["fixed".to_owned()]);
        assert!(site.request(&again).expect("request").is_success);
        let unknown = site.close("nope", None, at("2026-11-22T09:03:00Z"));
        let record = site.request(&unknown).expect("request");
        assert!(!record.is_success);
        assert_eq!(record.status, "Alert does not exist");
        // Without an alias every create is a new alert with a distinct assigned alias.
        site.create(new_alert(None), at("2026-11-22T09:04:00Z"));
        assert_ne!(site.alerts()[0].alias, site.alerts()[1].alias);
    }
}
