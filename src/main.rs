//! The walfetch binary: parse the command line, resolve the settings, set up logs, run
//! one command, and turn its outcome into an exit code (see README, "Exit codes").
//!
//! Exit codes are read by PostgreSQL when walfetch is its restore_command, where 1–125
//! mean "not in the archive" (archive recovery then ends and promotes). So nothing may
//! leave `wal-fetch` with a code walfetch did not choose: a command line that does not
//! parse (clap's 2) and a panic (Rust's 101) exit as the error they are, 128 + code in
//! archive recovery.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use walfetch::cli::Cli;
use walfetch::config::Settings;
use walfetch::context::Context;
use walfetch::error::{exit, Error, ErrorKind};
use walfetch::logging;
use walfetch::pg::conf::{recovery_state, RecoveryState};
use walfetch::pg::datadir::pg_major;

/// One line on standard error (never a panic, even when standard error is closed).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A command line that does not parse. For `wal-fetch` the code must not read "absent":
/// 3 when the current directory (PostgreSQL's data directory) is a standby, 131
/// otherwise. Anything else exits as clap says (2, or 0 for help and version).
fn bad_command_line(err: clap::Error) -> ExitCode {
    if !err.use_stderr() || !std::env::args().any(|a| a == "wal-fetch") {
        err.exit();
    }
    let cause = err.to_string();
    let cause = cause.lines().next().unwrap_or("").trim_start_matches("error: ");
    say(&format!(
        "walfetch wal-fetch: error (config): the command line does not parse: {cause}"
    ));
    let here = std::path::Path::new(".");
    let code = ErrorKind::Config.exit_code();
    match recovery_state(here, pg_major(here).ok()) {
        RecoveryState::Standby => ExitCode::from(code),
        _ => ExitCode::from(exit::FATAL_OFFSET + code),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return bad_command_line(err),
    };
    let settings = Settings::resolve(cli.storage.flags());
    logging::init(
        cli.log_level.as_deref().or(settings.log_level.as_deref()).unwrap_or("info"),
        cli.log_format,
    );
    let (name, command) = cli.command.runner();
    // A panic is a bug: one line, and the exit code of an internal error for this command.
    let panic_code = command.exit_code(&Error::new(ErrorKind::LocalIo, "internal error"));
    std::panic::set_hook(Box::new(move |info| {
        say(&format!(
            "walfetch {name}: internal error (a bug, please report it): {}",
            info.to_string().replace('\n', " ")
        ));
        std::process::exit(i32::from(panic_code));
    }));
    match command.run(&Context::new(settings)) {
        Ok(code) => code,
        Err(err) => {
            let code = command.exit_code(&err);
            if code == 1 {
                // "Not in the archive" is routine for history files and the end of WAL.
                tracing::info!("{err}");
            } else {
                say(&format!("walfetch {name}: error ({}): {err}", err.kind().label()));
            }
            ExitCode::from(code)
        }
    }
}
