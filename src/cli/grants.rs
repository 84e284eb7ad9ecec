//! `grants list` and `grants import`.

use std::io::BufRead;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::oauth::RefreshToken;
use crate::onboarding;
use crate::store::grants::{self, GrantStatus};
use crate::store::sites::{self, StoredSite};

/// One grant as `grants list` shows it.
#[derive(Debug, Serialize)]
pub struct GrantReport {
    pub id: uuid::Uuid,
    pub label: String,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub status: GrantStatus,
    pub status_reason: Option<String>,
    pub sites: Vec<StoredSite>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub refresh_idle_deadline: DateTime<Utc>,
    pub family_deadline: DateTime<Utc>,
    pub refresh_started_at: Option<DateTime<Utc>>,
    pub failure_streak: i32,
    pub last_error: Option<String>,
}

/// Every grant with its sites.
pub async fn grant_reports(app: &App) -> Result<Vec<GrantReport>, sqlx::Error> {
    let mut conn = app.pool.acquire().await?;
    let all = grants::all_grants(&mut conn).await?;
    let all_sites = sites::all_sites(&mut conn).await?;
    Ok(all
        .into_iter()
        .map(|g| GrantReport {
            sites: all_sites
                .iter()
                .filter(|s| s.grant_id == g.id)
                .cloned()
                .collect(),
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
        .collect())
}

/// Prints the grants as a table or as JSON.
pub async fn list(app: &App, json: bool) -> anyhow::Result<()> {
    let reports = grant_reports(app).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", render_table(&reports));
    }
    Ok(())
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
                    .clone()
                    .unwrap_or_else(|| "(unidentified)".into()),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    label: String,
    refresh_token: String,
    #[serde(default)]
    consented_at: Option<DateTime<Utc>>,
}

/// Imports JSON lines from stdin; a bad line is reported with its number and the rest still
/// import. Exits 1 when any line failed.
pub async fn import(app: &App) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let lines: Vec<String> = stdin.lock().lines().collect::<Result<_, _>>()?;
    let (mut imported, mut failed) = (0usize, 0usize);
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ImportLine = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                // serde's message never echoes string values, so no token leaks here.
                eprintln!(
                    "line {number}: not a valid import line ({e}); expected {{\"label\": ..., \"refresh_token\": ...}}"
                );
                failed += 1;
                continue;
            }
        };
        if parsed.label.trim().is_empty() || parsed.refresh_token.trim().is_empty() {
            eprintln!("line {number}: label and refresh_token must not be empty");
            failed += 1;
            continue;
        }
        let token = RefreshToken::new(parsed.refresh_token.trim());
        match onboarding::import_refresh_token(
            app,
            parsed.label.trim(),
            &token,
            parsed.consented_at,
        )
        .await
        {
            Ok(connected) => {
                imported += 1;
                eprintln!(
                    "line {number}: imported {} as grant {} ({} sites{})",
                    connected.account.account_id,
                    connected.grant_id,
                    connected.sites.len(),
                    if connected.renewed {
                        ", renewed an existing grant"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("line {number} ({}): {e}", parsed.label.trim());
            }
        }
    }
    eprintln!("{imported} imported, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
