//! Absence is proven, never inferred: a decorator that lets an answer of "no such
//! object" or "nothing listed" through only when the archive root holds something.
//!
//! Below this layer each backend decides what counts as an answer at all (S3: only a
//! GET's `NoSuchKey`, or a listing that succeeded; a directory: only a missing file in
//! an existing directory). What a backend cannot see from one request is whether the
//! archive is where the prefix says: a typo in an S3 prefix gets `NoSuchKey` for every
//! segment, and `wal-fetch` would tell PostgreSQL that the archive ended, so archive
//! recovery would promote at the first segment. So every absence and every empty listing
//! is checked against [`Storage::holds_objects`]; an empty root is a configuration error.
//! The proof is kept for [`PROOF_TTL`], so a run of misses costs one extra request.

use std::fs::File;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{Chunk, ObjectMeta, ObjectReader, Page, PendingRange, Storage};
use crate::error::{Error, ErrorKind, Result};

/// How long a proof that the root holds objects is trusted within one process.
pub const PROOF_TTL: Duration = Duration::from_secs(60);

/// A storage whose absences are proven (see the module documentation).
pub struct ProvenAbsence<S> {
    inner: S,
    /// When the root was last seen to hold objects.
    proven: Mutex<Option<Instant>>,
}

impl<S: Storage> ProvenAbsence<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ProvenAbsence {
            inner,
            proven: Mutex::new(None),
        }
    }

    /// Succeeds when the root holds objects (proven recently, or now).
    fn prove(&self) -> Result<()> {
        let mut proven = self.proven.lock().unwrap_or_else(|p| p.into_inner());
        if proven.is_some_and(|at| at.elapsed() < PROOF_TTL) {
            return Ok(());
        }
        if self.inner.holds_objects()? {
            *proven = Some(Instant::now());
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} holds no objects, so nothing in it can be called absent; check the prefix (--prefix, WALG_S3_PREFIX, WALG_FILE_PREFIX)",
                self.inner.describe()
            ),
        ))
    }

    /// `result`, with an absence let through only once proven.
    fn proven<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if e.kind() == ErrorKind::NotFound => self.prove().and(Err(e)),
            other => other,
        }
    }
}

impl<S: Storage> Storage for ProvenAbsence<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        self.proven(self.inner.open(key))
    }

    /// Writers ask before uploading; an empty archive is where the first upload goes.
    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.inner.stat(key)
    }

    fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
        self.inner.request_range(key, start, end, etag)
    }

    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<Chunk> {
        self.inner.list_chunk(prefix, recursive, token)
    }

    fn list(&self, prefix: &str, recursive: bool, each: &mut dyn FnMut(Vec<ObjectMeta>) -> Result<()>) -> Result<()> {
        let mut seen = 0usize;
        self.inner.list(prefix, recursive, &mut |page| {
            seen += page.len();
            each(page)
        })?;
        if seen == 0 {
            self.prove()?;
        }
        Ok(())
    }

    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page> {
        let page = self.inner.list_page(prefix, start_after, max_keys)?;
        if page.objects.is_empty() {
            self.prove()?;
        }
        Ok(page)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn holds_objects(&self) -> Result<bool> {
        self.inner.holds_objects()
    }

    fn put(&self, key: &str, source: &File) -> Result<()> {
        self.inner.put(key, source)
    }

    fn credentials_expiry(&self) -> Result<Option<SystemTime>> {
        self.inner.credentials_expiry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;

    #[test]
    fn absence_in_an_empty_or_missing_root_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ProvenAbsence::new(FsStorage::new(dir.path().join("nope")));
        for err in [
            missing.open("wal_005/000000010000000000000001").err().unwrap(),
            missing.list_all("basebackups_005/", false).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            assert!(err.message().contains("check the prefix"), "{err}");
        }

        std::fs::create_dir_all(dir.path().join("empty/wal_005")).unwrap();
        let empty = ProvenAbsence::new(FsStorage::new(dir.path().join("empty")));
        let err = empty.open("wal_005/000000010000000000000001").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(empty.list_page("wal_005/", None, 10).unwrap_err().kind(), ErrorKind::Config);

        std::fs::write(dir.path().join("empty/wal_005/000000010000000000000002"), b"x").unwrap();
        let err = empty.open("wal_005/000000010000000000000001").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(empty.list_all("basebackups_005/", false).unwrap().is_empty());
        let err = empty.open("basebackups_005/x_backup_stop_sentinel.json").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
}
