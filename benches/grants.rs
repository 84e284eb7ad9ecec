//! Grant-store and token-sweep figures at scale, printed (never asserted):
//!
//! 1. claiming a batch of due grants among 100,000 (p50/p95, and the query plan);
//! 2. refreshes per second end to end against the built-in emulator, and how much of it is
//!    the token endpoint;
//! 3. the release daemon's idle CPU and peak RSS over 100,000 grants, and its peak RSS and
//!    rate while sweeping 2,000 due grants;
//!
//! and, after 1, one `/metrics` scrape over 100,000 grants against counting them directly.
//!
//! `source scripts/pg test; cargo bench --bench grants`. It creates and drops its own database
//! on the server in `DATABASE_URL`, and prints a note and exits 0 when that is unset.

// A benchmark runs in real time (its App gets a SystemClock), so it reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atlassian_emulator::{
    ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle, NewUser, Product,
};
use atlassync::app::App;
use atlassync::clock::{Clock, SystemClock};
use atlassync::config::Config;
use atlassync::crypto::Keyring;
use atlassync::domain::{AuthorizationCode, RefreshToken};
use atlassync::lifecycle::Refresher;
use atlassync::store::grants;
use atlassync::store::grants::CLAIM_DUE_GRANTS_SQL;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, TryStreamExt};
use rand::RngExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DUMMY_GRANTS: usize = 100_000;
const REAL_GRANTS: usize = 2_000;
const CLAIM_BATCH: i64 = 64;
const CLAIM_ROUNDS: usize = 200;
const IDLE_SECONDS: u64 = 20;
/// The same as the sweep's concurrency (`jobs::token_sweep`), for the calibration.
const SWEEP_CONCURRENCY: usize = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Ok(server_url) = std::env::var("DATABASE_URL") else {
        println!(
            "grants bench: DATABASE_URL is not set; nothing measured.\n\
             Run it as: source scripts/pg test; cargo bench --bench grants"
        );
        return Ok(());
    };
    let name = format!(
        "atlassync_bench_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server_url)
        .await
        .context("connecting to DATABASE_URL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let mut url = url::Url::parse(&server_url)?;
    url.set_path(&format!("/{name}"));
    let dir = std::env::temp_dir().join(format!("atlassync-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;

    println!("grants bench: database {name}, {} CPUs", cpus());
    let outcome = bench(url.as_str(), &dir).await;

    let _ = std::fs::remove_dir_all(&dir);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    outcome
}

async fn bench(database_url: &str, dir: &Path) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .connect(database_url)
        .await?;
    atlassync::store::migrate(&pool).await?;

    let emulator = Emulator::start(
        EmulatorConfig::default(),
        Arc::new(SystemClock),
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let key_file = dir.join("key");
    std::fs::write(&key_file, Keyring::generate_key_file_contents())?;
    let listen = free_port();
    let config_text = config_toml(database_url, &emulator, &key_file, listen);
    let config_file = dir.join("atlassync.toml");
    std::fs::write(&config_file, &config_text)?;
    let app = App::new(
        Config::from_toml(&config_text)?,
        pool.clone(),
        Arc::new(SystemClock),
    );

    // 1. Claiming among 100,000.
    section("1. claim_due_grants among 100,000 grants, ~1% due");
    let now = Utc::now();
    let took = insert_dummy_grants(&pool, app.keyring(), now).await?;
    println!(
        "  inserted {DUMMY_GRANTS} grants with sealed tokens in {:.1}s",
        took.as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE grants").execute(&pool).await?;
    claim_benchmark(&pool, now).await?;

    // Nothing due for the rest, in real time.
    settle_dummies(&pool, Utc::now()).await?;
    family_scan_benchmark(&pool).await?;
    revalidation_claim_benchmark(&pool).await?;
    metrics_scrape_benchmark(&app).await?;
    if std::env::var_os("GRANTS_BENCH_CLAIMS_ONLY").is_some() {
        // Only the queries over 100,000 grants (no emulator runs, no release daemon).
        emulator.shutdown();
        pool.close().await;
        return Ok(());
    }

    // 2. Refreshes per second.
    section("2. token sweep end to end against the emulator");
    let started = Instant::now();
    connect_grants(&app, &emulator, REAL_GRANTS).await?;
    println!(
        "  connected {REAL_GRANTS} grants through authorize + code exchange + connect_consented in {:.1}s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        REAL_GRANTS as f64 / started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE grants").execute(&pool).await?;
    sweep_benchmark(&app, &emulator).await?;

    // 3. The daemon.
    section("3. the release daemon over 100,000 + 2,000 grants");
    daemon_benchmark(&pool, &config_file, listen, dir).await?;

    emulator.shutdown();
    pool.close().await;
    Ok(())
}

fn section(title: &str) {
    println!("\n{title}");
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// One configuration for the in-process app and the daemon: only the token sweep runs
/// (every second); the other jobs are scheduled for New Year so they stay out of the figures.
fn config_toml(
    database_url: &str,
    emulator: &EmulatorHandle,
    key_file: &Path,
    listen: SocketAddr,
) -> String {
    let emulator = emulator.base_url();
    let separator = if database_url.contains('?') { '&' } else { '?' };
    format!(
        r#"[database]
url = "{database_url}{separator}application_name=atlassync-bench-daemon"
max_connections = 10

[atlassian]
client_id = "emulator-client"
client_secret = "emulator-secret"
redirect_uri = "http://{listen}/callback"
auth_base_url = "{emulator}"
api_base_url = "{emulator}"
request_timeout = "10s"

[schedule]
token_sweep = "*/1 * * * * *"
revalidate = "0 0 0 1 1 *"
jira_sync = "0 0 0 1 1 *"
jira_reconcile = "0 0 0 1 1 *"
confluence_sync = "0 0 0 1 1 *"

[http]
listen = "{listen}"

[crypto]
key_file = "{key}"

[log]
format = "json"
filter = "info"
"#,
        key = key_file.display(),
    )
}

/// A refresh token of a realistic length (the shape does not matter: these are never
/// presented to the emulator).
fn dummy_token(kind: &str) -> String {
    let mut token = format!("{kind}-{}", Uuid::new_v4().simple());
    while token.len() < 300 {
        token.push_str(&Uuid::new_v4().simple().to_string());
    }
    token.truncate(300);
    token
}

/// Inserts the dummy grants, 10,000 per statement, with sealed tokens and `next_refresh_at`
/// spread evenly over 30 days from 0.3 days ago (so 1% are due at `now`).
async fn insert_dummy_grants(
    pool: &PgPool,
    keyring: &Keyring,
    now: DateTime<Utc>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let spread = TimeDelta::days(30);
    let origin = now - spread * 1 / 100;
    let mut rng = rand::rng();
    for chunk in (0..DUMMY_GRANTS).collect::<Vec<_>>().chunks(10_000) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut refresh = Vec::with_capacity(chunk.len());
        let mut access = Vec::with_capacity(chunk.len());
        let mut due = Vec::with_capacity(chunk.len());
        let mut numbers = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let id = atlassync::domain::GrantId::new_random();
            let sealed =
                grants::seal_refresh_token(keyring, id, &RefreshToken::new(dummy_token("r")));
            let access_token = atlassync::domain::AccessToken::new(dummy_token("a"));
            refresh.push(sealed.bytes);
            access.push(grants::seal_access_token(keyring, id, &access_token).bytes);
            let offset_ms = (spread.num_milliseconds() as f64 * (i as f64 + rng.random::<f64>())
                / DUMMY_GRANTS as f64) as i64;
            due.push(origin + TimeDelta::milliseconds(offset_ms));
            ids.push(id);
            numbers.push(i as i64);
        }
        sqlx::query(
            "INSERT INTO grants (id, label, status, status_since, scopes,
                refresh_token_sealed, refresh_token_key_id, access_token_sealed, access_token_key_id,
                access_expires_at, refresh_rotated_at, refresh_idle_deadline, family_started_at,
                family_deadline, next_refresh_at, last_refreshed_at, created_at, updated_at)
             SELECT t.id, 'dummy-' || t.n, 'active', $5, ARRAY['read:me', 'offline_access'],
                t.rt, $6, t.at, $6, $5 + interval '1 hour', $5, $5 + interval '90 days', $5,
                $5 + interval '300 days', t.due, $5, $5, $5
             FROM UNNEST($1::uuid[], $2::bytea[], $3::bytea[], $4::timestamptz[], $7::bigint[])
                  AS t(id, rt, at, due, n)",
        )
        .bind(&ids)
        .bind(&refresh)
        .bind(&access)
        .bind(&due)
        .bind(now)
        .bind(keyring.current_key_id())
        .bind(&numbers)
        .execute(pool)
        .await?;
    }
    Ok(started.elapsed())
}

/// Steady state: each round, business time moves on by as much as brings 64 more grants due,
/// one batch is claimed (timed), and the claimed grants are moved 30 days on as a rotation
/// would, so ~1% stay due throughout.
async fn claim_benchmark(pool: &PgPool, start: DateTime<Utc>) -> anyhow::Result<()> {
    let step = TimeDelta::days(30) * CLAIM_BATCH as i32 / DUMMY_GRANTS as i32;
    let lease_ttl = TimeDelta::minutes(2);
    let mut conn = pool.acquire().await?;
    let mut timings = Vec::with_capacity(CLAIM_ROUNDS);
    let mut due_counts = Vec::new();
    explain_claim(&mut conn, start, "before the rounds").await?;
    let mut now = start;
    for round in 0..(CLAIM_ROUNDS + 10) {
        now += step;
        let started = Instant::now();
        let claimed =
            grants::claim_due_grants(&mut conn, now, CLAIM_BATCH, "bench", lease_ttl).await?;
        let took = started.elapsed();
        if round >= 10 {
            timings.push(took); // the first ten warm the cache
        }
        if claimed.len() as i64 != CLAIM_BATCH {
            bail!("round {round}: claimed {} of {CLAIM_BATCH}", claimed.len());
        }
        let ids: Vec<Uuid> = claimed.iter().map(|g| g.id.as_uuid()).collect();
        sqlx::query(
            "UPDATE grants SET leased_by = NULL, leased_until = NULL,
                next_refresh_at = $2 + interval '30 days' * random()
             WHERE id = ANY($1)",
        )
        .bind(&ids)
        .bind(now + TimeDelta::days(29))
        .execute(&mut *conn)
        .await?;
        if round % 50 == 0 {
            let due: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM grants WHERE status IN ('active', 'degraded') AND next_refresh_at <= $1",
            )
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            due_counts.push(due);
        }
    }
    println!(
        "  due while measuring: {:?} of {DUMMY_GRANTS} (sampled every 50 rounds)",
        due_counts
    );
    print_percentiles(&format!("claim of {CLAIM_BATCH}"), &mut timings);
    explain_claim(&mut conn, now, "after 200 rounds of churn").await?;
    Ok(())
}

fn print_percentiles(what: &str, timings: &mut [Duration]) {
    timings.sort();
    let at = |q: f64| timings[((timings.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {what}: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms over {} runs",
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0)),
        timings.len()
    );
}

/// EXPLAIN ANALYZE of one claim, rolled back.
async fn explain_claim(
    conn: &mut sqlx::PgConnection,
    now: DateTime<Utc>,
    when: &str,
) -> anyhow::Result<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {CLAIM_DUE_GRANTS_SQL}"
    )))
    .bind(now)
    .bind(CLAIM_BATCH)
    .bind("bench-explain")
    .bind(TimeDelta::minutes(2))
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let indexes: Vec<String> = plan
        .iter()
        .filter_map(|l| {
            l.split_once(" using ")
                .or_else(|| l.split_once("Index Scan on "))
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .collect();
    println!(
        "  plan {when}: {}",
        if indexes.is_empty() {
            "NO index used".to_owned()
        } else {
            format!("indexes used: {}", indexes.join(", "))
        }
    );
    for line in &plan {
        println!("    | {line}");
    }
    Ok(())
}

/// The two family-deadline queries every sweep starts with, whatever is due.
async fn family_scan_benchmark(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let now = Utc::now();
    let warning = TimeDelta::days(14);
    let (mut nearing, mut past) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = Instant::now();
        grants::grants_nearing_family_deadline(&mut conn, now, warning).await?;
        nearing.push(started.elapsed());
        let started = Instant::now();
        grants::grants_past_family_deadline(&mut conn, now).await?;
        past.push(started.elapsed());
    }
    print_percentiles("grants_nearing_family_deadline (none match)", &mut nearing);
    print_percentiles("grants_past_family_deadline (none match)", &mut past);
    let nearing_sql = "SELECT g.* FROM grants g
         WHERE g.status IN ('active', 'degraded') AND g.family_deadline - $2 <= $1
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.grant_id = g.id
                           AND a.kind = 'family_expiring' AND a.resolved_at IS NULL)";
    let past_sql = "SELECT g.* FROM grants g WHERE g.status IN ('active', 'degraded') AND g.family_deadline <= $1";
    for (name, sql) in [("nearing", nearing_sql), ("past", past_sql)] {
        let query =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {sql}"))).bind(now);
        let query = if name == "nearing" {
            query.bind(warning)
        } else {
            query
        };
        let plan: Vec<String> = query.fetch_all(&mut *conn).await?;
        let nodes: Vec<&str> = plan
            .iter()
            .map(|l| l.trim_start_matches([' ', '-', '>']).trim())
            .filter(|l| l.contains("Scan"))
            .collect();
        println!("  plan of {name}: {}", nodes.join("; "));
    }
    Ok(())
}

