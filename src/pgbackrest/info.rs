//! `backup.info` and `archive.info`: the stanza's backups, its PostgreSQL histories, and
//! the passphrases of what depends on them. Each is read with the `.copy` fallback
//! pgBackRest itself uses: the main file first, and on any failure (missing, unreadable,
//! not decryptable, damaged) the copy; both failing names both causes.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};

use serde::Deserialize;

use super::cipher::Decrypting;
use super::ini;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::Storage;

/// One PostgreSQL history entry (a stanza-upgrade adds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgHistory {
    /// The history id (1, 2, ...).
    pub id: u64,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The PostgreSQL version as pgBackRest writes it (`"9.6"`, `"15"`).
    pub version: String,
}

impl PgHistory {
    /// The archive id of this history entry (`15-1`).
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.id)
    }

    /// The version as `server_version_num` rounds it (`150000`, `90600`).
    pub fn version_num(&self) -> Option<u64> {
        let (major, minor) = self.version.split_once('.').unwrap_or((&self.version, "0"));
        let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
        Some(if major >= 10 {
            major * 10_000
        } else {
            major * 10_000 + minor * 100
        })
    }
}

/// One backup as `backup.info` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct BackupEntry {
    /// The label (the key; not in the JSON).
    #[serde(skip)]
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "backup-type")]
    pub kind: String,
    /// First WAL segment of the backup.
    #[serde(rename = "backup-archive-start")]
    pub archive_start: Option<String>,
    /// Last WAL segment.
    #[serde(rename = "backup-archive-stop")]
    pub archive_stop: Option<String>,
    /// Start LSN (`X/Y`), when recorded.
    #[serde(rename = "backup-lsn-start")]
    pub lsn_start: Option<String>,
    /// Stop LSN.
    #[serde(rename = "backup-lsn-stop")]
    pub lsn_stop: Option<String>,
    /// The backup a diff or incr is based on.
    #[serde(rename = "backup-prior")]
    pub prior: Option<String>,
    /// Every backup this one needs files of.
    #[serde(rename = "backup-reference", default)]
    pub references: Vec<String>,
    /// Unix time the backup started.
    #[serde(rename = "backup-timestamp-start")]
    pub timestamp_start: i64,
    /// Unix time it stopped.
    #[serde(rename = "backup-timestamp-stop")]
    pub timestamp_stop: i64,
    /// The PostgreSQL history id it belongs to.
    #[serde(rename = "db-id")]
    pub db_id: u64,
    /// Original bytes of the whole set.
    #[serde(rename = "backup-info-size")]
    pub size: u64,
    /// Bytes in the repository of this backup alone.
    #[serde(rename = "backup-info-repo-size-delta")]
    pub repo_size_delta: u64,
    /// pgBackRest's version that took it.
    #[serde(rename = "backrest-version")]
    pub version: String,
}

/// `backup.info`.
#[derive(Debug, Clone, Default)]
pub struct BackupInfo {
    /// The backups, oldest label first.
    pub backups: Vec<BackupEntry>,
    /// The PostgreSQL histories, by id.
    pub history: BTreeMap<u64, PgHistory>,
    /// The current history id.
    pub current: u64,
    /// The passphrase of the manifests (encrypted repositories).
    pub cipher_pass: Option<String>,
}

/// `archive.info`.
#[derive(Debug, Clone, Default)]
pub struct ArchiveInfo {
    /// The PostgreSQL histories, by id.
    pub history: BTreeMap<u64, PgHistory>,
    /// The current history id.
    pub current: u64,
    /// The passphrase of the WAL and history files (encrypted repositories).
    pub cipher_pass: Option<String>,
}

/// The `[db:history]` value of `backup.info`.
#[derive(Deserialize)]
struct BackupHistory {
    #[serde(rename = "db-system-id")]
    system_id: u64,
    #[serde(rename = "db-version")]
    version: String,
}

/// The `[db:history]` value of `archive.info` (the system id under `db-id`, as written).
#[derive(Deserialize)]
struct ArchiveHistory {
    #[serde(rename = "db-id")]
    system_id: u64,
    #[serde(rename = "db-version")]
    version: String,
}

/// A `[db:history]` value: the cluster's system identifier and PostgreSQL version.
trait HistoryValue: serde::de::DeserializeOwned {
    /// `(system id, version)`.
    fn fields(self) -> (u64, String);
}

impl HistoryValue for BackupHistory {
    fn fields(self) -> (u64, String) {
        (self.system_id, self.version)
    }
}

impl HistoryValue for ArchiveHistory {
    fn fields(self) -> (u64, String) {
        (self.system_id, self.version)
    }
}

/// What `backup.info` and `archive.info` both hold: the current database id, the
/// history, and the passphrase of what the file guards.
struct Shared<'a> {
    current: &'a mut u64,
    history: &'a mut BTreeMap<u64, PgHistory>,
    cipher_pass: &'a mut Option<String>,
}

