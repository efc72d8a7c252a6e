//! `walfetch status PGDATA`: why a standby is (or is not) advancing, in one command.
//!
//! Everything comes from the standby's own files (no running server needed): the
//! replay position, timeline, system identifier and segment size from `pg_control`
//! (via `pg_controldata`), the signal files, and `restore_command` in
//! `postgresql.auto.conf`, `postgresql.conf` or `recovery.conf`. It is tied to the
//! archive that restore_command points at: is the next segment there, how far behind
//! the newest segment the standby is, where the first gap ahead is, and whether the
//! archive belongs to this cluster at all.
//!
//! Exit codes: 0 healthy (caught up or catching up), 15 blocked by a gap, 16
//! misconfigured, 17 archive unreachable.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::wal_verify::Histories;
use crate::cli::{absolute, listing_concurrency};
use crate::config::{StorageFlags, StorageSettings};
use crate::error::{ErrorKind, Result};
use crate::layout::backup::list_backups;
use crate::layout::wal_inventory::scan;
use crate::pg::controldata;
use crate::pg::datadir::pg_major;
use crate::storage::{self, Storage};
use crate::wal::name::Segment;

/// Exit code: the next segment the standby needs is missing, later ones exist.
pub const EXIT_BLOCKED: i32 = 15;
/// Exit code: the standby's configuration cannot work.
pub const EXIT_MISCONFIGURED: i32 = 16;
/// Exit code: the archive could not be read.
pub const EXIT_UNREACHABLE: i32 = 17;

/// Options of `status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The report (`--json`).
#[derive(Debug, Serialize, Default)]
pub struct StatusReport {
    /// `healthy`, `blocked`, `misconfigured` or `unreachable`.
    pub verdict: &'static str,
    /// The exit code.
    pub exit_code: i32,
    /// What is wrong, one line each (empty when healthy).
    pub problems: Vec<String>,
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
    /// How far the standby has replayed (by its files): LSN.
    pub replayed_to: String,
    /// The next segment the standby needs.
    pub next_segment: String,
    /// Whether the archive has it.
    pub next_segment_in_archive: bool,
    /// Newest segment in the archive on the standby's timeline chain.
    pub archive_head: Option<String>,
    /// Segments between the next needed one and the head (inclusive).
    pub behind_segments: u64,
    /// The same in bytes.
    pub behind_bytes: u64,
    /// The first missing segment ahead of the standby.
    pub first_gap: Option<String>,
    /// What the prefetch fetcher last reported, if one ran for this data directory.
    pub fetcher: Option<crate::spool::FollowStatus>,
}

/// The last value of `name` in a PostgreSQL configuration file's text
/// (`name = 'value'`, `name value`; `''` inside quotes is a quote).
fn setting(text: &str, name: &str) -> Option<String> {
    let mut value = None;
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with(|c: char| c == '=' || c.is_whitespace()) {
            continue;
        }
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut out = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        out.push('\'');
                        chars.next();
                        continue;
                    }
                    break;
                }
                out.push(c);
            }
            value = Some(out);
        } else {
            value = Some(rest.split('#').next().unwrap_or("").trim().to_string());
        }
    }
    value
}

/// Splits a shell command line into words (single/double quotes, backslashes).
fn shell_words(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The storage flags a walfetch restore_command carries, if it calls walfetch wal-fetch.
fn walfetch_flags(cmd: &str) -> Option<StorageFlags> {
    let words = shell_words(cmd);
    let exe = words.first()?;
    let calls_walfetch = exe.rsplit('/').next().is_some_and(|b| b.starts_with("walfetch")) && words.iter().any(|w| w == "wal-fetch");
    if !calls_walfetch {
        return None;
    }
    let mut flags = StorageFlags::default();
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        match w.as_str() {
            "--prefix" => flags.prefix = it.next().cloned(),
            "--endpoint" => flags.endpoint = it.next().cloned(),
            "--region" => flags.region = it.next().cloned(),
            "--path-style" => flags.path_style = true,
            _ => {}
        }
    }
    Some(flags)
}

