//! Jira Cloud platform REST v3 calls a sync makes: `myself`, `search/jql` pages, bulk fetch.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::ProductCall;
use crate::domain::{IssueRow, Product};

/// The fields a sync asks for: what the typed columns need, and the usual reporting fields
/// kept in `raw`.
pub const SYNC_FIELDS: &[&str] = &[
    "summary",
    "status",
    "updated",
    "created",
    "project",
    "issuetype",
    "assignee",
    "reporter",
    "priority",
    "labels",
    "parent",
    "resolution",
    "duedate",
];

/// One page of `search/jql`. Issues stay raw JSON text until their columns are read.
#[derive(Debug, Deserialize)]
pub struct SearchPage {
    /// The page's issues as raw JSON text; [`issue_row`] or [`issue_id`] reads them.
    #[serde(default)]
    pub issues: Vec<Box<RawValue>>,
    /// `nextPageToken`, sent back for the next page; missing, empty or repeated at the end.
    #[serde(rename = "nextPageToken", default)]
    pub next_page_token: Option<String>,
    /// `isLast`: `Some(true)` on the last page; not every answer carries it.
    #[serde(rename = "isLast", default)]
    pub is_last: Option<bool>,
}

impl SearchPage {
    /// The token to send for the next page, or `None` when this is the last page by any of
    /// Atlassian's signals (isLast, no token, an empty page, or the same token sent back).
    pub fn next(&self, sent: Option<&str>) -> Option<String> {
        if self.is_last == Some(true) || self.issues.is_empty() {
            return None;
        }
        self.next_page_token
            .clone()
            .filter(|token| !token.is_empty() && Some(token.as_str()) != sent)
    }
}

/// The answer of `myself`, as far as a sync needs it.
#[derive(Debug, Deserialize)]
pub struct Myself {
    /// The user's Jira time zone (JQL date literals are read in it).
    #[serde(rename = "timeZone")]
    pub time_zone: Option<String>,
}

/// `GET myself`: the calling user, for their time zone.
pub fn myself() -> ProductCall<Myself> {
    ProductCall::get(Product::Jira, "rest/api/3/myself", Vec::new(), 1, |_| 1)
}

/// One page of `POST search/jql`.
pub fn search(
    jql: &str,
    fields: &[&str],
    page_size: u32,
    next_page_token: Option<&str>,
) -> ProductCall<SearchPage> {
    let mut body = serde_json::json!({
        "jql": jql,
        "fields": fields,
        "maxResults": page_size,
    });
    if let Some(token) = next_page_token {
        body["nextPageToken"] = Value::String(token.to_owned());
    }
    ProductCall::post(
        Product::Jira,
        "rest/api/3/search/jql",
        body,
        page_size as usize,
        |page: &SearchPage| page.issues.len(),
    )
}

/// The answer of a bulk fetch.
#[derive(Debug, Deserialize)]
pub struct BulkFetch {
    #[serde(default)]
    issues: Vec<Value>,
    #[serde(rename = "issueErrors", default)]
    issue_errors: Vec<Value>,
}

impl BulkFetch {
    /// Which of the asked ids still exist or could not be checked: bulk fetch silently
    /// leaves out issues that are gone, and lists in `issueErrors` those it failed to load;
    /// those are kept, since an error proves nothing about deletion.
    pub fn existing_ids(&self) -> Vec<String> {
        let id_of = |v: &Value| match v.get("id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        self.issues
            .iter()
            .chain(self.issue_errors.iter())
            .filter_map(id_of)
            .collect()
    }
}

/// `POST issue/bulkfetch` of `ids` (at most 100), asking only for `updated`.
pub fn bulk_fetch(ids: &[String]) -> ProductCall<BulkFetch> {
    let body = serde_json::json!({ "issueIdsOrKeys": ids, "fields": ["updated"] });
    ProductCall::post(
        Product::Jira,
        "rest/api/3/issue/bulkfetch",
        body,
        ids.len(),
        |b: &BulkFetch| b.issues.len(),
    )
}

/// Jira timestamps: `2026-03-01T09:15:07.311+1100` (offset without a colon), or RFC 3339.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.to_utc())
}

