//! Safe extraction of backup tar streams into a target data directory.
//!
//! Rules, for any archive however hostile:
//! - Member names are relative to the data directory. A leading `/` is wal-g's way of
//!   writing them (`/global/1261`) and is stripped; `..` anywhere is refused. After that
//!   no name can leave the target.
//! - The only symlinks are tablespace links `pg_tblspc/<oid>`, created by walfetch from
//!   the plan; members under `pg_tblspc/<oid>/` are written through that link and nothing
//!   else is ever written through a symlink: every parent directory is checked to be a
//!   real directory, and files are opened with `O_NOFOLLOW`.
//! - Symlink members other than tablespace links, hard links and device nodes are refused.
//! - `global/pg_control` is staged under another name and only put in place by
//!   [`Target::install_pg_control`] once everything else is restored, so an interrupted
//!   restore can never be started.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tar::EntryType;

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::restore::delta::{apply_wi1, Action, Layer};

/// Where a staged `pg_control` waits until the restore is complete.
pub const STAGED_PG_CONTROL: &str = "global/pg_control.walfetch-staged";

/// Bytes copied from the tar stream to a file per write (the decoder hands over 128 KiB at a time).
const WRITE_BUFFER: usize = 128 * 1024;

/// Files at least this large get their disk space reserved before they are written
/// ([`fsutil::preallocate`]); for smaller ones the extra call costs more than it saves.
const PREALLOCATE_MIN: u64 = 1 << 20;

/// Counts of what one partition wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extracted {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Of the files, increments applied (delta backups).
    pub increments: u64,
}

/// A data directory being restored.
pub struct Target {
    root: PathBuf,
    tablespaces: BTreeMap<String, PathBuf>,
    checked_dirs: Mutex<HashSet<PathBuf>>,
}

/// Splits a member name into safe components.
pub fn sanitize(raw: &[u8], object: &str) -> Result<Vec<String>> {
    let name = std::str::from_utf8(raw).map_err(|_| {
        Error::new(
            ErrorKind::Unsafe,
            format!("{object}: member name is not UTF-8: {:?}", String::from_utf8_lossy(raw)),
        )
    })?;
    let mut parts = Vec::new();
    for comp in name.strip_prefix('/').unwrap_or(name).split('/') {
        match comp {
            "" | "." => continue,
            ".." => {
                return Err(Error::new(
                    ErrorKind::Unsafe,
                    format!("{object}: member '{name}' climbs out of the target with '..'; refusing the archive"),
                ))
            }
            c => parts.push(c.to_string()),
        }
    }
    Ok(parts)
}

/// The path of a member below the data directory: its sanitized name, below `under`
/// when the partition's members are relative to a folder of it.
fn member_parts(raw: &[u8], object: &str, under: Option<&str>) -> Result<Vec<String>> {
    let parts = sanitize(raw, object)?;
    Ok(match under {
        Some(root) => root.split('/').map(str::to_string).chain(parts).collect(),
        None => parts,
    })
}

fn is_tablespace_link(parts: &[String]) -> bool {
    parts.len() == 2 && parts[0] == "pg_tblspc" && parts[1].bytes().all(|b| b.is_ascii_digit())
}

