//! Is the archive whole? The report behind `walfetch wal-verify`, for cron and monitors.
//!
//! One listing of `wal_005/` (streamed), the history files, and the backup sentinels
//! give: the timeline chain ending at the newest timeline; the WAL required from the
//! oldest backup's start (or `--from`) to the newest segment, following branch points
//! (segments of an old timeline past its branch point are not required); which
//! required segments are missing; which backups lack WAL between their start and
//! finish; and how old the newest segment is.
//!
//! Verdicts (distinct exit codes, most severe first): 14 a backup is unrestorable, 12
//! required segments are missing, 13 the archive is stale, 0 healthy. Unlike wal-g
//! (which exits 0 on FAILURE), the code alone is enough for a monitor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::archive::timelines::{name, ranges, summarize, Histories, MissingRange, TimelineSummary};
use crate::archive::Archive;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::inspect::credentials::{expiry, expiry_gauge, Expiry};
use crate::inspect::prometheus::Gauges;
use crate::layout::backup::Backup;
use crate::layout::wal_inventory::Inventory;
use crate::wal::name::{Lsn, Segment};
use crate::wal::timeline::Span;

/// What to verify against.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Require WAL from this segment on, instead of the oldest backup's start.
    pub from: Option<String>,
    /// The WAL segment size; `None`: read it from an archived segment.
    pub segment_size: Option<u64>,
    /// Report the archive stale when its newest segment is older than this.
    pub max_age: Option<Duration>,
    /// Requests in flight while listing.
    pub concurrency: usize,
    /// Report credentials that expire within this as a problem.
    pub credentials_margin: Duration,
}

/// One timeline of the report.
#[derive(Debug, Serialize)]
pub struct TimelineReport {
    /// What the archive holds of it.
    #[serde(flatten)]
    pub summary: TimelineSummary,
    /// Whether the timeline is on the chain that leads to the newest timeline.
    pub on_current_chain: bool,
    /// Segments this timeline must have (when on the chain): first and last.
    pub required: Option<(String, String)>,
}

/// One backup of the report.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    /// Backup name.
    pub name: String,
    /// Whether all WAL from its start to its finish is present.
    pub restorable: bool,
    /// The WAL it lacks.
    pub missing: Vec<MissingRange>,
}

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// `healthy`, `stale`, `gaps` or `unrestorable`.
    pub status: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// Archive root.
    pub archive: String,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// Newest timeline.
    pub current_timeline: Option<u32>,
    /// First required segment and why (`--from` or the oldest backup).
    pub required_from: Option<String>,
    /// Why the range starts there.
    pub required_from_reason: String,
    /// Last required segment (newest segment of the newest timeline).
    pub required_to: Option<String>,
    /// Timelines seen.
    pub timelines: Vec<TimelineReport>,
    /// Required segments that are missing, as ranges.
    pub missing: Vec<MissingRange>,
    /// Total missing segments.
    pub missing_segments: u64,
    /// Backups and whether they can be restored.
    pub backups: Vec<BackupReport>,
    /// Newest segment by modification time.
    pub newest_segment: Option<String>,
    /// Its age in seconds.
    pub newest_segment_age_seconds: Option<u64>,
    /// The `--max-age` threshold in seconds.
    pub max_age_seconds: Option<u64>,
    /// Newest segment older than the threshold.
    pub stale: bool,
    /// Objects in wal_005/ that are no WAL file.
    pub unknown_objects: u64,
    /// The first few of them.
    pub unknown_examples: Vec<String>,
    /// Objects listed.
    pub objects: u64,
    /// When the credentials in use expire, if they do.
    pub credentials: Option<Expiry>,
}

/// Missing segments of `[lo, hi]` on `tli`.
fn missing_on(inv: &Inventory, tli: u32, lo: u64, hi: u64, size: u64) -> Vec<MissingRange> {
    let missing = match inv.timelines.get(&tli) {
        Some(runs) => runs.missing_in(lo, hi),
        None if lo <= hi => vec![(lo, hi)],
        None => Vec::new(),
    };
    ranges(tli, missing, size)
}

