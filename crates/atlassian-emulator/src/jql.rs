//! The JQL subset a sync sends: a lexer, a parser into a syntax
//! tree, and a compiler that resolves fields, values and date literals into a [`Filter`] the
//! issue store evaluates.
//!
//! Supported: clauses joined by `AND`/`OR` (also `&&`, `||`), `NOT`, parentheses; fields
//! `project`, `key`/`issuekey`, `id`, `issuetype`/`type`, `status`, `priority`, `assignee`,
//! `reporter`, `labels`, `summary` (`~`, `!~`), `updated`/`updatedDate`, `created`/`createdDate`;
//! `ORDER BY` on `updated`, `created`, `key`, `id` (at most 7 terms).
//!
//! Date literals (`"yyyy-MM-dd HH:mm"`, `"yyyy/MM/dd HH:mm"`, `"yyyy-MM-dd"`, `"yyyy/MM/dd"`)
//! are read in the calling user's Jira time zone, at minute precision, and compared against the
//! issue's full-precision instant (so `updated = "2026-03-01"` matches only midnight exactly,
//! as in Jira). A local time inside a DST gap is moved later by the gap (java.time's rule); an
//! ambiguous one takes the earlier instant. Periods (`-15m`, `-2h`, `-1d`, `-1w`, `"4w 2d"`,
//! a bare signed number meaning minutes) are relative to the query's `now`.

use std::fmt;

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Most `ORDER BY` terms Jira accepts.
pub(crate) const MAX_ORDER_BY_FIELDS: usize = 7;

/// A JQL error; `Display` is the exact `errorMessages` entry Jira answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JqlError {
    /// The query does not parse. `position` is 1-based, in characters.
    #[error("Error in the JQL Query: {message} (line 1, character {position})")]
    Syntax { message: String, position: usize },
    /// Empty query, or only `ORDER BY`.
    #[error(
        "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
    )]
    Unbounded,
    /// More than [`MAX_ORDER_BY_FIELDS`] sort terms.
    #[error("JQL can be ordered by at most 7 fields.")]
    TooManyOrderByFields,
    /// A field the emulator (or Jira) does not know.
    #[error("Field '{0}' does not exist or you do not have permission to view it.")]
    UnknownField(String),
    /// An operator the field does not support.
    #[error("The operator '{operator}' is not supported by the '{field}' field.")]
    UnsupportedOperator { operator: String, field: String },
    /// A value that names nothing (project, status, issue type, priority).
    #[error("The value '{value}' does not exist for the field '{field}'.")]
    UnknownValue { value: String, field: String },
    /// A malformed issue key.
    #[error("The issue key '{0}' for field 'key' is invalid.")]
    InvalidKey(String),
    /// A date operand in none of the accepted formats.
    #[error(
        "Date value '{value}' for field '{field}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
    )]
    InvalidDate { value: String, field: String },
    /// A function the emulator does not implement.
    #[error("Unable to find JQL function '{0}()'.")]
    UnknownFunction(String),
    /// A known field Jira can sort by but the emulator cannot.
    #[error(
        "Error in the JQL Query: ordering by '{0}' is not supported by the Atlassian emulator."
    )]
    UnsupportedOrdering(String),
    /// A field Jira cannot sort by at all.
    #[error("Field '{0}' does not support sorting.")]
    UnsortableField(String),
}

// ----- lexer -------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    LParen,
    RParen,
    Comma,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `~`, `!~`.
    Op(&'static str),
    And,
    Or,
    Not,
    /// A quoted string (quotes removed, escapes resolved).
    Quoted(String),
    /// An unquoted word (keywords are recognised by the parser).
    Word(String),
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// 1-based character position of the token's first character.
    position: usize,
}

/// Characters that end an unquoted word.
fn is_word_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '(' | ')' | ',' | '=' | '!' | '<' | '>' | '~' | '"' | '\'' | '&' | '|'
        )
}

fn lex(input: &str) -> Result<Vec<Token>, JqlError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (kind, width) = match (c, next) {
            ('(', _) => (TokenKind::LParen, 1),
            (')', _) => (TokenKind::RParen, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('!', Some('=')) => (TokenKind::Op("!="), 2),
            ('!', Some('~')) => (TokenKind::Op("!~"), 2),
            ('!', _) => (TokenKind::Not, 1),
            ('<', Some('=')) => (TokenKind::Op("<="), 2),
            ('>', Some('=')) => (TokenKind::Op(">="), 2),
            ('<', _) => (TokenKind::Op("<"), 1),
            ('>', _) => (TokenKind::Op(">"), 1),
            ('=', _) => (TokenKind::Op("="), 1),
            ('~', _) => (TokenKind::Op("~"), 1),
            ('&', Some('&')) => (TokenKind::And, 2),
            ('&', _) => (TokenKind::And, 1),
            ('|', Some('|')) => (TokenKind::Or, 2),
            ('|', _) => (TokenKind::Or, 1),
            ('"' | '\'', _) => {
                let (text, end) = quoted(&chars, i)?;
                tokens.push(Token {
                    kind: TokenKind::Quoted(text),
                    position,
                });
                i = end;
                continue;
            }
            _ => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let kind = match word.to_ascii_uppercase().as_str() {
                    "AND" => TokenKind::And,
                    "OR" => TokenKind::Or,
                    "NOT" => TokenKind::Not,
                    _ => TokenKind::Word(word),
                };
                tokens.push(Token { kind, position });
                continue;
            }
        };
        tokens.push(Token { kind, position });
        i += width;
    }
    Ok(tokens)
}

/// Reads a quoted string starting at `start` (the quote); returns the text and the index after
/// the closing quote. `\` escapes the next character.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), JqlError> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                text.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Ok((text, i + 1)),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(JqlError::Syntax {
        message: format!("The quoted string '{text}' has not been completed."),
        position: start + 1,
    })
}

// ----- syntax tree -------------------------------------------------------------------------------

/// A parsed query, before any field or value is resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// The search restriction; `None` for an empty or `ORDER BY`-only query.
    where_clause: Option<Expr>,
    order_by: Vec<(String, Option<bool>)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Clause(Clause),
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    field: String,
    operator: Operator,
    operand: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    NotContains,
    In,
    NotIn,
    Is,
    IsNot,
}