impl Target {
    /// Prepares `root` (mode 0700) and the tablespace links of the plan. `resuming`: the
    /// target holds an interrupted restore of the same backup, so tablespace locations
    /// may hold files and their links may already be in place (pointing there).
    pub fn create(root: &Path, tablespaces: BTreeMap<String, PathBuf>, resuming: bool) -> Result<Target> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::local_io(root.display(), &e))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(|e| Error::local_io(root.display(), &e))?;
        let target = Target {
            root: root.to_path_buf(),
            tablespaces,
            checked_dirs: Mutex::new(HashSet::new()),
        };
        if !target.tablespaces.is_empty() {
            let tblspc = root.join("pg_tblspc");
            target.ensure_dir(&tblspc)?;
            for (oid, loc) in &target.tablespaces {
                let link = tblspc.join(oid);
                if resuming {
                    match fs::read_link(&link) {
                        Ok(to) if &to == loc => continue,
                        Ok(to) => {
                            return Err(Error::new(
                                ErrorKind::Refused,
                                format!(
                                    "tablespace {oid}: the interrupted restore put it in {}, this one asks for {}; resume with the same --tablespace-map",
                                    to.display(),
                                    loc.display()
                                ),
                            ))
                        }
                        Err(_) => {}
                    }
                }
                if !resuming && !fsutil::is_empty_dir(loc)? {
                    return Err(Error::new(
                        ErrorKind::Refused,
                        format!(
                            "tablespace {oid}: {} is not empty; empty it or relocate with --tablespace-map {oid}=PATH",
                            loc.display()
                        ),
                    ));
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(loc)
                    .map_err(|e| Error::local_io(loc.display(), &e))?;
                fsutil::symlink(loc, &link)?;
            }
        }
        Ok(target)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Final tablespace locations.
    pub fn tablespaces(&self) -> &BTreeMap<String, PathBuf> {
        &self.tablespaces
    }

    /// Where the file a backup names `rel` (relative to the data directory) is restored:
    /// `global/pg_control` at its staged place, everything else under the root
    /// (tablespace files through their links).
    pub fn path_of(&self, rel: &str) -> PathBuf {
        if rel == "global/pg_control" {
            self.root.join(STAGED_PG_CONTROL)
        } else {
            self.root.join(rel)
        }
    }

    /// Syncs the filesystems of the data directory and its tablespaces (`syncfs`): what
    /// was written so far is durable.
    pub fn sync(&self) -> Result<()> {
        fsutil::sync_filesystem(&self.root)?;
        for loc in self.tablespaces.values() {
            fsutil::sync_filesystem(loc)?;
        }
        Ok(())
    }

    /// Takes back a `pg_control` an interrupted restore had already put in place, so the
    /// directory cannot be started while the restore resumes.
    pub fn unstage_pg_control(&self) -> Result<()> {
        let staged = self.root.join(STAGED_PG_CONTROL);
        let installed = self.root.join("global/pg_control");
        if !staged.exists() && installed.exists() {
            fs::rename(&installed, &staged).map_err(|e| Error::local_io(installed.display(), &e))?;
            fsutil::fsync_dir(&self.root.join("global"))?;
        }
        Ok(())
    }

    /// Where the components of a member land, following only tablespace links.
    fn destination(&self, parts: &[String]) -> (PathBuf, usize) {
        if parts.len() > 2 && parts[0] == "pg_tblspc" {
            if let Some(loc) = self.tablespaces.get(&parts[1]) {
                return (loc.clone(), 2);
            }
        }
        (self.root.clone(), 0)
    }

    /// Makes sure `dir` is a real directory (creating it), never a symlink.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if self.checked_dirs.lock().unwrap_or_else(|p| p.into_inner()).contains(dir) {
            return Ok(());
        }
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::new(
                    ErrorKind::Unsafe,
                    format!("{}: is a symlink; refusing to write through it", dir.display()),
                ))
            }
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: a file where the backup has a directory", dir.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return self.ensure_dir_uncached(dir),
                Err(e) => return Err(Error::local_io(dir.display(), &e)),
            },
            Err(e) => return Err(Error::local_io(dir.display(), &e)),
        }
        self.checked_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf());
        Ok(())
    }

    /// Re-check after losing a creation race with another worker.
    fn ensure_dir_uncached(&self, dir: &Path) -> Result<()> {
        let m = fs::symlink_metadata(dir).map_err(|e| Error::local_io(dir.display(), &e))?;
        if !m.is_dir() {
            return Err(Error::new(
                ErrorKind::Unsafe,
                format!("{}: not a real directory; refusing to write through it", dir.display()),
            ));
        }
        self.checked_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf());
        Ok(())
    }

    /// Ensures every directory from `base` down to `base/parts[..end]`.
    fn ensure_path(&self, base: &Path, parts: &[String]) -> Result<PathBuf> {
        let mut dir = base.to_path_buf();
        self.ensure_dir(&dir)?;
        for p in parts {
            dir.push(p);
            self.ensure_dir(&dir)?;
        }
        Ok(dir)
    }

    /// Where a file member is written (`global/pg_control` staged), its parent
    /// directories made real directories on the way.
    fn member_path(&self, parts: &[String], object: &str) -> Result<PathBuf> {
        if parts.is_empty() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{object}: a file member with an empty name"),
            ));
        }
        let (base, skip) = self.destination(parts);
        let rel = &parts[skip..];
        let parent = self.ensure_path(&base, &rel[..rel.len() - 1])?;
        Ok(if parts.join("/") == "global/pg_control" {
            self.root.join(STAGED_PG_CONTROL)
        } else {
            parent.join(&rel[rel.len() - 1])
        })
    }

    /// Creates (or truncates) the file the backup names by `parts` (relative to the data
    /// directory) with `mode`: its parents made real directories, never written through
    /// a symlink, `global/pg_control` staged. Returns the open file and its path.
    pub fn create_file(&self, parts: &[String], mode: u32, object: &str) -> Result<(fs::File, PathBuf)> {
        let path = self.member_path(parts, object)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode((mode & 0o777) | 0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::new(
                    ErrorKind::Unsafe,
                    format!("{}: is a symlink; refusing to write through it", path.display()),
                ),
                _ => Error::local_io(path.display(), &e),
            })?;
        Ok((file, path))
    }

    /// Makes the directory the backup names by `parts` (relative to the data directory)
    /// a real directory, and its parents.
    pub fn create_dir(&self, parts: &[String]) -> Result<()> {
        let (base, skip) = self.destination(parts);
        self.ensure_path(&base, &parts[skip.min(parts.len())..]).map(|_| ())
    }

    /// Applies a `wi1` increment member (a delta backup's changed pages) to the file a
    /// lower layer of the chain restored ([`super::delta::apply_wi1`]); returns the
    /// file's size.
    fn apply_increment<R: Read>(&self, entry: &mut tar::Entry<'_, R>, parts: &[String], object: &str, buf: &mut [u8]) -> Result<u64> {
        let path = self.member_path(parts, object)?;
        let what = format!("{object}: increment of {}", parts.join("/"));
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::new(
                    ErrorKind::Corrupt,
                    format!("{what}: no earlier backup of the chain restored the file it changes"),
                ),
                _ => Error::local_io(path.display(), &e),
            })?;
        apply_wi1(entry, &file, &what, &path.display().to_string(), buf)
    }

    /// Writes a file member where it belongs (`global/pg_control` staged), never through
    /// a symlink; returns its bytes.
    fn write_member<R: Read>(&self, entry: &mut tar::Entry<'_, R>, parts: &[String], object: &str, buf: &mut [u8]) -> Result<u64> {
        let (mut out, path) = self.create_file(parts, entry.header().mode().unwrap_or(0o600), object)?;
        if entry.size() >= PREALLOCATE_MIN {
            fsutil::preallocate(&out, entry.size());
        }
        let mut bytes = 0;
        loop {
            let n = match entry.read(buf) {
                Ok(0) => return Ok(bytes),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tar_error(object, e)),
            };
            out.write_all(&buf[..n]).map_err(|e| Error::local_io(path.display(), &e))?;
            bytes += n as u64;
        }
    }

    /// Extracts one tar stream. `object` names the partition in errors; `under`, when
    /// given, is the folder of the data directory its members are relative to
    /// (`pg_tblspc/<oid>`); `cancel` stops the work early when another partition has
    /// failed; `layer` says what to do with each file (see [`super::delta`]); `written`
    /// hears of every file written whole or increment applied (its name relative to the
    /// data directory, and its size).
    pub fn extract<R: Read>(
        &self,
        reader: R,
        object: &str,
        under: Option<&str>,
        cancel: &AtomicBool,
        layer: &Layer,
        written: &mut dyn FnMut(&str, u64) -> Result<()>,
    ) -> Result<(Extracted, R)> {
        let mut archive = tar::Archive::new(reader);
        let mut stats = Extracted::default();
        let mut buf = vec![0u8; WRITE_BUFFER];
        let read_error = |e: io::Error| tar_error(object, e);
        for entry in archive.entries().map_err(read_error)? {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::new(
                    ErrorKind::LocalIo,
                    format!("{object}: stopped because another partition failed"),
                ));
            }
            let mut entry = entry.map_err(read_error)?;
            let parts = member_parts(&entry.path_bytes(), object, under)?;
            let shown = parts.join("/");
            match entry.header().entry_type() {
                EntryType::Directory => {
                    if parts.is_empty() || is_tablespace_link(&parts) && self.tablespaces.contains_key(&parts[1]) {
                        continue;
                    }
                    // An older layer of a delta chain makes no directories of its own: those
                    // still there are in the newest backup, and the files wanted from this
                    // layer make their parents; a dropped database's stays out.
                    if !layer.is_newest() {
                        continue;
                    }
                    let (base, skip) = self.destination(&parts);
                    self.ensure_path(&base, &parts[skip..])?;
                }
                EntryType::Regular | EntryType::Continuous => {
                    let bytes = match layer.action(&shown) {
                        Action::Skip => continue,
                        Action::Placeholder => {
                            let size = entry.size();
                            let (file, path) = self.create_file(&parts, 0o600, object)?;
                            file.set_len(size).map_err(|e| Error::local_io(path.display(), &e))?;
                            size
                        }
                        Action::Whole => self.write_member(&mut entry, &parts, object, &mut buf)?,
                        Action::Increment => {
                            stats.increments += 1;
                            self.apply_increment(&mut entry, &parts, object, &mut buf)?
                        }
                    };
                    written(&shown, bytes)?;
                    stats.bytes += bytes;
                    stats.files += 1;
                }
                EntryType::Symlink if is_tablespace_link(&parts) && self.tablespaces.contains_key(&parts[1]) => {
                    // Already created from the backup's tablespace spec (and relocation).
                }
                // An older layer's link of a tablespace dropped since: not restored.
                EntryType::Symlink if is_tablespace_link(&parts) && !layer.is_newest() => {}
                EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
                other => {
                    let link = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    return Err(Error::new(
                        ErrorKind::Unsafe,
                        format!(
                            "{object}: member '{shown}' is a {other:?}{}; only files, directories and tablespace links are allowed",
                            if link.is_empty() { String::new() } else { format!(" -> {link}") }
                        ),
                    ));
                }
            }
        }
        Ok((stats, archive.into_inner()))
    }

    /// Puts the staged `pg_control` in place: the last step of a restore.
    pub fn install_pg_control(&self) -> Result<()> {
        let staged = self.root.join(STAGED_PG_CONTROL);
        let dest = self.root.join("global/pg_control");
        if !staged.exists() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "the backup holds no global/pg_control; it cannot be started".to_string(),
            ));
        }
        fs::rename(&staged, &dest).map_err(|e| Error::local_io(dest.display(), &e))?;
        Ok(())
    }
}

