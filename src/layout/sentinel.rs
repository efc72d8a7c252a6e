//! Backup sentinels (`<name>_backup_stop_sentinel.json`) in every version wal-g,
//! walrus and WAL-E write: wal-g's V2 and older `Increment*` key names, walrus's, and
//! WAL-E's lower-case `wal_segment_*` form. Unknown keys are ignored; numbers may also
//! arrive as strings.

use std::collections::BTreeMap;
use std::io::Read;

use chrono::{DateTime, FixedOffset};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::wal::name::{Lsn, Segment};

/// WAL-E knows only 16 MiB segments; its LSNs are computed with this size.
const WALE_SEGMENT_SIZE: u64 = 16 << 20;

/// A backup sentinel: what the reader uses of every version, and what the writer
/// (`backup-push`) fills in (wal-g's V2 keys). Fields the writer leaves out are skipped
/// when serialising, except `ChkpNum`, which wal-g writes as `null`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Sentinel {
    /// Backup start LSN.
    #[serde(rename = "LSN", default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
    /// Backup stop LSN.
    #[serde(
        rename = "FinishLSN",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub finish_lsn: Option<u64>,
    /// `server_version_num` of the source.
    #[serde(
        rename = "PgVersion",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub pg_version: Option<u64>,
    /// The source cluster's system identifier.
    #[serde(
        rename = "SystemIdentifier",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_identifier: Option<u64>,
    /// Sum of the tar streams before compression.
    #[serde(
        rename = "UncompressedSize",
        alias = "expanded_size_bytes",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub uncompressed_size: Option<u64>,
    /// Bytes uploaded.
    #[serde(
        rename = "CompressedSize",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub compressed_size: Option<u64>,
    /// Bytes of the data directory's files.
    #[serde(
        rename = "DataCatalogSize",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub data_catalog_size: Option<u64>,
    /// Tablespaces of the source (`Spec`, WAL-E: `spec`).
    #[serde(rename = "Spec", alias = "spec", default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<TablespaceSpec>,
    /// Parent of a delta backup (`DeltaFrom`, older `IncrementFrom`): what a chain is
    /// followed by (names differ between writers).
    #[serde(rename = "DeltaFrom", alias = "IncrementFrom", default, skip_serializing_if = "Option::is_none")]
    pub delta_from: Option<String>,
    /// The full backup at the root of a delta's chain (`DeltaFullName`).
    #[serde(
        rename = "DeltaFullName",
        alias = "IncrementFullName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_full_name: Option<String>,
    /// A delta's parent's start LSN: pages at or past it were taken (wal-g:
    /// `DeltaFromLSN`).
    #[serde(
        rename = "DeltaFromLSN",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_from_lsn: Option<u64>,
    /// The same LSN as walrus names it (`DeltaLSN`); walfetch writes both.
    #[serde(
        rename = "DeltaLSN",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_lsn: Option<u64>,
    /// Deltas between this backup and its full backup, itself included (`DeltaCount`).
    #[serde(
        rename = "DeltaCount",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_count: Option<u64>,
    /// The increment format of a delta (walrus: `native` for PostgreSQL 17's own
    /// incremental files); absent: wal-g's `wi1`.
    #[serde(rename = "IncrementFormat", default, skip_serializing_if = "Option::is_none")]
    pub increment_format: Option<String>,
    /// The kind another format names (pgBackRest's `full`, `diff`, `incr`); never in a
    /// sentinel.
    #[serde(skip)]
    pub kind: Option<String>,
    /// wal-g's checkpoint number (always `null` in what walfetch writes).
    #[serde(rename = "ChkpNum", default)]
    pub chkp_num: Option<serde_json::Value>,
    /// Start of the backup, RFC 3339.
    #[serde(rename = "StartTime", default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// End of the backup, RFC 3339.
    #[serde(rename = "FinishTime", default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    /// wal-g's date format string.
    #[serde(rename = "DateFmt", default, skip_serializing_if = "Option::is_none")]
    pub date_fmt: Option<String>,
    /// Host that took the backup.
    #[serde(rename = "Hostname", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Data directory of the source host.
    #[serde(rename = "DataDir", default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Protected from deletion.
    #[serde(rename = "IsPermanent", default, skip_serializing_if = "Option::is_none")]
    pub is_permanent: Option<bool>,
    /// Sentinel format version (2 for current wal-g).
    #[serde(
        rename = "Version",
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<u64>,
    /// True when the backup has no `files_metadata.json`.
    #[serde(rename = "FilesMetadataDisabled", default, skip_serializing_if = "Option::is_none")]
    pub files_metadata_disabled: Option<bool>,
    /// `WALG_SENTINEL_USER_DATA`.
    #[serde(rename = "UserData", default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    /// WAL-E: segment holding the stop LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_segment_backup_stop: Option<String>,
    /// WAL-E: decimal byte offset of the stop LSN in that segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_segment_offset_backup_stop: Option<String>,
}

