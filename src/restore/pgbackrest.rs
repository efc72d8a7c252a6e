//! Restoring a pgBackRest backup into a directory, by its manifest
//! (`walfetch backup-fetch` on a pgBackRest repository).
//!
//! The manifest lists every file with its SHA-1 and size and where its bytes are: an
//! object of its own (`pg_data/<path>.<ext>`) in this backup or an earlier one of its set,
//! a slice of a bundle, or block-incremental super blocks across the set plus a block map.
//! The restore turns that into units of work, each one storage read:
//!
//! - an object of its own: one file;
//! - a run of adjacent slices of one bundle: the files in it, read in one request, each
//!   slice decrypted and decompressed on its own (a bundle's files are separately
//!   compressed and encrypted);
//! - a block-incremental file: its map, then the super blocks it names (ranges of
//!   bundles or `.pgbi` objects of the backups holding them), each block written at its
//!   place in the file.
//!
//! Units are worked largest first, their bytes fetched in parallel parts into bounded
//! memory ([`Download`]), exactly as a wal-g restore's partitions; every file's SHA-1 and
//! size are checked against the manifest, and a mismatch fails the restore naming the
//! file and the backup. The target, marker, journal (so `--resume` skips finished units),
//! staged `pg_control`, `backup_label` check and recovery configuration are those of every
//! restore ([`super::fetch`]).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha1::{Digest, Sha1};

use super::checks::check_backup_label;
use super::extract::Target;
use super::fetch::{begin, finish, finish_interrupted_end, Begun, Options, Start, Summary, Working};
use super::journal::Identity;
use super::only::Selection;
use super::tablespace;
use crate::archive::pgbackrest::Repository;
use crate::codec::Codec;
use crate::error::{Error, ErrorKind, FirstError, Result};
use crate::layout::backup::Backup;
use crate::pgbackrest::blockmap;
use crate::pgbackrest::cipher::Decrypting;
use crate::pgbackrest::ini::hex;
use crate::pgbackrest::manifest::{File, Manifest};
use crate::progress::{Counters, Reporter};
use crate::storage::download::{Download, Limits, Piece};
use crate::storage::{ObjectReader, Storage};

/// Bytes copied per write.
const BUFFER: usize = 128 * 1024;

/// A super block: the backup (index into the set), bundle and offset holding it.
type SuperKey = (u64, u64, u64);
/// Its stored size, its uncompressed size, and the blocks it gives: (index in it, block
/// of the file).
type SuperBlock = (u64, u64, Vec<(u64, u64)>);

/// One unit of work.
#[derive(Debug, Clone)]
enum Unit {
    /// One storage read holding these files (indexes into the manifest's files), one
    /// after the other.
    Plain { piece: Piece, files: Vec<usize> },
    /// A block-incremental file.
    Block { file: usize },
}

impl Unit {
    /// The journal's name of the unit.
    fn id(&self, manifest: &Manifest) -> String {
        match self {
            Unit::Plain { piece, .. } if piece.offset == 0 && piece.object_size == Some(piece.len) => piece.key.clone(),
            Unit::Plain { piece, .. } => format!("{}@{}", piece.key, piece.offset),
            Unit::Block { file } => format!("block:{}", manifest.files[*file].name),
        }
    }

    /// Bytes stored, for ordering and progress.
    fn size(&self, manifest: &Manifest) -> u64 {
        match self {
            Unit::Plain { piece, .. } => piece.len,
            Unit::Block { file } => manifest.files[*file].repo_size,
        }
    }
}

/// The manifest name as a path relative to the data directory (`pg_data/base/1/2` is
/// `base/1/2`; tablespace files keep `pg_tblspc/<oid>/…`).
fn relative(name: &str) -> Option<Vec<String>> {
    let rest = match name.strip_prefix("pg_data") {
        Some("") => return Some(Vec::new()),
        Some(r) => r.strip_prefix('/')?.to_string(),
        None if name.starts_with("pg_tblspc/") => name.to_string(),
        None => return None,
    };
    let parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
        return None;
    }
    Some(parts)
}

