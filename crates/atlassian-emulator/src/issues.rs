//! One site's Jira data: projects, issues, the deleted-issues set, and the ordered indexes that
//! make a search page cost O(page size · log n).
//!
//! Issues live in a `BTreeMap` by numeric id; `by_updated`, `by_created` and `key_order` are
//! secondary indexes kept in step by every write. A search walks the index of its first
//! `ORDER BY` term, starting at the page cursor and inside the time bounds of the query's
//! top-level conjunction, so an incremental `updated >= X ORDER BY updated` touches only what it
//! returns (plus one look-ahead match to decide `isLast`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::jql::{Attribute, Catalog, Compiled, Filter, SortField, SortTerm, Subject, TimeField};
use super::products::DataError;

/// First issue and project id of a site (Jira Cloud's numbering starts there too).
const FIRST_ID: u64 = 10000;

/// A status category (`statusCategory` in the issue JSON).
#[derive(Debug)]
pub(crate) struct StatusCategory {
    pub(crate) id: u32,
    pub(crate) key: &'static str,
    pub(crate) color_name: &'static str,
    pub(crate) name: &'static str,
}

/// A workflow status.
#[derive(Debug)]
pub(crate) struct StatusDef {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    /// Icon path on the site host.
    pub(crate) icon: &'static str,
    pub(crate) category: &'static StatusCategory,
}

/// An issue type.
#[derive(Debug)]
pub(crate) struct IssueTypeDef {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) subtask: bool,
    pub(crate) hierarchy_level: i32,
    pub(crate) avatar_id: u64,
}

/// A priority.
#[derive(Debug)]
pub(crate) struct PriorityDef {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    /// Icon file name under `/images/icons/priorities/`.
    pub(crate) icon: &'static str,
}

const TO_DO: StatusCategory = StatusCategory {
    id: 2,
    key: "new",
    color_name: "blue-gray",
    name: "To Do",
};
const IN_PROGRESS: StatusCategory = StatusCategory {
    id: 4,
    key: "indeterminate",
    color_name: "yellow",
    name: "In Progress",
};
const DONE: StatusCategory = StatusCategory {
    id: 3,
    key: "done",
    color_name: "green",
    name: "Done",
};

/// The site's workflow statuses.
pub(crate) static STATUSES: [StatusDef; 4] = [
    StatusDef {
        id: "10000",
        name: "To Do",
        description: "",
        icon: "/",
        category: &TO_DO,
    },
    StatusDef {
        id: "3",
        name: "In Progress",
        description: "This work item is being actively worked on at the moment by the assignee.",
        icon: "/images/icons/statuses/inprogress.png",
        category: &IN_PROGRESS,
    },
    StatusDef {
        id: "10001",
        name: "In Review",
        description: "",
        icon: "/",
        category: &IN_PROGRESS,
    },
    StatusDef {
        id: "10002",
        name: "Done",
        description: "",
        icon: "/",
        category: &DONE,
    },
];

/// The site's issue types.
pub(crate) static ISSUE_TYPES: [IssueTypeDef; 5] = [
    IssueTypeDef {
        id: "10000",
        name: "Epic",
        description: "Epics track collections of related bugs, stories, and tasks.",
        subtask: false,
        hierarchy_level: 1,
        avatar_id: 10307,
    },
    IssueTypeDef {
        id: "10001",
        name: "Story",
        description: "Stories track functionality or features expressed as user goals.",
        subtask: false,
        hierarchy_level: 0,
        avatar_id: 10315,
    },
    IssueTypeDef {
        id: "10002",
        name: "Task",
        description: "Tasks track small, distinct pieces of work.",
        subtask: false,
        hierarchy_level: 0,
        avatar_id: 10318,
    },
    IssueTypeDef {
        id: "10003",
        name: "Bug",
        description: "Bugs track problems or errors.",
        subtask: false,
        hierarchy_level: 0,
        avatar_id: 10303,
    },
    IssueTypeDef {
        id: "10004",
        name: "Subtask",
        description: "Subtasks track small pieces of work that are part of a larger task.",
        subtask: true,
        hierarchy_level: -1,
        avatar_id: 10316,
    },
];

