//! Where settings come from besides the TOML file: secrets kept in files or systemd
//! credentials, and the `ATLASSYNC_*` environment overlay, which must name real keys.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::ConfigError;
use super::values::LenientString;

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ATLASSYNC_";

/// Variables that carry the prefix but are not configuration keys: they are read by other
/// parts of the binary, so the overlay skips them instead of refusing them.
pub const NON_CONFIG_VARIABLES: &[&str] = &[
    // The `emulator` command's `--client-secret`.
    "ATLASSYNC_EMULATOR_CLIENT_SECRET",
];

/// Where the systemd unit's credentials come from (`LoadCredential=NAME:atlassync.NAME`
/// searches it). Outside the unit, commands read the same files, so `atlassync check-config`
/// or `grants list` run by root see the secrets the service sees.
pub const CREDSTORE: &str = "/etc/credstore";

/// The prefix of atlassync's files in [`CREDSTORE`].
pub const CREDSTORE_PREFIX: &str = "atlassync.";

/// Where credentials are looked up for keys that are not set.
#[derive(Debug, Clone)]
pub(super) enum Credentials {
    /// None are (a configuration built from a TOML string alone).
    Disabled,
    /// `$CREDENTIALS_DIRECTORY/<name>`: running under systemd with `LoadCredential=`.
    Directory(PathBuf),
    /// `<credstore>/atlassync.<name>`: a command run by hand. Files it may not examine (the
    /// credstore is root's alone) count as absent.
    Credstore(PathBuf),
}

impl Credentials {
    /// `$CREDENTIALS_DIRECTORY` when set, else the credstore.
    pub(super) fn from_environment() -> Self {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => Self::Directory(PathBuf::from(dir)),
            _ => Self::Credstore(PathBuf::from(CREDSTORE)),
        }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        match self {
            Self::Disabled => None,
            Self::Directory(dir) => Some(dir.join(name)),
            Self::Credstore(dir) => Some(dir.join(format!("{CREDSTORE_PREFIX}{name}"))),
        }
    }

    /// Where the credential `name` would be read, for messages.
    pub(super) fn describe(&self, name: &str) -> String {
        match self.path(name) {
            Some(path) => format!("the credential `{name}` ({})", path.display()),
            None => format!("the credential `{name}`"),
        }
    }

    /// The file of credential `name`, if there is one. An error names `key` and the file.
    pub(super) fn find(&self, name: &str, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.path(name) else {
            return Ok(None);
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(path)),
            Ok(_) => Err(ConfigError::invalid(
                key,
                format!("credential {} is not a file", path.display()),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e)
                if e.kind() == ErrorKind::PermissionDenied
                    && matches!(self, Self::Credstore(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(ConfigError::invalid(
                key,
                format!("cannot read credential {}: {e}", path.display()),
            )),
        }
    }
}

/// Where one secret came from, for `check-config` to show (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// The dotted key, e.g. `atlassian.client_secret`.
    pub key: String,
    /// `set directly`, `file /etc/...` or `credential /run/credentials/...`.
    pub from: String,
}

/// Resolves secret `key`: the value itself, or `<key>_file`, or else the credential
/// `credential`. Setting both the value and the file is an error; so is an empty secret.
/// Errors name the key (or `<key>_file`) and the file.
pub(super) fn secret(
    value: Option<LenientString>,
    file: Option<PathBuf>,
    key: &str,
    credential: &str,
    credentials: &Credentials,
    sources: &mut Vec<SecretSource>,
) -> Result<Option<SecretString>, ConfigError> {
    let file_key = format!("{key}_file");
    let (text, from, named) = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                key,
                format!("set either {key} or {file_key}, not both"),
            ));
        }
        (Some(value), None) => (value.0, "set directly".to_owned(), key.to_owned()),
        (None, Some(file)) => (
            read_secret_file(&file, &file_key)?,
            format!("file {}", file.display()),
            file_key,
        ),
        (None, None) => match credentials.find(credential, key)? {
            Some(path) => (
                read_secret_file(&path, key)?,
                format!("credential {}", path.display()),
                key.to_owned(),
            ),
            None => return Ok(None),
        },
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::invalid(
            &named,
            format!("must not be empty ({from})"),
        ));
    }
    sources.push(SecretSource {
        key: key.to_owned(),
        from,
    });
    Ok(Some(SecretString::from(text.to_owned())))
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// Keys whose value is a table with keys of the operator's choosing (cloud ids).
const TABLE_KEYS: &[&str] = &["jira.site_jql"];

