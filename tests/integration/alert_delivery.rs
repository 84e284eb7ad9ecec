//! Telling ops, in-process: the deliverer sends each alert transition once to a signed
//! webhook with a working re-consent link, opens and closes JSM Operations alerts on the
//! emulator, and `/metrics` matches the database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use atlassian_emulator::ConsentDecision;
use atlassync::delivery::Deliverer;
use atlassync::delivery::message::signature;
use atlassync::delivery::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER};
use atlassync::sandbox::Sandbox;
use axum::http::{HeaderMap, StatusCode};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, overrides};

const SECRET: &str = "webhook-test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery_header: String,
    signature_header: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A webhook receiver that records everything and answers 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On a given port (0: any free one).
    async fn start_on(port: u16) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    sink.lock().unwrap().push(Received {
                        delivery_header: header(DELIVERY_HEADER),
                        signature_header: header(SIGNATURE_HEADER),
                        body: body.to_vec(),
                    });
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}/hook"),
            got,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn deliver(app: &TestApp) -> atlassync::delivery::DeliveryReport {
    Deliverer::new(app.sandbox.app.clone(), app.refresher("deliverer"))
        .run_once(&CancellationToken::new())
        .await
        .expect("delivery runs")
}

/// Revokes the app for `account` and lets a sweep find out: `needs_reauth` opens.
async fn revoke_and_sweep(app: &TestApp, account: &str) {
    app.sandbox.emulator.revoke_app(account);
    app.clock.advance(chrono::Duration::days(34));
    app.sweep(&app.refresher("worker")).await;
}

