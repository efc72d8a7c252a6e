//! Why a standby is (or is not) advancing, from its own files and its archive, without
//! a running server: the report behind `walfetch status PGDATA`.
//!
//! What PostgreSQL is waiting for comes from the last restore_command calls that walfetch
//! recorded (the segment PostgreSQL actually asked for, and how that call ended), not
//! from `pg_control`, which lags a whole restartpoint behind; `pg_control` is the
//! fallback before the first call. Everything that can block replay is named: a call that
//! keeps failing (and since when), a segment refused as damaged, a fetcher that keeps
//! failing, credentials the archive rejects, a gap in the archive, a configuration that
//! cannot work. The archive is the one `restore_command` points at, seen through the
//! wrappers such commands use (`env`, `envdir`, `timeout`, `nice`, `sudo`, `runuser`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::archive::timelines::Histories;
use crate::config::{process_env, Settings, StorageFlags, StorageSettings, PREFIX_ENV_NAMES};
use crate::error::{exit, ErrorKind, Result};
use crate::inspect::credentials::{expiry, expiry_gauge, Expiry};
use crate::inspect::prometheus::Gauges;
use crate::pg::collation;
use crate::pg::conf::{recovery_state, redact, restore_command, RecoveryState, RestoreCommand};
use crate::pg::controldata;
use crate::pg::datadir::{pg_major, wal_dir};
use crate::pg::db::connect_datadir;
use crate::standby::spool::{Call, FollowStatus, Spool};
use crate::storage;
use crate::wal::name::{Segment, WalFile};

/// What kind of problem blocks the standby; decides the verdict, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Misconfigured,
    Credentials,
    Unreachable,
    Blocked,
    Expiring,
}

impl Class {
    fn of(kind: ErrorKind) -> Class {
        match kind {
            ErrorKind::Credentials => Class::Credentials,
            ErrorKind::Unreachable => Class::Unreachable,
            ErrorKind::Config => Class::Misconfigured,
            _ => Class::Blocked,
        }
    }

    fn verdict(self) -> (&'static str, u8) {
        match self {
            Class::Misconfigured => ("misconfigured", exit::MISCONFIGURED),
            Class::Credentials => ("credentials", exit::STATUS_CREDENTIALS),
            Class::Unreachable => ("unreachable", exit::STATUS_UNREACHABLE),
            Class::Blocked => ("blocked", exit::BLOCKED),
            Class::Expiring => ("credentials-expiring", exit::CREDENTIALS_EXPIRING),
        }
    }
}

/// The report (`--json`).
#[derive(Debug, Serialize, Default)]
pub struct StatusReport {
    /// `healthy`, `blocked`, `credentials`, `unreachable` or `misconfigured`.
    pub verdict: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// What is wrong, one line each (empty when healthy).
    pub problems: Vec<String>,
    /// Things worth knowing that block nothing.
    pub notes: Vec<String>,
    /// PostgreSQL major version.
    pub pg_version: String,
    /// Cluster state from pg_control.
    pub cluster_state: String,
    /// System identifier from pg_control.
    pub system_identifier: u64,
    /// The archive's system identifier (newest backup's sentinel), when known.
    pub archive_system_identifier: Option<u64>,
    /// `standby`, `recovery`, or `none`.
    pub mode: &'static str,
    /// The restore_command found, if any.
    pub restore_command: Option<String>,
    /// The archive it points at.
    pub archive: Option<String>,
    /// The standby's timeline.
    pub timeline: u32,
    /// How far the standby has replayed (by pg_control): LSN.
    pub replayed_to: String,
    /// The segment PostgreSQL needs next.
    pub next_segment: String,
    /// Where that comes from: `restore_command` (the last call) or `pg_control`.
    pub next_segment_source: &'static str,
    /// The last restore_command call for a segment, as walfetch recorded it.
    pub last_call: Option<Call>,
    /// The last segment call that failed, while no call for that segment has succeeded.
    pub failing_call: Option<Call>,
    /// Whether the archive has the next segment.
    pub next_segment_in_archive: bool,
    /// Newest segment in the archive on the standby's timeline chain.
    pub archive_head: Option<String>,
    /// Segments between the next needed one and the head (inclusive).
    pub behind_segments: u64,
    /// The same in bytes.
    pub behind_bytes: u64,
    /// The first missing segment ahead of the standby.
    pub first_gap: Option<String>,
    /// Segments the fetcher refused, with the reasons.
    pub refused: Vec<(String, String)>,
    /// What the prefetch fetcher last reported, if one ran for this data directory.
    pub fetcher: Option<FollowStatus>,
    /// Whether that fetcher is running now.
    pub fetcher_running: bool,
    /// When the credentials the restore_command uses expire, if they do.
    pub credentials: Option<Expiry>,
    /// The restored catalog's collation versions against this machine's, when the
    /// server runs (`None`: not compared, see the notes).
    pub collations: Option<collation::Report>,
    /// The recovery target the configuration names, and whether the server reached it.
    pub recovery_target: Option<TargetState>,
}

