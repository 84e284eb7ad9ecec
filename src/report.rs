//! What operators are shown about grants: one report per grant with its sites and deadlines,
//! as JSON or as a plain-text table (`grants list`, the demo).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app::App;
use crate::domain::{AccountId, GrantId, GrantStatus};
use crate::store::grants;
use crate::store::sites::{self, StoredSite};

/// One grant as `grants list` shows it.
#[derive(Debug, Serialize)]
pub struct GrantReport {
    /// The grant's id; only in `--json`.
    pub id: GrantId,
    /// The invite's label; not unique.
    pub label: String,
    /// `None` for an import whose account could not be identified (`(unidentified)`).
    pub account_id: Option<AccountId>,
    /// From `/me`; only in `--json`.
    pub account_name: Option<String>,
    /// Health: `active`, `degraded`, `needs_reauth` or `disabled`.
    pub status: GrantStatus,
    /// Why the status was set; the table shows its first 40 characters.
    pub status_reason: Option<String>,
    /// Every site row of the grant, revoked ones included.
    pub sites: Vec<StoredSite>,
    /// The granted scopes, as of the latest token answer that listed any.
    pub scopes: Vec<String>,
    /// When the stored access token expires; `None` when none is stored.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the refresh token dies unless rotated: last rotation + `tokens.inactivity_expiry`.
    pub refresh_idle_deadline: DateTime<Utc>,
    /// When the token family ends regardless: its start + `tokens.absolute_expiry`.
    pub family_deadline: DateTime<Utc>,
    /// Set while an exchange is in flight; still set with no lease held, one was interrupted.
    pub refresh_started_at: Option<DateTime<Utc>>,
    /// Failed refreshes in a row.
    pub failure_streak: i32,
    /// The last refresh failure; cleared by a success.
    pub last_error: Option<String>,
}

/// Every grant with its sites.
pub async fn grant_reports(app: &App) -> Result<Vec<GrantReport>, sqlx::Error> {
    let mut conn = app.pool.acquire().await?;
    let all = grants::all_grants(&mut conn).await?;
    let all_sites = sites::all_sites(&mut conn).await?;
    Ok(with_sites(all, &all_sites))
}

/// Up to `limit` grants with their sites, nearest cliff (refresh idle or family deadline)
/// first, and how many grants there are in all.
pub async fn nearest_grant_reports(
    app: &App,
    limit: i64,
) -> Result<(Vec<GrantReport>, i64), sqlx::Error> {
    let mut conn = app.pool.acquire().await?;
    let nearest = grants::grants_by_nearest_deadline(&mut conn, limit).await?;
    let total = grants::count_grants(&mut conn).await?;
    let ids: Vec<GrantId> = nearest.iter().map(|g| g.id).collect();
    let their_sites = sites::sites_of_grants(&mut conn, &ids).await?;
    Ok((with_sites(nearest, &their_sites), total))
}

fn with_sites(grants: Vec<grants::Grant>, all_sites: &[StoredSite]) -> Vec<GrantReport> {
    grants
        .into_iter()
        .map(|g| GrantReport {
            sites: all_sites
                .iter()
                .filter(|s| s.grant_id == g.id)
                .cloned()
                .collect(),
            scopes: g.scopes,
            id: g.id,
            label: g.label,
            account_id: g.account_id,
            account_name: g.account_name,
            status: g.status,
            status_reason: g.status_reason,
            access_expires_at: g.access_expires_at,
            refresh_idle_deadline: g.refresh_idle_deadline,
            family_deadline: g.family_deadline,
            refresh_started_at: g.refresh_started_at,
            failure_streak: g.failure_streak,
            last_error: g.last_error,
        })
        .collect()
}

/// A plain-text table, one row per grant.
pub fn render_table(reports: &[GrantReport]) -> String {
    let header = [
        "LABEL",
        "ACCOUNT",
        "STATUS",
        "SITES",
        "ACCESS EXPIRES",
        "REFRESH IDLE DEADLINE",
        "FAMILY DEADLINE",
    ];
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            let active: Vec<String> = r
                .sites
                .iter()
                .filter(|s| s.status == "active")
                .map(|s| {
                    let mut name = format!("{}/{}", s.name, s.product);
                    if !s.missing_scopes.is_empty() || s.scope_error.is_some() {
                        name.push_str("(scopes!)");
                    }
                    name
                })
                .collect();
            let revoked = r.sites.iter().filter(|s| s.status == "revoked").count();
            let mut sites = if active.is_empty() {
                "-".to_owned()
            } else {
                active.join(",")
            };
            if revoked > 0 {
                sites.push_str(&format!(" +{revoked} revoked"));
            }
            let mut status = r.status.to_string();
            if let Some(reason) = &r.status_reason {
                // The full reason is in `--json` and the alert; keep the table readable.
                let short: String = reason.chars().take(40).collect();
                let ellipsis = if reason.chars().count() > 40 {
                    "…"
                } else {
                    ""
                };
                status.push_str(&format!(" ({short}{ellipsis})"));
            }
            [
                r.label.clone(),
                r.account_id
                    .as_ref()
                    .map_or_else(|| "(unidentified)".into(), ToString::to_string),
                status,
                sites,
                r.access_expires_at
                    .map(timestamp)
                    .unwrap_or_else(|| "-".into()),
                timestamp(r.refresh_idle_deadline),
                timestamp(r.family_deadline),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        out.push_str(
            "(no grants yet: send a user the link from `atlassync invite --label NAME`)\n",
        );
    }
    out
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}
