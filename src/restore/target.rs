//! Restoring to a point: a time, an LSN, a transaction or a named restore point. Which
//! backup to take, and the proof before the first byte that the archive holds the WAL
//! from that backup's start to the target.
//!
//! The backup is the newest that ends before the target: by its finish LSN for an LSN,
//! by its finish time for a time. A transaction or a restore point name is found in the
//! WAL first (its commit, abort or restore point record, by the record walker that checks
//! every segment), looking from the newest backup's start on, then from each older
//! backup's start up to where the previous look began: the first match after a backup's
//! start is where PostgreSQL, replaying from that backup, would stop.
//!
//! The WAL needed runs from the backup's start to the target along the target
//! timeline's history (a switch inside the range is followed). For a time, where the
//! target lies in the WAL is known only by replaying it: the archive must be whole from
//! the backup's start to its newest segment, or, at its first gap, the segments before
//! the gap must hold a commit at or after the target time (replay stops before the gap
//! then). A segment missing where it is needed refuses the restore with exit 14, naming
//! it, before anything is downloaded.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::archive::timelines::{name, Histories};
use crate::archive::Archive;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::backup::Backup;
use crate::layout::wal_inventory::Inventory;
use crate::pg::recovery::{RecoveryTarget, Target};
use crate::standby::fetch::{download, with_mapped, Expect};
use crate::wal::name::{Lsn, Segment};
use crate::wal::records::{events, Event};

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp (microseconds since 2000-01-01) as a time.
pub fn pg_time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_MICROS)?)
}

/// Parses a target time: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f][+TZ]` (PostgreSQL's
/// form); without a zone it is UTC.
pub fn parse_time(text: &str) -> Result<DateTime<FixedOffset>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d);
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d);
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc().fixed_offset());
        }
    }
    Err(Error::new(
        ErrorKind::Config,
        format!("--target-time '{text}' is not a time (use 2026-12-07 14:02:00+00, or RFC 3339)"),
    ))
}

/// Where the target is, as far as the archive tells before replay.
#[derive(Debug, Clone)]
pub struct Found {
    /// The backup to restore.
    pub backup: Backup,
    /// The target's record (LSN targets: the LSN itself).
    pub lsn: Option<Lsn>,
    /// The time of the target's record, when it has one.
    pub time: Option<DateTime<Utc>>,
}

/// Chooses the backup for `target` (or checks the one `named`: `LATEST` or a name must
/// end before the target), proves the WAL to the target is archived, and says each
/// finding through `say`. Returns the backup.
pub fn choose(
    archive: &Arc<dyn Archive>,
    named: Option<&str>,
    target: &RecoveryTarget,
    concurrency: usize,
    say: &mut dyn FnMut(&str),
) -> Result<Found> {
    let backups = archive.backups(concurrency)?;
    if backups.is_empty() {
        return Err(archive.no_backup(concurrency));
    }
    let (inv, size) = archive.wal_inventory(None, concurrency)?;
    let found = match named {
        Some(n) => {
            let backup = if n.eq_ignore_ascii_case("LATEST") {
                backups.last().cloned().ok_or_else(|| archive.no_backup(concurrency))?
            } else {
                archive.backup(n)?
            };
            let search = Search {
                archive,
                backups: &backups,
                named: Some(&backup),
                target,
                inv: &inv,
                size,
            };
            let found = search.locate(say)?;
            ends_before(&found, target)?;
            found
        }
        None => {
            let search = Search {
                archive,
                backups: &backups,
                named: None,
                target,
                inv: &inv,
                size,
            };
            search.locate(say)?
        }
    };
    say(&format!(
        "target {}: restoring {} (it ends at {}{})",
        describe(target),
        found.backup.name.name,
        found.backup.finish().map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
        found
            .backup
            .sentinel
            .finish_time
            .as_deref()
            .map(|t| format!(", {t}"))
            .unwrap_or_default()
    ));
    prove(archive, &found, target, &inv, size, say)?;
    Ok(found)
}

/// The target for people.
fn describe(t: &RecoveryTarget) -> String {
    match &t.target {
        Target::Time(x) => format!("time {x}"),
        Target::Lsn(x) => format!("LSN {x}"),
        Target::Xid(x) => format!("transaction {x}"),
        Target::Name(x) => format!("restore point '{x}'"),
    }
}

