//! First-sync throughput against its two natural limits, and the syncing process's memory.
//!
//! `source scripts/pg test; cargo bench --bench sync` (needs `DATABASE_URL`; it creates and
//! drops its own `atlassync_bench_sync_*` databases on that server). It measures and prints,
//! never asserts:
//!
//! 1. Limit A: the emulator's serve rate of `search/jql` pages (same JQL, fields and page
//!    size as the sync), bodies downloaded and discarded.
//! 2. Limit B: one plain `COPY jira_issues_baseline (…) FROM STDIN` (text format, streamed in
//!    256 KiB messages, data prepared before the clock starts) of the same typed columns and
//!    raw JSON text the sync writes, into an empty table with `jira_issues`'s columns and
//!    primary key; checked row for row against what the sync stored. Variants: one message,
//!    with the `(cloud_id, updated_at)` index, lz4.
//! 3. The real first sync (`Syncer::run_once`) from an empty `jira_issues`, and its ratio to
//!    min(A, B), its time to first row and its Postgres CPU per 100,000 issues against the
//!    COPY's, with a breakdown of where the time goes (parse, the sync's write: a binary
//!    `COPY` of issues new to the table, points bookkeeping) and three alternative write
//!    strategies for comparison (the `UNNEST` upsert the sync uses for issues already stored,
//!    and a staged `COPY`).
//! 4. Peak RSS of a fresh process syncing 10,000 and 100,000 issues, with the emulator in
//!    the same process and in its own (`atlassync emulator`) process.
//!
//! `BENCH_SYNC_ISSUES` overrides the issue count of parts 1–3 (default 100,000);
//! `BENCH_SYNC_MEMORY=0` skips part 4;
//! `BENCH_SYNC_CHILD_PREFETCH=1` makes each part-4 child page through once before syncing
//! (a diagnostic). The whole machine's load shows in every figure: the load average is printed.

// A benchmark runs in real time (its App gets a SystemClock), so it reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use atlassian_emulator::{ConsentDecision, EmulatorConfig, NewUser, Product};
use atlassync::app::App;
use atlassync::atlassian::jira::{self, SYNC_FIELDS, SearchPage};
use atlassync::clock::SystemClock;
use atlassync::domain::{CloudId, IssueRow, SyncKind};
use atlassync::jobs::jira_sync::incremental_jql;
use atlassync::jobs::sync::Syncer;
use atlassync::lifecycle::Refresher;
use atlassync::sandbox::{Overrides, Sandbox};
use atlassync::store::{api_budget, jira_issues, synced_sites};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

mod support;
use support::BenchDb;

const DEFAULT_ISSUES: usize = 100_000;
const PROJECT: &str = "ENG";
const COLUMNS: &str = "cloud_id, issue_id, issue_key, project_key, summary, status, issue_type, \
                       assignee_account_id, created_at, updated_at, deleted_at, raw, synced_at";
/// The columns `store::jira_issues::upsert_issues` writes (`deleted_at` is NULL there and here).
const BASELINE_COLUMNS: &str = "cloud_id, issue_id, issue_key, project_key, summary, status, issue_type, \
                                assignee_account_id, created_at, updated_at, raw, synced_at, \
                                status_category, priority, resolution, resolved_at, \
                                reporter_account_id, parent_key, labels";
/// Limit B's table: `jira_issues`'s columns, defaults, storage and compression, and its primary
/// key; no other index.
const BASELINE_TABLE: &str = "CREATE TABLE jira_issues_baseline (LIKE jira_issues INCLUDING DEFAULTS \
                              INCLUDING STORAGE INCLUDING COMPRESSION, PRIMARY KEY (cloud_id, issue_id))";
/// Bytes per `CopyData` message of limit B (psql streams in small pieces the same way).
const COPY_CHUNK: usize = 256 * 1024;

