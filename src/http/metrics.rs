//! `/metrics` (Prometheus text format) and `/readyz`.
//!
//! Cheap at any number of grants: grant counts come from a table a trigger keeps exact, the
//! nearest deadline is one index probe, open alerts and the delivery backlog are read through
//! partial indexes that hold only open or undelivered rows, and per-site figures are one row
//! per site. Nothing scans `grants` or the history tables per scrape.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::bearer_allows;
use crate::app::App;
use crate::delivery::is_failing;
use crate::domain::{GrantStatus, Product, Sink};
use crate::store::alerts::AlertKind;
use crate::store::{self, alert_outbox, alerts, api_budget, grants, sync_runs};

/// A scheduler silent for this long makes the replica unready (it ticks every second).
const SCHEDULER_SILENCE: Duration = Duration::from_secs(10);

/// Why the replica is not ready, if it is not.
pub async fn unready_reason(app: &App) -> Option<String> {
    if let Err(e) = store::ping(&app.pool).await {
        return Some(format!("database unreachable: {e}"));
    }
    match store::migrations_current(&app.pool).await {
        Ok(true) => {}
        Ok(false) => return Some("database migrations differ from this build's".into()),
        Err(e) => return Some(format!("cannot read the migrations: {e}")),
    }
    match app.telemetry.last_scheduler_tick() {
        Some((ago, _)) if ago <= SCHEDULER_SILENCE => None,
        Some((ago, _)) => Some(format!(
            "the scheduler has not ticked for {}s",
            ago.as_secs()
        )),
        None => Some("the scheduler has not started".into()),
    }
}

