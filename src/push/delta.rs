//! Delta backups, written in wal-g's format so that walfetch, wal-g and walrus restore
//! them (`backup-push` with `WALG_DELTA_MAX_STEPS`).
//!
//! A delta is taken against a base, the newest backup (`WALG_DELTA_ORIGIN=LATEST`) or
//! the newest full one (`LATEST_FULL`), when the base's chain has fewer than
//! `WALG_DELTA_MAX_STEPS` deltas, comes from the same cluster (system identifier,
//! major version, timeline) and has `files_metadata.json`; otherwise the backup is full.
//! Each file of the data directory is then:
//! - **skipped** (listed `IsSkipped`, not in any partition) when it is a relation file
//!   the base has with the same modification time: unchanged since;
//! - **incremented** (`IsIncremented`, a `wi1` increment in the partition) when it is a
//!   relation file the base has: the pages whose LSN is at or past the base's start
//!   LSN, plus new (zeroed) and unparseable pages, as wal-g selects them. A page
//!   changed after the base began carries such an LSN; one changed during this backup
//!   is rewritten by the WAL replayed from its start (a full-page image), whatever was
//!   read;
//! - **whole** otherwise (not a relation file, new since the base, not a whole number
//!   of pages).
//!
//! A file is read twice: once to choose its pages (only their block numbers are kept,
//! 4 bytes a page), once to send them. The new backup is named
//! `base_<own segment>_D_<base's segment>`, as wal-g names it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::constants::COPY_BUFFER_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::{list_backups, Backup};
use crate::layout::backup_file_key;
use crate::layout::files_metadata::{self, normal_name};
use crate::layout::increment;
use crate::storage::Storage;
use crate::wal::name::Segment;

/// Bytes of a page.
const PAGE: u64 = 8192;
/// Bytes of a page header.
const PAGE_HEADER: usize = 24;
/// The page flags PostgreSQL defines (`PD_VALID_FLAG_BITS`).
const PAGE_VALID_FLAGS: u16 = 0x0007;
/// The largest file sent as an increment (what walfetch's reader accepts).
const MAX_INCREMENTED_FILE: u64 = 64 << 30;

/// Which backup a delta is taken against (`WALG_DELTA_ORIGIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The newest backup, full or delta (`LATEST`, the default).
    Latest,
    /// The newest full backup (`LATEST_FULL`).
    LatestFull,
}

impl FromStr for Origin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Origin> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" | "LATEST" => Ok(Origin::Latest),
            "LATEST_FULL" => Ok(Origin::LatestFull),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("WALG_DELTA_ORIGIN '{other}': use LATEST or LATEST_FULL"),
            )),
        }
    }
}

/// How deltas are taken.
#[derive(Debug, Clone, Copy)]
pub struct DeltaSettings {
    /// Deltas allowed between two full backups (`WALG_DELTA_MAX_STEPS`; 0: none).
    pub max_steps: u64,
    /// What a delta is taken against.
    pub origin: Origin,
}

/// The backup a delta is taken against.
#[derive(Debug)]
pub struct Base {
    /// Its name (`DeltaFrom`).
    pub name: String,
    /// The segment its name starts with (the new backup's `_D_` suffix).
    pub segment: Segment,
    /// The full backup at the root of its chain (`DeltaFullName`).
    pub full_name: String,
    /// Its start LSN: pages at or past it are taken (`DeltaFromLSN`).
    pub from_lsn: u64,
    /// The new delta's place in the chain (`DeltaCount`).
    pub count: u64,
    /// Its files: name to modification time (nanoseconds since the epoch, when given).
    files: HashMap<String, Option<i128>>,
}