/// The site's priorities.
pub(crate) static PRIORITIES: [PriorityDef; 5] = [
    PriorityDef {
        id: "1",
        name: "Highest",
        icon: "highest.svg",
    },
    PriorityDef {
        id: "2",
        name: "High",
        icon: "high.svg",
    },
    PriorityDef {
        id: "3",
        name: "Medium",
        icon: "medium.svg",
    },
    PriorityDef {
        id: "4",
        name: "Low",
        icon: "low.svg",
    },
    PriorityDef {
        id: "5",
        name: "Lowest",
        icon: "lowest.svg",
    },
];

fn find_def<'a, T>(
    defs: &'a [T],
    value: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    let value = value.trim();
    defs.iter()
        .find(|d| id(d) == value || name(d).eq_ignore_ascii_case(value))
}

/// A status by id or (case-insensitive) name.
pub(crate) fn status(value: &str) -> Option<&'static StatusDef> {
    find_def(&STATUSES, value, |d| d.id, |d| d.name)
}

/// An issue type by id or name.
pub(crate) fn issue_type(value: &str) -> Option<&'static IssueTypeDef> {
    find_def(&ISSUE_TYPES, value, |d| d.id, |d| d.name)
}

/// A priority by id or name.
pub(crate) fn priority(value: &str) -> Option<&'static PriorityDef> {
    find_def(&PRIORITIES, value, |d| d.id, |d| d.name)
}

/// A Jira project.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) id: u64,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) project_type_key: &'static str,
    pub(crate) simplified: bool,
    pub(crate) avatar_id: u64,
    next_number: u64,
    /// Accounts that cannot browse the project (its issues are omitted for them).
    pub(crate) hidden_from: BTreeSet<String>,
}

/// A Jira issue. Timestamps are kept at millisecond precision, as Jira renders them.
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub(crate) id: u64,
    /// Decimal project id (what JQL resolves `project` values to).
    pub(crate) project_id: String,
    pub(crate) project_key: String,
    pub(crate) number: u64,
    /// `PROJECT-N`, upper case.
    pub(crate) key: String,
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) status: &'static StatusDef,
    pub(crate) issue_type: &'static IssueTypeDef,
    pub(crate) priority: Option<&'static PriorityDef>,
    pub(crate) assignee: Option<String>,
    pub(crate) reporter: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    /// When the issue was resolved (set while its status is in the Done category).
    pub(crate) resolution_date: Option<DateTime<Utc>>,
    /// Id of the parent issue (an epic, or the parent of a subtask).
    pub(crate) parent: Option<u64>,
    /// `customfield_10016` "Story point estimate".
    pub(crate) story_points: Option<u32>,
    /// `customfield_10020` "Sprint": the sprint number within the project.
    pub(crate) sprint: Option<u32>,
}

impl Subject for Issue {
    fn id(&self) -> u64 {
        self.id
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn attribute(&self, attribute: Attribute) -> Option<&str> {
        match attribute {
            Attribute::Project => Some(&self.project_id),
            Attribute::IssueType => Some(self.issue_type.id),
            Attribute::Status => Some(self.status.id),
            Attribute::Priority => self.priority.map(|p| p.id),
            Attribute::Assignee => self.assignee.as_deref(),
            Attribute::Reporter => self.reporter.as_deref(),
        }
    }

    fn created_ms(&self) -> i64 {
        self.created.timestamp_millis()
    }

    fn updated_ms(&self) -> i64 {
        self.updated.timestamp_millis()
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn summary(&self) -> &str {
        &self.summary
    }
}

/// Everything about an issue but its identity, fully resolved.
#[derive(Debug, Clone)]
pub(crate) struct IssueContent {
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) status: &'static StatusDef,
    pub(crate) issue_type: &'static IssueTypeDef,
    pub(crate) priority: Option<&'static PriorityDef>,
    pub(crate) assignee: Option<String>,
    pub(crate) reporter: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    pub(crate) resolution_date: Option<DateTime<Utc>>,
    pub(crate) parent: Option<u64>,
    pub(crate) story_points: Option<u32>,
    pub(crate) sprint: Option<u32>,
}

/// A change to apply with [`EmulatorHandle::upsert_issue`](super::EmulatorHandle::upsert_issue):
/// `issue: None` creates an issue in `project_key`; otherwise the named issue (id or key) is
/// changed. Unset fields keep their value (or get a default on creation). `updated` is always
/// explicit, so tests control exactly what an incremental sync must see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueChange {
    /// Id or key of the issue to change; `None` creates one.
    #[serde(default)]
    pub issue: Option<String>,
    /// Project of a new issue (created on first use). Must match on updates if given (the
    /// emulator does not move issues).
    #[serde(default)]
    pub project_key: Option<String>,
    /// New summary (any text, including control characters such as U+0000).
    #[serde(default)]
    pub summary: Option<String>,
    /// `Some(None)` clears the description; `Some(Some(text))` sets it (served as ADF).
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Status name or id (`To Do`, `In Progress`, `In Review`, `Done`).
    #[serde(default)]
    pub status: Option<String>,
    /// Issue type name or id (`Epic`, `Story`, `Task`, `Bug`, `Subtask`).
    #[serde(default)]
    pub issue_type: Option<String>,
    /// Priority name or id (`Highest` … `Lowest`).
    #[serde(default)]
    pub priority: Option<String>,
    /// `Some(None)` unassigns; `Some(Some(account_id))` assigns a known account.
    #[serde(default, deserialize_with = "double_option")]
    pub assignee: Option<Option<String>>,
    /// Like `assignee`.
    #[serde(default, deserialize_with = "double_option")]
    pub reporter: Option<Option<String>>,
    /// Replaces the labels.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Creation instant of a new issue (default: `updated`).
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    /// The issue's new `updated` instant (required).
    pub updated: DateTime<Utc>,
}

