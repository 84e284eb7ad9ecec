//! One site's Confluence spaces and the filtered, sorted, keyset-paged
//! listing behind `GET /wiki/api/v2/spaces`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::issues::to_millis;
use super::products::DataError;

/// First space id, and the step between ids (real ids look like 98305, 131073, …).
const FIRST_SPACE_ID: u64 = 98305;
const SPACE_ID_STEP: u64 = 32768;

/// Account that owns spaces created without an author.
pub(crate) const SYSTEM_ACCOUNT: &str = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077";

/// A Confluence space type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceType {
    /// A site-wide space.
    Global,
    /// A team collaboration space.
    Collaboration,
    /// A knowledge base.
    KnowledgeBase,
    /// A user's personal space (key `~accountId`).
    Personal,
}

impl SpaceType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceType::Global => "global",
            SpaceType::Collaboration => "collaboration",
            SpaceType::KnowledgeBase => "knowledge_base",
            SpaceType::Personal => "personal",
        }
    }

    /// From the wire name.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            SpaceType::Global,
            SpaceType::Collaboration,
            SpaceType::KnowledgeBase,
            SpaceType::Personal,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }
}

/// A Confluence space status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceStatus {
    /// In use.
    Current,
    /// Archived.
    Archived,
}

impl SpaceStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceStatus::Current => "current",
            SpaceStatus::Archived => "archived",
        }
    }

    /// From the wire name.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        [SpaceStatus::Current, SpaceStatus::Archived]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A space.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub(crate) id: u64,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) space_type: SpaceType,
    pub(crate) status: SpaceStatus,
    pub(crate) author_id: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) homepage_id: u64,
    pub(crate) description: Option<String>,
}

/// A change to apply with [`EmulatorHandle::upsert_space`](super::EmulatorHandle::upsert_space):
/// `space: None` creates a space with `key`; otherwise the named space (id or key) changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceChange {
    /// Id or key of the space to change; `None` creates one.
    #[serde(default)]
    pub space: Option<String>,
    /// Key of a new space (letters and digits, or `~accountId` for a personal space). Keys
    /// never change: on updates it must match if given.
    #[serde(default)]
    pub key: Option<String>,
    /// Name (default: the key).
    #[serde(default)]
    pub name: Option<String>,
    /// Type (default `global`, or `personal` for a `~` key).
    #[serde(default)]
    pub space_type: Option<SpaceType>,
    /// Status (default `current`).
    #[serde(default)]
    pub status: Option<SpaceStatus>,
    /// `Some(None)` clears the description.
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Creator's account id (default: a system account).
    #[serde(default)]
    pub author_account_id: Option<String>,
    /// Creation instant of a new space (default: the emulator's now).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

fn double_option<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

/// The truth about one space, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSnapshot {
    /// Numeric id as a string.
    pub id: String,
    /// Space key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Type.
    pub space_type: SpaceType,
    /// Status.
    pub status: SpaceStatus,
    /// Creator's account id.
    pub author_id: String,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Home page id.
    pub homepage_id: String,
    /// Plain-text description.
    pub description: Option<String>,
}

impl From<&Space> for SpaceSnapshot {
    fn from(space: &Space) -> Self {
        Self {
            id: space.id.to_string(),
            key: space.key.clone(),
            name: space.name.clone(),
            space_type: space.space_type,
            status: space.status,
            author_id: space.author_id.clone(),
            created_at: space.created_at,
            homepage_id: space.homepage_id.to_string(),
            description: space.description.clone(),
        }
    }
}

/// `sort` of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum SpaceSort {
    #[default]
    Id,
    IdDesc,
    Key,
    KeyDesc,
    Name,
    NameDesc,
}

impl SpaceSort {
    /// From the `sort` parameter.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "id" => SpaceSort::Id,
            "-id" => SpaceSort::IdDesc,
            "key" => SpaceSort::Key,
            "-key" => SpaceSort::KeyDesc,
            "name" => SpaceSort::Name,
            "-name" => SpaceSort::NameDesc,
            _ => return None,
        })
    }

    fn compare(self, a: &SpacePosition, b: &SpacePosition) -> Ordering {
        let ascending = match self {
            SpaceSort::Id | SpaceSort::IdDesc => a.id.cmp(&b.id),
            SpaceSort::Key | SpaceSort::KeyDesc => a.text.cmp(&b.text).then(a.id.cmp(&b.id)),
            SpaceSort::Name | SpaceSort::NameDesc => a
                .text
                .to_lowercase()
                .cmp(&b.text.to_lowercase())
                .then(a.id.cmp(&b.id)),
        };
        match self {
            SpaceSort::IdDesc | SpaceSort::KeyDesc | SpaceSort::NameDesc => ascending.reverse(),
            _ => ascending,
        }
    }

    fn position(self, space: &Space) -> SpacePosition {
        let text = match self {
            SpaceSort::Id | SpaceSort::IdDesc => String::new(),
            SpaceSort::Key | SpaceSort::KeyDesc => space.key.clone(),
            SpaceSort::Name | SpaceSort::NameDesc => space.name.clone(),
        };
        SpacePosition { id: space.id, text }
    }
}

