//! `walfetch status PGDATA`: why a standby is (or is not) advancing, in one command
//! ([`crate::inspect::status`]).
//!
//! Exit codes: 0 healthy (caught up or catching up), 15 blocked (a gap, a refused or
//! failing segment), 16 misconfigured, 17 archive unreachable, 18 credentials rejected.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Run;
use crate::config::absolute;
use crate::context::Context;
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

impl Run for Status {
    /// Reports; the exit code is the verdict's.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let report = report(&absolute(&self.pgdata), &ctx.settings)?;
        if self.json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        Ok(ExitCode::from(report.exit_code))
    }
}
