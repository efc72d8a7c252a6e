//! `files_metadata.json`: which files a backup holds and which tar partition holds them.
//!
//! The file can exceed a gigabyte for large clusters, so it is read as a stream: each
//! `Files` entry is handed to a callback and dropped, never collected.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// One entry of `Files`, as read and as written.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FileEntry {
    /// The file is stored in wal-g's page-increment format (delta backups).
    #[serde(rename = "IsIncremented", default)]
    pub is_incremented: bool,
    /// The file is unchanged since the parent backup and not stored in this one.
    #[serde(rename = "IsSkipped", default)]
    pub is_skipped: bool,
    /// Modification time as wal-g records it (RFC 3339).
    #[serde(rename = "MTime", default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// wal-g's count of page updates (0 for full backups).
    #[serde(rename = "UpdatesCount", default, skip_serializing_if = "Option::is_none")]
    pub updates_count: Option<u64>,
    /// Bytes of the file as stored in its tar member. walfetch's writer records it;
    /// wal-g's and walrus's do not (and their readers ignore it).
    #[serde(rename = "Size", default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The whole `files_metadata.json` a writer produces: every file with its entry, and
/// which partition holds which files.
#[derive(Debug, Default, Serialize)]
pub struct FilesMetadataDoc {
    /// Member name → entry.
    #[serde(rename = "Files")]
    pub files: BTreeMap<String, FileEntry>,
    /// Partition file name → member names.
    #[serde(rename = "TarFileSets")]
    pub tar_file_sets: BTreeMap<String, Vec<String>>,
    /// Database name → OID (as wal-g writes it for `--restore-only`).
    #[serde(rename = "DatabasesByNames", skip_serializing_if = "BTreeMap::is_empty")]
    pub databases_by_names: BTreeMap<String, DatabaseEntry>,
}

/// What the streaming read collected besides the per-file callback.
#[derive(Debug, Default)]
pub struct FilesMetadata {
    /// Number of `Files` entries.
    pub files: u64,
    /// Partition names from `TarFileSets` (walrus omits the codec extension).
    pub tar_sets: Vec<String>,
    /// For each partition of `TarFileSets`, the databases (OIDs) whose files it holds,
    /// and whether it holds anything outside a database directory.
    pub partition_databases: BTreeMap<String, (std::collections::BTreeSet<u32>, bool)>,
    /// `DatabasesByNames` (wal-g, walfetch): database name to OID.
    pub databases: BTreeMap<String, u32>,
}

/// The database a file belongs to, by its name: `base/<oid>/…` or
/// `pg_tblspc/<tablespace>/<version dir>/<oid>/…`.
pub fn database_of(name: &str) -> Option<u32> {
    let parts: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    match parts.as_slice() {
        ["base", oid, _, ..] => oid.parse().ok(),
        ["pg_tblspc", _, _, oid, _, ..] => oid.parse().ok(),
        _ => None,
    }
}

/// A `DatabasesByNames` value.
#[derive(Debug, Deserialize, Serialize, Clone, Copy)]
pub struct DatabaseEntry {
    /// The database's OID.
    pub oid: u32,
}

