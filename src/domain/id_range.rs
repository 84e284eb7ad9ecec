//! Ranges of Jira issue ids. Issue ids are numbers (sent as strings), ascending in creation
//! order, and JQL compares them numerically, so a site's issues split into id ranges that a
//! census can count and list one at a time.

use std::fmt;

/// The issue ids from `start` up to, not including, `end` (no upper end when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdRange {
    /// The first id in the range.
    pub start: i64,
    /// The first id past the range; `None`: every id from `start` on.
    pub end: Option<i64>,
}

impl IdRange {
    /// Every issue id.
    pub const ALL: Self = Self {
        start: 0,
        end: None,
    };

    /// Whether `id` falls in the range.
    pub fn contains(&self, id: i64) -> bool {
        id >= self.start && self.end.is_none_or(|end| id < end)
    }

    /// The range as a JQL condition on `id` (`None` for every id: no condition needed).
    pub fn jql(&self) -> Option<String> {
        match (self.start, self.end) {
            (0, None) => None,
            (0, Some(end)) => Some(format!("id < {end}")),
            (start, None) => Some(format!("id >= {start}")),
            (start, Some(end)) => Some(format!("id >= {start} AND id < {end}")),
        }
    }

    /// The part of `sorted` (ascending) that falls in the range.
    pub fn slice<'a>(&self, sorted: &'a [i64]) -> &'a [i64] {
        self.slice_by(sorted, |id| *id)
    }

    /// The part of `sorted` (ascending by `id_of`) whose ids fall in the range.
    pub fn slice_by<'a, T>(&self, sorted: &'a [T], id_of: impl Fn(&T) -> i64) -> &'a [T] {
        let from = sorted.partition_point(|item| id_of(item) < self.start);
        let to = match self.end {
            Some(end) => sorted.partition_point(|item| id_of(item) < end),
            None => sorted.len(),
        };
        &sorted[from..to.max(from)]
    }

    /// The range split at `at` (which must fall strictly inside it).
    pub fn split_at(&self, at: i64) -> (Self, Self) {
        (
            Self {
                start: self.start,
                end: Some(at),
            },
            Self {
                start: at,
                end: self.end,
            },
        )
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "ids {}..{}", self.start, end),
            None => write!(f, "ids {}..", self.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_conditions_agree_on_the_bounds() {
        let ids = [3, 10, 11, 20, 40];
        let (low, high) = IdRange::ALL.split_at(11);
        assert_eq!(low.slice(&ids), &[3, 10]);
        assert_eq!(high.slice(&ids), &[11, 20, 40]);
        assert_eq!(low.jql().as_deref(), Some("id < 11"));
        assert_eq!(high.jql().as_deref(), Some("id >= 11"));
        let (middle, _) = high.split_at(40);
        assert_eq!(middle.slice(&ids), &[11, 20]);
        assert_eq!(middle.jql().as_deref(), Some("id >= 11 AND id < 40"));
        assert!(middle.contains(39) && !middle.contains(40) && !middle.contains(10));
        assert_eq!(IdRange::ALL.jql(), None);
    }
}