/// `metadata.json` beside a backup's partitions (wal-g's form; walfetch writes it and
/// reads only the sentinel).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupMetadata {
    /// Start of the backup, RFC 3339.
    pub start_time: String,
    /// End of the backup, RFC 3339.
    pub finish_time: String,
    /// wal-g's date format string.
    pub date_fmt: String,
    /// Host that took the backup.
    pub hostname: String,
    /// Data directory of the source host.
    pub data_dir: String,
    /// `server_version_num` of the source.
    pub pg_version: u64,
    /// Backup start LSN.
    pub start_lsn: u64,
    /// Backup stop LSN.
    pub finish_lsn: u64,
    /// Protected from deletion.
    pub is_permanent: bool,
    /// The source cluster's system identifier.
    pub system_identifier: u64,
    /// Sum of the tar streams before compression.
    pub uncompressed_size: u64,
    /// Bytes uploaded.
    pub compressed_size: u64,
}

/// Tablespace layout of the source: `{"base_prefix": …, "tablespaces": [oid…], "<oid>": {"loc", "link"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablespaceSpec {
    /// PGDATA of the source.
    pub base_prefix: Option<String>,
    /// OID → location on the source host.
    pub locations: BTreeMap<String, String>,
}

impl Serialize for TablespaceSpec {
    /// wal-g's form: each OID with its location and link, `base_prefix`, `tablespaces`.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (oid, loc) in &self.locations {
            map.serialize_entry(oid, &serde_json::json!({"loc": loc, "link": format!("pg_tblspc/{oid}")}))?;
        }
        if let Some(base) = &self.base_prefix {
            map.serialize_entry("base_prefix", base)?;
        }
        map.serialize_entry("tablespaces", &self.locations.keys().collect::<Vec<_>>())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for TablespaceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut spec = TablespaceSpec {
            base_prefix: map.get("base_prefix").and_then(|v| v.as_str()).map(str::to_string),
            locations: BTreeMap::new(),
        };
        let oids: Vec<String> = match map.get("tablespaces") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())))
                .collect(),
            _ => map.keys().filter(|k| k.bytes().all(|b| b.is_ascii_digit())).cloned().collect(),
        };
        for oid in oids {
            if let Some(loc) = map.get(&oid).and_then(|v| v.get("loc")).and_then(|v| v.as_str()) {
                spec.locations.insert(oid, loc.trim_end_matches('/').to_string());
            }
        }
        Ok(spec)
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

