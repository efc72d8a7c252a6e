//! A non-exclusive base backup of a running cluster, written in wal-g's layout so that
//! walfetch, wal-g and walrus can all restore it (`walfetch backup-push`).
//!
//! 1. `pg_backup_start` (`pg_start_backup` before 15) on one connection ([`crate::pg::db`]).
//! 2. The data directory and tablespaces are walked, split into partitions of about the
//!    tar size threshold, and each is tarred, compressed into an anonymous spool file
//!    and uploaded, `concurrency` at a time.
//! 3. `pg_control.tar` goes up after every part; then `pg_backup_stop`, whose label and
//!    tablespace map go up in `backup_label.tar`.
//! 4. `files_metadata.json`, `metadata.json`, and last the sentinel, which marks the
//!    backup complete (typed in [`crate::layout`], as the reader reads them).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::codec::Codec;
use crate::constants::COPY_BUFFER_SIZE;
use crate::crypto::{Keys, Sealing};
use crate::error::{Error, ErrorKind, FirstError, Result};
use crate::fsutil;
use crate::layout::files_metadata::{database_of, DatabaseEntry, FileEntry, FilesMetadataDoc};
use crate::layout::sentinel::{BackupMetadata, Sentinel, TablespaceSpec};
use crate::layout::{backup_file_key, partitions_prefix, sentinel_key};
use crate::objects::Objects;
use crate::pg::db::Db;
use crate::push::delta::{self, Base, Plan};
use crate::storage::Storage;

/// wal-g's date format string, recorded in the sentinel and metadata.
const DATE_FMT: &str = "%Y-%m-%dT%H:%M:%S.%fZ";

/// Directories whose contents are never backed up (their entries are kept, empty).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_dynshmem",
    "pgsql_tmp",
];
/// Top-level files never backed up.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "recovery.conf",
    "standby.signal",
    "recovery.signal",
    "postgresql.auto.conf.tmp",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
];

/// One file or directory to put in a tar.
#[derive(Debug, Clone)]
struct Member {
    /// Name in the tar: PGDATA-relative, without a leading `/` (as wal-g's streamed
    /// backups and walrus write it; wal-g's readers accept both forms).
    name: String,
    path: PathBuf,
    dir: bool,
    size: u64,
    mode: u32,
    mtime: SystemTime,
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Walks `dir`, adding members named `prefix/<relative path>`.
fn walk(dir: &Path, prefix: &str, top: bool, out: &mut Vec<Member>, tablespaces: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::local_io(dir.display(), &e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let name = if prefix.is_empty() {
            file_name.clone()
        } else {
            format!("{prefix}/{file_name}")
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::local_io(path.display(), &e)),
        };
        if top && SKIP_FILES.contains(&file_name.as_str()) || file_name.starts_with("pgsql_tmp") || file_name == "pg_internal.init" {
            continue;
        }
        let member = |dir: bool, size: u64| Member {
            name: name.clone(),
            path: path.clone(),
            dir,
            size,
            mode: meta.mode() & 0o7777,
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        };
        if meta.file_type().is_symlink() {
            if prefix == "pg_tblspc" && file_name.bytes().all(|b| b.is_ascii_digit()) {
                let target = fs::read_link(&path).map_err(|e| Error::local_io(path.display(), &e))?;
                tablespaces.insert(file_name.clone(), target.clone());
                walk(&target, &name, false, out, tablespaces)?;
            } else {
                tracing::warn!(path = %path.display(), "skipping a symlink in the data directory");
            }
        } else if meta.is_dir() {
            out.push(member(true, 0));
            if !EMPTY_DIRS.contains(&file_name.as_str()) {
                walk(&path, &name, false, out, tablespaces)?;
            }
        } else if meta.is_file() {
            if name == "global/pg_control" {
                continue;
            }
            out.push(member(false, meta.len()));
        }
    }
    Ok(())
}

