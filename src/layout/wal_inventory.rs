//! What `wal_005/` holds, built from one streaming listing: per timeline the range of
//! segments present and the gaps inside it, the history files, and whatever else is
//! there. Memory grows with the number of timelines and gaps, not with the number of
//! objects, so a listing of hundreds of thousands of segments stays small.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::SystemTime;

use crate::codec::Codec;
use crate::constants::DEFAULT_WAL_SEGMENT_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::objects::Objects;
use crate::storage::keyspace::{self, Shape};
use crate::storage::ObjectMeta;
use crate::wal::name::{Segment, WalFile};

/// Keys in the first listing page, which decides whether to fan out.
const FIRST_PAGE: usize = 1000;

/// Examples of unrecognised objects kept for the report.
const MAX_EXAMPLES: usize = 20;

/// An inclusive range of segment numbers.
pub type SegRange = (u64, u64);

/// Segments present on one timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    /// Lowest segment number present.
    pub first: u64,
    /// Highest segment number present.
    pub last: u64,
    /// Distinct segments present.
    pub count: u64,
    /// Missing ranges strictly between `first` and `last`, ascending.
    pub gaps: Vec<SegRange>,
}

impl Runs {
    fn new(segno: u64) -> Runs {
        Runs {
            first: segno,
            last: segno,
            count: 1,
            gaps: Vec::new(),
        }
    }

    /// Records a present segment (in any order; ascending is the fast path).
    pub fn insert(&mut self, segno: u64) {
        if segno == self.last + 1 {
            self.last = segno;
        } else if segno > self.last {
            self.gaps.push((self.last + 1, segno - 1));
            self.last = segno;
        } else if segno < self.first {
            if segno + 1 < self.first {
                self.gaps.insert(0, (segno + 1, self.first - 1));
            }
            self.first = segno;
        } else {
            // Inside the range: either a duplicate (another codec) or it fills a gap.
            let Some(i) = self.gaps.iter().position(|(a, b)| *a <= segno && segno <= *b) else {
                return;
            };
            let (a, b) = self.gaps[i];
            let mut replacement = Vec::new();
            if a < segno {
                replacement.push((a, segno - 1));
            }
            if segno < b {
                replacement.push((segno + 1, b));
            }
            self.gaps.splice(i..=i, replacement);
        }
        self.count += 1;
    }

    /// Whether `segno` is present.
    pub fn contains(&self, segno: u64) -> bool {
        self.first <= segno && segno <= self.last && !self.gaps.iter().any(|(a, b)| *a <= segno && segno <= *b)
    }

    /// The ranges of `[from, to]` that are not present.
    pub fn missing_in(&self, from: u64, to: u64) -> Vec<SegRange> {
        let mut out = Vec::new();
        if from > to {
            return out;
        }
        if to < self.first || from > self.last {
            out.push((from, to));
            return out;
        }
        if from < self.first {
            out.push((from, self.first - 1));
        }
        for (a, b) in &self.gaps {
            let (a, b) = ((*a).max(from), (*b).min(to));
            if a <= b {
                out.push((a, b));
            }
        }
        if to > self.last {
            out.push((self.last + 1, to));
        }
        out
    }
}

/// Everything one listing of `wal_005/` showed.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Segments per timeline.
    pub timelines: BTreeMap<u32, Runs>,
    /// Key of each timeline's history file.
    pub histories: BTreeMap<u32, String>,
    /// `.partial` files (old timelines' last segments, not required).
    pub partials: u64,
    /// `.backup` history files.
    pub backup_labels: u64,
    /// Objects that are no WAL file of any kind.
    pub unknown: u64,
    /// The first few of them.
    pub unknown_examples: Vec<String>,
    /// The newest segment by modification time.
    pub newest: Option<(Segment, SystemTime)>,
    /// All objects seen.
    pub objects: u64,
}

impl Inventory {
    /// Records one listed object (`key` relative to the archive root) for segment size `segment_size`.
    pub fn add(&mut self, obj: &ObjectMeta, segment_size: u64) {
        let name = obj.key.strip_prefix(super::WAL).unwrap_or(&obj.key);
        let (stem, _) = Codec::split(name);
        self.add_named(stem, obj, segment_size);
    }

