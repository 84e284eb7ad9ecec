//! The product data of every site (Jira issues, Confluence spaces, JSM Operations alerts) and the
//! people they mention,
//! behind one mutex of its own in the server (never held together with the OAuth state lock).
//!
//! Sites themselves live in the OAuth state; callers check a cloud id there first, then come
//! here. A site's data is created on first use.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Product;
use super::generator;
use super::issues::{self, IssueChange, IssueContent, IssueSnapshot, JiraSite};
use super::jsm_alerts::JsmSite;
use super::spaces::{ConfluenceSite, SpaceChange, SpaceSnapshot};

/// Most issues one `create_issues` call generates.
const MAX_GENERATED_ISSUES: usize = 1_000_000;
/// Most spaces one `create_spaces` call generates.
const MAX_GENERATED_SPACES: usize = 10_000;

/// Why a data operation (handle or control API) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// No site has this cloud id.
    #[error("unknown site {0}")]
    UnknownSite(String),
    /// The site exists but does not run the product.
    #[error("site {cloud_id} does not run {product:?}")]
    ProductNotRunning {
        /// The site.
        cloud_id: String,
        /// The product it lacks.
        product: Product,
    },
    /// No live issue has this id or key.
    #[error("unknown issue {0}")]
    UnknownIssue(String),
    /// No project has this key.
    #[error("unknown project {0}")]
    UnknownProject(String),
    /// No live space has this id or key.
    #[error("unknown space {0}")]
    UnknownSpace(String),
    /// No Atlassian account has this id.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// A value the model cannot take.
    #[error("invalid {field}: {value:?}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The refused value.
        value: String,
    },
    /// A space key already in use on the site.
    #[error("space key {0} is already taken")]
    DuplicateKey(String),
}

/// An Atlassian account as Jira and Confluence render it (copied from the OAuth directory when
/// first referenced; accounts never change afterwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    pub(crate) account_id: String,
    pub(crate) display_name: String,
    pub(crate) email: String,
    /// IANA zone (the user's Jira zone).
    pub(crate) time_zone: String,
}

/// All product data.
#[derive(Debug, Default)]
pub(crate) struct Products {
    jira: HashMap<String, JiraSite>,
    confluence: HashMap<String, ConfluenceSite>,
    /// JSM Operations alerts (on Jira sites).
    jsm: HashMap<String, JsmSite>,
    people: HashMap<String, Person>,
}

impl Products {
    /// The Jira data of `cloud_id` (created empty on first use; check the site first).
    pub(crate) fn jira(&mut self, cloud_id: &str) -> &mut JiraSite {
        self.jira.entry(cloud_id.to_owned()).or_default()
    }

    /// The Jira data of `cloud_id` and the people directory, for rendering.
    pub(crate) fn jira_with_people(
        &mut self,
        cloud_id: &str,
    ) -> (&JiraSite, &HashMap<String, Person>) {
        let site = self.jira.entry(cloud_id.to_owned()).or_default();
        (site, &self.people)
    }

    /// The Confluence data of `cloud_id` (created empty on first use; check the site first).
    pub(crate) fn confluence(&mut self, cloud_id: &str) -> &mut ConfluenceSite {
        self.confluence.entry(cloud_id.to_owned()).or_default()
    }

    /// The JSM Operations alerts of `cloud_id` (created empty on first use; check the site
    /// first).
    pub(crate) fn jsm(&mut self, cloud_id: &str) -> &mut JsmSite {
        self.jsm.entry(cloud_id.to_owned()).or_default()
    }

    /// Remembers people so issues and spaces can render them.
    pub(crate) fn remember(&mut self, people: impl IntoIterator<Item = Person>) {
        for person in people {
            self.people.insert(person.account_id.clone(), person);
        }
    }