/// The columns atlassync types, read straight from an issue's JSON text (the rest is kept
/// verbatim in `raw`, so no JSON tree is ever built for it).
#[derive(Deserialize)]
struct IssueColumns {
    id: IdValue,
    key: String,
    #[serde(default)]
    fields: Option<FieldColumns>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(i64),
}

#[derive(Deserialize, Default)]
struct FieldColumns {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    status: Option<Named>,
    #[serde(default)]
    issuetype: Option<Named>,
    #[serde(default)]
    assignee: Option<Assignee>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    updated: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Assignee {
    #[serde(rename = "accountId", default)]
    account_id: Option<String>,
}

/// The typed columns of one issue; `None` for JSON without an id or key.
pub fn issue_row(raw: Box<RawValue>) -> Option<IssueRow> {
    let columns: IssueColumns = serde_json::from_str(raw.get()).ok()?;
    let fields = columns.fields.unwrap_or_default();
    Some(IssueRow {
        issue_id: match columns.id {
            IdValue::Text(id) => id,
            IdValue::Number(id) => id.to_string(),
        },
        issue_key: columns.key,
        project_key: fields.project.and_then(|p| p.key),
        summary: fields.summary,
        status: fields.status.and_then(|s| s.name),
        issue_type: fields.issuetype.and_then(|t| t.name),
        assignee_account_id: fields.assignee.and_then(|a| a.account_id),
        created_at: fields.created.as_deref().and_then(parse_timestamp),
        updated_at: fields.updated.as_deref().and_then(parse_timestamp),
        raw,
    })
}

/// The id of an issue in an id-only page.
pub fn issue_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: IdValue,
    }
    match serde_json::from_str::<IdOnly>(raw.get()).ok()?.id {
        IdValue::Text(id) => Some(id),
        IdValue::Number(id) => Some(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_and_the_json_kept_verbatim() {
        let text = r#"{"id":"10002","key":"ENG-1","fields":{"summary":"Main order flow broken","status":{"name":"In Progress","id":"3"},"updated":"2026-03-01T09:15:07.311+1100","created":"2026-02-27T16:02:44.120+1100","project":{"id":"10000","key":"ENG"},"issuetype":{"name":"Bug"},"assignee":null,"labels":["checkout"]}}"#;
        let row = issue_row(RawValue::from_string(text.into()).unwrap()).unwrap();
        assert_eq!(
            (row.issue_id.as_str(), row.issue_key.as_str()),
            ("10002", "ENG-1")
        );
        assert_eq!(row.project_key.as_deref(), Some("ENG"));
        assert_eq!(row.status.as_deref(), Some("In Progress"));
        assert_eq!(row.issue_type.as_deref(), Some("Bug"));
        assert_eq!(row.assignee_account_id, None);
        assert_eq!(
            row.updated_at.unwrap().to_rfc3339(),
            "2026-02-28T22:15:07.311+00:00"
        );
        assert_eq!(row.raw.get(), text);
        let ids_only = RawValue::from_string(r#"{"id":"10031","key":"ENG-30"}"#.into()).unwrap();
        assert!(issue_row(ids_only.clone()).is_some());
        assert_eq!(issue_id(&ids_only).as_deref(), Some("10031"));
    }

    #[test]
    fn jira_offsets_without_colons_parse() {
        let t = parse_timestamp("2026-03-01T09:15:07.311+1100").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-02-28T22:15:07.311+00:00");
        assert!(parse_timestamp("2021-01-17T12:34:00.000+0000").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn paging_stops_on_every_last_page_signal() {
        let null = || RawValue::from_string("null".into()).unwrap();
        let page = |issues: usize, token: Option<&str>, last: Option<bool>| SearchPage {
            issues: (0..issues).map(|_| null()).collect(),
            next_page_token: token.map(str::to_owned),
            is_last: last,
        };
        assert_eq!(
            page(2, Some("b"), Some(false)).next(Some("a")),
            Some("b".into())
        );
        assert_eq!(page(2, Some("b"), Some(true)).next(Some("a")), None);
        assert_eq!(page(2, None, None).next(Some("a")), None);
        assert_eq!(page(0, Some("b"), Some(false)).next(Some("a")), None);
        assert_eq!(
            page(2, Some("a"), Some(false)).next(Some("a")),
            None,
            "a repeated token ends the scan"
        );
    }
}
