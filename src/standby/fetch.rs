//! Fetching one WAL file from the archive into a private temporary: the archive's format
//! finds and decodes it ([`Archive::open_wal`]; for wal-g's layout, [`crate::archive::walg::find`] looks under
//! whichever codec it was stored with), and a segment is checked page by page and record
//! by record before anything can rename it where PostgreSQL reads.
//!
//! Shared by `wal-fetch` (directly, [`crate::standby::handover`]) and the prefetch fetcher
//! ([`crate::standby::prefetch`]), so a segment passes the same checks whichever way it came.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::archive::timelines::read_error;
use crate::archive::{Archive, WalObject};
use crate::constants::COPY_BUFFER_SIZE;
use crate::error::{Error, Result};
use crate::fsutil::RemoveOnDrop;
use crate::wal::name::{Segment, WalFile};
use crate::wal::records::{check_segment, OpenRecord};
use crate::wal::segment::SegmentCheck;

/// What the checks of a segment must hold against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    /// The data directory's system identifier (from `global/pg_control`).
    pub system_identifier: Option<u64>,
    /// The segment size, when pinned (`WALG_PG_WAL_SIZE`).
    pub segment_size: Option<u64>,
}

/// What [`download`] stored.
#[derive(Debug)]
pub struct Fetched {
    /// The object read.
    pub url: String,
    /// Bytes written.
    pub bytes: u64,
    /// For a segment, its last record if that runs on into the next segment.
    pub open: Option<OpenRecord>,
}

/// Downloads, decodes and checks WAL file `name` into the new file `tmp` (removed again
/// on failure); leaves it there on success.
pub fn download(archive: &dyn Archive, name: &str, tmp: &Path, expect: Expect) -> Result<Fetched> {
    let segment = WalFile::parse(name).and_then(|k| k.segment());
    let WalObject { url, reader: mut decoded } = archive.open_wal(name)?;
    let mut check = segment.map(|seg| SegmentCheck::new(&url, seg, expect.segment_size, expect.system_identifier));
    let guard = RemoveOnDrop(Some(tmp.to_path_buf()));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::local_io(tmp.display(), &e))?;
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        // Fill the buffer before writing, so writes are large even when chunks are small.
        let mut filled = 0;
        while filled < buf.len() {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&e, &url)),
            }
        }
        if filled == 0 {
            break;
        }
        if let Some(c) = check.as_mut() {
            c.feed(&buf[..filled]);
        }
        out.write_all(&buf[..filled]).map_err(|e| Error::local_io(tmp.display(), &e))?;
        total += filled as u64;
    }
    drop(out);
    let mut open = None;
    if let (Some(c), Some(seg)) = (&check, segment) {
        c.finish()?;
        open = check_file(tmp, seg, &url, None)?;
    }
    guard.disarm();
    Ok(Fetched { url, bytes: total, open })
}

/// Walks the segment file at `path` (page headers, record CRCs), after checking its size
/// and first page against `expect` when given; returns its last record if that runs on
/// into the next segment. The file is mapped, so memory stays flat for 1 GB segments.
pub fn check_file(path: &Path, seg: Segment, object: &str, expect: Option<Expect>) -> Result<Option<OpenRecord>> {
    with_mapped(path, |data| {
        if let Some(expect) = expect {
            let mut check = SegmentCheck::new(object, seg, expect.segment_size, expect.system_identifier);
            check.feed(data);
            check.finish()?;
        }
        Ok(check_segment(data, seg, object)?.open)
    })
}

/// Checks the segment file at `path` against `expect` and its name (size, first page:
/// magic, address, timeline, system identifier) without walking its records.
pub fn check_first_page(path: &Path, seg: Segment, object: &str, expect: Expect) -> Result<()> {
    with_mapped(path, |data| {
        let mut check = SegmentCheck::new(object, seg, expect.segment_size, expect.system_identifier);
        check.feed(data);
        check.finish()
    })
}

/// Runs `f` over the contents of the file at `path`, mapped.
pub fn with_mapped<T>(path: &Path, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    let file = fs::File::open(path).map_err(|e| Error::local_io(path.display(), &e))?;
    // SAFETY: every file mapped here is walfetch's own private temporary or a complete
    // segment that is only ever renamed or removed, never written in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::local_io(path.display(), &e))?;
    f(&map)
}
