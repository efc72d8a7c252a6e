//! `walfetch check`: can this machine use the archive ([`crate::inspect::check`])?

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Run;
use crate::context::Context;
use crate::error::Result;
use crate::inspect::check::check;

/// Options of `check`.
#[derive(Debug, Args)]
pub struct Check {
    /// Warn when the credentials expire within this many minutes.
    #[arg(long, default_value_t = 60)]
    pub expiry_warning_minutes: u64,
}

impl Run for Check {
    /// Runs the checks; the first failing one decides the exit code.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let warning = Duration::from_secs(self.expiry_warning_minutes * 60);
        check(ctx.archive()?.as_ref(), ctx.settings.storage()?, warning, &mut |line| {
            crate::outln!("{line}")
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
