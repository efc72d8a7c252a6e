//! Timelines as the archive holds them: history files read once each, and per-timeline
//! summaries and missing ranges named by segment (shared by wal-verify, wal-show and
//! status).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::archive::Archive;
use crate::error::Result;
use crate::layout::wal_inventory::{Inventory, SegRange};
use crate::wal::name::{Lsn, Segment};
use crate::wal::timeline::{chain, parse_history, Span};

/// A missing range, by name.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct MissingRange {
    /// Timeline of the missing segments.
    pub timeline: u32,
    /// First missing segment.
    pub from: String,
    /// Last missing segment.
    pub to: String,
    /// How many.
    pub count: u64,
}

/// What the archive holds of one timeline (shared by wal-verify and wal-show).
#[derive(Debug, Serialize)]
pub struct TimelineSummary {
    /// Timeline ID.
    pub timeline: u32,
    /// Parent timeline, from this timeline's history file.
    pub parent: Option<u32>,
    /// LSN where this timeline branched off its parent.
    pub branched_at: Option<String>,
    /// First segment present.
    pub first: Option<String>,
    /// Last segment present.
    pub last: Option<String>,
    /// Segments present.
    pub segments: u64,
}

/// Summarises timeline `tli` of the inventory.
pub fn summarize(tli: u32, inv: &Inventory, histories: &mut Histories, size: u64) -> Result<TimelineSummary> {
    let records = histories.records(tli)?;
    let runs = inv.timelines.get(&tli);
    Ok(TimelineSummary {
        timeline: tli,
        parent: records.last().map(|r| r.0),
        branched_at: records.last().map(|r| r.1.to_string()),
        first: runs.map(|r| name(tli, r.first, size)),
        last: runs.map(|r| name(tli, r.last, size)),
        segments: runs.map(|r| r.count).unwrap_or(0),
    })
}

/// Reads and caches history files.
pub struct Histories<'a> {
    archive: &'a dyn Archive,
    inventory: &'a Inventory,
    cache: BTreeMap<u32, Vec<(u32, Lsn)>>,
}

impl<'a> Histories<'a> {
    /// Histories of the timelines the inventory lists.
    pub fn new(archive: &'a dyn Archive, inventory: &'a Inventory) -> Self {
        Histories {
            archive,
            inventory,
            cache: BTreeMap::new(),
        }
    }

    /// The history records of `timeline` (empty when it has no history file).
    pub fn records(&mut self, timeline: u32) -> Result<Vec<(u32, Lsn)>> {
        if let Some(r) = self.cache.get(&timeline) {
            return Ok(r.clone());
        }
        let records = match self.inventory.histories.get(&timeline) {
            None => Vec::new(),
            Some(_) => {
                let mut wal = self.archive.open_wal(&format!("{timeline:08X}.history"))?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut wal.reader, &mut text).map_err(|e| read_error(&e, &wal.url))?;
                parse_history(&text, &wal.url)?
            }
        };
        self.cache.insert(timeline, records.clone());
        Ok(records)
    }

    /// The chain ending at `timeline`.
    pub fn chain(&mut self, timeline: u32) -> Result<Vec<Span>> {
        Ok(chain(timeline, &self.records(timeline)?))
    }
}

/// A read error of an archived object, as the error it carries (or corrupt data).
pub fn read_error(e: &std::io::Error, url: &str) -> crate::error::Error {
    crate::error::Error::from_io_ref(e).unwrap_or_else(|| crate::error::Error::new(crate::error::ErrorKind::Corrupt, format!("{url}: {e}")))
}

/// The name of segment `segno` on timeline `tli`.
pub fn name(tli: u32, segno: u64, size: u64) -> String {
    Segment::from_number(tli, segno, size).to_string()
}

/// Missing ranges of `tli` as named segments.
pub fn ranges(tli: u32, missing: Vec<SegRange>, size: u64) -> Vec<MissingRange> {
    missing
        .into_iter()
        .map(|(a, b)| MissingRange {
            timeline: tli,
            from: name(tli, a, size),
            to: name(tli, b, size),
            count: b - a + 1,
        })
        .collect()
}