impl Operator {
    fn from_symbol(symbol: &str) -> Operator {
        match symbol {
            "!=" => Operator::Ne,
            "<" => Operator::Lt,
            "<=" => Operator::Le,
            ">" => Operator::Gt,
            ">=" => Operator::Ge,
            "~" => Operator::Contains,
            "!~" => Operator::NotContains,
            _ => Operator::Eq,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Contains => "~",
            Operator::NotContains => "!~",
            Operator::In => "in",
            Operator::NotIn => "not in",
            Operator::Is => "is",
            Operator::IsNot => "is not",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Value(Value),
    List(Vec<Value>),
    /// `EMPTY` or `NULL`.
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text { text: String, quoted: bool },
    Function(String),
}

// ----- parser ------------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Position reported for "end of query" errors.
    end_position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&TokenKind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn peek_word(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(TokenKind::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end_position, |t| t.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += usize::from(token.is_some());
        token
    }

    fn error(&self, message: impl Into<String>) -> JqlError {
        JqlError::Syntax {
            message: message.into(),
            position: self.position(),
        }
    }

    fn describe_next(&self) -> String {
        match self.tokens.get(self.at) {
            None => "end of query".to_owned(),
            Some(token) => format!("'{}'", describe(&token.kind)),
        }
    }

    fn query(&mut self) -> Result<Query, JqlError> {
        let where_clause = if self.peek().is_none() || self.peek_word("order") {
            None
        } else {
            Some(self.or()?)
        };
        let mut order_by = Vec::new();
        if self.peek_word("order") {
            self.next();
            if !self.peek_word("by") {
                return Err(self.error(format!("Expecting 'by' but got {}.", self.describe_next())));
            }
            self.next();
            loop {
                let Some(Token {
                    kind: TokenKind::Word(field) | TokenKind::Quoted(field),
                    ..
                }) = self.next()
                else {
                    self.at = self.at.saturating_sub(1);
                    return Err(self.error(format!(
                        "Expecting a field name but got {}.",
                        self.describe_next()
                    )));
                };
                let direction = if self.peek_word("asc") {
                    self.next();
                    Some(false)
                } else if self.peek_word("desc") {
                    self.next();
                    Some(true)
                } else {
                    None
                };
                order_by.push((field, direction));
                if matches!(self.peek(), Some(TokenKind::Comma)) {
                    self.next();
                } else {
                    break;
                }
            }
        }
        if self.peek().is_some() {
            let expected = if where_clause.is_some() {
                "Expecting either 'OR' or 'AND'"
            } else {
                "Expecting a field name or 'ORDER BY'"
            };
            return Err(self.error(format!("{expected} but got {}.", self.describe_next())));
        }
        Ok(Query {
            where_clause,
            order_by,
        })
    }

    fn or(&mut self) -> Result<Expr, JqlError> {
        let mut terms = vec![self.and()?];
        while matches!(self.peek(), Some(TokenKind::Or)) {
            self.next();
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, JqlError> {
        let mut terms = vec![self.not()?];
        while matches!(self.peek(), Some(TokenKind::And)) {
            self.next();
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self) -> Result<Expr, JqlError> {
        match self.peek() {
            Some(TokenKind::Not) => {
                self.next();
                Ok(Expr::Not(Box::new(self.not()?)))
            }
            Some(TokenKind::LParen) => {
                self.next();
                let inner = self.or()?;
                if !matches!(self.peek(), Some(TokenKind::RParen)) {
                    return Err(
                        self.error(format!("Expecting ')' but got {}.", self.describe_next()))
                    );
                }
                self.next();
                Ok(inner)
            }
            _ => self.clause().map(Expr::Clause),
        }
    }

    fn clause(&mut self) -> Result<Clause, JqlError> {
        let field = match self.peek() {
            Some(TokenKind::Word(w) | TokenKind::Quoted(w)) if !w.eq_ignore_ascii_case("order") => {
                let field = w.clone();
                self.next();
                field
            }
            _ => {
                return Err(self.error(format!(
                    "Expecting a field name but got {}.",
                    self.describe_next()
                )));
            }
        };
        let operator = self.operator()?;
        let operand = match operator {
            Operator::In | Operator::NotIn => self.list()?,
            Operator::Is | Operator::IsNot => {
                if self.peek_word("empty") || self.peek_word("null") {
                    self.next();
                    Operand::Empty
                } else {
                    return Err(self.error(format!(
                        "Expecting 'EMPTY' or 'NULL' but got {}.",
                        self.describe_next()
                    )));
                }
            }
            _ => {
                if self.peek_word("empty") || self.peek_word("null") {
                    self.next();
                    Operand::Empty
                } else {
                    Operand::Value(self.value()?)
                }
            }
        };
        Ok(Clause {
            field,
            operator,
            operand,
        })
    }

    fn operator(&mut self) -> Result<Operator, JqlError> {
        let invalid = |p: &Parser| {
            p.error(format!(
                "Expecting operator but got {}. The valid operators are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and 'IS NOT'.",
                p.describe_next()
            ))
        };
        match self.peek().cloned() {
            Some(TokenKind::Op(symbol)) => {
                self.next();
                Ok(Operator::from_symbol(symbol))
            }
            Some(TokenKind::Word(w)) if w.eq_ignore_ascii_case("in") => {
                self.next();
                Ok(Operator::In)
            }
            Some(TokenKind::Word(w)) if w.eq_ignore_ascii_case("is") => {
                self.next();
                if matches!(self.peek(), Some(TokenKind::Not)) {
                    self.next();
                    Ok(Operator::IsNot)
                } else {
                    Ok(Operator::Is)
                }
            }
            Some(TokenKind::Not) => {
                self.next();
                if self.peek_word("in") {
                    self.next();
                    Ok(Operator::NotIn)
                } else {
                    Err(invalid(self))
                }
            }
            _ => Err(invalid(self)),
        }
    }

    fn list(&mut self) -> Result<Operand, JqlError> {
        if !matches!(self.peek(), Some(TokenKind::LParen)) {
            return Err(self.error(format!("Expecting '(' but got {}.", self.describe_next())));
        }
        self.next();
        let mut values = Vec::new();
        loop {
            if self.peek_word("empty") || self.peek_word("null") {
                self.next();
                values.push(Value::Text {
                    text: String::new(),
                    quoted: false,
                });
            } else {
                values.push(self.value()?);
            }
            match self.peek() {
                Some(TokenKind::Comma) => {
                    self.next();
                }
                Some(TokenKind::RParen) => {
                    self.next();
                    break;
                }
                _ => {
                    return Err(self.error(format!(
                        "Expecting ',' or ')' but got {}.",
                        self.describe_next()
                    )));
                }
            }
        }
        Ok(Operand::List(values))
    }

    fn value(&mut self) -> Result<Value, JqlError> {
        match self.peek().cloned() {
            Some(TokenKind::Quoted(text)) => {
                self.next();
                Ok(Value::Text { text, quoted: true })
            }
            Some(TokenKind::Word(word)) => {
                self.next();
                if matches!(self.peek(), Some(TokenKind::LParen)) {
                    self.next();
                    // Arguments are accepted syntactically; no supported function takes any.
                    while !matches!(self.peek(), Some(TokenKind::RParen) | None) {
                        self.next();
                    }
                    if self.next().is_none() {
                        return Err(self.error("Expecting ')' but got end of query."));
                    }
                    return Ok(Value::Function(word));
                }
                Ok(Value::Text {
                    text: word,
                    quoted: false,
                })
            }
            _ => Err(self.error(format!(
                "Expecting either a value, list or function but got {}.",
                self.describe_next()
            ))),
        }
    }
}

fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::LParen => "(".into(),
        TokenKind::RParen => ")".into(),
        TokenKind::Comma => ",".into(),
        TokenKind::Op(op) => (*op).into(),
        TokenKind::And => "AND".into(),
        TokenKind::Or => "OR".into(),
        TokenKind::Not => "NOT".into(),
        TokenKind::Quoted(text) | TokenKind::Word(text) => text.clone(),
    }
}

/// Parses `jql` (syntax only; fields and values are checked by [`compile`]).
pub(crate) fn parse(jql: &str) -> Result<Query, JqlError> {
    let tokens = lex(jql)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        end_position: jql.chars().count() + 1,
    };
    parser.query()
}

// ----- compiled form -----------------------------------------------------------------------------

/// A field an `ORDER BY` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SortField {
    Updated,
    Created,
    Key,
    Id,
}

/// One `ORDER BY` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortTerm {
    pub(crate) field: SortField,
    pub(crate) descending: bool,
}

