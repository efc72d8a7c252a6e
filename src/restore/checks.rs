//! Checks of a restored directory against the backup's own description, and the one
//! file a relocation rewrites.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::layout::backup::Backup;
use crate::layout::files_metadata;
use crate::restore::extract::{sanitize, Target};
use crate::restore::tablespace;
use crate::storage::ObjectReader;
use crate::wal::name::Lsn;

/// Checks every file `files_metadata.json` lists against the target: it must have
/// been extracted, and where the entry records a size (walfetch's writer does), have
/// exactly that many bytes. Files marked skipped are checked only in a chain restore
/// (`skipped_too`: a delta's unchanged files come from the layers below it).
pub fn check_files_extracted(reader: ObjectReader, object: &str, target: &Target, skipped_too: bool) -> Result<()> {
    let (mut missing, mut wrong_size) = (Examples::default(), Examples::default());
    files_metadata::read(reader, object, &mut |name, entry| {
        if entry.is_skipped && !skipped_too {
            return Ok(());
        }
        let parts = sanitize(name.as_bytes(), object)?;
        let rel = parts.join("/");
        let path = target.path_of(&rel);
        match fs::symlink_metadata(&path).or_else(|_| fs::metadata(&path)) {
            Err(_) => missing.add(rel),
            Ok(meta) => match entry.size {
                Some(listed) if meta.is_file() && meta.len() != listed => {
                    wrong_size.add(format!("{rel}: {} bytes, listed {listed}", meta.len()))
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    missing.fail(|n, e| format!("{object}: {n} listed files are in no partition (e.g. {e}); the backup is incomplete"))?;
    wrong_size.fail(|n, e| format!("{object}: {n} restored files differ in size from the listing (e.g. {e}); the backup is inconsistent"))
}

/// Checks the restored `backup_label` against the backup's sentinel: the start location
/// must be the backup's start, and the checkpoint lie between its start and its finish.
/// A directory without one (a `backup_label.old` does not count: PostgreSQL ignores it)
/// would start from pg_control's checkpoint, which is not where this backup's WAL replay
/// must begin: PostgreSQL panics ("could not locate a valid checkpoint record") or, worse,
/// starts inconsistent.
pub fn check_backup_label(target: &Target, backup: &Backup) -> Result<()> {
    let name = &backup.name.name;
    let path = target.root().join("backup_label");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && shut_down_cleanly(&target.path_of("global/pg_control")) => {
            // An offline backup (WAL-E's --while-offline): a cleanly shut down cluster
            // starts from pg_control's own checkpoint, and has no label.
            tracing::info!(backup = %name, "no backup_label, and pg_control says the cluster was shut down cleanly: an offline backup");
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let old = if target.root().join("backup_label.old").exists() {
                " (only a backup_label.old, which PostgreSQL ignores)"
            } else {
                ""
            };
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{name}: the restore has no backup_label{old}; PostgreSQL could not find where to begin replay, so the backup is unusable"),
            ));
        }
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|rest| Lsn::parse(rest.split_whitespace().next().unwrap_or("")))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: no valid '{label}' line; the backup's label is damaged", path.display()),
                )
            })
    };
    let start = field("START WAL LOCATION: ")?;
    let checkpoint = field("CHECKPOINT LOCATION: ")?;
    let disagree = |what: String| {
        Err(Error::new(
            ErrorKind::Corrupt,
            format!("{name}: backup_label {what}; the label is not this backup's, and PostgreSQL would replay from the wrong place"),
        ))
    };
    if let Some(expected) = backup.start() {
        if expected != start {
            return disagree(format!("starts at {start}, the sentinel at {expected}"));
        }
    }
    if checkpoint < start {
        return disagree(format!("names checkpoint {checkpoint}, before its own start {start}"));
    }
    if let Some(finish) = backup.finish() {
        if checkpoint > finish {
            return disagree(format!("names checkpoint {checkpoint}, after the backup's finish {finish}"));
        }
    }
    Ok(())
}

/// Whether the `pg_control` at `path` says the cluster was shut down cleanly (state
/// "shut down", or "shut down in recovery"). The state is the `int32` after the system
/// identifier and two version words, at offset 16 in every version walfetch supports.
fn shut_down_cleanly(path: &std::path::Path) -> bool {
    const DB_SHUTDOWNED: i32 = 1;
    const DB_SHUTDOWNED_IN_RECOVERY: i32 = 2;
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let state = bytes.get(16..20).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    matches!(state, Some(DB_SHUTDOWNED | DB_SHUTDOWNED_IN_RECOVERY))
}

/// A problem found while walking a listing: how often, and the first few cases.
#[derive(Default)]
struct Examples {
    count: u64,
    shown: Vec<String>,
}

impl Examples {
    fn add(&mut self, case: String) {
        self.count += 1;
        if self.shown.len() < 5 {
            self.shown.push(case);
        }
    }

    /// A corrupt-backup error with the message `describe(count, examples)`, if any case was found.
    fn fail(&self, describe: impl FnOnce(u64, String) -> String) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        Err(Error::new(ErrorKind::Corrupt, describe(self.count, self.shown.join("; "))))
    }
}

/// Rewrites `tablespace_map` (if the backup has one) to the relocated paths.
pub fn rewrite_tablespace_map(target: &Target) -> Result<()> {
    let path = target.root().join("tablespace_map");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let new = tablespace::rewrite_map(
        &text,
        &target
            .tablespaces()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    fsutil::write_atomically(&path, |f| io::Write::write_all(f, new.as_bytes()), false)
}