/// Where a page ended: the last space's sort text and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpacePosition {
    pub(crate) id: u64,
    pub(crate) text: String,
}

/// Filters of the listing.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpaceFilter {
    pub(crate) ids: Option<Vec<u64>>,
    pub(crate) keys: Option<Vec<String>>,
    pub(crate) space_type: Option<SpaceType>,
    pub(crate) status: Option<SpaceStatus>,
}

impl SpaceFilter {
    fn matches(&self, space: &Space) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&space.id))
            && self
                .keys
                .as_ref()
                .is_none_or(|keys| keys.contains(&space.key))
            && self.space_type.is_none_or(|t| t == space.space_type)
            && self.status.is_none_or(|s| s == space.status)
    }
}

/// One site's spaces.
#[derive(Debug)]
pub(crate) struct ConfluenceSite {
    spaces: BTreeMap<u64, Space>,
    deleted: BTreeMap<u64, String>,
    next_id: u64,
}

impl Default for ConfluenceSite {
    fn default() -> Self {
        Self {
            spaces: BTreeMap::new(),
            deleted: BTreeMap::new(),
            next_id: FIRST_SPACE_ID,
        }
    }
}

/// Global keys: upper-case letters and digits, starting with a letter; personal: `~` + id.
fn valid_space_key(key: &str) -> bool {
    if let Some(account) = key.strip_prefix('~') {
        return !account.is_empty() && !account.chars().any(char::is_whitespace);
    }
    key.len() <= 255
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric())
}

impl ConfluenceSite {
    /// Number of live spaces.
    pub(crate) fn len(&self) -> usize {
        self.spaces.len()
    }

