//! Checks on a decoded WAL segment before it is handed to PostgreSQL.
//!
//! The first page of every segment carries a long header:
//!
//! ```text
//! offset  size  field
//!      0     2  xlp_magic      (per major version, >= 0xD061)
//!      2     2  xlp_info       (XLP_LONG_HEADER = 0x0002 on a segment's first page)
//!      4     4  xlp_tli
//!      8     8  xlp_pageaddr   (LSN of the page = segment number * segment size)
//!     16     4  xlp_rem_len
//!     24     8  xlp_sysid      (the cluster's system identifier)
//!     32     4  xlp_seg_size
//!     36     4  xlp_xlog_blcksz
//! ```
//!
//! A segment is accepted only if its size equals `xlp_seg_size` (and the expected size,
//! when known), its page address matches its name, its timeline is not newer than its
//! name's, and its system identifier matches the data directory's.

use super::name::{valid_segment_size, Segment};
use crate::error::{Error, ErrorKind, Result};

/// Bytes of the long page header that the checks read.
const LONG_HEADER_LEN: usize = 40;
/// Smallest magic number of any PostgreSQL release walfetch can meet (9.x era is higher).
const MIN_MAGIC: u16 = 0xD061;
const XLP_LONG_HEADER: u16 = 0x0002;

/// The segment size a first-page long header names, if the header is plausible.
pub fn segment_size_in_header(header: &[u8]) -> Option<u64> {
    let h = header.get(..LONG_HEADER_LEN)?;
    let magic = u16::from_le_bytes([h[0], h[1]]);
    let info = u16::from_le_bytes([h[2], h[3]]);
    let size = u32::from_le_bytes(h[32..36].try_into().ok()?) as u64;
    (magic >= MIN_MAGIC && info & XLP_LONG_HEADER != 0 && valid_segment_size(size)).then_some(size)
}

/// Streaming validator fed with a segment's bytes as they are decoded.
pub struct SegmentCheck {
    object: String,
    name: Segment,
    expected_size: Option<u64>,
    expected_sysid: Option<u64>,
    header: Vec<u8>,
    total: u64,
}

impl SegmentCheck {
    /// Checks for segment `name`; `object` names the archive object in errors.
    pub fn new(object: &str, name: Segment, expected_size: Option<u64>, expected_sysid: Option<u64>) -> Self {
        SegmentCheck {
            object: object.to_string(),
            name,
            expected_size,
            expected_sysid,
            header: Vec::with_capacity(LONG_HEADER_LEN),
            total: 0,
        }
    }

    /// Feeds the next decoded bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.header.len() < LONG_HEADER_LEN {
            let take = (LONG_HEADER_LEN - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
        }
        self.total += bytes.len() as u64;
    }

    fn corrupt(&self, what: String) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!("{}: not a valid WAL segment {}: {what}", self.object, self.name),
        )
    }

    /// Verifies the header and the total size once all bytes have been fed.
    pub fn finish(&self) -> Result<()> {
        if self.header.len() < LONG_HEADER_LEN {
            return Err(self.corrupt(format!("only {} bytes", self.total)));
        }
        let h = &self.header;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let magic = u16_at(0);
        let info = u16_at(2);
        let tli = u32_at(4);
        let pageaddr = u64_at(8);
        let sysid = u64_at(24);
        let seg_size = u32_at(32) as u64;
        if magic < MIN_MAGIC || info & XLP_LONG_HEADER == 0 {
            return Err(self.corrupt(format!("bad page magic {magic:#06X} / info {info:#06X} at offset 0")));
        }
        if !valid_segment_size(seg_size) {
            return Err(self.corrupt(format!("header names segment size {seg_size}")));
        }
        if let Some(expected) = self.expected_size {
            if expected != seg_size {
                return Err(self.corrupt(format!("segment size {seg_size} but the cluster uses {expected}")));
            }
        }
        if self.total != seg_size {
            return Err(self.corrupt(format!("decoded to {} bytes, expected {seg_size}", self.total)));
        }
        let Some(start) = self.name.start_lsn(seg_size) else {
            return Err(self.corrupt(format!("the name does not exist for segment size {seg_size}")));
        };
        if pageaddr != start.0 {
            return Err(self.corrupt(format!(
                "first page address {:X}/{:X} does not match the name (expected {start})",
                pageaddr >> 32,
                pageaddr & 0xFFFF_FFFF
            )));
        }
        // The first segment of a new timeline starts with pages of its parent timeline.
        if tli == 0 || tli > self.name.timeline {
            return Err(self.corrupt(format!("page timeline {tli} is newer than the name's {}", self.name.timeline)));
        }
        if let Some(expected) = self.expected_sysid {
            if sysid != expected {
                return Err(self.corrupt(format!(
                    "system identifier {sysid} differs from this cluster's {expected}: the archive holds WAL of another cluster"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wal::name::Lsn;

    /// A fake segment of `size` bytes with a valid long header for `name`.
    pub fn fake_segment(name: &str, size: u64, sysid: u64) -> Vec<u8> {
        let seg = Segment::parse(name).unwrap();
        let mut data = vec![0u8; size as usize];
        data[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        data[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        data[4..8].copy_from_slice(&seg.timeline.to_le_bytes());
        data[8..16].copy_from_slice(&seg.start_lsn(size).unwrap().0.to_le_bytes());
        data[24..32].copy_from_slice(&sysid.to_le_bytes());
        data[32..36].copy_from_slice(&(size as u32).to_le_bytes());
        data[36..40].copy_from_slice(&8192u32.to_le_bytes());
        data
    }

    fn check(name: &str, data: &[u8], size: Option<u64>, sysid: Option<u64>) -> Result<()> {
        let mut c = SegmentCheck::new("obj", Segment::parse(name).unwrap(), size, sysid);
        for chunk in data.chunks(7) {
            c.feed(chunk);
        }
        c.finish()
    }

    #[test]
    fn accepts_a_well_formed_segment() {
        let name = "000000010000000300000004";
        let data = fake_segment(name, 1 << 20, 42);
        check(name, &data, Some(1 << 20), Some(42)).unwrap();
        check(name, &data, None, None).unwrap();
        assert_eq!(Segment::parse(name).unwrap().start_lsn(1 << 20), Some(Lsn((3 << 32) + (4 << 20))));
    }

    #[test]
    fn refuses_wrong_size_name_cluster_and_magic() {
        let name = "000000010000000000000004";
        let data = fake_segment(name, 1 << 20, 42);
        let err = check(name, &data[..data.len() - 1], None, None).unwrap_err();
        assert!(err.message().contains("decoded to"), "{err}");
        let err = check("000000010000000000000005", &data, None, None).unwrap_err();
        assert!(err.message().contains("does not match the name"), "{err}");
        let err = check(name, &data, None, Some(43)).unwrap_err();
        assert!(err.message().contains("another cluster"), "{err}");
        let err = check(name, &data, Some(16 << 20), None).unwrap_err();
        assert!(err.message().contains("cluster uses"), "{err}");
        let mut bad = data.clone();
        bad[0] = 0;
        bad[1] = 0;
        assert!(check(name, &bad, None, None).is_err());
        assert!(check(name, &[], None, None).is_err());
    }

    #[test]
    fn first_segment_of_a_timeline_may_carry_parent_pages() {
        let data = fake_segment("000000010000000000000004", 1 << 20, 1);
        check("000000020000000000000004", &data, None, None).unwrap();
        let newer = fake_segment("000000030000000000000004", 1 << 20, 1);
        assert!(check("000000020000000000000004", &newer, None, None).is_err());
    }
}