/// The codec of the set's compression type; pgBackRest's "raw" gz is a zlib stream.
fn codec_of(compress: &str, raw: bool, object: &str) -> Result<Codec> {
    Ok(match compress {
        "none" => Codec::None,
        "gz" if raw => Codec::Zlib,
        "gz" => Codec::Gzip,
        "lz4" => Codec::Lz4,
        "zst" => Codec::Zstd,
        "bz2" => Codec::Bzip2,
        other => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{object}: compression '{other}' is not one pgBackRest writes (gz, bz2, lz4, zst, none)"),
            ))
        }
    })
}

/// What the restore of one backup needs, shared by the workers.
struct Job<'a> {
    storage: &'a Arc<dyn Storage>,
    stanza: &'a str,
    manifest: &'a Manifest,
    target: &'a Target,
    working: &'a Working,
    /// The passphrase of the set's files.
    pass: Option<&'a str>,
    counters: Arc<Counters>,
    files: AtomicU64,
    bytes: AtomicU64,
    sync: bool,
    /// `--restore-only`: the databases whose files are placeholders.
    only: Option<&'a Selection>,
}

impl Job<'_> {
    /// Whether `file` belongs to a database left as a placeholder.
    fn excluded(&self, file: &File) -> bool {
        self.only
            .is_some_and(|o| relative(&file.name).is_some_and(|p| o.excludes(&p.join("/"))))
    }
}

