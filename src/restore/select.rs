//! Which backup a restore takes, and what must be true of it before the first byte: the
//! backup named (LATEST: the newest, or with `--resume` the one the directory was being
//! restored from), the WAL it needs to become consistent in the archive, and, for a
//! delta, every backup of its chain.

use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::Archive;
use crate::error::{Error, ErrorKind, Result};
use crate::inspect::verify::backup_wal;
use crate::layout::backup::Backup;
use crate::layout::plan::RestorePlan;
use crate::pg::server;
use crate::restore::journal::Identity;

/// What a restore asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// A backup name, or `LATEST`; `None` with a target: the newest that ends before it.
    pub backup: Option<String>,
    /// Where recovery stops, if it does.
    pub target: Option<crate::pg::recovery::RecoveryTarget>,
    /// The restore the target holds, when resuming.
    pub interrupted: Option<Identity>,
    /// Check the backup's WAL before downloading (off: `--no-wal-check`).
    pub wal_check: bool,
    /// Requests in flight when listing.
    pub concurrency: usize,
    /// `--pg-bin`: the bin directory of the server that will run the restored directory.
    pub pg_bin: Option<PathBuf>,
}

/// What a restore takes, in its format.
pub enum Chosen {
    /// A wal-g chain: a full backup alone, or a delta after the backups below it, oldest
    /// first.
    WalG(Vec<RestorePlan>),
    /// A pgBackRest backup and its manifest (which names the backups of its set it
    /// needs).
    PgBackRest(Box<(Backup, crate::pgbackrest::manifest::Manifest)>),
}

/// The backup to restore, each fact established said in one line through `say`.
pub fn select(archive: &Arc<dyn Archive>, req: &Request, say: &mut dyn FnMut(&str)) -> Result<Chosen> {
    let backup = match &req.target {
        // The target's own WAL check covers the backup's (from its start, and further).
        Some(t) if req.interrupted.is_none() => {
            crate::restore::target::choose(archive, req.backup.as_deref(), t, req.concurrency, say)?.backup
        }
        _ => pick(archive, req)?,
    };
    let req = &Request {
        wal_check: req.wal_check && (req.target.is_none() || req.interrupted.is_some()),
        ..req.clone()
    };
    if let Some(version) = backup.sentinel.pg_version {
        let major = server::major_of(version);
        if let Some(found) = server::find_for(req.pg_bin.as_deref(), &backup.name.name, major)? {
            server::check(&found, &backup.name.name, version)?;
        }
    }
    tracing::info!(backup = %backup.name.name, finish_lsn = ?backup.finish().map(|l| l.to_string()), "restoring");
    // A pgBackRest backup's manifest is read while the WAL is checked: on a distant
    // link each is a few round trips.
    let (checked, manifest) = std::thread::scope(|s| {
        let manifest = archive
            .pgbackrest()
            .map(|repo| s.spawn(|| crate::restore::pgbackrest::read_manifest(repo, &backup.name.name)));
        let checked = check_wal(archive, &backup, req);
        (
            checked,
            manifest.map(|m| {
                m.join()
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::LocalIo, "reading the manifest panicked")))
            }),
        )
    });
    if let Some(line) = checked? {
        say(&line);
    }
    if let Some(manifest) = manifest {
        return Ok(Chosen::PgBackRest(Box::new((backup, manifest?))));
    }
    let chain = archive.restore_plan(backup, req.concurrency)?;
    if chain.len() > 1 {
        let names: Vec<&str> = chain.iter().map(|p| p.name()).collect();
        say(&format!("delta chain, applied in this order: {}", names.join(", ")));
    }
    Ok(Chosen::WalG(chain))
}

/// The WAL check before the first byte: the line to say, or the refusal.
fn check_wal(archive: &Arc<dyn Archive>, backup: &Backup, req: &Request) -> Result<Option<String>> {
    if !req.wal_check {
        tracing::warn!(backup = %backup.name.name, "--no-wal-check: not checking that the archive holds the WAL this backup needs");
        return Ok(None);
    }
    let wal = backup_wal(archive, backup, req.concurrency)?;
    let line = wal.describe(&backup.name.name);
    if !wal.missing.is_empty() {
        return Err(Error::new(ErrorKind::Unrestorable, line));
    }
    Ok(Some(line))
}

/// The backup the request names.
fn pick(archive: &Arc<dyn Archive>, req: &Request) -> Result<Backup> {
    let named = req.backup.as_deref().unwrap_or("LATEST");
    if !named.eq_ignore_ascii_case("LATEST") {
        return archive.backup(named);
    }
    match &req.interrupted {
        Some(id) => {
            tracing::info!(backup = %id.backup, "LATEST with --resume: the backup this directory was being restored from");
            archive.backup(&id.backup)
        }
        None => archive.latest(req.concurrency),
    }
}
