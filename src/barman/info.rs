//! A barman-cloud backup's `backup.info`: one `name=value` per line, values as Python's
//! `str()` writes them (`None` for none), some as Python literals (`tablespaces`,
//! `backup_label`; see [`super::pylit`]). Unknown keys are ignored: barman adds fields
//! between versions.

use chrono::{DateTime, FixedOffset};

use super::pylit::{self, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::wal::name::{Lsn, Segment};

/// A tablespace of the backup: its name, OID and location on the source host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// `spcname`.
    pub name: String,
    /// Its OID (the name of its tar, and of its link under `pg_tblspc/`).
    pub oid: u32,
    /// Its location on the source host.
    pub location: String,
}

/// What walfetch reads of a `backup.info`.
#[derive(Debug, Clone, Default)]
pub struct BackupInfo {
    /// The backup id (its folder's name, `YYYYMMDDTHHMMSS` in the source host's local time).
    pub id: String,
    /// `DONE`, `FAILED`, `STARTED` (barman 3.19+ while it runs, or forever after a crash).
    pub status: String,
    /// The name given with `--name` (CloudNativePG: the Backup resource's).
    pub backup_name: Option<String>,
    /// The first WAL segment the backup needs.
    pub begin_wal: Option<Segment>,
    /// The start LSN.
    pub begin_xlog: Option<Lsn>,
    /// The last WAL segment the backup needs.
    pub end_wal: Option<Segment>,
    /// The LSN a restore must replay to before it is consistent.
    pub end_xlog: Option<Lsn>,
    /// When the backup started.
    pub begin_time: Option<DateTime<FixedOffset>>,
    /// When it ended.
    pub end_time: Option<DateTime<FixedOffset>>,
    /// The timeline it started on.
    pub timeline: Option<u32>,
    /// The source cluster's system identifier.
    pub systemid: Option<u64>,
    /// `server_version_num` of the source.
    pub version: Option<u64>,
    /// WAL segment size in bytes.
    pub xlog_segment_size: Option<u64>,
    /// Its tablespaces.
    pub tablespaces: Vec<Tablespace>,
    /// A snapshot backup (its data is in disk snapshots, not in the bucket).
    pub snapshot: bool,
    /// The error barman recorded for a failed backup.
    pub error: Option<String>,
}

impl BackupInfo {
    /// Whether the backup completed and its data is in the bucket.
    pub fn restorable(&self) -> bool {
        self.status == "DONE" && self.end_xlog.is_some() && !self.snapshot
    }
}

/// Parses the `backup.info` of backup `id`; `object` names it in errors.
pub fn parse(text: &str, id: &str, object: &str) -> Result<BackupInfo> {
    let bad = |key: &str, why: String| Error::new(ErrorKind::Corrupt, format!("{object}: {key}: {why}"));
    let mut info = BackupInfo {
        id: id.to_string(),
        ..BackupInfo::default()
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(line, "a line without '='".into()));
        };
        let (key, value) = (key.trim(), value.trim());
        if value == "None" {
            continue;
        }
        let number = || value.parse::<u64>().map_err(|_| bad(key, format!("'{value}' is not a number")));
        let lsn = || Lsn::parse(value).ok_or_else(|| bad(key, format!("'{value}' is not an LSN")));
        let segment = || Segment::parse(value).ok_or_else(|| bad(key, format!("'{value}' is not a WAL segment name")));
        let time =
            || DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%:z").map_err(|e| bad(key, format!("'{value}' is not a time: {e}")));
        match key {
            "status" => info.status = value.to_string(),
            "backup_name" => info.backup_name = Some(value.to_string()),
            "begin_wal" => info.begin_wal = Some(segment()?),
            "end_wal" => info.end_wal = Some(segment()?),
            "begin_xlog" => info.begin_xlog = Some(lsn()?),
            "end_xlog" => info.end_xlog = Some(lsn()?),
            "begin_time" => info.begin_time = Some(time()?),
            "end_time" => info.end_time = Some(time()?),
            "timeline" => info.timeline = Some(u32::try_from(number()?).map_err(|_| bad(key, "too large".into()))?),
            "systemid" => info.systemid = Some(number()?),
            "version" => info.version = Some(number()?),
            "xlog_segment_size" => info.xlog_segment_size = Some(number()?),
            "snapshots_info" => info.snapshot = true,
            "error" => info.error = Some(value.to_string()),
            "tablespaces" => info.tablespaces = tablespaces(value).map_err(|why| bad(key, why))?,
            _ => {}
        }
    }
    if info.status.is_empty() {
        return Err(bad("status", "missing".into()));
    }
    Ok(info)
}

/// `[('name', oid, '/location'), ...]`.
fn tablespaces(value: &str) -> std::result::Result<Vec<Tablespace>, String> {
    let parsed = pylit::parse(value)?;
    let rows = parsed.items().ok_or("not a list")?;
    rows.iter()
        .map(|row| match row.items() {
            Some([Value::Str(name), Value::Int(oid), Value::Str(location), ..]) => Ok(Tablespace {
                name: name.clone(),
                oid: u32::try_from(*oid).map_err(|_| format!("OID {oid} out of range"))?,
                location: location.clone(),
            }),
            _ => Err(format!("{row:?} is not (name, oid, location)")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "backup_label='START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\\n'
begin_offset=40
begin_time=2026-12-07 10:00:01.123456+00:00
begin_wal=000000010000000000000002
begin_xlog=0/2000028
compression=None
copy_stats={'total_time': 1.2}
end_time=2026-12-07 10:00:05+01:00
end_wal=000000010000000000000002
end_xlog=0/2000138
error=None
server_name=cloud
status=DONE
systemid=7446563456789012345
tablespaces=[('fast', 16385, '/srv/fast')]
timeline=1
version=160004
xlog_segment_size=16777216
some_future_field=whatever
";

    #[test]
    fn a_done_backup_reads_whole() {
        let info = parse(DONE, "20261207T100001", "s3://b/p/srv/base/20261207T100001/backup.info").unwrap();
        assert!(info.restorable());
        assert_eq!(info.end_xlog, Lsn::parse("0/2000138"));
        assert_eq!(info.systemid, Some(7_446_563_456_789_012_345));
        assert_eq!(info.version, Some(160_004));
        assert_eq!(
            info.tablespaces,
            vec![Tablespace {
                name: "fast".into(),
                oid: 16385,
                location: "/srv/fast".into()
            }]
        );
        assert_eq!(info.end_time.unwrap().to_rfc3339(), "2026-12-07T10:00:05+01:00");
    }

    #[test]
    fn started_failed_and_snapshot_backups_are_not_restorable() {
        let started = DONE
            .replace("status=DONE", "status=STARTED")
            .replace("end_xlog=0/2000138", "end_xlog=None");
        assert!(!parse(&started, "x", "o").unwrap().restorable());
        let failed = DONE.replace("status=DONE", "status=FAILED");
        assert!(!parse(&failed, "x", "o").unwrap().restorable());
        let snapshot = format!("{DONE}snapshots_info={{'provider': 'gcp'}}\n");
        assert!(!parse(&snapshot, "x", "o").unwrap().restorable());
        let err = parse(&DONE.replace("end_xlog=0/2000138", "end_xlog=zz"), "x", "s3://b/backup.info").unwrap_err();
        assert!(err.message().contains("s3://b/backup.info: end_xlog"), "{err}");
    }
}
