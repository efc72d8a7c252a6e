//! The walfetch binary: parse the command line, set up logs, run one command, and turn
//! its outcome into an exit code (see README, "Exit codes").

use std::process::ExitCode;

use clap::Parser;
use walfetch::cli::{Cli, Command};
use walfetch::config::StorageSettings;
use walfetch::error::Result;
use walfetch::{logging, storage};

/// Runs the command; `Ok` carries the exit code of a successful run (non-zero only for
/// wal-verify's findings).
fn run(cli: &Cli) -> Result<i32> {
    for name in ["WALE_GPG_KEY_ID", "WALG_GPG_KEY_ID"] {
        if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
            tracing::warn!("{name} is set: walfetch reads GPG-encrypted objects only after they are decrypted (gpg -d), and reports encrypted ones as such");
        }
    }
    let open = || -> Result<_> {
        let settings = StorageSettings::resolve(&cli.storage.flags())?;
        let storage = storage::open(&settings)?;
        Ok((settings, storage))
    };
    match &cli.command {
        // The archive comes from the standby's restore_command; flags and env are the fallback.
        Command::Status(c) => c.run(&cli.storage.flags()),
        Command::Completions(c) => c.run().map(|_| 0),
        Command::Manpage => walfetch::commands::docs::manpage().map(|_| 0),
        Command::BackupList(c) => c.run(&open()?.1).map(|_| 0),
        Command::BackupFetch(c) => {
            let (settings, storage) = open()?;
            c.run(&storage, &settings).map(|_| 0)
        }
        Command::WalFetch(c) => c
            .run(
                &StorageSettings::resolve(&cli.storage.flags()),
                walfetch::commands::wal_fetch::prefetch_enabled(),
                walfetch::commands::wal_fetch::expected_segment_size(),
            )
            .map(|_| 0),
        Command::Follow(c) => c
            .run(
                &StorageSettings::resolve(&cli.storage.flags())?,
                walfetch::commands::wal_fetch::expected_segment_size(),
            )
            .map(|_| 0),
        Command::WalPush(c) => c.run(&open()?.1).map(|_| 0),
        Command::BackupPush(c) => c.run(&open()?.1).map(|_| 0),
        Command::WalVerify(c) => c.run(&open()?.1),
        Command::WalShow(c) => c.run(&open()?.1).map(|_| 0),
        Command::Check(c) => {
            let (settings, storage) = open()?;
            c.run(&storage, &settings).map(|_| 0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&logging::level(cli.log_level.as_deref()), cli.log_format);
    match run(&cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            let (name, code) = match &cli.command {
                Command::WalFetch(c) => ("wal-fetch", c.exit_code(&err)),
                Command::Follow(_) => ("follow", err.kind().exit_code()),
                Command::BackupList(_) => ("backup-list", err.kind().exit_code()),
                Command::BackupFetch(_) => ("backup-fetch", err.kind().exit_code()),
                Command::WalPush(_) => ("wal-push", err.kind().exit_code()),
                Command::BackupPush(_) => ("backup-push", err.kind().exit_code()),
                Command::WalVerify(_) => ("wal-verify", err.kind().exit_code()),
                Command::WalShow(_) => ("wal-show", err.kind().exit_code()),
                Command::Status(_) => ("status", err.kind().exit_code()),
                Command::Check(_) => ("check", err.kind().exit_code()),
                Command::Completions(_) => ("completions", err.kind().exit_code()),
                Command::Manpage => ("manpage", err.kind().exit_code()),
            };
            if code == 1 {
                // "Not in the archive" is routine for history files and the end of WAL.
                tracing::info!("{err}");
            } else {
                eprintln!("walfetch {name}: error ({}): {err}", err.kind().label());
            }
            ExitCode::from(code.clamp(0, 255) as u8)
        }
    }
}