/// Consents through `link` (a re-consent link from a message) as `account`.
async fn consent_through(app: &TestApp, link: &str, account: &str) -> (u16, String) {
    app.sandbox.emulator.queue_consent(ConsentDecision::Accept {
        account_id: account.to_owned(),
        sites: None,
    });
    let response = Sandbox::browser().get(link).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[sqlx::test]
async fn the_webhook_hears_each_transition_once_signed_with_a_link_that_works(pool: PgPool) {
    let receiver = Receiver::start().await;
    let app = TestApp::start_with(
        pool,
        Default::default(),
        overrides(&[
            ("alerts.webhook_url", &receiver.url),
            ("alerts.webhook_secret", SECRET),
        ]),
    )
    .await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    revoke_and_sweep(&app, &mia).await;

    let report = deliver(&app).await;
    assert_eq!(report.failed, 0);
    // Running again sends nothing more: each message is acknowledged once.
    deliver(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one open message: {got:?}");
    let open = got[0].json();
    assert_eq!(open["state"], "open");
    assert_eq!(open["kind"], "needs_reauth");
    assert_eq!(open["label"], "mia");
    assert_eq!(open["account_id"], mia.as_str());
    assert!(open["reason"].as_str().unwrap().contains("invalid_grant"));
    assert!(open["since"].as_str().is_some());
    assert!(open["text"].as_str().unwrap().contains("needs_reauth"));
    assert_eq!(
        got[0].delivery_header,
        open["delivery_id"].as_str().unwrap()
    );
    assert_eq!(
        got[0].signature_header,
        signature(SECRET.as_bytes(), &got[0].body)
    );

    // The link in the message works through the emulator's consent page, for Mia.
    let link = open["reconsent_url"]
        .as_str()
        .expect("an open message has a link");
    let (status, page) = consent_through(&app, link, &mia).await;
    assert_eq!(status, 200, "{page}");

    // The new consent clears the condition: one resolved message, same alert, new id.
    deliver(&app).await;
    deliver(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let resolved = got[1].json();
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["alert_id"], open["alert_id"]);
    assert_ne!(resolved["delivery_id"], open["delivery_id"]);
    assert!(resolved["reconsent_url"].is_null());
    assert_eq!(
        got[1].signature_header,
        signature(SECRET.as_bytes(), &got[1].body)
    );

    // Each message went to the log sink too, acknowledged once.
    let deliveries: Vec<(String, bool)> = sqlx::query_as(
        "SELECT sink, delivered_at IS NOT NULL FROM alert_deliveries ORDER BY message_id, sink",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        deliveries,
        [
            ("log".to_owned(), true),
            ("webhook".to_owned(), true),
            ("log".to_owned(), true),
            ("webhook".to_owned(), true)
        ]
    );
}

#[sqlx::test]
async fn a_revoke_opens_a_jsm_alert_and_a_reconsent_closes_it(pool: PgPool) {
    let scopes = r#"["read:me", "offline_access", "read:jira-work", "read:jira-user",
        "read:space:confluence", "read:ops-alert:jira-service-management",
        "write:ops-alert:jira-service-management"]"#;
    let mut keys = overrides(&[]);
    keys.insert("atlassian.scopes".into(), scopes.into());
    let app = TestApp::start_with(pool, Default::default(), keys).await;
    let (ops_site, olga) = app.site_and_user("ops", "Olga", "UTC");
    assert_eq!(app.consent("ops-jsm", &olga).await.0, 200);
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    // Ops route alerts to their own site's JSM (its cloud id exists only now).
    let mut config = (*app.sandbox.app.config).clone();
    config.alerts.jsm_cloud_id = Some(ops_site.as_str().into());
    config.alerts.jsm_grant = Some("ops-jsm".into());
    let jsm_app = app.sandbox.app.reconfigured(config);
    let deliverer = Deliverer::new(
        jsm_app.clone(),
        atlassync::lifecycle::Refresher::new(jsm_app, "deliverer"),
    );
    let stop = CancellationToken::new();
    let deliver = || deliverer.run_once(&stop);

    revoke_and_sweep(&app, &mia).await;
    let report = deliver().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let jsm = app.sandbox.emulator.jsm_alerts(&ops_site);
    assert_eq!(jsm.len(), 1, "{jsm:?}");
    let alert_id: i64 = sqlx::query_scalar("SELECT id FROM alerts WHERE kind = 'needs_reauth'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(jsm[0].alias, alert_id.to_string());
    assert_eq!(jsm[0].status, "open");
    let description = jsm[0].description.clone().unwrap_or_default();
    assert!(
        description.contains("/connect?invite=") && description.contains("invalid_grant"),
        "the JSM alert says why and carries the re-consent link: {description}"
    );

    // Mia consents again: the condition clears and the JSM alert is closed by its alias.
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    let report = deliver().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let jsm = app.sandbox.emulator.jsm_alerts(&ops_site);
    assert_eq!(jsm.len(), 1, "{jsm:?}");
    assert_eq!(jsm[0].status, "closed", "{:?}", jsm[0]);
}

/// Samples of one metric, keyed by their label text (`{a="b"}`).
fn samples(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[sqlx::test]
async fn metrics_match_the_database_and_need_the_admin_token(pool: PgPool) {
    let receiver = Receiver::start().await;
    let app = TestApp::start_with(
        pool,
        Default::default(),
        overrides(&[
            ("alerts.webhook_url", &receiver.url),
            ("alerts.webhook_secret", SECRET),
            ("http.admin_token", "admin-test-token"),
        ]),
    )
    .await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    let (_, ann) = app.site_and_user("initech", "Ann", "UTC");
    for (label, account) in [("mia", &mia), ("sam", &sam), ("ann", &ann)] {
        assert_eq!(app.consent(label, account).await.0, 200);
    }
    revoke_and_sweep(&app, &sam).await;
    deliver(&app).await;
    let syncer = atlassync::jobs::sync::Syncer::new(app.sandbox.app.clone(), app.refresher("s"));
    syncer
        .run_once(
            atlassync::domain::SyncKind::ConfluenceSpaces,
            crate::support::NowForTests::now_for_tests(&*app.clock),
            &CancellationToken::new(),
        )
        .await
        .expect("sync runs");

    let url = app.sandbox.http_base.join("metrics").unwrap();
    let client = reqwest::Client::new();
    assert_eq!(client.get(url.clone()).send().await.unwrap().status(), 401);
    let wrong = client
        .get(url.clone())
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = client
        .get(url)
        .bearer_auth("admin-test-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let grants = samples(&metrics, "atlassync_grants");
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM grants GROUP BY status ORDER BY status")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(by_status.len(), 2, "{by_status:?}");
    for (status, count) in &by_status {
        assert_eq!(
            grants[&format!("{{status=\"{status}\"}}")],
            *count as f64,
            "{metrics}"
        );
    }
    assert_eq!(grants["{status=\"disabled\"}"], 0.0);

    let alerts = samples(&metrics, "atlassync_alerts_open");
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE resolved_at IS NULL AND kind = 'needs_reauth'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(open, 1);
    assert_eq!(alerts["{kind=\"needs_reauth\"}"], 1.0);

    let deliveries = samples(&metrics, "atlassync_alert_deliveries_total");
    assert_eq!(deliveries["{sink=\"webhook\",outcome=\"delivered\"}"], 1.0);
    let pending = samples(&metrics, "atlassync_alert_deliveries_pending");
    assert_eq!(pending["{sink=\"webhook\"}"], 0.0);

    let exchanges = samples(&metrics, "atlassync_token_exchanges_total");
    assert_eq!(exchanges["{outcome=\"invalid_grant\"}"], 1.0, "{metrics}");

    let deadline: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT min(family_deadline) FROM grants WHERE status IN ('active', 'degraded')",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    let seconds = samples(&metrics, "atlassync_family_deadline_seconds")[""];
    let expected =
        (deadline - crate::support::NowForTests::now_for_tests(&*app.clock)).num_seconds() as f64;
    assert!((seconds - expected).abs() < 5.0, "{seconds} vs {expected}");

    let synced: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT cloud_id, last_synced_at FROM synced_sites
         WHERE product = 'confluence' AND last_synced_at IS NOT NULL",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(!synced.is_empty());
    let last = samples(&metrics, "atlassync_sync_last_success_timestamp_seconds");
    for (cloud_id, at) in synced {
        let key = format!("{{cloud_id=\"{cloud_id}\",stream=\"confluence_spaces\"}}");
        assert_eq!(
            last[&key],
            at.timestamp_millis() as f64 / 1000.0,
            "{metrics}"
        );
    }
    let requests = samples(&metrics, "atlassync_api_requests_total");
    assert!(
        requests
            .iter()
            .any(|(labels, n)| labels.contains("product=\"confluence\"") && *n > 0.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_turns_503_while_postgres_is_down_and_200_when_it_returns() {
    let postgres = crate::private_postgres::PrivatePostgres::start();
    let pool = postgres.pool().await;
    atlassync::store::migrate(&pool).await.expect("migrations");
    let app = TestApp::start_with(
        pool,
        Default::default(),
        overrides(&[("http.listen", "127.0.0.1:0")]),
    )
    .await;
    let daemon = atlassync::daemon::Daemon::build(app.sandbox.app.clone()).expect("builds");
    let readyz = format!("http://{}/readyz", daemon.local_addr().unwrap());
    let healthz = readyz.replace("readyz", "healthz");
    let (_reloads, reload_rx) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { daemon.run(stop.cancelled_owned(), reload_rx).await }
    });
    let client = reqwest::Client::new();
    let status_within = |expected: u16, url: String| {
        let client = client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let status = match client.get(&url).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                if status == expected {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} stayed {status}, expected {expected}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    status_within(200, readyz.clone()).await;
    postgres.stop();
    status_within(503, readyz.clone()).await;
    // Liveness is not readiness: the process is alive and says so.
    status_within(200, healthz.clone()).await;
    let body = client
        .get(&readyz)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("database"), "{body}");
    postgres.start_server();
    status_within(200, readyz.clone()).await;
    status_within(200, healthz).await;
    stop.cancel();
    running.await.unwrap().expect("the daemon stops cleanly");
}

#[sqlx::test]
async fn a_site_whose_sync_keeps_failing_raises_sync_stale_until_it_succeeds(pool: PgPool) {
    let mut keys = overrides(&[("alerts.sync_stale_after", "1h")]);
    keys.insert("sync.max_retries".into(), "0".into());
    let app = TestApp::start_with(pool, Default::default(), keys).await;
    let (acme, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    let syncer = atlassync::jobs::sync::Syncer::new(app.sandbox.app.clone(), app.refresher("s"));
    let sync = || async {
        syncer
            .run_once(
                atlassync::domain::SyncKind::ConfluenceSpaces,
                crate::support::NowForTests::now_for_tests(&*app.clock),
                &CancellationToken::new(),
            )
            .await
            .expect("sync runs")
    };
    let stale = || async {
        atlassync::jobs::stale_sites::run_once(&app.sandbox.app)
            .await
            .expect("stale check runs")
    };
    assert_eq!(sync().await.ok, 1);
    assert_eq!(stale().await, 0);

    // Confluence fails for hours: after an hour without success the site is stale.
    app.sandbox.emulator.inject_fault(
        atlassian_emulator::Fault::new(
            atlassian_emulator::FaultKind::InternalError,
            "/ex/confluence/",
        )
        .times(1000),
    );
    app.clock.advance(chrono::Duration::minutes(30));
    assert_eq!(sync().await.failed, 1);
    assert_eq!(stale().await, 0, "30 minutes is not stale yet");
    app.clock.advance(chrono::Duration::minutes(45));
    assert_eq!(sync().await.failed, 1);
    assert_eq!(stale().await, 1);
    assert_eq!(
        stale().await,
        1,
        "one alert per stale stream, however often checked"
    );
    let open: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT reason, label, cloud_id FROM alerts
         WHERE kind = 'sync_stale' AND resolved_at IS NULL",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0].0.contains("confluence_spaces"), "{open:?}");
    assert!(
        open[0].0.contains("500"),
        "the reason carries the last error: {open:?}"
    );
    assert_eq!(open[0].2.as_deref(), Some(acme.as_str()));

    // Confluence answers again: the next success resolves it.
    app.sandbox.emulator.clear_faults();
    app.clock.advance(chrono::Duration::minutes(5));
    assert_eq!(sync().await.ok, 1);
    assert_eq!(stale().await, 0);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE kind = 'sync_stale' AND resolved_at IS NULL",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(open, 0);
}

#[sqlx::test]
async fn a_webhook_that_stays_down_raises_delivery_failing_and_loses_nothing(pool: PgPool) {
    // A port nobody listens on, yet: connections are refused.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let app = TestApp::start_with(
        pool,
        Default::default(),
        overrides(&[
            ("alerts.webhook_url", &url),
            ("alerts.webhook_secret", SECRET),
            ("alerts.retry_initial", "1m"),
            ("alerts.retry_max", "5m"),
            ("alerts.sink_failing_after", "10m"),
        ]),
    )
    .await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    assert_eq!(app.consent("mia", &mia).await.0, 200);
    assert_eq!(app.consent("sam", &sam).await.0, 200);
    app.sandbox.emulator.revoke_app(&sam);
    revoke_and_sweep(&app, &mia).await;

    assert_eq!(deliver(&app).await.failed, 1);
    // The first failure ends the run; the other message is given back untouched, not left
    // leased with an attempt it never had.
    let webhook: Vec<(i32, bool, bool)> = sqlx::query_as(
        "SELECT attempts, last_error IS NOT NULL, leased_by IS NOT NULL FROM alert_deliveries
         WHERE sink = 'webhook' ORDER BY message_id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(webhook, [(1, true, false), (0, false, false)]);
    let failing = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT reason FROM alerts WHERE kind = 'delivery_failing' AND resolved_at IS NULL",
        )
        .fetch_all(app.pool())
        .await
        .unwrap()
    };
    assert!(
        failing().await.is_empty(),
        "one failure is not yet a failing sink"
    );
    for _ in 0..4 {
        app.clock.advance(chrono::Duration::minutes(5));
        deliver(&app).await;
    }
    let reasons = failing().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("webhook"), "{reasons:?}");
    // One attempt per run (a failure ends the run), taking turns: each message is retried.
    let retried: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT d.attempts, d.last_error FROM alert_deliveries d
         JOIN alert_messages m ON m.id = d.message_id
         WHERE d.sink = 'webhook' AND m.kind = 'needs_reauth' ORDER BY m.id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(
        retried.iter().map(|(n, _)| n).sum::<i32>() >= 4,
        "{retried:?}"
    );
    for (attempts, error) in &retried {
        assert!(*attempts >= 2, "{retried:?}");
        assert!(error.as_deref().unwrap().contains("unreachable"));
    }

    // The receiver comes up on that port: the backlog drains in order, and the sink's own
    // alert resolves.
    let receiver = Receiver::start_on(port).await;
    for _ in 0..4 {
        app.clock.advance(chrono::Duration::minutes(5));
        deliver(&app).await;
    }
    assert!(failing().await.is_empty());
    let undelivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NULL")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(undelivered, 0);
    let got = receiver.received();
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["kind"].as_str().unwrap().to_owned(),
                body["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("needs_reauth".to_owned(), "open".to_owned()));
    assert!(kinds.contains(&("delivery_failing".to_owned(), "open".to_owned())));
    let open_at = kinds
        .iter()
        .position(|k| k == &("delivery_failing".to_owned(), "open".to_owned()));
    let resolved_at = kinds
        .iter()
        .position(|k| k == &("delivery_failing".to_owned(), "resolved".to_owned()));
    assert!(open_at < resolved_at, "open before resolved: {kinds:?}");
}
