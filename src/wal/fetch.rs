//! Fetching one WAL file from the archive into a private temporary: the archive's format
//! finds and decodes it ([`Archive::open_wal`]; for wal-g's layout, [`find`] looks under
//! whichever codec it was stored with), and a segment is checked page by page and record
//! by record before anything can rename it where PostgreSQL reads.
//!
//! Shared by `wal-fetch` (directly, [`crate::wal::handover`]) and the prefetch fetcher
//! ([`crate::wal::prefetch`]), so a segment passes the same checks whichever way it came.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::archive::{Archive, WalObject};
use crate::codec::{Codec, ALL};
use crate::constants::COPY_BUFFER_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::RemoveOnDrop;
use crate::layout::timelines::read_error;
use crate::layout::{wal_key, WAL};
use crate::storage::{ObjectReader, Storage};
use crate::wal::name::{Segment, WalFile};
use crate::wal::records::{check_segment, OpenRecord};
use crate::wal::segment::SegmentCheck;

/// What the checks of a segment must hold against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    /// The data directory's system identifier (from `global/pg_control`).
    pub system_identifier: Option<u64>,
    /// The segment size, when pinned (`WALG_PG_WAL_SIZE`).
    pub segment_size: Option<u64>,
}

/// What [`download`] stored.
#[derive(Debug)]
pub struct Fetched {
    /// The object read.
    pub url: String,
    /// Bytes written.
    pub bytes: u64,
    /// For a segment, its last record if that runs on into the next segment.
    pub open: Option<OpenRecord>,
}

/// Downloads, decodes and checks WAL file `name` into the new file `tmp` (removed again
/// on failure); leaves it there on success.
pub fn download(archive: &dyn Archive, name: &str, tmp: &Path, expect: Expect) -> Result<Fetched> {
    let segment = WalFile::parse(name).and_then(|k| k.segment());
    let WalObject { url, reader: mut decoded } = archive.open_wal(name)?;
    let mut check = segment.map(|seg| SegmentCheck::new(&url, seg, expect.segment_size, expect.system_identifier));
    let guard = RemoveOnDrop(Some(tmp.to_path_buf()));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::local_io(tmp.display(), &e))?;
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        // Fill the buffer before writing, so writes are large even when chunks are small.
        let mut filled = 0;
        while filled < buf.len() {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&e, &url)),
            }
        }
        if filled == 0 {
            break;
        }
        if let Some(c) = check.as_mut() {
            c.feed(&buf[..filled]);
        }
        out.write_all(&buf[..filled]).map_err(|e| Error::local_io(tmp.display(), &e))?;
        total += filled as u64;
    }
    drop(out);
    let mut open = None;
    if let (Some(c), Some(seg)) = (&check, segment) {
        c.finish()?;
        open = check_file(tmp, seg, &url, None)?;
    }
    guard.disarm();
    Ok(Fetched { url, bytes: total, open })
}

/// Walks the segment file at `path` (page headers, record CRCs), after checking its size
/// and first page against `expect` when given; returns its last record if that runs on
/// into the next segment. The file is mapped, so memory stays flat for 1 GB segments.
pub fn check_file(path: &Path, seg: Segment, object: &str, expect: Option<Expect>) -> Result<Option<OpenRecord>> {
    with_mapped(path, |data| {
        if let Some(expect) = expect {
            let mut check = SegmentCheck::new(object, seg, expect.segment_size, expect.system_identifier);
            check.feed(data);
            check.finish()?;
        }
        Ok(check_segment(data, seg, object)?.open)
    })
}

/// Checks the segment file at `path` against `expect` and its name (size, first page:
/// magic, address, timeline, system identifier) without walking its records.
pub fn check_first_page(path: &Path, seg: Segment, object: &str, expect: Expect) -> Result<()> {
    with_mapped(path, |data| {
        let mut check = SegmentCheck::new(object, seg, expect.segment_size, expect.system_identifier);
        check.feed(data);
        check.finish()
    })
}

/// Runs `f` over the contents of the file at `path`, mapped.
pub fn with_mapped<T>(path: &Path, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    let file = fs::File::open(path).map_err(|e| Error::local_io(path.display(), &e))?;
    // SAFETY: every file mapped here is walfetch's own private temporary or a complete
    // segment that is only ever renamed or removed, never written in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::local_io(path.display(), &e))?;
    f(&map)
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
