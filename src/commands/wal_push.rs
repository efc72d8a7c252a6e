//! `walfetch wal-push %p`: PostgreSQL's archive_command ([`crate::push::wal`]). Any
//! failure exits non-zero, so PostgreSQL keeps the segment and tries again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::Run;
use crate::codec::Codec;
use crate::context::Context;
use crate::error::Result;
use crate::push::wal::{push, Pushed};

/// Options of `wal-push`.
#[derive(Debug, Args)]
pub struct WalPush {
    /// The WAL file to archive (%p).
    pub path: PathBuf,
    /// Compression: lz4 (default), zstd, brotli, lzma or none.
    #[arg(long, env = "WALG_COMPRESSION_METHOD")]
    pub compression: Option<String>,
}

impl Run for WalPush {
    /// Archives the file.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let started = Instant::now();
        let codec = Codec::for_writing(self.compression.as_deref())?;
        match push(&ctx.objects()?, &self.path, codec)? {
            Pushed::Stored(object) => {
                tracing::info!(file = %self.path.display(), object = %object, ms = started.elapsed().as_millis() as u64, "archived")
            }
            Pushed::AlreadyThere(object) => {
                tracing::info!(file = %self.path.display(), object = %object, "already archived with identical content")
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
