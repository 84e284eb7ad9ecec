//! `grants list` and `grants import`.

use std::io::BufRead;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::app::App;
use crate::domain::RefreshToken;
use crate::onboarding;
use crate::report;

/// Prints the grants as a table or as JSON.
pub async fn list(app: &App, json: bool) -> anyhow::Result<()> {
    let reports = report::grant_reports(app).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", report::render_table(&reports));
    }
    Ok(())
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
    let (mut imported, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ImportLine = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Only the kind and place of the error: serde's message can quote a value
                // (a bare JSON string line is a token), which must not reach the terminal.
                eprintln!(
                    "line {number}: not a valid import line ({:?} error at column {}); expected {{\"label\": ..., \"refresh_token\": ...}}",
                    e.classify(),
                    e.column()
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
            Err(e @ onboarding::OnboardError::AlreadyPresented) => {
                skipped += 1;
                eprintln!("line {number} ({}): {e}", parsed.label.trim());
            }
            Err(e) => {
                failed += 1;
                eprintln!("line {number} ({}): {e}", parsed.label.trim());
            }
        }
    }
    eprintln!("{imported} imported, {skipped} already imported, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
