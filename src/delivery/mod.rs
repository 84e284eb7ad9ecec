//! Delivers the alert outbox. Every alert transition is a message (written by the database
//! in the transaction that changed the alert); each message is delivered to every sink
//! configured when it was fanned out: the structured log always, the signed webhook and JSM
//! Operations when configured. Deliveries are leased (one sender per message and sink across
//! replicas), retried with exponential backoff and jitter until acknowledged, across restarts
//! and database blips, and a sink that stays down raises its own `delivery_failing` alert.

mod jsm;
pub mod message;
pub mod webhook;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::join_all;
use rand::RngExt;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::Sink;
use crate::lifecycle::Refresher;
use crate::store::alert_outbox::{self, ClaimedDelivery, Message};
use crate::store::alerts::{self as alert_rows, AlertKind, SystemAlert};

/// Messages fanned out, and deliveries claimed, per statement.
const BATCH: i64 = 50;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Deliveries acknowledged by their sink.
    pub delivered: u32,
    /// Attempts that failed and were rescheduled.
    pub failed: u32,
}

/// Sends due deliveries. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliverer {
    app: App,
    refresher: Refresher,
}

impl Deliverer {
    /// A deliverer for `app`; JSM calls get their tokens from `refresher`, whose holder name
    /// also marks this process's delivery leases.
    pub fn new(app: App, refresher: Refresher) -> Self {
        Self { app, refresher }
    }

    /// Fans out new messages, then delivers what is due, each sink on its own so that a sink
    /// that hangs delays nobody else; then raises or clears `delivery_failing` per sink.
    pub async fn run_once(&self, stop: &CancellationToken) -> Result<DeliveryReport, sqlx::Error> {
        let sinks = self.app.config.alerts.sinks();
        {
            let mut conn = self.app.pool.acquire().await?;
            while alert_outbox::fan_out(&mut conn, &sinks, BATCH).await? == BATCH as u64 {}
        }
        let runs = join_all(sinks.iter().map(|sink| self.drain(*sink, stop))).await;
        let mut report = DeliveryReport::default();
        for run in runs {
            let run = run?;
            report.delivered += run.delivered;
            report.failed += run.failed;
        }
        self.watch_sinks().await?;
        Ok(report)
    }