/// Instant fields a clause can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeField {
    Updated,
    Created,
}

/// `<`, `<=`, `=`, `!=`, `>=`, `>` against an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

impl Comparison {
    fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Comparison::Lt => left < right,
            Comparison::Le => left <= right,
            Comparison::Eq => left == right,
            Comparison::Ne => left != right,
            Comparison::Ge => left >= right,
            Comparison::Gt => left > right,
        }
    }
}

/// The right side of an issue-order comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IssueBound {
    Id(u64),
    Key { project: String, number: i64 },
}

/// A single-valued attribute compared by identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attribute {
    Project,
    IssueType,
    Status,
    Priority,
    Assignee,
    Reporter,
}

/// A resolved condition on one issue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    /// The attribute's value is one of `values` (`None`: the attribute is empty). With `negate`,
    /// it is set and none of them (Jira's `!=`/`NOT IN` never match an empty field), unless
    /// `values` contains `None`, in which case empty fields are excluded and set ones kept.
    OneOf {
        attribute: Attribute,
        values: Vec<Option<String>>,
        negate: bool,
    },
    /// Key in `keys` (upper-cased `PROJECT-N`) or id in `ids`.
    IssueIs {
        keys: Vec<String>,
        ids: Vec<u64>,
        negate: bool,
    },
    /// Issue order: ids compare numerically; a key compares with the keys of its own project
    /// by number (Jira's "Issue key" field supports `<`, `<=`, `>`, `>=`).
    IssueOrder {
        comparison: Comparison,
        bound: IssueBound,
    },
    /// Compare an instant (epoch milliseconds).
    Time {
        field: TimeField,
        comparison: Comparison,
        at_ms: i64,
    },
    /// Labels: any of `labels` present (`negate`: labels set and none present); `None` in
    /// `labels` stands for "no labels".
    Labels {
        labels: Vec<Option<String>>,
        negate: bool,
    },
    /// Case-insensitive substring of the summary.
    SummaryContains { text: String, negate: bool },
}

/// A compiled search restriction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Condition(Condition),
}

/// What a [`Filter`] reads from an issue.
pub(crate) trait Subject {
    fn id(&self) -> u64;
    /// Upper-case `PROJECT-N`.
    fn key(&self) -> &str;
    fn attribute(&self, attribute: Attribute) -> Option<&str>;
    fn created_ms(&self) -> i64;
    fn updated_ms(&self) -> i64;
    fn labels(&self) -> &[String];
    fn summary(&self) -> &str;
}

impl Filter {
    /// Whether `subject` satisfies the filter.
    pub(crate) fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        match self {
            Filter::And(terms) => terms.iter().all(|t| t.matches(subject)),
            Filter::Or(terms) => terms.iter().any(|t| t.matches(subject)),
            Filter::Not(inner) => !inner.matches(subject),
            Filter::Condition(condition) => condition.matches(subject),
        }
    }

    /// The inclusive range of `field` (epoch ms) every match must fall in, read from the
    /// top-level conjunction only (a conservative bound lets the store skip ahead).
    pub(crate) fn time_bounds(&self, field: TimeField) -> (Option<i64>, Option<i64>) {
        let mut lower: Option<i64> = None;
        let mut upper: Option<i64> = None;
        let mut narrow = |condition: &Condition| {
            if let Condition::Time {
                field: f,
                comparison,
                at_ms,
            } = condition
                && *f == field
            {
                let (lo, hi) = match comparison {
                    Comparison::Gt => (Some(at_ms.saturating_add(1)), None),
                    Comparison::Ge => (Some(*at_ms), None),
                    Comparison::Lt => (None, Some(at_ms.saturating_sub(1))),
                    Comparison::Le => (None, Some(*at_ms)),
                    Comparison::Eq => (Some(*at_ms), Some(*at_ms)),
                    Comparison::Ne => (None, None),
                };
                if let Some(lo) = lo {
                    lower = Some(lower.map_or(lo, |l| l.max(lo)));
                }
                if let Some(hi) = hi {
                    upper = Some(upper.map_or(hi, |u| u.min(hi)));
                }
            }
        };
        match self {
            Filter::Condition(condition) => narrow(condition),
            Filter::And(terms) => {
                for term in terms {
                    if let Filter::Condition(condition) = term {
                        narrow(condition);
                    }
                }
            }
            _ => {}
        }
        (lower, upper)
    }
}

