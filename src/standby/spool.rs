//! The per-data-directory state shared by `wal-fetch` and the `follow` fetcher: the
//! prefetch spool in wal-g's layout (so the two tools' prefetch directories look alike),
//! and the small files that let each `wal-fetch` call, the fetcher and `walfetch status`
//! know what the others did.
//!
//! ```text
//! <base>/.wal-g/prefetch/<segment>                 ready: downloaded, decoded, validated
//! <base>/.wal-g/prefetch/.walfetch-open-<segment>  what the fetcher's walk of it found: its open record
//! <base>/.wal-g/prefetch/running/<segment>.<pid>   being downloaded by the fetcher
//! <base>/.wal-g/prefetch/.walfetch-follow.lock     flock held by the running fetcher
//! <base>/.wal-g/prefetch/.walfetch-follow.json     the running fetcher: pid, settings, server
//! <base>/.wal-g/prefetch/.walfetch-follow.log      its log (and .1, the one before)
//! <base>/.wal-g/prefetch/.walfetch-requested       the segment the fetcher's window starts at
//! <base>/.wal-g/prefetch/.walfetch-status.json     the fetcher's view: position, head, gap, failures
//! <base>/.wal-g/prefetch/.walfetch-refused-<seg>   why the fetcher refused a segment
//! <base>/.wal-g/prefetch/.walfetch-handover.json   the last segment handed to PostgreSQL, and its open record
//! <base>/.wal-g/prefetch/.walfetch-calls.json      the last restore_command calls and how they ended
//! ```
//!
//! `<base>` is `WALG_PREFETCH_DIR`, or the directory of `%p` (`pg_wal`). A segment moves
//! from `running/` to the spool by rename, and from the spool to `%p` by rename: it is
//! never visible half-written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::write_atomically;
use crate::wal::name::Segment;
use crate::wal::records::OpenRecord;

/// The spool of one data directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// What the fetcher last reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FollowStatus {
    /// The fetcher's process ID.
    pub pid: u32,
    /// When this was written (RFC 3339).
    pub updated: String,
    /// The segment the standby asked for last.
    pub wanted: Option<String>,
    /// Segments ready in the spool.
    pub ready: u64,
    /// The first segment missing from the archive while later ones exist.
    pub gap: Option<String>,
    /// When the gap was first seen (RFC 3339).
    pub gap_since: Option<String>,
    /// True when the fetcher is waiting for the archive to grow.
    pub at_archive_head: bool,
    /// A failure that keeps coming back, if downloads are failing now.
    #[serde(default)]
    pub failing: Option<Failing>,
}

/// A failure that repeats: what, since when, how often.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failing {
    /// The error kind's label (`credentials`, `unreachable`, …).
    pub kind: String,
    /// The latest message, one line.
    pub error: String,
    /// When this run of failures began (RFC 3339).
    pub since: String,
    /// Failures in this run.
    pub count: u64,
}

/// The running fetcher, as it describes itself when it starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetcherInfo {
    /// Its process ID.
    pub pid: u32,
    /// A digest of the settings it runs with (never the settings themselves).
    pub fingerprint: String,
    /// The PostgreSQL postmaster it serves, if one ran when it started.
    pub postmaster: Option<u32>,
    /// Run as a service (`--foreground`): never replaced by `wal-fetch`.
    #[serde(default)]
    pub foreground: bool,
    /// When it started (RFC 3339).
    pub started: String,
}

/// The last segment handed to PostgreSQL, so the next hand-over can check the record
/// that runs on from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandedOver {
    /// The segment's name.
    pub segment: String,
    /// Its last record, if that runs on into the next segment.
    pub open: Option<OpenRecord>,
}

/// How one restore_command call ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Call {
    /// The file PostgreSQL asked for (`%f`).
    pub file: String,
    /// When the call ended (RFC 3339).
    pub at: String,
    /// `restored`, `absent` or `failed`.
    pub outcome: String,
    /// The exit code PostgreSQL saw.
    pub exit_code: i32,
    /// The error kind's label, for a failure.
    pub kind: Option<String>,
    /// The error, one line, for a failure.
    pub error: Option<String>,
    /// When calls for this file began failing (RFC 3339), while they still fail.
    pub failing_since: Option<String>,
    /// Failed calls for this file in a row.
    pub failures: u64,
}

/// The last restore_command calls: for a segment, and for anything else (PostgreSQL
/// asks for history files between segment requests while it waits at the archive head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Calls {
    /// The last call for a WAL segment.
    pub segment: Option<Call>,
    /// The last call for any other file.
    pub other: Option<Call>,
    /// The last segment call that failed, kept until a call for that segment succeeds:
    /// a standby that cannot get segment N asks for N-1 again in between (to read the
    /// record that runs on into N), so the last call alone would hide it.
    #[serde(default)]
    pub failing: Option<Call>,
}

/// An exclusive lock held for the life of the fetcher.
pub struct FollowLock {
    _file: File,
}

