//! Command-line definitions. Names follow wal-g's so the binaries can be swapped.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::StorageFlags;
use crate::logging::LogFormat;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "walfetch", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WALFETCH_COMMIT"), ")"))]
#[command(about = "Restore a PostgreSQL standby from a wal-g / WAL-E archive in S3 or a directory, and keep it fed")]
pub struct Cli {
    /// Storage options shared by every command.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Log level: error, warn, info, debug, trace [env: WALFETCH_LOG_LEVEL, WALG_LOG_LEVEL]
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the archive is.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Archive: s3://bucket/path or file:///dir [env: WALG_S3_PREFIX, WALE_S3_PREFIX, WALG_FILE_PREFIX, WALE_FILE_PREFIX]
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// S3 endpoint URL for S3-compatible servers [env: AWS_ENDPOINT_URL, AWS_ENDPOINT, WALE_S3_ENDPOINT]
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// S3 region [env: AWS_REGION]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Path-style S3 addressing [env: AWS_S3_FORCE_PATH_STYLE]
    #[arg(long, global = true)]
    pub path_style: bool,
}

impl StorageArgs {
    /// As plain flags for the settings resolver.
    pub fn flags(&self) -> StorageFlags {
        StorageFlags {
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the complete base backups in the archive, oldest first.
    BackupList(crate::commands::backup_list::BackupList),
    /// Restore a base backup into a directory, optionally ready to start as a standby.
    BackupFetch(crate::commands::backup_fetch::BackupFetch),
    /// Fetch one WAL file (the restore_command: walfetch wal-fetch %f %p).
    WalFetch(crate::commands::wal_fetch::WalFetch),
    /// Keep the next segments downloaded and validated ahead of a standby (started on demand by wal-fetch).
    Follow(crate::commands::follow::Follow),
    /// Archive one WAL file (the archive_command: walfetch wal-push %p).
    WalPush(crate::commands::wal_push::WalPush),
    /// Take a base backup of a running cluster into the archive.
    BackupPush(crate::commands::backup_push::BackupPush),
    /// Check the archive for missing WAL, unrestorable backups and staleness (for cron).
    WalVerify(crate::commands::wal_verify::WalVerify),
    /// Show the archive's timelines, their segment ranges and gaps, and their backups.
    WalShow(crate::commands::wal_show::WalShow),
    /// Why a standby is or is not advancing: its files tied to its archive.
    Status(crate::commands::status::Status),
    /// Test access to the archive: list, read, credentials expiry, with fixes for common mistakes.
    Check(crate::commands::check::Check),
    /// Print a shell completion script.
    Completions(crate::commands::docs::Completions),
    /// Print the man page (roff).
    Manpage,
}

/// A default download concurrency: `WALG_DOWNLOAD_CONCURRENCY`, else the number of cores.
pub fn default_concurrency(env_name: &str) -> usize {
    std::env::var(env_name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
}

/// Requests in flight when listing or reading many small objects: `WALG_DOWNLOAD_CONCURRENCY`,
/// else 8 (they are round trips, not work for the cores).
pub fn listing_concurrency() -> usize {
    std::env::var("WALG_DOWNLOAD_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(8)
}

/// An absolute form of `path` (relative to the current directory).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}