/// Where a recovery asked to stop stands.
#[derive(Debug, Serialize, Default, Clone)]
pub struct TargetState {
    /// The setting (`recovery_target_time = '…'`).
    pub setting: String,
    /// Whether the server paused there (or ended recovery).
    pub reached: bool,
    /// The last replayed LSN.
    pub replayed_lsn: Option<String>,
    /// The time of the last replayed commit.
    pub last_commit: Option<String>,
}

/// Builds reports; collects problems by class on the way.
struct Builder {
    report: StatusReport,
    worst: Option<Class>,
}

impl Builder {
    fn problem(&mut self, class: Class, text: String) {
        self.worst = Some(self.worst.map_or(class, |w| w.min(class)));
        self.report.problems.push(text);
    }

    fn finish(mut self) -> StatusReport {
        (self.report.verdict, self.report.exit_code) = self.worst.map_or(("healthy", 0), Class::verdict);
        self.report
    }
}

/// Builds the report for the standby in `datadir`. The storage flags in `settings` are
/// used when the restore_command names no archive; credentials that expire within
/// `margin` are a problem of their own (the least severe).
pub fn report(datadir: &Path, settings: &Settings, margin: Duration) -> Result<StatusReport> {
    let fallback = &settings.flags;
    let version = pg_major(datadir)?;
    let control = controldata::read(datadir, version)?;
    let mut b = Builder {
        report: StatusReport {
            pg_version: version.to_string(),
            cluster_state: control.state.clone(),
            system_identifier: control.system_identifier,
            ..Default::default()
        },
        worst: None,
    };
    let state = recovery_state(datadir, Some(version));
    b.report.mode = state.label();
    if state == RecoveryState::None {
        let want = if version.uses_signal_files() {
            "standby.signal"
        } else {
            "recovery.conf with standby_mode = 'on'"
        };
        b.problem(
            Class::Misconfigured,
            format!("no {want}: PostgreSQL will start as a primary, not replay the archive"),
        );
    }
    let command = restore_command(datadir, version);
    b.report.restore_command = command.as_deref().map(redact);
    let archive = archive_settings(&mut b, command.as_deref(), fallback);

    // What PostgreSQL waits for: the last segment call, else pg_control's position.
    let size = control.segment_size;
    let (replayed, timeline) = if control.min_recovery > control.redo {
        (control.min_recovery, control.min_recovery_timeline)
    } else {
        (control.redo, control.timeline)
    };
    b.report.timeline = timeline;
    b.report.replayed_to = replayed.to_string();
    let spool = Spool::for_wal_dir(&wal_dir(datadir), settings.prefetch_dir.as_deref());
    let calls = spool.calls();
    let asked = calls.segment.as_ref().and_then(|c| Some((WalFile::parse(&c.file)?.segment()?, c)));
    let next = match asked {
        Some((seg, call)) if call.outcome == "restored" => seg.next(size).unwrap_or(seg),
        Some((seg, _)) => seg,
        None => Segment::containing(timeline, replayed, size),
    };
    b.report.next_segment_source = if asked.is_some() { "restore_command" } else { "pg_control" };
    b.report.next_segment = next.to_string();
    for call in [&calls.failing, &calls.other].into_iter().flatten() {
        failing_call(&mut b, call);
    }
    let worked = calls
        .segment
        .as_ref()
        .filter(|c| matches!(c.outcome.as_str(), "restored" | "absent"))
        .map(|c| c.at.clone());
    b.report.last_call = calls.segment;
    b.report.failing_call = calls.failing;
    fetcher_problems(&mut b, &spool, next, size, worked.as_deref());

    if let Some(archive) = archive {
        b.report.archive = Some(archive.location.to_string());
        let concurrency = settings.listing_concurrency();
        if let Err(e) = with_archive(&mut b, &archive, concurrency, control.system_identifier, next, size, margin) {
            let class = Class::of(e.kind());
            let what = match class {
                Class::Unreachable => "archive unreachable",
                Class::Credentials => "the archive rejects the credentials",
                _ => "the archive in restore_command cannot be used",
            };
            b.problem(class, format!("{what}: {e}"));
        }
    }
    Ok(b.finish())
}

