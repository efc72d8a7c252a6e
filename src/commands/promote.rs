//! `walfetch promote PGDATA`: the cut-over with proof ([`crate::cutover::promote`]).
//!
//! Exit codes: 0 promoted, 15 not promoted (something blocks replay, or the wait timed
//! out), and the usual ones for errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Run;
use crate::config::{absolute, parse_age};
use crate::context::Context;
use crate::cutover::promote::{promote, render, Options, Outcome};
use crate::error::{exit, Error, ErrorKind, Result};
use crate::pg::db::connect_datadir_when_ready;
use crate::wal::name::Lsn;

/// Options of `promote`.
#[derive(Debug, Args)]
pub struct Promote {
    /// The standby's data directory; its running server is found through postmaster.pid (PGHOST/PGPORT may override, but it must be this directory's server).
    pub pgdata: PathBuf,
    /// Promote once the standby has replayed this LSN (the source's final position).
    #[arg(long)]
    pub lsn: Option<String>,
    /// Without --lsn: promote once everything archived is replayed and no new segment came for this long.
    #[arg(long, default_value = "2m")]
    pub quiet: String,
    /// Give up, promoting nothing, after this long.
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Run for Promote {
    /// Waits, promotes, prints the sign-off.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let opts = Options {
            lsn: self
                .lsn
                .as_deref()
                .map(|l| Lsn::parse(l).ok_or_else(|| Error::new(ErrorKind::Config, format!("--lsn '{l}' is not an LSN (like 0/3000148)"))))
                .transpose()?,
            quiet: parse_age(&self.quiet)?,
            timeout: parse_age(&self.timeout)?,
            // Each look lists the archive: every 2 s is prompt enough for a cut-over.
            poll: Duration::from_secs(2),
        };
        let json = self.json;
        let mut say = |line: &str| {
            if !json {
                crate::outln!("{line}");
            }
        };
        let pgdata = absolute(&self.pgdata);
        let db = connect_datadir_when_ready(&pgdata, &ctx.settings.libpq, "walfetch promote", opts.timeout, &mut say)?;
        match promote(&pgdata, &ctx.settings, &db, &opts, &mut say)? {
            Outcome::Promoted(p) => {
                if json {
                    crate::output::json(&p)?;
                } else {
                    crate::outln!("{}", render(&p));
                }
                Ok(ExitCode::SUCCESS)
            }
            Outcome::Refused(why) => {
                if json {
                    crate::output::json(&serde_json::json!({ "promoted": false, "reason": why }))?;
                } else {
                    crate::outln!("{why}");
                }
                Ok(ExitCode::from(exit::BLOCKED))
            }
        }
    }
}