impl Job<'_> {
    /// Key of a backup's object holding `file` on its own (`.pgbi` for block incremental).
    fn own_key(&self, label: &str, file: &File) -> Result<String> {
        if file.block.is_some() {
            return Ok(format!("backup/{}/{label}/{}.pgbi", self.stanza, file.name));
        }
        let ext = match codec_of(&self.manifest.compress, false, &file.name)? {
            Codec::None => String::new(),
            c => format!(".{}", c.extension()),
        };
        Ok(format!("backup/{}/{label}/{}{ext}", self.stanza, file.name))
    }

    fn bundle_key(&self, label: &str, bundle: u64) -> String {
        format!("backup/{}/{label}/bundle/{bundle}", self.stanza)
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.storage.describe())
    }

    /// A reader of a stored slice: decrypted (raw form or not) and decompressed.
    fn decode(&self, raw: Box<dyn Read + Send>, url: &str, raw_form: bool) -> Result<Box<dyn Read + Send>> {
        let plain: Box<dyn Read + Send> = match self.pass {
            Some(p) => Box::new(Decrypting::new(raw, p, raw_form, url)),
            None => raw,
        };
        let codec = codec_of(&self.manifest.compress, raw_form, url)?;
        Ok(Box::new(codec.decoder(plain, url)))
    }

    /// The error for a file whose restored bytes are not the manifest's.
    fn mismatch(&self, file: &File, what: String) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "file {} of backup {} (stored in {}): {what}; the repository's copy is damaged",
                file.name,
                self.manifest.label,
                self.manifest.label_of(file)
            ),
        )
    }

    fn mode(&self, file: &File) -> u32 {
        file.mode.or(self.manifest.file_mode).unwrap_or(0o600)
    }

    /// Writes `file` from `decoded`, checking its size and SHA-1.
    fn write_file(&self, file: &File, mut decoded: impl Read, url: &str) -> Result<u64> {
        let parts = relative(&file.name).ok_or_else(|| unsafe_name(&file.name, url))?;
        let (out, path) = self.target.create_file(&parts, self.mode(file), url)?;
        if file.size >= 1 << 20 {
            crate::fsutil::preallocate(&out, file.size);
        }
        let (total, actual) = if file.size >= PIPELINE_FROM {
            hash_and_write_beside(&mut decoded, out, &path, url)?
        } else {
            hash_and_write(&mut decoded, out, &path, url)?
        };
        if total != file.size {
            return Err(self.mismatch(file, format!("restored {total} bytes, the manifest records {}", file.size)));
        }
        if actual != file.checksum {
            return Err(self.mismatch(
                file,
                format!("its SHA-1 is {}, the manifest records {}", hex(&actual), hex(&file.checksum)),
            ));
        }
        Ok(total)
    }

    /// Restores the files of one storage read.
    fn plain(&self, piece: &Piece, files: &[usize], raw: ObjectReader, id: &str) -> Result<()> {
        let url = self.url(&piece.key);
        let shared = Arc::new(Mutex::new(Counting {
            inner: raw,
            counters: Arc::clone(&self.counters),
        }));
        let bundled = files.len() > 1 || self.manifest.files[files[0]].bundle != 0;
        for &i in files {
            let file = &self.manifest.files[i];
            let slice = Slice {
                inner: Arc::clone(&shared),
                left: file.repo_size,
            };
            let what = if bundled { format!("{url} ({})", file.name) } else { url.clone() };
            let decoded = self.decode(Box::new(slice), &what, bundled && self.manifest.bundle_raw)?;
            let written = self.write_file(file, decoded, &what)?;
            self.record(id, file, written)?;
        }
        Ok(())
    }

    /// Notes a file written, for the journal and the progress.
    fn record(&self, id: &str, file: &File, written: u64) -> Result<()> {
        if let Some(parts) = relative(&file.name) {
            self.working.journal.file(id, &parts.join("/"), written)?;
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// Rebuilds a block-incremental file from its map and the super blocks it names.
    fn block(&self, index: usize, id: &str) -> Result<()> {
        let file = &self.manifest.files[index];
        let Some(bi) = file.block else {
            return Err(Error::new(ErrorKind::LocalIo, "internal: not a block-incremental file"));
        };
        let label = self.manifest.label_of(file);
        let key = if file.bundle != 0 {
            self.bundle_key(label, file.bundle)
        } else {
            self.own_key(label, file)?
        };
        let url = format!("{} ({} block map)", self.url(&key), file.name);
        let end = file.bundle_offset + file.repo_size;
        let start = end
            .checked_sub(bi.map_size)
            .ok_or_else(|| self.mismatch(file, "its block map is larger than its stored bytes".into()))?;
        let raw = self.storage.open_range(&key, start, end)?;
        let mut map = Vec::new();
        self.decode_map(raw, &url)?
            .read_to_end(&mut map)
            .map_err(|e| read_error(&e, &url))?;
        self.counters.read.fetch_add(bi.map_size, Ordering::Relaxed);
        let blocks = blockmap::decode(&map, bi.block_size, usize::from(bi.checksum_size), &url)?;
        // Super blocks, each read once, with the file blocks each gives.
        let mut supers: BTreeMap<SuperKey, SuperBlock> = BTreeMap::new();
        for (n, b) in blocks.iter().enumerate() {
            supers
                .entry((b.reference, b.bundle, b.offset))
                .or_insert((b.size, b.super_size, Vec::new()))
                .2
                .push((b.index, n as u64));
        }
        let parts = relative(&file.name).ok_or_else(|| unsafe_name(&file.name, &url))?;
        let (out, path) = self.target.create_file(&parts, self.mode(file), &url)?;
        out.set_len(file.size).map_err(|e| Error::local_io(path.display(), &e))?;
        for ((reference, bundle, offset), (size, super_size, wanted)) in supers {
            let holder = self.manifest.labels.get(reference as usize).ok_or_else(|| {
                self.mismatch(
                    file,
                    format!("its block map names backup #{reference}, which its set does not list"),
                )
            })?;
            let key = if bundle != 0 {
                self.bundle_key(holder, bundle)
            } else {
                self.own_key(holder, file)?
            };
            let sb_url = format!("{} ({} super block at {offset})", self.url(&key), file.name);
            let raw = self.storage.open_range(&key, offset, offset + size)?;
            self.counters.read.fetch_add(size, Ordering::Relaxed);
            let mut decoded = self.decode(raw, &sb_url, true)?;
            self.write_blocks(&mut decoded, &out, &path, bi.block_size, super_size, &wanted, file, &sb_url)?;
        }
        drop(out);
        self.verify_written(file, &path)?;
        self.record(id, file, file.size)
    }

    /// The block map, decrypted (raw form; maps are not compressed).
    fn decode_map(&self, raw: ObjectReader, url: &str) -> Result<Box<dyn Read + Send>> {
        Ok(match self.pass {
            Some(p) => Box::new(Decrypting::new(raw, p, true, url)),
            None => raw,
        })
    }

    /// Streams one decoded super block, writing the blocks `wanted` (index in the super
    /// block, block of the file) where they belong.
    #[allow(clippy::too_many_arguments)]
    fn write_blocks(
        &self,
        decoded: &mut dyn Read,
        out: &std::fs::File,
        path: &Path,
        block_size: u64,
        super_size: u64,
        wanted: &[(u64, u64)],
        file: &File,
        url: &str,
    ) -> Result<()> {
        let mut buf = vec![0u8; usize::try_from(block_size).unwrap_or(usize::MAX)];
        let count = super_size.div_ceil(block_size);
        for index in 0..count {
            let len = block_size.min(super_size - index * block_size) as usize;
            read_exactly(decoded, &mut buf[..len], url)?;
            for (_, n) in wanted.iter().filter(|(i, _)| *i == index) {
                let at = n * block_size;
                let len = len.min(file.size.saturating_sub(at) as usize);
                out.write_all_at(&buf[..len], at).map_err(|e| Error::local_io(path.display(), &e))?;
            }
        }
        // A super block is read whole: its stream must end where its size says.
        let mut extra = [0u8; 1];
        match decoded.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.mismatch(file, format!("{url} holds more than its {super_size} bytes"))),
            Err(e) => Err(read_error(&e, url)),
        }
    }

    /// Checks a file written in pieces against the manifest's size and SHA-1.
    fn verify_written(&self, file: &File, path: &Path) -> Result<()> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::local_io(path.display(), &e))?;
        let mut hash = Sha1::new();
        let mut buf = vec![0u8; BUFFER];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::local_io(path.display(), &e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
        }
        let actual: [u8; 20] = hash.finalize().into();
        if total != file.size || actual != file.checksum {
            return Err(self.mismatch(
                file,
                format!(
                    "rebuilt from its blocks it has {total} bytes and SHA-1 {}, the manifest records {} bytes and {}",
                    hex(&actual),
                    file.size,
                    hex(&file.checksum)
                ),
            ));
        }
        Ok(())
    }
}

