//! `walfetch follow PGDATA`: the prefetch fetcher that keeps a standby fed
//! ([`crate::standby::prefetch`]).
//!
//! It runs as a service (`--foreground`, see `docs/walfetch-follow@.service`) or on
//! demand: `wal-fetch` starts it detached when none runs, and it exits once PostgreSQL
//! has asked for nothing for `--idle-timeout` seconds, or when the server it was started
//! for stops. A lock in the spool keeps it to one fetcher per data directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Run;
use crate::config::absolute;
use crate::context::Context;
use crate::error::Result;
use crate::pg::datadir::wal_dir;
use crate::standby::prefetch::Fetcher;
use crate::standby::spool::Spool;

/// Options of `follow`.
#[derive(Debug, Args)]
pub struct Follow {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// Segments kept ready ahead of the standby [env: WALG_DOWNLOAD_CONCURRENCY; default: 8]
    #[arg(long)]
    pub ahead: Option<usize>,
    /// Run until stopped (for a service), instead of exiting when idle or when the server stops.
    #[arg(long)]
    pub foreground: bool,
    /// Exit after PostgreSQL has asked for nothing for this many seconds (on-demand mode).
    #[arg(long, env = "WALFETCH_FOLLOW_IDLE", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Longest wait between two looks at the archive head, in seconds.
    #[arg(long, default_value_t = 5)]
    pub max_poll: u64,
    /// Log to this file (rotated past 4 MiB) instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl Run for Follow {
    /// Follows until idle (or forever with `--foreground`).
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let datadir = absolute(&self.pgdata);
        Fetcher {
            spool: Spool::for_wal_dir(&wal_dir(&datadir), ctx.settings.prefetch_dir.as_deref()),
            datadir,
            settings: ctx.settings.storage()?.clone(),
            ahead: ctx.settings.prefetch_ahead(self.ahead),
            foreground: self.foreground,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_poll: Duration::from_secs(self.max_poll),
            segment_size: ctx.settings.wal_segment_size()?,
            log_file: self.log_file.clone(),
        }
        .run()?;
        Ok(ExitCode::SUCCESS)
    }
}
