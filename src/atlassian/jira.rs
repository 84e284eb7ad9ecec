//! Jira Cloud platform REST v3 calls a sync makes: `myself`, `search/jql` pages, bulk fetch.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::ProductCall;
use crate::domain::{IssueRow, Product};

/// The fields a sync asks for: every navigable field (the points cost per issue is the
/// same however many fields it carries), so `raw` holds what any report may need.
pub const SYNC_FIELDS: &[&str] = &["*navigable"];

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

/// Where a scan stands after one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEnd {
    /// More pages follow: send this token for the next one (an empty page may still say so).
    More(String),
    /// Atlassian said this was the last page: `isLast: true`, or a non-empty page without a
    /// next-page token. Only this proves the scan saw the whole result.
    Complete,
    /// The scan stopped without that proof (an empty page without a token, the token just
    /// sent coming back): what was read is only part of the result.
    CutShort(&'static str),
}

impl SearchPage {
    /// Where the scan stands after this page, given the token that asked for it.
    pub fn end(&self, sent: Option<&str>) -> PageEnd {
        if self.is_last == Some(true) {
            return PageEnd::Complete;
        }
        match self.next_page_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) if Some(token) == sent => {
                PageEnd::CutShort("Jira sent back the page token it was given")
            }
            Some(token) => PageEnd::More(token.to_owned()),
            None if !self.issues.is_empty() => PageEnd::Complete,
            None => PageEnd::CutShort("an empty page without isLast or a next-page token"),
        }
    }
}

/// A scan's paging: the token to send next, and the empty pages seen in a row (Atlassian may
/// send empty pages that point on; a long run of them is a loop, not a result).
#[derive(Debug, Default)]
pub struct Scan {
    sent: Option<String>,
    empty_in_a_row: u32,
}

impl Scan {
    /// The token to send for the next page; `None` for the first.
    pub fn token(&self) -> Option<&str> {
        self.sent.as_deref()
    }

    /// Where the scan stands after `page`; a `More` token is remembered for the next call.
    pub fn after(&mut self, page: &SearchPage) -> PageEnd {
        self.empty_in_a_row = if page.issues.is_empty() {
            self.empty_in_a_row + 1
        } else {
            0
        };
        match page.end(self.sent.as_deref()) {
            PageEnd::More(_) if self.empty_in_a_row >= super::MAX_EMPTY_PAGES => {
                PageEnd::CutShort("too many empty pages in a row")
            }
            PageEnd::More(token) => {
                self.sent = Some(token.clone());
                PageEnd::More(token)
            }
            end => end,
        }
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

/// The answer of `search/approximate-count`.
#[derive(Debug, Deserialize)]
pub struct ApproximateCount {
    /// Atlassian's estimate of how many issues match (the index may lag recent changes).
    pub count: i64,
}

/// `POST search/approximate-count` of a bounded `jql`: one point, whatever the count.
pub fn approximate_count(jql: &str) -> ProductCall<ApproximateCount> {
    ProductCall::post(
        Product::Jira,
        "rest/api/3/search/approximate-count",
        serde_json::json!({ "jql": jql }),
        0,
        |_| 0,
    )
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

/// Issues of a bulk fetch, as raw JSON text (for rows).
#[derive(Debug, Deserialize)]
pub struct BulkIssues {
    /// The issues found and visible; missing ones are simply absent.
    #[serde(default)]
    pub issues: Vec<Box<RawValue>>,
}

/// `POST issue/bulkfetch` of `ids` (at most 100) with `fields`, for rows.
pub fn bulk_fetch_issues(ids: &[String], fields: &[&str]) -> ProductCall<BulkIssues> {
    let body = serde_json::json!({ "issueIdsOrKeys": ids, "fields": fields });
    ProductCall::post(
        Product::Jira,
        "rest/api/3/issue/bulkfetch",
        body,
        ids.len(),
        |b: &BulkIssues| b.issues.len(),
    )
}

/// The ids among `ids` (at most 50) that `restriction` matches, read with read-after-write
/// consistency (`reconcileIssues`), so a recent change is not mistaken for leaving the scope.
pub fn search_in_scope(restriction: &str, ids: &[String]) -> ProductCall<SearchPage> {
    let list = ids.join(", ");
    let numeric: Vec<i64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
    let body = serde_json::json!({
        "jql": format!("({restriction}) AND id in ({list})"),
        "fields": ["id"],
        "maxResults": ids.len().max(1),
        "reconcileIssues": numeric,
    });
    ProductCall::post(
        Product::Jira,
        "rest/api/3/search/jql",
        body,
        ids.len(),
        |page: &SearchPage| page.issues.len(),
    )
}

/// One field of `GET field`, as far as the `jira_fields` table types it.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldInfo {
    /// E.g. `summary` or `customfield_10016`.
    pub id: String,
    /// The display name, e.g. `Story point estimate`.
    #[serde(default)]
    pub name: String,
    /// Whether it is a custom field.
    #[serde(default)]
    pub custom: bool,
    /// `schema.type`, e.g. `number`, `array`, `user`.
    #[serde(default)]
    pub schema: Option<FieldSchema>,
}

/// `schema` of a field.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldSchema {
    /// The value type.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// `GET field`: every field of the site, system and custom, each as raw JSON text.
pub fn fields() -> ProductCall<Vec<Box<RawValue>>> {
    ProductCall::get(
        Product::Jira,
        "rest/api/3/field",
        Vec::new(),
        1000,
        |f: &Vec<Box<RawValue>>| f.len(),
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
    status: Option<Status>,
    #[serde(default)]
    issuetype: Option<Named>,
    #[serde(default)]
    assignee: Option<Account>,
    #[serde(default)]
    reporter: Option<Account>,
    #[serde(default)]
    priority: Option<Named>,
    #[serde(default)]
    resolution: Option<Named>,
    #[serde(default)]
    resolutiondate: Option<String>,
    #[serde(default)]
    parent: Option<Named>,
    #[serde(default)]
    labels: Option<Vec<String>>,
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
struct Status {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "statusCategory", default)]
    category: Option<Named>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(rename = "accountId", default)]
    account_id: Option<String>,
}

/// Postgres stores no NUL character in `text` or `jsonb`; Jira allows them in text fields.
fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    }
}