impl Spool {
    /// The spool for a `%p` destination directory (usually `pg_wal`), under
    /// `prefetch_dir` (`WALG_PREFETCH_DIR`) when that is set.
    pub fn for_wal_dir(wal_dir: &Path, prefetch_dir: Option<&Path>) -> Spool {
        let base = prefetch_dir.unwrap_or(wal_dir);
        Spool {
            dir: base.join(".wal-g").join("prefetch"),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a ready segment lives.
    pub fn ready_path(&self, seg: &Segment) -> PathBuf {
        self.dir.join(seg.to_string())
    }

    /// The directory of downloads in progress.
    pub fn running_dir(&self) -> PathBuf {
        self.dir.join("running")
    }

    /// Creates the spool directories.
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(self.running_dir()).map_err(|e| Error::local_io(self.dir.display(), &e))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(".walfetch-follow.lock")
    }

    /// Takes the fetcher lock, or `None` if another fetcher holds it.
    pub fn try_lock(&self) -> Result<Option<FollowLock>> {
        self.create()?;
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::local_io(path.display(), &e))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            Ok(Some(FollowLock { _file: file }))
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(Error::local_io(path.display(), &io::Error::last_os_error()))
        }
    }

    /// Whether a fetcher is running (holds the lock).
    pub fn fetcher_running(&self) -> bool {
        match self.try_lock() {
            Ok(Some(_lock)) => false,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Records where the fetcher's window starts (best effort: the fetcher is an optimisation).
    pub fn set_requested(&self, seg: &Segment) {
        if self.create().is_ok() {
            let _ = write_atomically(
                &self.dir.join(".walfetch-requested"),
                |f| f.write_all(seg.to_string().as_bytes()),
                false,
            );
        }
    }

    /// The segment PostgreSQL asked for last, with the time it asked.
    pub fn requested(&self) -> Option<(Segment, std::time::SystemTime)> {
        let path = self.dir.join(".walfetch-requested");
        let text = fs::read_to_string(&path).ok()?;
        let when = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        Some((Segment::parse(text.trim())?, when))
    }

    /// Moves a ready segment to `dest`; false if the spool does not have it.
    pub fn take(&self, seg: &Segment, dest: &Path) -> Result<bool> {
        match fs::rename(self.ready_path(seg), dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::local_io(dest.display(), &e)),
        }
    }

    /// Where the reason for refusing `seg` is kept.
    pub fn refused_path(&self, seg: &Segment) -> PathBuf {
        self.dir.join(format!(".walfetch-refused-{seg}"))
    }

    /// Records that `seg` must not be handed to PostgreSQL, and why, and drops it from
    /// the spool. The record stays until someone deletes it.
    pub fn refuse(&self, seg: &Segment, why: &str) -> Result<()> {
        write_atomically(&self.refused_path(seg), |f| f.write_all(why.as_bytes()), false)?;
        match fs::remove_file(self.ready_path(seg)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::local_io(self.ready_path(seg).display(), &e)),
            _ => Ok(()),
        }
    }

    /// Why `seg` was refused, if it was.
    pub fn refused(&self, seg: &Segment) -> Option<String> {
        fs::read_to_string(self.refused_path(seg)).ok()
    }

    /// Whether the fetcher is downloading `seg` now.
    /// A download left behind by a dead fetcher (`kill -9`, replaced) does not count.
    pub fn in_flight(&self, seg: &Segment) -> bool {
        let prefix = format!("{seg}.");
        fs::read_dir(self.running_dir())
            .map(|it| {
                it.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix(&prefix)
                        .and_then(|pid| pid.parse::<u32>().ok())
                        .is_some_and(crate::fsutil::process_alive)
                })
            })
            .unwrap_or(false)
    }

    /// Forgets that `seg` was refused (a good copy was handed over since).
    pub fn clear_refusal(&self, seg: &Segment) {
        let _ = fs::remove_file(self.refused_path(seg));
    }

    /// Whether the fetcher this spool's `.walfetch-follow.json` names is alive and is a
    /// walfetch fetcher (not another process that got its pid since). Reads only: usable
    /// by `status` as any user.
    pub fn fetcher_alive(&self) -> Option<FetcherInfo> {
        let info = self.fetcher()?;
        let cmdline = fs::read(format!("/proc/{}/cmdline", info.pid)).ok()?;
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = words.iter().any(|w| *w == b"follow") && words.first().is_some_and(|w| String::from_utf8_lossy(w).contains("walfetch"));
        (ours && crate::fsutil::process_alive(info.pid)).then_some(info)
    }

    /// Where the fetcher's walk of the ready `seg` left its open record.
    fn open_path(&self, seg: &Segment) -> PathBuf {
        self.dir.join(format!("{OPEN_PREFIX}{seg}"))
    }

    /// Makes the checked download `tmp` the ready `seg`, with what its walk found (its
    /// last record, if that runs on into the next segment): the record first, then the
    /// segment, so a ready segment always has its record beside it.
    pub fn put_ready(&self, seg: &Segment, tmp: &Path, open: Option<OpenRecord>) -> Result<()> {
        let text = serde_json::to_vec(&open).map_err(|e| Error::new(ErrorKind::LocalIo, e.to_string()))?;
        write_atomically(&self.open_path(seg), |f| f.write_all(&text), false)?;
        fs::rename(tmp, self.ready_path(seg)).map_err(|e| Error::local_io(self.ready_path(seg).display(), &e))
    }

    /// What the fetcher's walk of `seg` found, if it recorded it; the record is removed.
    pub fn take_open(&self, seg: &Segment) -> Option<Option<OpenRecord>> {
        let path = self.open_path(seg);
        let open = serde_json::from_slice(&fs::read(&path).ok()?).ok();
        let _ = fs::remove_file(&path);
        open
    }

    /// Removes ready and running segments older than `seg` (lower timeline, or same
    /// timeline and lower number), as wal-g's prefetch does, with their records.
    pub fn remove_older_than(&self, seg: &Segment) {
        for dir in [self.dir.clone(), self.running_dir()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let name = name.strip_prefix(OPEN_PREFIX).unwrap_or(&name);
                let Some(other) = name.get(..24).and_then(Segment::parse) else {
                    continue;
                };
                if other.timeline < seg.timeline || other.timeline == seg.timeline && (other.log, other.seg) < (seg.log, seg.seg) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Writes `value` as the JSON file `name` in the spool, atomically.
    fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        self.create()?;
        let text = serde_json::to_vec_pretty(value).map_err(|e| Error::new(ErrorKind::LocalIo, format!("{name}: {e}")))?;
        write_atomically(&self.dir.join(name), |f| f.write_all(&text), false)
    }

    /// Reads the JSON file `name` in the spool, if it is there and readable.
    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Option<T> {
        serde_json::from_slice(&fs::read(self.dir.join(name)).ok()?).ok()
    }

    /// Writes the fetcher's status.
    pub fn write_status(&self, status: &FollowStatus) -> Result<()> {
        self.write_json(".walfetch-status.json", status)
    }

    /// The fetcher's last status, if any.
    pub fn status(&self) -> Option<FollowStatus> {
        self.read_json(".walfetch-status.json")
    }

    /// Records the running fetcher's identity.
    pub fn write_fetcher(&self, info: &FetcherInfo) -> Result<()> {
        self.write_json(".walfetch-follow.json", info)
    }

    /// The identity the running (or last) fetcher recorded.
    pub fn fetcher(&self) -> Option<FetcherInfo> {
        self.read_json(".walfetch-follow.json")
    }

    /// Where the fetcher logs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(".walfetch-follow.log")
    }

    /// Records what was handed to PostgreSQL last.
    pub fn write_handed_over(&self, last: &HandedOver) -> Result<()> {
        self.write_json(".walfetch-handover.json", last)
    }

    /// What was handed to PostgreSQL last, if recorded.
    pub fn handed_over(&self) -> Option<HandedOver> {
        self.read_json(".walfetch-handover.json")
    }

    /// Records the last restore_command calls.
    pub fn write_calls(&self, calls: &Calls) -> Result<()> {
        self.write_json(".walfetch-calls.json", calls)
    }

    /// The last restore_command calls, if recorded.
    pub fn calls(&self) -> Calls {
        self.read_json(".walfetch-calls.json").unwrap_or_default()
    }

    /// The segments the fetcher refused, with the reasons.
    pub fn refusals(&self) -> Vec<(String, String)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let seg = name.strip_prefix(".walfetch-refused-")?.to_string();
                Some((seg, fs::read_to_string(e.path()).unwrap_or_default()))
            })
            .collect();
        out.sort();
        out
    }

    /// Removes every ready segment (the fetcher that made them ran with other settings).
    pub fn clear_ready(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if Segment::parse(name.strip_prefix(OPEN_PREFIX).unwrap_or(&name)).is_some() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Name prefix of the record a ready segment's walk left ([`Spool::put_ready`]).
const OPEN_PREFIX: &str = ".walfetch-open-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_older_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            dir: dir.path().join(".wal-g/prefetch"),
        };
        let lock = spool.try_lock().unwrap().expect("first lock");
        assert!(spool.fetcher_running());
        drop(lock);
        assert!(!spool.fetcher_running());

        for s in ["000000010000000000000004", "000000010000000000000005", "000000010000000000000006"] {
            fs::write(spool.dir().join(s), b"x").unwrap();
        }
        fs::write(spool.running_dir().join("000000010000000000000003.123"), b"x").unwrap();
        let five = Segment::parse("000000010000000000000005").unwrap();
        spool.remove_older_than(&five);
        let mut left: Vec<String> = fs::read_dir(spool.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert!(left.contains(&"000000010000000000000005".to_string()) && !left.contains(&"000000010000000000000004".to_string()));
        assert!(!spool.in_flight(&Segment::parse("000000010000000000000003").unwrap()));
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(spool.take(&five, &dest).unwrap());
        assert!(!spool.take(&five, &dest).unwrap());
        spool.set_requested(&five);
        assert_eq!(spool.requested().unwrap().0, five);
    }
}