/// Files at least this large are decoded on one thread and hashed and written on
/// another: a 1 GB relation file is one unit of work, and its decoding, SHA-1 and write
/// on one core would be the restore's critical path.
const PIPELINE_FROM: u64 = 8 << 20;

/// Copies `decoded` into `out`, hashing on the way: bytes written and their SHA-1.
fn hash_and_write(decoded: &mut dyn Read, mut out: std::fs::File, path: &Path, url: &str) -> Result<(u64, [u8; 20])> {
    let mut hash = Sha1::new();
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(&e, url)),
        };
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::local_io(path.display(), &e))?;
        total += n as u64;
    }
    Ok((total, hash.finalize().into()))
}

/// Like [`hash_and_write`], with the hashing and writing on a thread of their own, fed
/// through a few recycled buffers (memory stays at a handful of them).
fn hash_and_write_beside(decoded: &mut dyn Read, mut out: std::fs::File, path: &Path, url: &str) -> Result<(u64, [u8; 20])> {
    const BUFFERS: usize = 4;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = empty_tx.send(vec![0u8; BUFFER]);
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(u64, [u8; 20])> {
            let mut hash = Sha1::new();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                hash.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| Error::local_io(path.display(), &e))?;
                total += n as u64;
                let _ = empty_tx.send(buf);
            }
            Ok((total, hash.finalize().into()))
        });
        let read = (|| -> Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                let n = loop {
                    match decoded.read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_error(&e, url)),
                    }
                };
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::LocalIo, "the writing thread panicked")));
        read.and(written)
    })
}

