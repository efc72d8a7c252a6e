//! wal-g's layout behind [`Archive`](super::Archive): the functions of [`crate::layout`],
//! and a WAL file found under any codec with absence proven (also WAL-E's and walrus's
//! archives, which share it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Archive, WalObject};
use crate::codec::{Codec, ALL};
use crate::config::Format;
use crate::crypto::Keys;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::{list_backups, read_backup, Backup};
use crate::layout::wal_inventory::{no_backup, scan, Inventory};
use crate::layout::{wal_key, WAL};
use crate::objects::{decoded, Objects};
use crate::storage::{ObjectReader, Storage};
use crate::wal::name::WalFile;

/// A wal-g (WAL-E, walrus) archive.
pub struct WalG {
    objects: Objects,
}

impl WalG {
    /// The archive of `objects`.
    pub fn new(objects: Objects) -> WalG {
        WalG { objects }
    }
}

impl Archive for WalG {
    fn storage(&self) -> &Arc<dyn Storage> {
        self.objects.storage()
    }

    fn keys(&self) -> &Keys {
        self.objects.keys()
    }

    fn format(&self) -> Format {
        Format::WalG
    }

    fn describe(&self) -> String {
        self.objects.storage().describe()
    }

    fn wal_folder(&self) -> String {
        WAL.to_string()
    }

    fn backups(&self, concurrency: usize) -> Result<Vec<Backup>> {
        list_backups(self.objects.storage(), concurrency)
    }

    fn backup(&self, name: &str) -> Result<Backup> {
        read_backup(self.objects.storage().as_ref(), name)
    }

    fn no_backup(&self, concurrency: usize) -> Error {
        no_backup(&self.objects, concurrency)
    }

    fn open_wal(&self, name: &str) -> Result<WalObject> {
        let storage = self.objects.storage();
        let (key, codec, raw) = find(storage.as_ref(), name)?;
        let url = format!("{}/{key}", storage.describe());
        let reader = Box::new(decoded(raw, codec, &url, self.objects.keys()));
        Ok(WalObject { url, reader })
    }

    fn wal_inventory(&self, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)> {
        scan(&self.objects, segment_size, concurrency)
    }
}
/// Finds `name` under any codec extension: the common `.lz4` first with one request,
/// then one listing for whatever else exists. `NotFound` only if no key matches (and
/// storage proved the archive is there, see [`crate::storage::absence`]).
pub fn find(storage: &dyn Storage, name: &str) -> Result<(String, Codec, ObjectReader)> {
    let first = wal_key(name, Codec::Lz4);
    match storage.open(&first) {
        Ok(r) => return Ok((first, Codec::Lz4, r)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let prefix = format!("{WAL}{name}");
    let listed = storage.list_all(&prefix, false)?;
    for codec in ALL {
        let key = wal_key(name, codec);
        if !listed.iter().any(|o| o.key == key) {
            continue;
        }
        // Listed, yet a GET said NoSuchKey: the archive changes under us (an upload or a
        // deletion in progress, a store that lists before it serves). Never "absent".
        let changing = || {
            Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{}/{key}: listed, but its GET says NoSuchKey; the archive is changing, retry",
                    storage.describe()
                ),
            )
        };
        if codec == Codec::Lz4 {
            return Err(changing());
        }
        return match storage.open(&key) {
            Ok(r) => Ok((key.clone(), codec, r)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(changing()),
            Err(e) => Err(e),
        };
    }
    let unreadable: Vec<&str> = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| {
            k.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|ext| !ext.contains('.') && !matches!(ext, "partial" | "backup" | "history"))
        })
        .collect();
    if !unreadable.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{name}: the archive holds only {} ({}), in a compression walfetch cannot read",
                unreadable.join(", "),
                storage.describe()
            ),
        ));
    }
    holds_wal(storage)?;
    Err(Error::new(
        ErrorKind::NotFound,
        format!("{name}: not in {}/{WAL}", storage.describe()),
    ))
}

