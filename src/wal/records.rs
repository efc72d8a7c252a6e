//! Record-level validation of a WAL segment: every page header, and the CRC-32C of every
//! record that lies within the segment.
//!
//! Layout (PostgreSQL 9.6 to 18): the segment is a sequence of pages of
//! `xlp_xlog_blcksz` bytes. Each page starts with a header (40 bytes on the first page
//! of a segment, else 24) whose `xlp_pageaddr` is the page's own LSN. Records are
//! 8-byte aligned and may span pages; a page that starts inside a record has
//! `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` = the bytes of that record still to come.
//!
//! ```text
//! XLogRecord (24 bytes): xl_tot_len u32, xl_xid u32, xl_prev u64, xl_info u8,
//!                        xl_rmid u8, 2 pad, xl_crc u32
//! xl_crc = CRC-32C(record[24..xl_tot_len] ++ record[0..20])
//! ```
//!
//! A record may be aborted: after a crash in the middle of writing it, the next page says
//! so (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`) and starts afresh, as PostgreSQL's reader
//! does. A zero `xl_tot_len` where a record should start, or an `XLOG_SWITCH` record, ends
//! the WAL of the segment; the padding after it is never read by PostgreSQL and not checked. Why check at all: an LZ4 frame
//! without checksums (walrus writes those) decodes flipped bytes silently,
//! and PostgreSQL takes the first bad record for the end of WAL and, in archive
//! recovery, promotes there.

use crate::error::{Error, ErrorKind, Result};
use crate::wal::name::Segment;

const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// The page starts with a record that replaces an aborted one (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`,
/// 9.6 to 18): after a crash in the middle of writing a record that spans pages,
/// PostgreSQL (10.19/11.14/12.9/13.5/14 and later) leaves its first part and starts the
/// next page with an `XLOG_OVERWRITE_CONTRECORD` record instead of the continuation.
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// The same flag from PostgreSQL 19 (magic 0xD121 on), which moved it.
const XLP_FIRST_IS_OVERWRITE_CONTRECORD_19: u16 = 0x0004;
/// The first WAL page magic of PostgreSQL 19.
const MAGIC_19: u16 = 0xD121;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
/// PostgreSQL refuses records larger than this (`XLogRecordMaxSize`, 1020 MB).
const MAX_RECORD: u32 = 1020 * 1024 * 1024;

fn u16_at(d: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([d[o], d[o + 1]])
}

fn u32_at(d: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(d[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(d: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(d[o..o + 8].try_into().expect("8 bytes"))
}

/// What the check found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Records whose CRC was verified.
    pub records: u64,
    /// The last record, when it runs on into the next segment: its CRC is checked by
    /// [`check_continuation`] once that segment is at hand.
    pub open: Option<OpenRecord>,
}

/// A record that starts in one segment and ends in the next, as far as the first holds it.
/// Serialisable, so a hand-over can leave it for the next one
/// ([`crate::standby::handover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenRecord {
    /// Where the record starts.
    pub lsn: u64,
    /// CRC-32C so far of the record's bytes after its header.
    crc: u32,
    /// The record header, as far as seen.
    header: [u8; RECORD_HEADER],
    /// Bytes of the record seen.
    done: usize,
    /// Bytes still to come.
    left: usize,
}

impl OpenRecord {
    /// A record of `len` bytes starting at `lsn`, nothing of it seen yet.
    fn new(lsn: u64, len: usize) -> OpenRecord {
        OpenRecord {
            lsn,
            crc: 0,
            header: [0; RECORD_HEADER],
            done: 0,
            left: len,
        }
    }

    /// Feeds the next piece of the record to its running CRC, keeping the header aside.
    fn feed(&mut self, piece: &[u8]) {
        let in_header = RECORD_HEADER.saturating_sub(self.done).min(piece.len());
        if in_header > 0 {
            self.header[self.done..self.done + in_header].copy_from_slice(&piece[..in_header]);
        }
        self.crc = crc32c::crc32c_append(self.crc, &piece[in_header..]);
        self.done += piece.len();
        self.left -= piece.len();
    }

    /// The CRC stored in the record's header and the one computed over its bytes.
    fn crcs(&self) -> (u32, u32) {
        (u32_at(&self.header, 20), crc32c::crc32c_append(self.crc, &self.header[..20]))
    }
}

struct Walker<'a> {
    data: &'a [u8],
    object: &'a str,
    start_lsn: u64,
    page_size: usize,
    magic: u16,
    tli: u32,
}

