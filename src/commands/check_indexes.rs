//! `walfetch check-indexes PGDATA`: after a move to this machine, check with amcheck the
//! indexes that depend on a collation whose version changed ([`crate::cutover::indexes`]).
//!
//! Exit codes: 0 every index checked is in order, 22 some must be rebuilt (each printed
//! with its REINDEX), 23 nothing wrong found but some could not be checked (no amcheck, a
//! standby, a method amcheck cannot check), 20 no server runs for PGDATA, 21 the server
//! reached is another.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Run;
use crate::config::{absolute, cores};
use crate::context::Context;
use crate::cutover::indexes::{check, Options, Report};
use crate::error::Result;

/// Options of `check-indexes`.
#[derive(Debug, Args)]
pub struct CheckIndexes {
    /// The data directory; its running server is found through postmaster.pid (PGHOST/PGPORT may override, but it must be this directory's server).
    pub pgdata: PathBuf,
    /// Indexes checked at once, each on its own connection [default: the cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Check every btree index, not only those on collations whose version changed.
    #[arg(long)]
    pub all: bool,
    /// Create the amcheck extension where it is missing (dropped again after the check); never on a standby.
    #[arg(long)]
    pub install_amcheck: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Run for CheckIndexes {
    /// Checks, prints each index to rebuild with its REINDEX, and a summary.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let opts = Options {
            jobs: self.jobs.filter(|j| *j > 0).unwrap_or_else(cores),
            all: self.all,
            install_amcheck: self.install_amcheck,
        };
        let json = self.json;
        let report = check(&absolute(&self.pgdata), &ctx.settings.libpq, &opts, &mut |line| {
            if !json {
                crate::outln!("{line}");
            }
        })?;
        if json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        Ok(ExitCode::from(report.exit_code))
    }
}

/// The findings, for people.
fn render(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.rebuild {
        out.push_str(&format!(
            "REBUILD {} on {} (database {}): {}\n  {}\n",
            f.index, f.table, f.database, f.detail, f.reindex
        ));
    }
    for f in &r.unchecked {
        out.push_str(&format!("NOT CHECKED {} (database {}): {}\n", f.index, f.database, f.detail));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!(
        "{}: {} indexes in order, {} to rebuild, {} not checked{}\n",
        r.verdict,
        r.good,
        r.rebuild.len(),
        r.unchecked.len(),
        if r.in_recovery {
            " (a standby: check again after promotion)"
        } else {
            ""
        }
    ));
    out
}
