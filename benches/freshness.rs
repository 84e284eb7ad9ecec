//! The points it costs per day to keep a large Jira site fresh, by Atlassian's 2026 points
//! model, with deletions still found within the day.
//!
//! `source scripts/pg test; cargo bench --bench freshness` (needs `DATABASE_URL`; it creates
//! and drops its own `atlassync_bench_freshness_*` database). A simulated day on a manual
//! clock against the built-in emulator: the default schedules (the incremental sync every 5
//! minutes, the reconciliation hourly at :23), with the day's changes spread over it:
//! updates of existing issues, new issues, and deletions. It prints the points spent per
//! kind of run (atlassync's own count, from `sync_runs`) and the emulator's charge for the
//! same day, then checks that the tables equal the emulator at the end of the day (every
//! deletion found). It measures and prints, never asserts a figure.
//!
//! `BENCH_FRESH_ISSUES` (default 100,000), `BENCH_FRESH_UPDATES` (updates per day, default
//! 1 % of the issues), `BENCH_FRESH_CREATES` (default 50), `BENCH_FRESH_DELETES` (default 10);
//! `BENCH_FRESH_TOP_RUNS=1` also lists the day's 15 costliest runs.

// The day is simulated on a manual clock; the wall clock only times the bench itself.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::ensure;
use atlassian_emulator::{ConsentDecision, EmulatorConfig, IssueChange, NewUser, Product};
use atlassync::clock::{Clock, ManualClock};
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::Syncer;
use atlassync::lifecycle::Refresher;
use atlassync::sandbox::{Overrides, Sandbox};
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

mod support;
use support::BenchDb;

