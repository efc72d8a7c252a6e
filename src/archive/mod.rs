//! What the commands need from an archive, whatever tool wrote it: its backups (with
//! their LSNs, timeline, system identifier and major), a WAL segment or history file by
//! name, and the WAL inventory for gaps. A backup's restore plan is the format's own
//! ([`crate::restore::select`] picks the executor).
//!
//! Three formats sit behind [`Archive`]: wal-g's layout (with WAL-E's and walrus's, see
//! [`walg`]), pgBackRest repositories ([`pgbackrest`]) and barman-cloud's layout
//! ([`barman`]). All read objects through one path: storage (with its retries, rate
//! limit and proofs of absence), then the format's decryption, the codec, and the
//! format's checksum, before a byte is handed on.
//!
//! The format is recognised from what the location holds (`basebackups_005/`, `wal_005/`:
//! wal-g; `backup/`, `archive/`: pgBackRest; `<server>/base/`, `<server>/wals/`:
//! barman-cloud), by folder listings; `--format`, any pgBackRest setting (`--stanza`,
//! `--pgbackrest-config`, `PGBACKREST_REPO1_*`) or `--barman-server` says it without a
//! request.

pub mod barman;
pub mod pgbackrest;
pub mod timelines;
pub mod walg;

use std::io::Read;
use std::sync::Arc;

use crate::config::{Format, StorageSettings};
use crate::crypto::{Keys, NO_KEYS};
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::layout::backup::Backup;
use crate::layout::plan::{plan_chain, RestorePlan};
use crate::layout::wal_inventory::Inventory;
use crate::objects::Objects;
use crate::storage::{ObjectMeta, Storage};
use crate::wal::segment::segment_size_in_header;

/// One WAL file, opened: its contents stream out decrypted, decompressed and, where the
/// format records a checksum, checked (a mismatch fails the read at its end).
pub struct WalObject {
    /// The object read, for messages.
    pub url: String,
    /// The file's contents. Errors carry walfetch's own ([`Error::from_io_ref`]).
    pub reader: Box<dyn Read + Send>,
}

/// An archive in one of the formats walfetch reads.
pub trait Archive: Send + Sync {
    /// The storage it lives in.
    fn storage(&self) -> &Arc<dyn Storage>;

    /// The keys its objects are read with ([`crate::crypto`]; a pgBackRest repository's
    /// cipher is its own).
    fn keys(&self) -> &Keys {
        &NO_KEYS
    }

    /// Its objects: storage and keys, the one read path ([`crate::objects`]).
    fn objects(&self) -> Objects {
        Objects::new(Arc::clone(self.storage()), self.keys().clone())
    }

    /// Its format.
    fn format(&self) -> Format;

    /// The archive for messages (`s3://bucket/path`, with the stanza for pgBackRest).
    fn describe(&self) -> String;

    /// The folder WAL is archived under, for messages (`wal_005/`).
    fn wal_folder(&self) -> String;

    /// Every complete backup, oldest first (LATEST is the last).
    fn backups(&self, concurrency: usize) -> Result<Vec<Backup>>;

    /// One backup by name (label).
    fn backup(&self, name: &str) -> Result<Backup>;

    /// The error for an archive without a complete backup, saying what it holds instead.
    fn no_backup(&self, concurrency: usize) -> Error;

    /// Opens WAL file `name` (a segment, a `.history` or a `.backup` file). Absence is
    /// `NotFound` only when the archive proved it (see [`crate::storage::absence`]).
    fn open_wal(&self, name: &str) -> Result<WalObject>;

    /// One listing of the WAL archive as runs and gaps per timeline, and the segment size
    /// (`segment_size`, else read from an archived segment).
    fn wal_inventory(&self, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)>;

    /// The pgBackRest repository, when this is one (its restore reads its manifests).
    fn pgbackrest(&self) -> Option<&pgbackrest::Repository> {
        None
    }

    /// The restore plan of `backup` as tar partitions: the backups of its chain, oldest
    /// first (wal-g's deltas), or the one backup (barman-cloud's tars). A pgBackRest
    /// backup is restored by its manifest instead and has none.
    fn restore_plan(&self, backup: Backup, concurrency: usize) -> Result<Vec<RestorePlan>> {
        let full_backups = || {
            Ok(self
                .backups(concurrency)?
                .into_iter()
                .filter(|b| b.sentinel.delta_from.is_none())
                .map(|b| b.name.name)
                .collect())
        };
        plan_chain(self.storage().as_ref(), backup, &full_backups)
    }

