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

use std::process::ExitCode;

use crate::context::Context;
use crate::error::Error;

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
