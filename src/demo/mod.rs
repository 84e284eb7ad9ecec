//! `atlassync demo`: a guided tour on a private database and the built-in emulator — users
//! connect through the real OAuth flow, then a year of grant life and syncing is compressed
//! into about a minute on a shared manual clock.

mod tour;

use std::sync::Arc;

use anyhow::Context;

use crate::clock::ManualClock;
use crate::sandbox::{Overrides, Sandbox};
use atlassian_emulator::{ConsentDecision, EmulatorConfig, NewUser, Product};

/// The cast: (label, name, time zone). Ana reaches only sites others sync, so her grant
/// is idle and lives on keep-alive rotations alone.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("mia", "Mia Krystof", "Australia/Sydney"),
    ("sam", "Sam Ortiz", "America/Los_Angeles"),
    ("priya", "Priya Raman", "Asia/Kolkata"),
    ("ana", "Ana Lima", "America/Sao_Paulo"),
];

/// Runs the tour against the database in `DATABASE_URL`.
pub async fn run() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .context("DATABASE_URL is not set (scripts/demo starts a private Postgres and sets it)")?;
    let pool = crate::store::connect(&url, 10).await?;
    crate::store::migrate(&pool).await?;
    let clock = Arc::new(ManualClock::starting_now());
    let sandbox = Sandbox::start(
        pool,
        clock.clone(),
        EmulatorConfig::default(),
        &Overrides::new(),
    )
    .await?;
    let emulator = &sandbox.emulator;

    step("An Atlassian Cloud (the built-in emulator) with two sites and four users");
    let acme = emulator.add_site("acme", &[Product::Jira, Product::Confluence]);
    let globex = emulator.add_site("globex", &[Product::Jira]);
    let reach = [
        vec![acme.clone(), globex.clone()],
        vec![acme.clone()],
        vec![globex.clone()],
        vec![acme.clone()],
    ];
    let mut accounts = Vec::new();
    for ((handle, name, zone), sites) in PEOPLE.iter().zip(reach) {
        let account_id = emulator.add_user(NewUser {
            name: (*name).to_owned(),
            email: format!("{handle}@example.com"),
            zoneinfo: (*zone).to_owned(),
            jira_time_zone: (*zone).to_owned(),
            sites,
        });
        println!("  {name:<12} {account_id}  ({zone})");
        accounts.push(account_id);
    }
    emulator.create_issues(&acme, "ENG", 400);
    emulator.create_issues(&globex, "OPS", 150);
    emulator.create_spaces(&acme, 6);
    println!("  acme: Jira (400 issues) and Confluence (6 spaces); globex: Jira (150 issues)");
    println!(
        "  emulator at {}, consent server at {}",
        emulator.base_url(),
        sandbox.http_base
    );

    step("Each user opens an invite link and consents through the real OAuth flow");
    for ((handle, name, _), account_id) in PEOPLE.iter().zip(&accounts) {
        let link = sandbox.app.invite_link(handle);
        println!(
            "  invite for {name}: {}…",
            &link.as_str()[..link.as_str().len().min(70)]
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
    println!(
        "    → HTTP {status}: {} (nothing stored)",
        page_title(&body)
    );

    step("atlassync grants list");
    print!(
        "{}",
        crate::report::render_table(&crate::report::grant_reports(&sandbox.app).await?)
    );

    tour::a_year(&sandbox, &clock, &accounts, &acme, &globex).await?;

    step("atlassync grants list, a year later");
    print!(
        "{}",
        crate::report::render_table(&crate::report::grant_reports(&sandbox.app).await?)
    );
    tour::summary(&sandbox, &acme, &globex).await?;
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
