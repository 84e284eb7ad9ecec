//! Jira's issue JSON (`IssueBean`): field selection, the field
//! shapes, timestamps in the caller's Jira time zone, and `self` links in the gateway form.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::issues::{Issue, JiraSite, Project};
use super::products::Person;

/// `expand` of an issue carrying fields (what Jira advertises).
const FULL_EXPAND: &str =
    "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations";

/// A field of the site, as `GET /rest/api/3/field` describes it (`FieldDetails`).
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    /// `JsonTypeBean.type`; `None`: the field has no schema (Jira's `parent`).
    pub(crate) kind: Option<&'static str>,
    /// `JsonTypeBean.items` of array fields.
    pub(crate) items: Option<&'static str>,
    /// `(custom type URI, customId)` of custom fields.
    pub(crate) custom: Option<(&'static str, i64)>,
    pub(crate) navigable: bool,
    pub(crate) orderable: bool,
    pub(crate) searchable: bool,
    pub(crate) clause_names: &'static [&'static str],
}

const fn system(
    id: &'static str,
    name: &'static str,
    kind: &'static str,
    clause_names: &'static [&'static str],
) -> FieldDef {
    FieldDef {
        id,
        name,
        kind: Some(kind),
        items: None,
        custom: None,
        navigable: true,
        orderable: true,
        searchable: true,
        clause_names,
    }
}

/// Every field the emulator renders, in Jira's order.
pub(crate) static FIELDS: &[FieldDef] = &[
    system("summary", "Summary", "string", &["summary"]),
    system("description", "Description", "string", &["description"]),
    system("status", "Status", "status", &["status"]),
    system(
        "issuetype",
        "Issue Type",
        "issuetype",
        &["issuetype", "type"],
    ),
    system("project", "Project", "project", &["project"]),
    system("assignee", "Assignee", "user", &["assignee"]),
    system("reporter", "Reporter", "user", &["reporter"]),
    system("creator", "Creator", "user", &["creator"]),
    system("priority", "Priority", "priority", &["priority"]),
    system("resolution", "Resolution", "resolution", &["resolution"]),
    system(
        "resolutiondate",
        "Resolved",
        "datetime",
        &["resolutiondate", "resolved"],
    ),
    FieldDef {
        items: Some("string"),
        ..system("labels", "Labels", "array", &["labels"])
    },
    FieldDef {
        kind: None,
        orderable: false,
        searchable: false,
        ..system("parent", "Parent", "", &["parent"])
    },
    system(
        "created",
        "Created",
        "datetime",
        &["created", "createdDate"],
    ),
    system(
        "updated",
        "Updated",
        "datetime",
        &["updated", "updatedDate"],
    ),
    FieldDef {
        custom: Some((
            "com.atlassian.jira.plugin.system.customfieldtypes:float",
            10016,
        )),
        ..system(
            "customfield_10016",
            "Story point estimate",
            "number",
            &[
                "cf[10016]",
                "Story point estimate",
                "Story point estimate[Number]",
            ],
        )
    },
    FieldDef {
        items: Some("json"),
        custom: Some(("com.pyxis.greenhopper.jira:gh-sprint", 10020)),
        orderable: false,
        ..system(
            "customfield_10020",
            "Sprint",
            "array",
            &["cf[10020]", "Sprint", "Sprint[Sprint]"],
        )
    },
    FieldDef {
        navigable: false,
        ..system("comment", "Comment", "comments-page", &["comment"])
    },
];

impl FieldDef {
    /// `JsonTypeBean`, when the field has a schema.
    pub(crate) fn schema(&self) -> Option<Value> {
        let kind = self.kind?;
        let mut bean = json!({"type": kind});
        if let Some(items) = self.items {
            bean["items"] = json!(items);
        }
        match self.custom {
            Some((uri, custom_id)) => {
                bean["custom"] = json!(uri);
                bean["customId"] = json!(custom_id);
            }
            None => bean["system"] = json!(self.id),
        }
        Some(bean)
    }

    /// `FieldDetails`.
    pub(crate) fn details(&self) -> Value {
        let mut details = json!({
            "id": self.id,
            "key": self.id,
            "name": self.name,
            "custom": self.custom.is_some(),
            "orderable": self.orderable,
            "navigable": self.navigable,
            "searchable": self.searchable,
            "clauseNames": self.clause_names,
        });
        if let Some(schema) = self.schema() {
            details["schema"] = schema;
        }
        details
    }
}