/// Splits members into partitions of about `threshold` bytes (directories ride along),
/// a new one also where the files of another database begin, so no partition holds two
/// databases' files: a restore of some databases (`--restore-only`) then skips whole
/// partitions of the others. Files of no database join any partition.
fn partition(members: Vec<Member>, threshold: u64) -> Vec<Vec<Member>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0;
    // The database whose files the current partition holds.
    let mut holds = None;
    for m in members {
        let of = if m.dir { None } else { database_of(&m.name) };
        let another = matches!((of, holds), (Some(a), Some(b)) if a != b);
        if size > 0 && (size + m.size > threshold || another) {
            parts.push(Vec::new());
            size = 0;
            holds = None;
        }
        holds = of.or(holds);
        size += m.size;
        parts.last_mut().expect("one partition").push(m);
    }
    parts
}

/// A `Write` that counts bytes on their way to the encoder.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file's content as of the header: padded with zeros if it shrank, cut if it grew
/// (WAL replay repairs both, as with any online backup).
struct Fixed<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Fixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// A file a partition accounts for.
#[derive(Debug, Clone)]
struct Written {
    /// Its member name.
    name: String,
    /// Its size on disk.
    size: u64,
    /// Its modification time (recorded for the next delta's comparison).
    mtime: SystemTime,
    /// Whole, as a `wi1` increment, or not in the tar at all (unchanged since the base).
    how: Stored,
}

/// How a file is in a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Whole,
    Increment,
    Skipped,
}

/// Appends member `m` to the tar (whole, or as an increment over `delta`'s base); what
/// was stored, or `None` for a directory or a file dropped during the backup.
fn append_member<W: Write>(builder: &mut tar::Builder<W>, m: &Member, delta: Option<&Base>) -> Result<Option<Written>> {
    let spool_err = |e: io::Error| Error::local_io("backup spool", &e);
    let mut header = tar::Header::new_gnu();
    header.set_mode(m.mode);
    header.set_mtime(m.mtime.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    if m.dir {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, &m.name, io::empty()).map_err(spool_err)?;
        return Ok(None);
    }
    let plan = match delta {
        None => Plan::Whole,
        Some(base) => match base.plan(&m.name, &m.path, m.size, m.mtime) {
            Ok(Some(plan)) => plan,
            Ok(None) => return Ok(None), // dropped during the backup
            Err(e) => return Err(Error::local_io(m.path.display(), &e)),
        },
    };
    let written = |how| Written {
        name: m.name.clone(),
        size: m.size,
        mtime: m.mtime,
        how,
    };
    if plan == Plan::Skipped {
        return Ok(Some(written(Stored::Skipped)));
    }
    let file = match File::open(&m.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None), // dropped during the backup
        Err(e) => return Err(Error::local_io(m.path.display(), &e)),
    };
    header.set_entry_type(tar::EntryType::Regular);
    let how = match plan {
        Plan::Increment { size, blocks } => {
            header.set_size(delta::increment_len(&blocks));
            builder
                .append_data(&mut header, &m.name, delta::Increment::new(file, size, blocks))
                .map_err(spool_err)?;
            Stored::Increment
        }
        _ => {
            header.set_size(m.size);
            builder
                .append_data(&mut header, &m.name, Fixed { inner: file, left: m.size })
                .map_err(spool_err)?;
            Stored::Whole
        }
    };
    Ok(Some(written(how)))
}

/// Tars `members` through `codec` into a spool file: (spool, tar bytes, compressed
/// bytes, files accounted for). With a `delta` base, relation files go in as increments
/// or not at all (see [`crate::push::delta`]).
fn build_tar(
    members: &[Member],
    codec: Codec,
    keys: &Keys,
    extra: &[(&str, &[u8])],
    delta: Option<&Base>,
) -> Result<(File, u64, u64, Vec<Written>)> {
    let spool = fsutil::anonymous_file(&std::env::temp_dir())?;
    let sink = io::BufWriter::with_capacity(COPY_BUFFER_SIZE, fsutil::reread(&spool).map_err(|e| Error::local_io("spool", &e))?);
    let encoder = codec.encoder(Sealing::new(sink, keys).map_err(|e| Error::local_io("spool", &e))?)?;
    let mut builder = tar::Builder::new(CountingWriter { inner: encoder, count: 0 });
    let spool_err = |e: io::Error| Error::local_io("backup spool", &e);
    let mut names = Vec::new();
    for m in members {
        names.extend(append_member(&mut builder, m, delta)?);
    }
    for (name, data) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, *data).map_err(spool_err)?;
        names.push(Written {
            name: name.to_string(),
            size: data.len() as u64,
            mtime: SystemTime::now(),
            how: Stored::Whole,
        });
    }
    let counting = builder.into_inner().map_err(spool_err)?;
    let tar_bytes = counting.count;
    let mut sink = counting.inner.finish().and_then(Sealing::finish).map_err(spool_err)?;
    sink.flush().map_err(spool_err)?;
    drop(sink);
    let compressed = spool.metadata().map_err(spool_err)?.len();
    Ok((spool, tar_bytes, compressed, names))
}