/// Refuses an `ATLASSYNC_*` variable that names no configuration key (a typo would otherwise
/// be ignored or change the meaning of another key), naming it and the nearest real one.
/// `known_keys` are dotted (`tokens.refresh_margin`).
pub(super) fn check_environment(
    variables: impl IntoIterator<Item = (OsString, OsString)>,
    known_keys: &BTreeSet<String>,
) -> Result<(), ConfigError> {
    for (name, _) in variables {
        // figment skips names that are not UTF-8, so they change nothing.
        let Some(name) = name.to_str() else { continue };
        let upper = name.to_ascii_uppercase();
        // figment matches the prefix case-insensitively; so does this check.
        let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_CONFIG_VARIABLES.contains(&upper.as_str()) {
            continue;
        }
        let dotted = rest.to_ascii_lowercase().replace("__", ".");
        if known_keys.contains(&dotted)
            || TABLE_KEYS.iter().any(|table| {
                dotted
                    .strip_prefix(table)
                    .is_some_and(|r| r.starts_with('.'))
            })
        {
            continue;
        }
        let nearest = known_keys
            .iter()
            .min_by_key(|key| edit_distance(&upper, &variable_of(key)))
            .cloned()
            .unwrap_or_default();
        return Err(ConfigError::UnknownVariable {
            variable: name.to_owned(),
            suggestion: variable_of(&nearest),
            key: nearest,
        });
    }
    Ok(())
}

/// `tokens.refresh_margin` → `ATLASSYNC_TOKENS__REFRESH_MARGIN`.
pub fn variable_of(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// The dotted names of every leaf of `value` (a serialized default configuration).
pub(super) fn leaf_keys(value: &serde_json::Value) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (name, child) in map {
                    let key = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&key, child, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", value, &mut out);
    out
}

/// Levenshtein distance over bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    fn vars(list: &[&str]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|n| (OsString::from(n), OsString::from("x")))
            .collect()
    }

    #[test]
    fn a_misspelt_variable_is_refused_with_the_nearest_key() {
        let known = keys(&[
            "tokens.refresh_margin",
            "tokens.reuse_leeway",
            "database.url",
        ]);
        let err = check_environment(vars(&["ATLASSYNC_TOKENS__REFRESH_MARGN"]), &known)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ATLASSYNC_TOKENS__REFRESH_MARGN`"), "{err}");
        assert!(err.contains("`ATLASSYNC_TOKENS__REFRESH_MARGIN`"), "{err}");
        // A single underscore is not a nesting.
        let err = check_environment(vars(&["ATLASSYNC_DATABASE_URL"]), &known)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ATLASSYNC_DATABASE__URL`"), "{err}");
    }

    #[test]
    fn real_keys_other_programs_variables_and_known_non_keys_pass() {
        let known = keys(&["tokens.refresh_margin", "database.url"]);
        check_environment(
            vars(&[
                "ATLASSYNC_TOKENS__REFRESH_MARGIN",
                "atlassync_database__url",
                "ATLASSYNC_EMULATOR_CLIENT_SECRET",
                "_ATLASSYNC_PG_BIN",
                "PATH",
            ]),
            &known,
        )
        .unwrap();
    }

    #[test]
    fn leaf_keys_lists_every_key_of_every_section() {
        let value = serde_json::json!({"a": {"x": null, "y": [1]}, "b": {"z": "s"}});
        assert_eq!(leaf_keys(&value), keys(&["a.x", "a.y", "b.z"]));
    }
}
