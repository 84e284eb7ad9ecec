//! The `jira_fields` table: each site's field ids and names, so that reports can name
//! `customfield_10016`. Replaced by each listing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::CloudId;

/// One field as stored.
#[derive(Debug, Clone)]
pub struct FieldRow {
    /// E.g. `customfield_10016`.
    pub field_id: String,
    /// E.g. `Story point estimate`.
    pub name: String,
    /// Whether it is a custom field.
    pub custom: bool,
    /// `schema.type`.
    pub schema_type: Option<String>,
    /// The field's JSON as listed.
    pub raw: String,
}

/// Makes a site's fields the listed ones (fields gone from the listing are removed: a field
/// has no history worth keeping, unlike an issue). Returns how many are stored.
pub async fn replace_fields(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
    fields: &[FieldRow],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<&str> = fields.iter().map(|f| f.field_id.as_str()).collect();
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let custom: Vec<bool> = fields.iter().map(|f| f.custom).collect();
    let types: Vec<Option<&str>> = fields.iter().map(|f| f.schema_type.as_deref()).collect();
    let raw: Vec<&str> = fields.iter().map(|f| f.raw.as_str()).collect();
    sqlx::query("DELETE FROM jira_fields WHERE cloud_id = $1 AND NOT (field_id = ANY($2))")
        .bind(cloud_id)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    let stored = sqlx::query(
        "INSERT INTO jira_fields (cloud_id, field_id, name, custom, schema_type, raw, synced_at)
         SELECT $1, u.id, u.name, u.custom, u.kind, u.raw::jsonb, $7
         FROM UNNEST($2::text[], $3::text[], $4::bool[], $5::text[], $6::text[])
              AS u(id, name, custom, kind, raw)
         ON CONFLICT (cloud_id, field_id) DO UPDATE SET
            name = EXCLUDED.name, custom = EXCLUDED.custom, schema_type = EXCLUDED.schema_type,
            raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at",
    )
    .bind(cloud_id)
    .bind(&ids)
    .bind(&names)
    .bind(&custom)
    .bind(&types)
    .bind(&raw)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(stored.rows_affected())
}

/// When the site's fields were last listed; `None` before the first listing.
pub async fn listed_at(
    conn: &mut PgConnection,
    cloud_id: &CloudId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(synced_at) FROM jira_fields WHERE cloud_id = $1")
        .bind(cloud_id)
        .fetch_one(conn)
        .await
}
