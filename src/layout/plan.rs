//! The plan of a restore, from what the archive says before anything is downloaded:
//! which partitions, in what order, and which checks the backup allows.
//!
//! The data partitions are extracted largest first (the longest download starts early)
//! together with `pg_control.tar` (whose `global/pg_control` is staged wherever it comes
//! from, and installed last); `backup_label.tar` comes after them, since an exclusive
//! backup (before PostgreSQL 15) leaves a stale `backup_label` in a data partition that
//! it must overwrite. Every partition `files_metadata.json` names must exist, checked
//! before any download.

use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::{read_backup, Backup};
use crate::layout::files_metadata::{self, FilesMetadata};
use crate::layout::{backup_file_key, partitions_prefix};
use crate::storage::{ObjectMeta, Storage};

/// The partitions of a backup, in the order they must be extracted.
pub struct Partitions {
    /// The data partitions (`part_NNN.tar`), largest first.
    pub data: Vec<ObjectMeta>,
    /// `backup_label.tar`, extracted after the data partitions.
    pub backup_label: Option<ObjectMeta>,
    /// `pg_control.tar` (wal-g; WAL-E keeps pg_control in a data partition).
    pub pg_control: Option<ObjectMeta>,
}

impl Partitions {
    /// Every partition: the data partitions largest first, `pg_control.tar`, then
    /// `backup_label.tar`.
    pub fn all(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.parallel().chain(self.backup_label.iter())
    }

    /// What can be extracted at once: the data partitions and `pg_control.tar` (whose
    /// `global/pg_control` is staged wherever it comes from, and installed last).
    /// `backup_label.tar` is not among them: after an exclusive backup (before
    /// PostgreSQL 15) a data partition holds a stale `backup_label`, which the one from
    /// `backup_label.tar` must overwrite.
    pub fn parallel(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.data.iter().chain(self.pg_control.iter())
    }
}

/// Sorts a listing of `tar_partitions/` (keys under `prefix`) into partitions;
/// anything else there is an error (an unknown compression, a stray object).
pub fn classify_partitions(objects: Vec<ObjectMeta>, prefix: &str) -> Result<Partitions> {
    let mut parts = Partitions {
        data: Vec::new(),
        backup_label: None,
        pg_control: None,
    };
    for obj in objects {
        let file = obj.key.strip_prefix(prefix).unwrap_or(&obj.key).to_string();
        let (stem, codec) = Codec::split(&file);
        // wal-g's codecs only (not barman-cloud's snappy or xz).
        let stem = if crate::codec::ALL.contains(&codec) { stem } else { "" };
        if stem == "pg_control.tar" {
            parts.pg_control = Some(obj);
        } else if stem == "backup_label.tar" {
            parts.backup_label = Some(obj);
        } else if stem.starts_with("part_") && stem.ends_with(".tar") {
            parts.data.push(obj);
        } else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: unknown object in tar_partitions/ (unsupported compression or not a partition)",
                    obj.key
                ),
            ));
        }
    }
    // Largest first, so the longest download starts early and the tail is short.
    parts.data.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
    Ok(parts)
}

/// What a restore of one backup does.
pub struct RestorePlan {
    /// The backup.
    pub backup: Backup,
    /// Its partitions, in extraction order.
    pub partitions: Partitions,
    /// The key of its `files_metadata.json`, when it has one: every file it lists is
    /// checked after extraction.
    pub files_metadata: Option<String>,
    /// Partitions whose members sit below a folder of the data directory (object key →
    /// the folder): barman-cloud's tablespace tars hold `PG_<major>_*/…`, restored under
    /// `pg_tblspc/<oid>/`. Empty for wal-g's, whose members name their whole path.
    pub roots: std::collections::BTreeMap<String, String>,
}

impl RestorePlan {
    /// The backup's name.
    pub fn name(&self) -> &str {
        &self.backup.name.name
    }
}

/// The longest delta chain followed (walrus's limit too): a loop in `DeltaFrom` names
/// ends there.
const MAX_CHAIN: usize = 64;

