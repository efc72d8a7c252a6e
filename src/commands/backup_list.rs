//! `walfetch backup-list`: the complete backups, oldest first, as a table or JSON.

use std::sync::Arc;

use clap::Args;

use crate::cli::listing_concurrency;
use crate::error::Result;
use crate::layout::backup::list_backups;
use crate::storage::Storage;

/// Options of `backup-list`.
#[derive(Debug, Args)]
pub struct BackupList {
    /// Print JSON (an array, oldest first; the last is what LATEST means).
    #[arg(long)]
    pub json: bool,
}

fn human_size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

impl BackupList {
    /// Lists and prints.
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        let backups = list_backups(storage, listing_concurrency())?;
        let rows: Vec<_> = backups.iter().map(|b| b.summary()).collect();
        if self.json {
            return crate::output::json(&rows);
        }
        if rows.is_empty() {
            crate::outln!("no backups in {}", storage.describe());
            return Ok(());
        }
        crate::outln!(
            "{:<32} {:>3} {:<14} {:<14} {:<28} {:>7} {:>11} {:>11}",
            "name",
            "tli",
            "start_lsn",
            "finish_lsn",
            "finish_time",
            "pg",
            "size",
            "compressed"
        );
        for r in &rows {
            crate::outln!(
                "{:<32} {:>3} {:<14} {:<14} {:<28} {:>7} {:>11} {:>11}",
                r.name,
                r.timeline,
                r.start_lsn.as_deref().unwrap_or("-"),
                r.finish_lsn.as_deref().unwrap_or("-"),
                r.finish_time.as_deref().unwrap_or("-"),
                r.pg_version.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                human_size(r.uncompressed_size),
                human_size(r.compressed_size),
            );
        }
        Ok(())
    }
}