    /// Delivers due messages to one sink until none is due, shutdown begins, or the sink
    /// fails (the rest wait for their next attempt rather than piling onto a dead sink).
    async fn drain(
        &self,
        sink: Sink,
        stop: &CancellationToken,
    ) -> Result<DeliveryReport, sqlx::Error> {
        let mut report = DeliveryReport::default();
        let holder = self.refresher.holder();
        while !stop.is_cancelled() {
            let now = self.app.clock.now();
            let claimed = {
                let mut conn = self.app.pool.acquire().await?;
                alert_outbox::claim_due(&mut conn, &[sink], holder, now, self.lease(), BATCH)
                    .await?
            };
            if claimed.is_empty() {
                break;
            }
            let mut pending = claimed.into_iter();
            while let Some(delivery) = pending.next() {
                // Once a send starts it finishes and is recorded, even during shutdown: the
                // lease would otherwise make the message wait for it to expire.
                let delivered = self.deliver(&delivery).await?;
                if delivered {
                    report.delivered += 1;
                } else {
                    report.failed += 1;
                }
                if !delivered || stop.is_cancelled() {
                    // The rest go back untouched, due as before, for the next run.
                    let unsent: Vec<_> = pending.map(|d| (d.message.id, d.sink)).collect();
                    if !unsent.is_empty() {
                        let mut conn = self.app.pool.acquire().await?;
                        alert_outbox::release_unsent(&mut conn, &unsent, holder).await?;
                    }
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    /// Sends one claimed delivery and records the outcome. Returns whether it was
    /// acknowledged.
    async fn deliver(&self, delivery: &ClaimedDelivery) -> Result<bool, sqlx::Error> {
        let ClaimedDelivery {
            sink,
            attempt,
            message,
        } = delivery;
        let outcome = match sink {
            Sink::Log => Ok(log(&self.app, message)),
            Sink::Webhook => webhook::send(&self.app, message).await,
            Sink::Jsm => jsm::send(&self.app, &self.refresher, message, *attempt).await,
        };
        let now = self.app.clock.now();
        let holder = self.refresher.holder();
        let mut conn = self.app.pool.acquire().await?;
        match outcome {
            Ok(receipt) => {
                self.app.telemetry.delivery(sink.as_str(), "delivered");
                alert_outbox::acknowledge(&mut conn, message.id, *sink, holder, &receipt, now)
                    .await?;
                tracing::debug!(sink = %sink, delivery_id = %message.delivery_id, %receipt, "alert message delivered");
                Ok(true)
            }
            Err(error) => {
                self.app.telemetry.delivery(sink.as_str(), "failed");
                let retry_at = now + self.backoff(*attempt);
                alert_outbox::record_failure(
                    &mut conn, message.id, *sink, holder, &error, retry_at,
                )
                .await?;
                tracing::warn!(sink = %sink, delivery_id = %message.delivery_id, alert.id = message.alert_id, attempt, %error, %retry_at, "alert delivery failed; will retry");
                Ok(false)
            }
        }
    }

    /// Long enough for the slowest send (JSM may refresh a token first) to finish and be
    /// recorded; a crashed sender's deliveries are taken over after it.
    fn lease(&self) -> TimeDelta {
        let timeout = self.app.config.atlassian.request_timeout;
        TimeDelta::from_std(timeout * 3).unwrap_or(TimeDelta::minutes(2)) + TimeDelta::seconds(10)
    }

    /// Exponential from `alerts.retry_initial`, capped at `alerts.retry_max`, with jitter so
    /// that a sink coming back is not hit by every replica's backlog at once.
    fn backoff(&self, attempt: i32) -> TimeDelta {
        let alerts = &self.app.config.alerts;
        let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
        let full = alerts
            .retry_initial
            .checked_mul(1 << doublings.min(20))
            .unwrap_or(alerts.retry_max)
            .min(alerts.retry_max);
        let ms = full.num_milliseconds().max(1);
        TimeDelta::milliseconds(ms / 2 + rand::rng().random_range(0..=ms / 2))
    }

    /// Raises `delivery_failing` for each sink whose oldest unacknowledged message has
    /// failed for `alerts.sink_failing_after`, and clears it when the sink catches up.
    async fn watch_sinks(&self) -> Result<(), sqlx::Error> {
        let now = self.app.clock.now();
        let threshold = self.app.config.alerts.sink_failing_after;
        let mut conn = self.app.pool.acquire().await?;
        let backlogs = alert_outbox::backlogs(&mut conn).await?;
        let configured: Vec<&str> = self
            .app
            .config
            .alerts
            .sinks()
            .iter()
            .map(|s| s.as_str())
            .collect();
        for orphaned in backlogs
            .iter()
            .filter(|b| !configured.contains(&b.sink.as_str()))
        {
            // Never dropped here: another replica may still have the sink configured.
            tracing::warn!(sink = %orphaned.sink, pending = orphaned.pending, "alert messages wait for a sink this replica has not configured");
        }
        let failing: Vec<_> = backlogs
            .iter()
            .filter(|b| configured.contains(&b.sink.as_str()) && is_failing(b, now, threshold))
            .collect();
        for backlog in &failing {
            let reason = format!(
                "the {} sink has not acknowledged {} alert message(s), the oldest since {}: {}",
                backlog.sink,
                backlog.pending,
                backlog
                    .oldest_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default(),
                backlog.last_error.as_deref().unwrap_or("no answer"),
            );
            let alert = SystemAlert {
                kind: AlertKind::DeliveryFailing,
                subject: &backlog.sink,
                label: "(app)",
                site: None,
                reason: &reason,
                since: backlog.oldest_at.unwrap_or(now),
            };
            if alert_rows::open_system_alert(&mut conn, &alert, now).await? {
                tracing::error!(sink = %backlog.sink, %reason, "alert sink failing");
            }
        }
        for subject in
            alert_rows::open_system_subjects(&mut conn, AlertKind::DeliveryFailing).await?
        {
            if !failing.iter().any(|b| b.sink == subject) {
                alert_rows::resolve_system_alert(
                    &mut conn,
                    AlertKind::DeliveryFailing,
                    &subject,
                    now,
                )
                .await?;
                tracing::info!(sink = %subject, "alert sink delivering again");
            }
        }
        Ok(())
    }
}

/// Whether a sink's backlog counts as failing at `now`.
pub fn is_failing(
    backlog: &alert_outbox::SinkBacklog,
    now: DateTime<Utc>,
    threshold: TimeDelta,
) -> bool {
    backlog.failing && backlog.oldest_at.is_some_and(|at| now - at >= threshold)
}

/// The log sink: one structured line per message, with everything a person needs to act.
fn log(app: &App, message: &Message) -> String {
    let link = message::reconsent_url(app, message);
    if message.is_open() {
        tracing::warn!(
            delivery_id = %message.delivery_id,
            alert.id = message.alert_id,
            alert.kind = %message.kind,
            grant.id = message.grant_id.map(|id| id.to_string()),
            grant.label = %message.label,
            account_id = message.account_id.as_ref().map(|a| a.as_str()),
            site.cloud_id = message.cloud_id.as_deref(),
            reason = %message.reason,
            since = %message.since,
            deadline = message.deadline.map(|d| d.to_rfc3339()),
            reconsent_url = link.as_deref(),
            "alert open"
        );
    } else {
        tracing::info!(
            delivery_id = %message.delivery_id,
            alert.id = message.alert_id,
            alert.kind = %message.kind,
            grant.label = %message.label,
            "alert resolved"
        );
    }
    "logged".into()
}