    /// Whether a live space has `key`.
    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.spaces.values().any(|s| s.key == key)
    }

    /// A live space by id or key.
    pub(crate) fn space(&self, id_or_key: &str) -> Option<&Space> {
        match id_or_key.parse::<u64>() {
            Ok(id) => self.spaces.get(&id),
            Err(_) => self.spaces.values().find(|s| s.key == id_or_key),
        }
    }

    /// Creates or changes a space.
    pub(crate) fn upsert(
        &mut self,
        change: &SpaceChange,
        now: DateTime<Utc>,
    ) -> Result<SpaceSnapshot, DataError> {
        let existing = match &change.space {
            Some(id_or_key) => Some(
                self.space(id_or_key)
                    .ok_or_else(|| DataError::UnknownSpace(id_or_key.clone()))?
                    .clone(),
            ),
            None => None,
        };
        let mut space = match existing {
            Some(space) => {
                if let Some(key) = &change.key
                    && *key != space.key
                {
                    return Err(DataError::InvalidValue {
                        field: "key",
                        value: key.clone(),
                    });
                }
                space
            }
            None => {
                let key = change.key.clone().unwrap_or_default();
                if !valid_space_key(&key) {
                    return Err(DataError::InvalidValue {
                        field: "key",
                        value: key,
                    });
                }
                if self.has_key(&key) {
                    return Err(DataError::DuplicateKey(key));
                }
                let id = self.next_id;
                self.next_id += SPACE_ID_STEP;
                Space {
                    id,
                    name: key.clone(),
                    space_type: if key.starts_with('~') {
                        SpaceType::Personal
                    } else {
                        SpaceType::Global
                    },
                    key,
                    status: SpaceStatus::Current,
                    author_id: SYSTEM_ACCOUNT.to_owned(),
                    created_at: to_millis(now),
                    homepage_id: id + 1,
                    description: None,
                }
            }
        };
        if let Some(name) = &change.name {
            if name.trim().is_empty() {
                return Err(DataError::InvalidValue {
                    field: "name",
                    value: name.clone(),
                });
            }
            space.name = name.clone();
        }
        if let Some(space_type) = change.space_type {
            space.space_type = space_type;
        }
        if let Some(status) = change.status {
            space.status = status;
        }
        if let Some(description) = &change.description {
            space.description = description.clone();
        }
        if let Some(author) = &change.author_account_id {
            space.author_id = author.clone();
        }
        if let Some(created_at) = change.created_at {
            space.created_at = to_millis(created_at);
        }
        let snapshot = SpaceSnapshot::from(&space);
        self.spaces.insert(space.id, space);
        Ok(snapshot)
    }

    /// Deletes a space by id or key; returns whether it existed.
    pub(crate) fn delete(&mut self, id_or_key: &str) -> bool {
        let Some(id) = self.space(id_or_key).map(|s| s.id) else {
            return false;
        };
        match self.spaces.remove(&id) {
            Some(space) => {
                self.deleted.insert(id, space.key);
                true
            }
            None => false,
        }
    }

    /// Every live space, ascending by id.
    pub(crate) fn snapshots(&self) -> Vec<SpaceSnapshot> {
        self.spaces.values().map(SpaceSnapshot::from).collect()
    }

    /// Up to `limit` matching spaces after `after` in `sort` order, and whether more follow.
    pub(crate) fn list(
        &self,
        filter: &SpaceFilter,
        sort: SpaceSort,
        after: Option<&SpacePosition>,
        limit: usize,
    ) -> (Vec<&Space>, bool) {
        let mut matching: Vec<(SpacePosition, &Space)> = self
            .spaces
            .values()
            .filter(|s| filter.matches(s))
            .map(|s| (sort.position(s), s))
            .filter(|(position, _)| {
                after.is_none_or(|a| sort.compare(position, a) == Ordering::Greater)
            })
            .collect();
        matching.sort_by(|a, b| sort.compare(&a.0, &b.0));
        let more = matching.len() > limit;
        let page = matching.into_iter().take(limit).map(|(_, s)| s).collect();
        (page, more)
    }

    /// The position of `space` under `sort` (for the next cursor).
    pub(crate) fn position(space: &Space, sort: SpaceSort) -> SpacePosition {
        sort.position(space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).expect("valid")
    }

    fn site(keys: &[&str]) -> ConfluenceSite {
        let mut site = ConfluenceSite::default();
        for key in keys {
            site.upsert(
                &SpaceChange {
                    key: Some((*key).to_owned()),
                    name: Some(format!("{key} space")),
                    ..SpaceChange::default()
                },
                now(),
            )
            .expect("created");
        }
        site
    }

    #[test]
    fn ids_step_like_real_ones_and_keys_are_unique() {
        let mut site = site(&["ENG", "OPS"]);
        let ids: Vec<_> = site.snapshots().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, vec!["98305", "131073"]);
        let duplicate = site.upsert(
            &SpaceChange {
                key: Some("ENG".into()),
                ..SpaceChange::default()
            },
            now(),
        );
        assert_eq!(duplicate, Err(DataError::DuplicateKey("ENG".into())));
        assert!(site.delete("ENG"));
        assert!(site.space("98305").is_none());
    }

    #[test]
    fn listing_pages_by_keyset_in_every_sort() {
        let site = site(&["DELTA", "ALPHA", "CHARLIE", "BRAVO", "ECHO"]);
        for sort in ["id", "-id", "key", "-key", "name", "-name"] {
            let sort = SpaceSort::parse(sort).expect("sort");
            let (all, more) = site.list(&SpaceFilter::default(), sort, None, 250);
            assert!(!more);
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let (page, more) = site.list(&SpaceFilter::default(), sort, after.as_ref(), 2);
                paged.extend(page.iter().map(|s| s.id));
                after = page.last().map(|s| ConfluenceSite::position(s, sort));
                if !more {
                    break;
                }
            }
            assert_eq!(paged, all.iter().map(|s| s.id).collect::<Vec<_>>());
        }
        let (by_key, _) = site.list(&SpaceFilter::default(), SpaceSort::Key, None, 2);
        assert_eq!(by_key[0].key, "ALPHA");
    }

    #[test]
    fn filters_narrow_the_listing() {
        let mut site = site(&["ENG", "OPS", "~712020:abc"]);
        site.upsert(
            &SpaceChange {
                space: Some("OPS".into()),
                status: Some(SpaceStatus::Archived),
                ..SpaceChange::default()
            },
            now(),
        )
        .expect("updated");
        let filter = SpaceFilter {
            space_type: Some(SpaceType::Personal),
            ..SpaceFilter::default()
        };
        let (page, _) = site.list(&filter, SpaceSort::Id, None, 25);
        assert_eq!(page.len(), 1);
        let filter = SpaceFilter {
            status: Some(SpaceStatus::Current),
            keys: Some(vec!["ENG".into(), "OPS".into()]),
            ..SpaceFilter::default()
        };
        let (page, _) = site.list(&filter, SpaceSort::Id, None, 25);
        assert_eq!(
            page.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            vec!["ENG"]
        );
    }
}