/// Revalidation claims 32 grants at a time for a schedule tick. Measured without the
/// `grants_revalidation_order` index (dropped inside a transaction that is rolled back: the
/// plan before it existed) and with it.
async fn revalidation_claim_benchmark(pool: &PgPool) -> anyhow::Result<()> {
    const BATCH: i64 = 32;
    const ROUNDS: usize = 60;
    let tick = Utc::now() + TimeDelta::hours(6);
    let mut conn = pool.acquire().await?;
    for indexed in [false, true] {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if !indexed {
            sqlx::query("DROP INDEX grants_revalidation_order")
                .execute(&mut *tx)
                .await?;
        }
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (COSTS OFF) {}",
            grants::CLAIM_REVALIDATIONS_SQL
        )))
        .bind(tick)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut timings = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let claimed = grants::claim_revalidations(&mut tx, tick, BATCH).await?;
            timings.push(started.elapsed());
            if claimed.len() as i64 != BATCH {
                bail!("claimed {} of {BATCH}", claimed.len());
            }
        }
        tx.rollback().await?;
        let label = if indexed {
            "with grants_revalidation_order"
        } else {
            "without the index (before)"
        };
        print_percentiles(
            &format!("claim_revalidations of {BATCH}, {label}"),
            &mut timings,
        );
        let nodes: Vec<&str> = plan
            .iter()
            .map(|l| l.trim_start_matches([' ', '-', '>']).trim())
            .filter(|l| l.contains("Scan") || l.starts_with("Sort"))
            .collect();
        println!("    plan: {}", nodes.join("; "));
    }
    Ok(())
}