/// `null` → `Some(None)`, absent → `None` (via `default`), value → `Some(Some(v))`.
fn double_option<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

/// The truth about one issue, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueSnapshot {
    /// Numeric id as a string (`"10000"`).
    pub id: String,
    /// `PROJECT-N`.
    pub key: String,
    /// Project key.
    pub project_key: String,
    /// Summary.
    pub summary: String,
    /// Description as plain text, if any.
    #[serde(default)]
    pub description: Option<String>,
    /// Status name.
    pub status: String,
    /// Issue type name.
    pub issue_type: String,
    /// Priority name, if any.
    pub priority: Option<String>,
    /// Assignee account id.
    pub assignee_account_id: Option<String>,
    /// Reporter account id.
    pub reporter_account_id: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Creation instant.
    pub created: DateTime<Utc>,
    /// Last update instant.
    pub updated: DateTime<Utc>,
}

impl From<&Issue> for IssueSnapshot {
    fn from(issue: &Issue) -> Self {
        Self {
            id: issue.id.to_string(),
            key: issue.key.clone(),
            project_key: issue.project_key.clone(),
            summary: issue.summary.clone(),
            description: issue.description.clone(),
            status: issue.status.name.to_owned(),
            issue_type: issue.issue_type.name.to_owned(),
            priority: issue.priority.map(|p| p.name.to_owned()),
            assignee_account_id: issue.assignee.clone(),
            reporter_account_id: issue.reporter.clone(),
            labels: issue.labels.clone(),
            created: issue.created,
            updated: issue.updated,
        }
    }
}

