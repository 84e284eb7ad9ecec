//! The daemon as operators run it: the real binary with `run`, against a per-test database
//! and an in-process emulator on the system clock. Proves startup (migrations, health),
//! the consent flow through the running process, SIGHUP reloads (good and broken), SIGTERM
//! drains and exits 0, the systemd notifications, and that no token reaches the logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use atlassian_emulator::Product;
use atlassian_emulator::{
    ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultKind, NewUser,
};
use atlassync::clock::SystemClock;
use atlassync::crypto::Keyring;
use sqlx::PgPool;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// SIGTERM must end the process within this (operator contract).
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// One daemon's surroundings: the emulator, a scratch directory with the key file and the
/// configuration, and the address the daemon will serve on.
struct Scene {
    emulator: EmulatorHandle,
    dir: PathBuf,
    key_file: PathBuf,
    config_file: PathBuf,
    log_file: PathBuf,
    listen: SocketAddr,
    database_url: String,
}

impl Scene {
    async fn new(pool: &PgPool) -> Self {
        let emulator = Emulator::start(
            EmulatorConfig::default(),
            Arc::new(SystemClock),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("emulator starts");
        let dir = std::env::temp_dir().join(format!("atlassync-daemon-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, Keyring::generate_key_file_contents()).unwrap();
        let scene = Self {
            emulator,
            config_file: dir.join("atlassync.toml"),
            log_file: dir.join("stderr.log"),
            key_file,
            dir,
            listen: free_port(),
            database_url: database_url(pool),
        };
        scene.write_config("*/1 * * * * *", "");
        scene
    }

    /// Writes a valid configuration with `token_sweep` and `tokens_extra` (TOML lines) in
    /// `[tokens]`, sealing with the scene's key.
    fn write_config(&self, token_sweep: &str, tokens_extra: &str) {
        self.write_config_with_keys(token_sweep, tokens_extra, &self.key_file, &[]);
    }

    /// As [`Scene::write_config`], with `key_file` current and `previous` keys still opening.
    fn write_config_with_keys(
        &self,
        token_sweep: &str,
        tokens_extra: &str,
        key_file: &Path,
        previous: &[&Path],
    ) {
        let emulator = self.emulator.base_url();
        let previous: Vec<String> = previous
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let text = format!(
            r#"[database]
url = "{db}"
max_connections = 4

[atlassian]
client_id = "emulator-client"
client_secret = "emulator-secret"
redirect_uri = "http://{listen}/callback"
auth_base_url = "{emulator}"
api_base_url = "{emulator}"
request_timeout = "10s"

[tokens]
{tokens_extra}

[schedule]
token_sweep = "{token_sweep}"
revalidate = "*/3 * * * * *"

[http]
listen = "{listen}"
public_url = "http://{listen}/"

[crypto]
key_file = "{key}"
previous_key_files = [{previous}]

[log]
format = "json"
filter = "info"
"#,
            db = self.database_url,
            listen = self.listen,
            key = key_file.display(),
            previous = previous.join(", "),
        );
        std::fs::write(&self.config_file, text).unwrap();
    }

    /// Replaces the configuration with one that fails validation on `schedule.token_sweep`.
    fn write_broken_config(&self) {
        self.write_config("every minute", "");
    }

    /// A command for the binary with this scene's configuration and a clean environment.
    fn atlassync(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atlassync"));
        command.arg("--config").arg(&self.config_file).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("ATLASSYNC_") {
                command.env_remove(key);
            }
        }
        command
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        command
    }

    /// Starts `atlassync run` with `env`, stderr into the scene's log file.
    fn spawn(&self, env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(&self.log_file).unwrap();
        self.atlassync(&["run"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts")
    }

    /// Everything the daemon wrote to stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times; panics with the log otherwise.
    async fn wait_for_log(&self, needle: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}× {needle:?} in the log within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn health_url(&self) -> String {
        format!("http://{}/healthz", self.listen)
    }

    /// GET /healthz once; the status, or `None` when nothing answers.
    async fn health(&self) -> Option<u16> {
        reqwest::Client::new()
            .get(self.health_url())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits until /healthz answers 200 while `child` is alive.
    async fn wait_healthy(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("daemon exited early with {status}:\n{}", self.log());
            }
            if self.health().await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints a consent link through `atlassync invite`.
    async fn invite(&self, label: &str) -> String {
        let output = self
            .atlassync(&["invite", "--label", label])
            .output()
            .await
            .expect("invite runs");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "the link alone on stdout: {stdout:?}");
        lines[0].to_owned()
    }

    /// A site and a user who can reach it; returns the account id.
    fn user(&self, name: &str) -> String {
        let site = self.emulator.add_site(
            &format!("{name}-site"),
            &[Product::Jira, Product::Confluence],
        );
        self.emulator.add_user(NewUser {
            name: name.to_owned(),
            email: format!("{name}@example.com"),
            zoneinfo: "UTC".into(),
            jira_time_zone: "UTC".into(),
            sites: vec![site],
        })
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.emulator.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The per-test database's URL, for the child process.
fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// A port nobody listens on right now (released before the daemon binds it).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `signal` (e.g. "TERM") to `child` with kill(1).
async fn send(child: &Child, signal: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// SIGTERM, then the exit code, which must come within [`STOP_LIMIT`].
async fn terminate(scene: &Scene, child: &mut Child) -> (i32, Duration) {
    send(child, "TERM").await;
    let started = Instant::now();
    let status = tokio::time::timeout(STOP_LIMIT, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still running {STOP_LIMIT:?} after SIGTERM:\n{}",
                scene.log()
            )
        })
        .unwrap();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal ({status}):\n{}", scene.log()));
    (code, started.elapsed())
}

/// Every plaintext token stored in the database, opened with the scene's key.
async fn stored_tokens(scene: &Scene, pool: &PgPool) -> Vec<String> {
    let keyring = Keyring::from_files(&scene.key_file, &[]).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut tokens = Vec::new();
    for grant in atlassync::store::grants::all_grants(&mut conn)
        .await
        .unwrap()
    {
        tokens.push(grant.refresh_token(&keyring).unwrap().expose().to_owned());
        if let Some(access) = grant.access_token(&keyring).unwrap() {
            tokens.push(access.expose().to_owned());
        }
    }
    tokens
}

fn assert_no_token_in(log: &str, tokens: &[String]) {
    assert!(!tokens.is_empty());
    for token in tokens {
        assert!(token.len() >= 16, "a real token: {token:?}");
        assert!(!log.contains(token.as_str()), "a token reached the log");
    }
}

#[sqlx::test(migrations = false)]
async fn run_migrates_serves_health_and_exits_zero_on_sigterm(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in ["alerts", "grants", "oauth_states", "sites"] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    scene
        .wait_for_log("atlassync running", 1, Duration::from_secs(5))
        .await;

    let (code, took) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
    assert!(took < STOP_LIMIT);
    let log = scene.log();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert_eq!(scene.health().await, None, "nothing serves after exit");
}

#[sqlx::test]
async fn a_consent_through_the_running_daemon_is_stored_kept_alive_and_never_logged(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    // Keep-alive at second scale: the running sweep must rotate the new grant by itself.
    scene.write_config("*/1 * * * * *", r#"keepalive_after = "3s""#);
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;

    let account = scene.user("mia");
    scene.emulator.queue_consent(ConsentDecision::Accept {
        account_id: account.clone(),
        sites: None,
    });
    let link = scene.invite("Mia Krystof").await;
    assert!(
        link.starts_with(&format!("http://{}/", scene.listen)),
        "{link}"
    );
    let response = atlassync::sandbox::Sandbox::browser()
        .get(&link)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("Connected"));

    let (label, stored_account, status, version): (String, String, String, i64) =
        sqlx::query_as("SELECT label, account_id, status, token_version FROM grants")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (label.as_str(), stored_account.as_str(), status.as_str()),
        ("Mia Krystof", account.as_str(), "active")
    );
    let sites: i64 = sqlx::query_scalar("SELECT count(*) FROM sites WHERE status = 'active'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sites, 2, "Jira and Confluence");
    let mut tokens = stored_tokens(&scene, &pool).await;

    // The daemon rotates it on its own (keepalive_after = 3s, a sweep every second).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: i64 = sqlx::query_scalar("SELECT token_version FROM grants")
            .fetch_one(&pool)
            .await
            .unwrap();
        if now >= version + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keep-alive rotations by the daemon:\n{}",
            scene.log()
        );
        tokens.extend(stored_tokens(&scene, &pool).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokens.extend(stored_tokens(&scene, &pool).await);
    let counters = scene.emulator.counters();
    assert!(counters.refreshes >= 2, "{counters:?}");
    assert_eq!(counters.family_revocations, 0, "{counters:?}");
    assert_eq!(counters.invalid_grant_errors, 0, "{counters:?}");

    let (code, _) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
    let log = scene.log();
    assert!(log.contains("grant stored"), "{log}");
    assert!(log.contains("token sweep"), "{log}");
    tokens.sort();
    tokens.dedup();
    assert_no_token_in(&log, &tokens);
}

#[sqlx::test]
async fn sighup_applies_a_valid_config_refuses_a_broken_one_and_keeps_serving(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;
    scene
        .wait_for_log("atlassync running", 1, Duration::from_secs(5))
        .await;

    scene.write_config("*/2 * * * * *", "");
    send(&daemon, "HUP").await;
    scene
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10))
        .await;
    assert!(daemon.try_wait().unwrap().is_none(), "alive after SIGHUP");
    assert_eq!(scene.health().await, Some(200));

    scene.write_broken_config();
    send(&daemon, "HUP").await;
    scene
        .wait_for_log("configuration reload refused", 1, Duration::from_secs(10))
        .await;
    let log = scene.log();
    let refused = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .unwrap();
    assert!(
        refused.contains("schedule.token_sweep"),
        "names the key: {refused}"
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "alive after a refused reload"
    );
    assert_eq!(scene.health().await, Some(200));

    // Fixed again: the next SIGHUP applies it.
    scene.write_config("*/1 * * * * *", "");
    send(&daemon, "HUP").await;
    scene
        .wait_for_log("configuration reloaded", 2, Duration::from_secs(10))
        .await;
    assert_eq!(scene.health().await, Some(200));

    let (code, _) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
}

#[sqlx::test]
async fn a_key_rotation_applied_by_sighup_reaches_the_consent_flow(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;
    let browser = atlassync::sandbox::Sandbox::browser();

    let before = scene.user("before");
    scene.emulator.queue_consent(ConsentDecision::Accept {
        account_id: before.clone(),
        sites: None,
    });
    let response = browser
        .get(scene.invite("before").await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The operator rotates the key: a new current key, the old one kept for opening.
    let new_key = scene.dir.join("key.new");
    std::fs::write(&new_key, Keyring::generate_key_file_contents()).unwrap();
    scene.write_config_with_keys("*/1 * * * * *", "", &new_key, &[&scene.key_file]);
    send(&daemon, "HUP").await;
    scene
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10))
        .await;

    // Invites are now signed with the new key; the running daemon must accept them and seal
    // the new grant's tokens under it.
    let after = scene.user("after");
    scene.emulator.queue_consent(ConsentDecision::Accept {
        account_id: after.clone(),
        sites: None,
    });
    let response = browser
        .get(scene.invite("after").await)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "invite signed with the reloaded key: {body}");

    let keyring = Keyring::from_files(&new_key, std::slice::from_ref(&scene.key_file)).unwrap();
    let key_id: String =
        sqlx::query_scalar("SELECT refresh_token_key_id FROM grants WHERE account_id = $1")
            .bind(&after)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(key_id, keyring.current_key_id(), "sealed under the new key");
    let mut conn = pool.acquire().await.unwrap();
    for grant in atlassync::store::grants::all_grants(&mut conn)
        .await
        .unwrap()
    {
        grant.refresh_token(&keyring).expect("every grant opens");
    }
    drop(conn);

    let (code, _) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
}

/// Collects datagrams from the notify socket until `want` has been seen or `within` passes.
async fn receive_until(
    socket: &UnixDatagram,
    seen: &mut Vec<String>,
    want: &str,
    count: usize,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    while seen.iter().filter(|m| m.lines().any(|l| l == want)).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(e)) => panic!("notify socket: {e}"),
            Err(_) => panic!("no {count}× {want:?} within {within:?}; got {seen:?}"),
        }
    }
}