/// The segments each timeline of the chain must have, as `(first, last)` numbers, from
/// `start` to the newest segment `end`; timelines past `end`'s are not required.
fn required_ranges(spans: &[Span], start: u64, end: (u32, u64), size: u64) -> BTreeMap<u32, (u64, u64)> {
    let (end_tli, end_seg) = end;
    let seg_of = |lsn: Lsn| lsn.0 / size;
    let mut required = BTreeMap::new();
    for span in spans {
        let lo = start.max(seg_of(span.begin));
        let hi = match span.end {
            Some(e) => seg_of(e).saturating_sub(1).min(end_seg),
            None => end_seg,
        };
        if span.timeline <= end_tli && lo <= hi {
            required.insert(span.timeline, (lo, hi));
        }
    }
    required
}

/// Where the required range starts, and why: `--from`, the oldest backup's start, or
/// (without backups) the first archived segment of the chain.
fn required_start(opts: &Options, backups: &[Backup], spans: &[Span], inv: &Inventory, size: u64) -> Result<(Option<u64>, String)> {
    if let Some(f) = &opts.from {
        let seg = Segment::parse(f).and_then(|s| s.number(size)).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("--from '{f}' is not a segment name for {} MiB segments", size >> 20),
            )
        })?;
        return Ok((Some(seg), format!("--from {f}")));
    }
    Ok(
        match backups.iter().filter_map(|b| b.start().map(|l| (l, b))).min_by_key(|(l, _)| *l) {
            Some((lsn, b)) => (Some(lsn.0 / size), format!("start of the oldest backup, {}", b.name.name)),
            None => {
                let first = spans.first().and_then(|s| inv.timelines.get(&s.timeline)).map(|r| r.first);
                (first, "no backups: the first archived segment".to_string())
            }
        },
    )
}

/// The segments a backup needs to become consistent: its timeline, and the first and
/// last segment numbers (from its start to its finish).
fn needed(b: &Backup, size: u64) -> (u32, u64, u64) {
    let tli = b.name.start_segment.timeline;
    let lo = b
        .start()
        .map(|l| l.0 / size)
        .or_else(|| b.name.start_segment.number(size))
        .unwrap_or(0);
    // The WAL up to the finish LSN, exclusive: a finish exactly on a segment boundary
    // (after a WAL switch) needs nothing of the segment that starts there, as PostgreSQL
    // (XLByteToPrevSeg) does not.
    let hi = b.finish().filter(|f| f.0 > 0).map(|f| ((f.0 - 1) / size).max(lo)).unwrap_or(lo);
    (tli, lo, hi)
}

/// Whether each backup has every segment from its start to its finish.
fn backup_reports(archive: &dyn Archive, backups: &[Backup], inv: &Inventory, size: u64) -> Result<Vec<BackupReport>> {
    backups
        .iter()
        .map(|b| {
            let (missing, _) = backup_missing(archive, b, inv, size)?;
            Ok(BackupReport {
                name: b.name.name.clone(),
                restorable: missing.is_empty(),
                missing,
            })
        })
        .collect()
}

/// The segments `backup` needs that the archive lacks, and the segment of a later
/// timeline that stands in for its last one, if one does.
fn backup_missing(archive: &dyn Archive, backup: &Backup, inv: &Inventory, size: u64) -> Result<(Vec<MissingRange>, Option<String>)> {
    let (tli, lo, hi) = needed(backup, size);
    let mut missing = match inv.timelines.get(&tli) {
        Some(runs) => runs.missing_in(lo, hi),
        None => vec![(lo, hi)],
    };
    let mut taken_from = None;
    if missing.last().is_some_and(|(_, b)| *b == hi) {
        let finish = backup.finish().unwrap_or(Lsn(0));
        if let Some(child) = successor_holding(archive, inv, tli, hi, finish, size)? {
            // The failover happened inside the backup's last segment after its finish:
            // the new timeline's copy holds the old one's WAL up to the switch, and
            // PostgreSQL reads that segment from it.
            match missing.last_mut() {
                Some(last) if last.0 < last.1 => last.1 -= 1,
                _ => {
                    missing.pop();
                }
            }
            taken_from = Some(name(child, hi, size));
        }
    }
    Ok((ranges(tli, missing, size), taken_from))
}

