//! A backup's `backup.manifest`: every file, directory and link of the backed-up
//! cluster, where each file's bytes are stored (this backup or an earlier one of its
//! set, alone or in a bundle, whole or as block-incremental super blocks), and the
//! SHA-1 and size each must have.
//!
//! Files are kept compact (a manifest of a million files is tens of MB of text): the
//! backup a file lives in is an index into [`Manifest::labels`], its checksum 20 bytes.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::info::load;
use super::ini;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::Storage;

/// The SHA-1 of nothing: the checksum of every empty file.
pub const EMPTY_SHA1: [u8; 20] = [
    0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18, 0x90, 0xaf, 0xd8, 0x07, 0x09,
];

/// How a block-incremental file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockIncr {
    /// Block size in bytes (`bi` x 8192).
    pub block_size: u64,
    /// Bytes of each block's checksum in the map (`bic`, 6 by default).
    pub checksum_size: u8,
    /// Bytes of the map at the end of the file's stored range (`bim`).
    pub map_size: u64,
}

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Manifest name: `pg_data/…` or `pg_tblspc/<oid>/…`.
    pub name: String,
    /// Size of the original file.
    pub size: u64,
    /// SHA-1 of the original file.
    pub checksum: [u8; 20],
    /// Bytes stored in the repository (the slice of a bundle, the whole object).
    pub repo_size: u64,
    /// The backup holding the bytes: an index into [`Manifest::labels`].
    pub backup: u32,
    /// The bundle holding it (0: an object of its own).
    pub bundle: u64,
    /// Its offset in the bundle.
    pub bundle_offset: u64,
    /// Block incremental, when the file is stored that way (a map, `bim` > 0).
    pub block: Option<BlockIncr>,
    /// Mode (`0600`), when the manifest gives one (else the default's).
    pub mode: Option<u32>,
    /// Modification time (Unix seconds).
    pub timestamp: i64,
}

/// A tablespace of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// Its OID (the `pg_tblspc/<oid>` link's name).
    pub oid: String,
    /// Its name.
    pub name: String,
    /// Where it was on the source.
    pub path: String,
}

/// A backup's manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// `backup-label`.
    pub label: String,
    /// `full`, `diff`, `incr`.
    pub kind: String,
    /// The backup a diff/incr builds on.
    pub prior: Option<String>,
    /// Backups files may live in (`backup-reference`, this backup last); [`File::backup`]
    /// indexes it, and block maps name backups by their index in it.
    pub labels: Vec<String>,
    /// First WAL segment.
    pub archive_start: Option<String>,
    /// Last WAL segment.
    pub archive_stop: Option<String>,
    /// Start LSN (`X/Y`).
    pub lsn_start: Option<String>,
    /// Stop LSN.
    pub lsn_stop: Option<String>,
    /// Unix time the backup stopped.
    pub timestamp_stop: i64,
    /// The compression every file of the set is stored with (`gz`, `lz4`, … `none`).
    pub compress: String,
    /// Bundled files use the "raw" forms (no gzip header, no `Salted__`).
    pub bundle_raw: bool,
    /// `db-version` (`15`).
    pub pg_version: String,
    /// The source's system identifier.
    pub system_id: u64,
    /// The data directory's path on the source.
    pub pg_data_path: Option<String>,
    /// Tablespaces.
    pub tablespaces: Vec<Tablespace>,
    /// Databases, name to OID.
    pub databases: BTreeMap<String, u32>,
    /// Passphrase of the backup's files (encrypted repositories).
    pub cipher_pass: Option<String>,
    /// Every file, by manifest name.
    pub files: Vec<File>,
    /// Directories, with their modes.
    pub paths: Vec<(String, Option<u32>)>,
    /// Links in the data directory (tablespaces included): name and destination.
    pub links: Vec<(String, String)>,
    /// `[target:file:default] mode`.
    pub file_mode: Option<u32>,
    /// `[target:path:default] mode`.
    pub path_mode: Option<u32>,
    /// The labels of files' `reference`s, before they are resolved into indexes.
    pending: Vec<String>,
}

/// A `[target:file]` value.
#[derive(Deserialize)]
struct RawFile {
    size: u64,
    checksum: Option<String>,
    #[serde(rename = "repo-size")]
    repo_size: Option<u64>,
    reference: Option<String>,
    bni: Option<u64>,
    bno: Option<u64>,
    bi: Option<u64>,
    bic: Option<u8>,
    bim: Option<u64>,
    mode: Option<String>,
    timestamp: Option<i64>,
}

/// A `[backup:target]` value.
#[derive(Deserialize)]
struct RawTarget {
    path: String,
    #[serde(rename = "tablespace-id")]
    tablespace_id: Option<String>,
    #[serde(rename = "tablespace-name")]
    tablespace_name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
}

