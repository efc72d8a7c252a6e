//! `walfetch backup-fetch DIR LATEST|NAME`: restore a base backup.
//!
//! Order of work, chosen so that a failure at any point leaves DIR visibly unusable:
//! 1. refuse a running server or a non-empty DIR (unless `--force`);
//! 2. read the sentinel, then list `tar_partitions/` while reading
//!    `files_metadata.json`, and check that every partition it names exists (fail
//!    before downloading anything);
//! 3. create DIR with an `WALFETCH_RESTORE_INCOMPLETE` marker and the tablespace links;
//! 4. download, decompress and extract the data partitions and `pg_control.tar` in
//!    parallel, largest first (`global/pg_control` is staged, not installed, whichever
//!    tar holds it), then `backup_label.tar`, whose `backup_label` overwrites a stale
//!    one an exclusive backup leaves in a data partition;
//! 5. check that every file `files_metadata.json` lists was extracted;
//! 6. write the recovery configuration if asked, sync the filesystem once, install
//!    `pg_control`, and remove the marker last.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;

use crate::cli::{absolute, default_concurrency};
use crate::codec::Codec;
use crate::config::StorageSettings;
use crate::constants::{INCOMPLETE_MARKER, REMOTE_PARTITIONS_IN_FLIGHT};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil;
use crate::layout::backup::{latest, read_backup};
use crate::layout::files_metadata::{self, FilesMetadata};
use crate::layout::{backup_file_key, partitions_prefix};
use crate::pg::datadir::{pg_major, server_running};
use crate::pg::minimal_config;
use crate::pg::recovery::{write_recovery_config, RecoveryMode};
use crate::progress::{self, Reporter};
use crate::restore::extract::{sanitize, Target};
use crate::restore::tablespace;
use crate::storage::{ObjectMeta, ObjectReader, Storage};

/// Options of `backup-fetch`.
#[derive(Debug, Args)]
pub struct BackupFetch {
    /// Directory to restore into (created if missing; must be empty unless --force).
    pub dir: PathBuf,
    /// Backup name, or LATEST for the backup with the highest finish LSN.
    pub backup: String,
    /// Leave a standby behind: signal file / recovery.conf with walfetch as restore_command.
    #[arg(long, conflicts_with = "recovery")]
    pub standby: bool,
    /// Leave an archive recovery behind: replay all archived WAL, then promote.
    #[arg(long)]
    pub recovery: bool,
    /// Delete what DIR holds before restoring into it.
    #[arg(long)]
    pub force: bool,
    /// Partitions downloaded and extracted at once [env: WALG_DOWNLOAD_CONCURRENCY; default: cores, at least 4 from S3]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Restore tablespace OID into PATH instead of its source location (repeatable).
    #[arg(long = "tablespace-map", value_name = "OID=PATH")]
    pub tablespace_map: Vec<String>,
    /// Skip the final filesystem sync (faster; the restore is not crash-safe until synced).
    #[arg(long)]
    pub no_sync: bool,
}

/// The partitions of a backup, in the order they must be extracted.
struct Partitions {
    data: Vec<ObjectMeta>,
    backup_label: Option<ObjectMeta>,
    pg_control: Option<ObjectMeta>,
}

impl Partitions {
    /// Every partition: the data partitions largest first, `pg_control.tar`, then
    /// `backup_label.tar`.
    fn all(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.parallel().chain(self.backup_label.iter())
    }

    /// What can be extracted at once: the data partitions and `pg_control.tar` (whose
    /// `global/pg_control` is staged wherever it comes from, and installed last).
    /// `backup_label.tar` is not among them: after an exclusive backup (before
    /// PostgreSQL 15) a data partition holds a stale `backup_label`, which the one from
    /// `backup_label.tar` must overwrite.
    fn parallel(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.data.iter().chain(self.pg_control.iter())
    }
}

