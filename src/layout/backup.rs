//! Base backups in an archive: names, listing, and which one `LATEST` means.
//!
//! `LATEST` is the backup with the highest finish LSN, then the latest finish time, both
//! read from the sentinels; the storage modification time is used only to break a tie
//! between backups that record neither. wal-g sorts by modification time alone, which
//! picks the wrong backup after objects are copied or re-uploaded (wal-g #694, #1770).

use std::sync::Arc;
use std::thread;

use serde::Serialize;

use super::sentinel::Sentinel;
use super::{sentinel_key, BASEBACKUPS, SENTINEL_SUFFIX};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{ObjectMeta, Storage};
use crate::wal::name::{Lsn, Segment};

/// What a backup's name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// The full name (`base_000000010000000000000004`).
    pub name: String,
    /// The segment in the name: where the backup's WAL starts.
    pub start_segment: Segment,
    /// Parent named in a delta backup's suffix (`_D_<segment>`).
    pub delta_suffix: Option<String>,
    /// WAL-E's decimal byte offset of the start LSN (`_00000040`).
    pub wale_offset: Option<u64>,
}

impl BackupName {
    /// Parses `base_<24 hex>[_D_<24 hex>...][_<8 digits>]` (wal-g names a delta by its
    /// parent's segment, walrus by its parent's whole name, so a delta of a delta has
    /// two `_D_` parts there).
    pub fn parse(name: &str) -> Option<BackupName> {
        let rest = name.strip_prefix("base_")?;
        let start_segment = Segment::parse(rest.get(..24)?)?;
        let mut rest = &rest[24..];
        let mut delta_suffix = None;
        while let Some(d) = rest.strip_prefix("_D_") {
            Segment::parse(d.get(..24)?)?;
            delta_suffix.get_or_insert_with(|| d[..24].to_string());
            rest = &d[24..];
        }
        let mut wale_offset = None;
        if let Some(off) = rest.strip_prefix('_') {
            if off.len() != 8 || !off.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            wale_offset = off.parse().ok();
            rest = "";
        }
        rest.is_empty().then(|| BackupName {
            name: name.to_string(),
            start_segment,
            delta_suffix,
            wale_offset,
        })
    }

    /// True for WAL-E's `base_<segment>_<offset>` names.
    pub fn is_wale(&self) -> bool {
        self.wale_offset.is_some()
    }
}

/// A complete backup: its name, sentinel and sentinel object.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Parsed name.
    pub name: BackupName,
    /// Parsed sentinel.
    pub sentinel: Sentinel,
    /// The sentinel object as listed.
    pub object: ObjectMeta,
}

/// One row of `backup-list --json`.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    /// Backup name.
    pub name: String,
    /// Timeline of the start segment.
    pub timeline: u32,
    /// Start LSN (`X/Y`).
    pub start_lsn: Option<String>,
    /// Finish LSN (`X/Y`).
    pub finish_lsn: Option<String>,
    /// Finish time (RFC 3339) from the sentinel.
    pub finish_time: Option<String>,
    /// `server_version_num` of the source.
    pub pg_version: Option<u64>,
    /// System identifier of the source cluster.
    pub system_identifier: Option<u64>,
    /// Uncompressed size in bytes.
    pub uncompressed_size: Option<u64>,
    /// Compressed size in bytes.
    pub compressed_size: Option<u64>,
    /// `full` or `delta` (pgBackRest: `full`, `diff`, `incr`).
    pub kind: String,
    /// Parent of a delta backup.
    pub delta_from: Option<String>,
    /// Protected from deletion.
    pub is_permanent: bool,
    /// Host of the source.
    pub hostname: Option<String>,
}

impl Backup {
    /// The finish LSN, from the sentinel.
    pub fn finish(&self) -> Option<Lsn> {
        self.sentinel.finish()
    }

    /// The start LSN: the sentinel's, or WAL-E's name segment plus offset.
    pub fn start(&self) -> Option<Lsn> {
        if let Some(l) = self.sentinel.lsn {
            return Some(Lsn(l));
        }
        let base = self.name.start_segment.start_lsn(16 << 20)?;
        Some(Lsn(base.0 + self.name.wale_offset?))
    }

    /// The summary printed by `backup-list`.
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            name: self.name.name.clone(),
            timeline: self.name.start_segment.timeline,
            start_lsn: self.start().map(|l| l.to_string()),
            finish_lsn: self.finish().map(|l| l.to_string()),
            finish_time: self.sentinel.finish_time.clone(),
            pg_version: self.sentinel.pg_version,
            system_identifier: self.sentinel.system_identifier,
            uncompressed_size: self.sentinel.uncompressed_size,
            compressed_size: self.sentinel.compressed_size,
            kind: self
                .sentinel
                .kind
                .clone()
                .unwrap_or_else(|| if self.sentinel.delta_from.is_some() { "delta" } else { "full" }.to_string()),
            delta_from: self.sentinel.delta_from.clone(),
            is_permanent: self.sentinel.is_permanent.unwrap_or(false),
            hostname: self.sentinel.hostname.clone(),
        }
    }
}

