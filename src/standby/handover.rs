//! The hand-over of a WAL file to PostgreSQL: what `walfetch wal-fetch %f %p` does.
//!
//! A segment reaches `%p` by one of two paths: taken from the prefetch spool (where the
//! fetcher left it, checked) or downloaded by this call. Either way it lands in a private
//! temporary beside `%p` first, and the same gate decides whether it may be renamed into
//! place:
//! - every page header and record CRC of the segment itself (the spool copy is walked
//!   again: what is handed over is what was checked, on the path it actually took);
//! - the record that began in the previous segment and runs on into this one, checked
//!   over both parts. The previous segment's part is known from the last hand-over
//!   (`.walfetch-handover.json` in the spool directory: its name and its open record,
//!   recorded when it was handed over) or, when that was another segment (a restart, a
//!   timeline switch, an older walfetch), from the previous segment PostgreSQL keeps in
//!   `pg_wal` (it renames every restored segment to its own name there), walked now.
//!   Only when neither exists is there nothing to check: then PostgreSQL starts reading
//!   at a checkpoint in this segment and never reads the record that began before it.
//!
//! A segment that fails the gate is never renamed into place; the error names the
//! object and the record, and exits with the corrupt-object code (fatal in archive
//! recovery, retried by a standby).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::archive::Archive;
use crate::config::StorageSettings;
use crate::constants::DEFAULT_WAL_SEGMENT_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, temp_path_for, RemoveOnDrop};
use crate::layout::WAL;
use crate::pg::datadir::{system_identifier, wal_dir};
use crate::standby::fetch::{check_file, check_first_page, download, with_mapped, Expect};
use crate::standby::fetcher;
use crate::standby::spool::{Call, HandedOver, Spool};
use crate::standby::Standby;
use crate::wal::name::{Segment, WalFile};
use crate::wal::records::{check_continuation, OpenRecord};

/// How long a call waits for a segment the fetcher is downloading before fetching it itself.
const SPOOL_WAIT: Duration = Duration::from_secs(60);

/// One `wal-fetch` call.
#[derive(Debug)]
pub struct Request<'a> {
    /// The file PostgreSQL asks for (`%f`).
    pub name: &'a str,
    /// Where to put it (`%p`).
    pub destination: &'a Path,
    /// The data directory `%p` belongs to, if it is one.
    pub standby: Option<&'a Standby>,
    /// Whether the prefetch fetcher is used.
    pub prefetch: bool,
    /// The segment size, when pinned (`WALG_PG_WAL_SIZE`).
    pub segment_size: Option<u64>,
}

/// Where a handed-over file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The prefetch spool: no storage request at all.
    Spool,
    /// Downloaded by this call from this object.
    Archive(String),
}

/// What [`serve`] handed over.
#[derive(Debug)]
pub struct Served {
    /// Where it came from.
    pub source: Source,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Serves one restore_command call: the file is at `%p` on success, and nothing is
/// there on failure. `settings` describe the archive (for the fetcher this call may
/// start); `open` opens its storage, only if this call needs it. See the module
/// documentation.
pub fn serve(req: &Request, settings: &StorageSettings, open: &dyn Fn() -> Result<Arc<dyn Archive>>) -> Result<Served> {
    let name = req.name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::new(ErrorKind::Config, format!("'{name}' is not a WAL file name")));
    }
    let segment = WalFile::parse(name).and_then(|k| k.segment());
    let tmp = temp_path_for(req.destination);
    let expect = Expect {
        system_identifier: req.standby.and_then(|s| system_identifier(&s.datadir).ok().flatten()),
        segment_size: req.segment_size,
    };
    let prefetching = match (segment, req.standby) {
        (Some(seg), Some(standby)) if req.prefetch => Some((seg, standby)),
        _ => None,
    };
    if let Some((seg, standby)) = prefetching {
        standby.spool.set_requested(&seg);
        fetcher::retire_if_stale(standby, settings);
        if let Some(served) = from_spool(req, standby, seg, &tmp, settings, expect)? {
            return Ok(served);
        }
    }
    if let Some(dir) = req.destination.parent() {
        fsutil::remove_stale_temporaries(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    }
    let archive = open()?;
    if let Some((seg, standby)) = prefetching {
        // This call fetches `seg` itself: the fetcher's window starts after it.
        let size = req
            .segment_size
            .or_else(|| standby.segment_size())
            .unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        if let Some(next) = seg.next(size) {
            standby.spool.set_requested(&next);
        }
        fetcher::ensure_running(standby, settings);
    }
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let fetched = download(archive.as_ref(), name, &tmp, expect).inspect_err(|_| {
        if let Some((seg, standby)) = prefetching {
            // Not served: the fetcher watches this segment again (and reports a gap).
            standby.spool.set_requested(&seg);
        }
    })?;
    if let (Some(seg), Some(standby)) = (segment, req.standby) {
        let carried = check_head(standby, seg, &tmp, &fetched.url).map_err(|e| refusal(name, e))?;
        install(&tmp, req.destination, guard)?;
        record_handed_over(standby, seg, carried.or(fetched.open));
        standby.spool.clear_refusal(&seg);
    } else {
        install(&tmp, req.destination, guard)?;
    }
    Ok(Served {
        source: Source::Archive(fetched.url),
        bytes: fetched.bytes,
    })
}

