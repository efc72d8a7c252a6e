//! Restoring a base backup into a directory, by its [`RestorePlan`]
//! (`walfetch backup-fetch`).
//!
//! Order of work, chosen so that a failure at any point leaves the directory visibly
//! unusable, and resumable:
//! 1. refuse a running server or a non-empty directory (unless forced, or resuming an
//!    interrupted restore of the same backup);
//! 2. create it with an `WALFETCH_RESTORE_INCOMPLETE` marker, the restore journal
//!    ([`super::journal`]) and the tablespace links;
//! 3. download, decompress and extract the data partitions and `pg_control.tar` in
//!    parallel (from remote storage, in parts over many connections), in the plan's
//!    order (`global/pg_control` is staged, not installed, whichever tar holds it), then
//!    `backup_label.tar`; each partition, once its files are synced, is recorded in the
//!    journal, and a resume skips what the journal vouches for;
//! 4. check every file `files_metadata.json` lists ([`super::checks`]);
//! 5. write the recovery configuration if asked, sync the filesystem once, install
//!    `pg_control`, remove the journal, and remove the marker last.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::codec::Codec;
use crate::config::Parallelism;
use crate::constants::INCOMPLETE_MARKER;
use crate::crypto::Keys;
use crate::error::{Error, ErrorKind, FirstError, Result};
use crate::fsutil;
use crate::inspect::backups::human_size;
use crate::layout::plan::RestorePlan;
use crate::objects::{decoded, Objects};
use crate::pg::datadir::{pg_major, server_running, wal_dir};
use crate::pg::minimal_config;
use crate::pg::recovery::{write_recovery_config, RecoveryMode, RecoveryTarget};
use crate::progress::{self, Reporter};
use crate::restore::checks::{check_backup_label, check_files_extracted, rewrite_tablespace_map};
use crate::restore::delta::{self, Layer};
use crate::restore::extract::{Target, STAGED_PG_CONTROL};
use crate::restore::journal::{self, Identity, Journal, Vouched};
use crate::restore::tablespace;
use crate::storage::download::{Download, Limits};
use crate::storage::{ObjectMeta, ObjectReader, Storage};

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Partitions extracted at once, and connections receiving at once.
    pub parallelism: Parallelism,
    /// Bytes per part when partitions are fetched from remote storage in parts.
    pub part_size: u64,
    /// Tablespace OID → where to restore it instead of its source location.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Leave a standby or an archive recovery behind, with this restore_command.
    pub recovery: Option<(RecoveryMode, String)>,
    /// Where that recovery stops.
    pub target: Option<RecoveryTarget>,
    /// `--restore-only`: the databases to restore (empty: all).
    pub restore_only: Vec<String>,
    /// Sync the filesystem before installing pg_control (off: faster, not crash-safe).
    pub sync: bool,
}

/// What a restore did.
#[derive(Debug)]
pub struct Summary {
    /// Files extracted.
    pub files: u64,
    /// Decoded bytes.
    pub decoded: u64,
    /// Compressed bytes read.
    pub read: u64,
    /// Partitions in the backup.
    pub partitions: usize,
    /// Partitions an interrupted restore had finished, not fetched again.
    pub skipped: usize,
    /// Their compressed bytes.
    pub skipped_bytes: u64,
    /// One line per configuration file written.
    pub written: Vec<String>,
    /// Configuration files the backup lacks (WAL-E leaves them out).
    pub missing_config: Vec<&'static str>,
    /// With `--restore-only`: what was left out and what to do about it.
    pub restore_only: Option<String>,
}

/// How a restore begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Into an empty directory.
    Fresh,
    /// Into a directory whose contents are deleted first (`--force`), once everything
    /// that can refuse the restore has been checked.
    Replace,
    /// Continuing an interrupted restore in the directory (`--resume`).
    Resume,
}

impl Summary {
    /// The line that says what the restore of `name` into `dir` did.
    pub fn line(&self, name: &str, dir: &Path, resumed: bool, took: std::time::Duration) -> String {
        let resumed = if resumed {
            format!(
                "; resumed: {} of {} partitions ({} compressed) were already restored and not fetched again",
                self.skipped,
                self.partitions,
                human_size(Some(self.skipped_bytes))
            )
        } else {
            String::new()
        };
        format!(
            "restored {name} into {} ({} files, {:.1} MiB from {:.1} MiB compressed, {} partitions{resumed}) in {:.1}s",
            dir.display(),
            self.files,
            self.decoded as f64 / 1048576.0,
            self.read as f64 / 1048576.0,
            self.partitions,
            took.as_secs_f64()
        )
    }
}