/// The verdict and its exit code, most severe first.
fn verdict(unrestorable: bool, missing: u64, stale: bool, expiring: bool) -> (&'static str, u8) {
    if unrestorable {
        ("unrestorable", exit::UNRESTORABLE)
    } else if missing > 0 {
        ("gaps", exit::GAPS)
    } else if stale {
        ("stale", exit::STALE)
    } else if expiring {
        ("credentials-expiring", exit::CREDENTIALS_EXPIRING)
    } else {
        ("healthy", 0)
    }
}

/// What the archive holds of the WAL one backup needs: `backup-fetch`'s check before
/// the first byte of a restore.
#[derive(Debug)]
pub struct BackupWal {
    /// First and last segment the backup needs to become consistent.
    pub needed: (String, String),
    /// The ones missing.
    pub missing: Vec<MissingRange>,
    /// The last segment of the unbroken run that starts at the backup's finish, on its
    /// timeline: how far replay can go without a gap on that timeline.
    pub continues_to: Option<String>,
    /// The newest timeline the archive holds WAL of.
    pub newest_timeline: Option<u32>,
    /// The segment that stands in for the last one needed when a later timeline
    /// branched off inside it (a failover just after the backup).
    pub taken_from: Option<String>,
}

impl BackupWal {
    /// One line for people.
    pub fn describe(&self, backup: &str) -> String {
        let (first, last) = &self.needed;
        let needs = if first == last {
            first.clone()
        } else {
            format!("{first} to {last}")
        };
        if self.missing.is_empty() {
            let further = match (&self.continues_to, self.newest_timeline) {
                (Some(to), Some(t)) => format!("; the archive continues without a gap to {to} (newest timeline {t})"),
                _ => String::new(),
            };
            let branch = match &self.taken_from {
                Some(seg) => format!(" ({} from the timeline that branched off inside it: {seg})", last),
                None => String::new(),
            };
            return format!("WAL check: {backup} needs {needs}, all archived{branch}{further}");
        }
        let count: u64 = self.missing.iter().map(|m| m.count).sum();
        let shown: Vec<String> = self
            .missing
            .iter()
            .take(3)
            .map(|m| {
                if m.from == m.to {
                    m.from.clone()
                } else {
                    format!("{} to {}", m.from, m.to)
                }
            })
            .collect();
        format!(
            "WAL check: {backup} needs {needs} to become consistent, and the archive lacks {count} of them ({}{}); a restore of it could never be started; pass --no-wal-check to restore it anyway",
            shown.join(", "),
            if self.missing.len() > 3 { ", ..." } else { "" }
        )
    }
}

/// Checks that the archive holds every segment from `backup`'s start to its finish, and
/// how far it continues past it (one listing of `wal_005/`).
pub fn backup_wal(archive: &Arc<dyn Archive>, backup: &Backup, concurrency: usize) -> Result<BackupWal> {
    let (inv, size) = archive.wal_inventory(None, concurrency)?;
    let (tli, lo, hi) = needed(backup, size);
    let continues_to = inv.timelines.get(&tli).filter(|r| r.contains(hi)).map(|r| {
        let end = r.gaps.iter().find(|(a, _)| *a > hi).map_or(r.last, |(a, _)| a - 1);
        name(tli, end, size)
    });
    let (missing, taken_from) = backup_missing(archive.as_ref(), backup, &inv, size)?;
    Ok(BackupWal {
        needed: (name(tli, lo, size), name(tli, hi, size)),
        missing,
        continues_to,
        newest_timeline: inv.latest_timeline(),
        taken_from,
    })
}