/// An error reading a tar stream: the storage's own error if one is inside, else a
/// malformed stream.
fn tar_error(object: &str, e: io::Error) -> Error {
    Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{object}: malformed tar stream: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(EntryType::Regular);
        // Write the raw name so hostile names are not normalised by the builder.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    fn run(data: Vec<u8>, target: &Target) -> Result<Extracted> {
        target
            .extract(
                io::Cursor::new(data),
                "part_001.tar",
                None,
                &AtomicBool::new(false),
                &Layer::whole(),
                &mut |_, _| Ok(()),
            )
            .map(|(s, _)| s)
    }

    #[test]
    fn extracts_walg_and_walrus_names_and_stages_pg_control() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::create(&dir.path().join("pg"), BTreeMap::new(), false).unwrap();
        let data = tar_with(|b| {
            file(b, "/base/1/1259", b"abc");
            file(b, "global/1262", b"de");
            file(b, "/global/pg_control", b"ctl");
        });
        let s = run(data, &t).unwrap();
        assert_eq!((s.files, s.bytes), (3, 8));
        assert_eq!(fs::read(dir.path().join("pg/base/1/1259")).unwrap(), b"abc");
        assert!(!dir.path().join("pg/global/pg_control").exists());
        t.install_pg_control().unwrap();
        assert_eq!(fs::read(dir.path().join("pg/global/pg_control")).unwrap(), b"ctl");
    }

    #[test]
    fn refuses_dot_dot_and_foreign_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::create(&dir.path().join("pg"), BTreeMap::new(), false).unwrap();
        let err = run(tar_with(|b| file(b, "base/../../evil", b"x")), &t).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsafe);
        assert!(!dir.path().join("evil").exists());
        let err = run(tar_with(|b| symlink(b, "base/link", "/etc")), &t).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsafe);
        assert!(err.message().contains("base/link"), "{err}");
    }

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let t = Target::create(&dir.path().join("pg"), BTreeMap::new(), false).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("pg/base")).unwrap();
        let err = run(tar_with(|b| file(b, "base/1/x", b"x")), &t).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsafe);
        std::os::unix::fs::symlink(outside.join("f"), dir.path().join("pg/f")).unwrap();
        let err = run(tar_with(|b| file(b, "f", b"x")), &t).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsafe);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn writes_tablespace_members_through_the_planned_link() {
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().join("tbs");
        let mut plan = BTreeMap::new();
        plan.insert("16385".to_string(), loc.clone());
        let t = Target::create(&dir.path().join("pg"), plan, false).unwrap();
        run(tar_with(|b| file(b, "/pg_tblspc/16385/PG_15_1/5/16390", b"rel")), &t).unwrap();
        assert_eq!(fs::read(loc.join("PG_15_1/5/16390")).unwrap(), b"rel");
        assert_eq!(fs::read_link(dir.path().join("pg/pg_tblspc/16385")).unwrap(), loc);
    }

    #[test]
    fn truncated_tar_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::create(&dir.path().join("pg"), BTreeMap::new(), false).unwrap();
        let mut data = tar_with(|b| file(b, "base/1/1", &[7u8; 5000]));
        data.truncate(2048);
        let err = run(data, &t).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
}
