//! `walfetch backup-fetch DIR LATEST|NAME`: restore a base backup: the plan from
//! [`crate::layout::plan`], its execution in [`crate::restore::fetch`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::Run;
use crate::config::absolute;
use crate::context::Context;
use crate::error::Result;
use crate::pg::recovery::{restore_command, RecoveryMode, RecoveryTarget, Target};
use crate::restore::fetch::{prepare_target, Options, Start};
use crate::restore::journal::identity_in;
use crate::restore::restore;
use crate::restore::select::{select, Request};
use crate::restore::tablespace::{parse_mapping, read_spec};

/// Options of `backup-fetch`.
#[derive(Debug, Args)]
pub struct BackupFetch {
    /// Directory to restore into (created if missing; must be empty unless --force or --resume).
    pub dir: PathBuf,
    /// Backup name, or LATEST for the backup with the highest finish LSN; with a --target-*, leave it out and walfetch takes the newest backup that ends before the target.
    #[arg(required_unless_present_any = ["target_time", "target_lsn", "target_xid", "target_name"])]
    pub backup: Option<String>,
    /// Where recovery stops.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Leave a standby behind: signal file / recovery.conf with walfetch as restore_command.
    #[arg(long, conflicts_with = "recovery")]
    pub standby: bool,
    /// Leave an archive recovery behind: replay all archived WAL, then promote.
    #[arg(long)]
    pub recovery: bool,
    /// Delete what DIR holds before restoring into it.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue an interrupted restore of the same backup in DIR: partitions it finished
    /// are checked, not fetched again (with LATEST: the backup DIR was being restored from).
    #[arg(long)]
    pub resume: bool,
    /// Connections receiving at once from S3, or partitions extracted at once from a directory [env: WALG_DOWNLOAD_CONCURRENCY; default: 10 from S3, the cores from a directory]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Restore tablespace OID into PATH instead of its source location (repeatable).
    #[arg(long = "tablespace-map", value_name = "OID=PATH")]
    pub tablespace_map: Vec<String>,
    /// Tablespace locations as wal-g's and WAL-E's --restore-spec JSON gives them ({"<oid>": {"loc": PATH, "link": "pg_tblspc/<oid>"}, "tablespaces": [...]})
    #[arg(long, value_name = "FILE")]
    pub restore_spec: Option<PathBuf>,
    /// Restore only these databases (and the system's): the others' files are not downloaded and are left as empty placeholders, to drop once promoted
    #[arg(long, value_name = "DB[,DB]", value_delimiter = ',')]
    pub restore_only: Vec<String>,
    /// Restore even if the archive lacks WAL the backup needs to become consistent
    /// (checked before the download; without that WAL the restore can never be started).
    #[arg(long)]
    pub no_wal_check: bool,
    /// Skip the final filesystem sync (faster; the restore is not crash-safe until synced).
    #[arg(long)]
    pub no_sync: bool,
    /// The bin directory of the PostgreSQL that will run the restore [default: postgres on PATH if of the backup's major, else /usr/lib/postgresql/<major>/bin or /usr/pgsql-<major>/bin]; a backup of another major is refused before any download
    #[arg(long, env = "WALFETCH_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// A recovery target: where replay stops, and what PostgreSQL does there.
#[derive(Debug, Args)]
#[group(multiple = true)]
pub struct TargetArgs {
    /// Recover to this time (2026-12-07 14:02:00+00): the newest backup that ends before it is taken
    #[arg(long, group = "point")]
    pub target_time: Option<String>,
    /// Recover to this LSN
    #[arg(long, group = "point")]
    pub target_lsn: Option<String>,
    /// Recover to the commit (or abort) of this transaction, found in the WAL
    #[arg(long, group = "point")]
    pub target_xid: Option<String>,
    /// Recover to this named restore point (pg_create_restore_point), found in the WAL
    #[arg(long, group = "point")]
    pub target_name: Option<String>,
    /// The timeline to recover along: latest, current or a number [default: latest]
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Stop just after the target (true) or just before it (false)
    #[arg(long, default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub target_inclusive: bool,
    /// What PostgreSQL does at the target: pause, promote or shutdown
    #[arg(long, default_value = "pause", value_parser = ["pause", "promote", "shutdown"])]
    pub target_action: String,
}

impl TargetArgs {
    /// The recovery target asked for, if any.
    pub fn target(&self) -> Option<RecoveryTarget> {
        let point = if let Some(t) = &self.target_time {
            Target::Time(t.clone())
        } else if let Some(l) = &self.target_lsn {
            Target::Lsn(l.clone())
        } else if let Some(x) = &self.target_xid {
            Target::Xid(x.clone())
        } else {
            Target::Name(self.target_name.clone()?)
        };
        Some(RecoveryTarget {
            target: point,
            inclusive: self.target_inclusive,
            timeline: self.target_timeline.clone(),
            action: self.target_action.clone(),
        })
    }
}

/// The tablespace relocations of `--tablespace-map` and `--restore-spec` together.
fn tablespace_map(mappings: &[String], spec: Option<&std::path::Path>) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = mappings.iter().map(|m| parse_mapping(m)).collect::<Result<_>>()?;
    if let Some(path) = spec {
        out.extend(read_spec(path)?);
    }
    Ok(out)
}