/// Plans the restore of `backup` and, when it is a delta, of every backup below it:
/// the layers, the full backup first and `backup` last. The chain is followed by each
/// sentinel's `DeltaFrom` (wal-g and walrus name deltas differently); a missing parent
/// fails before any download, naming it and the newest full backup there is instead.
pub fn plan_chain(storage: &dyn Storage, backup: Backup, full_backups: &dyn Fn() -> Result<Vec<String>>) -> Result<Vec<RestorePlan>> {
    let mut chain = vec![backup];
    while let Some(parent) = chain.last().and_then(|b| b.sentinel.delta_from.clone()) {
        let child = chain.last().map(|b| b.name.name.clone()).unwrap_or_default();
        if chain.len() >= MAX_CHAIN || chain.iter().any(|b| b.name.name == parent) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{child}: the delta chain loops or is longer than {MAX_CHAIN} backups (DeltaFrom {parent})"),
            ));
        }
        match read_backup(storage, &parent) {
            Ok(b) => {
                let child = chain.last().map(|c| (c.sentinel.system_identifier, c.start()));
                if let Some((sysid, start)) = child {
                    let other_cluster = matches!((sysid, b.sentinel.system_identifier), (Some(a), Some(p)) if a != p);
                    let not_older = matches!((start, b.start()), (Some(c), Some(p)) if p >= c);
                    if other_cluster || not_older {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "{parent}, named as the parent of a delta, is {}: the name was reused; this delta cannot be restored",
                                if other_cluster {
                                    "another cluster's backup"
                                } else {
                                    "not older than its delta"
                                }
                            ),
                        ));
                    }
                }
                chain.push(b);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let instead = full_backups()?.into_iter().max().map_or_else(
                    || "there is no full backup in the archive".to_string(),
                    |f| format!("the newest full backup, {f}, can be restored instead"),
                );
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{child} is a delta of {parent}, which is not in the archive: the chain is broken; {instead}"),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    chain.reverse();
    chain.into_iter().map(|b| plan(storage, b)).collect()
}

/// Plans the restore of one backup (one layer of a chain): lists its partitions while
/// reading its `files_metadata.json` (one round trip for both), and fails before any
/// download when it has no partitions, lacks a partition its metadata names, or is a
/// delta in a form walfetch cannot apply.
pub fn plan(storage: &dyn Storage, backup: Backup) -> Result<RestorePlan> {
    let name = backup.name.name.clone();
    if backup.sentinel.delta_from.is_none() && backup.name.delta_suffix.is_some() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("{name} is named as a delta backup, but its sentinel names no parent (DeltaFrom); it cannot be restored"),
        ));
    }
    if let Some(format) = backup.sentinel.increment_format.as_deref().filter(|f| *f != "wi1") {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{name} is a delta in the '{format}' increment format (PostgreSQL 17's own incremental files), which walfetch cannot apply yet; restore a full backup"),
        ));
    }
    let prefix = partitions_prefix(&name);
    let metadata_key = backup_file_key(&name, "files_metadata.json");
    let (listed, metadata) = std::thread::scope(|s| {
        let metadata = s.spawn(|| read_metadata(storage, &metadata_key));
        let listed = storage.list_all(&prefix, false);
        (
            listed,
            metadata
                .join()
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::LocalIo, "files_metadata.json reader panicked"))),
        )
    });
    let partitions = classify_partitions(listed?, &prefix)?;
    if partitions.data.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("{}/{prefix}: the backup has no tar partitions", storage.describe()),
        ));
    }
    let files_metadata = match metadata? {
        Some(meta) => {
            check_partitions_listed(storage, &meta, &partitions, &prefix)?;
            Some(metadata_key)
        }
        None => {
            if backup.sentinel.version.unwrap_or(0) >= 2 && !backup.sentinel.files_metadata_disabled.unwrap_or(false) {
                tracing::warn!(object = %metadata_key, "backup has no files_metadata.json; files cannot be checked against it");
            }
            None
        }
    };
    Ok(RestorePlan {
        backup,
        partitions,
        files_metadata,
        roots: Default::default(),
    })
}

/// Reads `files_metadata.json` (only its partition list is kept); `None` when the
/// backup has none (WAL-E's and older wal-g's).
fn read_metadata(storage: &dyn Storage, key: &str) -> Result<Option<FilesMetadata>> {
    let object = format!("{}/{key}", storage.describe());
    match storage.open(key) {
        Ok(reader) => files_metadata::read(reader, &object, &mut |_, _| Ok(())).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fails before anything is downloaded when a partition `meta` lists is not in storage.
fn check_partitions_listed(storage: &dyn Storage, meta: &FilesMetadata, parts: &Partitions, prefix: &str) -> Result<()> {
    let present: Vec<String> = parts
        .all()
        .map(|o| Codec::split(o.key.strip_prefix(prefix).unwrap_or(&o.key)).0.to_string())
        .collect();
    for set in &meta.tar_sets {
        let stem = Codec::split(set).0;
        if !present.iter().any(|p| p == stem) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}/{prefix}{set}: partition listed in files_metadata.json is missing from storage; the backup cannot be restored",
                    storage.describe()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_classified() {
        let o = |k: &str, size| ObjectMeta {
            key: format!("p/{k}"),
            size,
            modified: None,
        };
        let parts = classify_partitions(
            vec![
                o("part_001.tar.lz4", 1),
                o("part_002.tar.lz4", 5),
                o("pg_control.tar.lz4", 1),
                o("backup_label.tar", 1),
            ],
            "p/",
        )
        .unwrap();
        assert_eq!(parts.data.len(), 2);
        assert_eq!(parts.data[0].key, "p/part_002.tar.lz4", "largest first");
        assert!(parts.pg_control.is_some() && parts.backup_label.is_some());
        assert!(classify_partitions(vec![o("part_001.tar.snappy", 1)], "p/").is_err());
    }
}
