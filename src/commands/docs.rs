//! `walfetch completions SHELL` and `walfetch manpage`: generated from the clap
//! definitions, so they never drift from the real options.

use std::io;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::{Error, ErrorKind, Result};

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct Completions {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

impl Completions {
    /// Prints the completion script.
    pub fn run(&self) -> Result<()> {
        clap_complete::generate(self.shell, &mut Cli::command(), "walfetch", &mut io::stdout());
        Ok(())
    }
}

/// Prints the man page (roff) to standard output.
pub fn manpage() -> Result<()> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut io::stdout())
        .map_err(|e| Error::new(ErrorKind::LocalIo, format!("writing the man page: {e}")))
}
