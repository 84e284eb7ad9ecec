//! Command-line interface. Exit codes: 0 clean stop, 2 bad configuration or arguments (the
//! message names the key), 1 anything else.

mod alerts;
mod grants;
mod logging;
mod run;
mod sites;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH, LogFormat};
use crate::domain::CloudId;
use sync::SyncRequest;

/// The end of `--help` and the man page: what an operator needs beyond the options.
const AFTER_LONG_HELP: &str = "\
Files:
  /etc/atlassync/atlassync.toml   the configuration (--config overrides it)
  /etc/credstore/atlassync.NAME   secret NAME: the systemd unit passes it as a credential;
                                  commands run by root outside the unit read it directly

Environment:
  ATLASSYNC_<SECTION>__<KEY>      overrides a configuration key, e.g. ATLASSYNC_DATABASE__URL;
                                  a variable that names no key is refused (exit code 2)
  CREDENTIALS_DIRECTORY           set by systemd: secrets not in the configuration are read from
                                  the credentials client_secret, database_url, database_password,
                                  crypto_key, admin_token and webhook_secret in it
  RUST_LOG                        overrides log.filter
  JOURNAL_STREAM                  set by systemd: logs go to journald with structured fields

Exit status:
  0 success or clean stop; 2 bad configuration or arguments (the message names the key or the
  variable); 1 anything else.";

#[derive(Debug, Parser)]
#[command(
    name = "atlassync",
    version,
    about = "Keeps Atlassian Cloud OAuth grants alive and mirrors Jira and Confluence into Postgres",
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    /// Configuration file (TOML); `ATLASSYNC_<SECTION>__<KEY>` variables override it.
    #[arg(long, global = false, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: migrate, serve the consent flow, keep grants alive.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and exit (2 with the offending key when invalid).
    CheckConfig,
    /// Inspect or import grants.
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Open alerts: who, why, since when, by when.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Inspect synced sites, or pin the grant a site syncs through.
    Sites {
        #[command(subcommand)]
        command: SitesCommand,
    },
    /// Print a signed consent link for a user to open.
    Invite {
        /// The name the grant will carry (a person, a team, a service).
        #[arg(long)]
        label: String,
    },
    /// Run one sync pass now: Jira issues and Confluence spaces of every site.
    Sync {
        /// Also reconcile Jira issue ids (finds deletions; costs ~1 point per issue).
        #[arg(long)]
        reconcile: bool,
        /// Only this site (cloud id), now, whatever its schedule.
        #[arg(long, value_name = "CLOUD_ID")]
        site: Option<String>,
        /// Re-read every Jira issue of `--site` from scratch: a backfill after changing the
        /// synced fields or the site's `jira.jql`.
        #[arg(long, requires = "site")]
        full: bool,
        /// Apply the deletions held for this site (see `sync.max_delete_fraction`), by
        /// reconciling it now.
        #[arg(long, value_name = "CLOUD_ID", conflicts_with_all = ["site", "full"])]
        confirm_deletes: Option<String>,
    },
    /// Run the built-in Atlassian emulator.
    Emulator(atlassian_emulator::ServeArgs),
    /// A guided tour on a private database and the emulator (needs DATABASE_URL).
    Demo,
    /// Write shell completions or man pages (packaging uses it).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GenerateCommand {
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages into DIR: atlassync.1 and one per command (atlassync-run.1, ...).
    Man {
        /// The directory to write into; it must exist.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// The open alerts, newest first.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GrantsCommand {
    /// Health and deadlines of every grant.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Import refresh tokens from an existing integration: JSON lines on stdin,
    /// `{"label": "...", "refresh_token": "...", "consented_at": "2026-01-31T00:00:00Z"?}`.
    Import,
}

#[derive(Debug, Subcommand)]
enum SitesCommand {
    /// Every synced site with its elected grant, watermark and last run.
    List,
    /// Prefer one grant for a site while it is healthy (`--label` of the grant), or clear
    /// the pin with `--clear`.
    Pin {
        #[arg(long)]
        cloud_id: String,
        /// `jira` or `confluence`.
        #[arg(long)]
        product: String,
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        label: Option<String>,
        #[arg(long)]
        clear: bool,
    },
}