/// Reads exactly `buf.len()` bytes.
fn read_exactly(r: &mut dyn Read, buf: &mut [u8], url: &str) -> Result<()> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{url}: ends {} bytes short of its size", buf.len() - n),
                ))
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(&e, url)),
        }
    }
    Ok(())
}

fn read_error(e: &io::Error, url: &str) -> Error {
    Error::from_io_ref(e).unwrap_or_else(|| Error::new(ErrorKind::Corrupt, format!("{url}: {e}")))
}

fn unsafe_name(name: &str, url: &str) -> Error {
    Error::new(
        ErrorKind::Unsafe,
        format!("{url}: the manifest names '{name}', which is not inside the data directory; refusing the backup"),
    )
}

/// Counts bytes read from storage, for the progress report.
struct Counting {
    inner: ObjectReader,
    counters: Arc<Counters>,
}

/// The next `left` bytes of a shared reader: one file's slice of a bundle.
struct Slice {
    inner: Arc<Mutex<Counting>>,
    left: u64,
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n = inner.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stored object ends before the slice",
            ));
        }
        inner.counters.read.fetch_add(n as u64, Ordering::Relaxed);
        self.left -= n as u64;
        Ok(n)
    }
}

impl Drop for Slice {
    /// Leaves the shared reader at the next slice, whatever the decoder left unread.
    fn drop(&mut self) {
        let mut rest = vec![0u8; 64 * 1024];
        while self.left > 0 {
            match self.read(&mut rest) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// The units of work of `manifest`: objects of their own, runs of adjacent bundle
/// slices, block-incremental files; largest first. Empty files are not among them.
fn units(job: &Job<'_>) -> Result<Vec<Unit>> {
    let m = job.manifest;
    let mut out = Vec::new();
    let mut bundles: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
    for (i, f) in m.files.iter().enumerate() {
        if f.size == 0 || job.excluded(f) {
            continue;
        }
        if f.block.is_some() {
            out.push(Unit::Block { file: i });
        } else if f.bundle != 0 {
            bundles.entry((f.backup, f.bundle)).or_default().push(i);
        } else {
            out.push(Unit::Plain {
                piece: Piece {
                    key: job.own_key(m.label_of(f), f)?,
                    offset: 0,
                    len: f.repo_size,
                    object_size: Some(f.repo_size),
                },
                files: vec![i],
            });
        }
    }
    for ((backup, bundle), mut files) in bundles {
        let label = m.labels.get(backup as usize).cloned().unwrap_or_default();
        let key = job.bundle_key(&label, bundle);
        files.sort_by_key(|i| m.files[*i].bundle_offset);
        let mut run: Vec<usize> = Vec::new();
        let flush = |run: &mut Vec<usize>, out: &mut Vec<Unit>| {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                let start = m.files[*first].bundle_offset;
                let end = m.files[*last].bundle_offset + m.files[*last].repo_size;
                out.push(Unit::Plain {
                    piece: Piece {
                        key: key.clone(),
                        offset: start,
                        len: end - start,
                        object_size: None,
                    },
                    files: std::mem::take(run),
                });
            }
        };
        for i in files {
            let f = &m.files[i];
            let adjacent = run
                .last()
                .is_some_and(|l| m.files[*l].bundle_offset + m.files[*l].repo_size == f.bundle_offset);
            if !adjacent {
                flush(&mut run, &mut out);
            }
            run.push(i);
        }
        flush(&mut run, &mut out);
    }
    out.sort_by_key(|u| std::cmp::Reverse(u.size(m)));
    Ok(out)
}

/// Refuses a set whose files the repository no longer has (a backup of the set expired
/// or deleted: listed in `backup.info` or not, its manifest must be there), or one in
/// pgBackRest 2.45's beta block-incremental format (incompatible with the final one).
fn check_set(repo: &Repository, manifest: &Manifest) -> Result<()> {
    let info = repo.backup_info()?;
    let storage = crate::archive::Archive::storage(repo);
    let present = |label: &str| -> Result<bool> {
        let key = format!("backup/{}/{label}/backup.manifest", repo.stanza());
        Ok(storage.stat(&key)?.is_some() || storage.stat(&format!("{key}.copy"))?.is_some())
    };
    let used: std::collections::BTreeSet<u32> = manifest.files.iter().map(|f| f.backup).collect();
    for i in used {
        let label = manifest.labels.get(i as usize).map(String::as_str).unwrap_or("?");
        let entry = info.backups.iter().find(|b| b.label == label);
        if let Some(b) = entry {
            if b.version == "2.45" && manifest.files.iter().any(|f| f.backup == i && f.block.is_some()) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "backup {label} was written by pgBackRest 2.45 with its beta block incremental, a format pgBackRest itself no longer reads; restore an older full backup, or take a new one with pgBackRest 2.46 or later"
                    ),
                ));
            }
        }
        if entry.is_some() && (label == manifest.label || present(label)?) {
            continue;
        }
        let mut restorable = None;
        for full in info.backups.iter().rev().filter(|b| b.kind == "full") {
            if present(&full.label)? {
                restorable = Some(full.label.clone());
                break;
            }
        }
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "backup {} needs files of backup {label}, which the repository no longer has (expired or deleted); the newest full backup that can be restored is {}",
                manifest.label,
                restorable.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    Ok(())
}

