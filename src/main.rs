//! The walfetch binary: parse the command line, resolve the settings, set up logs, run
//! one command, and turn its outcome into an exit code (see README, "Exit codes").

use std::process::ExitCode;

use clap::Parser;
use walfetch::cli::Cli;
use walfetch::config::Settings;
use walfetch::context::Context;
use walfetch::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::resolve(cli.storage.flags());
    logging::init(
        cli.log_level.as_deref().or(settings.log_level.as_deref()).unwrap_or("info"),
        cli.log_format,
    );
    for name in &settings.gpg_key_ids {
        tracing::warn!("{name} is set: walfetch reads GPG-encrypted objects only after they are decrypted (gpg -d), and reports encrypted ones as such");
    }
    let (name, command) = cli.command.runner();
    match command.run(&Context::new(settings)) {
        Ok(code) => code,
        Err(err) => {
            let code = command.exit_code(&err);
            if code == 1 {
                // "Not in the archive" is routine for history files and the end of WAL.
                tracing::info!("{err}");
            } else {
                eprintln!("walfetch {name}: error ({}): {err}", err.kind().label());
            }
            ExitCode::from(code)
        }
    }
}