fn main() -> ExitCode {
    let Ok(database_url) = std::env::var("DATABASE_URL") else {
        println!(
            "bench freshness: DATABASE_URL is not set; skipping. Run `source scripts/pg test; cargo bench --bench freshness`."
        );
        return ExitCode::SUCCESS;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(bench(&database_url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench freshness: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

async fn bench(database_url: &str) -> anyhow::Result<()> {
    let issues = setting("BENCH_FRESH_ISSUES", 100_000);
    let updates = setting("BENCH_FRESH_UPDATES", issues / 100);
    let creates = setting("BENCH_FRESH_CREATES", 50);
    let deletes = setting("BENCH_FRESH_DELETES", 10);
    let db = BenchDb::create(database_url, "freshness").await?;
    let result = simulate_day(&db, issues, updates, creates, deletes).await;
    db.drop_database().await;
    result
}

/// The day's changes, each at its own 5-minute step.
#[derive(Debug, Clone, Copy)]
enum Change {
    Update,
    Create,
    Delete,
}

async fn simulate_day(
    db: &BenchDb,
    issues: usize,
    updates: usize,
    creates: usize,
    deletes: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Midnight UTC plus a minute: the schedules' ticks fall where they would in a real day.
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 2, 0, 1, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let emulator_config = EmulatorConfig {
        quota_points_per_hour: None,
        burst_requests_per_second: None,
        ..EmulatorConfig::default()
    };
    let sandbox = Sandbox::start(
        db.pool.clone(),
        clock.clone(),
        emulator_config,
        &Overrides::new(),
    )
    .await?;
    let emulator = &sandbox.emulator;
    let cloud = emulator.add_site("fresh", &[Product::Jira]);
    let account = emulator.add_user(NewUser {
        name: "Fresh".into(),
        email: "fresh@example.com".into(),
        zoneinfo: "UTC".into(),
        jira_time_zone: "UTC".into(),
        sites: vec![cloud.clone()],
    });
    let (status, body) = sandbox
        .consent(
            "fresh",
            ConsentDecision::Accept {
                account_id: account,
                sites: None,
            },
        )
        .await?;
    ensure!(status == 200, "consent answered {status}: {body}");
    let ids = emulator.create_issues(&cloud, "ENG", issues);
    let app = sandbox.app.clone();
    let syncer = Syncer::new(app.clone(), Refresher::new(app.clone(), "freshness"));
    let stop = CancellationToken::new();

    // The first sync (over as many hours as the points quota needs) and a first
    // reconciliation, before the day counted.
    clock.advance(Duration::minutes(10));
    let mut hours = 0;
    loop {
        let first = syncer
            .run_once(SyncKind::JiraIncremental, clock.now(), &stop)
            .await?;
        if first.ok == 1 {
            break;
        }
        ensure!(first.deferred == 1 && hours < 24, "first sync: {first:?}");
        clock.advance(Duration::hours(1));
        hours += 1;
    }
    syncer
        .run_once(SyncKind::JiraReconcile, clock.now(), &stop)
        .await?;
    println!(
        "bench freshness: {issues} issues synced in {:.1} s ({} simulated hours of quota); simulating a day with {updates} updates, {creates} new issues and {deletes} deletions",
        started.elapsed().as_secs_f64(),
        hours + 1
    );

    // Spread the day's changes over its 288 five-minute steps.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut plan: Vec<Vec<Change>> = vec![Vec::new(); 288];
    for (change, count) in [
        (Change::Update, updates),
        (Change::Create, creates),
        (Change::Delete, deletes),
    ] {
        for _ in 0..count {
            plan[rng.random_range(0..288)].push(change);
        }
    }
    let day_start = clock.now();
    // The emulator's charge, run by run: the manual clock stands still during a run, so
    // its quota window cannot roll over between the two readings.
    let mut emulator_points = 0u64;
    let mut reconcile_ticks = 0;
    for changes in plan {
        for change in changes {
            let id = &ids[rng.random_range(0..ids.len())];
            match change {
                Change::Update => {
                    let _ = emulator.upsert_issue(
                        &cloud,
                        IssueChange {
                            issue: Some(id.clone()),
                            summary: Some(format!("changed at {}", clock.now())),
                            updated: clock.now(),
                            ..Default::default()
                        },
                    );
                }
                Change::Create => {
                    emulator.upsert_issue(
                        &cloud,
                        IssueChange {
                            project_key: Some("ENG".into()),
                            summary: Some("new".into()),
                            updated: clock.now(),
                            ..Default::default()
                        },
                    )?;
                }
                Change::Delete => {
                    emulator.delete_issues(&cloud, &[id]);
                }
            }
        }
        let before = clock.now();
        clock.advance(Duration::minutes(5));
        let now = clock.now();
        let used_before = emulator.quota_usage(Product::Jira).used;
        syncer
            .run_once(SyncKind::JiraIncremental, now, &stop)
            .await?;
        // The reconciliation ticks at :23 of every hour.
        let tick = now
            .with_minute(23)
            .unwrap_or(now)
            .with_second(0)
            .unwrap_or(now);
        if before < tick && tick <= now {
            syncer.run_once(SyncKind::JiraReconcile, now, &stop).await?;
            reconcile_ticks += 1;
        }
        emulator_points += emulator.quota_usage(Product::Jira).used - used_before;
    }

    let by_kind: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, count(*), COALESCE(sum(points_used), 0)::bigint FROM sync_runs
         WHERE started_at > $1 GROUP BY kind ORDER BY kind",
    )
    .bind(day_start)
    .fetch_all(&db.pool)
    .await?;
    println!("\npoints spent in the simulated day (atlassync's count, sync_runs.points_used):");
    let mut total = 0;
    for (kind, runs, points) in &by_kind {
        println!("  {kind:<18} {runs:>4} runs  {points:>7} points");
        total += points;
    }
    println!("  {:<18} {:>4}       {total:>7} points", "total", "");
    println!("the emulator's charge for the same day: {emulator_points} points");
    if std::env::var("BENCH_FRESH_TOP_RUNS").is_ok() {
        type Run = (String, DateTime<Utc>, i64, i64, i64);
        let runs: Vec<Run> = sqlx::query_as(
            "SELECT kind, started_at, points_used::bigint, requests::bigint, upserted::bigint FROM sync_runs
             WHERE started_at > $1 ORDER BY points_used DESC LIMIT 15",
        )
        .bind(day_start)
        .fetch_all(&db.pool)
        .await?;
        for run in runs {
            println!("  {run:?}");
        }
    }
    println!("reconciliation ticks: {reconcile_ticks}");

    // Deletions after the day's last tick are found at the next one.
    clock.advance(Duration::minutes(25));
    syncer
        .run_once(SyncKind::JiraIncremental, clock.now(), &stop)
        .await?;
    syncer
        .run_once(SyncKind::JiraReconcile, clock.now(), &stop)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jira_issues WHERE cloud_id = $1 AND deleted_at IS NULL",
    )
    .bind(&cloud)
    .fetch_one(&db.pool)
    .await?;
    let truth = emulator.issues(&cloud).len();
    println!(
        "at the next tick after the day: {live} live rows, the emulator has {truth} issues ({})",
        if live as usize == truth {
            "every deletion found"
        } else {
            "NOT EQUAL"
        }
    );
    println!("bench wall time: {:.1} s", started.elapsed().as_secs_f64());
    sandbox.stop();
    Ok(())
}