/// Which fields to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldSelection {
    /// Only `id`/`key` were asked for: no `fields` object at all.
    IdOnly,
    /// These known fields (possibly none), in Jira's order.
    Fields(Vec<&'static str>),
}

impl FieldSelection {
    /// Reads `fields` values (each may be comma-separated): `*all` (every field), `*navigable`
    /// (every navigable field), field ids (unknown ones are ignored, as Jira does), and `-id` to
    /// exclude a field. `default` applies when nothing is given.
    pub(crate) fn parse(requested: &[String], default: &str) -> FieldSelection {
        let mut tokens: Vec<&str> = requested
            .iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            tokens = vec![default];
        }
        if tokens
            .iter()
            .all(|t| t.eq_ignore_ascii_case("id") || t.eq_ignore_ascii_case("key"))
        {
            return FieldSelection::IdOnly;
        }
        let mut chosen: Vec<&'static str> = Vec::new();
        let mut excluded: Vec<String> = Vec::new();
        let add = |chosen: &mut Vec<&'static str>, id: &'static str| {
            if !chosen.contains(&id) {
                chosen.push(id);
            }
        };
        for token in tokens {
            if token.eq_ignore_ascii_case("*all") {
                for field in FIELDS {
                    add(&mut chosen, field.id);
                }
            } else if token.eq_ignore_ascii_case("*navigable") {
                for field in FIELDS.iter().filter(|f| f.navigable) {
                    add(&mut chosen, field.id);
                }
            } else if let Some(name) = token.strip_prefix('-') {
                excluded.push(name.trim().to_ascii_lowercase());
            } else if let Some(field) = FIELDS.iter().find(|f| f.id.eq_ignore_ascii_case(token)) {
                add(&mut chosen, field.id);
            }
        }
        chosen.retain(|id| !excluded.iter().any(|e| e == id));
        chosen.sort_by_key(|id| FIELDS.iter().position(|f| f.id == *id));
        FieldSelection::Fields(chosen)
    }

    /// The per-page cap for this selection (Atlassian: 5000 when only ids or keys are asked
    /// for, else 100).
    pub(crate) fn page_cap(&self) -> usize {
        match self {
            FieldSelection::IdOnly => 5000,
            FieldSelection::Fields(_) => 100,
        }
    }

    fn chosen(&self) -> impl Iterator<Item = &'static FieldDef> + '_ {
        let ids: &[&'static str] = match self {
            FieldSelection::IdOnly => &[],
            FieldSelection::Fields(ids) => ids,
        };
        FIELDS.iter().filter(move |f| ids.contains(&f.id))
    }

    /// `names` for `expand=names`.
    pub(crate) fn names(&self) -> Value {
        let names: Map<String, Value> = self
            .chosen()
            .map(|f| (f.id.to_owned(), json!(f.name)))
            .collect();
        Value::Object(names)
    }

    /// `schema` for `expand=schema` (`JsonTypeBean` per field that has one).
    pub(crate) fn schema(&self) -> Value {
        let schema: Map<String, Value> = self
            .chosen()
            .filter_map(|f| Some((f.id.to_owned(), f.schema()?)))
            .collect();
        Value::Object(schema)
    }
}

/// Renders issues for one caller on one site.
pub(crate) struct IssueView<'a> {
    /// `{base}ex/jira/{cloudid}/rest/api/3`.
    pub(crate) api: String,
    /// `https://{site}.atlassian.net`.
    pub(crate) site_url: String,
    /// The caller's Jira zone.
    pub(crate) zone: Tz,
    pub(crate) people: &'a HashMap<String, Person>,
    /// The site's Jira data (projects and parents).
    pub(crate) site: &'a JiraSite,
}

