//! `walfetch wal-show`: the timelines in the archive, their segment ranges and gaps,
//! where each branched, and the backups on each ([`crate::inspect::show`]).

use std::process::ExitCode;

use clap::Args;

use super::Run;
use crate::config::parse_size;
use crate::context::Context;
use crate::error::Result;
use crate::inspect::show::{render, show};

/// Options of `wal-show`.
#[derive(Debug, Args)]
pub struct WalShow {
    /// WAL segment size (16MB, 64MB, …) [env: WALG_PG_WAL_SIZE in MB; default: read from an archived segment]
    #[arg(long)]
    pub wal_segment_size: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Run for WalShow {
    /// Shows.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let segment_size = match &self.wal_segment_size {
            Some(flag) => Some(parse_size(flag)?),
            None => ctx.settings.wal_segment_size()?,
        };
        let archive = ctx.archive()?;
        let (shown, size) = show(&archive, segment_size, ctx.settings.listing_concurrency())?;
        if self.json {
            crate::output::json(&shown)?;
        } else {
            crate::out!("{}", render(&archive.describe(), &shown, size));
        }
        Ok(ExitCode::SUCCESS)
    }
}