impl Condition {
    fn matches<S: Subject + ?Sized>(&self, subject: &S) -> bool {
        match self {
            Condition::OneOf {
                attribute,
                values,
                negate,
            } => {
                let actual = subject.attribute(*attribute);
                let listed = values.iter().any(|v| v.as_deref() == actual);
                if *negate {
                    if actual.is_none() { false } else { !listed }
                } else {
                    listed
                }
            }
            Condition::IssueIs { keys, ids, negate } => {
                let listed = ids.contains(&subject.id()) || keys.iter().any(|k| k == subject.key());
                listed != *negate
            }
            Condition::IssueOrder { comparison, bound } => match bound {
                IssueBound::Id(id) => comparison.holds(subject.id() as i64, *id as i64),
                IssueBound::Key { project, number } => match subject.key().rsplit_once('-') {
                    Some((p, n)) if p == project => {
                        n.parse::<i64>().is_ok_and(|n| comparison.holds(n, *number))
                    }
                    _ => false,
                },
            },
            Condition::Time {
                field,
                comparison,
                at_ms,
            } => {
                let actual = match field {
                    TimeField::Updated => subject.updated_ms(),
                    TimeField::Created => subject.created_ms(),
                };
                comparison.holds(actual, *at_ms)
            }
            Condition::Labels { labels, negate } => {
                let actual = subject.labels();
                let listed = labels.iter().any(|wanted| match wanted {
                    None => actual.is_empty(),
                    Some(label) => actual.iter().any(|a| a == label),
                });
                if *negate {
                    !actual.is_empty() && !listed
                } else {
                    listed
                }
            }
            Condition::SummaryContains { text, negate } => {
                let found = subject.summary().to_lowercase().contains(text.as_str());
                found != *negate
            }
        }
    }
}

/// A compiled query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compiled {
    pub(crate) filter: Filter,
    /// Sort terms, ending with an `id` tie-breaker unless `id` is already present.
    pub(crate) order: Vec<SortTerm>,
}

/// Resolves values against the site's data.
pub(crate) trait Catalog {
    /// A project id from its key, id or name (case-insensitive).
    fn project_id(&self, value: &str) -> Option<String>;
    /// A status id from its name or id.
    fn status_id(&self, value: &str) -> Option<String>;
    /// An issue-type id from its name or id.
    fn issue_type_id(&self, value: &str) -> Option<String>;
    /// A priority id from its name or id.
    fn priority_id(&self, value: &str) -> Option<String>;
}

/// Who is asking and when: needed for `currentUser()`, date literals and periods.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) now: DateTime<Utc>,
    /// The caller's Jira time zone.
    pub(crate) zone: Tz,
    pub(crate) account_id: String,
}

/// The default order when the query has none (an emulator choice: Jira does not document it).
const DEFAULT_ORDER: SortTerm = SortTerm {
    field: SortField::Created,
    descending: true,
};

/// Parses and compiles `jql`, requiring a search restriction (Jira's `search/jql` refuses
/// unbounded queries).
pub(crate) fn compile_bounded(
    jql: &str,
    context: &Context,
    catalog: &dyn Catalog,
) -> Result<Compiled, JqlError> {
    let query = parse(jql)?;
    if query.order_by.len() > MAX_ORDER_BY_FIELDS {
        return Err(JqlError::TooManyOrderByFields);
    }
    let Some(where_clause) = &query.where_clause else {
        return Err(JqlError::Unbounded);
    };
    let filter = compile_expr(where_clause, context, catalog)?;
    let mut order = Vec::new();
    for (name, descending) in &query.order_by {
        let field = sort_field(name)?;
        // Without ASC/DESC the emulator sorts ascending (Jira documents no default).
        let descending = descending.unwrap_or(false);
        if !order.iter().any(|t: &SortTerm| t.field == field) {
            order.push(SortTerm { field, descending });
        }
    }
    if order.is_empty() {
        order.push(DEFAULT_ORDER);
    }
    if !order.iter().any(|t| t.field == SortField::Id) {
        let descending = order[0].descending;
        order.push(SortTerm {
            field: SortField::Id,
            descending,
        });
    }
    Ok(Compiled { filter, order })
}

/// The canonical name of a searchable field, or `None` when unknown.
fn canonical_field(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "project" => "project",
        "key" | "issuekey" => "key",
        "id" => "id",
        "issuetype" | "type" => "issuetype",
        "status" => "status",
        "priority" => "priority",
        "assignee" => "assignee",
        "reporter" => "reporter",
        "labels" => "labels",
        "summary" => "summary",
        "updated" | "updateddate" => "updated",
        "created" | "createddate" => "created",
        _ => return None,
    })
}

fn sort_field(name: &str) -> Result<SortField, JqlError> {
    match canonical_field(name) {
        Some("updated") => Ok(SortField::Updated),
        Some("created") => Ok(SortField::Created),
        Some("key") => Ok(SortField::Key),
        Some("id") => Ok(SortField::Id),
        Some("labels") => Err(JqlError::UnsortableField(name.to_owned())),
        Some(_) => Err(JqlError::UnsupportedOrdering(name.to_owned())),
        None => Err(JqlError::UnknownField(name.to_owned())),
    }
}

