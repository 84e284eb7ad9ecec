//! Alert delivery as operators run it: the real binary with `run` sends every alert transition
//! to a signed webhook that first refuses connections, then (after the daemon was killed and
//! started again) answers 503, and finally acknowledges. Every message arrives exactly once,
//! none is lost or invented, and every retry carries the same delivery id and body. The
//! first daemon is SIGKILLed (not drained), so its delivery leases must expire before the
//! second takes the deliveries over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atlassian_emulator::Product;
use atlassian_emulator::{ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, NewUser};
use atlassync::clock::SystemClock;
use atlassync::crypto::Keyring;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use uuid::Uuid;

const SECRET: &str = "process-webhook-secret";

/// How the receiver answers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing listens on the port: connections are refused.
    Refuse,
    /// Bound; answers 503.
    Fail503,
    /// Bound; answers 200.
    Ok200,
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    delivery_header: Option<String>,
    signature_header: Option<String>,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The body's `delivery_id`.
    fn delivery_id(&self) -> Uuid {
        self.json()["delivery_id"]
            .as_str()
            .expect("delivery_id is a string")
            .parse()
            .expect("delivery_id is a uuid")
    }
}

/// The receiver's shared state: its mode and every request so far, in arrival order.
#[derive(Debug)]
struct Hook {
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
}

