//! Log set-up: `tracing` to standard error, as text or JSON, honouring `NO_COLOR`.
//!
//! The level comes from `--log-level`, then `WALFETCH_LOG_LEVEL`, then wal-g's
//! `WALG_LOG_LEVEL` (`NORMAL` = info, `DEVEL` = debug), resolved in [`crate::config`]. Secrets never reach a log line:
//! walfetch never reads them itself, and dependencies (the AWS SDK) log errors only.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `Targets` (not `EnvFilter`) keeps start-up cheap:
/// a restore_command served from the spool should cost a few milliseconds in all.
pub fn init(level: &str, format: LogFormat) {
    // Dependencies log errors only, at every level: their lines carry Debug dumps, and
    // request dumps could carry headers. walfetch reports what they fail with itself.
    let filter: Targets = format!("error,walfetch={level}")
        .parse()
        .unwrap_or_else(|_| "error,walfetch=info".parse().expect("static filter"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => tracing_subscriber::registry().with(fmt.with_ansi(ansi)).with(filter).init(),
        LogFormat::Json => tracing_subscriber::registry().with(fmt.json().with_ansi(false)).with(filter).init(),
    }
}