impl Status {
    fn read_conf(&self, dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    /// Builds the report.
    pub fn report(&self, fallback: &StorageFlags) -> Result<StatusReport> {
        let dir = absolute(&self.pgdata);
        let version = pg_major(&dir)?;
        let control = controldata::read(&dir, version)?;
        let mut r = StatusReport {
            pg_version: version.to_string(),
            cluster_state: control.state.clone(),
            system_identifier: control.system_identifier,
            ..Default::default()
        };
        let recovery_conf = self.read_conf(&dir, "recovery.conf");
        r.mode = if dir.join("standby.signal").exists()
            || setting(&recovery_conf, "standby_mode").is_some_and(|v| matches!(v.as_str(), "on" | "true" | "yes" | "1"))
        {
            "standby"
        } else if dir.join("recovery.signal").exists() || (!version.uses_signal_files() && dir.join("recovery.conf").exists()) {
            "recovery"
        } else {
            "none"
        };
        if r.mode == "none" {
            let want = if version.uses_signal_files() {
                "standby.signal"
            } else {
                "recovery.conf with standby_mode = 'on'"
            };
            r.problems
                .push(format!("no {want}: PostgreSQL will start as a primary, not replay the archive"));
        }
        r.restore_command = if version.uses_signal_files() {
            setting(&self.read_conf(&dir, "postgresql.auto.conf"), "restore_command")
                .or_else(|| setting(&self.read_conf(&dir, "postgresql.conf"), "restore_command"))
        } else {
            setting(&recovery_conf, "restore_command")
        }
        .filter(|c| !c.is_empty());
        let flags = match &r.restore_command {
            None => {
                r.problems
                    .push("no restore_command: the standby cannot fetch WAL from the archive".into());
                fallback.clone()
            }
            Some(cmd) => match walfetch_flags(cmd) {
                Some(f) if f.prefix.is_some() => f,
                Some(_) => {
                    r.problems.push("restore_command calls walfetch without --prefix: the archive comes from the server's environment, which status cannot see".into());
                    fallback.clone()
                }
                None => {
                    r.problems.push(format!("restore_command does not call walfetch wal-fetch: {cmd}"));
                    fallback.clone()
                }
            },
        };

        // The replay position by the files: the later of the checkpoint's redo and the
        // minimum recovery point; the segment holding it is the next one needed.
        let (replayed, timeline) = if control.min_recovery > control.redo {
            (control.min_recovery, control.min_recovery_timeline)
        } else {
            (control.redo, control.timeline)
        };
        let size = control.segment_size;
        let next = Segment::containing(timeline, replayed, size);
        r.fetcher = crate::spool::Spool::for_wal_dir(&dir.join("pg_wal")).status();
        if let Some(gap) = r.fetcher.as_ref().and_then(|f| f.gap.clone()) {
            r.problems.push(format!(
                "blocked: the fetcher reports {gap} missing from the archive while later segments exist"
            ));
        }
        r.timeline = timeline;
        r.replayed_to = replayed.to_string();
        r.next_segment = next.to_string();

        let settings = match StorageSettings::resolve(&flags) {
            Ok(s) => s,
            Err(e) => {
                r.problems.push(format!("no archive to compare with: {e}"));
                return Ok(finish(r));
            }
        };
        r.archive = Some(settings.location.to_string());
        match self.with_archive(&settings, &control.system_identifier, next, size, &mut r) {
            Ok(()) => Ok(finish(r)),
            // The network or the server failing is "unreachable"; an answer that the
            // bucket, region or credentials are wrong is a configuration problem.
            Err(e) if e.kind() == ErrorKind::Unreachable => {
                r.verdict = "unreachable";
                r.exit_code = EXIT_UNREACHABLE;
                r.problems.push(format!("archive unreachable: {e}"));
                Ok(r)
            }
            Err(e) => {
                r.problems.push(format!("the archive in restore_command cannot be used: {e}"));
                Ok(finish(r))
            }
        }
    }

    fn with_archive(&self, settings: &StorageSettings, sysid: &u64, next: Segment, size: u64, r: &mut StatusReport) -> Result<()> {
        let storage: Arc<dyn Storage> = storage::open(settings)?;
        let (inv, _) = scan(storage.as_ref(), Some(size), listing_concurrency())?;
        let backups = list_backups(&storage, 4)?;
        r.archive_system_identifier = backups.iter().rev().find_map(|b| b.sentinel.system_identifier);
        if let Some(archive_sysid) = r.archive_system_identifier {
            if archive_sysid != *sysid {
                r.problems.push(format!(
                    "the archive belongs to another cluster (system identifier {archive_sysid}, this data directory has {sysid})"
                ));
            }
        }
        if inv.objects == 0 && backups.is_empty() {
            r.problems
                .push(format!("{} holds no WAL and no backups: check the prefix", storage.describe()));
        }
        let mut histories = Histories::new(storage.as_ref(), &inv);
        let latest = inv.latest_timeline().unwrap_or(next.timeline).max(next.timeline);
        let next_no = next.number(size).unwrap_or(0);
        // Along the chain to the newest timeline, from the segment the standby needs to
        // the newest segment: how many there are, and the first one missing.
        let mut behind = 0u64;
        let mut head = None;
        let mut first_gap = None;
        for span in histories.chain(latest)? {
            let begin = span.begin.0 / size;
            let end = span.end.map(|e| (e.0 / size).saturating_sub(1));
            let owns_next = begin <= next_no && end.is_none_or(|e| next_no <= e);
            let Some(runs) = inv.timelines.get(&span.timeline) else {
                continue;
            };
            if owns_next {
                r.next_segment_in_archive = runs.contains(next_no);
            }
            let lo = next_no.max(begin);
            let hi = end.map_or(runs.last, |e| e.min(runs.last));
            if lo > hi {
                continue;
            }
            behind += hi - lo + 1;
            head = Some(Segment::from_number(span.timeline, hi, size).to_string());
            if first_gap.is_none() {
                first_gap = runs
                    .missing_in(lo, hi)
                    .first()
                    .map(|(a, _)| Segment::from_number(span.timeline, *a, size).to_string());
            }
        }
        r.archive_head = head;
        r.behind_segments = behind;
        r.behind_bytes = behind * size;
        r.first_gap = first_gap;
        if !r.next_segment_in_archive && behind > 0 && !r.problems.iter().any(|p| p.starts_with("blocked:")) {
            r.problems.push(format!(
                "blocked: {} is missing from the archive while later segments exist",
                r.next_segment
            ));
        }
        Ok(())
    }
}

/// Decides the verdict from the problems found.
fn finish(mut r: StatusReport) -> StatusReport {
    let blocked = r.problems.iter().any(|p| p.starts_with("blocked:"));
    let misconfigured = r.problems.iter().any(|p| !p.starts_with("blocked:"));
    (r.verdict, r.exit_code) = if misconfigured {
        ("misconfigured", EXIT_MISCONFIGURED)
    } else if blocked {
        ("blocked", EXIT_BLOCKED)
    } else {
        ("healthy", 0)
    };
    r
}

/// The readable summary.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {} (exit {})", r.verdict.to_uppercase(), r.exit_code);
    for p in &r.problems {
        let _ = writeln!(out, "  - {p}");
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
    let _ = writeln!(
        out,
        "replayed to {} (by its files); next segment {}: {}",
        r.replayed_to,
        r.next_segment,
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
    if let Some(f) = &r.fetcher {
        let _ = writeln!(
            out,
            "fetcher (pid {}, {}): {} segments ready after {}{}",
            f.pid,
            f.updated,
            f.ready,
            f.wanted.as_deref().unwrap_or("?"),
            if f.at_archive_head { ", at the archive head" } else { "" }
        );
    }
    out
}

impl Status {
    /// Reports and returns the exit code.
    pub fn run(&self, fallback: &StorageFlags) -> Result<i32> {
        let report = self.report(fallback)?;
        if self.json {
            crate::output::json(&report)?;
        } else {
            crate::out!("{}", render(&report));
        }
        Ok(report.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_like_postgresql() {
        let text = "restore_command = 'old'\n# restore_command = 'commented'\nrestore_command='/usr/bin/walfetch --prefix s3://b/it''s wal-fetch \"%f\" \"%p\"'\nport = 5433 # comment\n";
        assert_eq!(
            setting(text, "restore_command").unwrap(),
            "/usr/bin/walfetch --prefix s3://b/it's wal-fetch \"%f\" \"%p\""
        );
        assert_eq!(setting(text, "port").unwrap(), "5433");
        assert_eq!(setting(text, "archive_mode"), None);
        assert_eq!(setting("restore_command_x = 'no'\n", "restore_command"), None);
    }

    #[test]
    fn finds_walfetch_storage_flags() {
        let f = walfetch_flags("'/opt/walfetch dir/other-tool' --prefix s3://b/p wal-fetch \"%f\" \"%p\"");
        assert!(f.is_none(), "a path whose last part is not walfetch");
        let f = walfetch_flags("'/opt/wal fetch/walfetch' --prefix s3://b/p wal-fetch \"%f\" \"%p\"").unwrap();
        assert_eq!(f.prefix.as_deref(), Some("s3://b/p"));
        let f =
            walfetch_flags("/usr/local/bin/walfetch --prefix s3://b/p --endpoint http://h:1 --path-style wal-fetch \"%f\" \"%p\"").unwrap();
        assert_eq!(f.prefix.as_deref(), Some("s3://b/p"));
        assert_eq!(f.endpoint.as_deref(), Some("http://h:1"));
        assert!(f.path_style);
        assert!(walfetch_flags("wal-g wal-fetch %f %p").is_none());
        assert_eq!(shell_words(r#"a 'b c' "d\"e" f\ g"#), ["a", "b c", "d\"e", "f g"]);
    }
}
