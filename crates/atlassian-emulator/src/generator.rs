//! Realistic, varied and reproducible issue and space data for `create_issues` and
//! `create_spaces`: a SplitMix64 stream seeded from the site and its size, so the same calls
//! give the same data.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest as _, Sha256};

use super::issues::{self, IssueContent};
use super::products::Person;
use super::spaces::{SpaceChange, SpaceStatus, SpaceType};
use super::state::shifted;

/// A tiny deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let index = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[index]
    }
}

/// A seed from the site and how much data it already has.
pub(crate) fn seed(cloud_id: &str, existing: usize) -> u64 {
    let digest = Sha256::digest(format!("{cloud_id}/{existing}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

const VERBS: &[&str] = &[
    "Fix",
    "Investigate",
    "Add",
    "Remove",
    "Refactor",
    "Document",
    "Migrate",
    "Speed up",
    "Handle errors in",
    "Add retries to",
    "Write tests for",
    "Redesign",
];
const OBJECTS: &[&str] = &[
    "checkout flow",
    "payment webhook",
    "login page",
    "search index",
    "CSV export",
    "user avatars",
    "billing emails",
    "rate limiter",
    "audit log",
    "mobile push notifications",
    "SSO settings",
    "onboarding tour",
    "invoice PDF",
    "Café menu import",
    "日本語 product titles",
];
const QUALIFIERS: &[&str] = &[
    "",
    "",
    "",
    " for EU customers",
    " after the 2.3 upgrade",
    " on Safari",
    " when the cart is empty",
    " under load",
    " in dark mode",
    " for archived projects",
    " on slow networks",
    " — \"quoted\" edge case",
];
const LABELS: &[&str] = &[
    "checkout",
    "backend",
    "frontend",
    "urgent",
    "tech-debt",
    "customer",
    "regression",
    "security",
    "ux",
    "performance",
];
const DESCRIPTIONS: &[&str] = &[
    "Steps to reproduce are in the linked support ticket.",
    "Seen in production since Tuesday; affects roughly 2% of sessions.",
    "Follow-up from the last retro.",
];

/// `count` issues created over a period ending at `now` (ascending creation time, so ids and
/// creation order agree), updated at varied later instants, assigned among `accounts`.
pub(crate) fn issue_contents(
    seed: u64,
    count: usize,
    now: DateTime<Utc>,
    accounts: &[String],
) -> Vec<IssueContent> {
    let mut rng = Rng(seed);
    // A second stream for the fields added later, so the first keeps its values.
    let mut extra = Rng(seed ^ 0x5EED_F1E1_D5C0_FFEE);
    let count_i64 = i64::try_from(count).unwrap_or(i64::MAX);
    // About 37 minutes per issue, between a day and a year in all.
    let span_ms = count_i64
        .saturating_mul(37 * 60 * 1000)
        .clamp(24 * 3600 * 1000, 365 * 24 * 3600 * 1000);
    let start = shifted(now, TimeDelta::milliseconds(-span_ms));
    let step = span_ms / count_i64.max(1);
    (0..count_i64)
        .map(|i| {
            let jitter = i64::try_from(rng.below(step.max(1).unsigned_abs())).unwrap_or(0);
            let created = shifted(start, TimeDelta::milliseconds(i * step + jitter));
            let remaining = (now - created).num_milliseconds().max(0);
            let updated = if rng.chance(25) {
                created
            } else {
                // Skewed towards recent: most work happens late.
                let fraction = 1.0 - rng.unit().powi(3);
                shifted(
                    created,
                    TimeDelta::milliseconds((remaining as f64 * fraction) as i64),
                )
            };
            let status = &issues::STATUSES[match rng.below(10) {
                0..=3 => 0,
                4..=5 => 1,
                6 => 2,
                _ => 3,
            }];
            let issue_type = &issues::ISSUE_TYPES[match rng.below(20) {
                0 => 0,
                1..=6 => 1,
                7..=12 => 2,
                13..=18 => 3,
                _ => 4,
            }];
            let priority = if rng.chance(5) {
                None
            } else {
                Some(&issues::PRIORITIES[usize::try_from(rng.below(5)).unwrap_or(2)])
            };
            let person = |rng: &mut Rng, percent| {
                (!accounts.is_empty() && rng.chance(percent)).then(|| rng.pick(accounts).clone())
            };
            let assignee = person(&mut rng, 70);
            let reporter = person(&mut rng, 90);
            let mut labels: Vec<String> = Vec::new();
            for _ in 0..rng.below(4) {
                let label = (*rng.pick(LABELS)).to_owned();
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            let done = status.category.key == "done";
            let estimable = issue_type.hierarchy_level == 0;
            let story_points =
                (estimable && extra.chance(60)).then(|| *extra.pick(&[1u32, 2, 3, 5, 8, 13]));
            let sprint = (issue_type.hierarchy_level >= 0 && extra.chance(50))
                .then(|| 1 + u32::try_from(extra.below(12)).unwrap_or(0));
            IssueContent {
                summary: format!(
                    "{} {}{}",
                    rng.pick(VERBS),
                    rng.pick(OBJECTS),
                    rng.pick(QUALIFIERS)
                ),
                description: rng.chance(40).then(|| (*rng.pick(DESCRIPTIONS)).to_owned()),
                status,
                issue_type,
                priority,
                assignee,
                reporter,
                labels,
                created,
                updated,
                resolution_date: done.then_some(updated),
                parent: None,
                story_points,
                sprint,
            }
        })
        .collect()
}

const SPACE_KEYS: &[(&str, &str)] = &[
    ("ENG", "Engineering"),
    ("OPS", "Operations"),
    ("DOCS", "Product Documentation"),
    ("HR", "People Team"),
    ("MKT", "Marketing"),
    ("SALES", "Sales Playbooks"),
    ("SUP", "Customer Support"),
    ("DESIGN", "Design System"),
    ("DATA", "Data & Analytics"),
    ("SEC", "Security"),
    ("FIN", "Finance"),
    ("LEGAL", "Legal"),
    ("PM", "Product Management"),
    ("QA", "Quality Assurance"),
    ("IT", "IT Help Desk"),
];

/// `count` new spaces: mostly team spaces, some personal spaces for `people`, a few archived;
/// `taken` says whether a key is already in use.
pub(crate) fn space_changes(
    seed: u64,
    count: usize,
    now: DateTime<Utc>,
    people: &[Person],
    taken: impl Fn(&str) -> bool,
) -> Vec<SpaceChange> {
    let mut rng = Rng(seed);
    let mut changes: Vec<SpaceChange> = Vec::with_capacity(count);
    let used = |key: &str, changes: &[SpaceChange]| {
        taken(key) || changes.iter().any(|c| c.key.as_deref() == Some(key))
    };
    let mut people_left = people.iter();
    let mut team = SPACE_KEYS.iter();
    let mut serial = 1u64;
    while changes.len() < count {
        let personal = (changes.len() % 5 == 4)
            .then(|| people_left.next())
            .flatten()
            .filter(|p| !used(&format!("~{}", p.account_id), &changes));
        let (key, name, space_type, author) = match personal {
            Some(person) => (
                format!("~{}", person.account_id),
                person.display_name.clone(),
                SpaceType::Personal,
                Some(person.account_id.clone()),
            ),
            None => {
                let (key, name) = loop {
                    match team.next() {
                        Some((key, name)) if !used(key, &changes) => {
                            break ((*key).to_owned(), (*name).to_owned());
                        }
                        Some(_) => continue,
                        None => {
                            let key = format!("SP{serial}");
                            serial += 1;
                            if !used(&key, &changes) {
                                break (key.clone(), format!("Team space {key}"));
                            }
                        }
                    }
                };
                let space_type = match rng.below(10) {
                    0 => SpaceType::KnowledgeBase,
                    1 | 2 => SpaceType::Collaboration,
                    _ => SpaceType::Global,
                };
                let author = (!people.is_empty()).then(|| rng.pick(people).account_id.clone());
                (key, name, space_type, author)
            }
        };
        let age_ms = i64::try_from(rng.below(3 * 365 * 24 * 3600 * 1000)).unwrap_or(0);
        changes.push(SpaceChange {
            space: None,
            key: Some(key),
            name: Some(name),
            space_type: Some(space_type),
            status: Some(if rng.chance(10) {
                SpaceStatus::Archived
            } else {
                SpaceStatus::Current
            }),
            description: Some(
                rng.chance(50)
                    .then(|| "Team notes, how-tos and decisions.".to_owned()),
            ),
            author_account_id: author,
            created_at: Some(shifted(now, TimeDelta::milliseconds(-age_ms))),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_are_reproducible_ordered_and_in_the_past() {
        let now = DateTime::from_timestamp(1_780_000_000, 0).expect("valid");
        let accounts = vec!["a".to_owned(), "b".to_owned()];
        let first = issue_contents(7, 500, now, &accounts);
        let again = issue_contents(7, 500, now, &accounts);
        assert_eq!(
            first.iter().map(|c| &c.summary).collect::<Vec<_>>(),
            again.iter().map(|c| &c.summary).collect::<Vec<_>>()
        );
        assert!(first.windows(2).all(|w| w[0].created <= w[1].created));
        assert!(
            first
                .iter()
                .all(|c| c.created <= c.updated && c.updated <= now)
        );
        assert!(first.iter().any(|c| c.assignee.is_none()));
        assert!(first.iter().any(|c| c.assignee.is_some()));
        let statuses: std::collections::HashSet<_> = first.iter().map(|c| c.status.id).collect();
        assert_eq!(statuses.len(), 4);
    }

    #[test]
    fn space_keys_never_collide() {
        let now = DateTime::from_timestamp(1_780_000_000, 0).expect("valid");
        let changes = space_changes(3, 40, now, &[], |key| key == "OPS");
        let mut keys: Vec<_> = changes.iter().filter_map(|c| c.key.clone()).collect();
        assert!(!keys.contains(&"OPS".to_owned()));
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 40);
    }
}
