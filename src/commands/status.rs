//! `walfetch status PGDATA`: why a standby is (or is not) advancing, in one command
//! ([`crate::inspect::status`]).
//!
//! Exit codes: 0 healthy (caught up or catching up), 15 blocked (a gap, a refused or
//! failing segment), 16 misconfigured, 17 archive unreachable, 18 credentials rejected.

use std::path::PathBuf;

use clap::Args;

use crate::cli::absolute;
use crate::config::StorageFlags;
use crate::error::Result;
use crate::inspect::status::{render, report};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Status {
    /// Reports and returns the exit code.
    pub fn run(&self, fallback: &StorageFlags) -> Result<i32> {
        let report = report(&absolute(&self.pgdata), fallback)?;
        if self.json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        Ok(report.exit_code)
    }
}