/// A webhook receiver on a fixed port that is not bound until [`Receiver::bind`].
#[derive(Debug)]
struct Receiver {
    addr: SocketAddr,
    hook: Arc<Hook>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Picks a free port and leaves it unbound (mode [`Mode::Refuse`]).
    fn refusing() -> Self {
        Self {
            addr: free_port(),
            hook: Arc::new(Hook {
                mode: Mutex::new(Mode::Refuse),
                received: Mutex::new(Vec::new()),
            }),
            server: None,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Binds the port and serves in `mode`.
    async fn bind(&mut self, mode: Mode) {
        assert_ne!(mode, Mode::Refuse);
        self.set_mode(mode);
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the receiver's port is still free");
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.hook.clone());
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        }));
    }

    fn set_mode(&self, mode: Mode) {
        *self.hook.mode.lock().unwrap() = mode;
    }

    fn received(&self) -> Vec<Received> {
        self.hook.received.lock().unwrap().clone()
    }

    fn answered(&self, status: u16) -> usize {
        self.received()
            .iter()
            .filter(|r| r.answered == status)
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn receive(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
    };
    let status = match *hook.mode.lock().unwrap() {
        Mode::Ok200 => StatusCode::OK,
        Mode::Fail503 | Mode::Refuse => StatusCode::SERVICE_UNAVAILABLE,
    };
    hook.received.lock().unwrap().push(Received {
        delivery_header: header("X-Atlassync-Delivery"),
        signature_header: header("X-Atlassync-Signature"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`, computed here rather than by the product.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A body as it must stay across retries: the re-consent link is minted per attempt (and
/// quoted in `text`), everything else is the message's.
fn stable_part(body: &Value) -> Value {
    let mut body = body.clone();
    let object = body.as_object_mut().expect("a JSON object");
    let link = object.remove("reconsent_url").unwrap_or(Value::Null);
    if let (Some(link), Some(Value::String(text))) = (link.as_str(), object.get_mut("text")) {
        *text = text.replace(link, "<link>");
    }
    body
}

/// One daemon's surroundings, as in `daemon_process.rs`, with one log file per start.
struct Scene {
    emulator: EmulatorHandle,
    dir: PathBuf,
    config_file: PathBuf,
    listen: SocketAddr,
}

impl Scene {
    async fn new(pool: &PgPool, webhook_url: &str) -> Self {
        let emulator = Emulator::start(
            EmulatorConfig::default(),
            Arc::new(SystemClock),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("emulator starts");
        let dir = std::env::temp_dir().join(format!("atlassync-alerts-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, Keyring::generate_key_file_contents()).unwrap();
        let listen = free_port();
        let config_file = dir.join("atlassync.toml");
        // Seconds-scale everything: keep-alive exchanges and revalidation notice a revoked
        // app within seconds; alerts are delivered every second and retried after 1-2 s; a
        // sink failing for 5 s raises its own alert; the 2 s request timeout keeps the
        // delivery lease (3 × 2 s + 10 s) short enough for a killed daemon's to expire.
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
request_timeout = "2s"

[tokens]
keepalive_after = "3s"

[schedule]
token_sweep = "*/1 * * * * *"
revalidate = "*/3 * * * * *"
alerts = "*/1 * * * * *"

[alerts]
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
retry_initial = "1s"
retry_max = "2s"
sink_failing_after = "5s"

[http]
listen = "{listen}"
public_url = "http://{listen}/"

[crypto]
key_file = "{key}"

[log]
format = "json"
filter = "info"
"#,
            db = database_url(pool),
            emulator = emulator.base_url(),
            key = key_file.display(),
        );
        std::fs::write(&config_file, text).unwrap();
        Self {
            emulator,
            dir,
            config_file,
            listen,
        }
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

    fn log_file(&self, run: &str) -> PathBuf {
        self.dir.join(format!("{run}.log"))
    }

    /// Starts `atlassync run`, stderr into the log file of `run`.
    fn spawn(&self, run: &str) -> Child {
        let log = std::fs::File::create(self.log_file(run)).unwrap();
        self.atlassync(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts")
    }

    /// Everything the daemon started as `run` wrote to stderr so far.
    fn log(&self, run: &str) -> String {
        std::fs::read_to_string(self.log_file(run)).unwrap_or_default()
    }

    /// Both runs' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- first run ---\n{}\n--- second run ---\n{}",
            self.log("first"),
            self.log("second")
        )
    }

    /// GET /healthz once; the status, or `None` when nothing answers.
    async fn health(&self) -> Option<u16> {
        reqwest::Client::new()
            .get(format!("http://{}/healthz", self.listen))
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
                panic!("daemon exited early with {status}:\n{}", self.logs());
            }
            if self.health().await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered 200:\n{}",
                self.logs()
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
        stdout.trim().to_owned()
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

    /// `account` consents through a fresh invite link served by the running daemon.
    async fn consent(&self, label: &str, account: &str) {
        self.emulator.queue_consent(ConsentDecision::Accept {
            account_id: account.to_owned(),
            sites: None,
        });
        let link = self.invite(label).await;
        let response = atlassync::sandbox::Sandbox::browser()
            .get(&link)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{label}: {body}");
        assert!(body.contains("Connected"), "{label}: {body}");
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

/// A port nobody listens on right now.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `done` every 100 ms until it holds; panics with `what`, the outbox and the logs
/// after `within`.
async fn wait_until<F, Fut>(scene: &Scene, pool: &PgPool, what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        if Instant::now() >= deadline {
            panic!(
                "not within {within:?}: {what}\n{}\n{}",
                outbox(pool).await,
                scene.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alerts, their messages and deliveries, one line each, for failure messages.
async fn outbox(pool: &PgPool) -> String {
    let alerts: Vec<String> = sqlx::query_scalar(
        "SELECT format('alert %s %s %s opened %s resolved %s', id, kind, label, opened_at,
                       resolved_at)
         FROM alerts ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let deliveries: Vec<String> = sqlx::query_scalar(
        "SELECT format('message %s alert %s %s %s: %s attempts %s next %s leased %s by %s \
                        delivered %s error %s',
                       m.id, m.alert_id, m.state, m.delivery_id, d.sink, d.attempts,
                       d.next_attempt_at, d.leased_until, d.leased_by, d.delivered_at,
                       d.last_error)
         FROM alert_messages m LEFT JOIN alert_deliveries d ON d.message_id = m.id
         ORDER BY m.id, d.sink",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    format!(
        "--- outbox ---\n{}\n{}",
        alerts.join("\n"),
        deliveries.join("\n")
    )
}

/// Delivery ids of the webhook attempts that failed, as the daemon logged them.
fn failed_webhook_attempts(log: &str) -> Vec<(Uuid, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| {
            let fields = line.get("fields").unwrap_or(&line);
            let field = |key: &str| fields.get(key).or_else(|| line.get(key));
            let message = field("message")?.as_str()?;
            let sink = field("sink")?.as_str()?;
            if message != "alert delivery failed; will retry" || sink != "webhook" {
                return None;
            }
            let id = field("delivery_id")?.as_str()?.parse().ok()?;
            Some((id, field("error")?.as_str()?.to_owned()))
        })
        .collect()
}

/// Every message as (delivery id, alert id, state, kind, label).
async fn messages(pool: &PgPool) -> Vec<(Uuid, i64, String, String, String)> {
    sqlx::query_as(
        "SELECT delivery_id, alert_id, state, kind, label FROM alert_messages ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Webhook deliveries as (delivery id, attempts, last error, delivered).
async fn webhook_deliveries(pool: &PgPool) -> Vec<(Uuid, i32, Option<String>, bool)> {
    sqlx::query_as(
        "SELECT m.delivery_id, d.attempts, d.last_error, d.delivered_at IS NOT NULL
         FROM alert_deliveries d JOIN alert_messages m ON m.id = d.message_id
         WHERE d.sink = 'webhook' ORDER BY m.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn alert_delivery_process_survives_refusals_503s_and_a_crash_without_losing_a_message(
    pool: PgPool,
) {
    let started = Instant::now();
    let mut receiver = Receiver::refusing();
    let scene = Scene::new(&pool, &receiver.url()).await;
    let mut daemon = scene.spawn("first");
    scene.wait_healthy(&mut daemon).await;

    // Three people connect through the running daemon, then revoke the app: their grants
    // turn needs_reauth while nothing listens on the webhook's port.
    let mut accounts = BTreeMap::new();
    for name in ["mia", "sam", "ivy"] {
        let account = scene.user(name);
        scene.consent(name, &account).await;
        accounts.insert(name, account);
    }
    for account in accounts.values() {
        scene.emulator.revoke_app(account);
    }
    wait_until(
        &scene,
        &pool,
        "three needs_reauth alerts, a refused webhook attempt and delivery_failing raised",
        Duration::from_secs(20),
        || async {
            count(
                &pool,
                "SELECT count(*) FROM alerts WHERE kind = 'needs_reauth' AND resolved_at IS NULL",
            )
            .await
                == 3
                && count(
                    &pool,
                    "SELECT count(*) FROM alert_deliveries
                     WHERE sink = 'webhook' AND last_error LIKE 'webhook unreachable%'",
                )
                .await
                    >= 1
                && count(
                    &pool,
                    "SELECT count(*) FROM alerts
                     WHERE kind = 'delivery_failing' AND label = '(app)' AND resolved_at IS NULL",
                )
                .await
                    == 1
                && count(
                    &pool,
                    "SELECT count(*) FROM alert_messages m WHERE m.state = 'open' AND NOT EXISTS (
                         SELECT 1 FROM alert_deliveries d
                         WHERE d.message_id = m.id AND d.sink = 'webhook' AND d.attempts > 0)",
                )
                .await
                    == 0
        },
    )
    .await;
    // Every open message's webhook delivery has been claimed (a resolved one waits for its
    // open one) and none acknowledged. Only the first of a claimed batch is actually sent
    // while the sink fails (the rest wait rather than pile onto a dead sink), so only some
    // carry a last_error.
    let before_crash = webhook_deliveries(&pool).await;
    assert!(before_crash.len() >= 4, "{before_crash:?}");
    for (id, _, _, delivered) in &before_crash {
        assert!(!delivered, "{id}: {before_crash:?}");
    }
    assert!(receiver.received().is_empty(), "nothing was listening");

    // Crash: SIGKILL, so deliveries leased by the first process stay leased until their
    // lease expires. The receiver comes up answering 503, then the daemon starts again.
    daemon.start_kill().unwrap();
    let killed = daemon.wait().await.unwrap();
    assert_eq!(killed.code(), None, "killed by a signal: {killed}");
    let refused = failed_webhook_attempts(&scene.log("first"));
    assert!(!refused.is_empty(), "{}", scene.log("first"));
    for (id, error) in &refused {
        assert!(error.starts_with("webhook unreachable"), "{id}: {error}");
    }
    receiver.bind(Mode::Fail503).await;
    let mut daemon = scene.spawn("second");
    scene.wait_healthy(&mut daemon).await;
    wait_until(
        &scene,
        &pool,
        "three 503 answers",
        // A delivery leased by the killed process waits out its lease (16 s) first.
        Duration::from_secs(35),
        || async { receiver.answered(503) >= 3 },
    )
    .await;

    // Mia consents again (a fresh invite): her needs_reauth alert resolves while the
    // webhook still fails.
    scene.consent("mia", &accounts["mia"]).await;
    wait_until(
        &scene,
        &pool,
        "mia's needs_reauth resolved",
        Duration::from_secs(10),
        || async {
            count(
                &pool,
                "SELECT count(*) FROM alert_messages
                 WHERE kind = 'needs_reauth' AND label = 'mia' AND state = 'resolved'",
            )
            .await
                == 1
        },
    )
    .await;
    let failed_503 = receiver.answered(503);
    wait_until(
        &scene,
        &pool,
        "one more 503",
        Duration::from_secs(10),
        || async { receiver.answered(503) > failed_503 },
    )
    .await;

    // The receiver recovers: everything is acknowledged, and the sink's own alert resolves
    // and is delivered too.
    receiver.set_mode(Mode::Ok200);
    wait_until(
        &scene,
        &pool,
        "every message acknowledged by the webhook",
        Duration::from_secs(60),
        || async {
            count(
                &pool,
                "SELECT count(*) FROM alerts WHERE kind = 'delivery_failing' AND resolved_at IS NULL",
            )
            .await
                == 0
                && count(
                    &pool,
                    "SELECT count(*) FROM alert_messages m WHERE NOT EXISTS (
                         SELECT 1 FROM alert_deliveries d
                         WHERE d.message_id = m.id AND d.sink = 'webhook'
                           AND d.delivered_at IS NOT NULL)",
                )
                .await
                    == 0
        },
    )
    .await;
    // A clean stop (SIGTERM drains): no attempt is in flight when the record is read.
    let pid = daemon.id().expect("still running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let exit = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{}", scene.logs());

    let messages = messages(&pool).await;
    let received = receiver.received();
    let logs = scene.logs();

    // Every request: the delivery header is the body's id; the signature verifies.
    for request in &received {
        let id = request.delivery_id();
        assert_eq!(
            request.delivery_header.as_deref(),
            Some(id.to_string().as_str()),
            "{request:?}"
        );
        assert_eq!(
            request.signature_header.as_deref(),
            Some(expected_signature(&request.body).as_str()),
            "{request:?}"
        );
    }

    // None lost, none extra, each acknowledged exactly once.
    let mut acknowledged: BTreeMap<Uuid, Vec<&Received>> = BTreeMap::new();
    for request in received.iter().filter(|r| r.answered == 200) {
        acknowledged
            .entry(request.delivery_id())
            .or_default()
            .push(request);
    }
    let expected: BTreeSet<Uuid> = messages.iter().map(|m| m.0).collect();
    assert_eq!(
        acknowledged.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "acknowledged ids vs alert_messages:\n{messages:?}"
    );
    for (id, answers) in &acknowledged {
        assert_eq!(
            answers.len(),
            1,
            "{id} answered 200 {} times",
            answers.len()
        );
    }

    // Each body says what its message says.
    for (id, alert_id, state, kind, label) in &messages {
        let body = acknowledged[id][0].json();
        assert_eq!(body["alert_id"], *alert_id, "{body}");
        assert_eq!(body["state"], state.as_str(), "{body}");
        assert_eq!(body["kind"], kind.as_str(), "{body}");
        assert_eq!(body["label"], label.as_str(), "{body}");
    }

    // Retries carry the same id and the same body (but for the link minted per attempt),
    // across the crash: refused before it, 503 after it, then 200.
    let failed: Vec<&Received> = received.iter().filter(|r| r.answered == 503).collect();
    assert!(failed.len() >= 4, "{failed:?}");
    for attempt in &failed {
        let id = attempt.delivery_id();
        let acked = acknowledged
            .get(&id)
            .unwrap_or_else(|| panic!("{id} was answered 503 and never delivered"));
        assert_eq!(
            stable_part(&attempt.json()),
            stable_part(&acked[0].json()),
            "{id}: a retry changed the body"
        );
    }
    let refused_ids: BTreeSet<Uuid> = refused.iter().map(|(id, _)| *id).collect();
    for id in &refused_ids {
        assert!(
            acknowledged.contains_key(id),
            "{id} was refused and never delivered"
        );
    }
    let failed_ids: BTreeSet<Uuid> = failed.iter().map(|r| r.delivery_id()).collect();
    assert!(
        refused_ids.intersection(&failed_ids).next().is_some(),
        "no message refused before the crash was answered 503 after it:\nrefused {refused_ids:?}\n503 {failed_ids:?}"
    );
    let retried = webhook_deliveries(&pool).await;
    for (id, attempts, error, delivered) in &retried {
        assert!(*delivered && error.is_none(), "{id}: {retried:?}");
        if refused_ids.contains(id) || failed_ids.contains(id) {
            assert!(*attempts >= 2, "{id} retried: {retried:?}");
        }
    }

    // One message per transition: an open one per alert, a resolved one per resolved alert,
    // and the open one acknowledged before the resolved one.
    let alerts: Vec<(i64, String, String, bool)> =
        sqlx::query_as("SELECT id, kind, label, resolved_at IS NOT NULL FROM alerts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let position = |id: &Uuid| {
        received
            .iter()
            .position(|r| r.answered == 200 && r.delivery_id() == *id)
            .unwrap()
    };
    for (alert_id, kind, label, resolved) in &alerts {
        let of_alert: Vec<_> = messages.iter().filter(|m| m.1 == *alert_id).collect();
        let states: Vec<&str> = of_alert.iter().map(|m| m.2.as_str()).collect();
        let want: &[&str] = if *resolved {
            &["open", "resolved"]
        } else {
            &["open"]
        };
        assert_eq!(states, want, "{kind} of {label}: {of_alert:?}");
        if *resolved {
            assert!(
                position(&of_alert[0].0) < position(&of_alert[1].0),
                "{kind} of {label}: resolved before open"
            );
        }
    }
    assert!(
        messages.iter().all(|m| alerts.iter().any(|a| a.0 == m.1)),
        "a message without an alert: {messages:?}"
    );
    let has = |kind: &str, label: &str, state: &str| {
        messages
            .iter()
            .any(|m| m.3 == kind && m.4 == label && m.2 == state)
    };
    for name in ["mia", "sam", "ivy"] {
        assert!(has("needs_reauth", name, "open"), "{name}: {messages:?}");
    }
    assert!(has("needs_reauth", "mia", "resolved"), "{messages:?}");
    assert!(has("delivery_failing", "(app)", "open"), "{messages:?}");
    assert!(has("delivery_failing", "(app)", "resolved"), "{messages:?}");
    assert!(!logs.contains("job panicked"), "{logs}");
    eprintln!(
        "alert_delivery_process: {} messages, {} refused attempts logged, {} answered 503, {:?}",
        messages.len(),
        refused.len(),
        failed.len(),
        started.elapsed()
    );
}
