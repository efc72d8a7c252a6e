//! `walfetch wal-show`: the timelines in the archive, with their segment ranges, the
//! gaps inside each range, where each branched, and the backups on each.

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::wal_verify::segment_size_setting;
use crate::cli::listing_concurrency;
use crate::error::Result;
use crate::layout::backup::list_backups;
use crate::layout::timelines::{ranges, summarize, Histories, MissingRange, TimelineSummary};
use crate::layout::wal_inventory::scan;
use crate::storage::Storage;

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
    /// What the archive holds of it.
    #[serde(flatten)]
    pub summary: TimelineSummary,
    /// Gaps between first and last.
    pub gaps: Vec<MissingRange>,
    /// Backups whose start segment is on this timeline.
    pub backups: Vec<String>,
}

impl WalShow {
    /// Shows.
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        let (inv, size) = scan(
            storage.as_ref(),
            segment_size_setting(self.wal_segment_size.as_deref())?,
            listing_concurrency(),
        )?;
        let backups = list_backups(storage, listing_concurrency())?;
        let mut histories = Histories::new(storage.as_ref(), &inv);
        let tlis: std::collections::BTreeSet<u32> = inv.timelines.keys().chain(inv.histories.keys()).copied().collect();
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
        if self.json {
            crate::output::json(&shown)?;
            return Ok(());
        }
        let mut out = String::new();
        let _ = writeln!(out, "archive: {} ({} MiB segments)", storage.describe(), size >> 20);
        for st in &shown {
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
        crate::out!("{out}");
        Ok(())
    }
}