/// Refuses a backup the target does not come after.
fn ends_before(found: &Found, target: &RecoveryTarget) -> Result<()> {
    let b = &found.backup;
    let before = match (&target.target, found.lsn, b.finish()) {
        (Target::Time(t), _, _) => {
            let t = parse_time(t)?;
            b.sentinel.finished_at().is_some_and(|f| t <= f)
        }
        (_, Some(l), Some(f)) => l < f,
        _ => false,
    };
    if before {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the target {} lies before the end of backup {} ({}): a backup can only be recovered to a point after it ends; leave the backup out and walfetch chooses one that ends before the target",
                describe(target),
                b.name.name,
                b.sentinel.finish_time.clone().or_else(|| b.finish().map(|l| l.to_string())).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// Where to look for a target: the archive, its backups (oldest first), the backup
/// named (if one is), the target, the WAL inventory and the segment size.
#[derive(Clone, Copy)]
struct Search<'a> {
    archive: &'a Arc<dyn Archive>,
    backups: &'a [Backup],
    named: Option<&'a Backup>,
    target: &'a RecoveryTarget,
    inv: &'a Inventory,
    size: u64,
}

impl Search<'_> {
    /// Finds where the target is and, unless a backup is named, the newest backup that
    /// ends before it.
    fn locate(self, say: &mut dyn FnMut(&str)) -> Result<Found> {
        let newest_before = |ok: &dyn Fn(&Backup) -> bool, what: String| -> Result<Backup> {
            if let Some(b) = self.named {
                return Ok(b.clone());
            }
            self.backups.iter().rev().find(|b| ok(b)).cloned().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no backup ends before {what}; the oldest, {}, ends at {}",
                        self.backups[0].name.name,
                        self.backups[0].sentinel.finish_time.clone().unwrap_or_default()
                    ),
                )
            })
        };
        match &self.target.target {
            Target::Lsn(text) => {
                let lsn = Lsn::parse(text)
                    .ok_or_else(|| Error::new(ErrorKind::Config, format!("--target-lsn '{text}' is not an LSN (like 0/3000148)")))?;
                let backup = newest_before(&|b| b.finish().is_some_and(|f| f <= lsn), format!("LSN {lsn}"))?;
                Ok(Found {
                    backup,
                    lsn: Some(lsn),
                    time: None,
                })
            }
            Target::Time(text) => {
                let t = parse_time(text)?;
                let backup = newest_before(&|b| b.sentinel.finished_at().is_some_and(|f| f < t), format!("{t}"))?;
                if let Some((newest, at)) = newest_commit(self.archive, self.inv, self.size)? {
                    if t.with_timezone(&Utc) > newest {
                        say(&format!(
                            "note: the target time is after the newest commit the archive holds ({newest}, at {at}): PostgreSQL will replay all of it and, not having reached the target, stop with 'recovery ended before configured recovery target was reached' (PostgreSQL 13 and later)"
                        ));
                    }
                }
                Ok(Found {
                    backup,
                    lsn: None,
                    time: Some(t.with_timezone(&Utc)),
                })
            }
            Target::Xid(_) | Target::Name(_) => {
                let (lsn, time) = self.find_record(say)?;
                let backup = newest_before(
                    &|b| b.finish().is_some_and(|f| f <= lsn),
                    format!("{} at {lsn}", describe(self.target)),
                )?;
                Ok(Found {
                    backup,
                    lsn: Some(lsn),
                    time,
                })
            }
        }
    }
}

/// Whether `e` is the record the target names.
fn matches(e: &Event, target: &Target) -> Option<(Lsn, i64)> {
    match (e, target) {
        (Event::Commit { lsn, xid, time } | Event::Abort { lsn, xid, time }, Target::Xid(x)) if x.trim() == xid.to_string() => {
            Some((Lsn(*lsn), *time))
        }
        (Event::RestorePoint { lsn, name, time }, Target::Name(n)) if n == name => Some((Lsn(*lsn), *time)),
        _ => None,
    }
}