/// Jira's timestamp form: milliseconds and an offset without a colon (`+1100`).
pub(crate) fn jira_timestamp(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub(crate) fn encode_query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl IssueView<'_> {
    /// One `IssueBean`.
    pub(crate) fn issue(&self, issue: &Issue, fields: &FieldSelection) -> Value {
        let project = self.site.project(&issue.project_id);
        let mut bean = Map::new();
        bean.insert("id".into(), json!(issue.id.to_string()));
        bean.insert("key".into(), json!(issue.key));
        bean.insert(
            "self".into(),
            json!(format!("{}/issue/{}", self.api, issue.id)),
        );
        match fields {
            FieldSelection::IdOnly => {
                bean.insert("expand".into(), json!(""));
            }
            FieldSelection::Fields(names) => {
                bean.insert("expand".into(), json!(FULL_EXPAND));
                let mut out = Map::new();
                for name in names {
                    out.insert((*name).to_owned(), self.field(issue, project, name));
                }
                bean.insert("fields".into(), Value::Object(out));
            }
        }
        Value::Object(bean)
    }

    fn field(&self, issue: &Issue, project: Option<&Project>, name: &str) -> Value {
        match name {
            "summary" => json!(issue.summary),
            "description" => issue.description.as_deref().map_or(Value::Null, adf),
            "status" => self.status(issue),
            "issuetype" => self.issue_type(issue),
            "project" => project.map_or(Value::Null, |p| self.project(p)),
            "assignee" => self.user(issue.assignee.as_deref()),
            "reporter" | "creator" => self.user(issue.reporter.as_deref()),
            "priority" => issue.priority.map_or(Value::Null, |p| {
                json!({
                    "self": format!("{}/priority/{}", self.api, p.id),
                    "iconUrl": format!("{}/images/icons/priorities/{}", self.site_url, p.icon),
                    "name": p.name,
                    "id": p.id,
                })
            }),
            "labels" => json!(issue.labels),
            "created" => json!(jira_timestamp(issue.created, self.zone)),
            "updated" => json!(jira_timestamp(issue.updated, self.zone)),
            "resolution" => issue.resolution_date.map_or(Value::Null, |_| {
                json!({
                    "self": format!("{}/resolution/10000", self.api),
                    "id": "10000",
                    "description": "Work has been done on this issue.",
                    "name": "Done",
                })
            }),
            "resolutiondate" => issue
                .resolution_date
                .map_or(Value::Null, |at| json!(jira_timestamp(at, self.zone))),
            "parent" => issue
                .parent
                .and_then(|id| self.site.issue(&id.to_string()))
                .map_or(Value::Null, |parent| self.parent(parent)),
            "customfield_10016" => issue.story_points.map_or(Value::Null, |p| json!(p)),
            "customfield_10020" => issue
                .sprint
                .map_or(Value::Null, |n| json!([self.sprint(issue, n)])),
            "comment" => json!({
                "comments": [],
                "self": format!("{}/issue/{}/comment", self.api, issue.id),
                "maxResults": 0,
                "total": 0,
                "startAt": 0,
            }),
            _ => Value::Null,
        }
    }

    /// The `parent` field: the parent's identity and a few of its fields.
    fn parent(&self, parent: &Issue) -> Value {
        json!({
            "id": parent.id.to_string(),
            "key": parent.key,
            "self": format!("{}/issue/{}", self.api, parent.id),
            "fields": {
                "summary": parent.summary,
                "status": self.status(parent),
                "priority": self.field(parent, None, "priority"),
                "issuetype": self.issue_type(parent),
            },
        })
    }

    /// One sprint of the Jira Software sprint field (two weeks each, counted back from the
    /// issue's creation).
    fn sprint(&self, issue: &Issue, number: u32) -> Value {
        let project = issue.project_id.parse::<u64>().unwrap_or(0);
        let id = project.saturating_sub(9_999) * 100 + u64::from(number);
        let start = issue.created - chrono::TimeDelta::days(14);
        let end = issue.created;
        let state = if issue.resolution_date.is_some() {
            "closed"
        } else {
            "active"
        };
        json!({
            "id": id,
            "name": format!("{} Sprint {number}", issue.project_key),
            "state": state,
            "boardId": project.saturating_sub(9_999),
            "goal": "",
            "startDate": start.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "endDate": end.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        })
    }

    fn status(&self, issue: &Issue) -> Value {
        let status = issue.status;
        let category = status.category;
        json!({
            "self": format!("{}/status/{}", self.api, status.id),
            "description": status.description,
            "iconUrl": format!("{}{}", self.site_url, status.icon),
            "name": status.name,
            "id": status.id,
            "statusCategory": {
                "self": format!("{}/statuscategory/{}", self.api, category.id),
                "id": category.id,
                "key": category.key,
                "colorName": category.color_name,
                "name": category.name,
            },
        })
    }

    fn issue_type(&self, issue: &Issue) -> Value {
        let kind = issue.issue_type;
        json!({
            "self": format!("{}/issuetype/{}", self.api, kind.id),
            "id": kind.id,
            "description": kind.description,
            "iconUrl": format!(
                "{}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{}?size=medium",
                self.site_url, kind.avatar_id
            ),
            "name": kind.name,
            "subtask": kind.subtask,
            "avatarId": kind.avatar_id,
            "hierarchyLevel": kind.hierarchy_level,
        })
    }

    fn project(&self, project: &Project) -> Value {
        let avatar = |size: &str| {
            format!(
                "{}/rest/api/3/universal_avatar/view/type/project/avatar/{}?size={size}",
                self.site_url, project.avatar_id
            )
        };
        json!({
            "self": format!("{}/project/{}", self.api, project.id),
            "id": project.id.to_string(),
            "key": project.key,
            "name": project.name,
            "projectTypeKey": project.project_type_key,
            "simplified": project.simplified,
            "avatarUrls": {
                "48x48": avatar("large"),
                "24x24": avatar("small"),
                "16x16": avatar("xsmall"),
                "32x32": avatar("medium"),
            },
        })
    }

    /// A `UserDetails` (no email: privacy settings usually hide it in issue fields).
    fn user(&self, account_id: Option<&str>) -> Value {
        let Some(account_id) = account_id else {
            return Value::Null;
        };
        let person = self.people.get(account_id);
        let name = person.map_or("Former user", |p| p.display_name.as_str());
        let initials: String = name
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .collect::<String>()
            .to_uppercase();
        let avatar = |size: u32| {
            format!(
                "https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/initials/{initials}-0.png?size={size}&s={size}"
            )
        };
        json!({
            "self": format!("{}/user?accountId={}", self.api, encode_query_value(account_id)),
            "accountId": account_id,
            "accountType": "atlassian",
            "displayName": name,
            "active": person.is_some(),
            "timeZone": person.map_or("UTC", |p| p.time_zone.as_str()),
            "avatarUrls": {
                "48x48": avatar(48),
                "24x24": avatar(24),
                "16x16": avatar(16),
                "32x32": avatar(32),
            },
        })
    }
}