/// The base for a delta of the cluster `system_identifier` running `pg_version`
/// (`server_version_num`), or `None` for a full backup (with the reason logged).
pub fn choose(
    storage: &Arc<dyn Storage>,
    settings: &DeltaSettings,
    system_identifier: u64,
    pg_version: i64,
    concurrency: usize,
) -> Result<Option<Base>> {
    if settings.max_steps == 0 {
        return Ok(None);
    }
    // A new archive holds nothing yet: no base, and nothing to prove absent.
    if !storage.holds_objects()? {
        tracing::info!("the archive is empty: taking a full backup");
        return Ok(None);
    }
    let backups = list_backups(storage, concurrency)?;
    let candidate = match settings.origin {
        Origin::Latest => backups.last(),
        Origin::LatestFull => backups.iter().rev().find(|b| b.sentinel.delta_from.is_none()),
    };
    let Some(base) = candidate else {
        tracing::info!("no backup to take a delta against: taking a full backup");
        return Ok(None);
    };
    let full = |why: &str| {
        tracing::info!(base = %base.name.name, "{why}: taking a full backup");
        Ok(None)
    };
    let count = steps(base) + 1;
    if count > settings.max_steps {
        return full(&format!(
            "the chain would have {count} deltas, more than WALG_DELTA_MAX_STEPS={}",
            settings.max_steps
        ));
    }
    if base.sentinel.system_identifier.is_some_and(|s| s != system_identifier) {
        return full("the newest backup is of another cluster (system identifier)");
    }
    if base.sentinel.pg_version.is_some_and(|v| v as i64 / 10000 != pg_version / 10000) {
        return full("the newest backup is of another PostgreSQL major version");
    }
    if base.sentinel.increment_format.as_deref().is_some_and(|f| f != "wi1") {
        return full("the newest backup is a PostgreSQL 17 native incremental backup");
    }
    let Some(from_lsn) = base.sentinel.lsn else {
        return full("the newest backup's sentinel has no start LSN");
    };
    if base.name.is_wale() || base.sentinel.files_metadata_disabled == Some(true) {
        return full("the newest backup has no files_metadata.json");
    }
    let key = backup_file_key(&base.name.name, "files_metadata.json");
    let object = format!("{}/{key}", storage.describe());
    let reader = match storage.open(&key) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return full("the newest backup has no files_metadata.json"),
        Err(e) => return Err(e),
    };
    let mut files = HashMap::new();
    files_metadata::read(reader, &object, &mut |name, entry| {
        let mtime = entry
            .mtime
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()));
        files.insert(normal_name(name), mtime);
        Ok(())
    })?;
    let full_name = base.sentinel.delta_full_name.clone().unwrap_or_else(|| base.name.name.clone());
    Ok(Some(Base {
        name: base.name.name.clone(),
        segment: base.name.start_segment,
        full_name,
        from_lsn,
        count,
        files,
    }))
}

/// Deltas in `b`'s chain up to it (0 for a full backup).
fn steps(b: &Backup) -> u64 {
    match (&b.sentinel.delta_from, b.sentinel.delta_count) {
        (None, _) => 0,
        (Some(_), Some(n)) => n.max(1),
        (Some(_), None) => 1,
    }
}

/// How one file goes into a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The whole file.
    Whole,
    /// Unchanged since the base: not sent.
    Skipped,
    /// A `wi1` increment: the file's size and the pages to send.
    Increment {
        /// The file's size (a whole number of pages).
        size: u64,
        /// Block numbers of the pages sent, ascending.
        blocks: Vec<u32>,
    },
}

impl Base {
    /// The name of a delta that starts in `segment` (its 24-digit name) against this base.
    pub fn delta_name(&self, segment: &str) -> String {
        format!("base_{segment}_D_{}", self.segment)
    }