impl Search<'_> {
    /// Looks for the target's record in the WAL: from the start of the newest backup (or
    /// of the one named) to the archive's end, then backwards backup by backup (see the
    /// module doc).
    fn find_record(self, say: &mut dyn FnMut(&str)) -> Result<(Lsn, Option<DateTime<Utc>>)> {
        let starts: Vec<Lsn> = match self.named {
            Some(b) => b.start().into_iter().collect(),
            None => self.backups.iter().rev().filter_map(Backup::start).collect(),
        };
        let mut histories = Histories::new(self.archive.as_ref(), self.inv);
        let latest = self.inv.latest_timeline().unwrap_or(1);
        let chain = histories.chain(latest)?;
        let dir = tempfile_dir()?;
        let mut until: Option<u64> = None;
        for start in starts {
            let from = start.0 / self.size;
            let segments = along(&chain, self.inv, from, until, self.size);
            say(&format!(
                "looking for {} in the WAL from {} ({} segments)",
                describe(self.target),
                name(
                    chain.iter().find(|s| s.begin.0 / self.size <= from).map_or(1, |s| s.timeline),
                    from,
                    self.size
                ),
                segments.len()
            ));
            for seg in segments {
                let tmp = dir.path().join(seg.to_string());
                let _ = std::fs::remove_file(&tmp);
                let fetched = download(self.archive.as_ref(), &seg.to_string(), &tmp, Expect::default())?;
                let hit = with_mapped(&tmp, |data| {
                    Ok(events(data, seg, &fetched.url)?
                        .iter()
                        .find_map(|e| matches(e, &self.target.target)))
                })?;
                let _ = std::fs::remove_file(&tmp);
                if let Some((lsn, time)) = hit {
                    return Ok((lsn, pg_time(time)));
                }
            }
            until = Some(from);
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "{} is not in the archive's WAL from the oldest backup on: nothing to recover to (a transaction's commit or abort, or pg_create_restore_point's record, is what PostgreSQL stops at)",
                describe(self.target)
            ),
        ))
    }
}

/// A private temporary directory for segments being scanned.
fn tempfile_dir() -> Result<TempDir> {
    let path = std::env::temp_dir().join(format!("walfetch-target-{}", std::process::id()));
    std::fs::create_dir_all(&path).map_err(|e| Error::local_io(path.display(), &e))?;
    Ok(TempDir(path))
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archived segments from segment number `from` up to (not including) `until` (else
/// the newest), each on the timeline of `chain` that holds it.
fn along(chain: &[crate::wal::timeline::Span], inv: &Inventory, from: u64, until: Option<u64>, size: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for span in chain {
        let begin = (span.begin.0 / size).max(from);
        let Some(runs) = inv.timelines.get(&span.timeline) else { continue };
        let mut end = span.end.map_or(runs.last, |e| (e.0 / size).saturating_sub(0).min(runs.last));
        if let Some(u) = until {
            end = end.min(u.saturating_sub(1));
        }
        if let Some(e) = span.end {
            // The segment holding a switch belongs to the new timeline.
            end = end.min((e.0 / size).saturating_sub(1));
        }
        for n in begin..=end {
            if runs.contains(n) {
                out.push(Segment::from_number(span.timeline, n, size));
            }
        }
    }
    out
}

/// The newest commit the archive holds (its time and LSN), from its newest segment
/// that has one (looking at most three back).
fn newest_commit(archive: &Arc<dyn Archive>, inv: &Inventory, size: u64) -> Result<Option<(DateTime<Utc>, Lsn)>> {
    let Some((_, head)) = inv.span(size) else { return Ok(None) };
    let Some(head_no) = head.number(size) else { return Ok(None) };
    let dir = tempfile_dir()?;
    for n in (head_no.saturating_sub(2)..=head_no).rev() {
        let seg = Segment::from_number(head.timeline, n, size);
        if !inv.timelines.get(&seg.timeline).is_some_and(|r| r.contains(n)) {
            continue;
        }
        let tmp = dir.path().join(seg.to_string());
        let fetched = download(archive.as_ref(), &seg.to_string(), &tmp, Expect::default())?;
        let last = with_mapped(&tmp, |data| {
            Ok(events(data, seg, &fetched.url)?.into_iter().rev().find_map(|e| match e {
                Event::Commit { lsn, time, .. } => Some((time, lsn)),
                _ => None,
            }))
        })?;
        let _ = std::fs::remove_file(&tmp);
        if let Some((time, lsn)) = last {
            return Ok(pg_time(time).map(|t| (t, Lsn(lsn))));
        }
    }
    Ok(None)
}

/// Proves the archive holds the WAL from the backup's start to the target along the
/// target timeline's history; refuses with exit 14 naming the first missing segment.
fn prove(
    archive: &Arc<dyn Archive>,
    found: &Found,
    target: &RecoveryTarget,
    inv: &Inventory,
    size: u64,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let backup = &found.backup;
    let start = backup.start().map_or(0, |l| l.0 / size);
    let mut histories = Histories::new(archive.as_ref(), inv);
    let tli = match target.timeline.as_deref() {
        None | Some("latest") => inv.latest_timeline().unwrap_or(backup.name.start_segment.timeline),
        Some("current") => backup.name.start_segment.timeline,
        Some(n) => n.parse().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("--target-timeline '{n}': use latest, current or a number"),
            )
        })?,
    };
    let chain = histories.chain(tli)?;
    // The last segment needed: the target's own; for a time, the newest (see the module doc).
    let last = match found.lsn {
        Some(lsn) => lsn.0 / size,
        None => head_of(&chain, inv),
    };
    let mut needed: Vec<(u32, u64, u64)> = Vec::new();
    for span in &chain {
        let lo = start.max(span.begin.0 / size);
        let hi = span.end.map_or(last, |e| last.min((e.0 / size).saturating_sub(1)));
        if lo <= hi {
            needed.push((span.timeline, lo, hi));
        }
    }
    for (timeline, lo, hi) in &needed {
        let missing = match inv.timelines.get(timeline) {
            Some(runs) => runs.missing_in(*lo, *hi),
            None => vec![(*lo, *hi)],
        };
        let Some((gap, _)) = missing.first() else { continue };
        let gap_name = name(*timeline, *gap, size);
        if let (None, Some(time)) = (found.lsn, found.time) {
            if reached_before(archive, inv, *timeline, *gap, size, time)? {
                say(&format!(
                    "WAL check: {gap_name} is missing, but the WAL before it already passes the target time"
                ));
                return Ok(());
            }
        }
        return Err(Error::new(
            ErrorKind::Unrestorable,
            format!(
                "the archive cannot reach the target {}: {gap_name} is missing (the WAL from {}'s start to the target, timeline {tli}); nothing was downloaded",
                describe(target),
                backup.name.name
            ),
        ));
    }
    if let (Some(first), Some(last)) = (needed.first(), needed.last()) {
        say(&format!(
            "WAL check: {} to the target needs {} to {}, all archived",
            backup.name.name,
            name(first.0, first.1, size),
            name(last.0, last.2, size)
        ));
    }
    Ok(())
}

