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
//! A zero `xl_tot_len` where a record should start, or an `XLOG_SWITCH` record, ends the
//! WAL of the segment; the padding after it is never read by PostgreSQL and not checked. Why check at all: an LZ4 frame
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
/// ([`crate::wal::handover`]).
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

    /// Walks the segment.
    fn walk(&self) -> Result<Checked> {
        let d = self.data;
        let p = self.page_size;
        let mut out = Checked::default();
        let (first_len, first_info, first_rem) = self.page(0)?;
        let mut pos = first_len;
        if first_info & XLP_FIRST_IS_CONTRECORD != 0 {
            // The tail of a record begun in the previous segment: skip it.
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
                    // A record longer than this whole segment: begun before it and going on
                    // after it, so neither end is here.
                    return Ok(out);
                }
                let (len, info, rem) = self.page(pos)?;
                if info & XLP_FIRST_IS_CONTRECORD == 0 || rem as usize != left {
                    return Err(self.corrupt(pos, format!("continuation expected {left} more bytes, page says {rem}")));
                }
                pos += len;
            }
            pos = (pos + 7) & !7;
        }
        let mut prev_start: Option<u64> = None;
        loop {
            if pos >= d.len() {
                return Ok(out);
            }
            if pos % p == 0 {
                let (len, info, _) = self.page(pos)?;
                if info & XLP_FIRST_IS_CONTRECORD != 0 {
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
            if !self.consume(&mut record, &mut pos, &format!("record at offset {start}"))? {
                out.open = Some(record);
                return Ok(out);
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
            if let Some(prev) = prev_start {
                let xl_prev = u64_at(&header, 8);
                if xl_prev != prev {
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
    /// record in errors). True when the record ended; false when the segment ended first.
    fn consume(&self, record: &mut OpenRecord, pos: &mut usize, name: &str) -> Result<bool> {
        let (d, p) = (self.data, self.page_size);
        loop {
            let take = record.left.min(p - *pos % p);
            if *pos + take > d.len() {
                return Ok(false);
            }
            record.feed(&d[*pos..*pos + take]);
            *pos += take;
            if record.left == 0 {
                return Ok(true);
            }
            if *pos >= d.len() {
                return Ok(false);
            }
            let (len, info, rem) = self.page(*pos)?;
            if info & XLP_FIRST_IS_CONTRECORD == 0 || rem as usize != record.left {
                return Err(self.corrupt(*pos, format!("{name} needs {} more bytes, page says {rem}", record.left)));
            }
            *pos += len;
        }
    }

    /// Feeds the continuation of `open` at the start of this segment to its CRC and
    /// compares the result with the CRC stored in the record's header.
    fn finish(&self, open: &OpenRecord) -> Result<()> {
        let lsn = format!("{:X}/{:X}", open.lsn >> 32, open.lsn & 0xFFFF_FFFF);
        let (len, info, rem) = self.page(0)?;
        if info & XLP_FIRST_IS_CONTRECORD == 0 || rem as usize != open.left {
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
        if !self.consume(&mut record, &mut pos, &format!("the record at {lsn}"))? {
            // Longer than this segment too: the rest is beyond what can be checked here.
            return Ok(());
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
        Ok(())
    }
}

/// Checks the part of `open` (the last record of the previous segment) that `data`, the
/// decoded segment `name`, holds, and the record's CRC over both parts.
pub fn check_continuation(data: &[u8], name: Segment, object: &str, open: &OpenRecord) -> Result<()> {
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