/// `raw` without NUL characters: JSON text escapes them as `\u0000`, which Postgres's
/// jsonb refuses. Rare, so the slow path (a JSON tree, cleaned and written back) is fine.
fn raw_without_nul(raw: Box<RawValue>) -> Box<RawValue> {
    if !raw.get().contains("\\u0000") {
        return raw;
    }
    fn clean(value: &mut Value) {
        match value {
            Value::String(text) => *text = without_nul(std::mem::take(text)),
            Value::Array(items) => items.iter_mut().for_each(clean),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    clean(&mut item);
                    map.insert(without_nul(key), item);
                }
            }
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::from_str::<Value>(raw.get()) else {
        return raw;
    };
    clean(&mut value);
    serde_json::value::to_raw_value(&value).unwrap_or(raw)
}

/// The typed columns of one issue; `None` for JSON without an id or key.
pub fn issue_row(raw: Box<RawValue>) -> Option<IssueRow> {
    let columns: IssueColumns = serde_json::from_str(raw.get()).ok()?;
    let fields = columns.fields.unwrap_or_default();
    let text = |value: Option<String>| value.map(without_nul);
    let (status, status_category) = match fields.status {
        Some(status) => (status.name, status.category.and_then(|c| c.key)),
        None => (None, None),
    };
    Some(IssueRow {
        issue_id: match columns.id {
            IdValue::Text(id) => id,
            IdValue::Number(id) => id.to_string(),
        },
        issue_key: without_nul(columns.key),
        project_key: text(fields.project.and_then(|p| p.key)),
        summary: text(fields.summary),
        status: text(status),
        issue_type: text(fields.issuetype.and_then(|t| t.name)),
        assignee_account_id: fields.assignee.and_then(|a| a.account_id),
        status_category: text(status_category),
        priority: text(fields.priority.and_then(|p| p.name)),
        resolution: text(fields.resolution.and_then(|r| r.name)),
        resolved_at: fields.resolutiondate.as_deref().and_then(parse_timestamp),
        reporter_account_id: fields.reporter.and_then(|r| r.account_id),
        parent_key: text(fields.parent.and_then(|p| p.key)),
        labels: fields
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(without_nul)
            .collect(),
        created_at: fields.created.as_deref().and_then(parse_timestamp),
        updated_at: fields.updated.as_deref().and_then(parse_timestamp),
        raw: raw_without_nul(raw),
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
    fn only_atlassian_ends_a_scan_complete() {
        let null = || RawValue::from_string("null".into()).unwrap();
        let page = |issues: usize, token: Option<&str>, last: Option<bool>| SearchPage {
            issues: (0..issues).map(|_| null()).collect(),
            next_page_token: token.map(str::to_owned),
            is_last: last,
        };
        let more = |t: &str| PageEnd::More(t.to_owned());
        assert_eq!(page(2, Some("b"), Some(false)).end(Some("a")), more("b"));
        // Sparse and empty pages that point on are followed.
        assert_eq!(page(0, Some("b"), Some(false)).end(Some("a")), more("b"));
        assert_eq!(
            page(2, Some("b"), Some(true)).end(Some("a")),
            PageEnd::Complete
        );
        assert_eq!(page(0, None, Some(true)).end(None), PageEnd::Complete);
        assert_eq!(page(2, None, None).end(Some("a")), PageEnd::Complete);
        assert!(matches!(
            page(0, None, None).end(Some("a")),
            PageEnd::CutShort(_)
        ));
        assert!(matches!(
            page(0, Some(""), Some(false)).end(Some("a")),
            PageEnd::CutShort(_)
        ));
        assert!(
            matches!(
                page(2, Some("a"), Some(false)).end(Some("a")),
                PageEnd::CutShort(_)
            ),
            "a repeated token ends the scan incomplete"
        );
    }

    #[test]
    fn nul_characters_are_removed_from_columns_and_raw() {
        let text = r#"{"id":"1","key":"A-1","fields":{"summary":"bad\u0000value","labels":["x\u0000"],"status":{"name":"Done","statusCategory":{"key":"done"}}}}"#;
        let row = issue_row(RawValue::from_string(text.into()).unwrap()).unwrap();
        assert_eq!(row.summary.as_deref(), Some("badvalue"));
        assert_eq!(row.labels, ["x"]);
        assert_eq!(row.status_category.as_deref(), Some("done"));
        assert!(!row.raw.get().contains("\\u0000"), "{}", row.raw.get());
        assert!(row.raw.get().contains("badvalue"));
        // A backslash followed by u0000 is text, not a NUL: kept.
        let text = r#"{"id":"2","key":"A-2","fields":{"summary":"C:\\u0000dir"}}"#;
        let row = issue_row(RawValue::from_string(text.into()).unwrap()).unwrap();
        assert_eq!(row.summary.as_deref(), Some("C:\\u0000dir"));
    }
}
