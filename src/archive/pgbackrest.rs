//! A pgBackRest repository behind [`Archive`](super::Archive): its backups from
//! `backup.info`, its WAL as `archive-get` finds it, each file checked against the SHA-1
//! its name carries.
//!
//! A WAL file is looked for in every archive id of the stanza's current cluster (same
//! system identifier and version), newest first, as pgBackRest does after a
//! stanza-upgrade; a segment by one listing of its 16-character folder (the name carries
//! the SHA-1 of its content, and the extension its compression). Two copies of a segment
//! with different content are an error, never a choice.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::{Archive, WalObject};
use crate::codec::Codec;
use crate::config::{Format, FormatSettings};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::{Backup, BackupName};
use crate::layout::sentinel::Sentinel;
use crate::layout::wal_inventory::Inventory;
use crate::pgbackrest::cipher::Decrypting;
use crate::pgbackrest::info::{self, ArchiveInfo, BackupEntry, BackupInfo, PgHistory};
use crate::pgbackrest::ini::hex;
use crate::storage::{ObjectMeta, Storage};
use crate::wal::name::{Lsn, Segment, WalFile};

/// How long a proof that the archive holds WAL is trusted.
const WAL_PROOF_TTL: Duration = Duration::from_secs(60);

/// A pgBackRest repository, one stanza of it.
pub struct Repository {
    storage: Arc<dyn Storage>,
    stanza: String,
    pass: Option<String>,
    backup_info: OnceLock<Result<BackupInfo>>,
    archive_info: OnceLock<Result<ArchiveInfo>>,
    wal_proven: Mutex<Option<Instant>>,
}