/// `GET /readyz`: 200 when Postgres answers, migrations are current and the scheduler
/// ticks; 503 with the reason otherwise.
pub async fn readyz(State(app): State<App>) -> Response {
    match unready_reason(&app).await {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// `GET /metrics`: refused without the admin token's bearer header when one is configured.
pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if !bearer_allows(&app, &headers) {
        let mut refused = (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"atlassync\""),
        );
        return refused;
    }
    let ready = unready_reason(&app).await.is_none();
    let mut out = Exposition::default();
    out.gauge(
        "atlassync_build_info",
        "The running build.",
        &[(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    out.gauge(
        "atlassync_ready",
        "1 when /readyz answers 200.",
        &[(&[], f64::from(u8::from(ready)))],
    );
    if let Some((_, unix)) = app.telemetry.last_scheduler_tick() {
        out.gauge(
            "atlassync_scheduler_last_tick_timestamp_seconds",
            "When the scheduler last ticked.",
            &[(&[], unix as f64)],
        );
    }
    if let Err(e) = database_metrics(&app, &mut out).await {
        tracing::warn!(error = %e, "metrics: database figures unavailable");
    }
    counters(&app, &mut out);
    let mut response = out.text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn database_metrics(app: &App, out: &mut Exposition) -> Result<(), sqlx::Error> {
    let now = app.clock.now();
    let mut conn = app.pool.acquire().await?;

    let counts = grants::status_counts(&mut conn).await?;
    let by_status: Vec<_> = GrantStatus::ALL
        .iter()
        .map(|status| {
            let n = counts
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            ([("status", status.as_str())], n as f64)
        })
        .collect();
    out.gauge_rows("atlassync_grants", "Grants by status.", &by_status);

    if let Some(deadline) = grants::nearest_family_deadline(&mut conn).await? {
        out.gauge(
            "atlassync_family_deadline_seconds",
            "Seconds until the nearest refresh-token family deadline (365 days after consent) of an active or degraded grant.",
            &[(&[], (deadline - now).num_milliseconds() as f64 / 1000.0)],
        );
    }

    let open = alerts::open_counts(&mut conn).await?;
    let by_kind: Vec<_> = AlertKind::ALL
        .iter()
        .map(|kind| {
            let n = open
                .iter()
                .find(|(k, _)| k == kind.as_str())
                .map_or(0, |(_, n)| *n);
            ([("kind", kind.as_str())], n as f64)
        })
        .collect();
    out.gauge_rows("atlassync_alerts_open", "Open alerts by kind.", &by_kind);

    let backlogs = alert_outbox::backlogs(&mut conn).await?;
    let threshold = app.config.alerts.sink_failing_after;
    let configured = app.config.alerts.sinks();
    let (mut pending, mut failing) = (Vec::new(), Vec::new());
    for sink in Sink::ALL {
        let backlog = backlogs.iter().find(|b| b.sink == sink.as_str());
        if backlog.is_none() && !configured.contains(&sink) {
            continue;
        }
        pending.push((
            [("sink", sink.as_str())],
            backlog.map_or(0.0, |b| b.pending as f64),
        ));
        failing.push((
            [("sink", sink.as_str())],
            f64::from(u8::from(
                backlog.is_some_and(|b| is_failing(b, now, threshold)),
            )),
        ));
    }
    out.gauge_rows(
        "atlassync_alert_deliveries_pending",
        "Alert messages not yet acknowledged, by sink.",
        &pending,
    );
    out.gauge_rows(
        "atlassync_alert_sink_failing",
        "1 when a sink's oldest unacknowledged message has failed for alerts.sink_failing_after.",
        &failing,
    );

    // Atlassian keeps one pool per app and product, and so does the budget.
    let hour = crate::pacing::hour_start(now);
    let quota = i64::from(app.config.sync.points_per_hour);
    let mut used = Vec::new();
    let mut remaining = Vec::new();
    for product in Product::ALL {
        let spent = api_budget::budget(&mut conn, hour, product, None)
            .await?
            .used;
        used.push(([("product", product.as_str())], spent as f64));
        remaining.push((
            [("product", product.as_str())],
            (quota - spent).max(0) as f64,
        ));
    }
    out.gauge_rows(
        "atlassync_api_points_used",
        "Points the app spent this UTC hour (all replicas), by product.",
        &used,
    );
    out.gauge_rows(
        "atlassync_api_points_remaining",
        "Points left of sync.points_per_hour (each product's pool) this UTC hour, by product.",
        &remaining,
    );

    let streams = sync_runs::freshness(&mut conn).await?;
    let mut last_success = Vec::new();
    let mut rows = Vec::new();
    for stream in &streams {
        let labels = [
            ("cloud_id", stream.cloud_id.as_str()),
            ("stream", stream.kind.as_str()),
        ];
        if let Some(at) = stream.last_success {
            last_success.push((labels, at.timestamp_millis() as f64 / 1000.0));
        }
        if let Some(n) = stream.rows {
            rows.push((labels, n as f64));
        }
    }
    out.gauge_rows(
        "atlassync_sync_last_success_timestamp_seconds",
        "When each site's stream last synced successfully.",
        &last_success,
    );
    out.gauge_rows(
        "atlassync_sync_rows",
        "Rows the last successful run of each site's stream stored.",
        &rows,
    );
    let stale = open
        .iter()
        .find(|(k, _)| k == AlertKind::SyncStale.as_str())
        .map_or(0, |(_, n)| *n);
    out.gauge(
        "atlassync_sync_stale_sites",
        "Site streams with an open sync_stale alert.",
        &[(&[], stale as f64)],
    );
    Ok(())
}

/// A sample's label pairs.
type Labels = Vec<(&'static str, String)>;

/// A counter family: its name, its help, and the label sets shown at zero before anything
/// happened (so that rules and dashboards see a series from the first scrape).
type CounterFamily = (&'static str, &'static str, Vec<Labels>);

/// Every counter family.
fn counter_families(app: &App) -> Vec<CounterFamily> {
    let one = |label: &'static str, values: &[&str]| -> Vec<Labels> {
        values
            .iter()
            .map(|v| vec![(label, (*v).to_owned())])
            .collect()
    };
    let deliveries = app
        .config
        .alerts
        .sinks()
        .into_iter()
        .flat_map(|sink| {
            ["delivered", "failed"].map(|outcome| {
                vec![
                    ("sink", sink.as_str().to_owned()),
                    ("outcome", outcome.to_owned()),
                ]
            })
        })
        .collect();
    vec![
        (
            "atlassync_token_exchanges_total",
            "Refresh-token exchanges by outcome.",
            one(
                "outcome",
                &[
                    "rotated",
                    "invalid_grant",
                    "app_credentials_rejected",
                    "transient",
                ],
            ),
        ),
        (
            "atlassync_api_requests_total",
            "Atlassian API requests by product and HTTP status (error: no answer).",
            Vec::new(),
        ),
        (
            "atlassync_api_throttled_total",
            "429 answers by product.",
            Vec::new(),
        ),
        (
            "atlassync_api_throttle_wait_seconds_total",
            "Seconds paused by 429s, by product.",
            Vec::new(),
        ),
        (
            "atlassync_alert_deliveries_total",
            "Alert delivery attempts by sink and outcome.",
            deliveries,
        ),
    ]
}

fn counters(app: &App, out: &mut Exposition) {
    let counters = app.telemetry.counters();
    for (name, help, zeros) in counter_families(app) {
        out.header(name, help, "counter");
        let mut samples: Vec<(Labels, f64)> = counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|((_, labels), value)| (labels.clone(), *value))
            .collect();
        for labels in zeros {
            if !samples.iter().any(|(seen, _)| *seen == labels) {
                samples.push((labels, 0.0));
            }
        }
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, value) in samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.sample(name, &labels, value);
        }
    }
}

/// Prometheus text exposition, written in order.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    fn gauge_rows<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[([(&str, &str); N], f64)],
    ) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }
}