/// How to take a backup.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Compression of the partitions.
    pub codec: Codec,
    /// Partitions compressed and uploaded at once.
    pub concurrency: usize,
    /// Uncompressed bytes per partition (a larger file makes a partition of its own).
    pub tar_size_threshold: u64,
    /// Mark the backup permanent.
    pub permanent: bool,
}

/// What [`push`] stored.
#[derive(Debug)]
pub struct Pushed {
    /// The backup's name.
    pub name: String,
    /// Partitions uploaded (with `pg_control.tar` and `backup_label.tar`).
    pub partitions: usize,
    /// Bytes of the tar streams.
    pub uncompressed: u64,
    /// Bytes uploaded.
    pub compressed: u64,
    /// The base, when the backup is a delta.
    pub delta_from: Option<String>,
}

/// Where a backup's partitions go, and those uploaded so far: their sizes, and the
/// files in each.
struct Uploaded<'a> {
    storage: &'a dyn Storage,
    /// The keys partitions are encrypted with.
    keys: &'a Keys,
    /// The partitions' prefix.
    prefix: String,
    codec: Codec,
    tar_bytes: AtomicU64,
    compressed: AtomicU64,
    sets: Mutex<BTreeMap<String, Vec<Written>>>,
}

impl Uploaded<'_> {
    /// Tars and compresses `members` and `extra` files (against the `delta` base, if
    /// any) into partition `file`, uploads it, and records it.
    fn upload(&self, file: String, members: &[Member], extra: &[(&str, &[u8])], delta: Option<&Base>) -> Result<()> {
        let (spool, t, c, names) = build_tar(members, self.codec, self.keys, extra, delta)?;
        self.storage.put(&format!("{}{file}", self.prefix), &spool)?;
        self.tar_bytes.fetch_add(t, Ordering::Relaxed);
        self.compressed.fetch_add(c, Ordering::Relaxed);
        tracing::info!(object = %file, tar_bytes = t, compressed = c, "partition uploaded");
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).insert(file, names);
        Ok(())
    }
}

