//! `walfetch backup-push PGDATA`: a non-exclusive base backup of a running cluster,
//! written in wal-g's layout so that walfetch, wal-g and walrus can all restore it.
//!
//! 1. `pg_backup_start` (`pg_start_backup` before 15) on one connection (libpq
//!    environment: `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`).
//! 2. The data directory and tablespaces are walked, split into partitions of about
//!    `WALG_TAR_SIZE_THRESHOLD` bytes, and each is tarred, compressed into an anonymous
//!    spool file and uploaded, `WALG_UPLOAD_CONCURRENCY` at a time.
//! 3. `pg_control.tar` goes up after every part; then `pg_backup_stop`, whose label and
//!    tablespace map go up in `backup_label.tar`.
//! 4. `files_metadata.json`, `metadata.json`, and last the sentinel, which marks the
//!    backup complete.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde_json::json;

use super::wal_push::compression;
use crate::cli::{absolute, default_concurrency};
use crate::codec::Codec;
use crate::constants::{COPY_BUFFER_SIZE, DEFAULT_TAR_SIZE_THRESHOLD};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::layout::{backup_file_key, partitions_prefix, sentinel_key};
use crate::storage::Storage;
use crate::wal::name::Lsn;

/// Options of `backup-push`.
#[derive(Debug, Args)]
pub struct BackupPush {
    /// Data directory of the running cluster.
    pub pgdata: PathBuf,
    /// Compression: lz4, zstd, brotli, lzma or none [env: WALG_COMPRESSION_METHOD; default: lz4]
    #[arg(long)]
    pub compression: Option<String>,
    /// Partitions compressed and uploaded at once [env: WALG_UPLOAD_CONCURRENCY; default: cores]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Uncompressed bytes per partition [env: WALG_TAR_SIZE_THRESHOLD; default: 1 GiB]
    #[arg(long)]
    pub tar_size_threshold: Option<u64>,
    /// Mark the backup permanent (kept by retention).
    #[arg(long)]
    pub permanent: bool,
}

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

/// A connection to the cluster being backed up.
struct Db {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    Error::new(
        ErrorKind::Database,
        format!(
            "{what}: {e}{}",
            e.as_db_error().map(|d| format!(" ({})", d.message())).unwrap_or_default()
        ),
    )
}

impl Db {
    fn connect() -> Result<Db> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::LocalIo, format!("cannot start the I/O runtime: {e}")))?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let user = env("PGUSER").or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
        let mut config = tokio_postgres::Config::new();
        config
            .user(&user)
            .dbname(env("PGDATABASE").unwrap_or_else(|| user.clone()))
            .application_name("walfetch backup-push");
        match env("PGHOST") {
            Some(h) if h.starts_with('/') => config.host_path(h),
            Some(h) => config.host(&h),
            None => config.host_path("/var/run/postgresql"),
        };
        if let Some(p) = env("PGPORT") {
            config.port(
                p.parse()
                    .map_err(|_| Error::new(ErrorKind::Config, format!("PGPORT '{p}' is not a port")))?,
            );
        }
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        }
        let (client, connection) = runtime
            .block_on(config.connect(tokio_postgres::NoTls))
            .map_err(|e| db_error("connecting to PostgreSQL (PGHOST/PGPORT/PGUSER)", e))?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(cause = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Db { runtime, client })
    }

    fn query_one(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<tokio_postgres::Row> {
        self.runtime
            .block_on(self.client.query_one(sql, params))
            .map_err(|e| db_error(sql, e))
    }

    fn text(&self, sql: &str) -> Result<String> {
        self.query_one(sql, &[])?.try_get(0).map_err(|e| db_error(sql, e))
    }
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    Lsn::parse(text).ok_or_else(|| Error::new(ErrorKind::Database, format!("server returned '{text}', not an LSN")))
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

/// Splits members into partitions of about `threshold` bytes (directories ride along).
fn partition(members: Vec<Member>, threshold: u64) -> Vec<Vec<Member>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0;
    for m in members {
        if size > 0 && size + m.size > threshold {
            parts.push(Vec::new());
            size = 0;
        }
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

/// A file written into a partition: its member name and size.
type Written = (String, u64);

/// Tars `members` through `codec` into a spool file: (spool, tar bytes, compressed bytes, files written).
fn build_tar(members: &[Member], codec: Codec, extra: &[(&str, &[u8])]) -> Result<(File, u64, u64, Vec<Written>)> {
    let spool = fsutil::anonymous_file(&std::env::temp_dir())?;
    let sink = io::BufWriter::with_capacity(COPY_BUFFER_SIZE, fsutil::reread(&spool).map_err(|e| Error::local_io("spool", &e))?);
    let encoder = codec.encoder(sink)?;
    let mut builder = tar::Builder::new(CountingWriter { inner: encoder, count: 0 });
    let spool_err = |e: io::Error| Error::local_io("backup spool", &e);
    let mut names = Vec::new();
    for m in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(m.mode);
        header.set_mtime(m.mtime.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        if m.dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &m.name, io::empty()).map_err(spool_err)?;
            continue;
        }
        let file = match File::open(&m.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // dropped during the backup
            Err(e) => return Err(Error::local_io(m.path.display(), &e)),
        };
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(m.size);
        builder
            .append_data(&mut header, &m.name, Fixed { inner: file, left: m.size })
            .map_err(spool_err)?;
        names.push((m.name.clone(), m.size));
    }
    for (name, data) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, *data).map_err(spool_err)?;
        names.push((name.to_string(), data.len() as u64));
    }
    let counting = builder.into_inner().map_err(spool_err)?;
    let tar_bytes = counting.count;
    let mut sink = counting.inner.finish().map_err(spool_err)?;
    sink.flush().map_err(spool_err)?;
    drop(sink);
    let compressed = spool.metadata().map_err(spool_err)?.len();
    Ok((spool, tar_bytes, compressed, names))
}