impl Walker<'_> {
    fn corrupt(&self, offset: usize, what: String) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{}: WAL damaged at offset {offset} (LSN {:X}/{:X}): {what}",
                self.object,
                (self.start_lsn + offset as u64) >> 32,
                (self.start_lsn + offset as u64) & 0xFFFF_FFFF
            ),
        )
    }

    /// Whether a page's `info` says it starts afresh after an aborted record.
    fn overwrites(&self, info: u16) -> bool {
        let flag = if self.magic >= MAGIC_19 {
            XLP_FIRST_IS_OVERWRITE_CONTRECORD_19
        } else {
            XLP_FIRST_IS_OVERWRITE_CONTRECORD
        };
        info & flag != 0
    }

    /// Whether a page's `info` says it continues a record (and does not start afresh).
    fn continues(&self, info: u16) -> bool {
        info & XLP_FIRST_IS_CONTRECORD != 0 && !self.overwrites(info)
    }

    /// Checks the header of the page at `page_start`; returns (header length, info, rem_len).
    fn page(&self, page_start: usize) -> Result<(usize, u16, u32)> {
        let d = self.data;
        let magic = u16_at(d, page_start);
        let info = u16_at(d, page_start + 2);
        let tli = u32_at(d, page_start + 4);
        let addr = u64_at(d, page_start + 8);
        let rem = u32_at(d, page_start + 16);
        if magic != self.magic {
            return Err(self.corrupt(
                page_start,
                format!("page magic {magic:#06X}, the segment's first page has {:#06X}", self.magic),
            ));
        }
        let want = self.start_lsn + page_start as u64;
        if addr != want {
            return Err(self.corrupt(
                page_start,
                format!("page address {:X}/{:X} out of sequence", addr >> 32, addr & 0xFFFF_FFFF),
            ));
        }
        if tli == 0 || tli > self.tli {
            return Err(self.corrupt(page_start, format!("page timeline {tli}")));
        }
        let len = if info & XLP_LONG_HEADER != 0 { LONG_HEADER } else { SHORT_HEADER };
        Ok((len, info, rem))
    }

    /// Where the first record that starts in this segment is: after the tail of a record
    /// begun in the previous segment, if the first page continues one. `None` when that
    /// record covers the whole segment (neither of its ends is here).
    fn first_record(&self) -> Result<Option<usize>> {
        let (d, p) = (self.data, self.page_size);
        let (first_len, first_info, first_rem) = self.page(0)?;
        let mut pos = first_len;
        if !self.continues(first_info) {
            return Ok(Some(pos));
        }
        let mut left = first_rem as usize;
        loop {
            let room = p - pos % p;
            if left <= room {
                pos += left;
                break;
            }
            left -= room;
            pos += room;
            if pos >= d.len() {
                return Ok(None);
            }
            let (len, info, rem) = self.page(pos)?;
            if self.overwrites(info) {
                // The record begun before this segment was aborted here: start afresh.
                break;
            }
            if !self.continues(info) || rem as usize != left {
                return Err(self.corrupt(pos, format!("continuation expected {left} more bytes, page says {rem}")));
            }
            pos += len;
        }
        Ok(Some(if pos % p != 0 { (pos + 7) & !7 } else { pos }))
    }

    /// Walks the segment.
    fn walk(&self) -> Result<Checked> {
        self.walk_with(&mut |_, _, _| {})
    }

    /// Walks the segment, handing every whole record with a good CRC to `visit` (its
    /// offset, header and length).
    fn walk_with(&self, visit: &mut dyn FnMut(usize, &[u8; RECORD_HEADER], usize)) -> Result<Checked> {
        let d = self.data;
        let p = self.page_size;
        let mut out = Checked::default();
        let Some(mut pos) = self.first_record()? else {
            return Ok(out);
        };
        let mut prev_start: Option<u64> = None;
        // After an aborted record, the record that replaces it points back at the last
        // complete record or at the aborted one: either is accepted.
        let mut aborted: Option<u64> = None;
        loop {
            if pos >= d.len() {
                return Ok(out);
            }
            if pos % p == 0 {
                let (len, info, _) = self.page(pos)?;
                if self.continues(info) {
                    return Err(self.corrupt(pos, "page continues a record where none is open".into()));
                }
                pos += len;
            }
            let start = pos;
            let tot_len = u32_at(d, pos);
            if tot_len == 0 {
                // End of WAL in this segment. What follows is padding PostgreSQL never
                // reads (zeros, or a recycled file's old pages): nothing to check.
                return Ok(out);
            }
            if (tot_len as usize) < RECORD_HEADER || tot_len > MAX_RECORD {
                return Err(self.corrupt(start, format!("record length {tot_len}")));
            }
            // Walk the record across pages: its header (which may itself be split) is
            // kept, its data is fed to the CRC as it goes; nothing is copied.
            let mut record = OpenRecord::new(self.start_lsn + start as u64, tot_len as usize);
            match self.consume(&mut record, &mut pos, &format!("record at offset {start}"))? {
                Consumed::Whole => {}
                Consumed::SegmentEnded => {
                    out.open = Some(record);
                    return Ok(out);
                }
                Consumed::Aborted => {
                    aborted = Some(record.lsn);
                    continue;
                }
            }
            let header = record.header;
            let (stored, computed) = record.crcs();
            if stored != computed {
                return Err(self.corrupt(
                    start,
                    format!("record CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
                ));
            }
            let lsn = self.start_lsn + start as u64;
            let replaced = aborted.take();
            if let Some(prev) = prev_start {
                let xl_prev = u64_at(&header, 8);
                if xl_prev != prev && Some(xl_prev) != replaced {
                    return Err(self.corrupt(
                        start,
                        format!(
                            "record's previous-record pointer {:X}/{:X} does not match",
                            xl_prev >> 32,
                            xl_prev & 0xFFFF_FFFF
                        ),
                    ));
                }
            }
            prev_start = Some(lsn);
            out.records += 1;
            visit(start, &header, tot_len as usize);
            if header[17] == RM_XLOG_ID && header[16] & 0xF0 == XLOG_SWITCH {
                // A segment switch: the rest of the segment is padding.
                return Ok(out);
            }
            pos = (pos + 7) & !7;
        }
    }
}

