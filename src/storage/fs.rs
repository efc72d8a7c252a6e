//! A local directory as archive storage (the embedded default), laid out exactly as
//! the bucket would be: `<root>/wal_005/…`, `<root>/basebackups_005/…`.
//!
//! Writes go to a hidden temporary name in the target directory, are fsynced, renamed
//! into place, and the directory is fsynced: a crash leaves either nothing or the whole
//! object. Listings skip hidden names, so temporaries are never seen as objects.
//!
//! The root must exist, for readers and writers alike: an unmounted network filesystem
//! or a typo in the prefix is a configuration error, never an empty archive.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Chunk, ObjectMeta, ObjectReader, Page, Storage};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;

/// Archive storage in a local directory.
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage rooted at `root` (which need not exist until something is written).
    pub fn new(root: PathBuf) -> Self {
        FsStorage { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_error(&self, key: &str, err: &io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => return self.not_found(key, err),
            io::ErrorKind::PermissionDenied => ErrorKind::Credentials,
            _ => ErrorKind::Unreachable,
        };
        Error::new(kind, format!("{}: {err}", self.path(key).display()))
    }

    /// `key` was not found: an absence, if the root is where the prefix says.
    fn not_found(&self, key: &str, err: &io::Error) -> Error {
        self.check_root()
            .err()
            .unwrap_or_else(|| Error::new(ErrorKind::NotFound, format!("{}: {err}", self.path(key).display())))
    }

    /// Fails unless the root is an existing directory.
    fn check_root(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::Config,
                format!("archive {}: not a directory; check the prefix", self.root.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "archive directory {} does not exist (an unmounted filesystem, a typo?); check the prefix",
                    self.root.display()
                ),
            )),
            Err(e) => Err(self.io_error("", &e)),
        }
    }

    /// Whether `dir` holds a regular file whose name is not hidden, within `depth` levels.
    fn any_object(dir: &Path, depth: usize) -> io::Result<bool> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_file() || kind.is_dir() && depth > 0 && Self::any_object(&entry.path(), depth - 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn walk(&self, dir: &Path, rel: &str, prefix: &str, recursive: bool, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.check_root(),
            Err(e) => return Err(self.io_error(rel, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error(rel, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let key = format!("{rel}{name}");
            let meta = entry.metadata().map_err(|e| self.io_error(&key, &e))?;
            if meta.is_dir() {
                let sub = format!("{key}/");
                let may_match = sub.starts_with(prefix) || prefix.starts_with(&sub);
                if recursive && may_match {
                    self.walk(&entry.path(), &sub, prefix, recursive, out)?;
                }
            } else if key.starts_with(prefix) {
                out.push(ObjectMeta {
                    key,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(())
    }
}

impl Storage for FsStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        let file = fs::File::open(self.path(key)).map_err(|e| self.io_error(key, &e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{}: is a directory, not an object", self.path(key).display()),
            ));
        }
        Ok(Box::new(file))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.check_root().map(|()| None),
            Err(e) => Err(self.io_error(key, &e)),
        }
    }

    fn holds_objects(&self) -> Result<bool> {
        self.check_root()?;
        Self::any_object(&self.root, 3).map_err(|e| self.io_error("", &e))
    }

    /// The whole listing in one chunk: a directory is read in one pass.
    fn list_chunk(&self, prefix: &str, recursive: bool, _token: Option<&str>) -> Result<Chunk> {
        let (dir_rel, _) = prefix
            .rsplit_once('/')
            .map(|(d, n)| (format!("{d}/"), n))
            .unwrap_or((String::new(), prefix));
        let mut objects = Vec::new();
        self.walk(&self.root.join(&dir_rel), &dir_rel, prefix, recursive, &mut objects)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut folders = Vec::new();
        if !recursive {
            if let Ok(entries) = fs::read_dir(self.root.join(&dir_rel)) {
                for entry in entries.flatten() {
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    let key = format!("{dir_rel}{name}/");
                    if !name.starts_with('.') && key.starts_with(prefix) && entry.path().is_dir() {
                        folders.push(key);
                    }
                }
            }
            folders.sort();
        }
        Ok(Chunk {
            objects,
            folders,
            next: None,
        })
    }

    /// A seek: a directory archive reads any range of a file at once.
    fn request_range(&self, key: &str, start: u64, end: u64, _etag: Option<&str>) -> Option<super::PendingRange> {
        let path = self.path(key);
        let key = key.to_string();
        let this = FsStorage::new(self.root.clone());
        Some(Box::new(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = fs::File::open(&path).map_err(|e| this.io_error(&key, &e))?;
            let total = file.metadata().map_err(|e| this.io_error(&key, &e))?.len();
            file.seek(SeekFrom::Start(start)).map_err(|e| this.io_error(&key, &e))?;
            Ok(super::RangeAnswer {
                reader: Box::new(file.take(end.saturating_sub(start))),
                total: Some(total),
                etag: None,
            })
        }))
    }

    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page> {
        let mut objects = self.list_all(prefix, false)?;
        if let Some(after) = start_after {
            objects.retain(|o| o.key.as_str() > after);
        }
        let truncated = objects.len() > max_keys;
        objects.truncate(max_keys);
        Ok(Page { objects, truncated })
    }

    fn put(&self, key: &str, source: &fs::File) -> Result<()> {
        self.check_root()?;
        let dest = self.path(key);
        let mut src = fsutil::reread(source).map_err(|e| Error::local_io(dest.display(), &e))?;
        fsutil::write_atomically(&dest, |out| io::copy(&mut src, out).map(|_| ()), true)
    }
}
