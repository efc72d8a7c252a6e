//! Command-line definitions. Names follow wal-g's so the binaries can be swapped.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::commands::{self, Run};
use crate::config::StorageFlags;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::write_atomically;
use crate::logging::LogFormat;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "walfetch", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WALFETCH_COMMIT"), ")"))]
#[command(
    about = "Restore a PostgreSQL standby from a wal-g, WAL-E, pgBackRest or barman-cloud archive in S3 or a directory, keep it fed, and cut over"
)]
pub struct Cli {
    /// Storage options shared by every command.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Log level: error, warn, info, debug, trace [env: WALFETCH_LOG_LEVEL, WALG_LOG_LEVEL]
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the archive is. Each has several environment names (wal-g's, WAL-E's, AWS's),
/// resolved in [`crate::config`].
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Archive: s3://bucket/path, /dir or file:///dir [env: WALG_S3_PREFIX, WALE_S3_PREFIX, WALG_FILE_PREFIX, WALE_FILE_PREFIX]
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// S3 endpoint URL for S3-compatible servers [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_ENDPOINT, WALE_S3_ENDPOINT]
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// S3 region [env: AWS_REGION, AWS_DEFAULT_REGION]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Path-style S3 addressing [env: AWS_S3_FORCE_PATH_STYLE, or WALE_S3_ENDPOINT's +path]
    #[arg(long, global = true)]
    pub path_style: bool,
    /// The archive's format, walg, pgbackrest or barman [env: WALFETCH_FORMAT; default: recognised from what the location holds]
    #[arg(long, global = true)]
    pub format: Option<String>,
    /// pgBackRest's stanza [env: PGBACKREST_STANZA; default: the repository's only one]
    #[arg(long, global = true)]
    pub stanza: Option<String>,
    /// pgBackRest's configuration file: repo1-* options as pgBackRest reads them [env: PGBACKREST_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub pgbackrest_config: Option<std::path::PathBuf>,
    /// barman-cloud's server name, as barman-cloud-restore takes it (CloudNativePG: the cluster's name) [env: WALFETCH_BARMAN_SERVER; default: the location's only one]
    #[arg(long, global = true, value_name = "NAME")]
    pub barman_server: Option<String>,
}

impl StorageArgs {
    /// As plain flags for the settings resolver.
    pub fn flags(&self) -> StorageFlags {
        StorageFlags {
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            format: self.format.clone(),
            stanza: self.stanza.clone(),
            pgbackrest_config: self.pgbackrest_config.clone(),
            barman_server: self.barman_server.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the complete base backups in the archive, oldest first.
    BackupList(commands::backup_list::BackupList),
    /// Restore a base backup into a directory, optionally ready to start as a standby.
    BackupFetch(commands::backup_fetch::BackupFetch),
    /// Fetch one WAL file (the restore_command: walfetch wal-fetch %f %p).
    WalFetch(commands::wal_fetch::WalFetch),
    /// Keep the next segments downloaded and validated ahead of a standby (started on demand by wal-fetch).
    Follow(commands::follow::Follow),
    /// Archive one WAL file (the archive_command: walfetch wal-push %p).
    WalPush(commands::wal_push::WalPush),
    /// Take a base backup of a running cluster into the archive.
    BackupPush(commands::backup_push::BackupPush),
    /// Check the archive for missing WAL, unrestorable backups and staleness (for cron).
    WalVerify(commands::wal_verify::WalVerify),
    /// Show the archive's timelines, their segment ranges and gaps, and their backups.
    WalShow(commands::wal_show::WalShow),
    /// Why a standby is or is not advancing: its files tied to its archive.
    Status(commands::status::Status),
    /// Promote a standby once it has replayed the source's final LSN (or all the archive holds), with proof.
    Promote(commands::promote::Promote),
    /// Test access to the archive: list, read, credentials expiry, with fixes for common mistakes.
    Check(commands::check::Check),
    /// After the move: check with amcheck the indexes on collations whose version changed (prints the REINDEX to run).
    CheckIndexes(commands::check_indexes::CheckIndexes),
    /// Print a shell completion script.
    Completions(Completions),
    /// Print the man page (roff).
    Manpage(Manpage),
}

impl Command {
    /// The command's name (for messages) and the command to run.
    pub fn runner(&self) -> (&'static str, &dyn Run) {
        match self {
            Command::BackupList(c) => ("backup-list", c),
            Command::BackupFetch(c) => ("backup-fetch", c),
            Command::WalFetch(c) => ("wal-fetch", c),
            Command::Follow(c) => ("follow", c),
            Command::WalPush(c) => ("wal-push", c),
            Command::BackupPush(c) => ("backup-push", c),
            Command::WalVerify(c) => ("wal-verify", c),
            Command::WalShow(c) => ("wal-show", c),
            Command::Status(c) => ("status", c),
            Command::Promote(c) => ("promote", c),
            Command::Check(c) => ("check", c),
            Command::CheckIndexes(c) => ("check-indexes", c),
            Command::Completions(c) => ("completions", c),
            Command::Manpage(c) => ("manpage", c),
        }
    }
}

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct Completions {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

impl Run for Completions {
    /// Prints the completion script, generated from these definitions.
    fn run(&self, _: &Context) -> Result<ExitCode> {
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "walfetch", &mut script);
        crate::output::write(&script);
        Ok(ExitCode::SUCCESS)
    }
}

/// Options of `manpage`.
#[derive(Debug, Args)]
pub struct Manpage {
    /// Write every page into DIR instead (walfetch.1 and walfetch-<command>.1 for each
    /// command), as a package installs them.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Run for Manpage {
    /// Prints the man page (roff), or writes one per command into a directory; all
    /// generated from these definitions.
    fn run(&self, _: &Context) -> Result<ExitCode> {
        let cli = Cli::command();
        let Some(dir) = &self.dir else {
            crate::output::write(&render_page(cli)?);
            return Ok(ExitCode::SUCCESS);
        };
        let mut pages = vec![("walfetch.1".to_string(), cli.clone())];
        for sub in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = format!("walfetch-{}", sub.get_name());
            pages.push((format!("{name}.1"), sub.clone().name(name)));
        }
        for (file, command) in pages {
            let page = render_page(command)?;
            write_atomically(&dir.join(&file), |f| io::Write::write_all(f, &page), false)?;
            crate::outln!("{}", dir.join(file).display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The man page of `command` (roff).
fn render_page(command: clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e: io::Error| Error::new(ErrorKind::LocalIo, format!("writing the man page: {e}")))?;
    Ok(page)
}
