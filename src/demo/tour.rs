//! The compressed year: one simulated day per step, the daemon's jobs run as their
//! schedules would, and the events a person would notice are printed as they happen.

use std::time::Duration as StdDuration;

use chrono::Duration;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::step;
use crate::clock::{Clock, ManualClock};
use crate::domain::SyncKind;
use crate::jobs::sync::Syncer;
use crate::jobs::{revalidate, token_sweep};
use crate::lifecycle::Refresher;
use crate::sandbox::Sandbox;
use atlassian_emulator::{ConsentDecision, IssueChange, SpaceChange};

/// Real time per simulated day: a year in about a minute.
const DAY_PACE: StdDuration = StdDuration::from_millis(150);

/// Runs 370 days. `accounts` are mia, sam and priya, in that order.
pub async fn a_year(
    sandbox: &Sandbox,
    clock: &ManualClock,
    accounts: &[String],
    acme: &str,
    globex: &str,
) -> anyhow::Result<()> {
    step("A year in about a minute: the daemon's jobs on a compressed clock");
    println!(
        "  daily: token sweep, Jira sync · weekly: Jira reconcile, Confluence sync · every 45 days: revalidation"
    );
    let app = &sandbox.app;
    let emulator = &sandbox.emulator;
    let refresher = Refresher::new(app.clone(), "demo");
    let syncer = Syncer::new(app.clone(), refresher.clone());
    let stop = CancellationToken::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut seen_alerts: i64 = 0;
    let (mut rotations, mut upserted, mut deleted) = (0usize, 0i64, 0i64);

    for day in 0..=370i64 {
        let started = std::time::Instant::now();
        let now = clock.now();
        // The world changes: people work in Jira every day.
        for site in [acme, globex] {
            let live: Vec<String> = emulator.issues(site).into_iter().map(|i| i.id).collect();
            for _ in 0..rng.random_range(2..8) {
                let id = live[rng.random_range(0..live.len())].clone();
                let _ = emulator.upsert_issue(
                    site,
                    IssueChange {
                        issue: Some(id),
                        status: Some(
                            ["To Do", "In Progress", "In Review", "Done"][rng.random_range(0..4)]
                                .into(),
                        ),
                        updated: now - Duration::minutes(rng.random_range(0..600)),
                        ..Default::default()
                    },
                );
            }
        }
        match day {
            30 => {
                let victims: Vec<String> = emulator
                    .issues(acme)
                    .into_iter()
                    .take(3)
                    .map(|i| i.id)
                    .collect();
                emulator.delete_issues(acme, &victims);
                event(
                    day,
                    &format!("3 acme issues are deleted in Jira ({})", victims.join(", ")),
                );
            }
            60 => {
                if let Some(space) = emulator.spaces(acme).into_iter().next() {
                    emulator.delete_spaces(acme, std::slice::from_ref(&space.id));
                    event(day, &format!("Confluence space {} is deleted", space.key));
                }
                let _ = emulator.upsert_space(
                    acme,
                    SpaceChange {
                        key: Some("OPSDOCS".into()),
                        name: Some("Operations handbook".into()),
                        ..Default::default()
                    },
                );
                event(day, "Confluence space OPSDOCS is created");
            }
            120 => {
                emulator.revoke_app(&accounts[1]);
                event(
                    day,
                    "Sam revokes atlassync in his Atlassian account settings",
                );
            }
            200 => {
                emulator.revoke_site(&accounts[0], globex);
                event(day, "Mia loses access to globex (an admin removed her)");
            }
            355 => {
                emulator.queue_consent(ConsentDecision::Accept {
                    account_id: accounts[0].clone(),
                    sites: None,
                });
                let response = Sandbox::browser()
                    .get(app.invite_link("mia"))
                    .send()
                    .await?;
                event(
                    day,
                    &format!(
                        "Mia follows the re-consent link from her alert → HTTP {}",
                        response.status()
                    ),
                );
            }
            _ => {}
        }

        let sweep = token_sweep::run_once(app, &refresher, &stop).await?;
        rotations += sweep.rotated;
        let tick = clock.now();
        let jira = syncer
            .run_once(SyncKind::JiraIncremental, tick, &stop)
            .await?;
        upserted += jira.upserted;
        if day % 45 == 0 {
            revalidate::run_once(app, &refresher, tick, &stop).await?;
        }
        if day % 7 == 0 {
            let reconcile = syncer
                .run_once(SyncKind::JiraReconcile, tick, &stop)
                .await?;
            let spaces = syncer
                .run_once(SyncKind::ConfluenceSpaces, tick, &stop)
                .await?;
            deleted += reconcile.deleted + spaces.deleted;
            if reconcile.deleted + spaces.deleted > 0 {
                event(
                    day,
                    &format!(
                        "reconciliation soft-deletes {} issue(s); Confluence sync soft-deletes {} space(s)",
                        reconcile.deleted, spaces.deleted
                    ),
                );
            }
        }
        // New alerts, as ops would receive them.
        let alerts = {
            let mut conn = app.pool.acquire().await?;
            crate::store::alerts::alerts_after(&mut conn, seen_alerts).await?
        };
        for (id, kind, label, reason) in alerts {
            seen_alerts = id;
            event(day, &format!("ALERT {kind} for {label}: {reason}"));
        }
        if day % 30 == 0 {
            let refreshes = emulator.counters().refreshes as usize;
            println!(
                "  day {day:>3}: {rotations} keep-alive rotations by the sweep, {} refreshes before syncs; {upserted} issue rows written, {deleted} soft-deleted",
                refreshes - rotations
            );
        }
        clock.advance(Duration::days(1));
        if let Some(rest) = DAY_PACE.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    Ok(())
}

fn event(day: i64, text: &str) {
    println!("  day {day:>3}: {text}");
}

/// What a reporting database now holds, against the emulator's truth.
pub async fn summary(sandbox: &Sandbox, acme: &str, globex: &str) -> anyhow::Result<()> {
    step("The reporting tables against the emulator's truth");
    let pool = &sandbox.app.pool;
    for (name, site) in [("acme", acme), ("globex", globex)] {
        let (live, gone) = crate::store::jira_issues::live_and_deleted(
            &mut *pool.acquire().await?,
            &crate::domain::CloudId::new(site),
        )
        .await?;
        println!(
            "  {name}: jira_issues {live} live + {gone} soft-deleted; the emulator holds {} issues",
            sandbox.emulator.issues(site).len()
        );
    }
    let (spaces, gone) =
        crate::store::confluence_spaces::live_and_deleted(&mut *pool.acquire().await?).await?;
    println!(
        "  acme: confluence_spaces {spaces} live + {gone} soft-deleted; the emulator holds {} spaces",
        sandbox.emulator.spaces(acme).len()
    );
    let runs = crate::store::sync_runs::tally(&mut *pool.acquire().await?).await?;
    for (kind, outcome, count, requests) in runs {
        println!("  sync_runs: {count:>4} × {kind} {outcome} ({requests} requests)");
    }
    step("Open alerts (what ops sees, each with a fresh re-consent link)");
    for alert in crate::store::alerts::open_alerts(&mut *pool.acquire().await?).await? {
        // Minted now, as a message to ops would be: bound to the account, valid to the deadline.
        let link = sandbox
            .app
            .reconsent_link(&alert.label, alert.account_id.as_ref(), alert.deadline)
            .to_string();
        println!(
            "  {:<15} {:<6} since {}  {}\n                  link: {}…",
            alert.kind,
            alert.label,
            alert.since.format("%Y-%m-%d"),
            alert.reason,
            &link[..link.len().min(60)]
        );
    }
    let counters = sandbox.emulator.counters();
    step("What the emulator saw");
    println!(
        "  code exchanges {}, refreshes {}, reuses inside the leeway {}, family revocations {}",
        counters.code_exchanges,
        counters.refreshes,
        counters.reuses_in_leeway,
        counters.family_revocations
    );
    Ok(())
}
