//! `walfetch wal-show`: the timelines in the archive, with their segment ranges, the
//! gaps inside each range, where each branched, and the backups on each.

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::wal_verify::{segment_size_setting, Histories, MissingRange};
use crate::cli::default_concurrency;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::list_backups;
use crate::layout::wal_inventory::scan;
use crate::storage::Storage;
use crate::wal::name::Segment;

/// Options of `wal-show`.
#[derive(Debug, Args)]
pub struct WalShow {
    /// WAL segment size (16MB, 64MB, …) [default: read from an archived segment]
    #[arg(long)]
    pub wal_segment_size: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One timeline as shown.
#[derive(Debug, Serialize)]
pub struct ShownTimeline {
    /// Timeline ID.
    pub timeline: u32,
    /// Parent timeline.
    pub parent: Option<u32>,
    /// Where it branched from its parent.
    pub branched_at: Option<String>,
    /// First segment present.
    pub first: Option<String>,
    /// Last segment present.
    pub last: Option<String>,
    /// Segments present.
    pub segments: u64,
    /// Gaps between first and last.
    pub gaps: Vec<MissingRange>,
    /// Backups whose start segment is on this timeline.
    pub backups: Vec<String>,
}

impl WalShow {
    /// Shows.
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        let (inv, size) = scan(storage.as_ref(), segment_size_setting(self.wal_segment_size.as_deref())?)?;
        let backups = list_backups(storage, default_concurrency("WALG_DOWNLOAD_CONCURRENCY").max(4))?;
        let mut histories = Histories::new(storage.as_ref(), &inv);
        let name = |tli: u32, n: u64| Segment::from_number(tli, n, size).to_string();
        let tlis: std::collections::BTreeSet<u32> = inv.timelines.keys().chain(inv.histories.keys()).copied().collect();
        let mut shown = Vec::new();
        for tli in tlis {
            let records = histories.records(tli)?;
            let runs = inv.timelines.get(&tli);
            shown.push(ShownTimeline {
                timeline: tli,
                parent: records.last().map(|r| r.0),
                branched_at: records.last().map(|r| r.1.to_string()),
                first: runs.map(|r| name(tli, r.first)),
                last: runs.map(|r| name(tli, r.last)),
                segments: runs.map(|r| r.count).unwrap_or(0),
                gaps: runs
                    .map(|r| {
                        r.gaps
                            .iter()
                            .map(|(a, b)| MissingRange {
                                timeline: tli,
                                from: name(tli, *a),
                                to: name(tli, *b),
                                count: b - a + 1,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                backups: backups
                    .iter()
                    .filter(|b| b.name.start_segment.timeline == tli)
                    .map(|b| b.name.name.clone())
                    .collect(),
            });
        }
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).map_err(|e| Error::new(ErrorKind::LocalIo, e.to_string()))?
            );
            return Ok(());
        }
        let mut out = String::new();
        let _ = writeln!(out, "archive: {} ({} MiB segments)", storage.describe(), size >> 20);
        for t in &shown {
            let range = match (&t.first, &t.last) {
                (Some(a), Some(b)) => format!("{a} .. {b}, {} segments", t.segments),
                _ => "no segments".into(),
            };
            let parent = match (t.parent, &t.branched_at) {
                (Some(p), Some(at)) => format!(", parent {p} at {at}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "timeline {}: {range}{parent}", t.timeline);
            for g in &t.gaps {
                let _ = writeln!(out, "  gap: {} .. {} ({} missing)", g.from, g.to, g.count);
            }
            for b in &t.backups {
                let _ = writeln!(out, "  backup: {b}");
            }
        }
        print!("{out}");
        Ok(())
    }
}