/// Serves `seg` from the spool, if the spool has a copy that passes the gate. A copy
/// that fails its own checks (changed in the spool, or made for another cluster) is
/// dropped and downloaded again; one whose first record does not continue the previous
/// segment's is refused. A segment refused before is downloaded again, in case the
/// archive was mended.
fn from_spool(
    req: &Request,
    standby: &Standby,
    seg: Segment,
    tmp: &Path,
    settings: &StorageSettings,
    expect: Expect,
) -> Result<Option<Served>> {
    let spool = &standby.spool;
    if spool.refused(&seg).is_some() {
        return Ok(None);
    }
    match take_from_spool(spool, &seg, tmp) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            tracing::warn!(segment = %seg, cause = %e, "cannot take the prefetched copy; downloading it");
            return Ok(None);
        }
    }
    let guard = RemoveOnDrop(Some(tmp.to_path_buf()));
    let object = format!("{}/{WAL}{seg} (prefetched)", settings.location);
    // The fetcher walked these bytes as it downloaded them and recorded what it found:
    // its first page is checked against this cluster and the name here; without the
    // record (an older fetcher, a crash), the whole segment is walked again.
    let checked = match spool.take_open(&seg) {
        Some(open) => check_first_page(tmp, seg, &object, expect).map(|()| open),
        None => check_file(tmp, seg, &object, Some(expect)),
    };
    let open = match checked {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(segment = %seg, cause = %e, "the prefetched copy fails its checks; downloading it again");
            return Ok(None);
        }
    };
    let carried = check_head(standby, seg, tmp, &object).map_err(|e| {
        if e.kind() == ErrorKind::Corrupt {
            // The fetcher does not offer it again; status shows why.
            let _ = spool.refuse(&seg, e.message());
        }
        refusal(req.name, e)
    })?;
    let bytes = fs::metadata(tmp).map(|m| m.len()).unwrap_or(0);
    install(tmp, req.destination, guard)?;
    record_handed_over(standby, seg, carried.or(open));
    advance_window(spool, seg, bytes);
    Ok(Some(Served {
        source: Source::Spool,
        bytes,
    }))
}

/// A failed gate check as the refusal of `name` (corrupt data), else as it is.
fn refusal(name: &str, err: Error) -> Error {
    match err.kind() {
        ErrorKind::Corrupt => err.context(format!("{name} refused")),
        _ => err,
    }
}

/// Renames the checked temporary into place.
fn install(tmp: &Path, destination: &Path, guard: RemoveOnDrop) -> Result<()> {
    fs::rename(tmp, destination).map_err(|e| Error::local_io(destination.display(), &e))?;
    guard.disarm();
    Ok(())
}

/// Takes `seg` from the spool into `tmp`, waiting while a live fetcher is downloading it.
fn take_from_spool(spool: &Spool, seg: &Segment, tmp: &Path) -> Result<bool> {
    if spool.take(seg, tmp)? {
        return Ok(true);
    }
    let deadline = Instant::now() + SPOOL_WAIT;
    while spool.in_flight(seg) && spool.fetcher_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        if spool.take(seg, tmp)? {
            return Ok(true);
        }
    }
    spool.take(seg, tmp)
}

/// The fetcher's window moves past what was served, so it is not fetched again.
fn advance_window(spool: &Spool, seg: Segment, size: u64) {
    if let Some(next) = seg.next(size) {
        spool.set_requested(&next);
    }
}

