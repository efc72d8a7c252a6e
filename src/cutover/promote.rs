//! The cut-over: promote a standby only once it has replayed what the source wrote, and
//! say what was replayed (`walfetch promote`).
//!
//! Ready means: with a final LSN (`--lsn`, the source's last LSN after it stopped), the
//! standby has replayed past it; without one, it has replayed everything the archive
//! holds (PostgreSQL asks for a segment beyond the archive's newest) and no new segment
//! has arrived for the quiet period. A gap ahead or a segment refused as damaged refuses
//! the promotion at once: a standby promoted then would lose what lies behind it. A call
//! that keeps failing (credentials, network) is waited out, up to the timeout: it may be
//! fixed meanwhile (renewed credentials), and nothing is promoted while it lasts. The facts printed afterwards
//! are read from the server after promotion, so they are what it actually did.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::inspect::status::{report, StatusReport};
use crate::pg::collation::{self, Change};
use crate::pg::controldata;
use crate::pg::datadir::pg_major;
use crate::pg::db::Db;
use crate::wal::name::{Lsn, Segment};

/// When to promote.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replay at least this far first (the source's final LSN).
    pub lsn: Option<Lsn>,
    /// Without `lsn`: how long the archive must stay without a new segment.
    pub quiet: Duration,
    /// Give up (promoting nothing) after this long.
    pub timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

/// What a person signs off on.
#[derive(Debug, Serialize)]
pub struct Promoted {
    /// The last WAL position replayed (`pg_last_wal_replay_lsn()` after promotion).
    pub final_replayed_lsn: String,
    /// The LSN asked for, if any.
    pub target_lsn: Option<String>,
    /// The commit time of the last transaction replayed.
    pub last_replayed_commit: Option<String>,
    /// The timeline the standby replayed on.
    pub previous_timeline: u32,
    /// The new timeline.
    pub new_timeline: u32,
    /// The newest segment in the archive when promoting.
    pub archive_head: Option<String>,
    /// Whether the standby replayed into it (or past it).
    pub archive_head_replayed: bool,
    /// Seconds spent waiting.
    pub waited_seconds: u64,
    /// Collations whose version on this machine differs from the one the catalog
    /// recorded: indexes on them must be checked (`walfetch check-indexes`).
    pub collation_changes: Vec<Change>,
}

/// How [`promote`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Promoted.
    Promoted(Promoted),
    /// Not promoted: why (something blocks replay, or the wait timed out).
    Refused(String),
}

