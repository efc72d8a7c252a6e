//! `walfetch backup-list`: the complete backups, oldest first, as a table or JSON.

use std::process::ExitCode;

use clap::Args;

use super::Run;
use crate::context::Context;
use crate::error::Result;
use crate::inspect::backups::render_table;

/// Options of `backup-list`.
#[derive(Debug, Args)]
pub struct BackupList {
    /// Print JSON (an array, oldest first; the last is what LATEST means).
    #[arg(long)]
    pub json: bool,
}

impl Run for BackupList {
    /// Lists and prints.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let archive = ctx.archive()?;
        let rows: Vec<_> = archive
            .backups(ctx.settings.listing_concurrency())?
            .iter()
            .map(|b| b.summary())
            .collect();
        if self.json {
            crate::output::json(&rows)?;
        } else if rows.is_empty() {
            crate::outln!("no backups in {}", archive.describe());
        } else {
            crate::out!("{}", render_table(&rows));
        }
        Ok(ExitCode::SUCCESS)
    }
}
