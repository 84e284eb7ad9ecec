//! The delivery side of the alert outbox: messages (one per alert transition, written by a
//! trigger on `alerts`) and their deliveries, one per sink, claimed with leases so that one
//! replica sends each, retried until the sink acknowledges.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AccountId, GrantId, Sink};

/// One message as a sink receives it: what the alert said at its transition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    /// The message row.
    pub id: i64,
    /// Stable across retries: receivers de-duplicate on it.
    pub delivery_id: Uuid,
    /// The alert this is a transition of.
    pub alert_id: i64,
    /// `open` or `resolved`.
    pub state: String,
    /// An alert kind name.
    pub kind: String,
    /// The grant concerned; `None` for a system alert.
    pub grant_id: Option<GrantId>,
    /// The grant's account, when known.
    pub account_id: Option<AccountId>,
    /// The grant's label (or what a system alert shows instead).
    pub label: String,
    /// For site alerts: the site.
    pub cloud_id: Option<String>,
    /// For site alerts: the product.
    pub product: Option<String>,
    /// What broke.
    pub reason: String,
    /// When the condition began.
    pub since: DateTime<Utc>,
    /// When it becomes (or became) fatal.
    pub deadline: Option<DateTime<Utc>>,
    /// When the transition happened.
    pub at: DateTime<Utc>,
}

impl Message {
    /// Whether this message reports a condition that began (rather than one that cleared).
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }
}

/// A delivery this process holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The sink to send to.
    pub sink: Sink,
    /// Attempts so far, this one included.
    pub attempt: i32,
    /// What to send.
    pub message: Message,
}

/// Creates a delivery for each of `sinks` for up to `limit` messages not yet fanned out.
/// Returns how many messages were fanned out.
pub async fn fan_out(
    conn: &mut PgConnection,
    sinks: &[Sink],
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let sinks: Vec<&str> = sinks.iter().map(|s| s.as_str()).collect();
    let fanned = sqlx::query(
        "WITH batch AS (
             SELECT id, at FROM alert_messages WHERE NOT fanned_out
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
         ), deliveries AS (
             INSERT INTO alert_deliveries (message_id, sink, next_attempt_at)
             SELECT batch.id, sink, batch.at FROM batch CROSS JOIN unnest($1::text[]) AS sink
             ON CONFLICT DO NOTHING
         )
         UPDATE alert_messages SET fanned_out = true FROM batch WHERE alert_messages.id = batch.id",
    )
    .bind(&sinks)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(fanned.rows_affected())
}