/// Refuses a directory a server runs in, or a non-empty one, unless it holds an
/// interrupted restore and `resume` is asked (continue it) or `force` (empty it).
pub fn prepare_target(dir: &Path, force: bool, resume: bool) -> Result<Start> {
    if server_running(dir) {
        return Err(Error::new(
            ErrorKind::Refused,
            format!("{}: a PostgreSQL server is running in it; stop it first", dir.display()),
        ));
    }
    if fsutil::is_empty_dir(dir)? {
        return Ok(Start::Fresh);
    }
    let interrupted = dir.join(INCOMPLETE_MARKER).exists();
    if resume {
        if interrupted {
            return Ok(Start::Resume);
        }
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{}: holds no interrupted walfetch restore (no {INCOMPLETE_MARKER}), so there is nothing to resume; pass --force instead of --resume to delete its contents and restore into it",
                dir.display()
            ),
        ));
    }
    if !force {
        let why = match (interrupted, journal::identity_in(dir).ok().flatten()) {
            (true, Some(id)) => format!(
                "holds an interrupted restore of {}; pass --resume to continue it, or --force to delete its contents and start over",
                id.backup
            ),
            (true, None) => {
                "holds an interrupted restore; pass --resume to continue it, or --force to delete its contents and start over".to_string()
            }
            _ => "is not empty; pass --force to delete its contents and restore into it".to_string(),
        };
        return Err(Error::new(ErrorKind::Refused, format!("{}: {why}", dir.display())));
    }
    Ok(Start::Replace)
}

/// The identity a journal records for `plan`'s backup.
pub fn identity(plan: &RestorePlan) -> Identity {
    let sentinel = &plan.backup.sentinel;
    Identity {
        backup: plan.name().to_string(),
        start_lsn: plan.backup.start().map(|l| l.to_string()),
        finish_lsn: plan.backup.finish().map(|l| l.to_string()),
        system_identifier: sentinel.system_identifier,
        finish_time: sentinel.finish_time.clone(),
    }
}