/// A file name as the metadata gives it, spelled as a tar member's name is after
/// sanitising (`/base/1/2`, `./base/1/2`, `base//1/2` are all `base/1/2`).
pub fn normal_name(name: &str) -> String {
    name.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

type FileCallback<'a> = dyn FnMut(&str, &FileEntry) -> Result<()> + 'a;

/// Streams `files_metadata.json`, calling `each` for every file entry.
pub fn read(reader: impl Read, object: &str, each: &mut FileCallback<'_>) -> Result<FilesMetadata> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(256 * 1024, reader));
    let mut failure: Option<Error> = None;
    let seed = TopSeed {
        each,
        failure: &mut failure,
    };
    let result = seed.deserialize(&mut de);
    if let Some(e) = failure {
        return Err(e);
    }
    let meta = result.map_err(|e| Error::new(ErrorKind::Corrupt, format!("{object}: not valid files metadata: {e}")))?;
    de.end()
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{object}: trailing data: {e}")))?;
    Ok(meta)
}

struct TopSeed<'a, 'b> {
    each: &'a mut FileCallback<'b>,
    failure: &'a mut Option<Error>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = FilesMetadata;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<FilesMetadata, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = FilesMetadata;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a files metadata object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<FilesMetadata, A::Error> {
        let mut out = FilesMetadata::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Files" => {
                    out.files += map.next_value_seed(FilesSeed {
                        each: &mut *self.each,
                        failure: &mut *self.failure,
                    })?;
                }
                "TarFileSets" => {
                    // One partition's names at a time: the whole map can be large.
                    map.next_value_seed(SetsSeed { out: &mut out })?;
                }
                "DatabasesByNames" => {
                    let dbs: BTreeMap<String, DatabaseEntry> = map.next_value()?;
                    out.databases = dbs.into_iter().map(|(k, v)| (k, v.oid)).collect();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct SetsSeed<'a> {
    out: &'a mut FilesMetadata,
}

impl<'de> DeserializeSeed<'de> for SetsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SetsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of partitions to file names")
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(set) = map.next_key::<String>()? {
            let names: Vec<String> = map.next_value()?;
            let mut dbs = std::collections::BTreeSet::new();
            let mut other = false;
            for n in &names {
                match database_of(n) {
                    Some(oid) => {
                        dbs.insert(oid);
                    }
                    None => other = true,
                }
            }
            self.out.partition_databases.insert(set.clone(), (dbs, other));
            self.out.tar_sets.push(set);
        }
        Ok(())
    }
}

struct FilesSeed<'a, 'b> {
    each: &'a mut FileCallback<'b>,
    failure: &'a mut Option<Error>,
}

impl<'de> DeserializeSeed<'de> for FilesSeed<'_, '_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FilesSeed<'_, '_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of file entries")
    }
    fn visit_unit<E>(self) -> std::result::Result<u64, E> {
        Ok(0)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<u64, A::Error> {
        let mut n = 0;
        while let Some(path) = map.next_key::<String>()? {
            let entry: FileEntry = map.next_value()?;
            n += 1;
            if self.failure.is_none() {
                if let Err(e) = (self.each)(&path, &entry) {
                    *self.failure = Some(e);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_files_and_tar_sets() {
        let json = r#"{"Files":{"/base/1/1":{"IsIncremented":false,"IsSkipped":false,"MTime":"x"},
            "global/2":{"IsSkipped":true}},"TarFileSets":{"part_001.tar.lz4":["/base/1/1"]},"DatabasesByNames":{"a":{"oid":1}}}"#;
        let mut seen = Vec::new();
        let meta = read(json.as_bytes(), "o", &mut |p, e| {
            seen.push((p.to_string(), e.is_skipped));
            Ok(())
        })
        .unwrap();
        assert_eq!(meta.files, 2);
        assert_eq!(meta.tar_sets, ["part_001.tar.lz4"]);
        assert_eq!(seen, [("/base/1/1".to_string(), false), ("global/2".to_string(), true)]);
    }

    #[test]
    fn what_the_writer_writes_streams_back() {
        let mut doc = FilesMetadataDoc::default();
        doc.files.insert(
            "base/1/1".into(),
            FileEntry {
                mtime: Some("2026-11-25T00:00:00Z".into()),
                updates_count: Some(0),
                size: Some(8192),
                ..Default::default()
            },
        );
        doc.tar_file_sets.insert("part_001.tar.lz4".into(), vec!["base/1/1".into()]);
        let json = serde_json::to_string(&doc).unwrap();
        assert!(
            json.contains(r#""IsIncremented":false"#) && json.contains(r#""UpdatesCount":0"#),
            "{json}"
        );
        let mut sizes = Vec::new();
        let meta = read(json.as_bytes(), "o", &mut |p, e| {
            sizes.push((p.to_string(), e.size));
            Ok(())
        })
        .unwrap();
        assert_eq!(meta.tar_sets, ["part_001.tar.lz4"]);
        assert_eq!(sizes, [("base/1/1".to_string(), Some(8192))]);
    }

    #[test]
    fn callback_errors_and_garbage_surface() {
        let err = read(r#"{"Files":{"a":{}}}"#.as_bytes(), "o", &mut |_, _| {
            Err(Error::new(ErrorKind::Corrupt, "missing a"))
        })
        .unwrap_err();
        assert_eq!(err.message(), "missing a");
        let err = read("{\"Files\":".as_bytes(), "o", &mut |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }
}