/// Leases up to `limit` due deliveries to `sinks` for `holder` until `now + lease`. A message
/// waits while an earlier message of the same alert is unacknowledged by the same sink, so a
/// sink never hears "resolved" before "open".
pub async fn claim_due(
    conn: &mut PgConnection,
    sinks: &[Sink],
    holder: &str,
    now: DateTime<Utc>,
    lease: TimeDelta,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    let sink_names: Vec<&str> = sinks.iter().map(|s| s.as_str()).collect();
    let rows: Vec<(String, i32, i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH due AS (
             SELECT d.message_id, d.sink FROM alert_deliveries d
             JOIN alert_messages m ON m.id = d.message_id
             WHERE d.delivered_at IS NULL AND d.sink = ANY($1) AND d.next_attempt_at <= $3
               AND (d.leased_until IS NULL OR d.leased_until <= $3)
               AND NOT EXISTS (
                   SELECT 1 FROM alert_messages earlier
                   JOIN alert_deliveries ed ON ed.message_id = earlier.id AND ed.sink = d.sink
                   WHERE earlier.alert_id = m.alert_id AND earlier.id < m.id
                     AND ed.delivered_at IS NULL)
             ORDER BY d.next_attempt_at, d.message_id
             LIMIT $5
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE alert_deliveries d
         SET leased_by = $2, leased_until = $4, attempts = d.attempts + 1, last_attempt_at = $3
         FROM due WHERE d.message_id = due.message_id AND d.sink = due.sink
         RETURNING d.sink, d.attempts, d.message_id, d.next_attempt_at",
    )
    .bind(&sink_names)
    .bind(holder)
    .bind(now)
    .bind(now + lease)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|(_, _, id, _)| *id).collect();
    let messages: Vec<Message> = sqlx::query_as(
        "SELECT id, delivery_id, alert_id, state, kind, grant_id, account_id, label, cloud_id,
                product, reason, since, deadline, at
         FROM alert_messages WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let mut rows = rows;
    // Longest waiting first, so that while a sink fails every message gets its turn; an
    // alert's own messages are never both claimed (the later one waits above).
    rows.sort_by_key(|(_, _, message_id, due)| (*due, *message_id));
    let mut claimed = Vec::with_capacity(rows.len());
    for (sink, attempt, message_id, _) in rows {
        let (Ok(sink), Some(message)) = (
            sink.parse::<Sink>(),
            messages.iter().find(|m| m.id == message_id),
        ) else {
            continue;
        };
        claimed.push(ClaimedDelivery {
            sink,
            attempt,
            message: message.clone(),
        });
    }
    Ok(claimed)
}

/// Records that `sink` acknowledged the message. Returns false when the lease was lost
/// (another replica took over; its own attempt will record the outcome).
pub async fn acknowledge(
    conn: &mut PgConnection,
    message_id: i64,
    sink: Sink,
    holder: &str,
    receipt: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE alert_deliveries
         SET delivered_at = $5, receipt = $4, leased_by = NULL, leased_until = NULL,
             last_error = NULL
         WHERE message_id = $1 AND sink = $2 AND leased_by = $3 AND delivered_at IS NULL",
    )
    .bind(message_id)
    .bind(sink.as_str())
    .bind(holder)
    .bind(receipt)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt and when to try again.
pub async fn record_failure(
    conn: &mut PgConnection,
    message_id: i64,
    sink: Sink,
    holder: &str,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE alert_deliveries
         SET last_error = $4, next_attempt_at = $5, leased_by = NULL, leased_until = NULL
         WHERE message_id = $1 AND sink = $2 AND leased_by = $3 AND delivered_at IS NULL",
    )
    .bind(message_id)
    .bind(sink.as_str())
    .bind(holder)
    .bind(error)
    .bind(retry_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A sink's backlog: unacknowledged deliveries and the oldest of them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SinkBacklog {
    /// The sink's stored name.
    pub sink: String,
    /// Deliveries not yet acknowledged.
    pub pending: i64,
    /// When the oldest of them was first due.
    pub oldest_at: Option<DateTime<Utc>>,
    /// Whether any of them has failed at least once.
    pub failing: bool,
    /// The last error of the oldest failing delivery.
    pub last_error: Option<String>,
}

/// The backlog of every sink with unacknowledged deliveries (a partial index keeps this to
/// the backlog, whatever the history).
pub async fn backlogs(conn: &mut PgConnection) -> Result<Vec<SinkBacklog>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.sink, count(*) AS pending, min(m.at) AS oldest_at,
                bool_or(d.last_error IS NOT NULL) AS failing,
                (array_agg(d.last_error ORDER BY m.id) FILTER (WHERE d.last_error IS NOT NULL))[1]
                    AS last_error
         FROM alert_deliveries d JOIN alert_messages m ON m.id = d.message_id
         WHERE d.delivered_at IS NULL
         GROUP BY d.sink",
    )
    .fetch_all(conn)
    .await
}

/// Deletes up to `limit` messages acknowledged by every sink and older than `before`.
pub async fn prune_delivered(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query(
        "DELETE FROM alert_messages WHERE id IN (
             SELECT m.id FROM alert_messages m
             WHERE m.fanned_out AND m.at < $1
               AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                               WHERE d.message_id = m.id AND d.delivered_at IS NULL)
             ORDER BY m.id LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(pruned.rows_affected())
}

/// Every delivery of `delivery_id`, as (sink, attempts, delivered, last error).
pub async fn deliveries_of(
    conn: &mut PgConnection,
    delivery_id: Uuid,
) -> Result<Vec<(String, i32, bool, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.sink, d.attempts, d.delivered_at IS NOT NULL, d.last_error
         FROM alert_deliveries d JOIN alert_messages m ON m.id = d.message_id
         WHERE m.delivery_id = $1 ORDER BY d.sink",
    )
    .bind(delivery_id)
    .fetch_all(conn)
    .await
}

/// Gives back deliveries claimed but not attempted (a drain that stopped early): the lease
/// goes and the attempt that was counted for them is taken back.
pub async fn release_unsent(
    conn: &mut PgConnection,
    unsent: &[(i64, Sink)],
    holder: &str,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<i64> = unsent.iter().map(|(id, _)| *id).collect();
    let sinks: Vec<&str> = unsent.iter().map(|(_, sink)| sink.as_str()).collect();
    let released = sqlx::query(
        "UPDATE alert_deliveries d
         SET leased_by = NULL, leased_until = NULL, attempts = d.attempts - 1
         FROM unnest($1::bigint[], $2::text[]) AS u(message_id, sink)
         WHERE d.message_id = u.message_id AND d.sink = u.sink AND d.leased_by = $3
           AND d.delivered_at IS NULL",
    )
    .bind(&ids)
    .bind(&sinks)
    .bind(holder)
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}