/// Reads the manifest of backup `label` of `repo`.
pub fn read_manifest(repo: &Repository, label: &str) -> Result<Manifest> {
    let storage = crate::archive::Archive::storage(repo);
    let info = repo.backup_info()?;
    Manifest::read(storage.as_ref(), repo.stanza(), label, info.cipher_pass.as_deref())
}

/// Restores `backup` (with its `manifest`) of the pgBackRest repository `repo` into
/// `dir` (prepared, see [`super::fetch::prepare_target`]), afresh or continuing an
/// interrupted restore.
pub fn restore(repo: &Repository, backup: &Backup, manifest: &Manifest, dir: &Path, opts: &Options, start: Start) -> Result<Summary> {
    let storage = crate::archive::Archive::storage(repo);
    check_set(repo, manifest)?;
    let identity = Identity {
        backup: manifest.label.clone(),
        start_lsn: manifest.lsn_start.clone(),
        finish_lsn: manifest.lsn_stop.clone(),
        system_identifier: Some(manifest.system_id),
        finish_time: backup.sentinel.finish_time.clone(),
    };
    let sources = manifest.tablespaces.iter().map(|t| (t.oid.clone(), PathBuf::from(&t.path)));
    let locations = tablespace::relocate(sources.collect(), &opts.tablespace_map)?;
    let working = match begin(dir, &identity, locations, opts, start)? {
        Begun::Working(w) => w,
        Begun::Finishing(target, marker) => {
            let sizes = manifest.files.iter().map(|f| f.repo_size).collect();
            return finish_interrupted_end(dir, &target, &marker, sizes);
        }
    };
    let selection = select_databases(manifest, opts)?;
    let job = Job {
        only: selection.as_ref(),
        storage,
        stanza: repo.stanza(),
        manifest,
        target: &working.target,
        working: &working,
        pass: manifest.cipher_pass.as_deref(),
        counters: Arc::new(Counters::default()),
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        sync: opts.sync,
    };
    make_paths(&job)?;
    let all = units(&job)?;
    redo_distrusted(&working)?;
    let todo: Vec<Unit> = all
        .iter()
        .filter(|u| !working.vouched.partitions.contains(&u.id(manifest)))
        .cloned()
        .collect();
    let skipped = all.len() - todo.len();
    let skipped_bytes: u64 = all.iter().map(|u| u.size(manifest)).sum::<u64>() - todo.iter().map(|u| u.size(manifest)).sum::<u64>();
    let total: u64 = todo.iter().map(|u| u.size(manifest)).sum();
    let reporter = Reporter::start(
        &format!("restoring {}", manifest.label),
        Arc::clone(&job.counters),
        total,
        todo.len() as u64,
    );
    work(&job, &todo, opts)?;
    drop(reporter);
    check_backup_label(&working.target, backup)?;
    let left_out: u64 = manifest.files.iter().filter(|f| job.excluded(f)).map(|f| f.repo_size).sum();
    let restore_only = selection.as_ref().map(|s| s.advice(left_out));
    let (files, decoded, read) = (
        job.files.load(Ordering::Relaxed) + manifest.files.iter().filter(|f| f.size == 0).count() as u64,
        job.bytes.load(Ordering::Relaxed),
        job.counters.read.load(Ordering::Relaxed),
    );
    drop(job);
    let Working {
        target, journal, marker, ..
    } = working;
    let (written, missing_config) = finish(dir, &target, &marker, journal, &identity, opts)?;
    Ok(Summary {
        files,
        decoded,
        read,
        partitions: all.len(),
        skipped,
        skipped_bytes,
        written,
        missing_config,
        restore_only,
    })
}