/// Restores the backup `chain` ends with (a full backup alone, or a delta after the
/// backups below it, oldest first: see [`super::delta`]) into `dir` (already prepared,
/// see [`prepare_target`]), from the start or continuing an interrupted restore.
pub fn restore(objects: &Objects, chain: &[RestorePlan], dir: &Path, opts: &Options, start: Start) -> Result<Summary> {
    let storage = objects.storage();
    let Some(plan) = chain.last() else {
        return Err(Error::new(ErrorKind::Config, "nothing to restore"));
    };
    let layers = delta::layers(storage.as_ref(), chain)?;
    let name = plan.name();
    let locations = tablespace::plan(plan.backup.sentinel.spec.as_ref(), &opts.tablespace_map)?;
    let (target, journal, vouched, marker) = match begin(dir, &identity(plan), locations, opts, start)? {
        Begun::Working(w) => (w.target, w.journal, w.vouched, w.marker),
        Begun::Finishing(target, marker) => {
            return finish_interrupted_end(dir, &target, &marker, plan.partitions.all().map(|p| p.size).collect())
        }
    };
    redo_distrusted(dir, chain.len() > 1, &vouched, &journal)?;
    let (only, left_out) = restore_only(storage, chain, &target, opts)?;
    let layers: Vec<Layer> = layers.into_iter().map(|l| l.with_only(only.clone())).collect();
    let mut skip = vouched.partitions.clone();
    skip.extend(left_out.iter().cloned());

    let progress = Progress::default();
    let all_parts: Vec<&ObjectMeta> = chain
        .iter()
        .zip(&layers)
        .flat_map(|(p, l)| layer_partitions(p, l))
        .filter(|p| !left_out.contains(&p.key))
        .collect();
    let skipped: Vec<&ObjectMeta> = all_parts.iter().copied().filter(|p| vouched.partitions.contains(&p.key)).collect();
    let total: u64 = all_parts.iter().map(|p| p.size).sum::<u64>() - skipped.iter().map(|p| p.size).sum::<u64>();
    if start == Start::Resume {
        tracing::info!(backup = %name, skipped = skipped.len(), partitions = all_parts.len(), "resuming: partitions the journal vouches for are not fetched again");
    }
    let reporter = Reporter::start(
        &format!("restoring {name}"),
        Arc::clone(&progress.counters),
        total,
        (all_parts.len() - skipped.len()) as u64,
    );
    let mut metadata = None;
    for (layer_plan, layer) in chain.iter().zip(&layers) {
        if chain.len() > 1 {
            tracing::info!(backup = %layer_plan.name(), "restoring a layer of the delta chain");
        }
        let work = Work {
            storage,
            keys: objects.keys(),
            plan: layer_plan,
            layer,
            target: &target,
            opts,
            progress: &progress,
            journal: &journal,
            skip: &skip,
        };
        progress.increments.store(0, Ordering::Relaxed);
        metadata = extract_all(&work)?;
        check_increments(layer_plan, layer, &layer_partitions(layer_plan, layer), &skip, &progress)?;
    }
    drop(reporter);
    let decoded = progress.decoded.load(Ordering::Relaxed);
    let whole = skipped.is_empty() && only.is_none();
    check_restored(storage, chain, &target, opts, metadata, whole.then_some(decoded))?;
    let (written, missing_config) = finish(dir, &target, &marker, journal, &identity(plan), opts)?;
    Ok(Summary {
        files: progress.files.load(Ordering::Relaxed),
        decoded,
        read: progress.counters.read.load(Ordering::Relaxed),
        partitions: all_parts.len(),
        skipped: skipped.len(),
        skipped_bytes: skipped.iter().map(|p| p.size).sum(),
        written,
        missing_config,
        restore_only: only.map(|o| o.advice(bytes_left_out(chain, &left_out))),
    })
}

/// The bytes of the partitions `--restore-only` left out (not fetched).
fn bytes_left_out(chain: &[RestorePlan], left_out: &BTreeSet<String>) -> u64 {
    chain
        .iter()
        .flat_map(|p| p.partitions.data.iter())
        .filter(|p| left_out.contains(&p.key))
        .map(|p| p.size)
        .sum()
}

/// Refuses a delta restore whose journal vouches for files that changed since (fetching
/// an older layer's partition again would overwrite what newer layers applied on top
/// of it); otherwise marks each such partition to be fetched again.
fn redo_distrusted(dir: &Path, delta: bool, vouched: &Vouched, journal: &Journal) -> Result<()> {
    if delta && !vouched.distrusted.is_empty() {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{}: files of the interrupted delta restore changed since ({}); pass --force to start over",
                dir.display(),
                vouched.distrusted[0].1
            ),
        ));
    }
    for (partition, why) in &vouched.distrusted {
        tracing::warn!(partition = %partition, cause = %why, "the journal says this partition was restored, but it cannot be trusted; fetching it again");
        journal.redo(partition)?;
    }
    Ok(())
}

/// The checks after every partition is extracted: the decoded size against the
/// sentinel's (`decoded`: when the whole backup was decoded in this run), backup_label
/// against the sentinel, every file `files_metadata.json` lists; then tablespace_map
/// rewritten for relocated tablespaces.
fn check_restored(
    storage: &Arc<dyn Storage>,
    chain: &[RestorePlan],
    target: &Target,
    opts: &Options,
    metadata: Option<Result<Box<dyn Read + Send>>>,
    decoded: Option<u64>,
) -> Result<()> {
    let Some(plan) = chain.last() else { return Ok(()) };
    if let (Some(expected), Some(decoded)) = (plan.backup.sentinel.uncompressed_size, decoded) {
        if chain.len() == 1 && expected != decoded && plan.backup.name.wale_offset.is_none() {
            tracing::warn!(backup = %plan.name(), expected, decoded, "decoded size differs from the sentinel's UncompressedSize");
        }
    }
    check_backup_label(target, &plan.backup)?;
    if let (Some(reader), Some(key)) = (metadata, &plan.files_metadata) {
        // Files a delta marks skipped come from below it, and must be there too.
        check_files_extracted(reader?, &format!("{}/{key}", storage.describe()), target, chain.len() > 1)?;
    }
    if !opts.tablespace_map.is_empty() {
        rewrite_tablespace_map(target)?;
    }
    Ok(())
}

