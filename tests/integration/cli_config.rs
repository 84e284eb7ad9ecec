//! The operator contract of the binary: every broken configuration exits 2 naming the key;
//! `invite` prints the link alone on stdout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("atlassync-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("key"),
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
        )
        .unwrap();
        std::fs::write(dir.join("short-key"), "c2hvcnQ=\n").unwrap();
        std::fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A valid configuration with `edit` applied to its text.
    fn config(&self, edit: impl Fn(String) -> String) -> PathBuf {
        let text = format!(
            r#"[database]
url = "postgres://atlassync@127.0.0.1:5432/atlassync"

[atlassian]
client_id = "Xy12AbCdEf"
client_secret_file = "{secret}"
redirect_uri = "https://sync.example.com/callback"
scopes = ["read:me", "offline_access", "read:jira-work", "read:jira-user", "read:space:confluence"]

[tokens]
keepalive_after = "30d"
inactivity_expiry = "90d"

[schedule]
token_sweep = "*/30 * * * * *"
jira_sync = "*/5 * * * *"

[http]
listen = "127.0.0.1:8080"
public_url = "https://sync.example.com/"

[crypto]
key_file = "{key}"
"#,
            secret = self.path("secret").display(),
            key = self.path("key").display(),
        );
        let path = self.path("atlassync.toml");
        std::fs::write(&path, edit(text)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn atlassync(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atlassync"));
    command.arg("--config").arg(config).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ATLASSYNC_") {
            command.env_remove(key);
        }
    }
    // No credentials unless a test passes its own directory: never the host's credstore.
    let none = config.with_file_name("no-credentials");
    command.env("CREDENTIALS_DIRECTORY", &none);
    command.envs(env.iter().copied()).env_remove("RUST_LOG");
    command.output().expect("binary runs")
}

#[track_caller]
fn assert_rejected(output: Output, key: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected exit 2 for {key}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("`{key}`")),
        "stderr should name `{key}`: {stderr}"
    );
}

