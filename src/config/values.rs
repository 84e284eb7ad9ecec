//! Value types the configuration is written in: durations like `30d`, cron expressions,
//! scope lists, and strings that the environment might have turned into numbers.

use std::fmt;
use std::time::Duration;

use chrono::TimeDelta;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

/// A string that also accepts numbers and booleans: figment parses `ATLASSYNC_X=1234` as an
/// integer, and a client id or token may well look like one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LenientString(pub String);

impl From<&str> for LenientString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Serialize for LenientString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = LenientString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration as written (`90s`, `5m`, `2h`, `30d`), parsed during validation so the error
/// can name the key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationValue(LenientString);

impl From<&str> for DurationValue {
    fn from(value: &str) -> Self {
        Self(value.into())
    }
}

impl DurationValue {
    /// A timeout or interval for the runtime (`tokio`, `reqwest`).
    pub(super) fn parse(&self, key: &str) -> Result<Duration, ConfigError> {
        parse_duration(&self.0.0).map_err(|message| ConfigError::invalid(key, message))
    }

    /// A span of business time, added to instants from the clock. Bounded to a century, so
    /// that arithmetic on instants can never overflow.
    pub(super) fn parse_span(&self, key: &str) -> Result<TimeDelta, ConfigError> {
        let duration = self.parse(key)?;
        TimeDelta::from_std(duration)
            .ok()
            .filter(|span| *span <= TimeDelta::days(36_525))
            .ok_or_else(|| ConfigError::invalid(key, "must be at most 100 years"))
    }
}

/// Parses `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`; several parts may be
/// combined (`1h30m`). A bare number is rejected: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration such as 30s, 5m, 2h or 30d");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(unit_ms).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(bad)?;
    }
    if total.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(total)
}

/// Renders a duration the way an operator would write it (`30d`, `90s`).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 || secs == 0 {
        format!("{}ms", duration.as_millis())
    } else if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The OAuth scopes to request: a TOML array, or one space-separated string (the form an
/// environment variable can hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scopes(pub Vec<String>);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let written = Written::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected an array of scope strings or one space-separated string",
            )
        })?;
        let list = match written {
            Written::One(text) => vec![text],
            Written::Many(list) => list,
        };
        Ok(Scopes(
            list.iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// A validated cron expression in UTC. Five fields (minute first) or six (seconds first)
/// are accepted; [`Schedule::as_six_fields`] is what the scheduler is given.
#[derive(Clone)]
pub struct Schedule {
    written: String,
    six_fields: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.written)
    }
}

impl Schedule {
    /// Parses `expression`, naming `key` in the error.
    pub fn parse(expression: &str, key: &str) -> Result<Self, ConfigError> {
        let written = expression.trim().to_owned();
        let six_fields = match written.split_whitespace().count() {
            5 => format!("0 {written}"),
            6 => written.clone(),
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{written}` is not a cron expression: expected 5 fields, or 6 with a leading seconds field"
                    ),
                ));
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(&six_fields)
            .map_err(|e| {
                ConfigError::invalid(key, format!("`{written}` is not a cron expression: {e}"))
            })?;
        Ok(Self {
            written,
            six_fields,
            cron,
        })
    }

    /// The expression with an explicit seconds field.
    pub fn as_six_fields(&self) -> &str {
        &self.six_fields
    }

    /// The latest tick at or before `at`: the instant a run triggered now belongs to, the
    /// same on every replica.
    pub fn latest_tick(&self, at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        self.cron.find_previous_occurrence(&at, true).unwrap_or(at)
    }

    /// The next tick strictly after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_at_every_scale() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn durations_without_units_or_with_junk_are_rejected() {
        for bad in ["", "30", "d", "3x", "-5m", "5 m", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn five_field_cron_gets_a_seconds_field() {
        let schedule = Schedule::parse("*/5 * * * *", "schedule.x").expect("valid");
        assert_eq!(schedule.as_six_fields(), "0 */5 * * * *");
        assert!(Schedule::parse("*/5 * * * * *", "schedule.x").is_ok());
        let err = Schedule::parse("every minute", "schedule.x").expect_err("invalid");
        assert_eq!(err.key(), Some("schedule.x"));
    }
}
