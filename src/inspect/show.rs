//! The archive's timelines, with their segment ranges, the gaps inside each range,
//! where each branched, and the backups on each: the report behind `walfetch wal-show`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::archive::timelines::{ranges, summarize, Histories, MissingRange, TimelineSummary};
use crate::archive::Archive;
use crate::error::Result;

/// One timeline as shown.
#[derive(Debug, Serialize)]
pub struct ShownTimeline {
    /// What the archive holds of it.
    #[serde(flatten)]
    pub summary: TimelineSummary,
    /// Gaps between first and last.
    pub gaps: Vec<MissingRange>,
    /// Backups whose start segment is on this timeline.
    pub backups: Vec<String>,
}

/// What the archive holds, by timeline; `segment_size` `None` reads it from the archive.
pub fn show(archive: &Arc<dyn Archive>, segment_size: Option<u64>, concurrency: usize) -> Result<(Vec<ShownTimeline>, u64)> {
    let (inv, size) = archive.wal_inventory(segment_size, concurrency)?;
    let backups = archive.backups(concurrency)?;
    let mut histories = Histories::new(archive.as_ref(), &inv);
    let tlis: BTreeSet<u32> = inv.timelines.keys().chain(inv.histories.keys()).copied().collect();
    let mut shown = Vec::new();
    for tli in tlis {
        shown.push(ShownTimeline {
            summary: summarize(tli, &inv, &mut histories, size)?,
            gaps: inv
                .timelines
                .get(&tli)
                .map(|r| ranges(tli, r.gaps.clone(), size))
                .unwrap_or_default(),
            backups: backups
                .iter()
                .filter(|b| b.name.start_segment.timeline == tli)
                .map(|b| b.name.name.clone())
                .collect(),
        });
    }
    Ok((shown, size))
}

/// The readable listing.
pub fn render(archive: &str, shown: &[ShownTimeline], size: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "archive: {} ({} MiB segments)", archive, size >> 20);
    for st in shown {
        let t = &st.summary;
        let range = match (&t.first, &t.last) {
            (Some(a), Some(b)) => format!("{a} .. {b}, {} segments", t.segments),
            _ => "no segments".into(),
        };
        let parent = match (t.parent, &t.branched_at) {
            (Some(p), Some(at)) => format!(", parent {p} at {at}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "timeline {}: {range}{parent}", t.timeline);
        for g in &st.gaps {
            let _ = writeln!(out, "  gap: {} .. {} ({} missing)", g.from, g.to, g.count);
        }
        for b in &st.backups {
            let _ = writeln!(out, "  backup: {b}");
        }
    }
    out
}