fn classify_partitions(objects: Vec<ObjectMeta>, prefix: &str) -> Result<Partitions> {
    let mut parts = Partitions {
        data: Vec::new(),
        backup_label: None,
        pg_control: None,
    };
    for obj in objects {
        let file = obj.key.strip_prefix(prefix).unwrap_or(&obj.key).to_string();
        let (stem, _) = Codec::split(&file);
        if stem == "pg_control.tar" {
            parts.pg_control = Some(obj);
        } else if stem == "backup_label.tar" {
            parts.backup_label = Some(obj);
        } else if stem.starts_with("part_") && stem.ends_with(".tar") {
            parts.data.push(obj);
        } else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: unknown object in tar_partitions/ (unsupported compression or not a partition)",
                    obj.key
                ),
            ));
        }
    }
    // Largest first, so the longest download starts early and the tail is short.
    parts.data.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
    Ok(parts)
}

/// Reads `files_metadata.json` (only its partition list is kept); `None` when the
/// backup has none (WAL-E's and older wal-g's).
fn read_metadata(storage: &dyn Storage, key: &str) -> Result<Option<FilesMetadata>> {
    let object = format!("{}/{key}", storage.describe());
    match storage.open(key) {
        Ok(reader) => files_metadata::read(reader, &object, &mut |_, _| Ok(())).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fails before anything is downloaded when a partition `meta` lists is not in storage.
fn check_partitions_listed(storage: &dyn Storage, meta: &FilesMetadata, parts: &Partitions, prefix: &str) -> Result<()> {
    let present: Vec<String> = parts
        .all()
        .map(|o| Codec::split(o.key.strip_prefix(prefix).unwrap_or(&o.key)).0.to_string())
        .collect();
    for set in &meta.tar_sets {
        let stem = Codec::split(set).0;
        if !present.iter().any(|p| p == stem) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}/{prefix}{set}: partition listed in files_metadata.json is missing from storage; the backup cannot be restored",
                    storage.describe()
                ),
            ));
        }
    }
    Ok(())
}

/// Counts compressed bytes read, for the progress report.
struct Counting<R> {
    inner: R,
    counters: Arc<progress::Counters>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts the decoded bytes of a partition, to compare with the sentinel's size.
struct Decoded<R> {
    inner: R,
    total: u64,
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        Ok(n)
    }
}

/// Progress shared by the partition workers.
#[derive(Default)]
struct Progress {
    counters: Arc<progress::Counters>,
    decoded: AtomicU64,
    files: AtomicU64,
}