/// A `[db]` value.
#[derive(Deserialize)]
struct RawDb {
    #[serde(rename = "db-id")]
    oid: u32,
}

/// A mode or owner block (`[target:path]` values and the defaults).
#[derive(Deserialize, Default)]
struct RawMode {
    mode: Option<String>,
}

/// A `[target:link]` value.
#[derive(Deserialize)]
struct RawLink {
    destination: String,
}

fn octal(mode: Option<&str>) -> Option<u32> {
    mode.and_then(|m| u32::from_str_radix(m, 8).ok())
}

fn sha1_of(hex: &str) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Manifest {
    /// Reads `backup/<stanza>/<label>/backup.manifest` (or its `.copy`), with `pass` (the
    /// passphrase `backup.info` holds) when the repository is encrypted.
    pub fn read(storage: &dyn Storage, stanza: &str, label: &str, pass: Option<&str>) -> Result<Manifest> {
        let key = format!("backup/{stanza}/{label}/backup.manifest");
        let mut m: Manifest = load(storage, &key, pass, &|m: &mut Manifest, url, section, k, v| {
            m.pair(url, section, k, v)
        })?;
        let url = format!("{}/{key}", storage.describe());
        m.resolve(&url)?;
        if m.label != label {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{url}: names backup '{}', not '{label}'", m.label),
            ));
        }
        Ok(m)
    }

    /// Takes one pair of the file.
    fn pair(&mut self, url: &str, section: &str, k: &str, v: &str) -> Result<()> {
        let text = |what: &str| -> Result<String> { ini::value(v, url, what) };
        match (section, k) {
            ("backup", "backup-label") => self.label = text(k)?,
            ("backup", "backup-type") => self.kind = text(k)?,
            ("backup", "backup-prior") => self.prior = Some(text(k)?),
            ("backup", "backup-reference") => {
                self.labels = text(k)?.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            }
            ("backup", "backup-archive-start") => self.archive_start = ini::value(v, url, k)?,
            ("backup", "backup-archive-stop") => self.archive_stop = ini::value(v, url, k)?,
            ("backup", "backup-lsn-start") => self.lsn_start = ini::value(v, url, k)?,
            ("backup", "backup-lsn-stop") => self.lsn_stop = ini::value(v, url, k)?,
            ("backup", "backup-timestamp-stop") => self.timestamp_stop = ini::value(v, url, k)?,
            ("backup", "backup-bundle-raw") => self.bundle_raw = ini::value(v, url, k)?,
            ("backup:db", "db-version") => self.pg_version = text(k)?,
            ("backup:db", "db-system-id") => self.system_id = ini::value(v, url, k)?,
            ("backup:option", "option-compress-type") => self.compress = text(k)?,
            ("backup:option", "option-compress") if self.compress.is_empty() => {
                let on: bool = ini::value(v, url, k)?;
                self.compress = if on { "gz" } else { "none" }.to_string();
            }
            ("backup:target", name) => {
                let t: RawTarget = ini::value(v, url, &format!("target {name}"))?;
                if name == "pg_data" {
                    self.pg_data_path = Some(t.path);
                } else if let (Some(oid), "link") = (t.tablespace_id, t.kind.as_str()) {
                    self.tablespaces.push(Tablespace {
                        oid,
                        name: t.tablespace_name.unwrap_or_default(),
                        path: t.path,
                    });
                }
            }
            ("cipher", "cipher-pass") => self.cipher_pass = Some(text(k)?),
            ("db", name) => {
                let d: RawDb = ini::value(v, url, &format!("database {name}"))?;
                self.databases.insert(name.to_string(), d.oid);
            }
            ("target:file", name) => self.file(url, name, v)?,
            ("target:file:default", "mode") => self.file_mode = octal(Some(&text(k)?)),
            ("target:path", name) => {
                let p: RawMode = ini::value(v, url, &format!("path {name}"))?;
                self.paths.push((name.to_string(), octal(p.mode.as_deref())));
            }
            ("target:path:default", "mode") => self.path_mode = octal(Some(&text(k)?)),
            ("target:link", name) => {
                let l: RawLink = ini::value(v, url, &format!("link {name}"))?;
                self.links.push((name.to_string(), l.destination));
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes one `[target:file]` entry.
    fn file(&mut self, url: &str, name: &str, v: &str) -> Result<()> {
        let f: RawFile = ini::value(v, url, &format!("file {name}"))?;
        let checksum = match (&f.checksum, f.size) {
            (Some(c), _) => {
                sha1_of(c).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("{url}: file {name}: checksum '{c}' is no SHA-1")))?
            }
            (None, 0) => EMPTY_SHA1,
            (None, _) => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{url}: file {name} has no checksum: the backup did not complete"),
                ))
            }
        };
        let backup = match &f.reference {
            None => u32::MAX,
            Some(label) => match self.pending.iter().position(|l| l == label) {
                Some(i) => i as u32,
                None => {
                    self.pending.push(label.clone());
                    (self.pending.len() - 1) as u32
                }
            },
        };
        let block = match (f.bi, f.bim) {
            (Some(bi), Some(bim)) if bim > 0 => Some(BlockIncr {
                block_size: bi * 8192,
                checksum_size: f.bic.unwrap_or(6),
                map_size: bim,
            }),
            _ => None,
        };
        self.files.push(File {
            name: name.to_string(),
            size: f.size,
            checksum,
            repo_size: f.repo_size.unwrap_or(f.size),
            backup,
            bundle: f.bni.unwrap_or(0),
            bundle_offset: f.bno.unwrap_or(0),
            block,
            mode: octal(f.mode.as_deref()),
            timestamp: f.timestamp.unwrap_or(0),
        });
        Ok(())
    }

    /// Turns files' reference labels into indexes of [`Manifest::labels`] (this backup's
    /// own files point at its own label), and checks what must be there.
    fn resolve(&mut self, url: &str) -> Result<()> {
        let corrupt = |why: String| Error::new(ErrorKind::Corrupt, format!("{url}: {why}"));
        if self.label.is_empty() {
            return Err(corrupt("no backup-label".into()));
        }
        if self.files.is_empty() {
            return Err(corrupt("lists no files".into()));
        }
        if self.compress.is_empty() {
            self.compress = "none".into();
        }
        // Manifests before 2.42 carry no backup-reference: the files' references, then
        // this backup.
        for label in self.pending.clone() {
            if !self.labels.contains(&label) {
                self.labels.insert(0, label);
            }
        }
        if self.labels.last() != Some(&self.label) {
            self.labels.retain(|l| *l != self.label);
            self.labels.push(self.label.clone());
        }
        let own = (self.labels.len() - 1) as u32;
        let index: Vec<u32> = self
            .pending
            .iter()
            .map(|l| self.labels.iter().position(|x| x == l).unwrap_or(0) as u32)
            .collect();
        for f in &mut self.files {
            f.backup = if f.backup == u32::MAX { own } else { index[f.backup as usize] };
        }
        self.pending.clear();
        Ok(())
    }

    /// The label of the backup a file's bytes are in.
    pub fn label_of(&self, file: &File) -> &str {
        self.labels.get(file.backup as usize).map_or(&self.label, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, &str)]) -> Result<Manifest> {
        let mut m = Manifest::default();
        for (k, v) in [
            ("backup-label", "\"20261207-101010F_20261207-111111I\""),
            ("backup-reference", "\"20261207-101010F,20261207-101010F_20261207-111111I\""),
            ("backup-type", "\"incr\""),
        ] {
            m.pair("m", "backup", k, v)?;
        }
        m.pair("m", "backup:option", "option-compress-type", "\"lz4\"")?;
        for (k, v) in files {
            m.pair("m", "target:file", k, v)?;
        }
        m.pair("m", "target:file:default", "mode", "\"0600\"")?;
        m.resolve("m")?;
        Ok(m)
    }

    #[test]
    fn files_resolve_to_the_backup_holding_them() {
        let m = manifest(&[
            ("pg_data/PG_VERSION", r#"{"checksum":"8dfb8f4e0f4f0f1d8d2b8bd41a4e1a9c8f1f6f0b","reference":"20261207-101010F","repo-size":23,"size":3,"timestamp":1}"#),
            ("pg_data/base/1/1", r#"{"bi":1,"bim":25,"bni":2,"bno":77,"checksum":"59c166d0cc1426866997b194dd241a3a524485f7","rck":"x","size":12,"timestamp":2}"#),
            ("pg_data/empty", r#"{"size":0,"timestamp":3}"#),
        ])
        .unwrap();
        assert_eq!(m.labels, ["20261207-101010F", "20261207-101010F_20261207-111111I"]);
        assert_eq!(m.label_of(&m.files[0]), "20261207-101010F");
        assert_eq!(m.label_of(&m.files[1]), "20261207-101010F_20261207-111111I");
        assert_eq!(
            m.files[1].block,
            Some(BlockIncr {
                block_size: 8192,
                checksum_size: 6,
                map_size: 25
            })
        );
        assert_eq!((m.files[1].bundle, m.files[1].bundle_offset, m.files[1].repo_size), (2, 77, 12));
        assert_eq!(m.files[2].checksum, EMPTY_SHA1);
        assert_eq!(m.file_mode, Some(0o600));
        let e = manifest(&[("pg_data/x", r#"{"size":5,"timestamp":1}"#)]).unwrap_err();
        assert!(e.to_string().contains("no checksum"), "{e}");
    }
}