#[sqlx::test]
async fn systemd_hears_ready_watchdog_reloading_and_stopping(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    let socket_path = scene.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // sd-notify 0.5's watchdog_enabled() accepts an unset WATCHDOG_PID (or one equal to the
    // process's own pid), so WATCHDOG_USEC alone enables the watchdog in the child.
    let mut daemon = scene.spawn(&[
        ("NOTIFY_SOCKET", path_str(&socket_path)),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    let mut seen = Vec::new();
    receive_until(&socket, &mut seen, "READY=1", 1, Duration::from_secs(30)).await;
    assert_eq!(scene.health().await, Some(200), "ready means serving");
    // Every second (half the 2 s interval): at least two within a few seconds.
    receive_until(&socket, &mut seen, "WATCHDOG=1", 2, Duration::from_secs(6)).await;

    send(&daemon, "HUP").await;
    receive_until(
        &socket,
        &mut seen,
        "RELOADING=1",
        1,
        Duration::from_secs(10),
    )
    .await;
    receive_until(&socket, &mut seen, "READY=1", 2, Duration::from_secs(10)).await;
    // The watchdog is still fed by the scheduler that replaced the old one.
    let before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    receive_until(
        &socket,
        &mut seen,
        "WATCHDOG=1",
        before + 2,
        Duration::from_secs(6),
    )
    .await;

    let (code, _) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
    receive_until(&socket, &mut seen, "STOPPING=1", 1, Duration::from_secs(2)).await;
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    let stopping = seen.iter().position(|m| m.contains("STOPPING=1")).unwrap();
    assert!(ready < stopping, "{seen:?}");
    assert!(!scene.log().contains("sd_notify failed"), "{}", scene.log());
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[sqlx::test]
async fn a_sigterm_during_a_slow_exchange_waits_for_it_and_loses_no_family(pool: PgPool) {
    let scene = Scene::new(&pool).await;
    scene.write_config("*/1 * * * * *", r#"keepalive_after = "3s""#);
    // Requests may take 30 s: the drain must wait that long for an exchange in flight.
    let text = std::fs::read_to_string(&scene.config_file).unwrap();
    std::fs::write(
        &scene.config_file,
        text.replace(r#"request_timeout = "10s""#, r#"request_timeout = "30s""#)
            // No revalidation: accessible-resources shares the token endpoint's path prefix.
            .replace(
                r#"revalidate = "*/3 * * * * *""#,
                r#"revalidate = "0 0 1 1 *""#,
            ),
    )
    .unwrap();
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;
    let account = scene.user("mia");
    scene.emulator.queue_consent(ConsentDecision::Accept {
        account_id: account,
        sites: None,
    });
    let link = scene.invite("Mia Krystof").await;
    let response = atlassync::sandbox::Sandbox::browser()
        .get(&link)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let version: i64 = sqlx::query_scalar("SELECT token_version FROM grants")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The next keep-alive exchange is answered after 27 s, longer than a fixed 25 s drain.
    scene.emulator.inject_fault(Fault::new(
        FaultKind::Latency { millis: 27_000 },
        "/oauth/token",
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let started: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT refresh_started_at FROM grants")
                .fetch_one(&pool)
                .await
                .unwrap();
        if started.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exchange started:\n{}",
            scene.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&daemon, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(75), daemon.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within the drain grace:\n{}", scene.log()))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", scene.log());
    let (after, started): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT token_version, refresh_started_at FROM grants")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        after > version && started.is_none(),
        "the exchange in flight was abandoned by the shutdown:\n{}",
        scene.log()
    );

    // After a restart the grant is rotated with the token that was persisted.
    let mut daemon = scene.spawn(&[]);
    scene.wait_healthy(&mut daemon).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: i64 = sqlx::query_scalar("SELECT token_version FROM grants")
            .fetch_one(&pool)
            .await
            .unwrap();
        if now > after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation after restart:\n{}",
            scene.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = terminate(&scene, &mut daemon).await;
    assert_eq!(code, 0, "{}", scene.log());
    let counters = scene.emulator.counters();
    assert_eq!(counters.family_revocations, 0, "{counters:?}");
    assert_eq!(counters.invalid_grant_errors, 0, "{counters:?}");
    let status: String = sqlx::query_scalar("SELECT status FROM grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
}

/// libfaketime, which `scripts/test` installs (Debian package `faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[sqlx::test]
async fn two_replicas_with_clocks_90s_apart_never_exchange_a_token_twice(pool: PgPool) {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install the Debian package faketime (scripts/test does)"
    );
    let scene = Scene::new(&pool).await;
    scene.write_config(
        "*/1 * * * * *",
        "keepalive_after = \"3s\"\nlease_ttl = \"70s\"",
    );
    // Exchanges may take 30 s, so a 70 s lease covers them; no revalidation, whose path
    // shares the token endpoint's prefix.
    let text = std::fs::read_to_string(&scene.config_file)
        .unwrap()
        .replace(r#"request_timeout = "10s""#, r#"request_timeout = "30s""#)
        .replace(
            r#"revalidate = "*/3 * * * * *""#,
            r#"revalidate = "0 0 1 1 *""#,
        );
    std::fs::write(&scene.config_file, &text).unwrap();
    let mut first = scene.spawn(&[]);
    scene.wait_healthy(&mut first).await;
    for name in ["mia", "sam", "ivy"] {
        let account = scene.user(name);
        scene.emulator.queue_consent(ConsentDecision::Accept {
            account_id: account,
            sites: None,
        });
        let link = scene.invite(name).await;
        let response = atlassync::sandbox::Sandbox::browser()
            .get(&link)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The next keep-alive exchanges take 35 s at Atlassian.
    scene
        .emulator
        .inject_fault(Fault::new(FaultKind::Latency { millis: 35_000 }, "/oauth/token").times(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started: i64 =
            sqlx::query_scalar("SELECT count(*) FROM grants WHERE refresh_started_at IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        if started == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exchanges started:\n{}",
            scene.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = scene.emulator.counters();

    // A second replica whose host clock runs 90 s ahead: without one time for leases it
    // sees the first replica's 70-second leases as expired already, mid-exchange.
    let listen = free_port();
    let second_config = scene.dir.join("second.toml");
    std::fs::write(
        &second_config,
        text.replace(&scene.listen.to_string(), &listen.to_string()),
    )
    .unwrap();
    let second_log = scene.dir.join("second.log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .arg("--config")
        .arg(&second_config)
        .arg("run")
        .env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", "+90s")
        .env("DONT_FAKE_MONOTONIC", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&second_log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Past the point where the ahead replica would take the leases over, and past the
    // slow exchanges' answers.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let after = scene.emulator.counters();
    send(&second, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), second.wait()).await;
    let (code, _) = terminate(&scene, &mut first).await;
    assert_eq!(code, 0, "{}", scene.log());
    let second_said = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        second_said.contains("atlassync running"),
        "the second replica ran:\n{second_said}"
    );
    assert_eq!(
        after.reuses_in_leeway,
        before.reuses_in_leeway,
        "a token was exchanged twice:\nfirst:\n{}\nsecond:\n{second_said}",
        scene.log()
    );
    assert_eq!(after.family_revocations, 0);
    assert_eq!(after.invalid_grant_errors, 0);
}
