//! `walfetch wal-verify`: for cron and monitors, is the archive whole?
//!
//! One listing of `wal_005/` (streamed), the history files, and the backup sentinels
//! give: the timeline chain ending at the newest timeline; the WAL required from the
//! oldest backup's start (or `--from`) to the newest segment, following branch points
//! (segments of an old timeline past its branch point are not required); which
//! required segments are missing; which backups lack WAL between their start and
//! finish; and how old the newest segment is.
//!
//! Exit codes (distinct, most severe first): 5/6/3 storage unreadable (as every
//! command), 14 a backup is unrestorable, 12 required segments are missing, 13 the
//! archive is stale, 0 healthy. Unlike wal-g (which exits 0 on FAILURE), the code
//! alone is enough for a monitor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::cli::listing_concurrency;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::write_atomically;
use crate::layout::backup::{list_backups, Backup};
use crate::layout::timelines::{name, ranges, summarize, Histories, MissingRange, TimelineSummary};
use crate::layout::wal_inventory::{scan, Inventory};
use crate::storage::Storage;
use crate::wal::name::{valid_segment_size, Lsn, Segment};

/// Exit code: required WAL segments are missing.
pub const EXIT_GAPS: i32 = 12;
/// Exit code: the newest segment is older than `--max-age`.
pub const EXIT_STALE: i32 = 13;
/// Exit code: at least one backup lacks WAL between its start and finish.
pub const EXIT_UNRESTORABLE: i32 = 14;

/// Options of `wal-verify`.
#[derive(Debug, Args)]
pub struct WalVerify {
    /// Require WAL from this segment on, instead of the oldest backup's start.
    #[arg(long, value_name = "SEGMENT")]
    pub from: Option<String>,
    /// WAL segment size: bytes, or with a unit (16MB, 64MiB, 1GB) [env: WALG_PG_WAL_SIZE in MB; default: read from an archived segment]
    #[arg(long)]
    pub wal_segment_size: Option<String>,
    /// Report the archive stale when its newest segment is older than this (90s, 15m, 2h, 1d).
    #[arg(long)]
    pub max_age: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write Prometheus textfile-collector metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
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
    pub exit_code: i32,
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
}

/// Parses `16MB`, `64MiB`, `1GB`, `1048576` into bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t
        .strip_suffix("gib")
        .or_else(|| t.strip_suffix("gb"))
        .or_else(|| t.strip_suffix('g'))
    {
        (n, 1u64 << 30)
    } else if let Some(n) = t
        .strip_suffix("mib")
        .or_else(|| t.strip_suffix("mb"))
        .or_else(|| t.strip_suffix('m'))
    {
        (n, 1 << 20)
    } else {
        (t.strip_suffix('b').unwrap_or(&t), 1)
    };
    let size = num.trim().parse::<u64>().ok().map(|n| n * mult).filter(|s| valid_segment_size(*s));
    size.ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("'{text}' is not a WAL segment size (a power of two from 1MB to 1GB)"),
        )
    })
}

/// Parses `90s`, `15m`, `2h`, `1d` or plain seconds.
pub fn parse_age(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86400),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .map(|n| Duration::from_secs(n * mult))
        .map_err(|_| Error::new(ErrorKind::Config, format!("'{text}' is not an age (e.g. 90s, 15m, 2h, 1d)")))
}