/// The newest segment on `chain`.
fn head_of(chain: &[crate::wal::timeline::Span], inv: &Inventory) -> u64 {
    chain
        .iter()
        .rev()
        .find_map(|s| inv.timelines.get(&s.timeline).map(|r| r.last))
        .unwrap_or(0)
}

/// Whether the segments just before `gap` (on `timeline`, up to three) hold a commit at
/// or after `time`: then replay reaches the target before the gap.
fn reached_before(archive: &Arc<dyn Archive>, inv: &Inventory, timeline: u32, gap: u64, size: u64, time: DateTime<Utc>) -> Result<bool> {
    let dir = tempfile_dir()?;
    for n in (gap.saturating_sub(3)..gap).rev() {
        if !inv.timelines.get(&timeline).is_some_and(|r| r.contains(n)) {
            continue;
        }
        let seg = Segment::from_number(timeline, n, size);
        let tmp = dir.path().join(seg.to_string());
        let fetched = download(archive.as_ref(), &seg.to_string(), &tmp, Expect::default())?;
        let reached = with_mapped(&tmp, |data| {
            Ok(events(data, seg, &fetched.url)?.iter().any(|e| match e {
                Event::Commit { time: t, .. } | Event::Abort { time: t, .. } => pg_time(*t).is_some_and(|t| t >= time),
                Event::RestorePoint { .. } => false,
            }))
        })?;
        if reached {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times_in_postgresqls_forms() {
        let utc = |s: &str| parse_time(s).unwrap().with_timezone(&Utc).to_rfc3339();
        assert_eq!(utc("2026-12-07 14:02:00+00"), "2026-12-07T14:02:00+00:00");
        assert_eq!(utc("2026-12-07 16:02:00+02"), "2026-12-07T14:02:00+00:00");
        assert_eq!(utc("2026-12-07T14:02:00Z"), "2026-12-07T14:02:00+00:00");
        assert_eq!(utc("2026-12-07 14:02:00"), "2026-12-07T14:02:00+00:00");
        assert!(parse_time("yesterday").is_err());
        assert_eq!(pg_time(0).unwrap().to_rfc3339(), "2000-01-01T00:00:00+00:00");
    }
}
