//! The `jira_issues` table: the mirrored issues, written in batches (a binary `COPY` of
//! issues new to the table, an `UNNEST` upsert otherwise), never one statement per row;
//! deletions are soft (`deleted_at`).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::domain::{CloudId, IssueRow};

/// The columns [`insert_new_issues`] fills, as [`upsert_issues`] does, in the order of
/// [`CopyRows`]; `deleted_at` stays NULL.
const WRITTEN_COLUMNS: &str = "cloud_id, issue_id, issue_key, project_key, summary, status, \
                               issue_type, assignee_account_id, created_at, updated_at, raw, \
                               synced_at, status_category, priority, resolution, resolved_at, \
                               reporter_account_id, parent_key, labels";

/// Bytes per `CopyData` message: big enough to cost nothing per message, small enough that
/// Postgres starts parsing before the whole batch is sent.
const COPY_MESSAGE_BYTES: usize = 256 * 1024;

/// Upserts a page of issues in one statement. An older copy never overwrites a newer one
/// (overlapping windows fetch some issues twice), and an issue seen again is not deleted.
pub async fn upsert_issues(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if issues.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&IssueRow) -> Option<String>| issues.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<&str> = issues.iter().map(|i| i.issue_id.as_str()).collect();
    let keys: Vec<&str> = issues.iter().map(|i| i.issue_key.as_str()).collect();
    let created: Vec<Option<DateTime<Utc>>> = issues.iter().map(|i| i.created_at).collect();
    let updated: Vec<Option<DateTime<Utc>>> = issues.iter().map(|i| i.updated_at).collect();
    let resolved: Vec<Option<DateTime<Utc>>> = issues.iter().map(|i| i.resolved_at).collect();
    // Arrays of arrays must be rectangular in Postgres: labels travel as JSON text.
    let labels: Vec<String> = issues
        .iter()
        .map(|i| serde_json::to_string(&i.labels).unwrap_or_else(|_| "[]".into()))
        .collect();
    // Raw JSON goes over as text and becomes jsonb in the server, which parses it once.
    let raw: Vec<&str> = issues.iter().map(|i| i.raw.get()).collect();
    let result = sqlx::query(
        "INSERT INTO jira_issues (cloud_id, issue_id, issue_key, project_key, summary, status, issue_type,
                                 assignee_account_id, created_at, updated_at, raw, synced_at, deleted_at,
                                 status_category, priority, resolution, resolved_at,
                                 reporter_account_id, parent_key, labels)
         SELECT $1, u.id, u.key, u.project, u.summary, u.status, u.kind, u.assignee, u.created,
                u.updated, u.raw::jsonb, $11, NULL, u.category, u.priority, u.resolution,
                u.resolved, u.reporter, u.parent,
                ARRAY(SELECT jsonb_array_elements_text(u.labels::jsonb))
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::timestamptz[], $10::timestamptz[], $12::text[], $13::text[], $14::text[],
                     $15::text[], $16::timestamptz[], $17::text[], $18::text[], $19::text[])
              AS u(id, key, project, summary, status, kind, assignee, created, updated, raw,
                   category, priority, resolution, resolved, reporter, parent, labels)
         ON CONFLICT (cloud_id, issue_id) DO UPDATE SET
            issue_key = EXCLUDED.issue_key, project_key = EXCLUDED.project_key, summary = EXCLUDED.summary,
            status = EXCLUDED.status, issue_type = EXCLUDED.issue_type,
            assignee_account_id = EXCLUDED.assignee_account_id, created_at = EXCLUDED.created_at,
            updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at,
            deleted_at = NULL, status_category = EXCLUDED.status_category,
            priority = EXCLUDED.priority, resolution = EXCLUDED.resolution,
            resolved_at = EXCLUDED.resolved_at, reporter_account_id = EXCLUDED.reporter_account_id,
            parent_key = EXCLUDED.parent_key, labels = EXCLUDED.labels
         WHERE jira_issues.updated_at IS NULL OR EXCLUDED.updated_at IS NULL
            OR jira_issues.updated_at <= EXCLUDED.updated_at OR jira_issues.deleted_at IS NOT NULL",
    )
    .bind(cloud_id)
    .bind(&ids)
    .bind(&keys)
    .bind(column(|i| i.project_key.clone()))
    .bind(column(|i| i.summary.clone()))
    .bind(column(|i| i.status.clone()))
    .bind(column(|i| i.issue_type.clone()))
    .bind(column(|i| i.assignee_account_id.clone()))
    .bind(&created)
    .bind(&updated)
    .bind(now)
    .bind(&raw)
    .bind(column(|i| i.status_category.clone()))
    .bind(column(|i| i.priority.clone()))
    .bind(column(|i| i.resolution.clone()))
    .bind(&resolved)
    .bind(column(|i| i.reporter_account_id.clone()))
    .bind(column(|i| i.parent_key.clone()))
    .bind(&labels)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Inserts issues none of which the site has yet with one binary `COPY`: Postgres parses no
