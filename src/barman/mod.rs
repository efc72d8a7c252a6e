//! barman-cloud's object layout (barman-cloud-backup and barman-cloud-wal-archive, as
//! CloudNativePG writes them), read as natively as wal-g archives.
//!
//! ```text
//! <prefix>/<server>/base/<backup id>/backup.info           key=value, Python literals
//! <prefix>/<server>/base/<backup id>/data.tar[.<ext>]       PGDATA, one independent tar
//! <prefix>/<server>/base/<backup id>/data_0001.tar[.<ext>]  its further parts (--max-archive-size)
//! <prefix>/<server>/base/<backup id>/<oid>.tar[.<ext>]      a tablespace (its PG_<major>_* folder)
//! <prefix>/<server>/wals/<first 16 of name>/<segment>[.<ext>]
//! <prefix>/<server>/wals/<TLI>.history[.<ext>]
//! ```
//!
//! Extensions: `gz`, `bz2`, `snappy` (the framing format), `lz4`, `zst`, and for WAL also
//! `xz`. `backup_label` and `global/pg_control` are inside the data tar; there is no
//! `tablespace_map`, no manifest and no checksum beyond the codecs' own. A backup id is
//! the start time in the source host's local time, so backups are ordered by their end
//! LSN, not their ids.

pub mod info;
pub mod pylit;

/// The folder of a server's backups.
pub fn base_folder(server: &str) -> String {
    format!("{server}/base/")
}

/// The folder of a server's WAL.
pub fn wal_folder(server: &str) -> String {
    format!("{server}/wals/")
}

/// The key of a backup's `backup.info`.
pub fn info_key(server: &str, id: &str) -> String {
    format!("{server}/base/{id}/backup.info")
}

/// The folder a WAL file is archived in: `wals/<first 16 characters>/` for segments,
/// partial segments and backup history files, `wals/` itself for timeline history.
pub fn wal_file_folder(server: &str, name: &str) -> String {
    if name.ends_with(".history") {
        wal_folder(server)
    } else {
        format!("{}{}/", wal_folder(server), &name[..name.len().min(16)])
    }
}

/// Whether `id` has the form of a backup id (`YYYYMMDDTHHMMSS`).
pub fn is_backup_id(id: &str) -> bool {
    id.len() == 15 && id.as_bytes()[8] == b'T' && id.bytes().enumerate().all(|(i, b)| i == 8 || b.is_ascii_digit())
}

/// What a tar object of a backup holds: `data` (PGDATA) or a tablespace's OID, and its
/// part number (0: the first).
pub fn tar_of(file: &str) -> Option<(TarKind, u32)> {
    let (stem, _) = crate::codec::Codec::split(file);
    let base = stem.strip_suffix(".tar")?;
    let (name, part) = match base.rsplit_once('_') {
        Some((n, p)) if p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()) => (n, p.parse().ok()?),
        _ => (base, 0),
    };
    let kind = match name {
        "data" => TarKind::Data,
        oid => TarKind::Tablespace(oid.parse().ok()?),
    };
    Some((kind, part))
}

/// Which tree a tar of a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TarKind {
    /// PGDATA.
    Data,
    /// The tablespace of this OID.
    Tablespace(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_layout() {
        assert_eq!(tar_of("data.tar.gz"), Some((TarKind::Data, 0)));
        assert_eq!(tar_of("data_0002.tar.snappy"), Some((TarKind::Data, 2)));
        assert_eq!(tar_of("16385.tar"), Some((TarKind::Tablespace(16385), 0)));
        assert_eq!(tar_of("16385_0001.tar.lz4"), Some((TarKind::Tablespace(16385), 1)));
        assert_eq!(tar_of("backup.info"), None);
        assert_eq!(tar_of("notes.tar"), None);
        assert!(is_backup_id("20261207T100001") && !is_backup_id("nightly") && !is_backup_id("2026120xT100001"));
        assert_eq!(wal_file_folder("srv", "000000010000000200000003"), "srv/wals/0000000100000002/");
        assert_eq!(wal_file_folder("srv", "00000002.history"), "srv/wals/");
    }
}