/// With `--restore-only`: the selection (every layer's members of the databases left
/// out become placeholders) and the partitions that hold nothing else (not fetched);
/// the placeholders of files in those partitions are made now.
fn restore_only(
    storage: &Arc<dyn Storage>,
    chain: &[RestorePlan],
    target: &Target,
    opts: &Options,
) -> Result<(Option<Arc<super::only::Selection>>, BTreeSet<String>)> {
    if opts.restore_only.is_empty() {
        return Ok((None, BTreeSet::new()));
    }
    let (selection, left_out) = super::only::plan_walg(storage.as_ref(), chain, &opts.restore_only, &mut |name, size| {
        let parts: Vec<String> = name.split('/').map(str::to_string).collect();
        let (file, path) = target.create_file(&parts, 0o600, "a placeholder")?;
        file.set_len(size).map_err(|e| Error::local_io(path.display(), &e))
    })?;
    Ok((Some(Arc::new(selection)), left_out))
}

/// A restore under way in its target: the journal, what it vouches for, the marker.
pub(crate) struct Working {
    /// The data directory and its tablespaces.
    pub target: Target,
    /// The journal of finished partitions.
    pub journal: Journal,
    /// What an interrupted restore finished (when resuming).
    pub vouched: Vouched,
    /// The marker that says the directory is incomplete.
    pub marker: std::path::PathBuf,
}

/// How a restore begins in its target.
pub(crate) enum Begun {
    /// Restoring (afresh, or continuing).
    Working(Working),
    /// An interrupted restore had finished everything but its last steps.
    Finishing(Target, std::path::PathBuf),
}

/// Prepares `dir` for the restore of `identity` (any format): the marker, the
/// tablespace links, the journal (continued when resuming, after checking it is the same
/// backup's: before anything in the target changes).
pub(crate) fn begin(
    dir: &Path,
    identity: &Identity,
    locations: std::collections::BTreeMap<String, std::path::PathBuf>,
    opts: &Options,
    start: Start,
) -> Result<Begun> {
    let resuming = start == Start::Resume;
    if resuming {
        journal::check_identity(dir, identity)?;
    }
    let marker = dir.join(INCOMPLETE_MARKER);
    if !resuming {
        if start == Start::Replace {
            tracing::warn!(dir = %dir.display(), "--force: deleting the directory's contents");
            fsutil::clear_dir(dir)?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(|e| Error::local_io(dir.display(), &e))?;
        fs::write(&marker, journal::marker_text(identity)?).map_err(|e| Error::local_io(marker.display(), &e))?;
        if opts.sync {
            fsutil::fsync_dir(dir)?;
        }
    }
    let target = Target::create(dir, locations, resuming)?;
    if resuming && journal::is_finishing(dir)? {
        return Ok(Begun::Finishing(target, marker));
    }
    let (journal, vouched) = if resuming {
        target.unstage_pg_control()?;
        let present = |rel: &str, size: u64| fs::metadata(target.path_of(rel)).is_ok_and(|m| m.len() == size);
        Journal::resume(dir, identity, opts.sync, &present)?
    } else {
        (Journal::create(dir, identity, opts.sync)?, Vouched::default())
    };
    Ok(Begun::Working(Working {
        target,
        journal,
        vouched,
        marker,
    }))
}

/// Fails when a layer of a delta chain applied fewer increments than its
/// `files_metadata.json` marks (a changed file's increment missing from its partitions
/// would leave the older layer's pages in place, and metadata without sizes cannot tell).
/// Not checked when a resume skipped some of the layer's partitions.
fn check_increments(
    plan: &RestorePlan,
    layer: &Layer,
    parts: &[&ObjectMeta],
    skipped: &BTreeSet<String>,
    progress: &Progress,
) -> Result<()> {
    if parts.iter().any(|p| skipped.contains(&p.key)) {
        return Ok(());
    }
    let (expected, applied) = (layer.increments_expected(), progress.increments.load(Ordering::Relaxed));
    if applied < expected {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "{}: files_metadata.json marks {expected} files incremented, but its partitions hold {applied} increments; the delta backup is incomplete",
                plan.name()
            ),
        ));
    }
    Ok(())
}

