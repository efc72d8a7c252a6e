//! barman-cloud's layout behind [`Archive`](super::Archive): a server's backups from
//! their `backup.info` (only `DONE` ones, ordered by end LSN), each restored from its
//! tars (the data tar and its parts, one tar per tablespace placed under
//! `pg_tblspc/<oid>/`), and its WAL as barman-cloud-wal-restore finds it, by one listing
//! of the name under `wals/<first 16 characters>/`.
//!
//! Deliberately different from barman-cloud-wal-restore: a request for segment `X` is
//! answered with `X` only, never with `X.partial` (a promoted source's partial segment
//! is not the segment PostgreSQL asks for; the next timeline's history and segments
//! are); a `FAILED` or `STARTED` backup is never `LATEST`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Archive, WalObject};
use crate::barman::info::{self, BackupInfo};
use crate::barman::{self as layout, TarKind};
use crate::codec::Codec;
use crate::config::{Format, FormatSettings};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::{Backup, BackupName};
use crate::layout::plan::{Partitions, RestorePlan};
use crate::layout::sentinel::{Sentinel, TablespaceSpec};
use crate::layout::wal_inventory::Inventory;
use crate::storage::{ObjectMeta, Storage};
use crate::wal::name::{Segment, WalFile};

/// How long a proof that the archive holds WAL is trusted.
const WAL_PROOF_TTL: Duration = Duration::from_secs(60);

/// One server's backups and WAL in a barman-cloud location.
pub struct Barman {
    storage: Arc<dyn Storage>,
    server: String,
    wal_proven: Mutex<Option<Instant>>,
}

impl Barman {
    /// Opens the server `settings` names, else the location's only one.
    pub fn open(storage: Arc<dyn Storage>, settings: &FormatSettings) -> Result<Barman> {
        let present = servers(storage.as_ref())?;
        let server = match (&settings.barman_server, present.as_slice()) {
            (Some(s), _) if present.contains(s) => s.clone(),
            (Some(s), _) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "barman server '{s}' is not in {} (no {s}/base/ or {s}/wals/); the location holds: {}",
                        storage.describe(),
                        if present.is_empty() {
                            "no server".to_string()
                        } else {
                            present.join(", ")
                        }
                    ),
                ))
            }
            (None, [one]) => one.clone(),
            (None, []) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: no barman-cloud server (no <server>/base/ or <server>/wals/); check the prefix",
                        storage.describe()
                    ),
                ))
            }
            (None, many) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} holds the barman servers {}: pass --barman-server (WALFETCH_BARMAN_SERVER)",
                        storage.describe(),
                        many.join(", ")
                    ),
                ))
            }
        };
        Ok(Barman {
            storage,
            server,
            wal_proven: Mutex::new(None),
        })
    }

    /// Reads the `backup.info` of backup `id`; `None` when there is none (barman-cloud
    /// before 3.19 writes it last, so a backup killed midway has tars and no info).
    fn info(&self, id: &str) -> Result<Option<BackupInfo>> {
        let key = layout::info_key(&self.server, id);
        let url = format!("{}/{key}", self.storage.describe());
        let mut reader = match self.storage.open(&key) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text)
            .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{url}: {e}"))))?;
        info::parse(&text, id, &url).map(Some)
    }

    /// Every backup with a `backup.info`, whatever its status, `concurrency` read at once.
    fn infos(&self, concurrency: usize) -> Result<Vec<BackupInfo>> {
        let base = layout::base_folder(&self.server);
        let ids: Vec<String> = self
            .storage
            .list_folders(&base)?
            .iter()
            .filter_map(|f| f.strip_prefix(&base).map(|id| id.trim_end_matches('/').to_string()))
            .collect();
        let per = ids.len().div_ceil(concurrency.max(1)).max(1);
        let results: Vec<Result<Vec<BackupInfo>>> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(per)
                .map(|chunk| s.spawn(move || chunk.iter().filter_map(|id| self.info(id).transpose()).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::new(ErrorKind::LocalIo, "a backup.info reader panicked")))
                })
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// The backup `info` describes, as every command reads backups.
    fn as_backup(&self, info: &BackupInfo) -> Backup {
        let spec = (!info.tablespaces.is_empty()).then(|| TablespaceSpec {
            base_prefix: None,
            locations: info.tablespaces.iter().map(|t| (t.oid.to_string(), t.location.clone())).collect(),
        });
        Backup {
            name: BackupName {
                name: info.id.clone(),
                start_segment: info.begin_wal.unwrap_or(Segment {
                    timeline: info.timeline.unwrap_or(1),
                    log: 0,
                    seg: 0,
                }),
                delta_suffix: None,
                wale_offset: None,
            },
            sentinel: Sentinel {
                lsn: info.begin_xlog.map(|l| l.0),
                finish_lsn: info.end_xlog.map(|l| l.0),
                pg_version: info.version,
                system_identifier: info.systemid,
                start_time: info.begin_time.map(|t| t.to_rfc3339()),
                finish_time: info.end_time.map(|t| t.to_rfc3339()),
                spec,
                user_data: info.backup_name.clone().map(serde_json::Value::String),
                ..Sentinel::default()
            },
            object: ObjectMeta {
                key: layout::info_key(&self.server, &info.id),
                size: 0,
                modified: None,
            },
        }
    }

    /// Succeeds when the server's `wals/` holds WAL: only then is a WAL file absent.
    fn prove_holds_wal(&self) -> Result<()> {
        let mut proven = self.wal_proven.lock().unwrap_or_else(|p| p.into_inner());
        if proven.is_some_and(|at| at.elapsed() < WAL_PROOF_TTL) {
            return Ok(());
        }
        let folder = layout::wal_folder(&self.server);
        if self.storage.list_folders(&folder)?.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}/{folder} holds no WAL at all, so no WAL file can be called absent from it; check the prefix and the server name (is barman-cloud-wal-archive pushing there?)",
                    self.storage.describe()
                ),
            ));
        }
        *proven = Some(Instant::now());
        Ok(())
    }
}