/// Reads one backup's sentinel.
pub fn read_backup(storage: &dyn Storage, name: &str) -> Result<Backup> {
    let parsed = BackupName::parse(name).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("'{name}' is not a backup name (expected base_<24 hex digits>…, or LATEST)"),
        )
    })?;
    let key = sentinel_key(name);
    let object = format!("{}/{key}", storage.describe());
    let reader = storage.open(&key).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::new(
            ErrorKind::NotFound,
            format!(
                "backup {name} not found in {} (no {key}); run backup-list to see what exists",
                storage.describe()
            ),
        ),
        _ => e,
    })?;
    let sentinel = Sentinel::read(reader, &object)?;
    let size = storage.stat(&key)?.unwrap_or(0);
    Ok(Backup {
        name: parsed,
        sentinel,
        object: ObjectMeta { key, size, modified: None },
    })
}

/// Lists every complete backup (one with a sentinel), reading sentinels in parallel.
/// Unreadable sentinels are reported and skipped, never fatal for the listing.
pub fn list_backups(storage: &Arc<dyn Storage>, concurrency: usize) -> Result<Vec<Backup>> {
    let mut found: Vec<(BackupName, ObjectMeta)> = Vec::new();
    storage.list(BASEBACKUPS, false, &mut |page| {
        for obj in page {
            let Some(name) = obj.key.strip_prefix(BASEBACKUPS).and_then(|k| k.strip_suffix(SENTINEL_SUFFIX)) else {
                continue;
            };
            match BackupName::parse(name) {
                Some(parsed) => found.push((parsed, obj)),
                None => tracing::warn!(object = %obj.key, "ignoring a sentinel whose name is not a backup name"),
            }
        }
        Ok(())
    })?;
    let chunks: Vec<Vec<(BackupName, ObjectMeta)>> = {
        let per = found.len().div_ceil(concurrency.max(1)).max(1);
        found.chunks(per).map(|c| c.to_vec()).collect()
    };
    let results: Vec<Result<Vec<Backup>>> = thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let storage = Arc::clone(storage);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for (name, object) in chunk {
                        let url = format!("{}/{}", storage.describe(), object.key);
                        match storage.open(&object.key).and_then(|r| Sentinel::read(r, &url)) {
                            Ok(sentinel) => out.push(Backup { name, sentinel, object }),
                            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                                tracing::warn!(object = %url, cause = %e, "skipping a backup with an unreadable sentinel");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sentinel reader panicked")).collect()
    });
    let mut backups = Vec::new();
    for r in results {
        backups.extend(r?);
    }
    backups.sort_by_key(order_key);
    Ok(backups)
}

/// Sort key, oldest first: finish LSN, finish time, modification time, name.
fn order_key(
    b: &Backup,
) -> (
    Option<Lsn>,
    Option<chrono::DateTime<chrono::FixedOffset>>,
    Option<std::time::SystemTime>,
    String,
) {
    (b.finish(), b.sentinel.finished_at(), b.object.modified, b.name.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backup_names() {
        let b = BackupName::parse("base_000000010000000000000004").unwrap();
        assert_eq!(b.start_segment.to_string(), "000000010000000000000004");
        assert!(!b.is_wale());
        let d = BackupName::parse("base_000000010000000100000061_D_000000010000000100000046").unwrap();
        assert_eq!(d.delta_suffix.as_deref(), Some("000000010000000100000046"));
        let w = BackupName::parse("base_000000010000000000000010_00000040").unwrap();
        assert_eq!(w.wale_offset, Some(40));
        for bad in [
            "base_",
            "base_00000001000000000000000",
            "backup_000000010000000000000004",
            "base_000000010000000000000004_x",
            "base_000000010000000000000004_0000004",
        ] {
            assert!(BackupName::parse(bad).is_none(), "{bad}");
        }
    }

    fn backup(name: &str, finish: Option<u64>, time: Option<&str>, modified: u64) -> Backup {
        Backup {
            name: BackupName::parse(name).unwrap(),
            sentinel: Sentinel {
                finish_lsn: finish,
                finish_time: time.map(str::to_string),
                ..Default::default()
            },
            object: ObjectMeta {
                key: name.into(),
                size: 1,
                modified: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(modified)),
            },
        }
    }

    #[test]
    fn latest_is_by_finish_lsn_then_time_not_modification_time() {
        let mut v = [
            // Re-uploaded yesterday's backup: newest modification time, oldest LSN.
            backup("base_000000010000000000000002", Some(100), Some("2026-01-01T00:00:00Z"), 999),
            backup("base_000000010000000000000009", Some(900), Some("2026-01-02T00:00:00Z"), 1),
            backup("base_000000010000000000000008", Some(900), Some("2026-01-01T12:00:00Z"), 2),
        ];
        v.sort_by_key(order_key);
        assert_eq!(v.last().unwrap().name.name, "base_000000010000000000000009");
    }
}