impl BackupFetch {
    /// Restores.
    pub fn run(&self, storage: &Arc<dyn Storage>, settings: &StorageSettings) -> Result<()> {
        let started = Instant::now();
        let dir = absolute(&self.dir);
        self.check_target(&dir)?;
        let concurrency = self.concurrency.filter(|n| *n > 0).unwrap_or_else(|| {
            let cores = default_concurrency("WALG_DOWNLOAD_CONCURRENCY");
            if storage.is_remote() && std::env::var_os("WALG_DOWNLOAD_CONCURRENCY").is_none() {
                cores.max(REMOTE_PARTITIONS_IN_FLIGHT)
            } else {
                cores
            }
        });

        let backup = if self.backup.eq_ignore_ascii_case("LATEST") {
            latest(storage, concurrency.max(4))?
        } else {
            read_backup(storage.as_ref(), &self.backup)?
        };
        let name = backup.name.name.clone();
        if backup.sentinel.delta_from.is_some() || backup.name.delta_suffix.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{name} is a delta backup; walfetch restores full backups only: pick a full backup from backup-list"),
            ));
        }
        tracing::info!(backup = %name, finish_lsn = ?backup.finish().map(|l| l.to_string()), "restoring");

        let prefix = partitions_prefix(&name);
        let metadata_key = backup_file_key(&name, "files_metadata.json");
        // The listing and files_metadata.json do not depend on each other: one round trip
        // for both, not three (stat, read, list) one after another.
        let (listed, metadata) = std::thread::scope(|s| {
            let metadata = s.spawn(|| read_metadata(storage.as_ref(), &metadata_key));
            let listed = storage.list_all(&prefix, false);
            (listed, metadata.join().expect("files_metadata.json reader panicked"))
        });
        let parts = classify_partitions(listed?, &prefix)?;
        if parts.data.is_empty() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{}/{prefix}: the backup has no tar partitions", storage.describe()),
            ));
        }
        let has_metadata = match metadata? {
            Some(meta) => {
                check_partitions_listed(storage.as_ref(), &meta, &parts, &prefix)?;
                true
            }
            None => {
                if backup.sentinel.version.unwrap_or(0) >= 2 && !backup.sentinel.files_metadata_disabled.unwrap_or(false) {
                    tracing::warn!(object = %metadata_key, "backup has no files_metadata.json; files cannot be checked against it");
                }
                false
            }
        };

        let mappings = self
            .tablespace_map
            .iter()
            .map(|m| tablespace::parse_mapping(m))
            .collect::<Result<Vec<_>>>()?;
        let plan = tablespace::plan(backup.sentinel.spec.as_ref(), &mappings)?;
        let relocated = !mappings.is_empty();
        let target = Target::create(&dir, plan)?;
        let marker = dir.join(INCOMPLETE_MARKER);
        fs::write(
            &marker,
            format!("walfetch is restoring {name} here; this directory is unusable until this file is gone.\n"),
        )
        .map_err(|e| Error::local_io(marker.display(), &e))?;

        let progress = Progress::default();
        let all_parts: Vec<&ObjectMeta> = parts.all().collect();
        let total: u64 = all_parts.iter().map(|p| p.size).sum();
        let reporter = Reporter::start(
            &format!("restoring {name}"),
            Arc::clone(&progress.counters),
            total,
            all_parts.len() as u64,
        );
        let parallel: Vec<&ObjectMeta> = parts.parallel().collect();
        // What is read only after the data partitions is requested now, so those round
        // trips overlap the restore instead of adding to its end: the answers wait in
        // socket buffers (a connection dropped meanwhile resumes like any read).
        let (restored, (label_reader, metadata_reader)) = std::thread::scope(|s| {
            let early = s.spawn(|| {
                let label = parts.backup_label.as_ref().map(|l| storage.open(&l.key));
                (label, has_metadata.then(|| storage.open(&metadata_key)))
            });
            let restored = self.extract_parallel(storage, &target, &parallel, concurrency, &progress);
            (restored, early.join().expect("early requests panicked"))
        });
        restored?;
        if let (Some(label), Some(reader)) = (&parts.backup_label, label_reader) {
            self.extract_one(storage.as_ref(), &target, label, reader?, &AtomicBool::new(false), &progress)?;
        }
        drop(reporter);
        let decoded = progress.decoded.load(Ordering::Relaxed);
        if let Some(expected) = backup.sentinel.uncompressed_size {
            if expected != decoded && backup.name.wale_offset.is_none() {
                tracing::warn!(backup = %name, expected, decoded, "decoded size differs from the sentinel's UncompressedSize");
            }
        }
        if let Some(reader) = metadata_reader {
            check_files_extracted(reader?, &format!("{}/{metadata_key}", storage.describe()), &target)?;
        }
        if relocated {
            rewrite_tablespace_map(&target)?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .create(dir.join("pg_wal"))
            .map_err(|e| Error::local_io(dir.join("pg_wal").display(), &e))?;

        let mut written = Vec::new();
        let missing_config = minimal_config::missing(&dir);
        if let Some(mode) = self.mode() {
            written = write_recovery_config(&dir, mode, &restore_command(settings)?)?;
            let control = dir.join(crate::restore::extract::STAGED_PG_CONTROL);
            written.extend(minimal_config::write_missing(&dir, pg_major(&dir)?, &control)?);
        }
        if !self.no_sync {
            fsutil::sync_filesystem(&dir)?;
            for loc in target.tablespaces().values() {
                fsutil::sync_filesystem(loc)?;
            }
        }
        target.install_pg_control()?;
        fsutil::fsync_dir(&dir.join("global"))?;
        fs::remove_file(&marker).map_err(|e| Error::local_io(marker.display(), &e))?;
        fsutil::fsync_dir(&dir)?;

        let secs = started.elapsed().as_secs_f64();
        crate::outln!(
            "restored {name} into {} ({} files, {:.1} MiB from {:.1} MiB compressed, {} partitions) in {secs:.1}s",
            dir.display(),
            progress.files.load(Ordering::Relaxed),
            decoded as f64 / 1048576.0,
            progress.counters.read.load(Ordering::Relaxed) as f64 / 1048576.0,
            all_parts.len(),
        );
        for line in &written {
            crate::outln!("wrote {line}");
        }
        if !missing_config.is_empty() && self.mode().is_none() {
            crate::outln!(
                "note: the backup has no {} (WAL-E leaves them out); add your own, or re-run with --standby / --recovery for a minimal working set",
                missing_config.join(", ")
            );
        }
        match self.mode() {
            Some(_) => crate::outln!("next: pg_ctl -D {} start   (as the user that owns it)", dir.display()),
            None => crate::outln!(
                "next: configure recovery (or re-run with --standby / --recovery), then pg_ctl -D {} start",
                dir.display()
            ),
        }
        Ok(())
    }

    fn mode(&self) -> Option<RecoveryMode> {
        if self.standby {
            Some(RecoveryMode::Standby)
        } else if self.recovery {
            Some(RecoveryMode::Recovery)
        } else {
            None
        }
    }

    fn check_target(&self, dir: &Path) -> Result<()> {
        if server_running(dir) {
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{}: a PostgreSQL server is running in it; stop it first", dir.display()),
            ));
        }
        if fsutil::is_empty_dir(dir)? {
            return Ok(());
        }
        if !self.force {
            let why = if dir.join(INCOMPLETE_MARKER).exists() {
                "holds an interrupted restore"
            } else {
                "is not empty"
            };
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{}: {why}; pass --force to delete its contents and restore into it", dir.display()),
            ));
        }
        tracing::warn!(dir = %dir.display(), "--force: deleting the directory's contents");
        fsutil::clear_dir(dir)
    }

    fn extract_parallel(
        &self,
        storage: &Arc<dyn Storage>,
        target: &Target,
        parts: &[&ObjectMeta],
        concurrency: usize,
        progress: &Progress,
    ) -> Result<()> {
        let queue = Mutex::new(parts.iter().copied().collect::<VecDeque<_>>());
        let cancel = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..concurrency.min(parts.len()).max(1) {
                s.spawn(|| loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(part) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                        return;
                    };
                    let restored = storage
                        .open_large(&part.key, part.size)
                        .and_then(|raw| self.extract_one(storage.as_ref(), target, part, raw, &cancel, progress));
                    if let Err(e) = restored {
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        // Keep the root cause, not a worker's "stopped because another failed".
                        if slot.is_none() {
                            *slot = Some(e);
                        }
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn extract_one(
        &self,
        storage: &dyn Storage,
        target: &Target,
        part: &ObjectMeta,
        raw: ObjectReader,
        cancel: &AtomicBool,
        progress: &Progress,
    ) -> Result<()> {
        let url = format!("{}/{}", storage.describe(), part.key);
        let started = Instant::now();
        let (_, codec) = Codec::split(&part.key);
        let counted = Counting {
            inner: raw,
            counters: Arc::clone(&progress.counters),
        };
        // Decoding runs on this thread, between the reads of the tar stream: measured, a
        // thread of its own per partition cost more (a copy of every decoded byte, a
        // wake-up per buffer) than it gained, whatever the source.
        let decoded = Decoded {
            inner: codec.decoder(Box::new(counted), &url),
            total: 0,
        };
        let (stats, mut decoded) = target.extract(decoded, &url, cancel)?;
        drain_zeros(&mut decoded, &url)?;
        progress.decoded.fetch_add(decoded.total, Ordering::Relaxed);
        progress.files.fetch_add(stats.files, Ordering::Relaxed);
        progress.counters.parts_done.fetch_add(1, Ordering::Relaxed);
        tracing::info!(object = %url, files = stats.files, bytes = stats.bytes, secs = format!("{:.2}", started.elapsed().as_secs_f64()), "partition restored");
        Ok(())
    }
}

/// Checks every file `files_metadata.json` lists against the target: it must have
/// been extracted, and where the entry records a size (walfetch's writer does), have
/// exactly that many bytes.
fn check_files_extracted(reader: ObjectReader, object: &str, target: &Target) -> Result<()> {
    let (mut missing, mut wrong_size) = (Examples::default(), Examples::default());
    files_metadata::read(reader, object, &mut |name, entry| {
        if entry.is_skipped {
            return Ok(());
        }
        let parts = sanitize(name.as_bytes(), object)?;
        let rel = parts.join("/");
        let path = if rel == "global/pg_control" {
            target.root().join(crate::restore::extract::STAGED_PG_CONTROL)
        } else {
            target.root().join(&rel)
        };
        match fs::symlink_metadata(&path).or_else(|_| fs::metadata(&path)) {
            Err(_) => missing.add(rel),
            Ok(meta) => match entry.size {
                Some(listed) if meta.is_file() && meta.len() != listed => {
                    wrong_size.add(format!("{rel}: {} bytes, listed {listed}", meta.len()))
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    missing.fail(|n, e| format!("{object}: {n} listed files are in no partition (e.g. {e}); the backup is incomplete"))?;
    wrong_size.fail(|n, e| format!("{object}: {n} restored files differ in size from the listing (e.g. {e}); the backup is inconsistent"))
}

/// A problem found while walking a listing: how often, and the first few cases.
#[derive(Default)]
struct Examples {
    count: u64,
    shown: Vec<String>,
}

impl Examples {
    fn add(&mut self, case: String) {
        self.count += 1;
        if self.shown.len() < 5 {
            self.shown.push(case);
        }
    }

    /// A corrupt-backup error with the message `describe(count, examples)`, if any case was found.
    fn fail(&self, describe: impl FnOnce(u64, String) -> String) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        Err(Error::new(ErrorKind::Corrupt, describe(self.count, self.shown.join("; "))))
    }
}

/// Reads to the end of a partition's decoded stream: only zeros may follow the tar's end
/// marker, and reading to the end makes the codec verify its trailing checksum.
fn drain_zeros(reader: &mut impl Read, object: &str) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) if buf[..n].iter().all(|b| *b == 0) => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{object}: unexpected data after the end of the tar archive"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{object}: {e}")))),
        }
    }
}