/// The barman-cloud servers of a location: its folders that hold `base/` or `wals/`.
pub fn servers(storage: &dyn Storage) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for folder in storage.list_folders("")? {
        let inner = storage.list_folders(&folder)?;
        if inner.iter().any(|f| f.ends_with("/base/") || f.ends_with("/wals/")) {
            out.push(folder.trim_end_matches('/').to_string());
        }
    }
    out.sort();
    Ok(out)
}

impl Archive for Barman {
    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn format(&self) -> Format {
        Format::Barman
    }

    fn describe(&self) -> String {
        format!("{} (barman server {})", self.storage.describe(), self.server)
    }

    fn wal_folder(&self) -> String {
        layout::wal_folder(&self.server)
    }

    fn backups(&self, concurrency: usize) -> Result<Vec<Backup>> {
        let mut out: Vec<Backup> = self
            .infos(concurrency)?
            .iter()
            .filter(|i| i.restorable())
            .map(|i| self.as_backup(i))
            .collect();
        // Ids are the source host's local time: the end LSN orders backups.
        out.sort_by_key(|b| (b.finish(), b.name.name.clone()));
        Ok(out)
    }

    fn backup(&self, name: &str) -> Result<Backup> {
        let found = if layout::is_backup_id(name) {
            self.info(name)?.into_iter().collect::<Vec<_>>()
        } else {
            let infos = self.infos(8)?;
            infos.into_iter().filter(|i| i.backup_name.as_deref() == Some(name)).collect()
        };
        match found.as_slice() {
            [info] if info.restorable() => Ok(self.as_backup(info)),
            [info] => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "backup {name} in {} is not restorable: its status is {}{}",
                    self.describe(),
                    info.status,
                    if info.snapshot {
                        " and its data is in disk snapshots, not in the bucket".to_string()
                    } else {
                        info.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    }
                ),
            )),
            [] => Err(Error::new(
                ErrorKind::NotFound,
                format!("backup {name} not found in {}; run backup-list to see what exists", self.describe()),
            )),
            many => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} backups in {} are named {name} ({}): give the backup id",
                    many.len(),
                    self.describe(),
                    many.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn no_backup(&self, concurrency: usize) -> Error {
        let infos = match self.infos(concurrency) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let not_done: Vec<String> = infos.iter().map(|i| format!("{} ({})", i.id, i.status)).collect();
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no complete backup in {} (no base/<id>/backup.info with status DONE{}); ask for a new barman-cloud-backup",
                self.describe(),
                if not_done.is_empty() {
                    String::new()
                } else {
                    format!("; there are {}", not_done.join(", "))
                }
            ),
        )
    }

    fn open_wal(&self, name: &str) -> Result<WalObject> {
        if WalFile::parse(name).is_none() {
            return Err(Error::new(ErrorKind::Config, format!("'{name}' is not a WAL file name")));
        }
        let folder = layout::wal_file_folder(&self.server, name);
        let candidates: Vec<(ObjectMeta, Codec)> = self
            .storage
            .list_all(&format!("{folder}{name}"), false)?
            .into_iter()
            .filter_map(|obj| {
                let file = obj.key.strip_prefix(&folder)?.to_string();
                let (stem, codec) = Codec::split(&file);
                (stem == name).then_some((obj, codec))
            })
            .collect();
        // Two copies (compressed differently) hold the same file; the first listed serves.
        if let Some((obj, codec)) = candidates.into_iter().next() {
            let (url, raw) = super::open_listed(self.storage.as_ref(), &obj.key)?;
            let reader = Box::new(codec.decoder(raw, &url));
            return Ok(WalObject { url, reader });
        }
        self.prove_holds_wal()?;
        Err(Error::new(
            ErrorKind::NotFound,
            format!("{name}: not in {}/{folder}", self.storage.describe()),
        ))
    }

    fn wal_inventory(&self, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)> {
        let base = layout::wal_folder(&self.server);
        let listed = super::list_folders_of(self.storage.as_ref(), &base, concurrency)?;
        let name_of = |obj: &ObjectMeta| {
            let file = obj.key.rsplit('/').next().unwrap_or("");
            Codec::split(file).0.to_string()
        };
        let size = match segment_size {
            Some(s) => s,
            None => {
                let first = listed
                    .iter()
                    .map(name_of)
                    .find(|n| matches!(WalFile::parse(n), Some(WalFile::Segment(_))));
                super::segment_size_of(self, first.as_deref())?
            }
        };
        let mut inv = Inventory::default();
        for obj in &listed {
            inv.add_named(&name_of(obj), obj, size);
        }
        Ok((inv, size))
    }

    fn restore_plan(&self, backup: Backup, _concurrency: usize) -> Result<Vec<RestorePlan>> {
        let id = backup.name.name.clone();
        let folder = format!("{}{id}/", layout::base_folder(&self.server));
        let mut data = Vec::new();
        let mut roots = std::collections::BTreeMap::new();
        let mut mains = Vec::new();
        let expected: Vec<String> = backup
            .sentinel
            .spec
            .as_ref()
            .map(|s| s.locations.keys().cloned().collect())
            .unwrap_or_default();
        for obj in self.storage.list_all(&folder, false)? {
            let file = obj.key.strip_prefix(&folder).unwrap_or(&obj.key).to_string();
            if file == "backup.info" {
                continue;
            }
            let Some((kind, part)) = layout::tar_of(&file) else {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}/{}: unknown object in the backup (an unsupported compression, or not one of its tars)",
                        self.storage.describe(),
                        obj.key
                    ),
                ));
            };
            if let TarKind::Tablespace(oid) = kind {
                if !expected.contains(&oid.to_string()) {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{}/{}: a tablespace tar, but backup.info lists no tablespace {oid}",
                            self.storage.describe(),
                            obj.key
                        ),
                    ));
                }
                roots.insert(obj.key.clone(), format!("pg_tblspc/{oid}"));
            }
            if part == 0 {
                mains.push(kind);
            }
            data.push(obj);
        }
        let mut missing: Vec<String> = Vec::new();
        if !mains.contains(&TarKind::Data) {
            missing.push("data.tar".into());
        }
        for oid in &expected {
            if !mains.iter().any(|k| matches!(k, TarKind::Tablespace(o) if o.to_string() == *oid)) {
                missing.push(format!("{oid}.tar"));
            }
        }
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}/{folder}: the backup lacks {} (deleted, or its upload never finished); restore another backup",
                    self.storage.describe(),
                    missing.join(", ")
                ),
            ));
        }
        // Largest first, so the longest download starts early and the tail is short.
        data.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
        Ok(vec![RestorePlan {
            backup,
            partitions: Partitions {
                data,
                backup_label: None,
                pg_control: None,
            },
            files_metadata: None,
            roots,
        }])
    }
}
