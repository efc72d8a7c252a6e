//! `walfetch backup-push PGDATA`: a non-exclusive base backup of a running cluster, in
//! wal-g's layout ([`crate::push::backup`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::Run;
use crate::codec::Codec;
use crate::config::{absolute, cores};
use crate::constants::DEFAULT_TAR_SIZE_THRESHOLD;
use crate::context::Context;
use crate::error::Result;
use crate::pg::db::Db;
use crate::push::backup::{push, Options};
use crate::push::delta::{self, DeltaSettings};

/// Options of `backup-push`.
#[derive(Debug, Args)]
pub struct BackupPush {
    /// Data directory of the running cluster.
    pub pgdata: PathBuf,
    /// Compression: lz4 (default), zstd, brotli, lzma or none.
    #[arg(long, env = "WALG_COMPRESSION_METHOD")]
    pub compression: Option<String>,
    /// Partitions compressed and uploaded at once [default: cores]
    #[arg(long, env = "WALG_UPLOAD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Uncompressed bytes per partition (wal-g's default is 1 GiB).
    #[arg(long, env = "WALG_TAR_SIZE_THRESHOLD", default_value_t = DEFAULT_TAR_SIZE_THRESHOLD)]
    pub tar_size_threshold: u64,
    /// Mark the backup permanent (kept by retention).
    #[arg(long)]
    pub permanent: bool,
    /// Deltas allowed between two full backups; 0 takes full backups only.
    #[arg(long, env = "WALG_DELTA_MAX_STEPS", default_value_t = 0)]
    pub delta_max_steps: u64,
    /// What a delta is taken against: LATEST or LATEST_FULL.
    #[arg(long, env = "WALG_DELTA_ORIGIN", default_value = "LATEST")]
    pub delta_origin: String,
    /// Take a full backup whatever WALG_DELTA_MAX_STEPS says.
    #[arg(long)]
    pub full: bool,
}

impl Run for BackupPush {
    /// Takes the backup.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let started = Instant::now();
        let opts = Options {
            codec: Codec::for_writing(self.compression.as_deref())?,
            concurrency: self.concurrency.filter(|n| *n > 0).unwrap_or_else(cores),
            tar_size_threshold: self.tar_size_threshold,
            permanent: self.permanent,
        };
        let storage = ctx.storage()?;
        let db = Db::connect(&ctx.settings.libpq)?;
        let deltas = DeltaSettings {
            max_steps: if self.full { 0 } else { self.delta_max_steps },
            origin: self.delta_origin.parse()?,
        };
        let base = delta::choose(&storage, &deltas, db.system_identifier()?, i64::from(db.version), opts.concurrency)?;
        let pushed = push(&ctx.objects()?, &absolute(&self.pgdata), &db, &opts, base)?;
        crate::outln!(
            "backed up {}{} ({} partitions, {:.1} MiB as {:.1} MiB {}) in {:.1}s",
            pushed.name,
            pushed.delta_from.map(|b| format!(" (a delta of {b})")).unwrap_or_default(),
            pushed.partitions,
            pushed.uncompressed as f64 / 1048576.0,
            pushed.compressed as f64 / 1048576.0,
            if opts.codec == Codec::None {
                "uncompressed"
            } else {
                opts.codec.extension()
            },
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    }
}