fn main() -> ExitCode {
    let Ok(database_url) = std::env::var("DATABASE_URL") else {
        println!(
            "bench sync: DATABASE_URL is not set; skipping. Run `source scripts/pg test; cargo bench --bench sync`."
        );
        return ExitCode::SUCCESS;
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let args: Vec<String> = std::env::args().collect();
    let result = match args.iter().position(|a| a == "--child") {
        Some(at) => runtime.block_on(child(&database_url, &args[at + 1..])),
        None => runtime.block_on(parent(&database_url)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench sync failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

// ----- measuring ------------------------------------------------------------------------------

/// A field of `/proc/{pid}/status` in kB (`VmHWM`, `VmRSS`).
fn status_kb(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Resets this process's VmHWM to its current RSS (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The fields after the command name of `/proc/{pid}/stat`, and the command name.
fn stat_of(pid: &str) -> Option<(String, Vec<u64>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    // From field 3 (state) on; the state letter parses to 0.
    let fields = text[close + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Some((comm, fields))
}

/// CPU seconds (user + system, 100 ticks/s) of a process.
fn cpu_of(pid: &str) -> Option<f64> {
    let (_, f) = stat_of(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / 100.0)
}

/// The postmaster of the bench's Postgres server (the parent of a backend), once known.
static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

async fn find_postmaster(pool: &PgPool) {
    if let Ok(backend) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        && let Some((_, f)) = stat_of(&backend.to_string())
        && let Some(ppid) = f.get(1)
    {
        let _ = POSTMASTER.set(*ppid as u32);
    }
}

/// The bench's database in this process, once created: its backends' process titles name it.
static DATABASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// CPU seconds of the bench's Postgres server: the postmaster, the children it has reaped
/// (exited backends), and its live children (backends, autovacuum, checkpointer, ...); and of
/// those, the live backends connected to this process's bench database (their process title,
/// `/proc/PID/cmdline`, names it). Other Postgres servers on the machine are not counted;
/// other sessions on the same server are, in the first figure only.
fn postgres_cpu() -> (f64, f64) {
    let Some(postmaster) = POSTMASTER.get().copied() else {
        return (0.0, 0.0);
    };
    let mut ticks = match stat_of(&postmaster.to_string()) {
        Some((_, f)) => f[11..15].iter().sum::<u64>(),
        None => return (0.0, 0.0),
    };
    let mut db_ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((_, f)) = stat_of(&pid)
                && f.get(1).copied() == Some(u64::from(postmaster))
            {
                ticks += f[11] + f[12];
                if let Some(db) = DATABASE.get()
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(db.as_str()))
                {
                    db_ticks += f[11] + f[12];
                }
            }
        }
    }
    (ticks as f64 / 100.0, db_ticks as f64 / 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Wall time and CPU (this process, Postgres, optionally another process) of one phase.
struct Meter {
    started: Instant,
    cpu: f64,
    pg: f64,
    db: f64,
    other: Option<(String, f64)>,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: f64,
    cpu: f64,
    pg: f64,
    /// Postgres CPU of the live backends of the bench database only (part of `pg`).
    db: f64,
    other: f64,
}

impl Meter {
    fn start() -> Self {
        Self::start_with(None)
    }

    fn start_with(other: Option<u32>) -> Self {
        let other = other.map(|pid| {
            let pid = pid.to_string();
            let cpu = cpu_of(&pid).unwrap_or(0.0);
            (pid, cpu)
        });
        let (pg, db) = postgres_cpu();
        Self {
            cpu: cpu_of("self").unwrap_or(0.0),
            pg,
            db,
            other,
            started: Instant::now(),
        }
    }

    fn stop(&self) -> Measured {
        let wall = self.started.elapsed().as_secs_f64();
        let (pg, db) = postgres_cpu();
        Measured {
            wall,
            cpu: cpu_of("self").unwrap_or(0.0) - self.cpu,
            pg: pg - self.pg,
            db: db - self.db,
            other: self
                .other
                .as_ref()
                .map(|(pid, before)| cpu_of(pid).unwrap_or(0.0) - before)
                .unwrap_or(0.0),
        }
    }
}

impl Measured {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.wall.max(1e-9)
    }

    /// "12.3 s  8,130 issues/s  [cpu: bench 1.2 s, postgres 0.8 s]".
    fn line(&self, n: usize) -> String {
        format!(
            "{:7.2} s {:>9} issues/s   [cpu s: this process {:.1}, postgres {:.2} (bench db backends {:.2}); {:.0}% of 2 cores]",
            self.wall,
            thousands(self.rate(n)),
            self.cpu,
            self.pg,
            self.db,
            100.0 * (self.cpu + self.pg + self.other) / (2.0 * self.wall.max(1e-9)),
        )
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

// ----- database -------------------------------------------------------------------------------

async fn checkpoint(pool: &PgPool) {
    // Best effort: keeps one phase's dirty pages from being flushed during the next.
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
}

// ----- the world: sandbox, site, user, grant --------------------------------------------------

/// A standalone `atlassync emulator` process to use instead of the sandbox's own.
struct External {
    base: String,
    cloud: String,
    account: String,
}

struct World {
    sandbox: Sandbox,
    cloud: String,
    grant_id: atlassync::domain::GrantId,
    syncer: Syncer,
}

impl World {
    fn app(&self) -> &App {
        &self.sandbox.app
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

async fn world(pool: PgPool, external: Option<&External>) -> anyhow::Result<World> {
    let mut overrides = Overrides::new();
    overrides.insert("sync.points_per_hour".into(), "10000000".into());
    if let Some(ext) = external {
        overrides.insert("atlassian.auth_base_url".into(), quoted(&ext.base));
        overrides.insert("atlassian.api_base_url".into(), quoted(&ext.base));
    }
    let emulator_config = EmulatorConfig {
        quota_points_per_hour: None,
        burst_requests_per_second: None,
        ..EmulatorConfig::default()
    };
    let sandbox = Sandbox::start(
        pool.clone(),
        Arc::new(SystemClock),
        emulator_config,
        &overrides,
    )
    .await?;
    let cloud = match external {
        None => {
            let emulator = &sandbox.emulator;
            emulator.set_quota(Product::Jira, None);
            emulator.set_quota(Product::Confluence, None);
            emulator.set_burst_limit(None);
            let cloud = emulator.add_site("bench", &[Product::Jira, Product::Confluence]);
            let account = emulator.add_user(bench_user(&cloud));
            let (status, body) = sandbox
                .consent(
                    "bench",
                    ConsentDecision::Accept {
                        account_id: account,
                        sites: None,
                    },
                )
                .await?;
            ensure!(status == 200, "consent answered {status}: {body}");
            cloud
        }
        Some(ext) => {
            let control = reqwest::Client::new();
            let queued = control
                .post(format!("{}_emulator/consent-queue", ext.base))
                .json(&serde_json::json!({"decision": "accept", "account_id": ext.account}))
                .send()
                .await?;
            ensure!(
                queued.status().is_success(),
                "consent-queue: {}",
                queued.status()
            );
            let page = Sandbox::browser()
                .get(sandbox.app.invite_link("bench"))
                .send()
                .await?;
            let status = page.status();
            ensure!(
                status == 200,
                "consent answered {status}: {}",
                page.text().await?
            );
            ext.cloud.clone()
        }
    };
    let grant_id: atlassync::domain::GrantId = sqlx::query_scalar("SELECT id FROM grants")
        .fetch_one(&pool)
        .await?;
    let app = sandbox.app.clone();
    let syncer = Syncer::new(app.clone(), Refresher::new(app, "bench"));
    Ok(World {
        sandbox,
        cloud,
        grant_id,
        syncer,
    })
}

fn bench_user(cloud: &str) -> NewUser {
    NewUser {
        name: "Bench".into(),
        email: "bench@example.com".into(),
        zoneinfo: "UTC".into(),
        jira_time_zone: "UTC".into(),
        sites: vec![cloud.to_owned()],
    }
}

/// Runs the first incremental sync; checks every issue landed. Also returns the time to the
/// first committed row, polled every 5 ms on a connection of its own (stops at the first row).
async fn first_sync(
    world: &World,
    n: usize,
    other: Option<u32>,
) -> anyhow::Result<(Measured, Option<f64>)> {
    let pool = &world.app().pool;
    checkpoint(pool).await;
    let mut probe = PgConnection::connect_with(&pool.connect_options()).await?;
    let meter = Meter::start_with(other);
    let t0 = Instant::now();
    let poll = tokio::spawn(async move {
        while t0.elapsed() < Duration::from_secs(900) {
            let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jira_issues)")
                .fetch_one(&mut probe)
                .await
                .ok()?;
            if seen {
                return Some(t0.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    let abort = poll.abort_handle();
    let report = world
        .syncer
        .run_once(
            SyncKind::JiraIncremental,
            Utc::now(),
            &CancellationToken::new(),
        )
        .await?;
    let measured = meter.stop();
    let first_row = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    abort.abort();
    ensure!(report.ok == 1, "the sync did not succeed: {report:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jira_issues")
        .fetch_one(pool)
        .await?;
    ensure!(stored as usize == n, "{stored} issues stored, {n} expected");
    Ok((measured, first_row))
}

// ----- the parent: limits, the real sync, the breakdown, then the memory children --------------

async fn parent(database_url: &str) -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_SYNC_ISSUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ISSUES);
    println!(
        "atlassync sync bench: {n} issues, {} cores, release build, load average {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        load_average()
    );
    let db = BenchDb::create(database_url, "sync").await?;
    find_postmaster(&db.pool).await;
    let _ = DATABASE.set(db.name.clone());
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'server_version')",
    )
    .fetch_all(&db.pool)
    .await?;
    println!(
        "postgres: {}",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let result = throughput(&db.pool, n).await;
    db.drop_database().await;
    result?;
    if std::env::var("BENCH_SYNC_MEMORY").as_deref() == Ok("0") {
        println!("\n4. (skipped: BENCH_SYNC_MEMORY=0)");
    } else {
        memory(database_url).await?;
    }
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

async fn throughput(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let world = world(pool.clone(), None).await?;
    let emulator = &world.sandbox.emulator;

    let started = Instant::now();
    let ids = emulator.create_issues(&world.cloud, PROJECT, n);
    ensure!(ids.len() == n, "the generator made {} issues", ids.len());
    println!(
        "\ngenerate {n} issues (emulator create_issues): {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let token = Refresher::new(world.app().clone(), "bench-client")
        .access_token(world.grant_id)
        .await?;
    let token = token.expose().to_owned();

    // 1. Limit A.
    let meter = Meter::start();
    let (pages, bytes, _) = page_all(world.app(), &token, &world.cloud, false).await?;
    let limit_a = meter.stop();
    println!(
        "\n1. Limit A  emulator serve rate ({pages} pages of 100, {:.0} MB, bodies discarded)\n   {}",
        bytes as f64 / 1e6,
        limit_a.line(n)
    );

    // 3. The real thing, early, while this process's heap is still as fresh as a daemon's.
    let sync_load = load_average();
    let (sync, first_row) = first_sync(&world, n, None).await?;
    let (requests, points): (i32, i32) = sqlx::query_as(
        "SELECT requests, points_used FROM sync_runs WHERE kind = 'jira_incremental' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    // The same pages again, kept, for the parse and write measurements.
    let meter = Meter::start();
    let (_, _, bodies) = page_all(world.app(), &token, &world.cloud, true).await?;
    let again = meter.stop();
    println!("   (second pass, bodies kept: {})", again.line(n));

    // Parse as the sync does: into SearchPage (each issue kept as raw JSON text), then IssueRow.
    let meter = Meter::start();
    let parsed: Vec<SearchPage> = bodies
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()?;
    let parse_pages = meter.stop();
    let meter = Meter::start();
    let rows: Vec<IssueRow> = parsed
        .into_iter()
        .flat_map(|p| p.issues)
        .filter_map(jira::issue_row)
        .collect();
    let to_rows = meter.stop();
    ensure!(rows.len() == n, "{} rows parsed, {n} expected", rows.len());
    drop(bodies);
    // Binding `raw`: the issue's JSON text is sent as is (measured: writing it out once).
    let meter = Meter::start();
    let mut jsonb_bytes = 0usize;
    for row in &rows {
        jsonb_bytes += serde_json::to_vec(&row.raw)?.len();
    }
    let reserialize = meter.stop();

    // 2. Limit B: one plain COPY (text format) of the rows the sync writes, typed columns and
    // raw JSON text, into an empty table with jira_issues's columns and primary key, streamed
    // in 256 KiB CopyData messages on a connection acquired beforehand. The data is prepared
    // before the clock starts, as a COPY of a ready-made file would have it.
    let now = Utc::now();
    let meter = Meter::start();
    let mut copy_data = Vec::with_capacity(bytes as usize);
    for row in &rows {
        encode_copy_text(&mut copy_data, &world.cloud, row, now);
    }
    let encode = meter.stop();
    let (limit_b, b_backend) =
        copy_baseline(pool, &copy_data, BASELINE_TABLE, COPY_CHUNK, n).await?;
    // The COPY must have stored what the sync stored (jira_issues holds the sync's rows).
    let same: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jira_issues_baseline b JOIN jira_issues j USING (cloud_id, issue_id)
         WHERE (b.issue_key, b.project_key, b.summary, b.status, b.issue_type, b.assignee_account_id,
                b.created_at, b.updated_at, b.deleted_at, b.raw, b.status_category, b.priority,
                b.resolution, b.resolved_at, b.reporter_account_id, b.parent_key, b.labels)
           IS NOT DISTINCT FROM
               (j.issue_key, j.project_key, j.summary, j.status, j.issue_type, j.assignee_account_id,
                j.created_at, j.updated_at, j.deleted_at, j.raw, j.status_category, j.priority,
                j.resolution, j.resolved_at, j.reporter_account_id, j.parent_key, j.labels)",
    )
    .fetch_one(pool)
    .await?;
    let sizes: (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('jira_issues_baseline'), pg_total_relation_size('jira_issues')",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "\n2. Limit B  one plain COPY … FROM STDIN (text format, {:.0} MB in {} KiB messages) of the 19 columns\n   the sync writes into an empty table with jira_issues's columns and primary key\n   {}\n   (its backend alone: {:.2} cpu s; encoding the data beforehand, untimed: {:.2} s;\n   rows equal to the sync's in every column but synced_at: {same} of {n}; table {:.0} MB vs jira_issues {:.0} MB)",
        copy_data.len() as f64 / 1e6,
        COPY_CHUNK / 1024,
        limit_b.line(n),
        b_backend,
        encode.wall,
        sizes.0 as f64 / 1e6,
        sizes.1 as f64 / 1e6,
    );
    println!("   variants, for comparison:");
    let (one, one_backend) = copy_baseline(pool, &copy_data, BASELINE_TABLE, usize::MAX, n).await?;
    println!(
        "   - the same data as one CopyData message (how this bench used to send it):\n     {}  (backend {:.2} s)",
        one.line(n),
        one_backend
    );
    let indexed =
        format!("{BASELINE_TABLE}; CREATE INDEX ON jira_issues_baseline (cloud_id, updated_at)");
    let (ix, ix_backend) = copy_baseline(pool, &copy_data, &indexed, COPY_CHUNK, n).await?;
    println!(
        "   - with jira_issues's (cloud_id, updated_at) index too:\n     {}  (backend {:.2} s)",
        ix.line(n),
        ix_backend
    );
    let lz4 = format!(
        "{BASELINE_TABLE}; ALTER TABLE jira_issues_baseline ALTER COLUMN raw SET COMPRESSION lz4"
    );
    match copy_baseline(pool, &copy_data, &lz4, COPY_CHUNK, n).await {
        Ok((m, backend)) => println!(
            "   - with raw compressed by lz4 instead of pglz:\n     {}  (backend {:.2} s)",
            m.line(n),
            backend
        ),
        Err(e) => println!("   - (lz4 variant unavailable: {e})"),
    }
    sqlx::query("DROP TABLE IF EXISTS jira_issues_baseline")
        .execute(pool)
        .await?;
    drop(copy_data);

    let limit = limit_a.rate(n).min(limit_b.rate(n));
    let per_100k = 100_000.0 / n as f64;
    println!(
        "\n3. First sync (Syncer::run_once, {requests} requests, {points} points; load average before: {sync_load})\n   {}\n   ratio to min(A, B) = {} issues/s: {:.2}  (goal ≥ 0.80)\n   time to first row: {}\n   postgres cpu s per 100,000 issues: sync {:.2} vs plain COPY {:.2} = {:.2}x (whole server); bench db backends {:.2} vs {:.2} = {:.2}x  (goal ≤ 1.3x)",
        sync.line(n),
        thousands(limit),
        sync.rate(n) / limit,
        first_row.map_or("not seen".to_owned(), |t| format!("{t:.3} s")),
        sync.pg * per_100k,
        limit_b.pg * per_100k,
        sync.pg / limit_b.pg.max(1e-9),
        sync.db * per_100k,
        limit_b.db * per_100k,
        sync.db / limit_b.db.max(1e-9),
    );

    // Breakdown: the sync's components, one at a time.
    println!("\n   breakdown (each component alone, same {n} issues):");
    println!(
        "   a. HTTP page fetch (= limit A)                 {:7.2} s",
        limit_a.wall
    );
    println!(
        "   b. JSON → SearchPage (raw text per issue)      {:7.2} s",
        parse_pages.wall
    );
    println!(
        "   c. raw text → IssueRow columns                 {:7.2} s",
        to_rows.wall
    );
    println!(
        "   c′ raw text out for the jsonb column           {:7.2} s  ({:.0} MB; part of d)",
        reserialize.wall,
        jsonb_bytes as f64 / 1e6
    );
    let pages_of_rows: Vec<&[IssueRow]> = rows.chunks(100).collect();
    let big: Vec<&[IssueRow]> = rows.chunks(1000).collect();
    let upsert = write_pages(&world, &big, Write::Sync).await?;
    println!(
        "   d. the sync's write (binary COPY of new issues), 1 tx per 1,000 rows\n                                                  {}",
        upsert.line(n)
    );
    let bookkeeping = points_bookkeeping(world.app(), pages_of_rows.len()).await?;
    println!(
        "   e. points budget check + spend per request     {:7.2} s  ({} requests × 3 queries)",
        bookkeeping.wall,
        pages_of_rows.len()
    );
    let serial = limit_a.wall + parse_pages.wall + to_rows.wall + upsert.wall + bookkeeping.wall;
    println!(
        "   sum a–e {serial:.2} s; perfect overlap of fetch with write would be ≥ {:.2} s; measured {:.2} s",
        (limit_a.wall + parse_pages.wall + bookkeeping.wall).max(upsert.wall + to_rows.wall),
        sync.wall
    );

    println!("\n   alternative writes, for comparison (from an empty jira_issues):");
    let unnest_big = write_pages(&world, &big, Write::Unnest).await?;
    println!(
        "   f. UNNEST upsert, 1 tx per 1,000 rows (the sync's write of stored issues)\n                                                  {}",
        unnest_big.line(n)
    );
    let staged = write_pages(&world, &pages_of_rows, Write::Staged).await?;
    println!(
        "   g. COPY 100 rows → temp stage → INSERT … ON CONFLICT, 1 tx per page\n                                                  {}",
        staged.line(n)
    );
    let staged_big = write_pages(&world, &big, Write::Staged).await?;
    println!(
        "   h. the same, 1,000 rows per tx                 {}",
        staged_big.line(n)
    );
    Ok(())
}

/// Pages through the sync's search with the app's HTTP client; returns (pages, bytes, bodies
/// if `keep`).
async fn page_all(
    app: &App,
    token: &str,
    cloud: &str,
    keep: bool,
) -> anyhow::Result<(usize, u64, Vec<Vec<u8>>)> {
    let url = atlassync::transport::join(
        &app.api
            .product_base_url(atlassync::domain::Product::Jira, &CloudId::new(cloud)),
        "rest/api/3/search/jql",
    );
    let jql = incremental_jql(
        app.config.jira.jql.as_deref(),
        DateTime::UNIX_EPOCH,
        app.config.sync.jira_overlap,
        Tz::UTC,
    );
    let page_size = app.config.sync.jira_page_size.min(100);
    let mut next: Option<String> = None;
    let (mut pages, mut bytes, mut kept) = (0usize, 0u64, Vec::new());
    loop {
        let mut body =
            serde_json::json!({"jql": jql, "fields": SYNC_FIELDS, "maxResults": page_size});
        if let Some(token) = &next {
            body["nextPageToken"] = serde_json::Value::String(token.clone());
        }
        let response = app
            .http
            .post(url.clone())
            .bearer_auth(token)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "search answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        pages += 1;
        bytes += body.len() as u64;
        next = next_page_token(&body);
        if keep {
            kept.push(body.to_vec());
        }
        if next.is_none() {
            return Ok((pages, bytes, kept));
        }
    }
}

/// `nextPageToken` of a page without parsing it: the emulator writes object keys in order, so
/// it is the last key; search from the end. `None` when absent or null (the last page).
fn next_page_token(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"nextPageToken\":\"";
    let at = body.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let len = body[at..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&body[at..at + len]).into_owned())
}

fn csv_text(out: &mut Vec<u8>, value: Option<&str>) {
    if let Some(text) = value {
        out.push(b'"');
        for b in text.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

fn encode_csv(out: &mut Vec<u8>, cloud: &str, row: &IssueRow, now: DateTime<Utc>) {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    let raw = serde_json::to_string(&row.raw).unwrap_or_default();
    let fields: [Option<String>; 13] = [
        Some(cloud.to_owned()),
        Some(row.issue_id.clone()),
        Some(row.issue_key.clone()),
        row.project_key.clone(),
        row.summary.clone(),
        row.status.clone(),
        row.issue_type.clone(),
        row.assignee_account_id.clone(),
        time(row.created_at),
        time(row.updated_at),
        None,
        Some(raw),
        Some(now.to_rfc3339()),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_text(out, field.as_deref());
    }
    out.push(b'\n');
}

/// One field of `COPY … FROM STDIN` text format: `\N` for NULL, else the text with backslash,
/// newline, carriage return and tab escaped.
fn copy_text(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(text) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// A `text[]` literal: `{"a","b \"c\""}`.
fn array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One row of [`BASELINE_COLUMNS`] in COPY text format: the values `upsert_issues` binds, with
/// the issue's raw JSON text as it came (the server parses it into jsonb, as in the sync).
fn encode_copy_text(out: &mut Vec<u8>, cloud: &str, row: &IssueRow, now: DateTime<Utc>) {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    let fields: [Option<String>; 19] = [
        Some(cloud.to_owned()),
        Some(row.issue_id.clone()),
        Some(row.issue_key.clone()),
        row.project_key.clone(),
        row.summary.clone(),
        row.status.clone(),
        row.issue_type.clone(),
        row.assignee_account_id.clone(),
        time(row.created_at),
        time(row.updated_at),
        Some(row.raw.get().to_owned()),
        Some(now.to_rfc3339()),
        row.status_category.clone(),
        row.priority.clone(),
        row.resolution.clone(),
        time(row.resolved_at),
        row.reporter_account_id.clone(),
        row.parent_key.clone(),
        Some(array_literal(&row.labels)),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        copy_text(out, field.as_deref());
    }
    out.push(b'\n');
}

/// (Re)creates `jira_issues_baseline` with `setup`, then times one `COPY … FROM STDIN` of
/// `data` sent in `chunk`-byte messages on a connection acquired beforehand. Returns the
/// measurement and the CPU seconds of that connection's backend.
async fn copy_baseline(
    pool: &PgPool,
    data: &[u8],
    setup: &str,
    chunk: usize,
    n: usize,
) -> anyhow::Result<(Measured, f64)> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS jira_issues_baseline; {setup}"
    )))
    .execute(pool)
    .await?;
    checkpoint(pool).await;
    let mut conn = pool.acquire().await?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    let backend = backend.to_string();
    let before = cpu_of(&backend).unwrap_or(0.0);
    let meter = Meter::start();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY jira_issues_baseline ({BASELINE_COLUMNS}) FROM STDIN"
        ))
        .await?;
    for piece in data.chunks(chunk) {
        copy.send(piece).await?;
    }
    let copied = copy.finish().await?;
    let measured = meter.stop();
    let backend_cpu = cpu_of(&backend).unwrap_or(0.0) - before;
    ensure!(
        copied as usize == n,
        "COPY wrote {copied} rows, {n} expected"
    );
    Ok((measured, backend_cpu))
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// `store::upsert_or_set_aside` + `advance_watermark` in one tx per batch (the sync's
    /// commit; into an empty table, a binary COPY).
    Sync,
    /// `store::upsert_issues` + `advance_watermark` in one tx per batch (the sync's write of
    /// issues already stored).
    Unnest,
    /// COPY into a temp table, then one INSERT … SELECT … ON CONFLICT, in one tx per batch.
    Staged,
}

/// Writes `batches` into an emptied `jira_issues` the way `commit_page` does (or an
/// alternative), one transaction per batch.
async fn write_pages(
    world: &World,
    batches: &[&[IssueRow]],
    how: Write,
) -> anyhow::Result<Measured> {
    let pool = &world.app().pool;
    let cloud = world.cloud.as_str();
    sqlx::query("TRUNCATE jira_issues").execute(pool).await?;
    sqlx::query("UPDATE synced_sites SET jira_watermark = NULL")
        .execute(pool)
        .await?;
    checkpoint(pool).await;
    let mut stage_conn = pool.acquire().await?;
    if how == Write::Staged {
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS bench_stage (LIKE jira_issues) ON COMMIT DELETE ROWS",
        )
        .execute(&mut *stage_conn)
        .await?;
    }
    let mut csv = Vec::new();
    let meter = Meter::start();
    for batch in batches {
        let now = Utc::now();
        let watermark = batch
            .iter()
            .filter_map(|r| r.updated_at)
            .max()
            .unwrap_or(now);
        match how {
            Write::Sync => {
                let mut tx = pool.begin().await?;
                jira_issues::upsert_or_set_aside(&mut tx, &CloudId::new(cloud), batch, now).await?;
                synced_sites::advance_watermark(&mut tx, &CloudId::new(cloud), watermark).await?;
                tx.commit().await?;
            }
            Write::Unnest => {
                let mut tx = pool.begin().await?;
                jira_issues::upsert_issues(&mut tx, &CloudId::new(cloud), batch, now).await?;
                synced_sites::advance_watermark(&mut tx, &CloudId::new(cloud), watermark).await?;
                tx.commit().await?;
            }
            Write::Staged => {
                csv.clear();
                for row in *batch {
                    encode_csv(&mut csv, cloud, row, now);
                }
                let mut tx = stage_conn.begin().await?;
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY bench_stage ({COLUMNS}) FROM STDIN WITH (FORMAT csv)"
                    ))
                    .await?;
                copy.send(csv.as_slice()).await?;
                copy.finish().await?;
                sqlx::query(
                    "INSERT INTO jira_issues SELECT * FROM bench_stage
                     ON CONFLICT (cloud_id, issue_id) DO UPDATE SET
                        issue_key = EXCLUDED.issue_key, project_key = EXCLUDED.project_key, summary = EXCLUDED.summary,
                        status = EXCLUDED.status, issue_type = EXCLUDED.issue_type,
                        assignee_account_id = EXCLUDED.assignee_account_id, created_at = EXCLUDED.created_at,
                        updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw, synced_at = EXCLUDED.synced_at,
                        deleted_at = NULL
                     WHERE jira_issues.updated_at IS NULL OR EXCLUDED.updated_at IS NULL
                        OR jira_issues.updated_at <= EXCLUDED.updated_at OR jira_issues.deleted_at IS NOT NULL",
                )
                .execute(&mut *tx)
                .await?;
                synced_sites::advance_watermark(&mut tx, &CloudId::new(cloud), watermark).await?;
                tx.commit().await?;
            }
        }
    }
    let measured = meter.stop();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jira_issues")
        .fetch_one(pool)
        .await?;
    let expected: usize = batches.iter().map(|b| b.len()).sum();
    ensure!(
        stored as usize == expected,
        "{stored} rows written, {expected} expected"
    );
    Ok(measured)
}

/// What `SiteSession` does around every request: `check_budget` (one query: the hour's
/// spend, the app's pause and the site's pause) and `spend` (one upsert), each on a
/// connection acquired from the pool.
async fn points_bookkeeping(app: &App, requests: usize) -> anyhow::Result<Measured> {
    let hour = atlassync::pacing::hour_start(Utc::now());
    let meter = Meter::start();
    for _ in 0..requests {
        {
            let mut conn = app.pool.acquire().await?;
            let site = CloudId::new("bench-site");
            api_budget::budget(
                &mut conn,
                hour,
                atlassync::domain::Product::Jira,
                Some(&site),
            )
            .await?;
        }
        let mut conn = app.pool.acquire().await?;
        api_budget::spend_points(&mut conn, hour, atlassync::domain::Product::Jira, 101).await?;
    }
    Ok(meter.stop())
}

// ----- memory: fresh child processes ------------------------------------------------------------

async fn memory(database_url: &str) -> anyhow::Result<()> {
    println!(
        "\n4. Peak RSS of a fresh process running one first sync (VmHWM, reset after setup; load average {})",
        load_average()
    );
    let me = std::env::current_exe()?;
    println!("   a. emulator in the same process:");
    for n in [10_000usize, 100_000] {
        let r = run_child(&me, database_url, &[n.to_string()]).await?;
        println!(
            "      {n:>7} issues: sync {:6.2} s {:>7} issues/s, first row {} s | RSS after setup {} | peak during sync {} | peak overall {}",
            r["sync_s"].parse::<f64>().unwrap_or(0.0),
            thousands(r["rate"].parse().unwrap_or(0.0)),
            r.get("first_row_s").map_or("?", String::as_str),
            mb(r["rss_setup_kb"].parse().unwrap_or(0)),
            mb(r["hwm_sync_kb"].parse().unwrap_or(0)),
            mb(r["hwm_total_kb"].parse().unwrap_or(0)),
        );
    }

    println!("   b. emulator in its own process (`atlassync emulator`):");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let mut emulator = tokio::process::Command::new(env!("CARGO_BIN_EXE_atlassync"))
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting `atlassync emulator`")?;
    let emulator_pid = emulator.id().context("emulator pid")?;
    let result = external_children(&me, database_url, port, emulator_pid).await;
    let _ = emulator.start_kill();
    let _ = emulator.wait().await;
    result
}

async fn external_children(
    me: &std::path::Path,
    database_url: &str,
    port: u16,
    emulator_pid: u32,
) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{port}/");
    let control = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while control
        .get(format!("{base}_emulator/clock"))
        .send()
        .await
        .is_err()
    {
        ensure!(
            Instant::now() < deadline,
            "the emulator did not start on {base}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        control
            .request(method, format!("{base}_emulator/{path}"))
            .json(&body)
            .send()
    };
    for product in ["jira", "confluence"] {
        call(
            reqwest::Method::PUT,
            "quota",
            serde_json::json!({"product": product, "points_per_hour": null}),
        )
        .await?
        .error_for_status()?;
    }
    call(
        reqwest::Method::PUT,
        "burst",
        serde_json::json!({"requests_per_second": null}),
    )
    .await?
    .error_for_status()?;
    let site: serde_json::Value = call(
        reqwest::Method::POST,
        "sites",
        serde_json::json!({"name": "bench", "products": ["jira", "confluence"]}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let cloud = site["cloud_id"].as_str().context("cloud_id")?.to_owned();
    let user: serde_json::Value = call(
        reqwest::Method::POST,
        "users",
        serde_json::to_value(bench_user(&cloud))?,
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let account = user["account_id"]
        .as_str()
        .context("account_id")?
        .to_owned();

    let emulator_pid_text = emulator_pid.to_string();
    let mut have = 0usize;
    for n in [10_000usize, 100_000] {
        let started = Instant::now();
        call(
            reqwest::Method::POST,
            &format!("sites/{cloud}/issues/generate"),
            serde_json::json!({"project_key": PROJECT, "count": n - have}),
        )
        .await?
        .error_for_status()?;
        let generated = started.elapsed().as_secs_f64();
        have = n;
        let r = run_child(
            me,
            database_url,
            &[
                n.to_string(),
                "--external".into(),
                base.clone(),
                cloud.clone(),
                account.clone(),
                emulator_pid.to_string(),
            ],
        )
        .await?;
        println!(
            "      {n:>7} issues: sync {:6.2} s {:>7} issues/s | syncing process: RSS after setup {}, peak during sync {}, peak overall {}",
            r["sync_s"].parse::<f64>().unwrap_or(0.0),
            thousands(r["rate"].parse().unwrap_or(0.0)),
            mb(r["rss_setup_kb"].parse().unwrap_or(0)),
            mb(r["hwm_sync_kb"].parse().unwrap_or(0)),
            mb(r["hwm_total_kb"].parse().unwrap_or(0)),
        );
        println!(
            "      {:>7}         cpu s: syncing process {}, emulator process {}, postgres {} | emulator RSS {} (peak {}), generate {:.2} s",
            "",
            r["cpu_s"],
            r["other_cpu_s"],
            r["pg_s"],
            mb(status_kb(&emulator_pid_text, "VmRSS:")),
            mb(status_kb(&emulator_pid_text, "VmHWM:")),
            generated
        );
    }
    Ok(())
}

/// Runs this binary with `--child ARGS`; returns the `key=value` pairs of its `CHILD` line.
async fn run_child(
    me: &std::path::Path,
    database_url: &str,
    args: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    let output = tokio::process::Command::new(me)
        .arg("--child")
        .args(args)
        .env("DATABASE_URL", database_url)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "child {args:?} failed ({}): {stdout}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD "))
        .with_context(|| format!("child {args:?} printed no result: {stdout}"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `--child N [--external BASE CLOUD ACCOUNT EMULATOR_PID]`: one first sync of N issues in a
/// fresh process, on a fresh database; prints one `CHILD key=value …` line.
async fn child(database_url: &str, args: &[String]) -> anyhow::Result<()> {
    let n: usize = args.first().context("--child N")?.parse()?;
    let external = match args.get(1).map(String::as_str) {
        Some("--external") => Some(External {
            base: args.get(2).context("base")?.clone(),
            cloud: args.get(3).context("cloud")?.clone(),
            account: args.get(4).context("account")?.clone(),
        }),
        _ => None,
    };
    let other_pid: Option<u32> = args.get(5).and_then(|p| p.parse().ok());
    let db = BenchDb::create(database_url, "sync").await?;
    find_postmaster(&db.pool).await;
    let _ = DATABASE.set(db.name.clone());
    let result = async {
        let world = world(db.pool.clone(), external.as_ref()).await?;
        if external.is_none() {
            let ids = world.sandbox.emulator.create_issues(&world.cloud, PROJECT, n);
            ensure!(ids.len() == n, "the generator made {} issues", ids.len());
        }
        if std::env::var_os("BENCH_SYNC_CHILD_PREFETCH").is_some() {
            // Diagnostic: one discarded pass over the pages before the sync.
            let token = Refresher::new(world.app().clone(), "bench-client")
                .access_token(world.grant_id)
                .await?;
            let meter = Meter::start();
            page_all(world.app(), token.expose(), &world.cloud, false).await?;
            eprintln!("child prefetch pass: {}", meter.stop().line(n));
        }
        let rss_setup = status_kb("self", "VmRSS:");
        let hwm_setup = status_kb("self", "VmHWM:");
        let reset = reset_peak_rss();
        let (sync, first_row) = first_sync(&world, n, other_pid).await?;
        let hwm_sync = status_kb("self", "VmHWM:");
        let (requests, points): (i32, i32) = sqlx::query_as(
            "SELECT requests, points_used FROM sync_runs WHERE kind = 'jira_incremental' ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(&db.pool)
        .await?;
        println!(
            "CHILD n={n} requests={requests} points={points} sync_s={:.3} rate={:.0} first_row_s={:.3} cpu_s={:.1} pg_s={:.1} other_cpu_s={:.1} rss_setup_kb={rss_setup} hwm_setup_kb={hwm_setup} hwm_sync_kb={} hwm_total_kb={}",
            sync.wall,
            sync.rate(n),
            first_row.unwrap_or(-1.0),
            sync.cpu,
            sync.pg,
            sync.other,
            if reset { hwm_sync } else { 0 },
            hwm_sync.max(hwm_setup),
        );
        drop(world);
        Ok(())
    }
    .await;
    db.drop_database().await;
    result
}
