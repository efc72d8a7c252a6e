//! The restore journal: what an interrupted restore has finished, so `backup-fetch
//! --resume` fetches only the rest.
//!
//! The journal is `WALFETCH_RESTORE_JOURNAL` in the target, one JSON object per line:
//! - first, the header naming the backup (name, start and finish LSN): a resume of
//!   another backup is refused;
//! - `{"file":…}` for every file a partition has written whole (path, size), appended
//!   as the partition goes, without a sync;
//! - `{"done":…}` once every file of a partition is written: appended and synced only
//!   after the restored data is synced (one `syncfs` of the target's filesystems), so
//!   a `done` line never vouches for data that a crash could still lose.
//!
//! Why it is safe against a crash at any point: the header is in place (written to a
//! temporary, synced, renamed, directory synced) before the first partition starts, and
//! the marker before it, so a target without a header has no restored data worth
//! keeping. A line is only ever appended; a crash in the middle of one leaves a last
//! line without its newline, which the resume ignores and cuts off. A partition cut in
//! the middle has no `done` line and is fetched again whole, its files overwritten. A
//! `done` line is trusted only if the files recorded for that partition are all still
//! there with their sizes (someone may have deleted or truncated files since); if not,
//! the partition is fetched again. With `--no-sync`, `done` lines are written without
//! syncs and carry the boot they were written in: they survive a killed process, and
//! after a reboot they are not trusted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::constants::{INCOMPLETE_MARKER, RESTORE_JOURNAL};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;

/// Which restore a journal belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Backup name.
    pub backup: String,
    /// The backup's start LSN, as the sentinel gives it.
    pub start_lsn: Option<String>,
    /// The backup's finish LSN, as the sentinel gives it.
    pub finish_lsn: Option<String>,
    /// The cluster's system identifier, as the sentinel gives it: two clusters' backups
    /// can share a name and LSNs (fresh clusters start alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<u64>,
    /// The backup's finish time, as the sentinel gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// The first line.
    Journal {
        /// Format version.
        version: u32,
        /// The restore.
        #[serde(flatten)]
        identity: Identity,
    },
    /// A file a partition wrote whole.
    File {
        /// Partition key.
        partition: String,
        /// Path relative to the data directory, as the backup names it.
        path: String,
        /// Bytes written.
        size: u64,
    },
    /// A partition is fetched again: earlier lines about it no longer count.
    Redo {
        /// Partition key.
        partition: String,
    },
    /// A partition finished.
    Done {
        /// Partition key.
        partition: String,
        /// Files it wrote.
        files: u64,
        /// Bytes of file contents it wrote.
        bytes: u64,
        /// The boot it was written in, when not synced (`--no-sync`).
        unsynced_boot: Option<String>,
    },
}

/// The version this build writes and reads.
const VERSION: u32 = 1;

/// An open journal, appended to as partitions finish.
pub struct Journal {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    sync: bool,
}

/// What a resume may skip.
#[derive(Debug, Default)]
pub struct Vouched {
    /// Partitions finished, with their files still in place.
    pub partitions: BTreeSet<String>,
    /// Partitions the journal says finished but whose files are no longer as written
    /// (or whose unsynced record predates a reboot): fetched again.
    pub distrusted: Vec<(String, String)>,
}

/// The text of the marker an interrupted restore of `identity` leaves in the target:
/// a sentence for people, then the identity (the journal's header line), so a target
/// whose journal was never written or is already removed still says which backup it
/// holds.
pub fn marker_text(identity: &Identity) -> Result<String> {
    Ok(format!(
        "walfetch is restoring {} here; this directory is unusable until this file is gone.\n{}",
        identity.backup,
        header_line(identity)?
    ))
}

/// The last line of a marker whose restore has restored, checked and synced everything,
/// and has only the final steps left (install `pg_control`, remove journal and marker).
const FINISHING: &str = "finishing: every file is restored, checked and synced; only the final steps remain";

/// The marker text of a restore of `identity` that is finishing (see [`FINISHING`]): a
/// crash from here on leaves a directory that `--resume` completes without fetching.
pub fn finishing_marker_text(identity: &Identity) -> Result<String> {
    Ok(format!("{}{FINISHING}\n", marker_text(identity)?))
}