/// How long a proof that an archive holds WAL is trusted within one process.
const WAL_PROOF_TTL: Duration = Duration::from_secs(60);

/// Succeeds when `wal_005/` holds a WAL file (among its first keys): a WAL file is absent
/// only from a WAL folder that holds WAL. An archive with backups and no WAL at all is the wrong place
/// (or a provider that keeps WAL elsewhere), never "the end of the archive".
fn holds_wal(storage: &dyn Storage) -> Result<()> {
    static PROVEN: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
    let archive = storage.describe();
    let fresh = |proofs: &Vec<(String, Instant)>| proofs.iter().any(|(a, at)| *a == archive && at.elapsed() < WAL_PROOF_TTL);
    if fresh(&PROVEN.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(());
    }
    let page = storage.list_page(WAL, None, 100)?;
    let wal_named = |key: &str| {
        let file = key.strip_prefix(WAL).unwrap_or(key);
        WalFile::parse(Codec::split(file).0).is_some()
    };
    if !page.objects.iter().any(|o| wal_named(&o.key)) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{archive}/{WAL} holds no WAL at all, so no WAL file can be called absent from it; check the prefix (or ask the provider where the WAL is archived)"),
        ));
    }
    let mut proofs = PROVEN.lock().unwrap_or_else(|p| p.into_inner());
    proofs.retain(|(a, _)| *a != archive);
    proofs.push((archive, Instant::now()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::absence::ProvenAbsence;
    use crate::storage::fs::FsStorage;

    /// A storage that lists what it holds but answers every GET with `NoSuchKey`, as an
    /// archive being written (or deleted) under a reader does.
    struct ListsButLoses(Vec<&'static str>);

    impl Storage for ListsButLoses {
        fn describe(&self) -> String {
            "s3://b/p".into()
        }
        fn open(&self, key: &str) -> Result<ObjectReader> {
            Err(Error::new(ErrorKind::NotFound, format!("{key}: no such object")))
        }
        fn stat(&self, _: &str) -> Result<Option<u64>> {
            Ok(None)
        }
        fn list_chunk(&self, prefix: &str, _: bool, _: Option<&str>) -> Result<crate::storage::Chunk> {
            let objects = self
                .0
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| crate::storage::ObjectMeta {
                    key: k.to_string(),
                    size: 1,
                    modified: None,
                })
                .collect();
            Ok(crate::storage::Chunk {
                objects,
                folders: Vec::new(),
                next: None,
            })
        }
        fn list_page(&self, prefix: &str, _: Option<&str>, _: usize) -> Result<crate::storage::Page> {
            Ok(crate::storage::Page {
                objects: self.list_chunk(prefix, false, None)?.objects,
                truncated: false,
            })
        }
        fn holds_objects(&self) -> Result<bool> {
            Ok(true)
        }
        fn put(&self, _: &str, _: &std::fs::File) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn listed_but_not_found_is_never_absent() {
        for key in ["wal_005/000000010000000000000003.lz4", "wal_005/000000010000000000000003.zst"] {
            let err = find(&ListsButLoses(vec![key]), "000000010000000000000003").err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Unreachable, "{key}: {err}");
            assert!(err.message().contains("changing"), "{err}");
        }
        let err = find(
            &ListsButLoses(vec!["wal_005/000000010000000000000002.lz4"]),
            "000000010000000000000003",
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn a_wal_file_is_absent_only_from_a_wal_folder_that_holds_wal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("basebackups_005")).unwrap();
        std::fs::write(
            dir.path()
                .join("basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json"),
            b"{}",
        )
        .unwrap();
        let storage = ProvenAbsence::new(FsStorage::new(dir.path().to_path_buf()));
        let err = find(&storage, "000000010000000000000003").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.message().contains("holds no WAL"), "{err}");
        std::fs::create_dir_all(dir.path().join("wal_005")).unwrap();
        std::fs::write(dir.path().join("wal_005/000000010000000000000002.lz4"), b"x").unwrap();
        let err = find(&storage, "000000010000000000000003").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
}