fn compile_expr(expr: &Expr, context: &Context, catalog: &dyn Catalog) -> Result<Filter, JqlError> {
    Ok(match expr {
        Expr::And(terms) => Filter::And(
            terms
                .iter()
                .map(|t| compile_expr(t, context, catalog))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(terms) => Filter::Or(
            terms
                .iter()
                .map(|t| compile_expr(t, context, catalog))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(inner) => Filter::Not(Box::new(compile_expr(inner, context, catalog)?)),
        Expr::Clause(clause) => Filter::Condition(compile_clause(clause, context, catalog)?),
    })
}

fn unsupported(clause: &Clause) -> JqlError {
    JqlError::UnsupportedOperator {
        operator: clause.operator.symbol().to_owned(),
        field: clause.field.clone(),
    }
}

/// The operand as a list of values (`None` for `EMPTY`), and whether the operator negates.
fn membership(clause: &Clause) -> Result<(Vec<Option<&Value>>, bool), JqlError> {
    let negate = match clause.operator {
        Operator::Eq | Operator::In | Operator::Is => false,
        Operator::Ne | Operator::NotIn | Operator::IsNot => true,
        _ => return Err(unsupported(clause)),
    };
    let values = match &clause.operand {
        Operand::Empty => vec![None],
        Operand::Value(value) => vec![Some(value)],
        Operand::List(values) => values
            .iter()
            .map(|v| match v {
                Value::Text {
                    text,
                    quoted: false,
                } if text.is_empty() => None,
                v => Some(v),
            })
            .collect(),
    };
    Ok((values, negate))
}

fn plain_text(value: &Value) -> Result<&str, JqlError> {
    match value {
        Value::Text { text, .. } => Ok(text),
        Value::Function(name) => Err(JqlError::UnknownFunction(name.clone())),
    }
}

fn compile_clause(
    clause: &Clause,
    context: &Context,
    catalog: &dyn Catalog,
) -> Result<Condition, JqlError> {
    let field = canonical_field(&clause.field)
        .ok_or_else(|| JqlError::UnknownField(clause.field.clone()))?;
    match field {
        "updated" | "created" => compile_time(clause, field, context),
        "summary" => {
            let negate = match clause.operator {
                Operator::Contains => false,
                Operator::NotContains => true,
                _ => return Err(unsupported(clause)),
            };
            let Operand::Value(value) = &clause.operand else {
                return Err(unsupported(clause));
            };
            Ok(Condition::SummaryContains {
                text: plain_text(value)?.to_lowercase(),
                negate,
            })
        }
        "labels" => {
            let (values, negate) = membership(clause)?;
            let labels = values
                .into_iter()
                .map(|v| v.map(|v| plain_text(v).map(str::to_owned)).transpose())
                .collect::<Result<_, _>>()?;
            Ok(Condition::Labels { labels, negate })
        }
        "key" | "id" => compile_issue(clause, field),
        _ => {
            let attribute = match field {
                "project" => Attribute::Project,
                "issuetype" => Attribute::IssueType,
                "status" => Attribute::Status,
                "priority" => Attribute::Priority,
                "assignee" => Attribute::Assignee,
                _ => Attribute::Reporter,
            };
            let (values, negate) = membership(clause)?;
            let mut resolved = Vec::with_capacity(values.len());
            for value in values {
                let Some(value) = value else {
                    resolved.push(None);
                    continue;
                };
                resolved.push(Some(resolve(attribute, value, field, context, catalog)?));
            }
            Ok(Condition::OneOf {
                attribute,
                values: resolved,
                negate,
            })
        }
    }
}

fn resolve(
    attribute: Attribute,
    value: &Value,
    field: &str,
    context: &Context,
    catalog: &dyn Catalog,
) -> Result<String, JqlError> {
    if let Value::Function(name) = value {
        return if matches!(attribute, Attribute::Assignee | Attribute::Reporter)
            && name.eq_ignore_ascii_case("currentUser")
        {
            Ok(context.account_id.clone())
        } else {
            Err(JqlError::UnknownFunction(name.clone()))
        };
    }
    let text = plain_text(value)?;
    let found = match attribute {
        Attribute::Project => catalog.project_id(text),
        Attribute::IssueType => catalog.issue_type_id(text),
        Attribute::Status => catalog.status_id(text),
        Attribute::Priority => catalog.priority_id(text),
        // Account ids are not checked against the directory.
        Attribute::Assignee | Attribute::Reporter => Some(text.to_owned()),
    };
    found.ok_or_else(|| JqlError::UnknownValue {
        value: text.to_owned(),
        field: field.to_owned(),
    })
}

fn compile_issue(clause: &Clause, field: &str) -> Result<Condition, JqlError> {
    let comparison = match clause.operator {
        Operator::Lt => Some(Comparison::Lt),
        Operator::Le => Some(Comparison::Le),
        Operator::Gt => Some(Comparison::Gt),
        Operator::Ge => Some(Comparison::Ge),
        _ => None,
    };
    if let Some(comparison) = comparison {
        let Operand::Value(value) = &clause.operand else {
            return Err(unsupported(clause));
        };
        let text = plain_text(value)?.trim();
        let bound = if let Ok(id) = text.parse::<u64>() {
            IssueBound::Id(id)
        } else if is_issue_key(text) {
            let (project, number) = text.rsplit_once('-').unwrap_or_default();
            IssueBound::Key {
                project: project.to_ascii_uppercase(),
                number: number.parse().unwrap_or_default(),
            }
        } else {
            return Err(JqlError::InvalidKey(text.to_owned()));
        };
        return Ok(Condition::IssueOrder { comparison, bound });
    }
    let (values, negate) = membership(clause)?;
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for value in values {
        let Some(value) = value else {
            // Every issue has a key and an id: `key IS EMPTY` matches nothing.
            continue;
        };
        let text = plain_text(value)?.trim();
        if let Ok(id) = text.parse::<u64>() {
            ids.push(id);
        } else if field == "key" && is_issue_key(text) {
            keys.push(text.to_ascii_uppercase());
        } else if field == "key" {
            return Err(JqlError::InvalidKey(text.to_owned()));
        } else {
            return Err(JqlError::UnknownValue {
                value: text.to_owned(),
                field: field.to_owned(),
            });
        }
    }
    Ok(Condition::IssueIs { keys, ids, negate })
}

/// `PROJECT-N`: a letter, then letters, digits or `_`, a dash and a positive number.
pub(crate) fn is_issue_key(text: &str) -> bool {
    let Some((project, number)) = text.rsplit_once('-') else {
        return false;
    };
    project
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
}

fn compile_time(clause: &Clause, field: &str, context: &Context) -> Result<Condition, JqlError> {
    let comparison = match clause.operator {
        Operator::Lt => Comparison::Lt,
        Operator::Le => Comparison::Le,
        Operator::Eq => Comparison::Eq,
        Operator::Ne => Comparison::Ne,
        Operator::Ge => Comparison::Ge,
        Operator::Gt => Comparison::Gt,
        _ => return Err(unsupported(clause)),
    };
    let Operand::Value(value) = &clause.operand else {
        return Err(unsupported(clause));
    };
    let at = match value {
        Value::Function(name) if name.eq_ignore_ascii_case("now") => context.now,
        Value::Function(name) => return Err(JqlError::UnknownFunction(name.clone())),
        Value::Text { text, quoted } => {
            date_operand(text, *quoted, context).ok_or_else(|| JqlError::InvalidDate {
                value: text.clone(),
                field: clause.field.clone(),
            })?
        }
    };
    let field = if field == "updated" {
        TimeField::Updated
    } else {
        TimeField::Created
    };
    Ok(Condition::Time {
        field,
        comparison,
        at_ms: at.timestamp_millis(),
    })
}

/// Reads a date operand: an absolute literal in the caller's zone, a period relative to `now`,
/// or (unquoted digits only) epoch milliseconds.
fn date_operand(text: &str, quoted: bool, context: &Context) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(local) = parse_local_literal(text) {
        return Some(local_to_instant(local, context.zone));
    }
    if !quoted && !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis);
    }
    let period = parse_period(text)?;
    context.now.checked_add_signed(period)
}