/// Whether the interrupted restore in `dir` had reached its final steps.
pub fn is_finishing(dir: &Path) -> Result<bool> {
    let path = dir.join(INCOMPLETE_MARKER);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(t.lines().nth(2) == Some(FINISHING)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::local_io(path.display(), &e)),
    }
}

fn header_line(identity: &Identity) -> Result<String> {
    let mut text = serde_json::to_string(&Line::Journal {
        version: VERSION,
        identity: identity.clone(),
    })
    .map_err(|e| Error::new(ErrorKind::LocalIo, format!("journal header: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// The identity of the interrupted restore in `dir`: from its journal's header, else
/// from its marker; `None` when neither says (a marker left by an older walfetch).
pub fn identity_in(dir: &Path) -> Result<Option<Identity>> {
    if let Some(found) = header_in(&dir.join(RESTORE_JOURNAL))? {
        return Ok(Some(found));
    }
    header_in_marker(&dir.join(INCOMPLETE_MARKER))
}

fn header_in_marker(path: &Path) -> Result<Option<Identity>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    Ok(text.lines().nth(1).and_then(|l| header(&format!("{l}\n"), path).ok().flatten()))
}

fn header_in(path: &Path) -> Result<Option<Identity>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let mut first = String::new();
    BufReader::new(file)
        .read_line(&mut first)
        .map_err(|e| Error::local_io(path.display(), &e))?;
    header(&first, path)
}

/// Refuses to resume `identity` in `dir` when its journal records another restore.
pub fn check_identity(dir: &Path, identity: &Identity) -> Result<()> {
    match identity_in(dir)? {
        Some(found) if &found != identity => Err(other_backup(dir, &found, identity)),
        Some(_) => Ok(()),
        None => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{}: holds an interrupted restore that does not say which backup it is (left by an older walfetch); pass --force to delete its contents and start over",
                dir.display()
            ),
        )),
    }
}

/// The error for a resume of `asked` in a target that holds an interrupted restore of `found`.
fn other_backup(dir: &Path, found: &Identity, asked: &Identity) -> Error {
    Error::new(
        ErrorKind::Refused,
        format!(
            "{}: holds an interrupted restore of {}, not {}; resume that one (backup-fetch {} {} --resume) or pass --force to start over",
            dir.display(),
            found.backup,
            asked.backup,
            dir.display(),
            found.backup
        ),
    )
}

/// What a journal vouches for: each partition recorded done (`done`: with why its record
/// cannot be trusted, if so) whose files (`owner`: path -> the partition that wrote it
/// last, and its size) are all `present`; the others are distrusted, with why.
fn vouch(
    done: BTreeMap<String, Option<String>>,
    owner: std::collections::HashMap<String, (String, u64)>,
    present: &dyn Fn(&str, u64) -> bool,
) -> Vouched {
    let mut broken: BTreeMap<String, String> = BTreeMap::new();
    for (path, (partition, size)) in owner {
        if !broken.contains_key(&partition) && !present(&path, size) {
            broken.insert(partition, format!("{path} is missing or not {size} bytes"));
        }
    }
    let mut vouched = Vouched::default();
    for (partition, distrust) in done {
        match distrust.or_else(|| broken.remove(&partition)) {
            Some(why) => vouched.distrusted.push((partition, why)),
            None => {
                vouched.partitions.insert(partition);
            }
        }
    }
    vouched
}

/// Parses a header line (`None`: torn, so never written whole).
fn header(line: &str, path: &Path) -> Result<Option<Identity>> {
    if !line.ends_with('\n') {
        return Ok(None);
    }
    match serde_json::from_str::<Line>(line) {
        Ok(Line::Journal { version, identity }) if version == VERSION => Ok(Some(identity)),
        Ok(Line::Journal { version, .. }) => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{}: a journal of format {version}, written by another walfetch version; pass --force to start over",
                path.display()
            ),
        )),
        _ => Err(Error::new(
            ErrorKind::Corrupt,
            format!("{}: not a walfetch restore journal; pass --force to start over", path.display()),
        )),
    }
}

