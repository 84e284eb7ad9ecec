//! The subset of the JSM Operations alert search syntax that `GET …/v1/alerts?query=` accepts
//! in the emulator (the API reference points to the "Search syntax for alerts" help page).
//!
//! - A term is `field:value` or `field=value` (spaces around the separator allowed); the value is
//!   a bare word (up to whitespace or `)`) or a double-quoted string (`\"` and `\\` escaped). A
//!   trailing `*` makes a prefix match.
//! - A bare word or quoted string without a field searches message, alias, description, entity,
//!   source and tags (case-insensitive substring).
//! - `AND`, `OR` and `NOT` (any case) combine terms; adjacent terms are ANDed; `AND` binds
//!   tighter than `OR`; parentheses group.
//! - Fields (names are case-sensitive): `id`, `tinyId` and `alias` match exactly; `status`,
//!   `priority` and `tag` match ignoring case; `message`, `description`, `entity` and `source`
//!   match a case-insensitive substring; `acknowledged` is `true` or `false` (never acknowledged
//!   here). Any other field is refused (422), so a query the emulator would silently misread
//!   fails loudly instead.

use super::jsm_alerts::Alert;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    Term(Field, Pattern),
    Text(Pattern),
    Not(Box<Query>),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
}

/// A searchable alert field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Id,
    TinyId,
    Alias,
    Status,
    Priority,
    Tag,
    Message,
    Description,
    Entity,
    Source,
    Acknowledged,
}

impl Field {
    fn named(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "tinyId" => Field::TinyId,
            "alias" => Field::Alias,
            "status" => Field::Status,
            "priority" => Field::Priority,
            "tag" | "tags" => Field::Tag,
            "message" => Field::Message,
            "description" => Field::Description,
            "entity" => Field::Entity,
            "source" => Field::Source,
            "acknowledged" => Field::Acknowledged,
            _ => return None,
        })
    }
}

/// A value, possibly with a trailing `*` (prefix match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    prefix: bool,
}

impl Pattern {
    fn new(raw: String, quoted: bool) -> Self {
        match raw.strip_suffix('*') {
            Some(stem) if !quoted => Self {
                text: stem.to_owned(),
                prefix: true,
            },
            _ => Self {
                text: raw,
                prefix: false,
            },
        }
    }

    fn exact(&self, value: &str) -> bool {
        if self.prefix {
            value.starts_with(&self.text)
        } else {
            value == self.text
        }
    }

    fn ignoring_case(&self, value: &str) -> bool {
        let value = value.to_lowercase();
        let text = self.text.to_lowercase();
        if self.prefix {
            value.starts_with(&text)
        } else {
            value == text
        }
    }

