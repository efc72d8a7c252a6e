//! The wal-g / WAL-E bucket layout: where backups and WAL live, what their names mean,
//! and how their JSON descriptions are read.
//!
//! ```text
//! <root>/basebackups_005/<name>_backup_stop_sentinel.json   written last: "backup complete"
//! <root>/basebackups_005/<name>/metadata.json
//! <root>/basebackups_005/<name>/files_metadata.json         (wal-g ≥ 1.0, walrus)
//! <root>/basebackups_005/<name>/tar_partitions/part_001.tar.lz4 …
//! <root>/basebackups_005/<name>/tar_partitions/pg_control.tar.lz4   (wal-g; WAL-E has none)
//! <root>/basebackups_005/<name>/tar_partitions/backup_label.tar.lz4 (wal-g ≥ 9.6 backups)
//! <root>/wal_005/<wal file name>[.<codec ext>]
//! ```

pub mod backup;
pub mod files_metadata;
pub mod increment;
pub mod plan;
pub mod sentinel;
pub mod wal_inventory;

/// Folder of base backups.
pub const BASEBACKUPS: &str = "basebackups_005/";
/// Folder of WAL files.
pub const WAL: &str = "wal_005/";
/// Suffix of a backup's completion marker, a sibling of its folder.
pub const SENTINEL_SUFFIX: &str = "_backup_stop_sentinel.json";

/// Key of a backup's sentinel.
pub fn sentinel_key(backup: &str) -> String {
    format!("{BASEBACKUPS}{backup}{SENTINEL_SUFFIX}")
}

/// Key prefix of a backup's tar partitions.
pub fn partitions_prefix(backup: &str) -> String {
    format!("{BASEBACKUPS}{backup}/tar_partitions/")
}

/// Key of a file inside a backup's folder (`metadata.json`, `files_metadata.json`).
pub fn backup_file_key(backup: &str, file: &str) -> String {
    format!("{BASEBACKUPS}{backup}/{file}")
}

/// Key of a WAL file stored with `codec`.
pub fn wal_key(file_name: &str, codec: crate::codec::Codec) -> String {
    format!("{WAL}{}", codec.file_name(file_name))
}