impl Journal {
    /// Starts the journal of a new restore into `dir` (replacing any other).
    pub fn create(dir: &Path, identity: &Identity, sync: bool) -> Result<Journal> {
        let path = dir.join(RESTORE_JOURNAL);
        let text = header_line(identity)?;
        fsutil::write_atomically(&path, |f| f.write_all(text.as_bytes()), true)?;
        Journal::append_to(path, sync)
    }

    /// Opens the journal of an interrupted restore of `identity` in `dir`: the
    /// partitions it vouches for (each checked with `present(path, size)`, true when
    /// the file is there with that size), and the journal, ready to append to. With no
    /// journal (interrupted before its header was written), nothing is vouched for and
    /// a new one is started.
    pub fn resume(dir: &Path, identity: &Identity, sync: bool, present: &dyn Fn(&str, u64) -> bool) -> Result<(Journal, Vouched)> {
        let path = dir.join(RESTORE_JOURNAL);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Journal::create(dir, identity, sync)?, Vouched::default())),
            Err(e) => return Err(Error::local_io(path.display(), &e)),
        };
        let io = |e: std::io::Error| Error::local_io(path.display(), &e);
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        match header(&line, &path)? {
            None => return Ok((Journal::create(dir, identity, sync)?, Vouched::default())),
            Some(found) if &found != identity => return Err(other_backup(dir, &found, identity)),
            Some(_) => {}
        }
        // Files that fail their check, by partition; partitions finished (with whether
        // their record can be trusted after a reboot).
        let boot = boot_id();
        let mut done: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut owner: std::collections::HashMap<String, (String, u64)> = std::collections::HashMap::new();
        let mut whole = line.len() as u64;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            // A line that does not parse (a power loss can leave zeroed blocks where
            // unsynced lines were) ends what the journal vouches for: every `done`
            // before it was synced after its data, and what follows is fetched again.
            let parsed: Line = match serde_json::from_str(&line) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(journal = %path.display(), byte = whole, cause = %e, "the journal ends in a damaged line; what follows it is fetched again");
                    break;
                }
            };
            whole += n as u64;
            match parsed {
                Line::Redo { partition } => {
                    done.remove(&partition);
                }
                Line::File { partition, path, size } => {
                    // The last partition to write a path owns it (a delta's increment
                    // changes the size a lower layer wrote).
                    owner.insert(path, (partition, size));
                }
                Line::Done {
                    partition, unsynced_boot, ..
                } => {
                    let distrust = match unsynced_boot {
                        Some(b) if Some(&b) != boot.as_ref() => Some("recorded without a sync before a reboot".to_string()),
                        _ => None,
                    };
                    done.insert(partition, distrust);
                }
                Line::Journal { .. } => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{}: a second header at byte {whole}; pass --force to start over", path.display()),
                    ))
                }
            }
        }
        let vouched = vouch(done, owner, present);
        // Cut off a torn last line, so appends start on a line of their own.
        let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
        file.set_len(whole).map_err(io)?;
        if sync {
            file.sync_all().map_err(io)?;
        }
        Ok((Journal::append_to(path, sync)?, vouched))
    }

    fn append_to(path: PathBuf, sync: bool) -> Result<Journal> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::local_io(path.display(), &e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| Error::local_io(path.display(), &e))?;
        Ok(Journal {
            path,
            out: Mutex::new(BufWriter::with_capacity(64 * 1024, file)),
            sync,
        })
    }

    fn write(&self, line: &Line, flush: bool) -> Result<()> {
        let mut text = serde_json::to_string(line).map_err(|e| Error::new(ErrorKind::LocalIo, format!("journal line: {e}")))?;
        text.push('\n');
        let io = |e: std::io::Error| Error::local_io(self.path.display(), &e);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(text.as_bytes()).map_err(io)?;
        if flush {
            out.flush().map_err(io)?;
            if self.sync {
                out.get_ref().sync_data().map_err(io)?;
            }
        }
        Ok(())
    }

    /// Records a file `partition` has written whole.
    pub fn file(&self, partition: &str, path: &str, size: u64) -> Result<()> {
        self.write(
            &Line::File {
                partition: partition.to_string(),
                path: path.to_string(),
                size,
            },
            false,
        )
    }

    /// Records, synced, that `partition` (which an earlier run finished, but whose files
    /// cannot be trusted) is fetched again: its earlier lines no longer count, so an
    /// interruption of this fetch cannot leave them vouching for rewritten files.
    pub fn redo(&self, partition: &str) -> Result<()> {
        self.write(
            &Line::Redo {
                partition: partition.to_string(),
            },
            true,
        )
    }

    /// Records that `partition` is finished. The caller has synced the restored data
    /// first (unless the restore runs without syncs).
    pub fn done(&self, partition: &str, files: u64, bytes: u64) -> Result<()> {
        self.write(
            &Line::Done {
                partition: partition.to_string(),
                files,
                bytes,
                unsynced_boot: if self.sync { None } else { boot_id().or(Some(String::new())) },
            },
            true,
        )
    }

    /// Removes the journal: the restore is complete.
    pub fn remove(self) -> Result<()> {
        drop(self.out);
        fs::remove_file(&self.path).map_err(|e| Error::local_io(self.path.display(), &e))
    }
}