/// A later timeline that branched off `tli` inside segment `segno`, at or after
/// `finish`, and whose copy of that segment the archive holds: recovery reads the
/// segment from it (the old timeline's own is often only a `.partial`).
fn successor_holding(archive: &dyn Archive, inv: &Inventory, tli: u32, segno: u64, finish: Lsn, size: u64) -> Result<Option<u32>> {
    let mut histories = Histories::new(archive, inv);
    let children: Vec<u32> = inv.histories.keys().copied().filter(|t| *t > tli).collect();
    for child in children {
        if !inv.timelines.get(&child).is_some_and(|r| r.contains(segno)) {
            continue;
        }
        let branched = histories
            .records(child)?
            .iter()
            .any(|(parent, at)| *parent == tli && at.0 / size == segno && *at >= finish);
        if branched {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// Builds the report (no output).
pub fn verify(archive: &Arc<dyn Archive>, opts: &Options) -> Result<Report> {
    let storage = archive.storage();
    let (inv, size) = archive.wal_inventory(opts.segment_size, opts.concurrency)?;
    let backups = archive.backups(opts.concurrency)?;
    let mut histories = Histories::new(archive.as_ref(), &inv);
    let current = inv.latest_timeline();
    let spans = match current {
        Some(t) => histories.chain(t)?,
        None => Vec::new(),
    };
    let (start, reason) = required_start(opts, &backups, &spans, &inv, size)?;
    // Where it ends: the newest segment of the newest timeline (or of its nearest ancestor with segments).
    let end = spans
        .iter()
        .rev()
        .find_map(|s| inv.timelines.get(&s.timeline).map(|r| (s.timeline, r.last)));
    let required = match (start, end) {
        (Some(start), Some(end)) => required_ranges(&spans, start, end, size),
        _ => BTreeMap::new(),
    };
    let missing: Vec<MissingRange> = spans
        .iter()
        .filter_map(|s| {
            required
                .get(&s.timeline)
                .map(|(lo, hi)| missing_on(&inv, s.timeline, *lo, *hi, size))
        })
        .flatten()
        .collect();
    let missing_segments = missing.iter().map(|m| m.count).sum();
    let backups = backup_reports(archive.as_ref(), &backups, &inv, size)?;

    let mut timelines = Vec::new();
    let tlis: BTreeSet<u32> = inv.timelines.keys().chain(inv.histories.keys()).copied().collect();
    for tli in tlis {
        timelines.push(TimelineReport {
            summary: summarize(tli, &inv, &mut histories, size)?,
            on_current_chain: spans.iter().any(|s| s.timeline == tli),
            required: required.get(&tli).map(|(a, b)| (name(tli, *a, size), name(tli, *b, size))),
        });
    }

    let age = inv
        .newest
        .map(|(_, t)| SystemTime::now().duration_since(t).unwrap_or_default().as_secs());
    let max_age = opts.max_age.map(|d| d.as_secs());
    let stale = matches!((age, max_age), (Some(a), Some(m)) if a > m) || (max_age.is_some() && age.is_none());
    let credentials = expiry(storage.as_ref(), opts.credentials_margin)?;
    let expiring = credentials.as_ref().is_some_and(|c| c.within_margin);
    let (status, exit_code) = verdict(backups.iter().any(|b| !b.restorable), missing_segments, stale, expiring);
    Ok(Report {
        status,
        exit_code,
        archive: archive.describe(),
        wal_segment_size: size,
        current_timeline: current,
        required_from: spans
            .iter()
            .find_map(|s| required.get(&s.timeline).map(|(a, _)| name(s.timeline, *a, size))),
        required_from_reason: reason,
        required_to: end.map(|(t, s)| name(t, s, size)),
        timelines,
        missing,
        missing_segments,
        backups,
        newest_segment: inv.newest.map(|(s, _)| s.to_string()),
        newest_segment_age_seconds: age,
        max_age_seconds: max_age,
        stale,
        unknown_objects: inv.unknown,
        unknown_examples: inv.unknown_examples.clone(),
        objects: inv.objects,
        credentials,
    })
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "archive: {} ({} objects, {} MiB segments)",
        r.archive,
        r.objects,
        r.wal_segment_size >> 20
    );
    render_timelines(&mut out, r);
    render_missing(&mut out, r);
    match (&r.newest_segment, r.newest_segment_age_seconds) {
        (Some(s), Some(age)) => {
            let limit = r.max_age_seconds.map(|m| format!(" (max age {m}s)")).unwrap_or_default();
            let _ = writeln!(
                out,
                "newest segment: {s}, {age}s old{limit}{}",
                if r.stale { ": STALE" } else { "" }
            );
        }
        _ => {
            let _ = writeln!(out, "newest segment: none{}", if r.stale { ": STALE" } else { "" });
        }
    }
    if r.unknown_objects > 0 {
        let _ = writeln!(
            out,
            "unknown objects in wal_005/: {} (e.g. {})",
            r.unknown_objects,
            r.unknown_examples.join(", ")
        );
    }
    if let Some(c) = &r.credentials {
        let _ = writeln!(out, "credentials: {}", c.line());
    }
    let _ = writeln!(out, "status: {} (exit {})", r.status.to_uppercase(), r.exit_code);
    out
}

/// One line per timeline: its segments, where it branched, whether it is on the chain.
fn render_timelines(out: &mut String, r: &Report) {
    for tr in &r.timelines {
        let t = &tr.summary;
        let branch = match (t.parent, &t.branched_at) {
            (Some(p), Some(at)) => format!(", branched from timeline {p} at {at}"),
            _ => String::new(),
        };
        let span = match (&t.first, &t.last) {
            (Some(a), Some(b)) => format!("{a} .. {b} ({} segments)", t.segments),
            _ => "no segments".to_string(),
        };
        let chain = if tr.on_current_chain {
            ""
        } else {
            " [not on the current timeline's history]"
        };
        let _ = writeln!(out, "timeline {}: {span}{branch}{chain}", t.timeline);
    }
}

/// The required range, what is missing of it, and the backups that lack WAL.
fn render_missing(out: &mut String, r: &Report) {
    match (&r.required_from, &r.required_to) {
        (Some(a), Some(b)) => {
            let _ = writeln!(out, "required WAL: {a} .. {b} (from the {})", r.required_from_reason);
        }
        _ => {
            let _ = writeln!(out, "required WAL: none (no segments archived)");
        }
    }
    if r.missing.is_empty() {
        let _ = writeln!(out, "missing: none");
    } else {
        let _ = writeln!(out, "missing: {} segments in {} ranges", r.missing_segments, r.missing.len());
        for m in &r.missing {
            if m.count == 1 {
                let _ = writeln!(out, "  timeline {}: {}", m.timeline, m.from);
            } else {
                let _ = writeln!(out, "  timeline {}: {} .. {} ({})", m.timeline, m.from, m.to, m.count);
            }
        }
    }
    let bad = r.backups.iter().filter(|b| !b.restorable).count();
    let _ = writeln!(out, "backups: {}, {bad} unrestorable", r.backups.len());
    for b in r.backups.iter().filter(|b| !b.restorable) {
        let names: Vec<String> = b
            .missing
            .iter()
            .map(|m| {
                if m.count == 1 {
                    m.from.clone()
                } else {
                    format!("{}..{}", m.from, m.to)
                }
            })
            .collect();
        let _ = writeln!(out, "  {}: lacks {}", b.name, names.join(", "));
    }
}

/// Prometheus textfile-collector metrics.
pub fn prometheus(r: &Report) -> String {
    let mut gauges = Gauges::new("archive", &r.archive);
    let mut metric = |name: &str, help: &str, value: String| gauges.gauge(name, help, value);
    metric(
        "wal_verify_status",
        "wal-verify exit code: 0 healthy, 12 gaps, 13 stale, 14 unrestorable backup, 19 credentials expiring.",
        r.exit_code.to_string(),
    );
    metric(
        "wal_missing_segments",
        "Required WAL segments missing from the archive.",
        r.missing_segments.to_string(),
    );
    metric("wal_backups", "Complete backups in the archive.", r.backups.len().to_string());
    metric(
        "wal_unrestorable_backups",
        "Backups lacking WAL between their start and finish.",
        r.backups.iter().filter(|b| !b.restorable).count().to_string(),
    );
    metric(
        "wal_newest_segment_age_seconds",
        "Age of the newest archived segment.",
        r.newest_segment_age_seconds.map(|a| a.to_string()).unwrap_or_else(|| "NaN".into()),
    );
    metric(
        "wal_unknown_objects",
        "Objects in wal_005/ that are no WAL file.",
        r.unknown_objects.to_string(),
    );
    metric(
        "wal_current_timeline",
        "Newest timeline in the archive.",
        r.current_timeline.map(|t| t.to_string()).unwrap_or_else(|| "NaN".into()),
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    metric(
        "wal_verify_last_run_timestamp_seconds",
        "When wal-verify last ran.",
        now.to_string(),
    );
    if let Some(e) = &r.credentials {
        expiry_gauge(&mut gauges, e);
    }
    gauges.finish()
}