impl BackupPush {
    /// Takes the backup.
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        let started = Instant::now();
        let start_time = SystemTime::now();
        let pgdata = absolute(&self.pgdata);
        let codec = compression(self.compression.as_deref())?;
        let concurrency = self
            .concurrency
            .filter(|n| *n > 0)
            .unwrap_or_else(|| default_concurrency("WALG_UPLOAD_CONCURRENCY"));
        let threshold = self
            .tar_size_threshold
            .or_else(|| std::env::var("WALG_TAR_SIZE_THRESHOLD").ok().and_then(|v| v.parse().ok()))
            .unwrap_or(DEFAULT_TAR_SIZE_THRESHOLD)
            .max(1);

        let db = Db::connect()?;
        let version: i32 = db.text("SHOW server_version_num")?.parse().unwrap_or(0);
        if version < 90600 {
            return Err(Error::new(
                ErrorKind::Database,
                format!("server_version_num {version}: walfetch backs up PostgreSQL 9.6 and later"),
            ));
        }
        if db.text("SELECT pg_is_in_recovery()::text")? == "true" {
            return Err(Error::new(
                ErrorKind::Database,
                "the server is a standby; run backup-push against the primary".to_string(),
            ));
        }
        let sysid: u64 = db
            .text("SELECT system_identifier::text FROM pg_control_system()")?
            .parse()
            .unwrap_or(0);
        let label = format!("walfetch {}", rfc3339(start_time));
        let start_sql = if version >= 150000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let start_lsn = parse_lsn(
            &db.query_one(start_sql, &[&label])?
                .try_get::<_, String>(0)
                .map_err(|e| db_error(start_sql, e))?,
        )?;
        let name_fn = if version >= 100000 { "pg_walfile_name" } else { "pg_xlogfile_name" };
        // wal-g names a backup after pg_walfile_name_offset(start LSN).
        let segment = db.text(&format!("SELECT file_name FROM {name_fn}_offset('{start_lsn}'::pg_lsn)"))?;
        let backup = format!("base_{segment}");
        tracing::info!(backup = %backup, start_lsn = %start_lsn, "backup started");

        let mut members = Vec::new();
        let mut tablespaces = BTreeMap::new();
        walk(&pgdata, "", true, &mut members, &mut tablespaces)?;
        let data_size: u64 = members.iter().map(|m| m.size).sum();
        let parts = partition(members, threshold);
        let prefix = partitions_prefix(&backup);
        let ext = |stem: &str| codec.file_name(stem);