    /// Records one listed object holding the WAL file `stem` (what another format's
    /// naming decodes to), for segment size `segment_size`.
    pub fn add_named(&mut self, stem: &str, obj: &ObjectMeta, segment_size: u64) {
        self.objects += 1;
        match WalFile::parse(stem) {
            Some(WalFile::Segment(seg)) => match seg.number(segment_size) {
                Some(n) => {
                    match self.timelines.get_mut(&seg.timeline) {
                        Some(runs) => runs.insert(n),
                        None => {
                            self.timelines.insert(seg.timeline, Runs::new(n));
                        }
                    }
                    if let Some(t) = obj.modified {
                        if self.newest.is_none_or(|(_, newest)| t > newest) {
                            self.newest = Some((seg, t));
                        }
                    }
                }
                None => self.unknown(obj),
            },
            Some(WalFile::History(tli)) => {
                self.histories.insert(tli, obj.key.clone());
            }
            Some(WalFile::Partial(_)) => self.partials += 1,
            Some(WalFile::BackupHistory(_)) => self.backup_labels += 1,
            None => self.unknown(obj),
        }
    }

    fn unknown(&mut self, obj: &ObjectMeta) {
        self.unknown += 1;
        if self.unknown_examples.len() < MAX_EXAMPLES {
            self.unknown_examples.push(obj.key.clone());
        }
    }

    /// The oldest and the newest segment held (by timeline, then position), if any.
    pub fn span(&self, segment_size: u64) -> Option<(Segment, Segment)> {
        let (first_tl, first) = self.timelines.iter().next()?;
        let (last_tl, last) = self.timelines.iter().next_back()?;
        Some((
            Segment::from_number(*first_tl, first.first, segment_size),
            Segment::from_number(*last_tl, last.last, segment_size),
        ))
    }

    /// The highest timeline named by a segment or a history file.
    pub fn latest_timeline(&self) -> Option<u32> {
        self.timelines.keys().chain(self.histories.keys()).max().copied()
    }
}

/// Reads the segment size from the first page header of the archived segment `key`.
fn detect_segment_size(objects: &Objects, key: &str) -> Result<u64> {
    let url = format!("{}/{key}", objects.storage().describe());
    let mut decoded = objects.open(key)?;
    let mut header = [0u8; 40];
    decoded.read_exact(&mut header).map_err(|e| decoded.classify(&e))?;
    crate::wal::segment::segment_size_in_header(&header).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{url}: no valid WAL page header to read the segment size from; pass --wal-segment-size"),
        )
    })
}

/// Lists `wal_005/` once into an inventory. Without a known segment size, it is read from
/// the header of the first segment listed. Remote stores list key ranges `concurrency` at
/// a time after the first page ([`keyspace`]); a directory is read in one pass.
pub fn scan(objects: &Objects, segment_size: Option<u64>, concurrency: usize) -> Result<(Inventory, u64)> {
    let storage = objects.storage().as_ref();
    let mut inv = Inventory::default();
    let mut size = segment_size;
    let mut add_page = |page: &[ObjectMeta], size: &mut Option<u64>| -> Result<()> {
        if size.is_none() {
            if let Some(first) = page.iter().find(|o| {
                let name = o.key.strip_prefix(super::WAL).unwrap_or(&o.key);
                matches!(WalFile::parse(Codec::split(name).0), Some(WalFile::Segment(_)))
            }) {
                let detected = detect_segment_size(objects, &first.key)?;
                tracing::debug!(segment_size = detected, object = %first.key, "segment size read from an archived segment");
                *size = Some(detected);
            }
        }
        let s = size.unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        for obj in page {
            inv.add(obj, s);
        }
        Ok(())
    };
    if !storage.is_remote() {
        storage.list(super::WAL, false, &mut |page| add_page(&page, &mut size))?;
    } else {
        let first = storage.list_page(super::WAL, None, FIRST_PAGE)?;
        add_page(&first.objects, &mut size)?;
        if let (true, Some(last)) = (first.truncated, first.objects.last()) {
            let shape = Shape::for_wal(size.unwrap_or(DEFAULT_WAL_SEGMENT_SIZE), concurrency);
            tracing::debug!(?shape, after = %last.key, "listing the rest of wal_005/ in key ranges");
            keyspace::list_after(storage, super::WAL, &last.key, shape, &mut |page| add_page(&page, &mut size))?;
        }
    }
    Ok((inv, size.unwrap_or(DEFAULT_WAL_SEGMENT_SIZE)))
}