/// The partitions a layer restores: all of a full backup alone or of the newest layer;
/// an older layer's without `pg_control.tar` and `backup_label.tar` (they come from the
/// newest backup only).
fn layer_partitions<'a>(plan: &'a RestorePlan, layer: &Layer) -> Vec<&'a ObjectMeta> {
    let parts = &plan.partitions;
    if layer.is_newest() {
        return parts.all().collect();
    }
    parts.data.iter().collect()
}

/// What the partition workers share.
struct Work<'a> {
    storage: &'a Arc<dyn Storage>,
    /// The keys of its encrypted objects.
    keys: &'a Keys,
    /// The backup of the layer being restored.
    plan: &'a RestorePlan,
    /// What the layer gives (everything, for a full backup alone).
    layer: &'a Layer,
    target: &'a Target,
    opts: &'a Options,
    progress: &'a Progress,
    journal: &'a Journal,
    /// Partitions an interrupted restore finished: not fetched again.
    skip: &'a BTreeSet<String>,
}

/// Extracts every partition: the parallel set, then `backup_label.tar`. What is read only
/// after the data partitions (the label, files_metadata.json for the checks) is requested
/// at once, so those round trips overlap the restore instead of adding to its end: the
/// answers wait in socket buffers (a connection dropped meanwhile resumes like any read).
/// Returns the reader of files_metadata.json, when the plan checks it.
fn extract_all(work: &Work<'_>) -> Result<Option<Result<ObjectReader>>> {
    let parts = &work.plan.partitions;
    let storage = work.storage;
    let newest = work.layer.is_newest();
    let parallel: Vec<&ObjectMeta> = parts
        .parallel()
        .filter(|p| newest || Some(*p) != parts.pg_control.as_ref())
        .filter(|p| !work.skip.contains(&p.key))
        .collect();
    let label = parts.backup_label.as_ref().filter(|l| newest && !work.skip.contains(&l.key));
    let (restored, early) = std::thread::scope(|s| {
        let early = s.spawn(|| {
            let label = label.map(|l| storage.open(&l.key));
            let metadata = work.plan.files_metadata.as_ref().filter(|_| newest);
            (label, metadata.map(|key| storage.open(key)))
        });
        let restored = extract_parallel(work, &parallel);
        (restored, early.join())
    });
    restored?;
    let (label_reader, metadata_reader) = early.map_err(|_| Error::new(ErrorKind::LocalIo, "the early requests panicked"))?;
    if let (Some(label), Some(reader)) = (label, label_reader) {
        extract_one(work, label, reader?, &AtomicBool::new(false))?;
    }
    Ok(metadata_reader)
}

