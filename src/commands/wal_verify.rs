//! `walfetch wal-verify`: for cron and monitors, is the archive whole
//! ([`crate::inspect::verify`])?
//!
//! Exit codes (distinct, most severe first): 5/6/3 storage unreadable (as every
//! command), 14 a backup is unrestorable, 12 required segments are missing, 13 the
//! archive is stale, 19 the credentials in use expire within the margin, 0 healthy.

use std::process::ExitCode;

use clap::Args;

use super::{ReportArgs, Run};
use crate::config::{parse_age, parse_size};
use crate::context::Context;
use crate::error::Result;
use crate::inspect::verify::{prometheus, render, verify, Options};

/// Options of `wal-verify`.
#[derive(Debug, Args)]
pub struct WalVerify {
    /// Require WAL from this segment on, instead of the oldest backup's start.
    #[arg(long, value_name = "SEGMENT")]
    pub from: Option<String>,
    /// WAL segment size: bytes, or with a unit (16MB, 64MiB, 1GB) [env: WALG_PG_WAL_SIZE in MB; default: read from an archived segment]
    #[arg(long)]
    pub wal_segment_size: Option<String>,
    /// Report the archive stale when its newest segment is older than this (90s, 15m, 2h, 1d).
    #[arg(long)]
    pub max_age: Option<String>,
    #[command(flatten)]
    pub report: ReportArgs,
}

impl Run for WalVerify {
    /// Verifies and prints; the exit code is the verdict's.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let opts = Options {
            from: self.from.clone(),
            segment_size: match &self.wal_segment_size {
                Some(flag) => Some(parse_size(flag)?),
                None => ctx.settings.wal_segment_size()?,
            },
            max_age: self.max_age.as_deref().map(parse_age).transpose()?,
            concurrency: ctx.settings.listing_concurrency(),
            credentials_margin: self.report.margin()?,
        };
        let report = verify(&ctx.archive()?, &opts)?;
        let text = render(&report);
        self.report.give(&report, &text, || prometheus(&report), report.exit_code)
    }
}
