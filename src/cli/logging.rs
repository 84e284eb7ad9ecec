//! Where log lines go. Under systemd, stderr is the journal (`JOURNAL_STREAM` names it), and
//! the default `auto` format sends entries to journald with their fields as journal fields
//! (`GRANT_ID`, `ALERT_KIND`, ...), so `journalctl -u atlassync GRANT_ID=...` works and no
//! colour codes reach the journal. Elsewhere lines go to stderr, coloured only on a terminal.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set and valid, overrides `filter`.
pub fn init(format: LogFormat, filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    let format = match format {
        LogFormat::Auto if stderr_is_the_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Pretty,
        other => other,
    };
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(journald) => {
                // Fields keep their names (`grant.id` becomes `GRANT_ID`); the identifier is
                // fixed, whatever the binary is called.
                let journald = journald
                    .with_field_prefix(None)
                    .with_syslog_identifier("atlassync".into());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(journald)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("atlassync: journald is unavailable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

/// True when stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` holds
/// its `device:inode`, and a child whose stderr was redirected elsewhere must not match.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    device.parse() == Ok(meta.dev()) && inode.parse() == Ok(meta.ino())
}