/// Remembers `seg` as handed over (best effort: without it the next hand-over reads the
/// previous segment from `pg_wal` instead).
fn record_handed_over(standby: &Standby, seg: Segment, open: Option<OpenRecord>) {
    let last = HandedOver {
        segment: seg.to_string(),
        open,
    };
    if let Err(e) = standby.spool.write_handed_over(&last) {
        tracing::warn!(cause = %e, "could not record the hand-over; the next one reads the previous segment from pg_wal");
    }
}

/// The gate's second half: the record that runs on into `seg` (the file at `path`,
/// from `object`) from the previous segment, checked over both parts. Returns that
/// record when it is longer than this whole segment too (it is checked with the next).
pub fn check_head(standby: &Standby, seg: Segment, path: &Path, object: &str) -> Result<Option<OpenRecord>> {
    let size = fs::metadata(path).map_err(|e| Error::local_io(path.display(), &e))?.len();
    let Some(open) = previous_tail(standby, seg, size) else {
        return Ok(None);
    };
    with_mapped(path, |data| check_continuation(data, seg, object, &open))
}

/// The record that the segment before `seg` leaves open, as far as known (see the module
/// documentation); `None` when it ends at a record boundary or is not known.
fn previous_tail(standby: &Standby, seg: Segment, size: u64) -> Option<OpenRecord> {
    let prev_no = seg.number(size)?.checked_sub(1)?;
    if let Some(last) = standby.spool.handed_over() {
        if let Some(prev) = Segment::parse(&last.segment) {
            if prev.number(size) == Some(prev_no) && prev.timeline <= seg.timeline {
                return last.open;
            }
        }
    }
    // PostgreSQL keeps restored segments in pg_wal under their own names: the previous
    // one, on this timeline or the newest one before it.
    let wal_dir = wal_dir(&standby.datadir);
    let prev = fs::read_dir(&wal_dir)
        .ok()?
        .flatten()
        .filter_map(|e| Segment::parse(&e.file_name().to_string_lossy()))
        .filter(|s| s.number(size) == Some(prev_no) && s.timeline <= seg.timeline)
        .max_by_key(|s| s.timeline)?;
    let path = wal_dir.join(prev.to_string());
    match check_file(&path, prev, &path.display().to_string(), None) {
        Ok(open) => open,
        Err(e) => {
            // A recycled file under that name, or one PostgreSQL is still writing.
            tracing::debug!(segment = %prev, cause = %e, "the previous segment in pg_wal is not usable for the continuation check");
            None
        }
    }
}

/// Records how a call for `file` ended, for `walfetch status` (best effort).
pub fn record_call(standby: &Standby, file: &str, outcome: std::result::Result<(), &Error>, exit_code: u8) {
    let mut calls = standby.spool.calls();
    let is_segment = WalFile::parse(file).and_then(|k| k.segment()).is_some();
    let now = chrono::Utc::now().to_rfc3339();
    let same = |c: &Option<Call>| c.as_ref().filter(|c| c.file == file && c.outcome == "failed").cloned();
    let previous = if is_segment { same(&calls.failing) } else { same(&calls.other) };
    let mut call = Call {
        file: file.to_string(),
        at: now.clone(),
        exit_code: i32::from(exit_code),
        ..Default::default()
    };
    match outcome {
        Ok(()) => call.outcome = "restored".into(),
        Err(e) if e.kind() == ErrorKind::NotFound => call.outcome = "absent".into(),
        Err(e) => {
            call.outcome = "failed".into();
            call.kind = Some(e.kind().label().into());
            call.error = Some(e.message().to_string());
            call.failing_since = Some(previous.as_ref().and_then(|p| p.failing_since.clone()).unwrap_or(now));
            call.failures = previous.as_ref().map_or(0, |p| p.failures) + 1;
        }
    }
    if is_segment {
        if call.outcome == "failed" {
            calls.failing = Some(call.clone());
        } else if calls.failing.as_ref().is_some_and(|f| f.file == file) {
            calls.failing = None;
        }
        calls.segment = Some(call);
    } else {
        calls.other = Some(call);
    }
    if let Err(e) = standby.spool.write_calls(&calls) {
        tracing::debug!(cause = %e, "could not record the call");
    }
}