/// arrays or text timestamps and inserts rows in bulk, at about the cost of a plain `COPY`.
/// An issue stored meanwhile (or twice in `issues`) fails the whole `COPY` with a
/// unique violation (SQLSTATE 23505); [`upsert_or_set_aside`] then upserts instead.
pub async fn insert_new_issues(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if issues.is_empty() {
        return Ok(0);
    }
    let mut rows = CopyRows::new(issues.iter().map(|i| i.raw.get().len() + 512).sum());
    for issue in issues {
        rows.push(cloud_id, issue, now);
    }
    let data = rows.finish();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY jira_issues ({WRITTEN_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    for message in data.chunks(COPY_MESSAGE_BYTES) {
        copy.send(message).await?;
    }
    copy.finish().await
}

/// Whether the site already has a row for any of `issues` (deleted ones included).
///
/// One primary-key lookup per id, however large the table: the `LATERAL … LIMIT 1` keeps
/// Postgres from scanning the table once for the whole list, and the statement is planned
/// afresh each time (not prepared), so a plan made while the table was nearly empty is never
/// reused once it is large.
async fn any_stored(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
) -> Result<bool, sqlx::Error> {
    let ids: Vec<&str> = issues.iter().map(|i| i.issue_id.as_str()).collect();
    sqlx::query_scalar(
        "SELECT EXISTS (
            SELECT FROM unnest($2::text[]) AS u(id)
            CROSS JOIN LATERAL (SELECT FROM jira_issues j
                                WHERE j.cloud_id = $1 AND j.issue_id = u.id LIMIT 1) AS stored)",
    )
    .bind(cloud_id)
    .bind(&ids)
    .persistent(false)
    .fetch_one(conn)
    .await
}

/// Rows in `COPY … (FORMAT binary)`: a header, then per row a field count and each field as
/// its length (-1 for NULL) and its binary value, then a trailer.
struct CopyRows {
    data: Vec<u8>,
}

impl CopyRows {
    /// Fields per row: [`WRITTEN_COLUMNS`].
    const FIELDS: i16 = 19;
    /// `text`'s type oid, named in a binary array.
    const TEXT_OID: i32 = 25;

    fn new(capacity: usize) -> Self {
        let mut data = Vec::with_capacity(capacity + 32);
        data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        data.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        data.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { data }
    }

    fn push(&mut self, cloud_id: &CloudId, issue: &IssueRow, now: DateTime<Utc>) {
        self.data.extend_from_slice(&Self::FIELDS.to_be_bytes());
        self.text(Some(cloud_id.as_str()));
        self.text(Some(&issue.issue_id));
        self.text(Some(&issue.issue_key));
        self.text(issue.project_key.as_deref());
        self.text(issue.summary.as_deref());
        self.text(issue.status.as_deref());
        self.text(issue.issue_type.as_deref());
        self.text(issue.assignee_account_id.as_deref());
        self.timestamp(issue.created_at);
        self.timestamp(issue.updated_at);
        self.jsonb(issue.raw.get());
        self.timestamp(Some(now));
        self.text(issue.status_category.as_deref());
        self.text(issue.priority.as_deref());
        self.text(issue.resolution.as_deref());
        self.timestamp(issue.resolved_at);
        self.text(issue.reporter_account_id.as_deref());
        self.text(issue.parent_key.as_deref());
        self.text_array(&issue.labels);
    }

    fn finish(mut self) -> Vec<u8> {
        self.data.extend_from_slice(&(-1i16).to_be_bytes());
        self.data
    }

    /// A field's length; a value longer than a field can be is sent as a length Postgres
    /// refuses, so the row is set aside like any other refused value.
    fn len(&mut self, len: usize) {
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        self.data.extend_from_slice(&len.to_be_bytes());
    }

    fn null(&mut self) {
        self.data.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn text(&mut self, value: Option<&str>) {
        match value {
            Some(text) => {
                self.len(text.len());
                self.data.extend_from_slice(text.as_bytes());
            }
            None => self.null(),
        }
    }

    /// `jsonb`'s binary form is a version byte (1) and the JSON text, which Postgres parses.
    fn jsonb(&mut self, json: &str) {
        self.len(json.len() + 1);
        self.data.push(1);
        self.data.extend_from_slice(json.as_bytes());
    }

    /// Microseconds since Postgres's epoch, 2000-01-01 UTC, as sqlx binds a `DateTime<Utc>`
    /// (Postgres refuses what is beyond its range).
    fn timestamp(&mut self, value: Option<DateTime<Utc>>) {
        const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        match value {
            Some(t) => {
                self.len(8);
                let micros = t.timestamp_micros() - POSTGRES_EPOCH_MICROS;
                self.data.extend_from_slice(&micros.to_be_bytes());
            }
            None => self.null(),
        }
    }

    /// A one-dimensional `text[]` (no dimension at all when empty, as `'{}'` is stored).
    fn text_array(&mut self, items: &[String]) {
        let dims = if items.is_empty() { 0 } else { 8 };
        let body = 12 + dims + items.iter().map(|i| 4 + i.len()).sum::<usize>();
        self.len(body);
        self.data
            .extend_from_slice(&i32::from(!items.is_empty()).to_be_bytes());
        self.data.extend_from_slice(&0i32.to_be_bytes()); // no NULL element
        self.data.extend_from_slice(&Self::TEXT_OID.to_be_bytes());
        if !items.is_empty() {
            self.len(items.len());
            self.data.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        }
        for item in items {
            self.text(Some(item));
        }
    }
}

/// What [`upsert_or_set_aside`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Rows inserted or updated.
    pub upserted: u64,
    /// Rows Postgres refused, now in `jira_issue_quarantine`.
    pub quarantined: u64,
}

/// `issues` with one row per issue: its latest copy (by `updated`, then by position). Paging
/// by `updated` lists an issue changed mid-scan again further on, and one statement may not
/// write a row twice.
fn latest_copies(issues: &[IssueRow]) -> std::borrow::Cow<'_, [IssueRow]> {
    let mut seen = std::collections::HashMap::with_capacity(issues.len());
    let mut duplicated = false;
    for (at, issue) in issues.iter().enumerate() {
        if let Some(earlier) = seen.insert(issue.issue_id.as_str(), at) {
            duplicated = true;
            // Keep the earlier copy when it is the newer one.
            if issues[earlier].updated_at > issue.updated_at {
                seen.insert(issue.issue_id.as_str(), earlier);
            }
        }
    }
    if !duplicated {
        return std::borrow::Cow::Borrowed(issues);
    }
    let kept: std::collections::HashSet<usize> = seen.into_values().collect();
    std::borrow::Cow::Owned(
        issues
            .iter()
            .enumerate()
            .filter(|(at, _)| kept.contains(at))
            .map(|(_, issue)| issue.clone())
            .collect(),
    )
}