        let tar_bytes = AtomicU64::new(0);
        let compressed = AtomicU64::new(0);
        let sets: Mutex<BTreeMap<String, Vec<Written>>> = Mutex::new(BTreeMap::new());
        let queue = Mutex::new(parts.iter().enumerate().map(|(i, p)| (i + 1, p)).collect::<VecDeque<_>>());
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..concurrency.min(parts.len()).max(1) {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let Some((n, members)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                            return;
                        };
                        let file = ext(&format!("part_{n:03}.tar"));
                        let result = build_tar(members, codec, &[]).and_then(|(spool, t, c, names)| {
                            storage.put(&format!("{prefix}{file}"), &spool)?;
                            tar_bytes.fetch_add(t, Ordering::Relaxed);
                            compressed.fetch_add(c, Ordering::Relaxed);
                            sets.lock().unwrap_or_else(|p| p.into_inner()).insert(file.clone(), names);
                            tracing::info!(object = %file, tar_bytes = t, compressed = c, "partition uploaded");
                            Ok(())
                        });
                        if let Err(e) = result {
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }

        let mut next = parts.len() + 1;
        let control = Member {
            name: "global/pg_control".into(),
            path: pgdata.join("global/pg_control"),
            dir: false,
            size: fs::metadata(pgdata.join("global/pg_control"))
                .map(|m| m.len())
                .map_err(|e| Error::local_io("global/pg_control", &e))?,
            mode: 0o600,
            mtime: SystemTime::now(),
        };
        let mut upload_extra = |stem: &str, members: &[Member], extra: &[(&str, &[u8])]| -> Result<()> {
            let file = ext(stem);
            let (spool, t, c, names) = build_tar(members, codec, extra)?;
            storage.put(&format!("{prefix}{file}"), &spool)?;
            tar_bytes.fetch_add(t, Ordering::Relaxed);
            compressed.fetch_add(c, Ordering::Relaxed);
            sets.lock().unwrap_or_else(|p| p.into_inner()).insert(file, names);
            next += 1;
            Ok(())
        };
        upload_extra("pg_control.tar", &[control], &[])?;

        let stop_sql = if version >= 150000 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)"
        };
        let row = db.query_one(stop_sql, &[])?;
        let finish_lsn = parse_lsn(&row.try_get::<_, String>(0).map_err(|e| db_error(stop_sql, e))?)?;
        let labelfile: String = row.try_get(1).map_err(|e| db_error(stop_sql, e))?;
        let spcmap: Option<String> = row.try_get(2).map_err(|e| db_error(stop_sql, e))?;
        let mut extra: Vec<(&str, &[u8])> = vec![("backup_label", labelfile.as_bytes())];
        if let Some(map) = spcmap.as_deref().filter(|m| !m.is_empty()) {
            extra.push(("tablespace_map", map.as_bytes()));
        }
        upload_extra("backup_label.tar", &[], &extra)?;
        let finish_time = SystemTime::now();

        let sets = sets.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut files = serde_json::Map::new();
        let mut tar_sets = serde_json::Map::new();
        for (set, written) in &sets {
            for (name, size) in written {
                files.insert(
                    name.clone(),
                    json!({"IsIncremented": false, "IsSkipped": false, "MTime": rfc3339(start_time), "UpdatesCount": 0, "Size": size}),
                );
            }
            tar_sets.insert(set.clone(), json!(written.iter().map(|(name, _)| name).collect::<Vec<_>>()));
        }
        let files_metadata = json!({"Files": files, "TarFileSets": tar_sets});
        self.upload_json(storage, &backup_file_key(&backup, "files_metadata.json"), &files_metadata)?;

        let uncompressed = tar_bytes.load(Ordering::Relaxed);
        let compressed = compressed.load(Ordering::Relaxed);
        let host = hostname();
        let data_dir = pgdata.display().to_string();
        let metadata = json!({
            "start_time": rfc3339(start_time), "finish_time": rfc3339(finish_time), "date_fmt": "%Y-%m-%dT%H:%M:%S.%fZ",
            "hostname": host, "data_dir": data_dir, "pg_version": version, "start_lsn": start_lsn.0, "finish_lsn": finish_lsn.0,
            "is_permanent": self.permanent, "system_identifier": sysid, "uncompressed_size": uncompressed, "compressed_size": compressed,
        });
        self.upload_json(storage, &backup_file_key(&backup, "metadata.json"), &metadata)?;

        let mut sentinel = serde_json::Map::new();
        sentinel.insert("LSN".into(), json!(start_lsn.0));
        sentinel.insert("PgVersion".into(), json!(version));
        sentinel.insert("FinishLSN".into(), json!(finish_lsn.0));
        sentinel.insert("SystemIdentifier".into(), json!(sysid));
        sentinel.insert("UncompressedSize".into(), json!(uncompressed));
        sentinel.insert("CompressedSize".into(), json!(compressed));
        sentinel.insert("DataCatalogSize".into(), json!(data_size));
        if !tablespaces.is_empty() {
            let mut spec = serde_json::Map::new();
            for (oid, loc) in &tablespaces {
                spec.insert(
                    oid.clone(),
                    json!({"loc": loc.display().to_string(), "link": format!("pg_tblspc/{oid}")}),
                );
            }
            spec.insert("base_prefix".into(), json!(data_dir));
            spec.insert("tablespaces".into(), json!(tablespaces.keys().collect::<Vec<_>>()));
            sentinel.insert("Spec".into(), serde_json::Value::Object(spec));
        }
        sentinel.insert("ChkpNum".into(), serde_json::Value::Null);
        sentinel.insert("Version".into(), json!(2));
        sentinel.insert("StartTime".into(), json!(rfc3339(start_time)));
        sentinel.insert("FinishTime".into(), json!(rfc3339(finish_time)));
        sentinel.insert("DateFmt".into(), json!("%Y-%m-%dT%H:%M:%S.%fZ"));
        sentinel.insert("Hostname".into(), json!(host));
        sentinel.insert("DataDir".into(), json!(data_dir));
        sentinel.insert("IsPermanent".into(), json!(self.permanent));
        self.upload_json(storage, &sentinel_key(&backup), &serde_json::Value::Object(sentinel))?;

        crate::outln!(
            "backed up {backup} ({} partitions, {:.1} MiB as {:.1} MiB {}) in {:.1}s",
            next - 1,
            uncompressed as f64 / 1048576.0,
            compressed as f64 / 1048576.0,
            if codec == Codec::None {
                "uncompressed".to_string()
            } else {
                codec.extension().to_string()
            },
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn upload_json(&self, storage: &Arc<dyn Storage>, key: &str, value: &serde_json::Value) -> Result<()> {
        let mut spool = fsutil::anonymous_file(&std::env::temp_dir())?;
        serde_json::to_writer(&mut spool, value).map_err(|e| Error::new(ErrorKind::LocalIo, format!("{key}: {e}")))?;
        storage.put(key, &spool)
    }
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
