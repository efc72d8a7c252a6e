//! WAL file names: `TTTTTTTTXXXXXXXXYYYYYYYY` segments, `.partial`, `.history` and
//! `.backup` files, and LSN ↔ segment arithmetic for every legal segment size
//! (1 MiB to 1 GiB): segments per "xlogid" are `2^32 / segment size`.

use std::fmt;

/// A log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` text form.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Whether `size` is a WAL segment size PostgreSQL accepts (a power of two, 1 MiB–1 GiB).
pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)
}

/// Segments per 4 GiB "xlogid", the wrap point of the middle field of a segment name.
pub fn segments_per_xlogid(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// A WAL segment: timeline and absolute segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// Timeline ID.
    pub timeline: u32,
    /// High field of the name (LSN / 4 GiB).
    pub log: u32,
    /// Low field of the name (segment within the xlogid).
    pub seg: u32,
}

impl Segment {
    /// Parses a 24-hex-digit segment name (upper case, as PostgreSQL writes it).
    pub fn parse(name: &str) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
            return None;
        }
        Some(Segment {
            timeline: u32::from_str_radix(&name[0..8], 16).ok()?,
            log: u32::from_str_radix(&name[8..16], 16).ok()?,
            seg: u32::from_str_radix(&name[16..24], 16).ok()?,
        })
    }

    /// The segment holding `lsn` on `timeline`.
    pub fn containing(timeline: u32, lsn: Lsn, segment_size: u64) -> Segment {
        Segment::from_number(timeline, lsn.0 / segment_size, segment_size)
    }

    /// The segment with absolute number `segno` on `timeline`.
    pub fn from_number(timeline: u32, segno: u64, segment_size: u64) -> Segment {
        let per = segments_per_xlogid(segment_size);
        Segment {
            timeline,
            log: (segno / per) as u32,
            seg: (segno % per) as u32,
        }
    }

    /// The absolute segment number, or `None` if the low field is out of range for
    /// this segment size (a name that cannot exist).
    pub fn number(&self, segment_size: u64) -> Option<u64> {
        let per = segments_per_xlogid(segment_size);
        ((self.seg as u64) < per).then(|| self.log as u64 * per + self.seg as u64)
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, segment_size: u64) -> Option<Lsn> {
        self.number(segment_size).map(|n| Lsn(n * segment_size))
    }

    /// The next segment on the same timeline; `None` past the end of the 64-bit LSN space.
    pub fn next(&self, segment_size: u64) -> Option<Segment> {
        let n = self.number(segment_size)? + 1;
        (n / segments_per_xlogid(segment_size) <= u32::MAX as u64).then(|| Segment::from_number(self.timeline, n, segment_size))
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// What a file in `pg_wal` (and so in `wal_005/`) is, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    /// A complete segment.
    Segment(Segment),
    /// The partial last segment of an old timeline, archived at promotion.
    Partial(Segment),
    /// A timeline history file, `TTTTTTTT.history`.
    History(u32),
    /// A backup history file, `<segment>.<offset>.backup`.
    BackupHistory(Segment),
}

impl WalFile {
    /// Classifies a WAL file name (without any compression extension).
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(stem) = name.strip_suffix(".history") {
            if stem.len() == 8 {
                return u32::from_str_radix(stem, 16).ok().map(WalFile::History);
            }
            return None;
        }
        if let Some(stem) = name.strip_suffix(".partial") {
            return Segment::parse(stem).map(WalFile::Partial);
        }
        if let Some(stem) = name.strip_suffix(".backup") {
            let (seg, offset) = stem.split_once('.')?;
            if offset.len() != 8 || u32::from_str_radix(offset, 16).is_err() {
                return None;
            }
            return Segment::parse(seg).map(WalFile::BackupHistory);
        }
        Segment::parse(name).map(WalFile::Segment)
    }

    /// Whether the file is a whole-segment-sized file of WAL (segment or partial).
    pub fn segment(&self) -> Option<Segment> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(*s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn lsn_text_round_trips() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("zz"), None);
    }

    #[test]
    fn segment_arithmetic_depends_on_segment_size() {
        // 16 MiB: 256 segments per xlogid.
        let s = Segment::containing(1, Lsn(0x1_FF00_0000), 16 * MB);
        assert_eq!(s.to_string(), "0000000100000001000000FF");
        assert_eq!(s.next(16 * MB).unwrap().to_string(), "000000010000000200000000");
        // 64 MiB: 64 segments per xlogid; a low field of 0x40 cannot exist.
        let s = Segment::parse("00000001000000000000003F").unwrap();
        assert_eq!(s.next(64 * MB).unwrap().to_string(), "000000010000000100000000");
        assert_eq!(Segment::parse("000000010000000000000040").unwrap().number(64 * MB), None);
        // 1 MiB: 4096 per xlogid.
        let s = Segment::parse("000000010000000000000FFF").unwrap();
        assert_eq!(s.next(MB).unwrap().to_string(), "000000010000000100000000");
        assert_eq!(s.start_lsn(MB), Some(Lsn(0xFFF * MB)));
        // 1 GiB: 4 per xlogid.
        assert_eq!(
            Segment::containing(2, Lsn(5 << 30), 1 << 30).to_string(),
            "000000020000000100000001"
        );
    }

    #[test]
    fn no_segment_after_the_last_one() {
        // Found by the names_and_history fuzz target: the next name used to wrap to 0.
        let last = Segment::parse("FFFFFFFFFFFFFFFF000000FF").unwrap();
        assert_eq!(last.next(16 * MB), None);
        let last = Segment::parse("00000001FFFFFFFF00000003").unwrap();
        assert_eq!(last.next(1 << 30), None);
        assert!(Segment::parse("00000001FFFFFFFE000000FF").unwrap().next(16 * MB).is_some());
    }

    #[test]
    fn segment_sizes() {
        assert!(valid_segment_size(MB));
        assert!(valid_segment_size(1 << 30));
        assert!(!valid_segment_size(3 * MB));
        assert!(!valid_segment_size(512 * 1024));
        assert!(!valid_segment_size(2 << 30));
    }

    #[test]
    fn classifies_wal_file_names() {
        let seg = Segment::parse("000000010000000000000002").unwrap();
        assert_eq!(WalFile::parse("000000010000000000000002"), Some(WalFile::Segment(seg)));
        assert_eq!(WalFile::parse("000000010000000000000002.partial"), Some(WalFile::Partial(seg)));
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup"),
            Some(WalFile::BackupHistory(seg))
        );
        assert_eq!(WalFile::parse("0000000A.history"), Some(WalFile::History(10)));
        for bad in [
            "00000001000000000000000g",
            "0000000100000000000000020",
            "x.history",
            "RECOVERYXLOG",
            "000000010000000000000002.0028.backup",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Segment::parse("00000001000000000000000a"),
            None,
            "lower case is not a PostgreSQL name"
        );
    }
}