/// Moves every dummy grant 1 to 30 days into the future and clears leases.
async fn settle_dummies(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE grants SET leased_by = NULL, leased_until = NULL, lease_epoch = 0,
            next_refresh_at = $1 + interval '1 day' + interval '29 days' * random()
         WHERE label LIKE 'dummy-%'",
    )
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE grants").execute(pool).await?;
    Ok(())
}

/// Connects `n` users for real: each consents at the emulator's `/authorize` (answered at
/// once from the queue), the code is exchanged, and the grant is stored by
/// `onboarding::connect_consented` (with `/me` and accessible-resources).
async fn connect_grants(app: &App, emulator: &EmulatorHandle, n: usize) -> anyhow::Result<()> {
    let site = emulator.add_site("bench", &[Product::Jira, Product::Confluence]);
    for i in 0..n {
        let account_id = emulator.add_user(NewUser {
            name: format!("User {i}"),
            email: format!("user{i}@example.com"),
            zoneinfo: "UTC".into(),
            jira_time_zone: "UTC".into(),
            sites: vec![site.clone()],
        });
        emulator.queue_consent(ConsentDecision::Accept {
            account_id,
            sites: None,
        });
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            async move {
                let code = authorize(app, &http, i).await?;
                let tokens = app.tokens.exchange_code(&code).await?;
                atlassync::onboarding::connect_consented(
                    app,
                    &format!("user-{i:05}"),
                    tokens,
                    None,
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SWEEP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One consent at the emulator: the code from the redirect to the callback.
async fn authorize(
    app: &App,
    http: &reqwest::Client,
    i: usize,
) -> anyhow::Result<AuthorizationCode> {
    let response = http
        .get(app.tokens.authorization_url(&format!("bench-{i}")))
        .send()
        .await?;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .context("authorize did not redirect")?
        .to_str()?;
    let code = url::Url::parse(location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("no code in the redirect")?;
    Ok(AuthorizationCode::new(code))
}

/// Makes the real grants due (as if the clock had passed `keepalive_after`), then times one
/// sweep draining them all; calibrates the token endpoint alone at the same concurrency.
async fn sweep_benchmark(app: &App, emulator: &EmulatorHandle) -> anyhow::Result<()> {
    let refresher = Refresher::new(app.clone(), "bench-sweeper");
    let stop = CancellationToken::new();

    let started = Instant::now();
    let idle = atlassync::jobs::token_sweep::run_once(app, &refresher, &stop).await?;
    println!(
        "  a sweep with nothing due over {} grants: {:.1} ms ({idle:?})",
        DUMMY_GRANTS + REAL_GRANTS,
        started.elapsed().as_secs_f64() * 1000.0
    );

    make_real_grants_due(&app.pool, app.clock.now()).await?;
    let before = emulator.counters();
    let started = Instant::now();
    let report = atlassync::jobs::token_sweep::run_once(app, &refresher, &stop).await?;
    let took = started.elapsed();
    let after = emulator.counters();
    println!(
        "  sweep of {REAL_GRANTS} due grants: {:.2}s, {:.0} refreshes/s (rotated {}, retrying {}, needs_reauth {}, lease_lost {}; emulator refreshes {})",
        took.as_secs_f64(),
        report.rotated as f64 / took.as_secs_f64(),
        report.rotated,
        report.retrying,
        report.needs_reauth,
        report.lease_lost,
        after.refreshes - before.refreshes,
    );

    // The token endpoint alone: 8 chains of rotations on 8 spare families, at the sweep's
    // concurrency, over the same client.
    let spare: Vec<RefreshToken> = {
        let mut spare = Vec::new();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        for i in 0..SWEEP_CONCURRENCY {
            let account_id = emulator.add_user(NewUser {
                name: format!("Spare {i}"),
                email: format!("spare{i}@example.com"),
                zoneinfo: "UTC".into(),
                jira_time_zone: "UTC".into(),
                sites: vec![],
            });
            emulator.queue_consent(ConsentDecision::Accept {
                account_id,
                sites: None,
            });
            let code = authorize(app, &http, 1_000_000 + i).await?;
            let tokens = app.tokens.exchange_code(&code).await?;
            spare.push(tokens.refresh_token.context("no refresh token")?);
        }
        spare
    };
    let per_chain = REAL_GRANTS / SWEEP_CONCURRENCY;
    let started = Instant::now();
    futures_util::future::try_join_all(spare.into_iter().map(|mut token| async move {
        for _ in 0..per_chain {
            let set = app.tokens.refresh(&token).await?;
            token = set.refresh_token.unwrap_or(token);
        }
        anyhow::Ok(())
    }))
    .await?;
    let http_only = started.elapsed();
    println!(
        "  token endpoint alone, {} refreshes at concurrency {SWEEP_CONCURRENCY}: {:.2}s ({:.0}/s)",
        per_chain * SWEEP_CONCURRENCY,
        http_only.as_secs_f64(),
        (per_chain * SWEEP_CONCURRENCY) as f64 / http_only.as_secs_f64()
    );
    let http_share = http_only.as_secs_f64() / took.as_secs_f64();
    println!(
        "  share of the sweep: HTTP + emulator ≈ {:.0}%, the rest (Postgres, sealing, scheduling) ≈ {:.0}%",
        100.0 * http_share.min(1.0),
        100.0 * (1.0 - http_share).max(0.0)
    );
    println!(
        "  (the emulator runs in this process, on the same {} CPUs)",
        cpus()
    );
    Ok(())
}

async fn make_real_grants_due(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "UPDATE grants SET next_refresh_at = $1 - interval '1 minute' WHERE label LIKE 'user-%'",
    )
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Memory and CPU of one process, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    vm_hwm_kib: u64,
    vm_rss_kib: u64,
}

fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_ticks: cpu_ticks(pid)?,
        vm_hwm_kib: field("VmHWM:"),
        vm_rss_kib: field("VmRSS:"),
    })
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The Postgres backends serving the daemon (by application name).
async fn daemon_backends(pool: &PgPool) -> anyhow::Result<Vec<u32>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'atlassync-bench-daemon'",
    )
    .fetch_all(pool)
    .await?;
    Ok(pids.into_iter().map(|p| p as u32).collect())
}