/// Segment size from the flag, then `WALG_PG_WAL_SIZE` (MB); `None` means "read it from the archive".
pub fn segment_size_setting(flag: Option<&str>) -> Result<Option<u64>> {
    if let Some(f) = flag {
        return parse_size(f).map(Some);
    }
    match std::env::var("WALG_PG_WAL_SIZE") {
        Ok(v) if !v.trim().is_empty() => parse_size(&format!("{}MB", v.trim())).map(Some),
        _ => Ok(None),
    }
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

/// Builds the report (no output, no exit).
pub fn verify(storage: &Arc<dyn Storage>, opts: &WalVerify) -> Result<Report> {
    let (inv, size) = scan(
        storage.as_ref(),
        segment_size_setting(opts.wal_segment_size.as_deref())?,
        listing_concurrency(),
    )?;
    let backups = list_backups(storage, listing_concurrency())?;
    let mut histories = Histories::new(storage.as_ref(), &inv);
    let current = inv.latest_timeline();
    let spans = match current {
        Some(t) => histories.chain(t)?,
        None => Vec::new(),
    };
    let seg_of = |lsn: Lsn| lsn.0 / size;

    // Where the required range starts.
    let (start, reason) = match &opts.from {
        Some(f) => {
            let seg = Segment::parse(f).and_then(|s| s.number(size)).ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("--from '{f}' is not a segment name for {} MiB segments", size >> 20),
                )
            })?;
            (Some(seg), format!("--from {f}"))
        }
        None => match backups.iter().filter_map(|b| b.start().map(|l| (l, b))).min_by_key(|(l, _)| *l) {
            Some((lsn, b)) => (Some(seg_of(lsn)), format!("start of the oldest backup, {}", b.name.name)),
            None => {
                let first = spans.first().and_then(|s| inv.timelines.get(&s.timeline)).map(|r| r.first);
                (first, "no backups: the first archived segment".to_string())
            }
        },
    };
    // Where it ends: the newest segment of the newest timeline (or of its nearest ancestor with segments).
    let end = spans
        .iter()
        .rev()
        .find_map(|s| inv.timelines.get(&s.timeline).map(|r| (s.timeline, r.last)));

    let mut missing = Vec::new();
    let mut required: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    if let (Some(start), Some((end_tli, end_seg))) = (start, end) {
        for span in &spans {
            let lo = start.max(seg_of(span.begin));
            let hi = match span.end {
                Some(e) => seg_of(e).saturating_sub(1).min(end_seg),
                None => end_seg,
            };
            if span.timeline > end_tli || lo > hi {
                continue;
            }
            required.insert(span.timeline, (lo, hi));
            missing.extend(missing_on(&inv, span.timeline, lo, hi, size));
        }
    }
    let missing_segments = missing.iter().map(|m| m.count).sum();

    let backup_reports: Vec<BackupReport> = backups
        .iter()
        .map(|b: &Backup| {
            let tli = b.name.start_segment.timeline;
            let lo = b.start().map(seg_of).or_else(|| b.name.start_segment.number(size)).unwrap_or(0);
            let hi = b.finish().map(seg_of).unwrap_or(lo);
            let missing = missing_on(&inv, tli, lo, hi, size);
            BackupReport {
                name: b.name.name.clone(),
                restorable: missing.is_empty(),
                missing,
            }
        })
        .collect();

    let mut timelines = Vec::new();
    let tlis: std::collections::BTreeSet<u32> = inv.timelines.keys().chain(inv.histories.keys()).copied().collect();
    for tli in tlis {
        timelines.push(TimelineReport {
            summary: summarize(tli, &inv, &mut histories, size)?,
            on_current_chain: spans.iter().any(|s| s.timeline == tli),
            required: required.get(&tli).map(|(a, b)| (name(tli, *a, size), name(tli, *b, size))),
        });
    }

    let now = SystemTime::now();
    let age = inv.newest.map(|(_, t)| now.duration_since(t).unwrap_or_default().as_secs());
    let max_age = opts.max_age.as_deref().map(parse_age).transpose()?.map(|d| d.as_secs());
    let stale = matches!((age, max_age), (Some(a), Some(m)) if a > m) || (max_age.is_some() && age.is_none());
    let unrestorable = backup_reports.iter().any(|b| !b.restorable);
    let (status, exit_code) = if unrestorable {
        ("unrestorable", EXIT_UNRESTORABLE)
    } else if missing_segments > 0 {
        ("gaps", EXIT_GAPS)
    } else if stale {
        ("stale", EXIT_STALE)
    } else {
        ("healthy", 0)
    };
    let first_required = spans
        .iter()
        .find_map(|s| required.get(&s.timeline).map(|(a, _)| name(s.timeline, *a, size)));
    Ok(Report {
        status,
        exit_code,
        archive: storage.describe(),
        wal_segment_size: size,
        current_timeline: current,
        required_from: first_required,
        required_from_reason: reason,
        required_to: end.map(|(t, s)| name(t, s, size)),
        timelines,
        missing,
        missing_segments,
        backups: backup_reports,
        newest_segment: inv.newest.map(|(s, _)| s.to_string()),
        newest_segment_age_seconds: age,
        max_age_seconds: max_age,
        stale,
        unknown_objects: inv.unknown,
        unknown_examples: inv.unknown_examples.clone(),
        objects: inv.objects,
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
    let _ = writeln!(out, "status: {} (exit {})", r.status.to_uppercase(), r.exit_code);
    out
}

/// Prometheus textfile-collector metrics.
pub fn prometheus(r: &Report) -> String {
    let label = format!("archive=\"{}\"", r.archive.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP walfetch_{name} {help}\n# TYPE walfetch_{name} gauge\nwalfetch_{name}{{{label}}} {value}"
        );
    };
    metric(
        "wal_verify_status",
        "wal-verify exit code: 0 healthy, 12 gaps, 13 stale, 14 unrestorable backup.",
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
    out
}

impl WalVerify {
    /// Verifies, prints, and returns the exit code.
    pub fn run(&self, storage: &Arc<dyn Storage>) -> Result<i32> {
        let report = verify(storage, self)?;
        if self.json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        if let Some(path) = &self.prometheus {
            let text = prometheus(&report);
            write_atomically(path, |f| std::io::Write::write_all(f, text.as_bytes()), false)?;
        }
        Ok(report.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("3MB").is_err());
        assert!(parse_size("2GB").is_err());
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("45").unwrap(), Duration::from_secs(45));
        assert!(parse_age("soon").is_err());
    }
}