impl Shared<'_> {
    /// Reads one pair of `url` into what it sets, if it is one of the shared ones.
    fn read<H: HistoryValue>(self, url: &str, section: &str, k: &str, v: &str) -> Result<()> {
        match section {
            "db" if k == "db-id" => *self.current = number(v, url, "db-id")?,
            "db:history" => {
                let h: H = ini::value(v, url, &format!("history {k}"))?;
                let id = k.parse().map_err(|_| corrupt(url, "a history id that is not a number"))?;
                let (system_id, version) = h.fields();
                self.history.insert(id, PgHistory { id, system_id, version });
            }
            "cipher" if k == "cipher-pass" => *self.cipher_pass = Some(ini::value(v, url, "cipher-pass")?),
            _ => {}
        }
        Ok(())
    }
}

/// Builds a `T` from one pair of an info file: `(t, url, section, key, raw value)`.
pub type Each<'a, T> = &'a dyn Fn(&mut T, &str, &str, &str, &str) -> Result<()>;

/// Opens an info file (or manifest) `key`, decrypting with `pass` when given, and builds
/// a `T` from its pairs with `each` (`each(&mut t, url, section, key, raw value)`); falls
/// back to `key.copy` on any failure of the main file. Pairs are parsed as they stream
/// by, and the result is used only once the whole file's checksum held.
pub fn load<T: Default>(storage: &dyn Storage, key: &str, pass: Option<&str>, each: Each<'_, T>) -> Result<T> {
    let attempt = |k: &str| -> Result<T> {
        let url = format!("{}/{k}", storage.describe());
        let raw = storage.open(k)?;
        let reader: Box<dyn Read + Send> = match pass {
            Some(p) => Box::new(Decrypting::new(raw, p, false, &url)),
            None => raw,
        };
        let mut built = T::default();
        ini::read(BufReader::with_capacity(64 * 1024, reader), &url, &mut |s, k, v| {
            each(&mut built, &url, s, k, v)
        })?;
        Ok(built)
    };
    let transient = |e: &Error| matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Credentials);
    match attempt(key) {
        Ok(t) => Ok(t),
        Err(first) if transient(&first) => Err(first),
        Err(first) => match attempt(&format!("{key}.copy")) {
            Ok(t) => {
                if first.kind() != ErrorKind::NotFound {
                    tracing::warn!(object = %key, cause = %first, "reading the .copy instead, as pgBackRest does");
                }
                Ok(t)
            }
            Err(second) if transient(&second) => Err(second),
            Err(second) => {
                let kind = if first.kind() == ErrorKind::NotFound {
                    second.kind()
                } else {
                    first.kind()
                };
                Err(Error::new(
                    kind,
                    format!("{}/{key} and its .copy cannot be read: {first}; {second}", storage.describe()),
                ))
            }
        },
    }
}

/// A `[db]` integer value.
fn number(raw: &str, object: &str, what: &str) -> Result<u64> {
    ini::value(raw, object, what)
}

/// Reads `backup/<stanza>/backup.info` (`pass`: the repository's cipher passphrase).
pub fn backup_info(storage: &dyn Storage, stanza: &str, pass: Option<&str>) -> Result<BackupInfo> {
    let key = format!("backup/{stanza}/backup.info");
    let url = format!("{}/{key}", storage.describe());
    let mut info: BackupInfo = load(storage, &key, pass, &|info: &mut BackupInfo, url, section, k, v| {
        match section {
            "backup:current" => {
                let mut entry: BackupEntry = ini::value(v, url, &format!("backup {k}"))?;
                entry.label = k.to_string();
                info.backups.push(entry);
            }
            _ => {
                let shared = Shared {
                    current: &mut info.current,
                    history: &mut info.history,
                    cipher_pass: &mut info.cipher_pass,
                };
                shared.read::<BackupHistory>(url, section, k, v)?;
            }
        }
        Ok(())
    })?;
    info.backups.sort_by(|a, b| a.label.cmp(&b.label));
    if !info.history.contains_key(&info.current) {
        return Err(corrupt(&url, "its current database id is not in its history"));
    }
    Ok(info)
}

/// Reads `archive/<stanza>/archive.info`.
pub fn archive_info(storage: &dyn Storage, stanza: &str, pass: Option<&str>) -> Result<ArchiveInfo> {
    let key = format!("archive/{stanza}/archive.info");
    let url = format!("{}/{key}", storage.describe());
    let info: ArchiveInfo = load(storage, &key, pass, &|info: &mut ArchiveInfo, url, section, k, v| {
        let shared = Shared {
            current: &mut info.current,
            history: &mut info.history,
            cipher_pass: &mut info.cipher_pass,
        };
        shared.read::<ArchiveHistory>(url, section, k, v)
    })?;
    if !info.history.contains_key(&info.current) {
        return Err(corrupt(&url, "its current database id is not in its history"));
    }
    Ok(info)
}

fn corrupt(object: &str, why: &str) -> Error {
    Error::new(ErrorKind::Corrupt, format!("{object}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_server_version_num() {
        let h = |v: &str| PgHistory {
            id: 1,
            system_id: 7,
            version: v.into(),
        };
        assert_eq!(h("15").version_num(), Some(150000));
        assert_eq!(h("9.6").version_num(), Some(90600));
        assert_eq!(h("15").archive_id(), "15-1");
    }
}
