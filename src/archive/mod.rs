//! What the commands need from an archive, whatever tool wrote it: its backups (with
//! their LSNs, timeline, system identifier and major), a WAL segment or history file by
//! name, and the WAL inventory for gaps. A backup's restore plan is the format's own
//! ([`crate::restore::select`] picks the executor).
//!
//! Two formats sit behind [`Archive`]: wal-g's layout (with WAL-E's and walrus's, see
//! [`walg`]) and pgBackRest repositories ([`pgbackrest`]). Both read objects through one
//! path: storage (with its retries, rate limit and proofs of absence), then the format's
//! decryption, the codec, and the format's checksum, before a byte is handed on.
//!
//! The format is recognised from what the location holds (`basebackups_005/`, `wal_005/`:
//! wal-g; `backup/`, `archive/`: pgBackRest), one folder listing; `--format`, or any
//! pgBackRest setting (`--stanza`, `--pgbackrest-config`, `PGBACKREST_REPO1_*`), says it
//! without a request.

pub mod pgbackrest;
pub mod timelines;
pub mod walg;

use std::io::Read;
use std::sync::Arc;

use crate::config::{Format, StorageSettings};
use crate::crypto::{Keys, NO_KEYS};
use crate::error::{Error, Result};
use crate::layout::backup::Backup;
use crate::layout::wal_inventory::Inventory;
use crate::objects::Objects;
use crate::storage::Storage;

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
    })
}

/// The format the location holds, by its top folders (wal-g's when it holds neither's,
/// or when the listing is refused: wal-g's reads then say what is wrong, and with a
/// policy that allows reading objects but not listing them, a wal-g archive's WAL is
/// still fetched by name). A location that cannot be reached is that error at once.
fn detect(storage: &dyn Storage) -> Result<Format> {
    let folders = match storage.list_folders("") {
        Ok(f) => f,
        // Unreachable: whatever comes next would be too; said once, at once.
        Err(e) if e.kind() == crate::error::ErrorKind::Unreachable => return Err(e),
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
    Ok(Format::WalG)
}