/// Adds what the running server says to `report`: the collation versions its catalog
/// recorded against this machine's. No server running is a note; a server reached
/// that is not `datadir`'s (PGHOST/PGPORT pointing elsewhere) is an error: status reads
/// nothing from another cluster.
pub fn add_server_facts(report: &mut StatusReport, datadir: &Path, settings: &Settings) -> Result<()> {
    let db = match connect_datadir(datadir, &settings.libpq, "walfetch status") {
        Ok(db) => db,
        Err(e) if e.kind() == ErrorKind::WrongServer => return Err(e),
        Err(e) => {
            report.notes.push(format!("collation versions not compared: {e}"));
            return Ok(());
        }
    };
    if let Some(setting) = crate::pg::conf::recovery_target(datadir, pg_major(datadir)?) {
        let state = target_state(&db, setting)?;
        report.notes.push(if state.reached {
            format!(
                "recovery target {} reached: replayed to {}, last replayed commit {}; promote with walfetch promote {}",
                state.setting,
                state.replayed_lsn.as_deref().unwrap_or("?"),
                state.last_commit.as_deref().unwrap_or("(none)"),
                datadir.display()
            )
        } else {
            format!(
                "recovery target {} not reached yet: replayed to {}",
                state.setting,
                state.replayed_lsn.as_deref().unwrap_or("?")
            )
        });
        report.recovery_target = Some(state);
    }
    match collation::compare(datadir, &settings.libpq, &db) {
        Ok(found) => {
            report.notes.extend(found.lines());
            if !found.changes.is_empty() {
                report.notes.push(format!(
                    "indexes on changed collations may be out of order: run walfetch check-indexes {} (before and after promotion)",
                    datadir.display()
                ));
            }
            report.collations = Some(found);
        }
        Err(e) if e.kind() == ErrorKind::WrongServer => return Err(e),
        Err(e) => report.notes.push(format!("collation versions not compared: {e}")),
    }
    Ok(())
}

/// Whether the server paused at its recovery target, from the server itself.
fn target_state(db: &crate::pg::db::Db, setting: String) -> Result<TargetState> {
    let row = db.rows(
        "SELECT pg_is_in_recovery()::text,
                CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused()::text END,
                pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text",
        &[],
    )?;
    let col = |i: usize| row.first().and_then(|r| r.get(i).cloned().flatten());
    Ok(TargetState {
        setting,
        reached: col(1).as_deref() == Some("true") || col(0).as_deref() == Some("false"),
        replayed_lsn: col(2),
        last_commit: col(3),
    })
}

/// A restore_command call that failed: what blocks replay while PostgreSQL keeps calling
/// (a standby calls again every few seconds); only noted when the last call is older
/// than [`STALE_CALL`] (the server stopped, or gets WAL some other way now).
fn failing_call(b: &mut Builder, call: &Call) {
    if call.outcome != "failed" {
        return;
    }
    let kind = call.kind.as_deref().unwrap_or("error");
    let text = format!(
        "PostgreSQL asks for {} and wal-fetch fails ({kind}, exit {}) since {}, {} calls in a row: {}",
        call.file,
        call.exit_code,
        call.failing_since.as_deref().unwrap_or(&call.at),
        call.failures,
        call.error.as_deref().unwrap_or("")
    );
    let age = chrono::DateTime::parse_from_rfc3339(&call.at)
        .ok()
        .and_then(|at| (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).to_std().ok());
    match age {
        Some(age) if age > STALE_CALL => b
            .report
            .notes
            .push(format!("the last call, {} min ago, failed: {text}", age.as_secs() / 60)),
        _ => b.problem(class_of_label(kind), format!("blocked: {text}")),
    }
}

