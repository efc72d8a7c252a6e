//! Archive storage: a small synchronous interface over a local directory and S3, with
//! decorators layered on top, each in its own file.
//!
//! ```text
//! ProvenAbsence<[RateLimited<]Retrying<S3Storage>[>]>    (S3)
//! ProvenAbsence<[RateLimited<]FsStorage[>]>             (a directory)
//! ```
//!
//! - [`s3::S3Storage`], [`fs::FsStorage`]: one request per call, classified;
//! - [`retry::Retrying`]: retries transient failures of each request (a body cut short
//!   resumes inside the S3 reader, where its ETag is);
//! - [`ratelimit::RateLimited`] (with `WALG_NETWORK_RATE_LIMIT`): every reader shares
//!   one bandwidth limit;
//! - [`absence::ProvenAbsence`]: an absence or an empty listing only from an archive
//!   root that holds objects.
//!
//! Keys are relative to the archive root (`wal_005/…`, `basebackups_005/…`). Reads
//! stream: `open` returns a `Read` that pulls the object in chunks and never holds it
//! whole. Errors are classified ([`crate::error::ErrorKind`]) at the bottom layer, so
//! "absent", "credentials rejected" and "unreachable" stay distinct all the way to the
//! exit code.
//!
//! [`download::Download`] reads many objects in a known order (a restore's partitions)
//! from any storage that answers ranged requests, their parts in parallel.

pub mod absence;
pub mod download;
pub mod fs;
pub mod keyspace;
pub mod ratelimit;
pub mod retry;
pub mod s3;
pub mod settings;

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use absence::ProvenAbsence;
use settings::{Connection, Location};

use crate::error::Result;

/// One object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the archive root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub modified: Option<SystemTime>,
}

/// One page of a listing: objects in key order, and whether more follow.
#[derive(Debug, Default)]
pub struct Page {
    /// The objects of this page, ascending by key.
    pub objects: Vec<ObjectMeta>,
    /// Whether the listing stopped at `max_keys` with more objects after the last one.
    pub truncated: bool,
}

/// One chunk of a listing, and where the next one starts.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The objects of this chunk, ascending by key.
    pub objects: Vec<ObjectMeta>,
    /// In a non-recursive listing, the folders directly below the prefix (keys relative
    /// to the archive root, ending in `/`): S3's common prefixes, a directory's
    /// subdirectories.
    pub folders: Vec<String>,
    /// The continuation token of the next chunk; `None` after the last.
    pub next: Option<String>,
}

/// A streaming reader over one object.
pub type ObjectReader = Box<dyn Read + Send>;

/// The answer to a ranged request.
pub struct RangeAnswer {
    /// The bytes asked for (or the whole object, when the server ignored the range).
    pub reader: ObjectReader,
    /// The whole object's size, from the answer's `Content-Range`; `None` when the
    /// server ignored the range and sent the whole object.
    pub total: Option<u64>,
    /// The object's version (ETag), to pin the other ranges to.
    pub etag: Option<String>,
}

/// A ranged request under way: calling it waits for the answer.
pub type PendingRange = Box<dyn FnOnce() -> Result<RangeAnswer> + Send>;

/// The operations walfetch needs from an archive backend.
pub trait Storage: Send + Sync {
    /// Human-readable archive root, for messages (`s3://bucket/prefix`, `file:///dir`).
    fn describe(&self) -> String;

    /// Opens `key` for streaming reads. Absence is an error of kind `NotFound`.
    fn open(&self, key: &str) -> Result<ObjectReader>;

    /// Sends a request for the bytes `[start, end)` of `key` (of version `etag`, when
    /// given) without waiting for the answer; `None` when the backend cannot.
    fn request_range(&self, _key: &str, _start: u64, _end: u64, _etag: Option<&str>) -> Option<PendingRange> {
        None
    }

    /// The object's size if it exists, `None` if it definitely does not.
    fn stat(&self, key: &str) -> Result<Option<u64>>;