/// With `--restore-only`: the databases kept, from the manifest's list.
fn select_databases(manifest: &Manifest, opts: &Options) -> Result<Option<crate::restore::only::Selection>> {
    match opts.restore_only.as_slice() {
        [] => Ok(None),
        wanted => {
            let dbs: BTreeMap<String, u32> = manifest.databases.clone();
            let what = format!("the manifest of {}", manifest.label);
            crate::restore::only::select(wanted, &dbs, &what).map(Some)
        }
    }
}

/// Marks each unit the journal records as done but cannot vouch for to be fetched again.
fn redo_distrusted(working: &Working) -> Result<()> {
    for (partition, why) in &working.vouched.distrusted {
        tracing::warn!(unit = %partition, cause = %why, "the journal says this unit was restored, but it cannot be trusted; fetching it again");
        working.journal.redo(partition)?;
    }
    Ok(())
}

/// Makes every directory of the manifest, and its empty files (nothing to read for
/// them). `pg_tblspc/<oid>` itself is the link to the tablespace, made already.
fn make_paths(job: &Job<'_>) -> Result<()> {
    for (name, _) in &job.manifest.paths {
        let Some(parts) = relative(name) else { continue };
        let is_link = parts.len() == 2 && parts[0] == "pg_tblspc";
        if parts.is_empty() || is_link {
            continue;
        }
        job.target.create_dir(&parts)?;
    }
    for f in job.manifest.files.iter().filter(|f| f.size == 0 || job.excluded(f)) {
        let parts = relative(&f.name).ok_or_else(|| unsafe_name(&f.name, "the manifest"))?;
        let (file, path) = job.target.create_file(&parts, job.mode(f), &f.name)?;
        // A placeholder of a database left out: its size, no data (sparse).
        file.set_len(f.size).map_err(|e| Error::local_io(path.display(), &e))?;
    }
    Ok(())
}