/// Takes a base backup of the cluster in `pgdata` (served by `db`) into `storage`: a
/// delta against `base` when one is given and the cluster is still on its timeline
/// ([`delta::choose`]), a full backup otherwise.
pub fn push(objects: &Objects, pgdata: &Path, db: &Db, opts: &Options, base: Option<Base>) -> Result<Pushed> {
    let storage = objects.storage().as_ref();
    let start_time = SystemTime::now();
    let sysid = db.system_identifier()?;
    let (start_lsn, segment) = db.start_backup(&format!("walfetch {}", rfc3339(start_time)))?;
    let base = base.filter(|b| {
        let same = crate::wal::name::Segment::parse(&segment).is_some_and(|s| s.timeline == b.segment.timeline);
        if !same {
            tracing::info!(base = %b.name, "the cluster has changed timeline since the delta base: taking a full backup");
        }
        same
    });
    // wal-g names a backup after pg_walfile_name_offset(start LSN), a delta with its
    // base's segment after `_D_`.
    let backup = match &base {
        Some(b) => b.delta_name(&segment),
        None => format!("base_{segment}"),
    };
    tracing::info!(backup = %backup, start_lsn = %start_lsn, "backup started");

    let mut members = Vec::new();
    let mut tablespaces = BTreeMap::new();
    walk(pgdata, "", true, &mut members, &mut tablespaces)?;
    let data_size: u64 = members.iter().map(|m| m.size).sum();
    let parts = partition(members, opts.tar_size_threshold.max(1));
    let uploaded = Uploaded {
        storage,
        keys: objects.keys(),
        prefix: partitions_prefix(&backup),
        codec: opts.codec,
        tar_bytes: AtomicU64::new(0),
        compressed: AtomicU64::new(0),
        sets: Mutex::new(BTreeMap::new()),
    };
    upload_parts(&parts, opts, &uploaded, base.as_ref())?;

    uploaded.upload(opts.codec.file_name("pg_control.tar"), &[control_member(pgdata)?], &[], None)?;
    let stop = db.stop_backup()?;
    let mut extra: Vec<(&str, &[u8])> = vec![("backup_label", stop.label.as_bytes())];
    if let Some(map) = &stop.tablespace_map {
        extra.push(("tablespace_map", map.as_bytes()));
    }
    uploaded.upload(opts.codec.file_name("backup_label.tar"), &[], &extra, None)?;

    let mut sentinel = Sentinel {
        lsn: Some(start_lsn.0),
        finish_lsn: Some(stop.lsn.0),
        pg_version: u64::try_from(db.version).ok(),
        system_identifier: Some(sysid),
        uncompressed_size: Some(uploaded.tar_bytes.load(Ordering::Relaxed)),
        compressed_size: Some(uploaded.compressed.load(Ordering::Relaxed)),
        data_catalog_size: Some(data_size),
        start_time: Some(rfc3339(start_time)),
        finish_time: Some(rfc3339(SystemTime::now())),
        date_fmt: Some(DATE_FMT.into()),
        hostname: Some(hostname()),
        data_dir: Some(pgdata.display().to_string()),
        is_permanent: Some(opts.permanent),
        version: Some(2),
        delta_from: base.as_ref().map(|b| b.name.clone()),
        delta_full_name: base.as_ref().map(|b| b.full_name.clone()),
        delta_from_lsn: base.as_ref().map(|b| b.from_lsn),
        delta_lsn: base.as_ref().map(|b| b.from_lsn),
        delta_count: base.as_ref().map(|b| b.count),
        ..Default::default()
    };
    if !tablespaces.is_empty() {
        sentinel.spec = Some(tablespace_spec(sentinel.data_dir.clone(), &tablespaces));
    }
    let sets = uploaded.sets.into_inner().unwrap_or_else(|p| p.into_inner());
    describe(storage, &backup, &sentinel, &sets, db.databases()?)?;
    Ok(Pushed {
        name: backup,
        partitions: sets.len(),
        uncompressed: sentinel.uncompressed_size.unwrap_or(0),
        compressed: sentinel.compressed_size.unwrap_or(0),
        delta_from: sentinel.delta_from.clone(),
    })
}

/// `global/pg_control`, copied last (after every data partition), as wal-g does.
fn control_member(pgdata: &Path) -> Result<Member> {
    let control = pgdata.join("global/pg_control");
    Ok(Member {
        name: "global/pg_control".into(),
        size: fs::metadata(&control)
            .map(|m| m.len())
            .map_err(|e| Error::local_io("global/pg_control", &e))?,
        path: control,
        dir: false,
        mode: 0o600,
        mtime: SystemTime::now(),
    })
}

/// The sentinel's tablespace spec: each tablespace's oid and location.
fn tablespace_spec(base_prefix: Option<String>, tablespaces: &BTreeMap<String, PathBuf>) -> TablespaceSpec {
    TablespaceSpec {
        base_prefix,
        locations: tablespaces
            .iter()
            .map(|(oid, loc)| (oid.clone(), loc.display().to_string()))
            .collect(),
    }
}

/// Uploads the data partitions, `opts.concurrency` at a time; the first failure stops
/// the others and is returned.
fn upload_parts(parts: &[Vec<Member>], opts: &Options, uploaded: &Uploaded<'_>, delta: Option<&Base>) -> Result<()> {
    let queue = Mutex::new(parts.iter().enumerate().map(|(i, p)| (i + 1, p)).collect::<VecDeque<_>>());
    let failed = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.min(parts.len()).max(1) {
            s.spawn(|| {
                while !failed.stopped() {
                    let Some((n, members)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                        return;
                    };
                    let file = opts.codec.file_name(&format!("part_{n:03}.tar"));
                    if let Err(e) = uploaded.upload(file, members, &[], delta) {
                        failed.keep(e);
                    }
                }
            });
        }
    });
    failed.into_result()
}