impl Repository {
    /// Opens the stanza `settings` names, else the repository's only one.
    pub fn open(storage: Arc<dyn Storage>, settings: &FormatSettings) -> Result<Repository> {
        let stanza = match &settings.stanza {
            Some(s) => s.clone(),
            None => {
                let stanzas = stanzas(storage.as_ref())?;
                match stanzas.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{}: no pgBackRest stanza (no backup/<stanza>/ or archive/<stanza>/); check the repository path",
                                storage.describe()
                            ),
                        ))
                    }
                    many => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{} holds the stanzas {}: pass --stanza (PGBACKREST_STANZA)",
                                storage.describe(),
                                many.join(", ")
                            ),
                        ))
                    }
                }
            }
        };
        Ok(Repository {
            storage,
            stanza,
            pass: settings.cipher_pass.clone(),
            backup_info: OnceLock::new(),
            archive_info: OnceLock::new(),
            wal_proven: Mutex::new(None),
        })
    }

    /// The stanza.
    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    /// `backup.info`, read once.
    pub fn backup_info(&self) -> Result<&BackupInfo> {
        self.backup_info
            .get_or_init(|| self.load("backup/", |s, p| info::backup_info(s, &self.stanza, p)))
            .as_ref()
            .map_err(Error::clone)
    }

    /// `archive.info`, read once.
    pub fn archive_info(&self) -> Result<&ArchiveInfo> {
        self.archive_info
            .get_or_init(|| self.load("archive/", |s, p| info::archive_info(s, &self.stanza, p)))
            .as_ref()
            .map_err(Error::clone)
    }

    /// Reads an info file, turning the failures a user can fix into one line each: a
    /// stanza that is not there (listing those that are), an encrypted repository
    /// without a passphrase, a passphrase that does not open it.
    fn load<T>(&self, folder: &str, read: impl Fn(&dyn Storage, Option<&str>) -> Result<T>) -> Result<T> {
        let info_key = format!("{folder}{}/{}.info", self.stanza, folder.trim_end_matches('/'));
        match read(self.storage.as_ref(), self.pass.as_deref()) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let present = stanzas(self.storage.as_ref()).unwrap_or_default();
                Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "stanza '{}' is not in {} (no {info_key}); the repository holds: {}",
                        self.stanza,
                        self.storage.describe(),
                        if present.is_empty() {
                            "no stanza".to_string()
                        } else {
                            present.join(", ")
                        }
                    ),
                ))
            }
            Err(e) => {
                let encrypted = self.storage.open(&info_key).ok().and_then(|mut r| {
                    let mut head = [0u8; 8];
                    r.read_exact(&mut head).ok().map(|()| &head == b"Salted__")
                });
                match (encrypted, &self.pass) {
                    (Some(true), None) => Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{}/{info_key} is encrypted: set repo1-cipher-type=aes-256-cbc and repo1-cipher-pass (PGBACKREST_REPO1_CIPHER_PASS)",
                            self.storage.describe()
                        ),
                    )),
                    (Some(true), Some(_)) if e.message().contains("wrong passphrase") => Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{}/{info_key} does not open with repo1-cipher-pass: the passphrase is wrong",
                            self.storage.describe()
                        ),
                    )),
                    (Some(false), Some(_)) => Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "{}/{info_key} is not encrypted, but repo1-cipher-type says aes-256-cbc: set repo1-cipher-type=none",
                            self.storage.describe()
                        ),
                    )),
                    _ => Err(e),
                }
            }
        }
    }

    /// The archive ids a WAL file may be in: those of the current cluster's histories,
    /// newest first.
    fn archive_ids(&self) -> Result<Vec<String>> {
        let info = self.archive_info()?;
        let current = info.history.get(&info.current);
        let mut ids: Vec<&PgHistory> = info
            .history
            .values()
            .filter(|h| current.is_none_or(|c| c.system_id == h.system_id && c.version == h.version))
            .collect();
        ids.sort_by_key(|h| std::cmp::Reverse(h.id));
        Ok(ids.into_iter().map(PgHistory::archive_id).collect())
    }

    /// The WAL passphrase (encrypted repositories).
    fn wal_pass(&self) -> Result<Option<String>> {
        Ok(self.archive_info()?.cipher_pass.clone())
    }

    /// A reader of `key` as stored: decrypted with `pass`, decompressed with `codec`.
    pub fn decode(&self, raw: Box<dyn Read + Send>, url: &str, pass: Option<&str>, raw_form: bool, codec: Codec) -> Box<dyn Read + Send> {
        let plain: Box<dyn Read + Send> = match pass {
            Some(p) => Box::new(Decrypting::new(raw, p, raw_form, url)),
            None => raw,
        };
        Box::new(codec.decoder(plain, url))
    }

    /// Succeeds when some archive id holds WAL: only then is a WAL file absent.
    fn prove_holds_wal(&self, ids: &[String]) -> Result<()> {
        let mut proven = self.wal_proven.lock().unwrap_or_else(|p| p.into_inner());
        if proven.is_some_and(|at| at.elapsed() < WAL_PROOF_TTL) {
            return Ok(());
        }
        for id in ids {
            let folders = self.storage.list_folders(&format!("archive/{}/{id}/", self.stanza))?;
            if !folders.is_empty() {
                *proven = Some(Instant::now());
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "{}: archive/{}/ holds no WAL at all, so no WAL file can be called absent from it; check the stanza and the repository (is archive_command pushing to it?)",
                self.storage.describe(),
                self.stanza
            ),
        ))
    }

    /// Finds segment (or partial) `name`: the keys holding it across `ids`, one per
    /// distinct content.
    fn find_segment(&self, ids: &[String], name: &str) -> Result<Option<(String, String, Codec)>> {
        let mut found: Vec<(String, String, Codec)> = Vec::new();
        for id in ids {
            let folder = format!("archive/{}/{id}/{}/", self.stanza, &name[..16]);
            for obj in self.storage.list_all(&format!("{folder}{name}-"), false)? {
                let file = obj.key.strip_prefix(&folder).unwrap_or(&obj.key);
                if let Some((sha1, codec)) = parse_archived(file, name) {
                    if !found.iter().any(|(_, s, _)| *s == sha1) {
                        found.push((obj.key.clone(), sha1, codec));
                    }
                }
            }
            if !found.is_empty() {
                break;
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: {name} is archived twice with different contents ({}); pgBackRest refuses it too: remove the wrong copy",
                    self.storage.describe(),
                    found.iter().map(|(k, _, _)| k.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}

/// `<name>-<40 hex>[.<ext>]`: the SHA-1 and the codec, for an archived file of `name`.
fn parse_archived(file: &str, name: &str) -> Option<(String, Codec)> {
    let rest = file.strip_prefix(name)?.strip_prefix('-')?;
    let (sha1, ext) = rest.split_once('.').map_or((rest, None), |(s, e)| (s, Some(e)));
    if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let codec = match ext {
        None => Codec::None,
        Some(e) => Codec::from_extension(e)?,
    };
    Some((sha1.to_string(), codec))
}

/// The stanzas of a repository: the folders below `backup/` and `archive/`.
pub fn stanzas(storage: &dyn Storage) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for top in ["backup/", "archive/"] {
        for f in storage.list_folders(top)? {
            if let Some(name) = f.strip_prefix(top).map(|n| n.trim_end_matches('/').to_string()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// A reader that checks the SHA-1 of everything read against `expected` at the end.
struct Sha1Checked<R> {
    inner: R,
    hash: Sha1,
    expected: String,
    url: String,
}

impl<R: Read> Read for Sha1Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = hex(&self.hash.clone().finalize());
            if actual != self.expected {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: its content's SHA-1 is {actual}, not the {} its name records: the archived file is damaged",
                        self.url, self.expected
                    ),
                )
                .into_io());
            }
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A `backup.info` entry as the [`Backup`] every command reads.
fn as_backup(entry: &BackupEntry, info: &BackupInfo, stanza: &str) -> Backup {
    let history = info.history.get(&entry.db_id);
    let start_segment = entry.archive_start.as_deref().and_then(Segment::parse).unwrap_or(Segment {
        timeline: 1,
        log: 0,
        seg: 0,
    });
    let lsn = |l: &Option<String>| l.as_deref().and_then(Lsn::parse).map(|l| l.0);
    let finish_time = chrono::DateTime::from_timestamp(entry.timestamp_stop, 0).map(|t| t.to_rfc3339());
    Backup {
        name: BackupName {
            name: entry.label.clone(),
            start_segment,
            delta_suffix: None,
            wale_offset: None,
        },
        sentinel: Sentinel {
            lsn: lsn(&entry.lsn_start),
            finish_lsn: lsn(&entry.lsn_stop),
            pg_version: history.and_then(PgHistory::version_num),
            system_identifier: history.map(|h| h.system_id),
            uncompressed_size: Some(entry.size),
            compressed_size: Some(entry.repo_size_delta),
            delta_from: entry.prior.clone(),
            kind: Some(entry.kind.clone()),
            finish_time,
            ..Sentinel::default()
        },
        object: ObjectMeta {
            key: format!("backup/{stanza}/{}/backup.manifest", entry.label),
            size: 0,
            modified: None,
        },
    }
}

impl Archive for Repository {
    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn format(&self) -> Format {
        Format::PgBackRest
    }

    fn describe(&self) -> String {
        format!("{} (pgBackRest stanza {})", self.storage.describe(), self.stanza)
    }

    fn wal_folder(&self) -> String {
        format!("archive/{}/", self.stanza)
    }

    fn pgbackrest(&self) -> Option<&Repository> {
        Some(self)
    }

    fn backups(&self, _concurrency: usize) -> Result<Vec<Backup>> {
        let info = self.backup_info()?;
        let mut out: Vec<Backup> = info.backups.iter().map(|e| as_backup(e, info, &self.stanza)).collect();
        // Labels sort as time; the finish LSN decides as for every format.
        out.sort_by_key(|b| (b.finish(), b.name.name.clone()));
        Ok(out)
    }

    fn backup(&self, name: &str) -> Result<Backup> {
        let info = self.backup_info()?;
        match info.backups.iter().find(|e| e.label == name) {
            Some(e) => Ok(as_backup(e, info, &self.stanza)),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "backup {name} not found in {} (backup.info lists {}); run backup-list to see what exists",
                    self.describe(),
                    info.backups.iter().map(|b| b.label.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn no_backup(&self, _concurrency: usize) -> Error {
        if let Err(e) = self.backup_info() {
            return e;
        }
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no backup in {} (backup.info lists none); ask the provider for a full backup",
                self.describe()
            ),
        )
    }

    fn open_wal(&self, name: &str) -> Result<WalObject> {
        let ids = self.archive_ids()?;
        let pass = self.wal_pass()?;
        let wal = WalFile::parse(name).ok_or_else(|| Error::new(ErrorKind::Config, format!("'{name}' is not a WAL file name")))?;
        match wal {
            WalFile::Segment(_) | WalFile::Partial(_) => {
                if let Some((key, sha1, codec)) = self.find_segment(&ids, name)? {
                    let (url, raw) = super::open_listed(self.storage.as_ref(), &key)?;
                    let reader = Box::new(Sha1Checked {
                        inner: self.decode(raw, &url, pass.as_deref(), false, codec),
                        hash: Sha1::new(),
                        expected: sha1,
                        url: url.clone(),
                    });
                    return Ok(WalObject { url, reader });
                }
            }
            WalFile::History(_) | WalFile::BackupHistory(_) => {
                for id in &ids {
                    let key = match wal {
                        WalFile::History(_) => format!("archive/{}/{id}/{name}", self.stanza),
                        _ => format!("archive/{}/{id}/{}/{name}", self.stanza, &name[..16]),
                    };
                    match self.storage.open(&key) {
                        Ok(raw) => {
                            let url = format!("{}/{key}", self.storage.describe());
                            let reader = self.decode(raw, &url, pass.as_deref(), false, Codec::None);
                            return Ok(WalObject { url, reader });
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.prove_holds_wal(&ids)?;
        Err(Error::new(
            ErrorKind::NotFound,
            format!("{name}: not in {}/archive/{}/", self.storage.describe(), self.stanza),
        ))
    }

    fn wal_inventory(&self, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)> {
        let ids = self.archive_ids()?;
        let mut listed: Vec<(String, ObjectMeta)> = Vec::new();
        for id in &ids {
            let base = format!("archive/{}/{id}/", self.stanza);
            // History files sit in the id's folder itself; segments in one folder per
            // 16 characters of their name.
            for obj in super::list_folders_of(self.storage.as_ref(), &base, concurrency)? {
                let file = obj.key.rsplit('/').next().unwrap_or("").to_string();
                listed.push((file, obj));
            }
        }
        // A segment's file name carries its SHA-1 and codec after the name.
        let name_of = |file: &str| -> String {
            match file.split_once('-') {
                Some((name, rest)) if parse_archived(file, name).is_some() && !rest.is_empty() => name.to_string(),
                _ => file.to_string(),
            }
        };
        let size = match segment_size {
            Some(s) => s,
            None => {
                let first = listed
                    .iter()
                    .map(|(f, _)| name_of(f))
                    .find(|n| matches!(WalFile::parse(n), Some(WalFile::Segment(_))));
                super::segment_size_of(self, first.as_deref())?
            }
        };
        let mut inv = Inventory::default();
        for (file, obj) in &listed {
            inv.add_named(&name_of(file), obj, size);
        }
        Ok((inv, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_names_carry_the_sha1_and_the_codec() {
        let name = "000000010000000000000003";
        assert_eq!(
            parse_archived(&format!("{name}-cdd826b2e3c39280e3f3e9876f7c1221c81ab906.lz4"), name),
            Some(("cdd826b2e3c39280e3f3e9876f7c1221c81ab906".into(), Codec::Lz4))
        );
        assert_eq!(
            parse_archived(&format!("{name}-cdd826b2e3c39280e3f3e9876f7c1221c81ab906"), name).map(|p| p.1),
            Some(Codec::None)
        );
        assert_eq!(parse_archived(&format!("{name}-xyz.gz"), name), None);
        assert_eq!(
            parse_archived(&format!("{name}.partial-cdd826b2e3c39280e3f3e9876f7c1221c81ab906.gz"), name),
            None
        );
    }
}
