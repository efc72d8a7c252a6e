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

use super::Run;
use crate::config::{absolute, credentials_margin};
use crate::context::Context;
use crate::error::Result;
use crate::fsutil::write_atomically;
use crate::inspect::status::{add_server_facts, prometheus, render, report};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write Prometheus textfile-collector metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Exit 19 when the credentials in use expire within this (30m, 1h, 2h) [default: 1h]
    #[arg(long, env = "WALFETCH_CREDENTIALS_MARGIN")]
    pub credentials_margin: Option<String>,
}

impl Run for Status {
    /// Reports; the exit code is the verdict's.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let pgdata = absolute(&self.pgdata);
        let mut report = report(&pgdata, &ctx.settings, credentials_margin(self.credentials_margin.as_deref())?)?;
        add_server_facts(&mut report, &pgdata, &ctx.settings)?;
        if self.json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        if let Some(path) = &self.prometheus {
            let text = prometheus(&report, &pgdata);
            write_atomically(path, |f| std::io::Write::write_all(f, text.as_bytes()), false)?;
        }
        Ok(ExitCode::from(report.exit_code))
    }
}