/// Works `units` in order with as many workers as the restore extracts partitions at
/// once; plain units' bytes come through one [`Download`]. The first failure stops the
/// others and is returned.
fn work(job: &Job<'_>, units: &[Unit], opts: &Options) -> Result<()> {
    let pieces: Vec<Piece> = units
        .iter()
        .filter_map(|u| match u {
            Unit::Plain { piece, .. } => Some(piece.clone()),
            Unit::Block { .. } => None,
        })
        .collect();
    let mut piece_of = Vec::with_capacity(units.len());
    let mut next = 0usize;
    for u in units {
        piece_of.push(match u {
            Unit::Plain { .. } => {
                next += 1;
                Some(next - 1)
            }
            Unit::Block { .. } => None,
        });
    }
    let limits = Limits::new(opts.parallelism.transfers, opts.part_size);
    let download = Download::start_pieces(Arc::clone(job.storage), pieces, limits);
    let queue = Mutex::new((0..units.len()).collect::<VecDeque<_>>());
    let failed = FirstError::default();
    let workers = opts.parallelism.partitions.max(opts.parallelism.transfers.min(16)).max(1);
    let durable = Durable::default();
    std::thread::scope(|s| {
        for _ in 0..workers.min(units.len()).max(1) {
            s.spawn(|| loop {
                if failed.stopped() {
                    return;
                }
                let Some(index) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                let unit = &units[index];
                let id = unit.id(job.manifest);
                let done = match unit {
                    Unit::Plain { piece, files } => piece_of[index]
                        .ok_or_else(|| Error::new(ErrorKind::LocalIo, "internal: a unit without its piece"))
                        .and_then(|p| download.open(p))
                        .and_then(|raw| job.plain(piece, files, raw, &id)),
                    Unit::Block { file } => job.block(*file, &id),
                }
                .and_then(|()| {
                    let files = match unit {
                        Unit::Plain { files, .. } => files.len() as u64,
                        Unit::Block { .. } => 1,
                    };
                    job.counters.parts_done.fetch_add(1, Ordering::Relaxed);
                    durable.done(job, id.clone(), files, unit.size(job.manifest))
                });
                if let Err(e) = done {
                    failed.keep(e);
                    return;
                }
            });
        }
    });
    failed.into_result()?;
    durable.flush(job)
}

/// Units finished but not yet recorded in the journal: a unit is recorded only once what
/// it wrote is on disk, and one `syncfs` makes many units durable at once (a unit per
/// file of its own would otherwise cost a sync each).
#[derive(Default)]
struct Durable {
    pending: Mutex<Pending>,
}

/// Finished units waiting for a sync (id, files, bytes), their bytes, and since when.
type Pending = (Vec<(String, u64, u64)>, u64, Option<std::time::Instant>);

/// Bytes of finished units that trigger a sync and their journal lines.
const SYNC_EVERY_BYTES: u64 = 256 << 20;
/// The longest a finished unit waits for its journal line.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Durable {
    /// Notes a finished unit; syncs and records the pending ones when enough are pending.
    fn done(&self, job: &Job<'_>, id: String, files: u64, bytes: u64) -> Result<()> {
        if !job.sync {
            return job.working.journal.done(&id, files, bytes);
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.0.push((id, files, bytes));
        p.1 += bytes;
        let since = *p.2.get_or_insert_with(std::time::Instant::now);
        if p.1 < SYNC_EVERY_BYTES && since.elapsed() < SYNC_EVERY {
            return Ok(());
        }
        let batch = std::mem::take(&mut p.0);
        p.1 = 0;
        p.2 = None;
        drop(p);
        Durable::record(job, batch)
    }

    /// Syncs and records whatever is pending.
    fn flush(&self, job: &Job<'_>) -> Result<()> {
        let batch = std::mem::take(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()).0);
        Durable::record(job, batch)
    }

    fn record(job: &Job<'_>, batch: Vec<(String, u64, u64)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        job.target.sync()?;
        for (id, files, bytes) in batch {
            job.working.journal.done(&id, files, bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_become_paths_inside_the_data_directory() {
        assert_eq!(relative("pg_data/base/1/2").unwrap(), ["base", "1", "2"]);
        assert_eq!(relative("pg_data").unwrap(), Vec::<String>::new());
        assert_eq!(
            relative("pg_tblspc/16385/PG_15_1/5/1").unwrap(),
            ["pg_tblspc", "16385", "PG_15_1", "5", "1"]
        );
        assert_eq!(relative("pg_data/../etc/passwd"), None);
        assert_eq!(relative("elsewhere/x"), None);
        assert_eq!(codec_of("gz", true, "o").unwrap(), Codec::Zlib);
        assert_eq!(codec_of("gz", false, "o").unwrap(), Codec::Gzip);
        assert!(codec_of("xz", false, "o").is_err());
    }
}