/// Makes the restored directory startable: `pg_wal`, the recovery configuration (and a
/// minimal configuration a WAL-E backup lacks), one sync, then pg_control installed and
/// the marker removed. Returns what was written and which configuration files are missing.
pub(crate) fn finish(
    dir: &Path,
    target: &Target,
    marker: &Path,
    journal: Journal,
    identity: &Identity,
    opts: &Options,
) -> Result<(Vec<String>, Vec<&'static str>)> {
    let wal = wal_dir(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .create(&wal)
        .map_err(|e| Error::local_io(wal.display(), &e))?;
    let mut written = Vec::new();
    let missing_config = minimal_config::missing(dir);
    if let Some((mode, restore_command)) = &opts.recovery {
        written = write_recovery_config(dir, *mode, restore_command, opts.target.as_ref())?;
        written.extend(minimal_config::write_missing(dir, pg_major(dir)?, &dir.join(STAGED_PG_CONTROL))?);
    }
    if opts.sync {
        target.sync()?;
    }
    // From here on everything is restored, checked and durable: the marker says so
    // first, so a crash before it is gone leaves a directory that --resume completes
    // at once (and that is complete even though the marker is still there).
    let finishing = journal::finishing_marker_text(identity)?;
    fsutil::write_atomically(marker, |f| std::io::Write::write_all(f, finishing.as_bytes()), opts.sync)?;
    final_steps(dir, target, marker, Some(journal))?;
    Ok((written, missing_config))
}

/// The final steps: pg_control installed, then the journal and the marker removed. The
/// journal goes before the marker: a crash between the two leaves a finishing restore
/// with no journal, never a "complete" one with a stale journal in it.
fn final_steps(dir: &Path, target: &Target, marker: &Path, journal: Option<Journal>) -> Result<()> {
    if dir.join(STAGED_PG_CONTROL).exists() || !dir.join("global/pg_control").exists() {
        target.install_pg_control()?;
    }
    fsutil::fsync_dir(&dir.join("global"))?;
    match journal {
        Some(j) => j.remove()?,
        None => journal::remove_in(dir)?,
    }
    fsutil::fsync_dir(dir)?;
    fs::remove_file(marker).map_err(|e| Error::local_io(marker.display(), &e))?;
    fsutil::fsync_dir(dir)?;
    Ok(())
}

/// Completes a restore interrupted during its final steps (its units of work of
/// `sizes`): nothing is fetched again.
pub(crate) fn finish_interrupted_end(dir: &Path, target: &Target, marker: &Path, sizes: Vec<u64>) -> Result<Summary> {
    tracing::info!("resuming a restore that had restored, checked and synced everything: only the final steps remain");
    final_steps(dir, target, marker, None)?;
    Ok(Summary {
        files: 0,
        decoded: 0,
        read: 0,
        partitions: sizes.len(),
        skipped: sizes.len(),
        skipped_bytes: sizes.iter().sum(),
        written: Vec::new(),
        missing_config: minimal_config::missing(dir),
        restore_only: None,
    })
}

/// Extracts `parts` with `opts.parallelism.partitions` workers, taking them in order,
/// while a [`Download`] fetches them (from remote storage: in parallel parts, ahead of
/// the workers); the first failure cancels the others and is returned (the root cause,
/// not a worker's "stopped because another failed").
fn extract_parallel(work: &Work<'_>, parts: &[&ObjectMeta]) -> Result<()> {
    let opts = work.opts;
    let limits = Limits::new(opts.parallelism.transfers, opts.part_size);
    let download = Download::start(Arc::clone(work.storage), parts.iter().map(|p| (*p).clone()).collect(), limits);
    let queue = Mutex::new((0..parts.len()).collect::<VecDeque<_>>());
    let failed = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..opts.parallelism.partitions.min(parts.len()).max(1) {
            s.spawn(|| loop {
                if failed.stopped() {
                    return;
                }
                let Some(index) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                let restored = download
                    .open(index)
                    .and_then(|raw| extract_one(work, parts[index], raw, &failed.stop));
                if let Err(e) = restored {
                    failed.keep(e);
                    return;
                }
            });
        }
    });
    failed.into_result()
}

/// Reads, decodes and extracts one partition on this thread, then records it in the
/// journal once what it wrote is durable.
fn extract_one(work: &Work<'_>, part: &ObjectMeta, raw: ObjectReader, cancel: &AtomicBool) -> Result<()> {
    let progress = work.progress;
    let url = format!("{}/{}", work.storage.describe(), part.key);
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
        inner: decoded(Box::new(counted), codec, &url, work.keys),
        total: 0,
    };
    let mut written = |rel: &str, size: u64| work.journal.file(&part.key, rel, size);
    let under = work.plan.roots.get(&part.key).map(String::as_str);
    let (stats, mut decoded) = work.target.extract(decoded, &url, under, cancel, work.layer, &mut written)?;
    drain_zeros(&mut decoded, &url)?;
    if work.opts.sync {
        work.target.sync()?;
    }
    work.journal.done(&part.key, stats.files, stats.bytes)?;
    progress.decoded.fetch_add(decoded.total, Ordering::Relaxed);
    progress.files.fetch_add(stats.files, Ordering::Relaxed);
    progress.increments.fetch_add(stats.increments, Ordering::Relaxed);
    progress.counters.parts_done.fetch_add(1, Ordering::Relaxed);
    tracing::info!(object = %url, files = stats.files, bytes = stats.bytes, secs = format!("{:.2}", started.elapsed().as_secs_f64()), "partition restored");
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
    /// Increments applied by the layer being restored.
    increments: AtomicU64,
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