    fn contained_in(&self, value: &str) -> bool {
        value.to_lowercase().contains(&self.text.to_lowercase())
    }
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid query: {0}")]
pub(crate) struct QueryError(String);

/// Parses `input`; `None` when it is blank (every alert matches).
pub(crate) fn parse(input: &str) -> Result<Option<Query>, QueryError> {
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
    };
    parser.skip_ws();
    if parser.at_end() {
        return Ok(None);
    }
    let query = parser.or()?;
    parser.skip_ws();
    match parser.peek() {
        None => Ok(Some(query)),
        Some(c) => Err(QueryError(format!("unexpected '{c}'"))),
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes keyword `word` (any case) when it stands alone at the cursor.
    fn keyword(&mut self, word: &str) -> bool {
        let len = word.chars().count();
        let Some(candidate) = self.chars.get(self.pos..self.pos + len) else {
            return false;
        };
        let matches = candidate
            .iter()
            .zip(word.chars())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b));
        let ends = self
            .chars
            .get(self.pos + len)
            .is_none_or(|c| c.is_whitespace() || *c == '(' || *c == '"');
        if matches && ends {
            self.pos += len;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Query, QueryError> {
        let mut left = self.and()?;
        loop {
            self.skip_ws();
            if !self.keyword("OR") {
                return Ok(left);
            }
            let right = self.and()?;
            left = Query::Or(Box::new(left), Box::new(right));
        }
    }

    fn and(&mut self) -> Result<Query, QueryError> {
        let mut left = self.unary()?;
        loop {
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') {
                return Ok(left);
            }
            let before = self.pos;
            if self.keyword("OR") {
                self.pos = before;
                return Ok(left);
            }
            self.keyword("AND");
            let right = self.unary()?;
            left = Query::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Query, QueryError> {
        self.skip_ws();
        if self.keyword("NOT") {
            return Ok(Query::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Query, QueryError> {
        self.skip_ws();
        match self.peek() {
            None => Err(QueryError("a term is missing at the end".to_owned())),
            Some('(') => {
                self.pos += 1;
                let inner = self.or()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(QueryError("a ')' is missing".to_owned()));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(')') => Err(QueryError("unexpected ')'".to_owned())),
            Some('"') => Ok(Query::Text(Pattern::new(self.quoted()?, true))),
            Some(_) => self.term(),
        }
    }

    fn term(&mut self) -> Result<Query, QueryError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | ':' | '=' | '"'))
        {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        let after_word = self.pos;
        self.skip_ws();
        if !matches!(self.peek(), Some(':' | '=')) {
            self.pos = after_word;
            if word.is_empty() {
                return Err(QueryError(format!(
                    "unexpected '{}'",
                    self.peek().unwrap_or(' ')
                )));
            }
            return Ok(Query::Text(Pattern::new(word, false)));
        }
        self.pos += 1;
        let field =
            Field::named(&word).ok_or_else(|| QueryError(format!("unknown field '{word}'")))?;
        self.skip_ws();
        let pattern = if self.peek() == Some('"') {
            Pattern::new(self.quoted()?, true)
        } else {
            let start = self.pos;
            while self.peek().is_some_and(|c| !c.is_whitespace() && c != ')') {
                self.pos += 1;
            }
            let value: String = self.chars[start..self.pos].iter().collect();
            if value.is_empty() {
                return Err(QueryError(format!("'{word}' has no value")));
            }
            Pattern::new(value, false)
        };
        Ok(Query::Term(field, pattern))
    }

    fn quoted(&mut self) -> Result<String, QueryError> {
        self.pos += 1; // the opening quote
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err(QueryError("a closing '\"' is missing".to_owned())),
                Some('"') => {
                    self.pos += 1;
                    return Ok(text);
                }
                Some('\\') => {
                    self.pos += 1;
                    let escaped = self
                        .peek()
                        .ok_or_else(|| QueryError("a closing '\"' is missing".to_owned()))?;
                    text.push(escaped);
                    self.pos += 1;
                }
                Some(c) => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

impl Query {
    /// Whether `alert` satisfies the query.
    pub(crate) fn matches(&self, alert: &Alert) -> bool {
        match self {
            Query::And(a, b) => a.matches(alert) && b.matches(alert),
            Query::Or(a, b) => a.matches(alert) || b.matches(alert),
            Query::Not(q) => !q.matches(alert),
            Query::Text(p) => [
                Some(alert.message.as_str()),
                Some(alert.alias.as_str()),
                alert.description.as_deref(),
                alert.entity.as_deref(),
                Some(alert.source.as_str()),
            ]
            .into_iter()
            .flatten()
            .chain(alert.tags.iter().map(String::as_str))
            .any(|value| p.contained_in(value)),
            Query::Term(field, p) => match field {
                Field::Id => p.exact(&alert.id),
                Field::TinyId => p.exact(&alert.tiny_id),
                Field::Alias => p.exact(&alert.alias),
                Field::Status => p.ignoring_case(alert.status.as_str()),
                Field::Priority => p.ignoring_case(alert.priority.as_str()),
                Field::Tag => alert.tags.iter().any(|t| p.ignoring_case(t)),
                Field::Message => p.contained_in(&alert.message),
                Field::Description => alert
                    .description
                    .as_deref()
                    .is_some_and(|d| p.contained_in(d)),
                Field::Entity => alert.entity.as_deref().is_some_and(|e| p.contained_in(e)),
                Field::Source => p.contained_in(&alert.source),
                // Nothing acknowledges alerts in the emulator.
                Field::Acknowledged => p.ignoring_case("false"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::jsm_alerts::{AlertStatus, Priority};

    fn alert(alias: &str, status: AlertStatus, tags: &[&str]) -> Alert {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        Alert {
            id: format!("id-{alias}"),
            tiny_id: "1".to_owned(),
            seq: 1,
            alias: alias.to_owned(),
            message: "Grant for Mia is broken".to_owned(),
            description: Some("Refresh token revoked".to_owned()),
            priority: Priority::P2,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            extra_properties: BTreeMap::new(),
            entity: None,
            source: "atlassync".to_owned(),
            responders: Vec::new(),
            visible_to: Vec::new(),
            actions: Vec::new(),
            notes: Vec::new(),
            status,
            count: 1,
            created_at: at,
            updated_at: at,
            last_occurred_at: at,
            closed_at: None,
        }
    }

    fn hits(query: &str, alert: &Alert) -> bool {
        parse(query)
            .expect("parses")
            .is_none_or(|q| q.matches(alert))
    }

    #[test]
    fn alias_and_status_terms_combine_with_any_case_keywords() {
        let open = alert("grant:42", AlertStatus::Open, &["atlassync"]);
        let closed = alert("grant:42", AlertStatus::Closed, &[]);
        for query in [
            "alias:grant:42 AND status:open",
            "alias:\"grant:42\" and status: open",
            "alias = \"grant:42\" status=OPEN",
            "(alias:grant:42) AND NOT status:closed",
            "alias:grant* AND status:open",
        ] {
            assert!(hits(query, &open), "{query}");
            assert!(!hits(query, &closed), "{query}");
        }
        assert!(hits("status:closed OR tag:ATLASSYNC", &open));
        assert!(hits("status:closed OR tag:ATLASSYNC", &closed));
        assert!(!hits("alias:grant", &open));
        assert!(!hits("alias:GRANT:42", &open));
        assert!(hits("message:broken priority:p2", &open));
        assert!(hits("revoked", &open));
        assert!(hits("   ", &open));
    }

    #[test]
    fn malformed_queries_are_refused() {
        for query in [
            "alias:",
            "alias:\"x",
            "(alias:x",
            "alias:x)",
            "Alias:x",
            "owner:mia",
            "alias:x AND",
            "NOT",
        ] {
            assert!(parse(query).is_err(), "{query}");
        }
    }
}