#[test]
fn a_valid_configuration_passes_check_config() {
    let scratch = Scratch::new();
    let output = atlassync(&scratch.config(|t| t), &[], &["check-config"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A change to the valid configuration's text.
type Edit = Box<dyn Fn(String) -> String>;

#[test]
fn every_broken_configuration_exits_2_naming_the_key() {
    let scratch = Scratch::new();
    let replace = |from: &'static str, to: &'static str| move |t: String| t.replace(from, to);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "database.url",
            Box::new(replace(
                "url = \"postgres://atlassync@127.0.0.1:5432/atlassync\"\n",
                "",
            )),
        ),
        (
            "database.url",
            Box::new(replace("postgres://atlassync", "mysql://atlassync")),
        ),
        (
            "atlassian.client_id",
            Box::new(replace("client_id = \"Xy12AbCdEf\"\n", "")),
        ),
        (
            "atlassian.client_secret",
            Box::new(|t: String| {
                t.lines()
                    .filter(|l| !l.starts_with("client_secret_file"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        ),
        (
            "atlassian.client_secret_file",
            Box::new(|t: String| t.replace("/secret\"", "/no-such-secret\"")),
        ),
        (
            "atlassian.redirect_uri",
            Box::new(replace("https://sync.example.com/callback", "not a url")),
        ),
        (
            "atlassian.auth_base_url",
            Box::new(replace(
                "[tokens]",
                "auth_base_url = \"ftp://auth\"\n[tokens]",
            )),
        ),
        (
            "atlassian.api_base_url",
            Box::new(replace(
                "[tokens]",
                "api_base_url = \"api.atlassian.com\"\n[tokens]",
            )),
        ),
        (
            "atlassian.scopes",
            Box::new(replace("\"offline_access\", ", "")),
        ),
        (
            "tokens.keepalive_after",
            Box::new(replace(
                "keepalive_after = \"30d\"",
                "keepalive_after = \"90d\"",
            )),
        ),
        (
            "tokens.inactivity_expiry",
            Box::new(replace(
                "inactivity_expiry = \"90d\"",
                "inactivity_expiry = \"ninety days\"",
            )),
        ),
        (
            "tokens.refresh_margin",
            Box::new(replace("[tokens]", "[tokens]\nrefresh_margin = \"5\"")),
        ),
        (
            "tokens.lease_ttl",
            Box::new(replace("[tokens]", "[tokens]\nlease_ttl = \"15m\"")),
        ),
        (
            "schedule.token_sweep",
            Box::new(replace("*/30 * * * * *", "every 30 seconds")),
        ),
        (
            "schedule.jira_sync",
            Box::new(replace("*/5 * * * *", "*/5 * * 13 *")),
        ),
        (
            "http.listen",
            Box::new(replace("127.0.0.1:8080", "localhost")),
        ),
        (
            "http.public_url",
            Box::new(replace("https://sync.example.com/\"", "sync.example.com\"")),
        ),
        (
            "crypto.key_file",
            Box::new(|t: String| {
                t.lines()
                    .filter(|l| !l.starts_with("key_file"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        ),
        (
            "crypto.key_file",
            Box::new(|t: String| t.replace("/key\"", "/missing-key\"")),
        ),
        (
            "crypto.key_file",
            Box::new(|t: String| t.replace("/key\"", "/short-key\"")),
        ),
        (
            "tokens.keepalive",
            Box::new(replace("keepalive_after", "keepalive")),
        ),
        (
            "alerts.webhook_secret",
            Box::new(|t: String| {
                format!("{t}\n[alerts]\nwebhook_url = \"https://hooks.example.com/x\"\n")
            }),
        ),
        (
            "jira.jql",
            Box::new(|t: String| format!("{t}\n[jira]\njql = \"project = ENG ORDER BY key\"\n")),
        ),
        (
            "sync.run_share_percent",
            Box::new(|t: String| format!("{t}\n[sync]\nrun_share_percent = 0\n")),
        ),
        (
            "sync.run_share_percent",
            Box::new(|t: String| format!("{t}\n[sync]\nrun_share_percent = 101\n")),
        ),
    ];
    for (key, edit) in cases {
        let output = atlassync(&scratch.config(edit), &[], &["check-config"]);
        assert_rejected(output, key);
    }
}

#[test]
fn environment_variables_override_the_file_and_are_validated_too() {
    let scratch = Scratch::new();
    let config = scratch.config(|t| t);
    let output = atlassync(
        &config,
        &[("ATLASSYNC_TOKENS__REAUTH_WARNING", "two weeks")],
        &["check-config"],
    );
    assert_rejected(output, "tokens.reauth_warning");

    let output = atlassync(
        &config,
        &[("ATLASSYNC_ATLASSIAN__SCOPES", "read:me read:jira-work")],
        &["check-config"],
    );
    assert_rejected(output, "atlassian.scopes");

    let output = atlassync(
        &config,
        &[
            (
                "ATLASSYNC_ATLASSIAN__SCOPES",
                "read:me offline_access read:jira-work",
            ),
            ("ATLASSYNC_ATLASSIAN__CLIENT_ID", "123456"),
            ("ATLASSYNC_SCHEDULE__TOKEN_SWEEP", "*/2 * * * * *"),
        ],
        &["check-config"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_subcommand_validates_before_doing_anything() {
    let scratch = Scratch::new();
    let broken = scratch.config(|t| t.replace("30d", "30 days"));
    for args in [
        &["migrate"][..],
        &["run"],
        &["grants", "list"],
        &["invite", "--label", "x"],
    ] {
        assert_rejected(atlassync(&broken, &[], args), "tokens.keepalive_after");
    }
}

#[test]
fn a_missing_config_file_named_on_the_command_line_exits_2() {
    let scratch = Scratch::new();
    let output = atlassync(&scratch.path("nope.toml"), &[], &["check-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope.toml"));
}

#[test]
fn bad_arguments_exit_2() {
    let scratch = Scratch::new();
    let output = atlassync(&scratch.config(|t| t), &[], &["invite"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn invite_prints_the_link_alone_on_stdout() {
    let scratch = Scratch::new();
    let output = atlassync(
        &scratch.config(|t| t),
        &[],
        &["invite", "--label", "Mia Krystof"],
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("https://sync.example.com/connect?invite="),
        "{stdout}"
    );
}

#[test]
fn secrets_never_appear_in_config_errors() {
    let scratch = Scratch::new();
    let config = scratch.config(|t| {
        t.replace(
            &format!(
                "client_secret_file = \"{}\"",
                scratch.path("secret").display()
            ),
            "client_secret = \"hunter2-very-secret\"",
        )
        .replace("30d", "bad")
    });
    let output = atlassync(&config, &[], &["check-config"]);
    assert_rejected(output.clone(), "tokens.keepalive_after");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}

#[test]
fn a_configuration_that_only_compresses_the_documented_lifetimes_is_valid() {
    let scratch = Scratch::new();
    // Atlassian's lifetimes divided by about 120: nothing else is set, so the lease, the
    // request timeout, the keep-alive age and the warning must follow from these.
    let compressed = scratch.config(|t| {
        t.replace(
            "[tokens]\nkeepalive_after = \"30d\"\ninactivity_expiry = \"90d\"",
            "[tokens]\nreuse_leeway = \"5s\"\ninactivity_expiry = \"90s\"\nabsolute_expiry = \"365s\"",
        )
    });
    let output = atlassync(&compressed, &[], &["check-config"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    for line in [
        "tokens.lease_ttl = 1s",
        "atlassian.request_timeout = 333ms",
        "tokens.keepalive_after = 30s",
        "tokens.reauth_warning = 14s",
    ] {
        assert!(shown.contains(line), "{line} missing from: {shown}");
    }
    // The same through the environment alone.
    let plain = scratch.config(|t| t.replace("keepalive_after = \"30d\"\n", ""));
    let output = atlassync(
        &plain,
        &[
            ("ATLASSYNC_TOKENS__REUSE_LEEWAY", "5s"),
            ("ATLASSYNC_TOKENS__INACTIVITY_EXPIRY", "90s"),
            ("ATLASSYNC_TOKENS__ABSOLUTE_EXPIRY", "365s"),
        ],
        &["check-config"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An explicit setting that breaks the rule is still refused, naming the key.
    let broken = scratch.config(|t| {
        t.replace(
            "[tokens]\nkeepalive_after = \"30d\"\ninactivity_expiry = \"90d\"",
            "[tokens]\nreuse_leeway = \"5s\"\nlease_ttl = \"10s\"",
        )
    });
    assert_rejected(
        atlassync(&broken, &[], &["check-config"]),
        "tokens.lease_ttl",
    );
}

#[test]
fn every_secret_is_read_from_the_credentials_directory() {
    let scratch = Scratch::new();
    let credentials = scratch.path("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let write = |name: &str, value: &str| std::fs::write(credentials.join(name), value).unwrap();
    write("client_secret", "cred-client-secret\n");
    write(
        "crypto_key",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    );
    write("database_password", "cred-db-password\n");
    write("admin_token", "cred-admin-token\n");
    write("webhook_secret", "cred-webhook-secret\n");
    // Not one secret in the file: they all come from the credentials.
    let without_secrets = |t: String| {
        t.lines()
            .filter(|l| !l.starts_with("client_secret_file") && !l.starts_with("key_file"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n[alerts]\nwebhook_url = \"https://hooks.example.com/x\"\n"
    };
    let config = scratch.config(without_secrets);
    let dir = credentials.to_str().unwrap();
    let output = atlassync(
        &config,
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["check-config"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for (key, name) in [
        ("atlassian.client_secret", "client_secret"),
        ("crypto.key_file", "crypto_key"),
        ("database.password", "database_password"),
        ("http.admin_token", "admin_token"),
        ("alerts.webhook_secret", "webhook_secret"),
    ] {
        let from = format!("{key}: ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&from))
            .unwrap_or_else(|| panic!("no source for {key} in: {stdout}"));
        assert!(
            line.ends_with(&credentials.join(name).display().to_string()),
            "{line}"
        );
    }
    assert!(
        !stdout.contains("cred-") && !stderr.contains("cred-"),
        "{stdout}{stderr}"
    );

    // The whole database URL may be a credential too, when the file has none.
    std::fs::remove_file(credentials.join("database_password")).unwrap();
    write(
        "database_url",
        "postgres://atlassync:pw@db.example.com/atlassync\n",
    );
    let without_url = scratch.config(|t| {
        t.lines()
            .filter(|l| !l.starts_with("url = ") && !l.starts_with("client_secret_file"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let output = atlassync(
        &without_url,
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["check-config"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "database.url: credential {}",
            credentials.join("database_url").display()
        )),
        "{stdout}"
    );

    // A key set in the file wins over the credential; `<key>_file` works like it.
    let token_file = scratch.path("token");
    std::fs::write(&token_file, "file-admin-token\n").unwrap();
    let with_file = scratch.config(|t| {
        t.replace(
            "[http]",
            &format!("[http]\nadmin_token_file = \"{}\"", token_file.display()),
        )
    });
    let output = atlassync(
        &with_file,
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["check-config"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("http.admin_token: file {}", token_file.display())),
        "{stdout}"
    );

    // A broken credential is named, with its key.
    let config = scratch.config(without_secrets);
    write("client_secret", "  \n");
    let output = atlassync(
        &config,
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["check-config"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_rejected(output, "atlassian.client_secret");
    assert!(
        stderr.contains(&credentials.join("client_secret").display().to_string()),
        "{stderr}"
    );
    // And a missing one says where it was looked for.
    std::fs::remove_file(credentials.join("client_secret")).unwrap();
    let output = atlassync(
        &config,
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["check-config"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_rejected(output, "atlassian.client_secret");
    assert!(stderr.contains("credential `client_secret`"), "{stderr}");
}

#[test]
fn a_stray_atlassync_variable_is_refused_naming_it_and_the_nearest_key() {
    let scratch = Scratch::new();
    let config = scratch.config(|t| t);
    let output = atlassync(
        &config,
        &[("ATLASSYNC_TOKENS__REFRESH_MARGN", "10m")],
        &["check-config"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`ATLASSYNC_TOKENS__REFRESH_MARGN`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `ATLASSYNC_TOKENS__REFRESH_MARGIN`"),
        "{stderr}"
    );
    // Every command refuses it, the daemon first of all.
    let output = atlassync(
        &config,
        &[("ATLASSYNC_DATABASE_URL", "postgres://elsewhere/db")],
        &["run"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`ATLASSYNC_DATABASE__URL`"), "{stderr}");

    // The emulator's own variable is not a configuration key and is let through.
    let output = atlassync(
        &config,
        &[("ATLASSYNC_EMULATOR_CLIENT_SECRET", "s")],
        &["check-config"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