/// Uploads `files_metadata.json`, `metadata.json` and, last, the sentinel that marks
/// the backup complete.
fn describe(
    storage: &dyn Storage,
    backup: &str,
    sentinel: &Sentinel,
    sets: &BTreeMap<String, Vec<Written>>,
    databases: Vec<(String, u32)>,
) -> Result<()> {
    let mut files = FilesMetadataDoc {
        databases_by_names: databases.into_iter().map(|(n, oid)| (n, DatabaseEntry { oid })).collect(),
        ..FilesMetadataDoc::default()
    };
    for (set, written) in sets {
        for w in written {
            let entry = FileEntry {
                is_incremented: w.how == Stored::Increment,
                is_skipped: w.how == Stored::Skipped,
                mtime: Some(rfc3339(w.mtime)),
                updates_count: Some(0),
                size: Some(w.size),
            };
            files.files.insert(w.name.clone(), entry);
        }
        let in_tar = written.iter().filter(|w| w.how != Stored::Skipped);
        files.tar_file_sets.insert(set.clone(), in_tar.map(|w| w.name.clone()).collect());
    }
    upload_json(storage, &backup_file_key(backup, "files_metadata.json"), &files)?;
    let metadata = BackupMetadata {
        start_time: sentinel.start_time.clone().unwrap_or_default(),
        finish_time: sentinel.finish_time.clone().unwrap_or_default(),
        date_fmt: DATE_FMT.into(),
        hostname: sentinel.hostname.clone().unwrap_or_default(),
        data_dir: sentinel.data_dir.clone().unwrap_or_default(),
        pg_version: sentinel.pg_version.unwrap_or(0),
        start_lsn: sentinel.lsn.unwrap_or(0),
        finish_lsn: sentinel.finish_lsn.unwrap_or(0),
        is_permanent: sentinel.is_permanent.unwrap_or(false),
        system_identifier: sentinel.system_identifier.unwrap_or(0),
        uncompressed_size: sentinel.uncompressed_size.unwrap_or(0),
        compressed_size: sentinel.compressed_size.unwrap_or(0),
    };
    upload_json(storage, &backup_file_key(backup, "metadata.json"), &metadata)?;
    upload_json(storage, &sentinel_key(backup), sentinel)
}

/// Uploads `value` as JSON under `key`, through an anonymous spool file.
fn upload_json(storage: &dyn Storage, key: &str, value: &impl serde::Serialize) -> Result<()> {
    let mut spool = fsutil::anonymous_file(&std::env::temp_dir())?;
    serde_json::to_writer(io::BufWriter::new(&mut spool), value).map_err(|e| Error::new(ErrorKind::LocalIo, format!("{key}: {e}")))?;
    storage.put(key, &spool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_respect_the_threshold() {
        let m = |size| Member {
            name: "f".into(),
            path: "/f".into(),
            dir: false,
            size,
            mode: 0o600,
            mtime: SystemTime::UNIX_EPOCH,
        };
        let parts = partition(vec![m(5), m(5), m(5), m(20), m(1)], 10);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [2, 1, 1, 1]);
    }

    #[test]
    fn no_partition_holds_two_databases_and_files_of_none_join_any() {
        let m = |name: &str| Member {
            name: name.into(),
            path: format!("/{name}").into(),
            dir: false,
            size: 1,
            mode: 0o600,
            mtime: SystemTime::UNIX_EPOCH,
        };
        let names = [
            "PG_VERSION",
            "base/1/1259",
            "base/1/1249",
            "base/5/1259",
            "global/1262",
            "base/5/2600",
            "base/7/1",
        ];
        let parts = partition(names.iter().map(|n| m(n)).collect(), 100);
        let shown: Vec<Vec<&str>> = parts.iter().map(|p| p.iter().map(|m| m.name.as_str()).collect()).collect();
        assert_eq!(
            shown,
            [
                vec!["PG_VERSION", "base/1/1259", "base/1/1249"],
                vec!["base/5/1259", "global/1262", "base/5/2600"],
                vec!["base/7/1"]
            ]
        );
    }

    #[test]
    fn a_shrinking_file_is_padded_and_a_growing_one_cut() {
        let mut out = Vec::new();
        Fixed {
            inner: &b"abc"[..],
            left: 5,
        }
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"abc\0\0");
        out.clear();
        Fixed {
            inner: &b"abcdef"[..],
            left: 2,
        }
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"ab");
    }
}