impl BackupFetch {
    /// The recovery to leave behind: as asked, and a target implies archive recovery.
    fn mode(&self) -> Option<RecoveryMode> {
        match (self.standby, self.recovery, self.target.target().is_some()) {
            (true, _, _) => Some(RecoveryMode::Standby),
            (_, true, _) | (_, _, true) => Some(RecoveryMode::Recovery),
            _ => None,
        }
    }
}

impl Run for BackupFetch {
    /// Restores, and says what to do next.
    fn run(&self, ctx: &Context) -> Result<ExitCode> {
        let started = Instant::now();
        let dir = absolute(&self.dir);
        let start = prepare_target(&dir, self.force, self.resume)?;
        let storage = ctx.storage()?;
        let parallelism = ctx.settings.restore_parallelism(self.concurrency, storage.is_remote());
        let request = Request {
            backup: self.backup.clone(),
            target: self.target.target(),
            interrupted: match start {
                Start::Resume => identity_in(&dir)?,
                Start::Fresh | Start::Replace => None,
            },
            wal_check: !self.no_wal_check,
            concurrency: ctx.settings.listing_concurrency(),
            pg_bin: self.pg_bin.clone(),
        };
        let archive = ctx.archive()?;
        let chosen = select(&archive, &request, &mut |line| crate::outln!("{line}"))?;
        let recovery = match self.mode() {
            Some(mode) => Some((mode, restore_command(&ctx.settings.storage()?.to_flags())?)),
            None => None,
        };
        let opts = Options {
            parallelism,
            part_size: ctx.settings.storage()?.tuning.range_part_size,
            tablespace_map: tablespace_map(&self.tablespace_map, self.restore_spec.as_deref())?,
            restore_only: self.restore_only.clone(),
            recovery,
            target: self.target.target(),
            sync: !self.no_sync,
        };
        let (summary, name) = restore(&archive, &chosen, &dir, &opts, start)?;
        crate::outln!("{}", summary.line(&name, &dir, start == Start::Resume, started.elapsed()));
        for line in &summary.written {
            crate::outln!("wrote {line}");
        }
        if let Some(line) = &summary.restore_only {
            crate::outln!("{line}");
        }
        if archive.keys().any() && self.mode().is_some() {
            crate::outln!(
                "note: the restore_command carries no key: give the server the archive's key in its environment ({}), as it has the credentials",
                archive.keys().reader_settings()
            );
        }
        if !summary.missing_config.is_empty() && self.mode().is_none() {
            crate::outln!(
                "note: the backup has no {} (WAL-E leaves them out); add your own, or re-run with --standby / --recovery for a minimal working set",
                summary.missing_config.join(", ")
            );
        }
        match self.mode() {
            Some(_) => crate::outln!("next: pg_ctl -D {} start   (as the user that owns it)", dir.display()),
            None => crate::outln!(
                "next: configure recovery (or re-run with --standby / --recovery), then pg_ctl -D {} start",
                dir.display()
            ),
        }
        Ok(ExitCode::SUCCESS)
    }
}