/// One value of an issue's sort tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SortValue {
    /// Epoch milliseconds.
    Time(i64),
    /// (project key, number).
    Key(String, u64),
    Id(u64),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            SortValue::Time(_) => 0,
            SortValue::Key(..) => 1,
            SortValue::Id(_) => 2,
        }
    }

    fn cmp_same_kind(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (SortValue::Time(a), SortValue::Time(b)) => a.cmp(b),
            (SortValue::Id(a), SortValue::Id(b)) => a.cmp(b),
            (SortValue::Key(pa, na), SortValue::Key(pb, nb)) => pa.cmp(pb).then(na.cmp(nb)),
            // Mixed kinds only come from a forged cursor; any fixed order will do.
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Compares two sort tuples under `order` (per-term direction).
pub(crate) fn compare_tuples(a: &[SortValue], b: &[SortValue], order: &[SortTerm]) -> Ordering {
    for ((x, y), term) in a.iter().zip(b).zip(order) {
        let ordering = x.cmp_same_kind(y);
        let ordering = if term.descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.len().cmp(&b.len())
}

fn sort_value(issue: &Issue, field: SortField) -> SortValue {
    match field {
        SortField::Updated => SortValue::Time(issue.updated.timestamp_millis()),
        SortField::Created => SortValue::Time(issue.created.timestamp_millis()),
        SortField::Key => SortValue::Key(issue.project_key.clone(), issue.number),
        SortField::Id => SortValue::Id(issue.id),
    }
}

fn sort_tuple(issue: &Issue, order: &[SortTerm]) -> Vec<SortValue> {
    order.iter().map(|t| sort_value(issue, t.field)).collect()
}

/// One page of a search.
#[derive(Debug)]
pub(crate) struct SearchPage<'a> {
    pub(crate) issues: Vec<&'a Issue>,
    /// Sort tuple of the last issue on the page (the next page starts after it).
    pub(crate) last: Option<Vec<SortValue>>,
    /// Whether at least one more matching issue follows.
    pub(crate) more: bool,
}

/// Truncates an instant to milliseconds.
pub(crate) fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// One site's Jira.
#[derive(Debug)]
pub(crate) struct JiraSite {
    projects: BTreeMap<u64, Project>,
    issues: BTreeMap<u64, Issue>,
    /// Upper-case key → id.
    by_key: HashMap<String, u64>,
    /// (project key, number) → id.
    key_order: BTreeMap<(String, u64), u64>,
    by_updated: BTreeSet<(i64, u64)>,
    by_created: BTreeSet<(i64, u64)>,
    /// Deleted issues: id → last key.
    deleted: BTreeMap<u64, String>,
    /// Keys issues had before a move (upper case) → id: old keys still resolve.
    moved: HashMap<String, u64>,
    next_issue_id: u64,
    next_project_id: u64,
}

impl Default for JiraSite {
    fn default() -> Self {
        Self {
            projects: BTreeMap::new(),
            issues: BTreeMap::new(),
            by_key: HashMap::new(),
            key_order: BTreeMap::new(),
            by_updated: BTreeSet::new(),
            by_created: BTreeSet::new(),
            deleted: BTreeMap::new(),
            moved: HashMap::new(),
            next_issue_id: FIRST_ID,
            next_project_id: FIRST_ID,
        }
    }
}

/// A readable name for a project key.
fn project_name(key: &str) -> String {
    let known = match key {
        "ENG" => "Engineering",
        "OPS" => "Operations",
        "WEB" => "Website",
        "MOB" => "Mobile",
        "SUP" => "Support",
        "DATA" => "Data Platform",
        "SEC" => "Security",
        "HR" => "People Team",
        "FIN" => "Finance",
        "MKT" => "Marketing",
        _ => "",
    };
    if known.is_empty() {
        format!("Project {key}")
    } else {
        known.to_owned()
    }
}

/// A valid project key: a letter, then up to 9 letters, digits or `_`.
pub(crate) fn valid_project_key(key: &str) -> bool {
    key.len() <= 10
        && key.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl JiraSite {
    /// The project `key` (upper case), creating it when missing.
    pub(crate) fn ensure_project(&mut self, key: &str) -> Result<&Project, DataError> {
        let key = key.trim().to_ascii_uppercase();
        if !valid_project_key(&key) {
            return Err(DataError::InvalidValue {
                field: "project_key",
                value: key,
            });
        }
        let existing = self.projects.values().find(|p| p.key == key).map(|p| p.id);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_project_id;
                self.next_project_id += 1;
                let index = usize::try_from(id - FIRST_ID).unwrap_or(0);
                self.projects.insert(
                    id,
                    Project {
                        id,
                        name: project_name(&key),
                        key,
                        project_type_key: ["software", "business", "service_desk"][index % 3],
                        simplified: index % 2 == 1,
                        avatar_id: 10400 + (id - FIRST_ID) % 25,
                        next_number: 1,
                        hidden_from: BTreeSet::new(),
                    },
                );
                id
            }
        };
        self.projects
            .get(&id)
            .ok_or_else(|| DataError::UnknownProject(id.to_string()))
    }

    /// A project by id.
    pub(crate) fn project(&self, id: &str) -> Option<&Project> {
        self.projects.get(&id.parse().ok()?)
    }

    /// An issue by id or (case-insensitive) key; `None` when unknown or deleted.
    pub(crate) fn issue(&self, id_or_key: &str) -> Option<&Issue> {
        let text = id_or_key.trim();
        let id = match text.parse::<u64>() {
            Ok(id) => id,
            Err(_) => {
                let key = text.to_ascii_uppercase();
                *self.by_key.get(&key).or_else(|| self.moved.get(&key))?
            }
        };
        self.issues.get(&id)
    }

    /// Whether `account` can browse `issue` (`None`: no user restriction applies).
    pub(crate) fn visible(&self, issue: &Issue, account: Option<&str>) -> bool {
        let Some(account) = account else {
            return true;
        };
        self.project(&issue.project_id)
            .is_none_or(|p| !p.hidden_from.contains(account))
    }

    /// Hides project `key` (created when missing) from `account`, or shows it again.
    pub(crate) fn set_visibility(
        &mut self,
        key: &str,
        account: &str,
        visible: bool,
    ) -> Result<(), DataError> {
        let id = self.ensure_project(key)?.id;
        let project = self
            .projects
            .get_mut(&id)
            .ok_or_else(|| DataError::UnknownProject(key.to_owned()))?;
        if visible {
            project.hidden_from.remove(account);
        } else {
            project.hidden_from.insert(account.to_owned());
        }
        Ok(())
    }

    /// Moves issue `id_or_key` to project `project_key` (created when missing): it gets the
    /// next number there, so its key changes while its id stays; the old key keeps resolving.
    /// `updated` becomes `now`.
    pub(crate) fn move_issue(
        &mut self,
        id_or_key: &str,
        project_key: &str,
        now: DateTime<Utc>,
    ) -> Result<&Issue, DataError> {
        let id = self
            .issue(id_or_key)
            .map(|i| i.id)
            .ok_or_else(|| DataError::UnknownIssue(id_or_key.to_owned()))?;
        let target = self.ensure_project(project_key)?.id;
        let mut issue = self
            .issues
            .remove(&id)
            .ok_or_else(|| DataError::UnknownIssue(id.to_string()))?;
        if issue.project_id == target.to_string() {
            self.issues.insert(id, issue);
            return Err(DataError::InvalidValue {
                field: "project_key",
                value: project_key.to_owned(),
            });
        }
        self.unindex(&issue);
        let project = self
            .projects
            .get_mut(&target)
            .ok_or_else(|| DataError::UnknownProject(project_key.to_owned()))?;
        let number = project.next_number;
        project.next_number += 1;
        self.moved.insert(issue.key.clone(), id);
        issue.project_id = target.to_string();
        issue.project_key = project.key.clone();
        issue.number = number;
        issue.key = format!("{}-{number}", project.key);
        issue.updated = to_millis(now);
        self.moved.remove(&issue.key);
        self.index(&issue);
        Ok(self.issues.entry(id).or_insert(issue))
    }

    /// Number of live issues.
    pub(crate) fn len(&self) -> usize {
        self.issues.len()
    }

    /// Creates an issue in `project_key` (created on first use); returns its id.
    pub(crate) fn create(
        &mut self,
        project_key: &str,
        content: IssueContent,
    ) -> Result<u64, DataError> {
        let project_id = self.ensure_project(project_key)?.id;
        let project = self
            .projects
            .get_mut(&project_id)
            .ok_or_else(|| DataError::UnknownProject(project_key.to_owned()))?;
        let number = project.next_number;
        project.next_number += 1;
        let project_key = project.key.clone();
        let id = self.next_issue_id;
        self.next_issue_id += 1;
        let issue = Issue {
            id,
            project_id: project_id.to_string(),
            key: format!("{project_key}-{number}"),
            project_key,
            number,
            summary: content.summary,
            description: content.description,
            status: content.status,
            issue_type: content.issue_type,
            priority: content.priority,
            assignee: content.assignee,
            reporter: content.reporter,
            labels: content.labels,
            created: to_millis(content.created),
            updated: to_millis(content.updated),
            resolution_date: content.resolution_date.map(to_millis),
            parent: content.parent,
            story_points: content.story_points,
            sprint: content.sprint,
        };
        self.index(&issue);
        self.issues.insert(id, issue);
        Ok(id)
    }

    /// Replaces the content of issue `id`, keeping the indexes in step.
    pub(crate) fn replace(&mut self, id: u64, content: IssueContent) -> Result<&Issue, DataError> {
        let mut issue = self
            .issues
            .remove(&id)
            .ok_or_else(|| DataError::UnknownIssue(id.to_string()))?;
        self.unindex(&issue);
        issue.summary = content.summary;
        issue.description = content.description;
        issue.status = content.status;
        issue.issue_type = content.issue_type;
        issue.priority = content.priority;
        issue.assignee = content.assignee;
        issue.reporter = content.reporter;
        issue.labels = content.labels;
        issue.created = to_millis(content.created);
        issue.updated = to_millis(content.updated);
        issue.resolution_date = content.resolution_date.map(to_millis);
        issue.parent = content.parent;
        issue.story_points = content.story_points;
        issue.sprint = content.sprint;
        self.index(&issue);
        Ok(self.issues.entry(id).or_insert(issue))
    }

    fn index(&mut self, issue: &Issue) {
        self.by_key.insert(issue.key.clone(), issue.id);
        self.key_order
            .insert((issue.project_key.clone(), issue.number), issue.id);
        self.by_updated
            .insert((issue.updated.timestamp_millis(), issue.id));
        self.by_created
            .insert((issue.created.timestamp_millis(), issue.id));
    }

    fn unindex(&mut self, issue: &Issue) {
        self.by_key.remove(&issue.key);
        self.key_order
            .remove(&(issue.project_key.clone(), issue.number));
        self.by_updated
            .remove(&(issue.updated.timestamp_millis(), issue.id));
        self.by_created
            .remove(&(issue.created.timestamp_millis(), issue.id));
    }

    /// Deletes an issue by id or key; returns whether it existed.
    pub(crate) fn delete(&mut self, id_or_key: &str) -> bool {
        let Some(id) = self.issue(id_or_key).map(|i| i.id) else {
            return false;
        };
        let Some(issue) = self.issues.remove(&id) else {
            return false;
        };
        self.unindex(&issue);
        self.deleted.insert(id, issue.key);
        true
    }

    /// Ids of deleted issues, ascending.
    pub(crate) fn deleted_ids(&self) -> Vec<String> {
        self.deleted.keys().map(u64::to_string).collect()
    }

    /// Every live issue, ascending by id.
    pub(crate) fn snapshots(&self) -> Vec<IssueSnapshot> {
        self.issues.values().map(IssueSnapshot::from).collect()
    }

    /// How many live issues `viewer` can see match `filter` (the approximate count is exact
    /// here).
    pub(crate) fn count(&self, filter: &Filter, viewer: Option<&str>) -> usize {
        self.issues
            .values()
            .filter(|i| filter.matches(*i) && self.visible(i, viewer))
            .count()
    }

    /// Sets the parent of issue `id` (no index depends on it).
    pub(crate) fn set_parent(&mut self, id: u64, parent: Option<u64>) {
        if let Some(issue) = self.issues.get_mut(&id) {
            issue.parent = parent;
        }
    }

    /// One page: up to `limit` matching issues `viewer` can see, strictly after `after` in
    /// `compiled.order`.
    pub(crate) fn search(
        &self,
        compiled: &Compiled,
        after: Option<&[SortValue]>,
        limit: usize,
        viewer: Option<&str>,
    ) -> SearchPage<'_> {
        let order = compiled.order.as_slice();
        let Some(primary) = order.first().copied() else {
            return SearchPage {
                issues: Vec::new(),
                last: None,
                more: false,
            };
        };
        let mut page: Vec<(Vec<SortValue>, &Issue)> = Vec::new();
        // Issues sharing the primary sort value, sorted by the full tuple before use.
        let mut group: Vec<(Vec<SortValue>, &Issue)> = Vec::new();
        let mut group_value: Option<SortValue> = None;
        let mut more = false;
        let from = after.and_then(<[SortValue]>::first);
        for issue in self.walk(primary, from, &compiled.filter) {
            if !compiled.filter.matches(issue) || !self.visible(issue, viewer) {
                continue;
            }
            let value = sort_value(issue, primary.field);
            if group_value.as_ref() != Some(&value) {
                if drain_group(&mut group, &mut page, after, order, limit) {
                    more = true;
                    break;
                }
                group_value = Some(value);
            }
            group.push((sort_tuple(issue, order), issue));
        }
        if !more {
            more = drain_group(&mut group, &mut page, after, order, limit);
        }
        let last = page.last().map(|(tuple, _)| tuple.clone());
        SearchPage {
            issues: page.into_iter().map(|(_, issue)| issue).collect(),
            last,
            more,
        }
    }

    /// Issues in the order of `primary`, from the cursor's primary value (inclusive) and
    /// inside the filter's time bounds for that field.
    fn walk<'a>(
        &'a self,
        primary: SortTerm,
        from: Option<&SortValue>,
        filter: &Filter,
    ) -> Box<dyn Iterator<Item = &'a Issue> + 'a> {
        let lookup = move |id: &u64| self.issues.get(id);
        match primary.field {
            SortField::Updated | SortField::Created => {
                let (index, field) = if primary.field == SortField::Updated {
                    (&self.by_updated, TimeField::Updated)
                } else {
                    (&self.by_created, TimeField::Created)
                };
                let (mut lower, mut upper) = filter.time_bounds(field);
                if let Some(SortValue::Time(at)) = from {
                    if primary.descending {
                        upper = Some(upper.map_or(*at, |u| u.min(*at)));
                    } else {
                        lower = Some(lower.map_or(*at, |l| l.max(*at)));
                    }
                }
                let lower = lower.unwrap_or(i64::MIN);
                let upper = upper.unwrap_or(i64::MAX);
                if lower > upper {
                    return Box::new(std::iter::empty());
                }
                let range = index.range((lower, 0)..=(upper, u64::MAX));
                if primary.descending {
                    Box::new(range.rev().filter_map(move |(_, id)| lookup(id)))
                } else {
                    Box::new(range.filter_map(move |(_, id)| lookup(id)))
                }
            }
            SortField::Id => {
                let start = match from {
                    Some(SortValue::Id(id)) => Some(*id),
                    _ => None,
                };
                match (primary.descending, start) {
                    (false, Some(id)) => Box::new(self.issues.range(id..).map(|(_, i)| i)),
                    (true, Some(id)) => Box::new(self.issues.range(..=id).rev().map(|(_, i)| i)),
                    (false, None) => Box::new(self.issues.values()),
                    (true, None) => Box::new(self.issues.values().rev()),
                }
            }
            SortField::Key => {
                let start = match from {
                    Some(SortValue::Key(project, number)) => Some((project.clone(), *number)),
                    _ => None,
                };
                match (primary.descending, start) {
                    (false, Some(k)) => Box::new(
                        self.key_order
                            .range(k..)
                            .filter_map(move |(_, id)| lookup(id)),
                    ),
                    (true, Some(k)) => Box::new(
                        self.key_order
                            .range(..=k)
                            .rev()
                            .filter_map(move |(_, id)| lookup(id)),
                    ),
                    (false, None) => Box::new(self.key_order.values().filter_map(lookup)),
                    (true, None) => Box::new(self.key_order.values().rev().filter_map(lookup)),
                }
            }
        }
    }
}