/// Removes the journal in `dir`, if there is one (completing a restore interrupted in its
/// final steps, whose journal may already be gone).
pub fn remove_in(dir: &Path) -> Result<()> {
    let path = dir.join(RESTORE_JOURNAL);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::local_io(path.display(), &e)),
        _ => Ok(()),
    }
}

/// This boot's identity (Linux), to tell a killed process from a reboot.
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Identity {
        Identity {
            backup: name.into(),
            start_lsn: Some("0/2000028".into()),
            finish_lsn: Some("0/2000100".into()),
            system_identifier: Some(7),
            finish_time: None,
        }
    }

    #[test]
    fn finished_partitions_with_their_files_in_place_are_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &id("b"), true).unwrap();
        j.file("p1", "base/1/1", 10).unwrap();
        j.file("p2", "base/1/2", 20).unwrap();
        j.done("p1", 1, 10).unwrap();
        j.file("p3", "base/1/3", 30).unwrap();
        j.done("p3", 1, 30).unwrap();
        drop(j);
        // p3's file was deleted since; p2 never finished.
        let (j, v) = Journal::resume(dir.path(), &id("b"), true, &|p, _| p != "base/1/3").unwrap();
        assert_eq!(v.partitions.iter().collect::<Vec<_>>(), ["p1"]);
        assert_eq!(v.distrusted.len(), 1);
        assert!(v.distrusted[0].1.contains("base/1/3"), "{:?}", v.distrusted);
        // Appending after a resume keeps every earlier line.
        j.done("p2", 1, 20).unwrap();
        drop(j);
        let (_, v) = Journal::resume(dir.path(), &id("b"), true, &|_, _| true).unwrap();
        assert_eq!(v.partitions.len(), 3);
    }

    #[test]
    fn a_file_a_later_partition_rewrote_is_checked_at_its_last_size() {
        // A delta's increment changes the size a lower layer's partition wrote.
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &id("b"), true).unwrap();
        j.file("full/p1", "base/1/1", 8192).unwrap();
        j.done("full/p1", 1, 8192).unwrap();
        j.file("delta/p1", "base/1/1", 16384).unwrap();
        j.done("delta/p1", 1, 16384).unwrap();
        drop(j);
        let (_, v) = Journal::resume(dir.path(), &id("b"), true, &|_, size| size == 16384).unwrap();
        assert_eq!(v.partitions.len(), 2, "{:?}", v.distrusted);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &id("b"), true).unwrap();
        j.done("p1", 0, 0).unwrap();
        drop(j);
        let path = dir.path().join(RESTORE_JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"done":{"partition":"p2","fi"#).unwrap();
        drop(f);
        let (j, v) = Journal::resume(dir.path(), &id("b"), true, &|_, _| true).unwrap();
        assert_eq!(v.partitions.iter().collect::<Vec<_>>(), ["p1"]);
        j.done("p3", 0, 0).unwrap();
        drop(j);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"fi\""), "{text}");
        let (_, v) = Journal::resume(dir.path(), &id("b"), true, &|_, _| true).unwrap();
        assert_eq!(v.partitions.iter().collect::<Vec<_>>(), ["p1", "p3"]);
    }

    #[test]
    fn another_backup_is_refused_and_a_missing_or_torn_header_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::create(dir.path(), &id("b"), true).unwrap());
        assert_eq!(identity_in(dir.path()).unwrap(), Some(id("b")));
        let e = Journal::resume(dir.path(), &id("c"), true, &|_, _| true).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(e.to_string().contains("interrupted restore of b, not c"), "{e}");
        // Same name, another backup (a new one under an old name): refused too.
        let mut other = id("b");
        other.finish_lsn = Some("0/3000000".into());
        assert!(Journal::resume(dir.path(), &other, true, &|_, _| true).is_err());

        let empty = tempfile::tempdir().unwrap();
        let (_, v) = Journal::resume(empty.path(), &id("c"), true, &|_, _| true).unwrap();
        assert!(v.partitions.is_empty());
        fs::write(empty.path().join(RESTORE_JOURNAL), br#"{"journal":{"vers"#).unwrap();
        let (_, v) = Journal::resume(empty.path(), &id("d"), true, &|_, _| true).unwrap();
        assert!(v.partitions.is_empty());
        assert_eq!(identity_in(empty.path()).unwrap(), Some(id("d")));
    }

    #[test]
    fn an_unsynced_record_from_another_boot_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &id("b"), false).unwrap();
        j.done("p1", 0, 0).unwrap();
        drop(j);
        let path = dir.path().join(RESTORE_JOURNAL);
        let (_, v) = Journal::resume(dir.path(), &id("b"), false, &|_, _| true).unwrap();
        assert_eq!(v.partitions.len(), 1, "same boot: a killed process loses nothing");
        let text = fs::read_to_string(&path).unwrap();
        let line = text.lines().nth(1).unwrap();
        let rebooted = line.replace(&boot_id().unwrap_or_default(), "another-boot");
        fs::write(&path, format!("{}\n{rebooted}\n", text.lines().next().unwrap())).unwrap();
        let (_, v) = Journal::resume(dir.path(), &id("b"), false, &|_, _| true).unwrap();
        assert!(v.partitions.is_empty());
        assert!(v.distrusted[0].1.contains("reboot"));
    }

    #[test]
    fn a_damaged_line_ends_what_is_vouched_for_and_a_redo_cancels_a_done() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &id("b"), true).unwrap();
        j.done("p1", 0, 0).unwrap();
        j.done("p2", 0, 0).unwrap();
        j.redo("p2").unwrap();
        drop(j);
        let path = dir.path().join(RESTORE_JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\0\0\0\0\n").unwrap();
        f.write_all(b"{\"done\":{\"partition\":\"p3\",\"files\":0,\"bytes\":0,\"unsynced_boot\":null}}\n")
            .unwrap();
        drop(f);
        let (j, v) = Journal::resume(dir.path(), &id("b"), true, &|_, _| true).unwrap();
        assert_eq!(v.partitions.iter().collect::<Vec<_>>(), ["p1"], "p2 redone, p3 after the damage");
        j.done("p4", 0, 0).unwrap();
        drop(j);
        let (_, v) = Journal::resume(dir.path(), &id("b"), true, &|_, _| true).unwrap();
        assert_eq!(v.partitions.iter().collect::<Vec<_>>(), ["p1", "p4"]);
    }

    #[test]
    fn the_marker_names_the_restore_when_the_journal_does_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(INCOMPLETE_MARKER), marker_text(&id("b")).unwrap()).unwrap();
        assert_eq!(identity_in(dir.path()).unwrap(), Some(id("b")));
        fs::write(dir.path().join(INCOMPLETE_MARKER), "walfetch is restoring something here\n").unwrap();
        assert_eq!(identity_in(dir.path()).unwrap(), None);
    }
}