    /// The newest backup, or [`Archive::no_backup`].
    fn latest(&self, concurrency: usize) -> Result<Backup> {
        self.backups(concurrency)?.pop().ok_or_else(|| self.no_backup(concurrency))
    }
}

/// Opens the archive at `storage`, in the format the settings name or the location
/// holds.
pub fn open(storage: Arc<dyn Storage>, settings: &StorageSettings) -> Result<Arc<dyn Archive>> {
    let kind = match settings.format.kind {
        Some(k) => k,
        None => detect(storage.as_ref())?,
    };
    Ok(match kind {
        Format::WalG => Arc::new(walg::WalG::new(Objects::new(storage, settings.keys.clone()))),
        Format::PgBackRest => Arc::new(pgbackrest::Repository::open(storage, &settings.format)?),
        Format::Barman => Arc::new(barman::Barman::open(storage, &settings.format)?),
    })
}

/// Opens object `key` that a listing just showed, with its URL: a GET that then says
/// `NoSuchKey` means the archive is changing under the reader, never that it is absent.
fn open_listed(storage: &dyn Storage, key: &str) -> Result<(String, crate::storage::ObjectReader)> {
    let url = format!("{}/{key}", storage.describe());
    match storage.open(key) {
        Ok(r) => Ok((url, r)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
            ErrorKind::Unreachable,
            format!("{url}: listed, but its GET says NoSuchKey; the archive is changing, retry"),
        )),
        Err(e) => Err(e),
    }
}

/// The segment size read from the page header of archived segment `first` (the default
/// when the archive holds no segment).
fn segment_size_of(archive: &dyn Archive, first: Option<&str>) -> Result<u64> {
    let Some(first) = first else {
        return Ok(crate::constants::DEFAULT_WAL_SEGMENT_SIZE);
    };
    let mut obj = archive.open_wal(first)?;
    let mut header = [0u8; 40];
    obj.reader
        .read_exact(&mut header)
        .map_err(|e| Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{}: {e}", obj.url))))?;
    segment_size_in_header(&header).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{}: no valid WAL page header to read the segment size from; pass --wal-segment-size",
                obj.url
            ),
        )
    })
}

/// Every object directly in `base` and in each of its folders, the folders listed
/// `concurrency` at once.
fn list_folders_of(storage: &dyn Storage, base: &str, concurrency: usize) -> Result<Vec<ObjectMeta>> {
    let folders = storage.list_folders(base)?;
    let mut listed = storage.list_all(base, false)?;
    let per = folders.len().div_ceil(concurrency.max(1)).max(1);
    let results: Vec<Result<Vec<ObjectMeta>>> = std::thread::scope(|s| {
        let handles: Vec<_> = folders
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for folder in chunk {
                        out.extend(storage.list_all(folder, false)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::LocalIo, "a listing thread panicked")))
            })
            .collect()
    });
    for r in results {
        listed.extend(r?);
    }
    Ok(listed)
}

/// The folders of a location looked into for barman-cloud's server folders.
const MAX_FOLDERS_PROBED: usize = 16;

/// The format the location holds, by its top folders (wal-g's when it holds neither's,
/// or when the listing is refused: wal-g's reads then say what is wrong, and with a
/// policy that allows reading objects but not listing them, a wal-g archive's WAL is
/// still fetched by name). A location that cannot be reached is that error at once.
fn detect(storage: &dyn Storage) -> Result<Format> {
    let folders = match storage.list_folders("") {
        Ok(f) => f,
        // Unreachable: whatever comes next would be too; said once, at once.
        Err(e) if e.kind() == ErrorKind::Unreachable => return Err(e),
        Err(e) => {
            tracing::debug!(cause = %e, "cannot list the location to recognise its format; reading it as wal-g's");
            return Ok(Format::WalG);
        }
    };
    let has = |name: &str| folders.iter().any(|f| f == name);
    if has(crate::layout::BASEBACKUPS) || has(crate::layout::WAL) {
        return Ok(Format::WalG);
    }
    if has("backup/") || has("archive/") {
        tracing::debug!("the location holds backup/ and archive/: a pgBackRest repository");
        return Ok(Format::PgBackRest);
    }
    // barman-cloud: a server's folder holding base/ or wals/ (a few folders looked into).
    for folder in folders.iter().take(MAX_FOLDERS_PROBED) {
        match storage.list_folders(folder) {
            Ok(inner) if inner.iter().any(|f| f.ends_with("/base/") || f.ends_with("/wals/")) => {
                tracing::debug!(server = %folder, "the location holds <server>/base/ or <server>/wals/: barman-cloud's layout");
                return Ok(Format::Barman);
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Unreachable => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Format::WalG)
}
