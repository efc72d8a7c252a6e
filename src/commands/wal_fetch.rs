//! `walfetch wal-fetch %f %p`: PostgreSQL's restore_command.
//!
//! Exit codes are what make this safe. PostgreSQL treats exit codes 1–125 as "not
//! available" (a standby retries; archive recovery ends and promotes), and 126 or more
//! as fatal. So:
//! - 0: the file was restored;
//! - 1: the archive definitely does not have it (S3's `NoSuchKey` under every codec, or a
//!   missing file in an existing `wal_005/`, in an archive that holds objects);
//! - any other failure in standby mode: its kind's code (3–11), below 126, so the
//!   standby logs it and retries;
//! - any other failure in archive recovery (or outside a data directory): 128 + its
//!   kind's code, so PostgreSQL stops instead of promoting early at the wrong point.
//!
//! The work is [`crate::standby::handover::serve`]: spool or direct download, the gate every
//! segment passes, the atomic rename.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::Run;
use crate::context::Context;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::pg::conf::RecoveryState;
use crate::standby::handover::{record_call, serve, Request, Source};
use crate::standby::Standby;

/// How a failure is reported to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Decide from the data directory: `standby.signal` or `standby_mode = on` means standby.
    Auto,
    /// Failures exit below 126: PostgreSQL retries.
    Standby,
    /// Failures exit at 128 or above: PostgreSQL stops recovery.
    Recovery,
}

/// Options of `wal-fetch`.
#[derive(Debug, Args)]
pub struct WalFetch {
    /// WAL file name PostgreSQL asks for (%f).
    pub wal_name: String,
    /// Where to put it (%p), relative to the data directory.
    pub destination: PathBuf,
    /// How failures are reported.
    #[arg(long, value_enum, default_value = "auto", env = "WALFETCH_RECOVERY_MODE")]
    pub mode: Mode,
}

impl WalFetch {
    /// Whether failures should let PostgreSQL retry (standby) or stop it (recovery).
    /// Outside a data directory there is no standby to retry: failures are fatal.
    pub fn effective_mode(&self) -> Mode {
        if self.mode != Mode::Auto {
            return self.mode;
        }
        match Standby::of_destination(&self.destination, None).map(|s| s.recovery_state()) {
            Some(RecoveryState::Standby) => Mode::Standby,
            _ => Mode::Recovery,
        }
    }
}

impl Run for WalFetch {
    /// Restores the file, and records how the call ended for `walfetch status`.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let started = Instant::now();
        let standby = Standby::of_destination(&self.destination, ctx.settings.prefetch_dir.as_deref());
        let served = ctx.settings.storage().and_then(|settings| {
            let request = Request {
                name: &self.wal_name,
                destination: &self.destination,
                standby: standby.as_ref(),
                prefetch: ctx.settings.prefetch,
                segment_size: ctx.settings.wal_segment_size()?,
            };
            serve(&request, settings, &|| ctx.archive())
        });
        if let Some(standby) = &standby {
            let code = served.as_ref().map_or_else(|e| self.exit_code(e), |_| 0);
            record_call(standby, &self.wal_name, served.as_ref().map(|_| ()), code);
        }
        let served = served?;
        match served.source {
            Source::Spool => {
                tracing::info!(file = %self.wal_name, us = started.elapsed().as_micros() as u64, "restored from the prefetch spool")
            }
            Source::Archive(url) => {
                tracing::info!(file = %self.wal_name, object = %url, bytes = served.bytes, ms = started.elapsed().as_millis() as u64, "restored")
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// 1 for a proven absence; otherwise the kind's code where PostgreSQL retries, and
    /// 128 + that code where a failure must stop it (see the module doc).
    fn exit_code(&self, err: &Error) -> u8 {
        match (err.kind(), self.effective_mode()) {
            (ErrorKind::NotFound, _) => exit::ABSENT,
            (kind, Mode::Recovery) => exit::FATAL_OFFSET + kind.exit_code(),
            (kind, _) => kind.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fetch(mode: Mode, dest: &str) -> WalFetch {
        WalFetch {
            wal_name: "000000010000000000000001".into(),
            destination: dest.into(),
            mode,
        }
    }

    #[test]
    fn exit_codes_by_mode() {
        let nf = Error::new(ErrorKind::NotFound, "x");
        let net = Error::new(ErrorKind::Unreachable, "x");
        assert_eq!(fetch(Mode::Standby, "p").exit_code(&nf), 1);
        assert_eq!(fetch(Mode::Recovery, "p").exit_code(&nf), 1);
        assert_eq!(fetch(Mode::Standby, "p").exit_code(&net), 5);
        assert!(fetch(Mode::Recovery, "p").exit_code(&net) >= 126);
    }

    #[test]
    fn mode_follows_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pg_wal")).unwrap();
        fs::write(dir.path().join("PG_VERSION"), "11\n").unwrap();
        let dest = dir.path().join("pg_wal/RECOVERYXLOG");
        let f = fetch(Mode::Auto, dest.to_str().unwrap());
        assert_eq!(f.effective_mode(), Mode::Recovery);
        fs::write(dir.path().join("recovery.conf"), "standby_mode = 'on'\n").unwrap();
        assert_eq!(f.effective_mode(), Mode::Standby);
        fs::write(dir.path().join("recovery.conf"), "# standby_mode = 'on'\n").unwrap();
        assert_eq!(f.effective_mode(), Mode::Recovery);
        fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        fs::write(dir.path().join("standby.signal"), "").unwrap();
        assert_eq!(f.effective_mode(), Mode::Standby);
        // Outside a data directory nothing retries: failures are fatal.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("standby.signal"), "").unwrap();
        assert_eq!(
            fetch(Mode::Auto, elsewhere.join("file").to_str().unwrap()).effective_mode(),
            Mode::Recovery
        );
    }
}