/// Whether RFC 3339 time `a` is after `b` (false when either does not parse).
fn later(a: &str, b: &str) -> bool {
    match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

/// A failed call older than this no longer tells what PostgreSQL waits for.
const STALE_CALL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The class of a recorded error kind label.
fn class_of_label(label: &str) -> Class {
    match label {
        "credentials" => Class::Credentials,
        "unreachable" => Class::Unreachable,
        "config" => Class::Misconfigured,
        _ => Class::Blocked,
    }
}

/// The archive the restore_command uses, with the environment it sets; problems for a
/// command that is missing, is not walfetch's, or names no archive.
fn archive_settings(b: &mut Builder, command: Option<&str>, fallback: &StorageFlags) -> Option<StorageSettings> {
    let Some(cmd) = command else {
        b.problem(
            Class::Misconfigured,
            "no restore_command: the standby cannot fetch WAL from the archive".into(),
        );
        return StorageSettings::resolve(fallback).ok();
    };
    let Some(call) = RestoreCommand::parse(cmd) else {
        b.problem(
            Class::Misconfigured,
            format!(
                "restore_command does not call walfetch wal-fetch (directly or through env, envdir, timeout, nice, sudo, runuser, sh -c): {}",
                redact(cmd)
            ),
        );
        return StorageSettings::resolve(fallback).ok();
    };
    let (vars, unreadable) = call.environment();
    for dir in unreadable {
        b.report
            .notes
            .push(format!("cannot read {} (envdir of restore_command) as this user", dir.display()));
    }
    let env = |name: &str| -> Option<String> {
        match vars.get(name) {
            Some(v) => Some(v.clone()),
            None if call.clears_env => None,
            None => process_env(name),
        }
    };
    // The archive check below uses the credentials the restore_command would use.
    apply_environment(&vars, call.clears_env);
    let names_archive = call.flags.prefix.is_some() || PREFIX_ENV_NAMES.iter().any(|n| vars.contains_key(*n));
    if !names_archive && !call.clears_env {
        let own = PREFIX_ENV_NAMES
            .iter()
            .find_map(|n| process_env(n).filter(|v| !v.is_empty()).map(|v| format!("{n}={v}")));
        match own {
            Some(own) => b.report.notes.push(format!(
                "restore_command takes its archive from the server's environment, which status cannot see; checked {own} from this environment instead"
            )),
            None => {
                b.problem(
                    Class::Misconfigured,
                    "restore_command calls walfetch without an archive (no --prefix, no WALG_S3_PREFIX / WALG_FILE_PREFIX it sets); it comes from the server's environment, which status cannot see: set one here too".into(),
                );
                return None;
            }
        }
    }
    match StorageSettings::resolve_from(&call.flags, &env) {
        Ok(s) => Some(s),
        Err(e) => {
            b.problem(Class::Misconfigured, format!("the archive in restore_command cannot be used: {e}"));
            None
        }
    }
}

/// Makes this process see the variables the restore_command sets (and, after `env -i`,
/// none of the settings it does not set), so the archive is read with its credentials.
fn apply_environment(vars: &std::collections::BTreeMap<String, String>, clears: bool) {
    if clears {
        for (k, _) in crate::config::setting_vars() {
            std::env::remove_var(k);
        }
    }
    for (k, v) in vars.iter().filter(|(k, _)| crate::config::is_setting(k)) {
        std::env::set_var(k, v);
    }
}

/// Problems the fetcher and the spool know of: refused segments at or after `next`, and
/// a running fetcher whose downloads keep failing (unless a restore_command call
/// worked at `worked_after`, since its last report).
fn fetcher_problems(b: &mut Builder, spool: &Spool, next: Segment, size: u64, worked_after: Option<&str>) {
    let next_no = next.number(size).unwrap_or(0);
    for (seg, why) in spool.refusals() {
        let Some(s) = Segment::parse(&seg) else { continue };
        if s.number(size).is_some_and(|n| n >= next_no) {
            b.problem(
                Class::Blocked,
                format!(
                    "blocked: {seg} was refused as damaged: {why}; once the archive holds a good copy, delete {}",
                    spool.refused_path(&s).display()
                ),
            );
            b.report.refused.push((seg, why));
        }
    }
    b.report.fetcher = spool.status();
    b.report.fetcher_running = spool.fetcher_alive().is_some();
    if let Some(gap) = b
        .report
        .fetcher
        .as_ref()
        .and_then(|f| f.gap.clone())
        .filter(|_| b.report.fetcher_running)
    {
        b.problem(
            Class::Blocked,
            format!("blocked: the fetcher reports {gap} missing from the archive while later segments exist"),
        );
    }
    let failing = b
        .report
        .fetcher
        .as_ref()
        .and_then(|f| f.failing.clone())
        .filter(|_| b.report.fetcher_running);
    if let Some(f) = failing {
        let text = format!(
            "the prefetch fetcher keeps failing ({}) since {}, {} times: {}",
            f.kind, f.since, f.count, f.error
        );
        // A restore_command call that worked after the fetcher's last report shows the
        // archive reachable with working credentials now (renewed, say): the fetcher
        // retries with reloaded settings on its own, so an access failure blocks nothing.
        // A content failure (a damaged segment) is about one segment and stays.
        let updated = b.report.fetcher.as_ref().map(|f| f.updated.clone()).unwrap_or_default();
        let access = matches!(f.kind.as_str(), "credentials" | "unreachable");
        if access && worked_after.is_some_and(|at| later(at, &updated)) {
            b.report
                .notes
                .push(format!("{text}; wal-fetch has worked since, and the fetcher retries on its own"));
        } else {
            b.problem(class_of_label(&f.kind), text);
        }
    }
}

/// Ties the standby to its archive: system identifier, the next segment, the head, gaps.
fn with_archive(
    b: &mut Builder,
    settings: &StorageSettings,
    concurrency: usize,
    sysid: u64,
    next: Segment,
    size: u64,
    margin: Duration,
) -> Result<()> {
    let storage = storage::open(&settings.connection()?)?;
    let archive = crate::archive::open(std::sync::Arc::clone(&storage), settings)?;
    // Credentials that cannot be loaded show in the listing below, as a problem of their own.
    if let Ok(Some(expiry)) = expiry(storage.as_ref(), margin) {
        if expiry.within_margin {
            b.problem(Class::Expiring, expiry.line());
        }
        b.report.credentials = Some(expiry);
    }
    let (inv, _) = archive.wal_inventory(Some(size), concurrency)?;
    let backups = archive.backups(4)?;
    let r = &mut b.report;
    r.archive_system_identifier = backups.iter().rev().find_map(|b| b.sentinel.system_identifier);
    if let Some(archive_sysid) = r.archive_system_identifier.filter(|a| *a != sysid) {
        b.problem(
            Class::Misconfigured,
            format!("the archive belongs to another cluster (system identifier {archive_sysid}, this data directory has {sysid})"),
        );
    }
    let mut histories = Histories::new(archive.as_ref(), &inv);
    let latest = inv.latest_timeline().unwrap_or(next.timeline).max(next.timeline);
    let next_no = next.number(size).unwrap_or(0);
    // Along the chain to the newest timeline, from the segment the standby needs to
    // the newest segment: how many there are, and the first one missing.
    let mut behind = 0u64;
    let mut head = None;
    let mut first_gap = None;
    let mut in_archive = false;
    for span in histories.chain(latest)? {
        let begin = span.begin.0 / size;
        let end = span.end.map(|e| (e.0 / size).saturating_sub(1));
        let owns_next = begin <= next_no && end.is_none_or(|e| next_no <= e);
        let Some(runs) = inv.timelines.get(&span.timeline) else {
            continue;
        };
        if owns_next {
            in_archive = runs.contains(next_no);
        }
        let lo = next_no.max(begin);
        let hi = end.map_or(runs.last, |e| e.min(runs.last));
        if hi >= begin && runs.first <= hi {
            head = Some(Segment::from_number(span.timeline, hi, size).to_string());
        }
        if lo > hi {
            continue;
        }
        behind += hi - lo + 1;
        if first_gap.is_none() {
            first_gap = runs
                .missing_in(lo, hi)
                .first()
                .map(|(a, _)| Segment::from_number(span.timeline, *a, size).to_string());
        }
    }
    let r = &mut b.report;
    r.next_segment_in_archive = in_archive;
    r.archive_head = head;
    r.behind_segments = behind;
    r.behind_bytes = behind * size;
    r.first_gap = first_gap;
    let already_blocked = r.problems.iter().any(|p| p.starts_with("blocked:"));
    if !in_archive && behind > 0 && !already_blocked {
        let next = r.next_segment.clone();
        b.problem(
            Class::Blocked,
            format!("blocked: {next} is missing from the archive while later segments exist"),
        );
    }
    Ok(())
}

/// The readable summary.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {} (exit {})", r.verdict.to_uppercase(), r.exit_code);
    for p in &r.problems {
        let _ = writeln!(out, "  - {p}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(
        out,
        "PostgreSQL {}, {}, mode: {}, timeline {}",
        r.pg_version, r.cluster_state, r.mode, r.timeline
    );
    let _ = writeln!(
        out,
        "system identifier: {}{}",
        r.system_identifier,
        r.archive_system_identifier.map(|a| format!(" (archive: {a})")).unwrap_or_default()
    );
    let _ = writeln!(out, "restore_command: {}", r.restore_command.as_deref().unwrap_or("(none)"));
    let _ = writeln!(out, "archive: {}", r.archive.as_deref().unwrap_or("(unknown)"));
    if let Some(c) = &r.last_call {
        let _ = writeln!(
            out,
            "last restore_command call: {} at {}: {}{}",
            c.file,
            c.at,
            c.outcome,
            c.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "replayed to {} (by pg_control); next segment {} (from {}): {}",
        r.replayed_to,
        r.next_segment,
        r.next_segment_source,
        if r.next_segment_in_archive {
            "in the archive"
        } else {
            "not in the archive"
        }
    );
    let _ = writeln!(
        out,
        "archive head: {}; behind by {} segments ({:.1} MiB)",
        r.archive_head.as_deref().unwrap_or("(none)"),
        r.behind_segments,
        r.behind_bytes as f64 / 1048576.0
    );
    if let Some(g) = &r.first_gap {
        let _ = writeln!(out, "first gap ahead: {g}");
    }
    if let Some(c) = &r.credentials {
        let _ = writeln!(out, "credentials: {}", c.line());
    }
    if let Some(f) = &r.fetcher {
        let _ = writeln!(
            out,
            "fetcher (pid {}, {}, {}): {} segments ready after {}{}",
            f.pid,
            if r.fetcher_running { "running" } else { "not running" },
            f.updated,
            f.ready,
            f.wanted.as_deref().unwrap_or("?"),
            if f.at_archive_head { ", at the archive head" } else { "" }
        );
    }
    out
}

/// Prometheus textfile-collector metrics for the standby in `datadir`.
pub fn prometheus(r: &StatusReport, datadir: &Path) -> String {
    let mut gauges = Gauges::new("pgdata", &datadir.display().to_string());
    gauges.gauge(
        "status",
        "status exit code: 0 healthy, 15 blocked, 16 misconfigured, 17 unreachable, 18 credentials rejected, 19 credentials expiring.",
        r.exit_code,
    );
    gauges.gauge(
        "standby_behind_segments",
        "Segments between the one the standby needs next and the archive head.",
        r.behind_segments,
    );
    if let Some(e) = &r.credentials {
        expiry_gauge(&mut gauges, e);
    }
    gauges.finish()
}