/// Moves a sorted group onto the page, skipping what is not after the cursor. Returns `true`
/// when the page is full and another match exists (so the page is not the last).
fn drain_group<'a>(
    group: &mut Vec<(Vec<SortValue>, &'a Issue)>,
    page: &mut Vec<(Vec<SortValue>, &'a Issue)>,
    after: Option<&[SortValue]>,
    order: &[SortTerm],
    limit: usize,
) -> bool {
    group.sort_by(|a, b| compare_tuples(&a.0, &b.0, order));
    for (tuple, issue) in group.drain(..) {
        if after.is_some_and(|a| compare_tuples(&tuple, a, order) != Ordering::Greater) {
            continue;
        }
        if page.len() >= limit {
            return true;
        }
        page.push((tuple, issue));
    }
    false
}

impl Catalog for JiraSite {
    fn project_id(&self, value: &str) -> Option<String> {
        let value = value.trim();
        self.projects
            .values()
            .find(|p| {
                p.key.eq_ignore_ascii_case(value)
                    || p.id.to_string() == value
                    || p.name.eq_ignore_ascii_case(value)
            })
            .map(|p| p.id.to_string())
    }

    fn status_id(&self, value: &str) -> Option<String> {
        status(value).map(|s| s.id.to_owned())
    }

    fn issue_type_id(&self, value: &str) -> Option<String> {
        issue_type(value).map(|t| t.id.to_owned())
    }

    fn priority_id(&self, value: &str) -> Option<String> {
        priority(value).map(|p| p.id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::jql::{Context, compile_bounded};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).expect("valid") + TimeDelta::minutes(minutes)
    }

    fn content(updated: DateTime<Utc>) -> IssueContent {
        IssueContent {
            summary: "Something".into(),
            description: None,
            status: &STATUSES[0],
            issue_type: &ISSUE_TYPES[2],
            priority: Some(&PRIORITIES[2]),
            assignee: None,
            reporter: None,
            labels: Vec::new(),
            created: at(0),
            updated,
            resolution_date: None,
            parent: None,
            story_points: None,
            sprint: None,
        }
    }

    fn site(n: i64) -> JiraSite {
        let mut site = JiraSite::default();
        for i in 0..n {
            let project = if i % 3 == 0 { "OPS" } else { "ENG" };
            // Several issues share an `updated` instant, to exercise tie groups.
            site.create(project, content(at(i / 4))).expect("created");
        }
        site
    }

    fn compile(site: &JiraSite, jql: &str) -> Compiled {
        let context = Context {
            now: at(10_000),
            zone: chrono_tz::UTC,
            account_id: "me".into(),
        };
        compile_bounded(jql, &context, site).expect("compiles")
    }

    /// Pages through `jql` with `limit`, checking against a full sort of the matches.
    fn check_paging(site: &JiraSite, jql: &str, limit: usize) {
        let compiled = compile(site, jql);
        let mut expected: Vec<&Issue> = site
            .issues
            .values()
            .filter(|i| compiled.filter.matches(*i))
            .collect();
        expected.sort_by(|a, b| {
            compare_tuples(
                &sort_tuple(a, &compiled.order),
                &sort_tuple(b, &compiled.order),
                &compiled.order,
            )
        });
        let expected: Vec<u64> = expected.iter().map(|i| i.id).collect();
        let mut seen = Vec::new();
        let mut after: Option<Vec<SortValue>> = None;
        loop {
            let page = site.search(&compiled, after.as_deref(), limit, None);
            assert!(page.issues.len() <= limit);
            seen.extend(page.issues.iter().map(|i| i.id));
            if !page.more {
                break;
            }
            assert_eq!(
                page.issues.len(),
                limit,
                "{jql}: only full pages have a successor"
            );
            after = page.last;
        }
        assert_eq!(seen, expected, "{jql} with limit {limit}");
    }

    #[test]
    fn paging_returns_every_match_once_in_order() {
        let site = site(57);
        for jql in [
            "project = ENG ORDER BY updated ASC, id ASC",
            "project in (ENG, OPS) ORDER BY updated DESC",
            "project = OPS ORDER BY key DESC",
            "project = ENG ORDER BY id",
            "project = ENG",
            "updated >= -100000d ORDER BY created ASC, key DESC",
            "project = ENG AND updated > \"2026-05-28 20:30\" ORDER BY updated ASC",
            "project = ENG AND updated <= \"2026-05-28 20:30\" ORDER BY updated DESC",
            "project = OPS OR id = 10002",
        ] {
            for limit in [1, 2, 5, 50, 100] {
                check_paging(&site, jql, limit);
            }
        }
    }

    #[test]
    fn exact_fit_last_page_reports_no_more() {
        let site = site(10);
        let compiled = compile(&site, "project in (ENG, OPS) ORDER BY id");
        let page = site.search(&compiled, None, 10, None);
        assert_eq!(page.issues.len(), 10);
        assert!(!page.more);
        let page = site.search(&compiled, None, 9, None);
        assert!(page.more);
    }

    #[test]
    fn updates_and_deletes_keep_the_indexes_in_step() {
        let mut site = site(8);
        let id = site.issue("ENG-1").expect("exists").id;
        site.replace(id, content(at(600))).expect("updated");
        let compiled = compile(&site, "updated >= \"2026-05-29 05:00\" ORDER BY updated");
        let page = site.search(&compiled, None, 10, None);
        assert_eq!(
            page.issues
                .iter()
                .map(|i| i.key.as_str())
                .collect::<Vec<_>>(),
            vec!["ENG-1"]
        );
        assert!(site.delete("eng-1"));
        assert!(site.issue(&id.to_string()).is_none());
        assert!(!site.delete("ENG-1"));
        assert_eq!(site.deleted_ids(), vec![id.to_string()]);
        assert!(site.search(&compiled, None, 10, None).issues.is_empty());
        assert_eq!(site.len(), 7);
    }

    #[test]
    fn ids_and_keys_are_numbered_per_site_and_project() {
        let site = site(4);
        let keys: Vec<_> = site
            .snapshots()
            .into_iter()
            .map(|s| (s.id, s.key))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("10000".into(), "OPS-1".into()),
                ("10001".into(), "ENG-1".into()),
                ("10002".into(), "ENG-2".into()),
                ("10003".into(), "OPS-2".into()),
            ]
        );
    }
}