/// Waits until the standby in `datadir` (served through `db`) is ready, then promotes
/// it; `say` hears what it waits for.
pub fn promote(datadir: &Path, settings: &Settings, db: &Db, opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Outcome> {
    if !db.in_recovery()? {
        return Err(Error::new(
            ErrorKind::Config,
            "the server is not in recovery: it was promoted already, or is not the standby of this data directory",
        ));
    }
    let version = pg_major(datadir)?;
    let size = controldata::read(datadir, version)?.segment_size;
    let collations = compare_collations(datadir, settings, db, say);
    let started = Instant::now();
    let mut head_since: Option<(String, Instant)> = None;
    let mut last_said = String::new();
    loop {
        let status = report(datadir, settings, Duration::ZERO)?;
        let replayed = replay_lsn(db)?;
        // What cannot resolve itself, from status's own fresh listing (the fetcher's
        // report may predate a segment put back): the segment PostgreSQL needs is missing
        // while later ones exist, or a segment ahead was refused as damaged. A call that
        // fails (credentials, network) may resolve: it is waited out until the timeout.
        let blocked = blockers(&status);
        let timeline = status.timeline;
        // Paused at the recovery target its configuration names: that is where the
        // restore was asked to stop.
        let at_target = paused_at_target(db, datadir)?;
        let ready = match opts.lsn {
            _ if at_target.is_some() => at_target.clone(),
            Some(target) if replayed >= target => Some(format!("replayed {replayed}, past {target}")),
            Some(target) => {
                if let Some(b) = blocked.first() {
                    return Ok(Outcome::Refused(format!(
                        "not promoting: replayed {replayed}, short of {target}, and replay cannot go on: {b}"
                    )));
                }
                None
            }
            None => {
                if let Some(b) = blocked.first() {
                    return Ok(Outcome::Refused(format!("not promoting: replayed {replayed}, and {b}")));
                }
                quiet_head(&status, size, &mut head_since, opts.quiet, replayed)
            }
        };
        if let Some(why) = ready {
            say(&format!("ready: {why}"));
            let facts = Facts {
                head: status.archive_head,
                timeline,
                size,
                collation_changes: collations.changes,
            };
            return finish(db, at_target.is_some(), opts, facts, started);
        }
        if started.elapsed() >= opts.timeout {
            return Ok(Outcome::Refused(format!(
                "not promoting: waited {}s; replayed {replayed}{}; archive head {}",
                started.elapsed().as_secs(),
                opts.lsn.map(|t| format!(", short of {t}")).unwrap_or_default(),
                status.archive_head.as_deref().unwrap_or("(none)")
            )));
        }
        let waiting = format!(
            "waiting: replayed {replayed}, PostgreSQL asks for {}, archive head {}",
            status.next_segment,
            status.archive_head.as_deref().unwrap_or("(none)")
        );
        if waiting != last_said {
            say(&waiting);
            last_said = waiting;
        }
        std::thread::sleep(opts.poll);
    }
}

/// Compares the collation versions the catalog recorded with this machine's, and warns
/// of each change (a comparison that fails is a warning, not a refusal).
fn compare_collations(datadir: &Path, settings: &Settings, db: &Db, say: &mut dyn FnMut(&str)) -> collation::Report {
    let collations = match collation::compare(datadir, &settings.libpq, db) {
        Ok(report) => report,
        Err(e) => {
            say(&format!("warning: collation versions not compared: {e}"));
            collation::Report::default()
        }
    };
    for line in collations.lines() {
        say(&format!("warning: {line}"));
    }
    if !collations.changes.is_empty() {
        say(&format!(
            "warning: indexes on these collations may no longer be in order: run walfetch check-indexes {} (now on the standby, and again after promotion)",
            datadir.display()
        ));
    }
    collations
}

/// What cannot resolve itself, from status's own fresh listing (the fetcher's report may
/// predate a segment put back): the segment PostgreSQL needs is missing while later ones
/// exist, or a segment ahead was refused as damaged. A call that fails (credentials,
/// network) may resolve, so it is not here: it is waited out until the timeout.
fn blockers(status: &StatusReport) -> Vec<String> {
    let gap = (!status.next_segment_in_archive && status.behind_segments > 0)
        .then(|| format!("{} is missing from the archive while later segments exist", status.next_segment));
    let refused = status
        .refused
        .first()
        .map(|(seg, why)| format!("{seg} was refused as damaged: {why}"));
    gap.into_iter().chain(refused).collect()
}

/// Ready without a target LSN: PostgreSQL has consumed the archive's newest segment
/// through restore_command and no newer one has appeared for `quiet` (`head_since`
/// remembers since when the head has been the same). The line to say when it is.
fn quiet_head(
    status: &StatusReport,
    size: u64,
    head_since: &mut Option<(String, Instant)>,
    quiet: Duration,
    replayed: Lsn,
) -> Option<String> {
    let head = status.archive_head.as_ref()?;
    let head_no = Segment::parse(head).and_then(|s| s.number(size)).unwrap_or(u64::MAX);
    let wants = Segment::parse(&status.next_segment).and_then(|s| s.number(size)).unwrap_or(0);
    let since = match head_since {
        Some((h, at)) if h == head => *at,
        _ => {
            *head_since = Some((head.clone(), Instant::now()));
            Instant::now()
        }
    };
    let consumed = wants > head_no && status.next_segment_source == "restore_command";
    (consumed && since.elapsed() >= quiet).then(|| {
        format!(
            "replayed {replayed}: everything up to the archive's newest segment {head}, and none newer for {}s",
            since.elapsed().as_secs()
        )
    })
}

/// Whether the server is paused at the recovery target its data directory configures:
/// the line to say when it is.
fn paused_at_target(db: &Db, datadir: &Path) -> Result<Option<String>> {
    let version = pg_major(datadir)?;
    let configured = crate::pg::conf::recovery_target(datadir, version);
    let Some(target) = configured else { return Ok(None) };
    let paused = db.value("SELECT pg_is_wal_replay_paused()::text")?.as_deref() == Some("true");
    if !paused {
        return Ok(None);
    }
    let replayed = replay_lsn(db)?;
    Ok(Some(format!("paused at its recovery target ({target}), replayed {replayed}")))
}

/// The last replayed position.
fn replay_lsn(db: &Db) -> Result<Lsn> {
    let text = db.value("SELECT pg_last_wal_replay_lsn()::text")?.unwrap_or_else(|| "0/0".into());
    Lsn::parse(&text).ok_or_else(|| Error::new(ErrorKind::Database, format!("pg_last_wal_replay_lsn() returned '{text}'")))
}

/// Promotes and reads back what happened.
/// What the sign-off reports besides what the server says after promotion.
struct Facts {
    /// The archive's newest segment.
    head: Option<String>,
    /// The timeline replayed on.
    timeline: u32,
    /// The segment size.
    size: u64,
    /// Collations whose version changed with the move.
    collation_changes: Vec<Change>,
}

fn finish(db: &Db, paused: bool, opts: &Options, facts: Facts, started: Instant) -> Result<Outcome> {
    let Facts {
        head,
        timeline,
        size,
        collation_changes,
    } = facts;
    // Paused at a recovery target: before PostgreSQL 14 a paused server is promoted by
    // resuming (recovery then ends at the target); from 14 on pg_promote() works paused.
    let promoted = if paused && db.version < 140000 {
        db.value("SELECT pg_wal_replay_resume()::text")?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while db.in_recovery()? && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        Some("true".to_string())
    } else {
        db.value("SELECT pg_promote(true, 300)::text")?
    };
    if promoted.as_deref() != Some("true") || db.in_recovery()? {
        return Err(Error::new(
            ErrorKind::Database,
            "pg_promote() did not end recovery within 300 s: see the server log",
        ));
    }
    let final_lsn = replay_lsn(db)?;
    let commit = db.value("SELECT pg_last_xact_replay_timestamp()::text")?;
    let wal_file = db.value("SELECT pg_walfile_name(pg_current_wal_lsn())")?.unwrap_or_default();
    let new_timeline = wal_file.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()).unwrap_or(0);
    let head_replayed = head
        .as_deref()
        .and_then(Segment::parse)
        .is_some_and(|h| h.number(size).is_some_and(|n| final_lsn.0 / size >= n));
    Ok(Outcome::Promoted(Promoted {
        final_replayed_lsn: final_lsn.to_string(),
        target_lsn: opts.lsn.map(|l| l.to_string()),
        last_replayed_commit: commit,
        previous_timeline: timeline,
        new_timeline,
        archive_head: head,
        archive_head_replayed: head_replayed,
        waited_seconds: started.elapsed().as_secs(),
        collation_changes,
    }))
}

/// The sign-off, for people.
pub fn render(p: &Promoted) -> String {
    let mut lines = vec![
        format!("promoted: timeline {} -> {}", p.previous_timeline, p.new_timeline),
        format!(
            "final replayed LSN: {}{}",
            p.final_replayed_lsn,
            p.target_lsn.as_ref().map(|t| format!(" (asked for {t})")).unwrap_or_default()
        ),
        format!(
            "last replayed commit: {}",
            p.last_replayed_commit.as_deref().unwrap_or("(none replayed)")
        ),
    ];
    lines.push(match &p.archive_head {
        Some(h) => format!(
            "newest archived segment: {h}, {}",
            if p.archive_head_replayed { "replayed" } else { "NOT replayed" }
        ),
        None => "newest archived segment: (none)".into(),
    });
    if !p.collation_changes.is_empty() {
        lines.push(format!(
            "collations changed with the move: {} (run walfetch check-indexes now)",
            p.collation_changes.len()
        ));
        lines.extend(p.collation_changes.iter().map(|c| format!("  {}", c.line())));
    }
    lines.join("\n")
}
