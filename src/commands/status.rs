//! `walfetch status PGDATA`: why a standby is (or is not) advancing, in one command
//! ([`crate::inspect::status`]).
//!
//! Exit codes: 0 healthy (caught up or catching up), 15 blocked (a gap, a refused or
//! failing segment), 16 misconfigured, 17 archive unreachable, 18 credentials rejected,
//! 19 the credentials in use expire within the margin (nothing worse wrong), 21 the
//! server PGHOST/PGPORT reach is not this data directory's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{ReportArgs, Run};
use crate::config::absolute;
use crate::context::Context;
use crate::error::Result;
use crate::inspect::status::{add_server_facts, prometheus, render, report};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    #[command(flatten)]
    pub report: ReportArgs,
}

impl Run for Status {
    /// Reports; the exit code is the verdict's.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let pgdata = absolute(&self.pgdata);
        let mut report = report(&pgdata, &ctx.settings, self.report.margin()?)?;
        add_server_facts(&mut report, &pgdata, &ctx.settings)?;
        let text = render(&report);
        self.report.give(&report, &text, || prometheus(&report, &pgdata), report.exit_code)
    }
}