/// An error that decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is invalid: exit code 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else: exit code 1.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
    };
    match Box::pin(run(cli)).await {
        Ok(code) => code,
        Err(CliError::Config(e)) => {
            eprintln!("atlassync: configuration error: {e}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("atlassync: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Emulator(args) => {
            logging::init(LogFormat::Pretty, "info");
            atlassian_emulator::serve_forever(args.config(), args.listen).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo => {
            // The tour prints what matters; logs would only interleave with it.
            logging::init(LogFormat::Pretty, "error");
            crate::demo::run().await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Generate { what } => {
            generate(what)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }

    // Every daemon command validates the whole configuration before doing anything.
    let (path, given) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = Config::load(&path, given)?;
    logging::init(config.log.format, &config.log.filter);

    match cli.command {
        Command::CheckConfig => {
            println!("configuration OK");
            for line in config.derived_timings() {
                println!("{line}");
            }
            for source in &config.secret_sources {
                println!("{}: {}", source.key, source.from);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Invite { label } => {
            let label = label.trim().to_owned();
            if label.is_empty() {
                return Err(anyhow::anyhow!("--label must not be empty").into());
            }
            // An invite is pure computation: no database needed.
            let clock = SystemClock;
            let ttl = config.http.invite_ttl;
            let invite = crate::invite::Invite::new(label, crate::clock::Clock::now(&clock) + ttl);
            println!(
                "{}",
                invite.link(&config.crypto.keyring, &config.http.public_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let pool = connect(&config).await?;
            crate::store::migrate(&pool)
                .await
                .map_err(anyhow::Error::from)?;
            eprintln!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let signals = run::Signals::install()?;
            let pool = connect(&config).await?;
            crate::store::migrate(&pool)
                .await
                .map_err(anyhow::Error::from)?;
            // Leases and deadlines are judged in the database's time, whatever this host's
            // clock says.
            let clock =
                crate::daemon::DatabaseAlignedClock::start(pool.clone(), Default::default())
                    .await
                    .map_err(anyhow::Error::from)?;
            let app = App::new(config, pool, clock);
            run::run(app, signals, path, given).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Grants { command } => {
            let pool = connect(&config).await?;
            let app = App::new(config, pool, Arc::new(SystemClock));
            match command {
                GrantsCommand::List { json } => grants::list(&app, json).await?,
                GrantsCommand::Import => return Ok(grants::import(&app).await?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { command } => {
            let pool = connect(&config).await?;
            let app = App::new(config, pool, Arc::new(SystemClock));
            match command {
                AlertsCommand::List { json } => alerts::list(&app, json).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sites { command } => {
            let pool = connect(&config).await?;
            match command {
                SitesCommand::List => sites::list(&pool).await?,
                SitesCommand::Pin {
                    cloud_id,
                    product,
                    label,
                    ..
                } => sites::pin(&pool, &cloud_id, &product, label.as_deref()).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            reconcile,
            site,
            full,
            confirm_deletes,
        } => {
            let pool = connect(&config).await?;
            let app = App::new(config, pool, Arc::new(SystemClock));
            let refresher =
                crate::lifecycle::Refresher::new(app.clone(), crate::daemon::worker_id());
            let syncer = crate::jobs::sync::Syncer::new(app.clone(), refresher);
            let request = match (site, confirm_deletes) {
                (_, Some(cloud_id)) => SyncRequest::ConfirmDeletes(CloudId::from(cloud_id)),
                (Some(cloud_id), None) => SyncRequest::Site {
                    cloud_id: CloudId::from(cloud_id),
                    full,
                    reconcile,
                },
                (None, None) => SyncRequest::All { reconcile },
            };
            Ok(sync::run(&app, &syncer, request).await?)
        }
        Command::Emulator { .. } | Command::Demo | Command::Generate { .. } => {
            unreachable!("handled above")
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    Ok(crate::store::connect(config.database_url(), config.database.max_connections).await?)
}

/// Shell completions on stdout, or man pages into a directory.
fn generate(what: GenerateCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    match what {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "atlassync",
                &mut std::io::stdout(),
            );
        }
        GenerateCommand::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?,
    }
    Ok(())
}
