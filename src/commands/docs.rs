//! `walfetch completions SHELL` and `walfetch manpage`: generated from the clap
//! definitions, so they never drift from the real options.

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
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "walfetch", &mut script);
        crate::output::write(&script);
        Ok(())
    }
}

/// Prints the man page (roff) to standard output.
pub fn manpage() -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| Error::new(ErrorKind::LocalIo, format!("writing the man page: {e}")))?;
    crate::output::write(&page);
    Ok(())
}