/// The error for an archive without a complete backup, saying what the archive holds
/// instead: WAL with no base backup is what a provider that keeps disk snapshots
/// leaves, and only the provider can add a base backup.
pub fn no_backup(objects: &Objects, concurrency: usize) -> Error {
    let storage = objects.storage();
    let base = format!(
        "no complete backup in {} (no *_backup_stop_sentinel.json under basebackups_005/)",
        storage.describe()
    );
    // A listing that fails is the error to report: "no WAL" would send the user to
    // check the prefix when the network or the credentials are at fault.
    // The segment size comes from an archived segment; one that cannot be read as
    // WAL still has a name, read with the default size.
    let scanned = match scan(objects, None, concurrency) {
        Err(e) if !matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Credentials) => {
            scan(objects, Some(DEFAULT_WAL_SEGMENT_SIZE), concurrency)
        }
        other => other,
    };
    let wal = match scanned {
        Ok((inv, size)) => inv.span(size).map(|span| (span, inv.objects)),
        Err(e) => return e,
    };
    match wal {
        Some(((oldest, newest), objects)) => Error::new(
            ErrorKind::NotFound,
            format!(
                "{base}, but WAL is there ({objects} objects, {oldest} to {newest}): a standby needs a base backup to start from; ask the provider for one in this archive (providers that keep disk snapshots instead often leave only WAL)"
            ),
        ),
        None => Error::new(ErrorKind::NotFound, format!("{base}, and no WAL in wal_005/ either: is the prefix right?")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_track_gaps_in_any_order() {
        let mut r = Runs::new(5);
        for n in [6, 7, 10, 11, 15] {
            r.insert(n);
        }
        assert_eq!(r.gaps, [(8, 9), (12, 14)]);
        r.insert(13);
        r.insert(13);
        assert_eq!(r.gaps, [(8, 9), (12, 12), (14, 14)]);
        r.insert(2);
        assert_eq!((r.first, r.gaps[0]), (2, (3, 4)));
        r.insert(1);
        assert_eq!(r.count, 9);
        assert!(r.contains(13) && !r.contains(14));
        assert_eq!(r.missing_in(0, 20), [(0, 0), (3, 4), (8, 9), (12, 12), (14, 14), (16, 20)]);
        assert_eq!(r.missing_in(9, 11), [(9, 9)]);
        assert_eq!(r.missing_in(30, 31), [(30, 31)]);
        assert!(r.missing_in(5, 4).is_empty());
    }

    #[test]
    fn classifies_listing() {
        let mut inv = Inventory::default();
        let o = |k: &str| ObjectMeta {
            key: format!("wal_005/{k}"),
            size: 1,
            modified: Some(SystemTime::UNIX_EPOCH),
        };
        for k in [
            "000000010000000000000001.lz4",
            "000000010000000000000002.zst",
            "000000010000000000000002.lz4",
            "000000010000000000000004",
            "00000002.history.lz4",
            "000000010000000000000004.partial.lz4",
            "000000010000000000000001.00000028.backup.lz4",
            "garbage.txt",
            "000000010000000000000140.lz4",
        ] {
            inv.add(&o(k), 64 << 20);
        }
        let runs = &inv.timelines[&1];
        assert_eq!((runs.first, runs.last, runs.count), (1, 4, 3));
        assert_eq!(runs.gaps, [(3, 3)]);
        assert_eq!(inv.histories.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(
            (inv.partials, inv.backup_labels, inv.unknown),
            (1, 1, 2),
            "0x140 cannot exist with 64 MiB segments"
        );
        assert_eq!(inv.latest_timeline(), Some(2));
    }
}