    /// One chunk (one request) of the listing of `prefix`, from `token` (the previous
    /// chunk's `next`; `None` for the first).
    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<Chunk>;

    /// Lists objects whose keys start with `prefix`. Non-recursive listings stop at the
    /// next `/` and report only objects directly below. Chunks are passed to `each` as
    /// they arrive, so memory does not grow with the number of keys.
    fn list(&self, prefix: &str, recursive: bool, each: &mut dyn FnMut(Vec<ObjectMeta>) -> Result<()>) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let chunk = self.list_chunk(prefix, recursive, token.as_deref())?;
            each(chunk.objects)?;
            match chunk.next {
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The folders directly below `prefix` (keys relative to the archive root, ending in
    /// `/`), in key order: how a format finds its stanzas or servers.
    fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        let mut token: Option<String> = None;
        let mut folders = Vec::new();
        loop {
            let chunk = self.list_chunk(prefix, false, token.as_deref())?;
            folders.extend(chunk.folders);
            match chunk.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        folders.sort();
        folders.dedup();
        Ok(folders)
    }

    /// Reads the bytes `[start, end)` of `key`: one ranged request, or a seek.
    fn open_range(&self, key: &str, start: u64, end: u64) -> Result<ObjectReader> {
        match self.request_range(key, start, end, None) {
            Some(pending) => Ok(Box::new(pending()?.reader.take(end.saturating_sub(start)))),
            None => {
                let mut whole = self.open(key)?;
                std::io::copy(&mut (&mut whole).take(start), &mut std::io::sink()).map_err(|e| crate::error::Error::local_io(key, &e))?;
                Ok(Box::new(whole.take(end.saturating_sub(start))))
            }
        }
    }

    /// One page of a non-recursive listing: at most `max_keys` objects whose keys start
    /// with `prefix` and sort after `start_after` (any string, not necessarily a key).
    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page>;

    /// Whether every request is a network round trip. Then listing disjoint key ranges at
    /// once beats one listing ([`keyspace`]), and a restore keeps more partitions in
    /// flight than there are cores, to overlap the waits.
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether the archive root exists and holds at least one object. An answer of
    /// absence from an archive that holds nothing proves nothing (a typo in the prefix, an
    /// unmounted directory): [`absence::ProvenAbsence`] turns it into a configuration error.
    fn holds_objects(&self) -> Result<bool>;

    /// Stores the contents of `source` (read from its start) under `key`, atomically:
    /// readers see either no object or the whole new one.
    fn put(&self, key: &str, source: &File) -> Result<()>;

    /// When the credentials in use expire, if the credential provider says.
    fn credentials_expiry(&self) -> Result<Option<SystemTime>> {
        Ok(None)
    }

    /// Collects a whole listing (for small prefixes such as one backup's partitions).
    fn list_all(&self, prefix: &str, recursive: bool) -> Result<Vec<ObjectMeta>> {
        let mut all = Vec::new();
        self.list(prefix, recursive, &mut |page| {
            all.extend(page);
            Ok(())
        })?;
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

/// Opens the backend the settings name, with its decorators (see the module doc).
pub fn open(settings: &Connection) -> Result<Arc<dyn Storage>> {
    let limit = settings.tuning.rate_limit;
    Ok(match &settings.location {
        Location::File { root } => {
            let fs = fs::FsStorage::new(root.clone());
            match limit {
                Some(rate) => Arc::new(ProvenAbsence::new(ratelimit::RateLimited::new(fs, rate))),
                None => Arc::new(ProvenAbsence::new(fs)),
            }
        }
        Location::S3 { .. } => {
            let s3 = retry::Retrying::new(s3::S3Storage::connect(settings)?, settings.tuning.max_retries);
            match limit {
                Some(rate) => Arc::new(ProvenAbsence::new(ratelimit::RateLimited::new(s3, rate))),
                None => Arc::new(ProvenAbsence::new(s3)),
            }
        }
    })
}
