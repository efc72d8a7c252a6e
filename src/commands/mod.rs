//! One file per user-facing command: its options as a clap struct, and a short
//! [`Run::run`] that calls into the library with the [`Context`].

pub mod backup_fetch;
pub mod backup_list;
pub mod backup_push;
pub mod check;
pub mod check_indexes;
pub mod follow;
pub mod promote;
pub mod status;
pub mod wal_fetch;
pub mod wal_push;
pub mod wal_show;
pub mod wal_verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::credentials_margin;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;

/// A command: options that run in a context.
pub trait Run {
    /// Runs. `Ok` carries the exit code of a successful run (not 0 only for a verdict,
    /// such as wal-verify's gaps or status's blocked standby).
    fn run(&self, ctx: &Context) -> crate::error::Result<ExitCode>;

    /// The exit code of a failure: its kind's code, unless the command knows better
    /// (wal-fetch's depend on how PostgreSQL reads them).
    fn exit_code(&self, err: &Error) -> u8 {
        err.kind().exit_code()
    }
}

/// How a report is given: the options `status` and `wal-verify` share.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write Prometheus textfile-collector metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Exit 19 when the credentials in use expire within this (30m, 1h, 2h) [default: 1h]
    #[arg(long, env = "WALFETCH_CREDENTIALS_MARGIN")]
    pub credentials_margin: Option<String>,
}

impl ReportArgs {
    /// The credentials margin asked for, or the default.
    pub fn margin(&self) -> Result<Duration> {
        credentials_margin(self.credentials_margin.as_deref())
    }

    /// Prints `report` (as JSON, or as `text`), writes its `metrics` to the Prometheus
    /// file when one is asked for, and ends with the verdict's exit code `code`.
    pub fn give(&self, report: &impl serde::Serialize, text: &str, metrics: impl FnOnce() -> String, code: u8) -> Result<ExitCode> {
        if self.json {
            crate::output::json(report)?;
        } else {
            crate::out!("{text}");
        }
        if let Some(path) = &self.prometheus {
            let metrics = metrics();
            write_atomically(path, |f| std::io::Write::write_all(f, metrics.as_bytes()), false)?;
        }
        Ok(ExitCode::from(code))
    }
}