    /// How the file `name` (at `path`, `size` bytes, modified at `mtime`) goes in.
    /// `None` when the file vanished (dropped during the backup).
    pub fn plan(&self, name: &str, path: &std::path::Path, size: u64, mtime: SystemTime) -> io::Result<Option<Plan>> {
        if !is_paged(name) {
            return Ok(Some(Plan::Whole));
        }
        let Some(base_mtime) = self.files.get(name) else {
            return Ok(Some(Plan::Whole));
        };
        if base_mtime.is_some() && *base_mtime == nanos(mtime) {
            return Ok(Some(Plan::Skipped));
        }
        if size == 0 || size % PAGE != 0 || size > MAX_INCREMENTED_FILE {
            return Ok(Some(Plan::Whole));
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Plan::Increment {
            size,
            blocks: changed_blocks(file, size, self.from_lsn)?,
        }))
    }
}

fn nanos(t: SystemTime) -> Option<i128> {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => Some(d.as_nanos() as i128),
        Err(e) => Some(-(e.duration().as_nanos() as i128)),
    }
}

/// Whether `name` is a relation file: under `base/` or a tablespace, named
/// `<relfilenode>` or `<relfilenode>.<segment>`.
pub fn is_paged(name: &str) -> bool {
    if !(name.starts_with("base/") || name.starts_with("pg_tblspc/")) {
        return false;
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    let (rel, seg) = base.split_once('.').unwrap_or((base, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(rel) && digits(seg)
}

/// Whether a page (its header, at least [`PAGE_HEADER`] bytes) is sent in a delta
/// against a base that started at `from_lsn`: a new page, one whose header is not a
/// valid one (its LSN cannot be trusted), or one changed at or after `from_lsn`.
pub fn page_wanted(header: &[u8], from_lsn: u64) -> bool {
    let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    if header.len() < PAGE_HEADER || u16_at(14) == 0 {
        return true;
    }
    let lsn = (u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]])) << 32)
        | u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
    let (flags, lower, upper, special, size_version) = (u16_at(10), u16_at(12), u16_at(14), u16_at(16), u16_at(18));
    let valid = flags & !PAGE_VALID_FLAGS == 0
        && usize::from(lower) >= PAGE_HEADER
        && lower <= upper
        && upper <= special
        && u64::from(special) <= PAGE
        && lsn != 0
        && u64::from(size_version & 0xFF00) == PAGE;
    !valid || lsn >= from_lsn
}

/// Reads `file` (`size` bytes) and returns the blocks [`page_wanted`] keeps. A file cut
/// short while read ends the list there.
fn changed_blocks(mut file: File, size: u64, from_lsn: u64) -> io::Result<Vec<u32>> {
    let mut blocks = Vec::new();
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    let mut block: u64 = 0;
    let pages = size / PAGE;
    while block < pages {
        let want = ((pages - block) * PAGE).min(buf.len() as u64) as usize;
        let got = crate::fsutil::read_up_to(&mut file, &mut buf[..want])?;
        for page in buf[..got - got % PAGE as usize].chunks_exact(PAGE as usize) {
            if page_wanted(page, from_lsn) {
                blocks.push(block as u32);
            }
            block += 1;
        }
        if got < want {
            break;
        }
    }
    Ok(blocks)
}

/// Bytes of the `wi1` increment of a file with `blocks` sent.
pub fn increment_len(blocks: &[u32]) -> u64 {
    increment::HEADER_LEN as u64 + 4 * blocks.len() as u64 + PAGE * blocks.len() as u64
}

/// A `wi1` increment ([`crate::layout::increment`]) as it streams. A page the file no
/// longer holds (truncated since) is sent as zeroes.
pub struct Increment {
    head: io::Cursor<Vec<u8>>,
    file: File,
    blocks: std::vec::IntoIter<u32>,
    page: Vec<u8>,
    at: usize,
}

impl Increment {
    /// The increment of `file` (`size` bytes) sending `blocks`.
    pub fn new(file: File, size: u64, blocks: Vec<u32>) -> Increment {
        let mut head = Vec::with_capacity(increment::HEADER_LEN + 4 * blocks.len());
        head.extend_from_slice(&increment::header(size, blocks.len() as u32));
        for b in &blocks {
            head.extend_from_slice(&b.to_le_bytes());
        }
        Increment {
            head: io::Cursor::new(head),
            file,
            blocks: blocks.into_iter(),
            page: vec![0u8; PAGE as usize],
            at: PAGE as usize,
        }
    }
}