/// Writes `issues` in one statement: a binary `COPY` when the site has none of them yet (a
/// first sync, new issues), else an upsert, and an upsert too when the `COPY` meets a row
/// stored meanwhile. If Postgres refuses the batch for a bad value, each row is upserted on
/// its own (inside savepoints of the caller's transaction) and the ones it still refuses are
/// set aside in `jira_issue_quarantine` with the error, so the rest commit.
pub async fn upsert_or_set_aside(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
    now: DateTime<Utc>,
) -> Result<Stored, sqlx::Error> {
    let issues = &*latest_copies(issues);
    // Probing first keeps an incremental run (mostly issues already stored) from paying for
    // a COPY that would fail.
    let fresh = !issues.is_empty() && !any_stored(conn, cloud_id, issues).await?;
    let write = if fresh { Write::Copy } else { Write::Upsert };
    let mut batch = in_savepoint(conn, write, cloud_id, issues, now).await;
    if fresh && batch.as_ref().is_err_and(is_conflict) {
        batch = in_savepoint(conn, Write::Upsert, cloud_id, issues, now).await;
    }
    let error = match batch {
        Ok(upserted) => {
            clear_quarantine(conn, cloud_id, issues).await?;
            return Ok(Stored {
                upserted,
                quarantined: 0,
            });
        }
        Err(e) if is_bad_value(&e) => e,
        Err(e) => return Err(e),
    };
    tracing::warn!(site.cloud_id = %cloud_id, error = %error, rows = issues.len(), "a batch of issues was refused; storing them one by one");
    let mut stored = Stored::default();
    for issue in issues {
        let one = std::slice::from_ref(issue);
        match in_savepoint(conn, Write::Upsert, cloud_id, one, now).await {
            Ok(n) => {
                stored.upserted += n;
                clear_quarantine(conn, cloud_id, one).await?;
            }
            Err(e) if is_bad_value(&e) => {
                quarantine(conn, cloud_id, issue, &e.to_string(), now).await?;
                stored.quarantined += 1;
                tracing::warn!(site.cloud_id = %cloud_id, issue.key = %issue.issue_key, error = %e, "issue set aside in jira_issue_quarantine");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(stored)
}

/// How a batch is written.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// [`insert_new_issues`]: only for issues the site has none of.
    Copy,
    /// [`upsert_issues`].
    Upsert,
}

/// Writes a batch inside a savepoint, rolled back if Postgres refuses it, so the caller's
/// transaction can go on.
async fn in_savepoint(
    conn: &mut PgConnection,
    write: Write,
    cloud_id: &CloudId,
    issues: &[IssueRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut savepoint = conn.begin().await?;
    let written = match write {
        Write::Copy => insert_new_issues(&mut savepoint, cloud_id, issues, now).await,
        Write::Upsert => upsert_issues(&mut savepoint, cloud_id, issues, now).await,
    };
    match written {
        Ok(n) => {
            savepoint.commit().await?;
            Ok(n)
        }
        Err(e) => {
            savepoint.rollback().await?;
            Err(e)
        }
    }
}

/// A row already stored (unique violation): a `COPY` of new issues met one that is not.
fn is_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
}

/// A value Postgres refuses (SQLSTATE class 22, data exception; or a row too large), as
/// opposed to a database that is down: only these set a row aside.
fn is_bad_value(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code == "54000")
}

async fn quarantine(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issue: &IssueRow,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // The raw text may hold what Postgres refused; keep it, minus NUL bytes, as text.
    let raw = issue.raw.get().replace('\0', "");
    sqlx::query(
        "INSERT INTO jira_issue_quarantine (cloud_id, issue_id, issue_key, error, raw,
                                            first_seen_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (cloud_id, issue_id) DO UPDATE SET
            issue_key = EXCLUDED.issue_key, error = EXCLUDED.error, raw = EXCLUDED.raw,
            last_seen_at = EXCLUDED.last_seen_at",
    )
    .bind(cloud_id)
    .bind(&issue.issue_id)
    .bind(issue.issue_key.replace('\0', ""))
    .bind(error)
    .bind(raw)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Issues stored after all leave the quarantine.
async fn clear_quarantine(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    issues: &[IssueRow],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = issues.iter().map(|i| i.issue_id.as_str()).collect();
    sqlx::query("DELETE FROM jira_issue_quarantine WHERE cloud_id = $1 AND issue_id = ANY($2)")
        .bind(cloud_id)
        .bind(&ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ids of a site's issues that are not marked deleted.
pub async fn live_issue_ids(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT issue_id FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL",
    )
    .bind(cloud_id)
    .fetch_all(conn)
    .await
}

/// Marks issues deleted (soft); rows synced after `seen_before` are left alone, since they
/// were written after the enumeration that missed them began.
pub async fn mark_issues_deleted(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
    seen_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jira_issues SET deleted_at = $4
         WHERE cloud_id = $1 AND issue_id = ANY($2) AND deleted_at IS NULL AND synced_at < $3",
    )
    .bind(cloud_id)
    .bind(ids)
    .bind(seen_before)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Clears `deleted_at` for issues that are back. Returns how many came back.
pub async fn restore_issues(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jira_issues SET deleted_at = NULL
         WHERE cloud_id = $1 AND issue_id = ANY($2) AND deleted_at IS NOT NULL",
    )
    .bind(cloud_id)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// How many rows a site has, deleted ones included.
pub async fn count_issues(conn: &mut PgConnection, cloud_id: &CloudId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM jira_issues WHERE cloud_id = $1")
        .bind(cloud_id)
        .fetch_one(conn)
        .await
}

/// A site's rows as (live, soft-deleted).
pub async fn live_and_deleted(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL)
         FROM jira_issues WHERE cloud_id = $1",
    )
    .bind(cloud_id)
    .fetch_one(conn)
    .await
}

/// Every issue id of a site with whether its row is soft-deleted.
pub async fn id_states(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT issue_id, deleted_at IS NOT NULL FROM jira_issues WHERE cloud_id = $1")
        .bind(cloud_id)
        .fetch_all(conn)
        .await
}
