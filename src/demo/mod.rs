//! `atlassync demo`: a guided tour on a private database and the built-in emulator.

use std::sync::Arc;

use anyhow::Context;

use crate::clock::SystemClock;
use crate::emulator::{ConsentDecision, EmulatorConfig, NewUser, Product};
use crate::sandbox::{Overrides, Sandbox};

/// Runs the tour against the database in `DATABASE_URL`.
pub async fn run() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .context("DATABASE_URL is not set (scripts/demo starts a private Postgres and sets it)")?;
    let pool = crate::store::connect(&url, 10).await?;
    crate::store::migrate(&pool).await?;
    let sandbox = Sandbox::start(
        pool,
        Arc::new(SystemClock),
        EmulatorConfig::default(),
        &Overrides::new(),
    )
    .await?;
    let emulator = &sandbox.emulator;

    step("An Atlassian Cloud (the built-in emulator) with two sites and three users");
    let acme = emulator.add_site("acme", &[Product::Jira, Product::Confluence]);
    let globex = emulator.add_site("globex", &[Product::Jira]);
    let people = [
        (
            "mia",
            "Mia Krystof",
            "Australia/Sydney",
            vec![acme.clone(), globex.clone()],
        ),
        ("sam", "Sam Ortiz", "America/New_York", vec![acme.clone()]),
        ("priya", "Priya Raman", "Asia/Kolkata", vec![globex.clone()]),
    ];
    let mut accounts = Vec::new();
    for (handle, name, zone, sites) in &people {
        let account_id = emulator.add_user(NewUser {
            name: (*name).to_owned(),
            email: format!("{handle}@example.com"),
            zoneinfo: (*zone).to_owned(),
            jira_time_zone: (*zone).to_owned(),
            sites: sites.clone(),
        });
        println!("  {name:<12} {account_id}  ({zone})");
        accounts.push(account_id);
    }
    println!("  emulator at {}", emulator.base_url());
    println!("  consent server at {}", sandbox.http_base);

    step("Each user opens an invite link and consents through the real OAuth flow");
    for ((handle, name, _, _), account_id) in people.iter().zip(&accounts) {
        let link = sandbox.app.invite_link(handle);
        println!(
            "  invite for {name}: {}…",
            &link.as_str()[..link.as_str().len().min(72)]
        );
        let (status, body) = sandbox
            .consent(
                handle,
                ConsentDecision::Accept {
                    account_id: account_id.clone(),
                    sites: None,
                },
            )
            .await?;
        println!("    → HTTP {status}: {}", page_title(&body));
    }

    step("Someone opens an invite and declines on the consent page");
    let (status, body) = sandbox.consent("stranger", ConsentDecision::Deny).await?;
    println!("    → HTTP {status}: {}", page_title(&body));

    step("Mia consents again: her grant is renewed (a new token family), not duplicated");
    let (status, body) = sandbox
        .consent(
            "mia",
            ConsentDecision::Accept {
                account_id: accounts[0].clone(),
                sites: None,
            },
        )
        .await?;
    println!("    → HTTP {status}: {}", page_title(&body));

    step("atlassync grants list");
    let reports = crate::cli::grant_reports(&sandbox.app).await?;
    print!("{}", crate::cli::render_table(&reports));

    let counters = emulator.counters();
    step("What the emulator saw");
    println!(
        "  code exchanges {}, refreshes {}, family revocations {}",
        counters.code_exchanges, counters.refreshes, counters.family_revocations
    );
    let sealed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM grants WHERE refresh_token_key_id IS NOT NULL")
            .fetch_one(&sandbox.app.pool)
            .await?;
    println!(
        "  {sealed} grants stored, every token sealed (XChaCha20-Poly1305, key {})",
        sandbox.app.keyring().current_key_id()
    );
    sandbox.stop();
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// The `<h1>` of one of our pages, for a one-line summary.
fn page_title(html: &str) -> String {
    html.split_once("<h1>")
        .and_then(|(_, rest)| rest.split_once("</h1>"))
        .map(|(title, _)| title.to_owned())
        .unwrap_or_else(|| html.chars().take(80).collect())
}