/// Plain text as an Atlassian Document Format document (v3 descriptions).
fn adf(text: &str) -> Value {
    json!({
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selection_follows_jiras_rules() {
        let parse = |items: &[&str], default| {
            FieldSelection::parse(
                &items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                default,
            )
        };
        assert_eq!(parse(&[], "id"), FieldSelection::IdOnly);
        assert_eq!(parse(&["key"], "id"), FieldSelection::IdOnly);
        assert_eq!(parse(&["id,key"], "id"), FieldSelection::IdOnly);
        assert_eq!(
            parse(&["updated,summary", "nope"], "id"),
            FieldSelection::Fields(vec!["summary", "updated"])
        );
        let all = parse(&["*all", "-description"], "id");
        let FieldSelection::Fields(fields) = &all else {
            panic!("fields expected");
        };
        assert!(fields.contains(&"status") && !fields.contains(&"description"));
        assert!(fields.contains(&"comment") && fields.contains(&"customfield_10020"));
        let FieldSelection::Fields(navigable) = parse(&["*navigable", "-labels"], "id") else {
            panic!("fields expected");
        };
        assert!(!navigable.contains(&"comment") && !navigable.contains(&"labels"));
        assert!(navigable.contains(&"parent") && navigable.contains(&"customfield_10016"));
        assert_eq!(
            parse(&["customfield_10016", "*navigable"], "id"),
            parse(&["*navigable"], "id")
        );
        assert_eq!(parse(&[], "*all").page_cap(), 100);
        assert_eq!(parse(&["id"], "*all").page_cap(), 5000);
    }

    #[test]
    fn timestamps_use_the_callers_zone_and_jiras_offset_form() {
        let at = DateTime::parse_from_rfc3339("2026-02-28T22:15:07.311Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(
            jira_timestamp(at, chrono_tz::Australia::Sydney),
            "2026-03-01T09:15:07.311+1100"
        );
        assert_eq!(
            jira_timestamp(at, chrono_tz::UTC),
            "2026-02-28T22:15:07.311+0000"
        );
        assert_eq!(
            jira_timestamp(at, chrono_tz::America::Los_Angeles),
            "2026-02-28T14:15:07.311-0800"
        );
    }
}