impl Walker<'_> {
    /// Feeds `record`'s bytes from `pos` on, page by page, checking that every page it
    /// crosses says it continues the record by the bytes still to come (`name` names the
    /// record in errors). On [`Consumed::Aborted`], `pos` is at the start of the page that
    /// replaces the rest of the record.
    fn consume(&self, record: &mut OpenRecord, pos: &mut usize, name: &str) -> Result<Consumed> {
        let (d, p) = (self.data, self.page_size);
        loop {
            let take = record.left.min(p - *pos % p);
            if *pos + take > d.len() {
                return Ok(Consumed::SegmentEnded);
            }
            record.feed(&d[*pos..*pos + take]);
            *pos += take;
            if record.left == 0 {
                return Ok(Consumed::Whole);
            }
            if *pos >= d.len() {
                return Ok(Consumed::SegmentEnded);
            }
            let (len, info, rem) = self.page(*pos)?;
            if self.overwrites(info) {
                return Ok(Consumed::Aborted);
            }
            if !self.continues(info) || rem as usize != record.left {
                return Err(self.corrupt(*pos, format!("{name} needs {} more bytes, page says {rem}", record.left)));
            }
            *pos += len;
        }
    }

    /// Feeds the continuation of `open` at the start of this segment to its CRC and
    /// compares the result with the CRC stored in the record's header. Returns the record
    /// again when it is longer than this segment too (checked in the next one).
    fn finish(&self, open: &OpenRecord) -> Result<Option<OpenRecord>> {
        let lsn = format!("{:X}/{:X}", open.lsn >> 32, open.lsn & 0xFFFF_FFFF);
        let (len, info, rem) = self.page(0)?;
        if self.overwrites(info) {
            // The record was aborted at the end of the previous segment; this one starts afresh.
            return Ok(None);
        }
        if !self.continues(info) || rem as usize != open.left {
            return Err(self.corrupt(
                0,
                format!(
                    "the record at {lsn}, begun in the previous segment, needs {} more bytes; this segment's first page says {rem}",
                    open.left
                ),
            ));
        }
        let mut record = *open;
        let mut pos = len;
        match self.consume(&mut record, &mut pos, &format!("the record at {lsn}"))? {
            Consumed::Whole => {}
            Consumed::SegmentEnded => return Ok(Some(record)),
            Consumed::Aborted => return Ok(None),
        }
        let (stored, computed) = record.crcs();
        if stored != computed {
            return Err(self.corrupt(
                len,
                format!(
                    "CRC mismatch of the record at {lsn}, begun in the previous segment (stored {stored:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        Ok(None)
    }
}

impl Walker<'_> {
    /// The bytes of the whole record at `start` (`len` bytes), without the page headers
    /// it crosses.
    fn collect(&self, start: usize, len: usize) -> Vec<u8> {
        let (d, p) = (self.data, self.page_size);
        let mut out = Vec::with_capacity(len);
        let mut pos = start;
        while out.len() < len && pos < d.len() {
            if pos % p == 0 {
                let long = u16_at(d, pos + 2) & XLP_LONG_HEADER != 0;
                pos += if long { LONG_HEADER } else { SHORT_HEADER };
                continue;
            }
            let take = (len - out.len()).min(p - pos % p).min(d.len() - pos);
            out.extend_from_slice(&d[pos..pos + take]);
            pos += take;
        }
        out
    }
}

/// A record a recovery target can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A transaction committed (`recovery_target_xid`, `recovery_target_time`).
    Commit {
        /// Where its record starts.
        lsn: u64,
        /// The transaction.
        xid: u32,
        /// Its commit time (microseconds since 2000-01-01, PostgreSQL's epoch).
        time: i64,
    },
    /// A transaction aborted (PostgreSQL stops at it for `recovery_target_xid` too).
    Abort {
        /// Where its record starts.
        lsn: u64,
        /// The transaction.
        xid: u32,
        /// Its abort time.
        time: i64,
    },
    /// A named restore point (`pg_create_restore_point`).
    RestorePoint {
        /// Where its record starts.
        lsn: u64,
        /// Its name.
        name: String,
        /// When it was made.
        time: i64,
    },
}

const RM_XACT_ID: u8 = 1;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;

/// The main data of a record (its bytes after the block headers), when the record has
/// no block references (commit, abort and restore point records have none).
fn main_data(record: &[u8]) -> Option<&[u8]> {
    let mut pos = RECORD_HEADER;
    loop {
        match *record.get(pos)? {
            255 => {
                let len = usize::from(*record.get(pos + 1)?);
                return record.get(record.len().checked_sub(len)?..);
            }
            254 => {
                let len = u32_at(record.get(pos + 1..pos + 5)?, 0) as usize;
                return record.get(record.len().checked_sub(len)?..);
            }
            253 => pos += 3,
            252 => pos += 5,
            _ => return None,
        }
    }
}

/// What `record` (a whole one, header first) is, if a recovery target can name it.
fn event(lsn: u64, record: &[u8]) -> Option<Event> {
    let (info, rmid) = (*record.get(16)?, *record.get(17)?);
    let xid = u32_at(record.get(4..8)?, 0);
    let data = main_data(record)?;
    let time = i64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    match (rmid, info & 0xF0, info & XLOG_XACT_OPMASK) {
        (RM_XLOG_ID, XLOG_RESTORE_POINT, _) => {
            let raw = data.get(8..)?;
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            Some(Event::RestorePoint {
                lsn,
                name: String::from_utf8_lossy(&raw[..end]).into_owned(),
                time,
            })
        }
        (RM_XACT_ID, _, XLOG_XACT_COMMIT) => Some(Event::Commit { lsn, xid, time }),
        (RM_XACT_ID, _, XLOG_XACT_ABORT) => Some(Event::Abort { lsn, xid, time }),
        _ => None,
    }
}

/// The commits, aborts and restore points whose records lie whole in the decoded
/// segment `data` (`name`), in order; the segment is checked as [`check_segment`] does.
pub fn events(data: &[u8], name: Segment, object: &str) -> Result<Vec<Event>> {
    let walker = walker(data, name, object)?;
    let mut found = Vec::new();
    walker.walk_with(&mut |start, header, len| {
        if matches!(header[17], RM_XLOG_ID | RM_XACT_ID) && len <= 1 << 20 {
            let record = walker.collect(start, len);
            if let Some(e) = event(walker.start_lsn + start as u64, &record) {
                found.push(e);
            }
        }
    })?;
    Ok(found)
}

/// How feeding a record's bytes ended.
enum Consumed {
    /// The record ended within the segment.
    Whole,
    /// The segment ended first.
    SegmentEnded,
    /// A page said the record was aborted (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`).
    Aborted,
}

/// Checks the part of `open` (the last record of the previous segment) that `data`, the
/// decoded segment `name`, holds, and the record's CRC over both parts. When the record
/// runs on past this segment too, returns it, to be checked with the next one.
pub fn check_continuation(data: &[u8], name: Segment, object: &str, open: &OpenRecord) -> Result<Option<OpenRecord>> {
    walker(data, name, object)?.finish(open)
}

/// Checks a whole decoded segment (already size- and first-header-checked by
/// [`super::segment::SegmentCheck`]): page headers and record CRCs.
pub fn check_segment(data: &[u8], name: Segment, object: &str) -> Result<Checked> {
    walker(data, name, object)?.walk()
}

/// A walker over `data`, after checking what every walk relies on.
fn walker<'a>(data: &'a [u8], name: Segment, object: &'a str) -> Result<Walker<'a>> {
    if data.len() < LONG_HEADER {
        return Err(Error::new(ErrorKind::Corrupt, format!("{object}: too short for a WAL segment")));
    }
    let page_size = u32_at(data, 36) as usize;
    let seg_size = data.len() as u64;
    if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) || data.len() % page_size != 0 {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("{object}: WAL page size {page_size} is not valid"),
        ));
    }
    let start_lsn = name
        .start_lsn(seg_size)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("{object}: the name does not exist for segment size {seg_size}"),
            )
        })?
        .0;
    Ok(Walker {
        data,
        object,
        start_lsn,
        page_size,
        magic: u16_at(data, 0),
        tli: name.timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;

    fn fixture(seg: &str, ext: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/walrus-archive/wal_005/{seg}.{ext}"));
        let codec = crate::codec::Codec::split(&format!("x.{ext}")).1;
        let mut d = codec.decoder(Box::new(std::fs::File::open(path).unwrap()), "fixture");
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn real_segments_pass() {
        for (seg, ext) in [
            ("000000010000000000000007", "lz4"),
            ("000000010000000000000008", "zst"),
            ("000000010000000000000009", "br"),
            ("00000001000000000000000A", "lzma"),
        ] {
            let data = fixture(seg, ext);
            let checked = check_segment(&data, Segment::parse(seg).unwrap(), seg).unwrap_or_else(|e| panic!("{seg}: {e}"));
            assert!(checked.records > 10, "{seg}: {checked:?}");
        }
    }

    #[test]
    fn flipped_bytes_in_a_record_are_caught() {
        let seg = "000000010000000000000008";
        let data = fixture(seg, "zst");
        let name = Segment::parse(seg).unwrap();
        // Flip bytes at many offsets inside the WAL that holds records.
        let end = data.iter().rposition(|b| *b != 0).unwrap();
        let mut caught = 0;
        let mut tried = 0;
        // Non-zero bytes: alignment padding between records is zero and not covered by
        // any CRC (PostgreSQL never reads it), so only bytes that carry data are flipped.
        for at in (100..end).step_by(end / 197).filter(|at| data[*at] != 0) {
            if at % 8192 < 40 {
                continue;
            }
            let mut bad = data.clone();
            bad[at] ^= 0x5A;
            tried += 1;
            if check_segment(&bad, name, seg).is_err() {
                caught += 1;
            }
        }
        assert_eq!(caught, tried, "every flipped byte inside the records must be caught");
    }

    /// Writes synthetic WAL: long and short page headers, records with valid CRCs and
    /// back pointers, records that span pages and segments, and aborted records.
    struct Synthetic {
        buf: Vec<u8>,
        pos: usize,
        seg: usize,
        page: usize,
        base_lsn: u64,
        prev: u64,
        /// The next page starts afresh after an aborted record.
        overwrite_next: bool,
    }

    impl Synthetic {
        fn new(segments: usize, seg: usize, first_segno: u64) -> Synthetic {
            Synthetic {
                buf: vec![0; segments * seg],
                pos: 0,
                seg,
                page: 8192,
                base_lsn: first_segno * seg as u64,
                prev: 0,
                overwrite_next: false,
            }
        }

        fn page_header(&mut self, rem: usize) {
            let at = self.pos;
            let long = at % self.seg == 0;
            let mut info = if long { XLP_LONG_HEADER } else { 0 };
            if self.overwrite_next {
                info |= XLP_FIRST_IS_OVERWRITE_CONTRECORD;
                self.overwrite_next = false;
            } else if rem > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            let b = &mut self.buf;
            b[at..at + 2].copy_from_slice(&0xD110u16.to_le_bytes());
            b[at + 2..at + 4].copy_from_slice(&info.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&(self.base_lsn + at as u64).to_le_bytes());
            b[at + 16..at + 20].copy_from_slice(&(rem as u32).to_le_bytes());
            if long {
                b[at + 24..at + 32].copy_from_slice(&7u64.to_le_bytes());
                b[at + 32..at + 36].copy_from_slice(&(self.seg as u32).to_le_bytes());
                b[at + 36..at + 40].copy_from_slice(&(self.page as u32).to_le_bytes());
            }
            self.pos += if long { LONG_HEADER } else { SHORT_HEADER };
        }

        /// Writes a record of `len` bytes; with `abort_after_pages`, stops it at the end of
        /// that many pages crossed and marks the next page as starting afresh.
        fn record(&mut self, len: usize, abort_after_pages: Option<usize>) -> u64 {
            if self.pos % self.page == 0 {
                self.page_header(0);
            }
            let lsn = self.base_lsn + self.pos as u64;
            let mut rec: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            rec[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
            rec[16] = 0;
            rec[17] = 10;
            rec[20..24].fill(0);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[24..]), &rec[..20]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            let (mut written, mut crossed) = (0, 0);
            while written < len {
                if self.pos % self.page == 0 {
                    if abort_after_pages == Some(crossed) {
                        self.overwrite_next = true;
                        return lsn;
                    }
                    crossed += 1;
                    self.page_header(len - written);
                }
                let take = (len - written).min(self.page - self.pos % self.page);
                self.buf[self.pos..self.pos + take].copy_from_slice(&rec[written..written + take]);
                self.pos += take;
                written += take;
            }
            if self.pos % self.page != 0 {
                self.pos = (self.pos + 7) & !7;
            }
            self.prev = lsn;
            lsn
        }

        /// Fills up to `offset` (in the buffer) with small records.
        fn fill_to(&mut self, offset: usize) {
            while self.pos + 200 < offset {
                self.record(100, None);
            }
        }

        fn segment(&self, i: usize) -> (&[u8], Segment) {
            let segno = self.base_lsn / self.seg as u64 + i as u64;
            (
                &self.buf[i * self.seg..(i + 1) * self.seg],
                Segment::from_number(1, segno, self.seg as u64),
            )
        }
    }

    const MIB: usize = 1 << 20;

    #[test]
    fn an_aborted_record_inside_a_segment_is_skipped_as_postgresql_does() {
        let mut w = Synthetic::new(1, MIB, 5);
        w.fill_to(30_000);
        w.record(20_000, Some(1));
        for _ in 0..20 {
            w.record(100, None);
        }
        let (data, seg) = w.segment(0);
        let checked = check_segment(data, seg, "synthetic").unwrap();
        assert!(checked.records > 200, "{checked:?}");
        // Without the overwrite flag the same page is a broken continuation.
        let page = 5 * 8192;
        let mut bad = data.to_vec();
        let info = u16_at(&bad, page + 2) & !XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        bad[page + 2..page + 4].copy_from_slice(&info.to_le_bytes());
        assert!(check_segment(&bad, seg, "synthetic").is_err());
    }

    #[test]
    fn a_record_aborted_at_or_after_a_segment_boundary_leaves_nothing_to_check() {
        // Aborted at the boundary (the next segment starts afresh), and one page into it.
        for pages in [0, 1] {
            let mut w = Synthetic::new(2, MIB, 5);
            w.fill_to(MIB - 3000);
            w.record(20_000, Some(pages));
            w.record(100, None);
            let (first, s1) = w.segment(0);
            let open = check_segment(first, s1, "first").unwrap().open.expect("a record open at the end");
            let (second, s2) = w.segment(1);
            assert_eq!(check_continuation(second, s2, "second", &open).unwrap(), None, "{pages}");
            check_segment(second, s2, "second").unwrap_or_else(|e| panic!("{pages}: {e}"));
        }
    }

    #[test]
    fn a_record_longer_than_a_segment_is_checked_across_three() {
        let mut w = Synthetic::new(3, MIB, 5);
        w.fill_to(MIB - 5000);
        w.record(MIB + 20_000, None);
        w.record(100, None);
        let (first, s1) = w.segment(0);
        let (second, s2) = w.segment(1);
        let (third, s3) = w.segment(2);
        let open = check_segment(first, s1, "first").unwrap().open.expect("open");
        let carried = check_continuation(second, s2, "second", &open)
            .unwrap()
            .expect("still open after the second");
        assert_eq!(check_segment(second, s2, "second").unwrap().open, None, "no record starts in it");
        assert_eq!(check_continuation(third, s3, "third", &carried).unwrap(), None);
        let mut bad = third.to_vec();
        bad[SHORT_HEADER.max(LONG_HEADER) + 100] ^= 0x5A;
        let err = check_continuation(&bad, s3, "third", &carried).unwrap_err();
        assert!(err.message().contains("CRC mismatch"), "{err}");
    }

    #[test]
    fn a_page_out_of_sequence_is_caught() {
        let seg = "000000010000000000000009";
        let mut data = fixture(seg, "br");
        // Swap two pages.
        let (a, b) = (8192 * 3, 8192 * 5);
        let page_a = data[a..a + 8192].to_vec();
        data.copy_within(b..b + 8192, a);
        data[b..b + 8192].copy_from_slice(&page_a);
        let err = check_segment(&data, Segment::parse(seg).unwrap(), seg).unwrap_err();
        assert!(
            err.message().contains("out of sequence") || err.message().contains("CRC") || err.message().contains("continu"),
            "{err}"
        );
    }
}
