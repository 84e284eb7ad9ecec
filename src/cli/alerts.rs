//! `alerts list`: the open alerts, newest first, with who, why, since when and by when.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app::App;
use crate::store::alerts::{self, StoredAlert};

/// One open alert as `alerts list --json` shows it.
#[derive(Debug, Serialize)]
struct AlertLine {
    id: i64,
    kind: String,
    grant_id: Option<String>,
    label: String,
    account_id: Option<String>,
    cloud_id: Option<String>,
    product: Option<String>,
    reason: String,
    since: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    opened_at: DateTime<Utc>,
    /// Minted now for a grant's alert (bound to its account, valid past the deadline);
    /// `None` for an app-level alert.
    reconsent_url: Option<String>,
}

impl AlertLine {
    fn new(app: &App, alert: StoredAlert) -> Self {
        let reconsent_url = alert.grant_id.map(|_| {
            app.reconsent_link(&alert.label, alert.account_id.as_ref(), alert.deadline)
                .to_string()
        });
        Self {
            id: alert.id,
            kind: alert.kind,
            grant_id: alert.grant_id.map(|id| id.to_string()),
            label: alert.label,
            account_id: alert.account_id.map(|a| a.to_string()),
            cloud_id: alert.cloud_id,
            product: alert.product,
            reason: alert.reason,
            since: alert.since,
            deadline: alert.deadline,
            opened_at: alert.opened_at,
            reconsent_url,
        }
    }
}

/// Prints the open alerts, newest first, as a table or as JSON.
pub async fn list(app: &App, json: bool) -> anyhow::Result<()> {
    let open = {
        let mut conn = app.pool.acquire().await?;
        alerts::open_alerts(&mut conn).await?
    };
    let lines: Vec<AlertLine> = open
        .into_iter()
        .rev()
        .map(|alert| AlertLine::new(app, alert))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    println!(
        "{:<16} {:<26} {:<20} {:<16} {:<16} REASON",
        "OPENED", "KIND", "WHO", "SINCE", "DEADLINE"
    );
    for line in &lines {
        let who = match &line.account_id {
            Some(account) => format!("{} ({account})", line.label),
            None => line.label.clone(),
        };
        let reason: String = line.reason.chars().take(80).collect();
        println!(
            "{:<16} {:<26} {:<20} {:<16} {:<16} {reason}",
            time(line.opened_at),
            line.kind,
            who.chars().take(20).collect::<String>(),
            time(line.since),
            line.deadline.map(time).unwrap_or_else(|| "-".into()),
        );
    }
    if lines.is_empty() {
        eprintln!("no open alerts");
    }
    Ok(())
}