/// Rewrites `tablespace_map` (if the backup has one) to the relocated paths.
fn rewrite_tablespace_map(target: &Target) -> Result<()> {
    let path = target.root().join("tablespace_map");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let new = tablespace::rewrite_map(
        &text,
        &target
            .tablespaces()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    fsutil::write_atomically(&path, |f| io::Write::write_all(f, new.as_bytes()), false)
}

/// The restore_command that calls this same binary with the same storage settings.
pub fn restore_command(settings: &StorageSettings) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::local_io("the walfetch binary", &e))?;
    let mut words = vec![shell_quote(&exe.to_string_lossy())];
    words.extend(settings.to_flags().iter().map(|f| shell_quote(f)));
    words.push("wal-fetch".into());
    words.push("\"%f\"".into());
    words.push("\"%p\"".into());
    Ok(words.join(" "))
}

/// Quotes a word for `sh` only when it needs it.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/walfetch"), "/usr/bin/walfetch");
        assert_eq!(shell_quote("s3://b/p"), "s3://b/p");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn partitions_are_classified() {
        let o = |k: &str, size| ObjectMeta {
            key: format!("p/{k}"),
            size,
            modified: None,
        };
        let parts = classify_partitions(
            vec![
                o("part_001.tar.lz4", 1),
                o("part_002.tar.lz4", 5),
                o("pg_control.tar.lz4", 1),
                o("backup_label.tar", 1),
            ],
            "p/",
        )
        .unwrap();
        assert_eq!(parts.data.len(), 2);
        assert_eq!(parts.data[0].key, "p/part_002.tar.lz4", "largest first");
        assert!(parts.pg_control.is_some() && parts.backup_label.is_some());
        assert!(classify_partitions(vec![o("part_001.tar.snappy", 1)], "p/").is_err());
    }
}