impl Sentinel {
    /// Parses a sentinel; `object` names it in errors.
    pub fn read(reader: impl Read, object: &str) -> Result<Sentinel> {
        let value: serde_json::Value = serde_json::from_reader(reader)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{object}: not a valid backup sentinel: {e}")))?;
        if !value.is_object() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{object}: not a valid backup sentinel: not a JSON object"),
            ));
        }
        serde_json::from_value(value).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{object}: not a valid backup sentinel: {e}")))
    }

    /// The stop LSN: `FinishLSN`, or WAL-E's stop segment and decimal offset.
    pub fn finish(&self) -> Option<Lsn> {
        if let Some(l) = self.finish_lsn {
            return Some(Lsn(l));
        }
        let seg = Segment::parse(self.wal_segment_backup_stop.as_deref()?)?;
        let offset: u64 = self.wal_segment_offset_backup_stop.as_deref()?.trim().parse().ok()?;
        Some(Lsn(seg.start_lsn(WALE_SEGMENT_SIZE)?.0 + offset))
    }

    /// The finish time, if recorded and parseable.
    pub fn finished_at(&self) -> Option<DateTime<FixedOffset>> {
        DateTime::parse_from_rfc3339(self.finish_time.as_deref()?).ok()
    }

    /// The PostgreSQL major version (`150018` → 15, `90624` → 9).
    pub fn pg_major(&self) -> Option<u64> {
        self.pg_version.map(|v| v / 10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Sentinel {
        Sentinel::read(json.as_bytes(), "s").unwrap()
    }

    #[test]
    fn reads_walg_v2() {
        let s = parse(include_str!("../../fixtures/sentinels/walg_v2_tablespace.json"));
        assert_eq!(s.lsn, Some(67108904));
        assert_eq!(s.finish(), Some(Lsn(67109176)));
        assert_eq!(s.system_identifier, Some(7345678901234567890));
        assert_eq!(
            s.spec.as_ref().unwrap().locations.get("16385").map(String::as_str),
            Some("/mnt/tbs1")
        );
        assert_eq!(s.pg_major(), Some(16));
        assert!(s.finished_at().is_some());
    }

    #[test]
    fn reads_walrus() {
        let s = parse(include_str!("../../fixtures/sentinels/walrus_0.4.json"));
        assert_eq!(s.finish(), Some(Lsn(33554688)));
        assert_eq!(s.system_identifier, Some(7712042867296447195));
        assert_eq!(s.version, Some(2));
    }

    #[test]
    fn reads_old_walg_increment_keys_and_string_numbers() {
        let s = parse(include_str!("../../fixtures/sentinels/walg_v0_delta.json"));
        assert_eq!(s.delta_from.as_deref(), Some("base_000000010000000000000002"));
        assert_eq!(s.finish(), Some(Lsn(0x0300_0138)));
        assert_eq!(s.pg_major(), Some(9));
    }

    #[test]
    fn reads_wale() {
        let s = parse(include_str!("../../fixtures/sentinels/wale.json"));
        // Segment 0/10 at 16 MiB is LSN 0/10000000, plus decimal offset 312.
        assert_eq!(s.finish(), Some(Lsn(0x1000_0000 + 312)));
        assert_eq!(s.uncompressed_size, Some(41_000_000));
        assert_eq!(s.spec.unwrap().locations.get("16400").map(String::as_str), Some("/srv/tbs"));
    }

    #[test]
    fn what_the_writer_fills_in_reads_back() {
        let mut spec = TablespaceSpec {
            base_prefix: Some("/srv/pg".into()),
            ..Default::default()
        };
        spec.locations.insert("16385".into(), "/mnt/tbs1".into());
        let written = Sentinel {
            lsn: Some(67108904),
            finish_lsn: Some(67109176),
            pg_version: Some(150004),
            system_identifier: Some(7),
            spec: Some(spec.clone()),
            version: Some(2),
            is_permanent: Some(false),
            finish_time: Some("2026-11-25T09:45:05Z".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&written).unwrap();
        assert_eq!(json["ChkpNum"], serde_json::Value::Null);
        assert_eq!(json["Spec"]["16385"]["link"], "pg_tblspc/16385");
        assert!(json.get("DeltaFrom").is_none(), "{json}");
        let read = Sentinel::read(json.to_string().as_bytes(), "s").unwrap();
        assert_eq!(read.finish(), Some(Lsn(67109176)));
        assert_eq!(read.spec, Some(spec));
        assert_eq!(read.pg_major(), Some(15));
    }

    #[test]
    fn garbage_is_corrupt() {
        for bad in ["", "[]", "{", "null", "\"x\""] {
            let err = Sentinel::read(bad.as_bytes(), "basebackups_005/x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(err.message().contains("basebackups_005/x"));
        }
    }
}