impl Read for Increment {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.at == self.page.len() {
            let Some(block) = self.blocks.next() else { return Ok(0) };
            let mut filled = 0;
            while filled < self.page.len() {
                match self.file.read_at(&mut self.page[filled..], u64::from(block) * PAGE + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.page[filled..].fill(0);
            self.at = 0;
        }
        let k = buf.len().min(self.page.len() - self.at);
        buf[..k].copy_from_slice(&self.page[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::delta::apply_wi1;

    fn page(lsn: u64, upper: u16) -> Vec<u8> {
        let mut p = vec![0u8; PAGE as usize];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&28u16.to_le_bytes());
        p[14..16].copy_from_slice(&upper.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        p[100] = lsn as u8;
        p
    }

    #[test]
    fn pages_are_chosen_as_wal_g_chooses_them() {
        let from = 0x1_0000_0000;
        assert!(page_wanted(&page(from, 8000), from), "changed at the base's start");
        assert!(page_wanted(&page(from + 1, 8000), from));
        assert!(!page_wanted(&page(from - 1, 8000), from), "settled before the base");
        assert!(page_wanted(&vec![0u8; PAGE as usize], from), "a new page");
        let mut torn = page(from - 1, 8000);
        torn[12..14].copy_from_slice(&9000u16.to_le_bytes());
        assert!(page_wanted(&torn, from), "an invalid header is not trusted");
    }

    #[test]
    fn an_increment_applies_to_give_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let from = 500;
        let pages = [page(100, 8000), page(600, 8000), page(200, 8000), vec![0u8; 8192], page(501, 7000)];
        let path = dir.path().join("16384");
        std::fs::write(&path, pages.concat()).unwrap();
        let size = 5 * PAGE;
        let blocks = changed_blocks(File::open(&path).unwrap(), size, from).unwrap();
        assert_eq!(blocks, vec![1, 3, 4]);
        let mut inc = Vec::new();
        Increment::new(File::open(&path).unwrap(), size, blocks.clone())
            .read_to_end(&mut inc)
            .unwrap();
        assert_eq!(inc.len() as u64, increment_len(&blocks));
        // Applied to the base's copy (old pages everywhere), it gives today's file.
        let base = dir.path().join("base-copy");
        std::fs::write(&base, [page(100, 8000), page(50, 8000), page(200, 8000), page(60, 8000)].concat()).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
        let mut buf = vec![0u8; PAGE as usize];
        apply_wi1(&mut inc.as_slice(), &f, "inc", "base-copy", &mut buf).unwrap();
        assert_eq!(std::fs::read(&base).unwrap(), pages.concat());
        // A file cut short after the scan: the missing page is sent as zeroes.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4 * PAGE)
            .unwrap();
        let mut inc = Vec::new();
        Increment::new(File::open(&path).unwrap(), size, blocks)
            .read_to_end(&mut inc)
            .unwrap();
        assert!(inc.ends_with(&vec![0u8; PAGE as usize]));
    }

    #[test]
    fn relation_files_are_told_apart() {
        for yes in ["base/16384/16385", "base/1/2.3", "pg_tblspc/16400/PG_15_202209061/16384/16390"] {
            assert!(is_paged(yes), "{yes}");
        }
        for no in [
            "global/pg_control",
            "base/16384/16385_fsm",
            "base/1/PG_VERSION",
            "pg_xact/0000",
            "base/1/pg_internal.init",
            "base/1/2.",
        ] {
            assert!(!is_paged(no), "{no}");
        }
        assert_eq!("latest_full".parse::<Origin>().unwrap(), Origin::LatestFull);
        assert!("newest".parse::<Origin>().is_err());
    }
}