/// `yyyy-MM-dd HH:mm`, `yyyy/MM/dd HH:mm`, `yyyy-MM-dd`, `yyyy/MM/dd` (no seconds, no offset).
pub(crate) fn parse_local_literal(text: &str) -> Option<NaiveDateTime> {
    let (date, time) = match text.split_once(' ') {
        Some((date, time)) => (date, Some(time.trim())),
        None => (text, None),
    };
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date, "%Y/%m/%d"))
        .ok()?;
    let time = match time {
        None => NaiveTime::MIN,
        Some(time) => {
            // Exactly HH:mm: chrono alone would also accept a single-digit hour.
            let (hours, minutes) = time.split_once(':')?;
            if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
                return None;
            }
            NaiveTime::from_hms_opt(hours.parse().ok()?, minutes.parse().ok()?, 0)?
        }
    };
    Some(date.and_time(time))
}

/// A local wall-clock time in `zone` as an instant, with java.time's rules: a time inside a DST
/// gap moves later by the length of the gap; an ambiguous time takes the earlier instant.
pub(crate) fn local_to_instant(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, later) => earlier.min(later).with_timezone(&Utc),
        LocalResult::None => {
            // Read the local time with the offset in force just before the gap.
            let before_gap = local
                .checked_sub_signed(TimeDelta::hours(26))
                .unwrap_or(local);
            let offset = zone.offset_from_utc_datetime(&before_gap);
            let seconds = chrono::Offset::fix(&offset).local_minus_utc();
            local
                .checked_sub_signed(TimeDelta::seconds(i64::from(seconds)))
                .unwrap_or(local)
                .and_utc()
        }
    }
}

/// `-15m`, `-2h`, `-1d`, `-1w`, `4w 2d`, `-15` (minutes): a signed sum of periods.
pub(crate) fn parse_period(text: &str) -> Option<TimeDelta> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let rest = rest.trim_start();
    if rest.is_empty() {
        return None;
    }
    let mut total = TimeDelta::zero();
    let mut groups = 0;
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        let amount: i64 = digits.parse().ok()?;
        let unit = chars.next_if(|c| c.is_ascii_alphabetic());
        let minutes_per_unit = match unit.map(|u| u.to_ascii_lowercase()) {
            None | Some('m') => 1,
            Some('h') => 60,
            Some('d') => 24 * 60,
            Some('w') => 7 * 24 * 60,
            Some(_) => return None,
        };
        if unit.is_none() && chars.peek().is_some() {
            return None;
        }
        total = total.checked_add(&TimeDelta::try_minutes(
            amount.checked_mul(minutes_per_unit)?,
        )?)?;
        groups += 1;
    }
    (groups > 0).then(|| total * sign)
}