fn total_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p).ok()).sum()
}

async fn daemon_benchmark(
    pool: &PgPool,
    config_file: &Path,
    listen: SocketAddr,
    dir: &Path,
) -> anyhow::Result<()> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_atlassync"));
    if !binary.exists() {
        println!(
            "  skipped: {} is missing; build it with `cargo build --release`",
            binary.display()
        );
        return Ok(());
    }
    println!("  binary: {}", binary.display());
    let log_file = dir.join("daemon.log");
    let mut daemon = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(config_file)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file)?)
        .kill_on_drop(true)
        .spawn()?;
    let pid = daemon.id().context("daemon pid")?;
    let health = format!("http://{listen}/healthz");
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "daemon exited with {status}:\n{}",
                std::fs::read_to_string(&log_file).unwrap_or_default()
            );
        }
        if let Ok(r) = reqwest::get(&health).await
            && r.status() == 200
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("daemon never became healthy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "  healthy {:.2}s after spawn; RSS {} KiB",
        started.elapsed().as_secs_f64(),
        sample(pid)?.vm_rss_kib
    );

    // Idle: a sweep every second, nothing due.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hz = clock_ticks_per_second() as f64;
    let backends = daemon_backends(pool).await?;
    let (t0, s0, b0) = (Instant::now(), sample(pid)?, total_ticks(&backends));
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let (wall, s1, b1) = (
        t0.elapsed().as_secs_f64(),
        sample(pid)?,
        total_ticks(&backends),
    );
    println!(
        "  idle {IDLE_SECONDS}s (token_sweep every 1s, nothing due): daemon CPU {:.2}% of one core, its {} Postgres backends {:.2}%",
        100.0 * (s1.cpu_ticks - s0.cpu_ticks) as f64 / hz / wall,
        backends.len(),
        100.0 * b1.saturating_sub(b0) as f64 / hz / wall,
    );
    println!(
        "  idle memory: VmRSS {} KiB, VmHWM (peak) {} KiB",
        s1.vm_rss_kib, s1.vm_hwm_kib
    );

    // A sweep of the 2,000 real grants.
    let due = make_real_grants_due(pool, SystemClock.now()).await?;
    let backends = daemon_backends(pool).await?;
    let (t0, s0, b0) = (Instant::now(), sample(pid)?, total_ticks(&backends));
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM grants WHERE label LIKE 'user-%' AND next_refresh_at <= $1",
        )
        .bind(SystemClock.now())
        .fetch_one(pool)
        .await?;
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("the daemon left {left} grants due after 120s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Backends the pool opened during the sweep count whole: they were born inside it.
    let (wall, s1, b1) = (
        t0.elapsed().as_secs_f64(),
        sample(pid)?,
        total_ticks(&daemon_backends(pool).await?),
    );
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let rotated: Vec<DateTime<Utc>> = log
        .lines()
        .filter(|l| l.contains("refresh token rotated"))
        .filter_map(|l| {
            let at = l.split_once("\"timestamp\":\"")?.1.split('"').next()?;
            DateTime::parse_from_rfc3339(at).ok().map(|t| t.to_utc())
        })
        .collect();
    if let (Some(first), Some(last)) = (rotated.iter().min(), rotated.iter().max()) {
        let span = (*last - *first).as_seconds_f64();
        println!(
            "  daemon log: {} rotations from the first to the last in {span:.2}s: {:.0} refreshes/s",
            rotated.len(),
            rotated.len() as f64 / span.max(0.001)
        );
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM grants WHERE label LIKE 'user-%' GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    println!(
        "  daemon swept {due} due grants in {wall:.2}s (includes up to 1s until the next tick): {:.0} refreshes/s; statuses after: {statuses:?}",
        due as f64 / wall
    );
    println!(
        "  during the sweep: daemon CPU {:.0}% of one core, Postgres backends {:.0}%; VmRSS {} KiB, VmHWM (peak) {} KiB",
        100.0 * (s1.cpu_ticks - s0.cpu_ticks) as f64 / hz / wall,
        100.0 * b1.saturating_sub(b0) as f64 / hz / wall,
        s1.vm_rss_kib,
        s1.vm_hwm_kib
    );

    let term = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .context("daemon still running 30s after SIGTERM")??;
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    println!(
        "  SIGTERM: exited with {status} after {:.2}s; log: {} lines, {} ERROR, {} WARN",
        term.elapsed().as_secs_f64(),
        log.lines().count(),
        log.matches("\"level\":\"ERROR\"").count(),
        log.matches("\"level\":\"WARN\"").count()
    );
    Ok(())
}

/// `/metrics` over 100,000 grants, end to end through the HTTP server, beside the limit it
/// avoids: counting grants by status with a scan of the table.
async fn metrics_scrape_benchmark(app: &App) -> anyhow::Result<()> {
    section("metrics: /metrics scrapes over 100,000 grants");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let stop = CancellationToken::new();
    tokio::spawn(atlassync::http::serve(app.clone(), listener, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let client = reqwest::Client::new();
    let mut scrapes = Vec::new();
    let mut bytes = 0;
    for _ in 0..50 {
        let started = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        scrapes.push(started.elapsed());
        bytes = body.len();
    }
    stop.cancel();
    print_percentiles(&format!("GET /metrics ({bytes} bytes)"), &mut scrapes);
    let mut conn = app.pool.acquire().await?;
    let mut counting = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let _: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM grants GROUP BY status")
                .fetch_all(&mut *conn)
                .await?;
        counting.push(started.elapsed());
    }
    print_percentiles(
        "limit avoided: SELECT status, count(*) FROM grants GROUP BY status",
        &mut counting,
    );
    for (name, sql) in [
        (
            "grant counts",
            "SELECT status, grants FROM grant_status_counts",
        ),
        (
            "nearest family deadline",
            "SELECT min(family_deadline) FROM grants WHERE status IN ('active', 'degraded')",
        ),
    ] {
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {sql}")))
                .fetch_all(&mut *conn)
                .await?;
        let nodes: Vec<&str> = plan
            .iter()
            .map(|l| l.trim_start_matches([' ', '-', '>']).trim())
            .filter(|l| l.contains("Scan"))
            .collect();
        println!("  plan of {name}: {}", nodes.join("; "));
    }
    Ok(())
}