    /// Generates `count` issues in `project_key`, assigned among `people`; returns their ids.
    /// With `updated_at`, every issue is created before that instant and last updated exactly
    /// at it (old issues, for a project that becomes visible later).
    pub(crate) fn generate_issues(
        &mut self,
        cloud_id: &str,
        project_key: &str,
        count: usize,
        people: Vec<Person>,
        now: DateTime<Utc>,
        updated_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, DataError> {
        if count > MAX_GENERATED_ISSUES {
            return Err(DataError::InvalidValue {
                field: "count",
                value: count.to_string(),
            });
        }
        let accounts: Vec<String> = people.iter().map(|p| p.account_id.clone()).collect();
        self.remember(people);
        let site = self.jira(cloud_id);
        site.ensure_project(project_key)?;
        let seed = generator::seed(cloud_id, site.len());
        let mut contents =
            generator::issue_contents(seed, count, updated_at.unwrap_or(now), &accounts);
        if let Some(at) = updated_at {
            for content in &mut contents {
                content.updated = at;
                content.created = content.created.min(at);
                if content.resolution_date.is_some() {
                    content.resolution_date = Some(at);
                }
            }
        }
        let mut ids = Vec::with_capacity(count);
        // Parents: a subtask belongs to the latest standard issue of the batch, every other
        // standard issue to the latest epic.
        let mut epic: Option<u64> = None;
        let mut standard: Option<u64> = None;
        for content in contents {
            let level = content.issue_type.hierarchy_level;
            let id = site.create(project_key, content)?;
            let parent = match level {
                1 => {
                    epic = Some(id);
                    None
                }
                0 => {
                    standard = Some(id);
                    epic.filter(|_| id % 2 == 0)
                }
                _ => standard,
            };
            site.set_parent(id, parent);
            ids.push(id.to_string());
        }
        Ok(ids)
    }

    /// Applies an [`IssueChange`]; `people` are the accounts it names, already checked.
    pub(crate) fn upsert_issue(
        &mut self,
        cloud_id: &str,
        change: &IssueChange,
        people: Vec<Person>,
    ) -> Result<IssueSnapshot, DataError> {
        self.remember(people);
        let site = self.jira(cloud_id);
        let existing = match &change.issue {
            Some(id_or_key) => Some(
                site.issue(id_or_key)
                    .ok_or_else(|| DataError::UnknownIssue(id_or_key.clone()))?,
            ),
            None => None,
        };
        if let (Some(issue), Some(project)) = (existing, &change.project_key)
            && !issue.project_key.eq_ignore_ascii_case(project)
        {
            return Err(DataError::InvalidValue {
                field: "project_key",
                value: project.clone(),
            });
        }
        let content = merge_issue(existing, change)?;
        let id = match existing.map(|i| i.id) {
            Some(id) => site.replace(id, content)?.id,
            None => {
                let project = change
                    .project_key
                    .as_deref()
                    .ok_or(DataError::InvalidValue {
                        field: "project_key",
                        value: String::new(),
                    })?;
                site.create(project, content)?
            }
        };
        site.issue(&id.to_string())
            .map(IssueSnapshot::from)
            .ok_or_else(|| DataError::UnknownIssue(id.to_string()))
    }

    /// Generates `count` spaces (some personal, for `people`); returns their ids.
    pub(crate) fn generate_spaces(
        &mut self,
        cloud_id: &str,
        count: usize,
        people: Vec<Person>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, DataError> {
        if count > MAX_GENERATED_SPACES {
            return Err(DataError::InvalidValue {
                field: "count",
                value: count.to_string(),
            });
        }
        let site = self.confluence(cloud_id);
        let seed = generator::seed(cloud_id, site.len());
        let changes = generator::space_changes(seed, count, now, &people, |key| site.has_key(key));
        let mut ids = Vec::with_capacity(changes.len());
        for change in changes {
            ids.push(site.upsert(&change, now)?.id);
        }
        self.remember(people);
        Ok(ids)
    }

    /// Applies a [`SpaceChange`].
    pub(crate) fn upsert_space(
        &mut self,
        cloud_id: &str,
        change: &SpaceChange,
        now: DateTime<Utc>,
    ) -> Result<SpaceSnapshot, DataError> {
        self.confluence(cloud_id).upsert(change, now)
    }
}

/// The content of an issue after `change`, on top of `existing` (or the defaults).
fn merge_issue(
    existing: Option<&issues::Issue>,
    change: &IssueChange,
) -> Result<IssueContent, DataError> {
    fn lookup<T>(
        value: &Option<String>,
        field: &'static str,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, DataError> {
        value
            .as_deref()
            .map(|v| {
                find(v).ok_or_else(|| DataError::InvalidValue {
                    field,
                    value: v.to_owned(),
                })
            })
            .transpose()
    }
    let status = lookup(&change.status, "status", issues::status)?;
    let issue_type = lookup(&change.issue_type, "issue_type", issues::issue_type)?;
    let priority = lookup(&change.priority, "priority", issues::priority)?;
    let mut content = match existing {
        Some(issue) => IssueContent {
            summary: issue.summary.clone(),
            description: issue.description.clone(),
            status: issue.status,
            issue_type: issue.issue_type,
            priority: issue.priority,
            assignee: issue.assignee.clone(),
            reporter: issue.reporter.clone(),
            labels: issue.labels.clone(),
            created: issue.created,
            updated: issue.updated,
            resolution_date: issue.resolution_date,
            parent: issue.parent,
            story_points: issue.story_points,
            sprint: issue.sprint,
        },
        None => IssueContent {
            summary: "New issue".to_owned(),
            description: None,
            status: &issues::STATUSES[0],
            issue_type: &issues::ISSUE_TYPES[2],
            priority: issues::priority("Medium"),
            assignee: None,
            reporter: None,
            labels: Vec::new(),
            created: change.created.unwrap_or(change.updated),
            updated: change.updated,
            resolution_date: None,
            parent: None,
            story_points: None,
            sprint: None,
        },
    };
    if let Some(summary) = &change.summary {
        if summary.trim().is_empty() {
            return Err(DataError::InvalidValue {
                field: "summary",
                value: summary.clone(),
            });
        }
        content.summary = summary.clone();
    }
    if let Some(description) = &change.description {
        content.description = description.clone();
    }
    let was_done = content.status.category.key == "done";
    content.status = status.unwrap_or(content.status);
    content.issue_type = issue_type.unwrap_or(content.issue_type);
    if priority.is_some() {
        content.priority = priority;
    }
    if let Some(assignee) = &change.assignee {
        content.assignee = assignee.clone();
    }
    if let Some(reporter) = &change.reporter {
        content.reporter = reporter.clone();
    }
    if let Some(labels) = &change.labels {
        if let Some(bad) = labels
            .iter()
            .find(|l| l.is_empty() || l.chars().any(char::is_whitespace))
        {
            return Err(DataError::InvalidValue {
                field: "labels",
                value: bad.clone(),
            });
        }
        content.labels = labels.clone();
    }
    if let Some(created) = change.created {
        content.created = created;
    }
    content.updated = change.updated;
    // Jira sets the resolution when an issue enters a Done status and clears it on leaving.
    match (
        was_done && existing.is_some(),
        content.status.category.key == "done",
    ) {
        (false, true) => content.resolution_date = Some(change.updated),
        (_, false) => content.resolution_date = None,
        (true, true) => {}
    }
    Ok(content)
}