impl fmt::Display for SortField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SortField::Updated => "updated",
            SortField::Created => "created",
            SortField::Key => "key",
            SortField::Id => "id",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site;

    impl Catalog for Site {
        fn project_id(&self, value: &str) -> Option<String> {
            match value.to_ascii_uppercase().as_str() {
                "ENG" | "10000" | "ENGINEERING" => Some("10000".into()),
                "OPS" | "10001" => Some("10001".into()),
                _ => None,
            }
        }
        fn status_id(&self, value: &str) -> Option<String> {
            value.eq_ignore_ascii_case("done").then(|| "10002".into())
        }
        fn issue_type_id(&self, value: &str) -> Option<String> {
            value.eq_ignore_ascii_case("bug").then(|| "10003".into())
        }
        fn priority_id(&self, value: &str) -> Option<String> {
            value.eq_ignore_ascii_case("high").then(|| "2".into())
        }
    }

    struct Issue {
        id: u64,
        key: &'static str,
        project: &'static str,
        assignee: Option<&'static str>,
        labels: Vec<String>,
        updated_ms: i64,
    }

    impl Subject for Issue {
        fn id(&self) -> u64 {
            self.id
        }
        fn key(&self) -> &str {
            self.key
        }
        fn attribute(&self, attribute: Attribute) -> Option<&str> {
            match attribute {
                Attribute::Project => Some(self.project),
                Attribute::Assignee => self.assignee,
                Attribute::Status => Some("10002"),
                _ => None,
            }
        }
        fn created_ms(&self) -> i64 {
            0
        }
        fn updated_ms(&self) -> i64 {
            self.updated_ms
        }
        fn labels(&self) -> &[String] {
            &self.labels
        }
        fn summary(&self) -> &str {
            "Checkout flow broken"
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid instant")
            .with_timezone(&Utc)
    }

    fn context(zone: &str) -> Context {
        Context {
            now: utc("2026-11-22T09:00:00Z"),
            zone: zone.parse().expect("zone"),
            account_id: "712020:me".into(),
        }
    }

    fn compile(jql: &str, zone: &str) -> Result<Compiled, JqlError> {
        compile_bounded(jql, &context(zone), &Site)
    }

    /// The instant a single `updated >= <literal>` clause compiles to.
    fn literal_instant(literal: &str, zone: &str) -> DateTime<Utc> {
        let compiled = compile(&format!("updated >= {literal}"), zone).expect("compiles");
        match compiled.filter {
            Filter::Condition(Condition::Time { at_ms, .. }) => {
                DateTime::from_timestamp_millis(at_ms).expect("in range")
            }
            other => panic!("unexpected filter {other:?}"),
        }
    }

    #[test]
    fn date_literals_are_read_in_a_utc_plus_10_users_zone() {
        // Brisbane has no DST: always +10:00.
        let zone = "Australia/Brisbane";
        assert_eq!(
            literal_instant("\"2026-03-01 09:14\"", zone),
            utc("2026-02-28T23:14:00Z")
        );
        assert_eq!(
            literal_instant("\"2026/03/01 09:14\"", zone),
            utc("2026-02-28T23:14:00Z")
        );
        assert_eq!(
            literal_instant("\"2026-03-01\"", zone),
            utc("2026-02-28T14:00:00Z")
        );
        assert_eq!(
            literal_instant("'2026/03/01'", zone),
            utc("2026-02-28T14:00:00Z")
        );
        assert_eq!(
            literal_instant("2026-03-01", zone),
            utc("2026-02-28T14:00:00Z")
        );
    }

    #[test]
    fn date_literals_are_read_in_a_utc_minus_8_users_zone_across_dst() {
        let zone = "America/Los_Angeles";
        // Winter: PST, UTC-8.
        assert_eq!(
            literal_instant("\"2026-01-15 22:30\"", zone),
            utc("2026-01-16T06:30:00Z")
        );
        // Summer: PDT, UTC-7.
        assert_eq!(
            literal_instant("\"2026-07-15 22:30\"", zone),
            utc("2026-07-16T05:30:00Z")
        );
        // Spring forward 2026-03-08 02:00 → 03:00: 02:30 does not exist and moves 1h later.
        assert_eq!(
            literal_instant("\"2026-03-08 02:30\"", zone),
            utc("2026-03-08T10:30:00Z")
        );
        assert_eq!(
            literal_instant("\"2026-03-08 03:00\"", zone),
            utc("2026-03-08T10:00:00Z")
        );
        // Fall back 2026-11-01 02:00 → 01:00: 01:30 happens twice; the earlier (PDT) wins.
        assert_eq!(
            literal_instant("\"2026-11-01 01:30\"", zone),
            utc("2026-11-01T08:30:00Z")
        );
        assert_eq!(
            literal_instant("\"2026-11-01 02:30\"", zone),
            utc("2026-11-01T10:30:00Z")
        );
    }

    #[test]
    fn date_literals_follow_southern_hemisphere_dst() {
        let zone = "Australia/Sydney";
        // AEDT (+11) in March, AEST (+10) in July.
        assert_eq!(
            literal_instant("\"2026-03-01 09:15\"", zone),
            utc("2026-02-28T22:15:00Z")
        );
        assert_eq!(
            literal_instant("\"2026-07-01 09:15\"", zone),
            utc("2026-06-30T23:15:00Z")
        );
        // 2026-10-04 02:00 → 03:00 gap.
        assert_eq!(
            literal_instant("\"2026-10-04 02:15\"", zone),
            utc("2026-10-03T16:15:00Z")
        );
    }

    #[test]
    fn the_same_literal_means_different_instants_for_different_users() {
        let east = literal_instant("\"2026-03-01 09:14\"", "Australia/Brisbane");
        let west = literal_instant("\"2026-03-01 09:14\"", "America/Los_Angeles");
        let utc_reading = literal_instant("\"2026-03-01 09:14\"", "UTC");
        assert_eq!(utc_reading - east, TimeDelta::hours(10));
        assert_eq!(west - utc_reading, TimeDelta::hours(8));
    }

    #[test]
    fn periods_are_relative_to_now() {
        let now = context("UTC").now;
        assert_eq!(literal_instant("-15m", "UTC"), now - TimeDelta::minutes(15));
        assert_eq!(literal_instant("-2h", "UTC"), now - TimeDelta::hours(2));
        assert_eq!(literal_instant("\"-1d\"", "UTC"), now - TimeDelta::days(1));
        assert_eq!(literal_instant("-1w", "UTC"), now - TimeDelta::weeks(1));
        assert_eq!(literal_instant("-15", "UTC"), now - TimeDelta::minutes(15));
        assert_eq!(
            literal_instant("\"-4w 2d\"", "UTC"),
            now - TimeDelta::days(30)
        );
        assert_eq!(literal_instant("now()", "UTC"), now);
    }

    #[test]
    fn malformed_date_literals_are_rejected_with_jiras_message() {
        for literal in [
            "\"2026-03-01 9:5\"",
            "\"2026-03-01T09:14\"",
            "\"yesterday\"",
            "\"2026-13-01\"",
            "\"2026-03-01 09:14:05\"",
        ] {
            let error = compile(&format!("updated >= {literal}"), "UTC").expect_err(literal);
            assert!(
                error.to_string().starts_with("Date value '"),
                "{literal}: {error}"
            );
        }
    }

    #[test]
    fn bounded_rule_and_order_by_limits() {
        assert_eq!(compile("", "UTC"), Err(JqlError::Unbounded));
        assert_eq!(compile("   ", "UTC"), Err(JqlError::Unbounded));
        assert_eq!(
            compile("order by key desc", "UTC"),
            Err(JqlError::Unbounded)
        );
        assert!(compile("assignee = currentUser() order by key", "UTC").is_ok());
        let eight = "project = ENG ORDER BY updated, created, key, id, updated, created, key, id";
        assert_eq!(compile(eight, "UTC"), Err(JqlError::TooManyOrderByFields));
        assert_eq!(
            JqlError::Unbounded.to_string(),
            "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
        );
    }

    #[test]
    fn order_by_defaults_and_tie_breaker() {
        let compiled = compile("project = ENG ORDER BY updated ASC", "UTC").expect("compiles");
        assert_eq!(
            compiled.order,
            vec![
                SortTerm {
                    field: SortField::Updated,
                    descending: false
                },
                SortTerm {
                    field: SortField::Id,
                    descending: false
                },
            ]
        );
        let compiled = compile("project = ENG order by key", "UTC").expect("compiles");
        assert_eq!(
            compiled.order[0],
            SortTerm {
                field: SortField::Key,
                descending: false
            }
        );
        assert_eq!(
            compile("project = ENG ORDER BY labels", "UTC"),
            Err(JqlError::UnsortableField("labels".into()))
        );
        assert_eq!(
            compile("project = ENG ORDER BY rank", "UTC"),
            Err(JqlError::UnknownField("rank".into()))
        );
    }

    #[test]
    fn errors_carry_jiras_texts() {
        assert_eq!(
            compile("updatd >= -1d", "UTC")
                .expect_err("unknown field")
                .to_string(),
            "Field 'updatd' does not exist or you do not have permission to view it."
        );
        assert_eq!(
            compile("project = XYZ", "UTC")
                .expect_err("unknown project")
                .to_string(),
            "The value 'XYZ' does not exist for the field 'project'."
        );
        assert_eq!(
            compile("project > ENG", "UTC")
                .expect_err("bad operator")
                .to_string(),
            "The operator '>' is not supported by the 'project' field."
        );
        let syntax = compile("project = ENG foo", "UTC").expect_err("syntax");
        assert_eq!(
            syntax.to_string(),
            "Error in the JQL Query: Expecting either 'OR' or 'AND' but got 'foo'. (line 1, character 15)"
        );
        for bad in [
            "project =",
            "(project = ENG",
            "project in ENG",
            "project = \"ENG",
            "= ENG",
            "project = ENG AND",
        ] {
            let error = compile(bad, "UTC").expect_err(bad);
            assert!(
                error.to_string().starts_with("Error in the JQL Query: "),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            compile("assignee = someone()", "UTC")
                .expect_err("function")
                .to_string(),
            "Unable to find JQL function 'someone()'."
        );
        assert_eq!(
            compile("key = foo", "UTC").expect_err("key").to_string(),
            "The issue key 'foo' for field 'key' is invalid."
        );
    }

    #[test]
    fn evaluation_follows_jira_semantics() {
        let mut issue = Issue {
            id: 10005,
            key: "ENG-5",
            project: "10000",
            assignee: None,
            labels: vec!["checkout".into()],
            updated_ms: utc("2026-03-01T00:00:00Z").timestamp_millis(),
        };
        let check = |jql: &str, issue: &Issue| {
            compile(jql, "UTC")
                .unwrap_or_else(|e| panic!("{jql}: {e}"))
                .filter
                .matches(issue)
        };
        assert!(check("project = eng", &issue));
        assert!(check("project in (OPS, Engineering)", &issue));
        assert!(!check("project not in (ENG)", &issue));
        assert!(check(
            "project = ENG AND (status = Done OR labels = nope)",
            &issue
        ));
        assert!(check("NOT project = OPS", &issue));
        assert!(check("key = eng-5", &issue));
        assert!(check("issuekey in (ENG-4, 10005)", &issue));
        assert!(check("id = 10005", &issue));
        assert!(!check("id != 10005", &issue));
        // Issue order: ids numerically, keys by number within their own project.
        assert!(check("id >= 10005 AND id < 10006", &issue));
        assert!(!check("id > 10005", &issue));
        assert!(check("id <= 10005 AND id > 9999", &issue));
        assert!(check("key > ENG-4 AND issuekey <= ENG-5", &issue));
        assert!(
            !check("key > OPS-1", &issue),
            "other projects never compare"
        );
        assert!(check("assignee is EMPTY", &issue));
        assert!(
            !check("assignee != currentUser()", &issue),
            "!= skips unassigned"
        );
        assert!(!check("assignee = currentUser()", &issue));
        issue.assignee = Some("712020:me");
        assert!(check("assignee = currentUser()", &issue));
        assert!(check("assignee is not empty", &issue));
        assert!(check("labels = checkout", &issue));
        assert!(!check("labels != checkout", &issue));
        assert!(check("summary ~ \"FLOW\"", &issue));
        assert!(check(
            "updated >= \"2026-03-01\" && updated < \"2026-03-01 00:01\"",
            &issue
        ));
        assert!(check("updated = \"2026-03-01\"", &issue));
        assert!(!check("updated > \"2026-03-01\"", &issue));
        assert!(check("project = ENG || id = 1", &issue));
    }

    #[test]
    fn time_bounds_come_from_the_top_level_conjunction() {
        let compiled = compile(
            "project = ENG AND updated >= \"2026-03-01\" AND updated < \"2026-03-02\"",
            "UTC",
        )
        .expect("compiles");
        let (lower, upper) = compiled.filter.time_bounds(TimeField::Updated);
        assert_eq!(lower, Some(utc("2026-03-01T00:00:00Z").timestamp_millis()));
        assert_eq!(
            upper,
            Some(utc("2026-03-02T00:00:00Z").timestamp_millis() - 1)
        );
        let compiled = compile("updated >= -1d OR project = ENG", "UTC").expect("compiles");
        assert_eq!(
            compiled.filter.time_bounds(TimeField::Updated),
            (None, None)
        );
    }
}
