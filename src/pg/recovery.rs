//! The recovery configuration that turns a restored data directory into a standby (or
//! a one-off archive recovery), in the form its PostgreSQL version expects:
//!
//! | version | standby | archive recovery |
//! |---|---|---|
//! | 12 and later | `standby.signal` + settings in `postgresql.auto.conf` | `recovery.signal` + the same settings |
//! | 9.6 to 11 | `recovery.conf` with `standby_mode = 'on'` | `recovery.conf` without it |
//!
//! Either way `restore_command` calls walfetch with the archive's settings, and
//! `archive_mode` is turned off: the restored `postgresql.conf` belongs to the source
//! and would otherwise start archiving this server's WAL into the source's bucket.

use std::fs;
use std::path::Path;

use super::datadir::pg_major;
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;

/// How the restored server should recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Keep replaying archived WAL until promoted.
    Standby,
    /// Replay what the archive has, then promote.
    Recovery,
}

/// Settings walfetch writes into `postgresql.auto.conf`; earlier lines for them are
/// replaced (a restored source's own recovery targets never stay behind).
const MANAGED_SETTINGS: &[&str] = &[
    "restore_command",
    "archive_mode",
    "standby_mode",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
    "wal_retrieve_retry_interval",
];

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A time (`recovery_target_time`), as PostgreSQL reads it.
    Time(String),
    /// An LSN (`recovery_target_lsn`).
    Lsn(String),
    /// A transaction id (`recovery_target_xid`).
    Xid(String),
    /// A named restore point (`recovery_target_name`).
    Name(String),
}

/// A recovery target and what to do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryTarget {
    /// Where to stop.
    pub target: Target,
    /// Stop just after the target (`on`), or just before it.
    pub inclusive: bool,
    /// `latest`, `current` or a timeline number.
    pub timeline: Option<String>,
    /// `pause`, `promote` or `shutdown`.
    pub action: String,
}

impl RecoveryTarget {
    /// The settings, as PostgreSQL names them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![match &self.target {
            Target::Time(t) => ("recovery_target_time", t.clone()),
            Target::Lsn(l) => ("recovery_target_lsn", l.clone()),
            Target::Xid(x) => ("recovery_target_xid", x.clone()),
            Target::Name(n) => ("recovery_target_name", n.clone()),
        }];
        if !matches!(self.target, Target::Name(_)) {
            out.push(("recovery_target_inclusive", if self.inclusive { "on" } else { "off" }.into()));
        }
        out.push(("recovery_target_action", self.action.clone()));
        if let Some(t) = &self.timeline {
            out.push(("recovery_target_timeline", t.clone()));
        }
        out
    }
}

/// How long a standby waits, after the archive had no next segment, before asking
/// again. PostgreSQL's default (5 s) alone makes a segment wait 2.5 s on average after
/// it lands; at 1 s a call a second costs one request (or a spool look), and replay
/// follows the archive head within about a second.
pub const STANDBY_RETRY_INTERVAL: &str = "1s";
const MARKER: &str = "# Written by walfetch backup-fetch";

/// Quotes `value` as a PostgreSQL configuration string.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Drops lines that set one of `names` (as `name = …` or `name=…`) and walfetch's marker.
fn without_settings(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let key = line.trim_start().split(['=', ' ', '\t']).next().unwrap_or("").to_ascii_lowercase();
        if names.contains(&key.as_str()) || line.trim() == MARKER {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the configuration for `mode` (and `target`, when recovery stops at one) into
/// `datadir`; returns one line per file written.
pub fn write_recovery_config(
    datadir: &Path,
    mode: RecoveryMode,
    restore_command: &str,
    target: Option<&RecoveryTarget>,
) -> Result<Vec<String>> {
    let version = pg_major(datadir)?;
    let mut written = Vec::new();
    let auto_conf = datadir.join("postgresql.auto.conf");
    let existing = match fs::read_to_string(&auto_conf) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::local_io(auto_conf.display(), &e)),
    };
    let mut auto = without_settings(&existing, MANAGED_SETTINGS);
    auto.push_str(MARKER);
    auto.push('\n');
    auto.push_str("archive_mode = 'off'\n");
    if mode == RecoveryMode::Standby {
        auto.push_str(&format!("wal_retrieve_retry_interval = '{STANDBY_RETRY_INTERVAL}'\n"));
    }
    for stale in ["standby.signal", "recovery.signal", "recovery.done"] {
        remove_if_present(&datadir.join(stale))?;
    }
    if version.uses_signal_files() {
        let old_conf = datadir.join("recovery.conf");
        if old_conf.exists() {
            // PostgreSQL 12+ refuses to start while a recovery.conf exists.
            let kept = datadir.join("recovery.conf.walfetch-disabled");
            fs::rename(&old_conf, &kept).map_err(|e| Error::local_io(old_conf.display(), &e))?;
            written.push(format!(
                "{}: renamed from recovery.conf (not allowed in PostgreSQL {version})",
                kept.display()
            ));
        }
        auto.push_str(&format!("restore_command = {}\n", conf_string(restore_command)));
        for (k, v) in target.map(RecoveryTarget::settings).unwrap_or_default() {
            auto.push_str(&format!("{k} = {}\n", conf_string(&v)));
        }
        let signal = match mode {
            RecoveryMode::Standby => "standby.signal",
            RecoveryMode::Recovery => "recovery.signal",
        };
        let path = datadir.join(signal);
        write_atomically(&path, |_| Ok(()), false)?;
        written.push(format!("{}: empty signal file", path.display()));
    } else {
        written.push(write_recovery_conf(datadir, mode, restore_command, target)?);
    }
    write_atomically(&auto_conf, |f| std::io::Write::write_all(f, auto.as_bytes()), false)?;
    let targets = target.map(|t| t.settings().iter().map(|(k, v)| format!(", {k} = '{v}'")).collect::<String>());
    written.push(format!(
        "{}: archive_mode = 'off'{}{}{}",
        auto_conf.display(),
        if mode == RecoveryMode::Standby {
            format!(", wal_retrieve_retry_interval = '{STANDBY_RETRY_INTERVAL}'")
        } else {
            String::new()
        },
        if version.uses_signal_files() { ", restore_command" } else { "" },
        if version.uses_signal_files() {
            targets.unwrap_or_default()
        } else {
            String::new()
        }
    ));
    Ok(written)
}

/// Writes `recovery.conf` (PostgreSQL before 12): the restore_command, the target
/// (timeline `latest` unless the target names one), standby mode; the line that says so.
fn write_recovery_conf(datadir: &Path, mode: RecoveryMode, restore_command: &str, target: Option<&RecoveryTarget>) -> Result<String> {
    let path = datadir.join("recovery.conf");
    let mut conf = format!("{MARKER}\nrestore_command = {}\n", conf_string(restore_command));
    let settings = target.map(RecoveryTarget::settings).unwrap_or_default();
    if !settings.iter().any(|(k, _)| *k == "recovery_target_timeline") {
        conf.push_str("recovery_target_timeline = 'latest'\n");
    }
    for (k, v) in settings {
        conf.push_str(&format!("{k} = {}\n", conf_string(&v)));
    }
    if mode == RecoveryMode::Standby {
        conf.push_str("standby_mode = 'on'\n");
    }
    write_atomically(&path, |f| std::io::Write::write_all(f, conf.as_bytes()), false)?;
    let standby = if mode == RecoveryMode::Standby {
        ", standby_mode = 'on'"
    } else {
        ""
    };
    Ok(format!("{}: restore_command{standby}", path.display()))
}

/// The restore_command that calls this same binary with `flags` (the storage settings
/// as flags: never credentials).
pub fn restore_command(flags: &[String]) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::local_io("the walfetch binary", &e))?;
    let mut words = vec![shell_quote(&exe.to_string_lossy())];
    words.extend(flags.iter().map(|f| shell_quote(f)));
    words.push("wal-fetch".into());
    words.push("\"%f\"".into());
    words.push("\"%p\"".into());
    Ok(words.join(" "))
}

/// Quotes a word for `sh` only when it needs it.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::local_io(path.display(), &e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const CMD: &str = "/usr/bin/walfetch --prefix s3://b/it's wal-fetch \"%f\" \"%p\"";

    fn fixture(version: &str) -> tempfile::TempDir {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/datadirs")
            .join(format!("pg{version}"));
        let dir = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(&src).unwrap_or_else(|_| panic!("fixture {}", src.display())) {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        dir
    }

    fn read(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap_or_default()
    }

    #[test]
    fn signal_files_from_12_to_18() {
        for v in ["12", "13", "14", "15", "16", "17", "18"] {
            let dir = fixture(v);
            write_recovery_config(dir.path(), RecoveryMode::Standby, CMD, None).unwrap();
            let auto = read(dir.path(), "postgresql.auto.conf");
            assert!(dir.path().join("standby.signal").exists(), "{v}");
            assert!(!dir.path().join("recovery.signal").exists(), "{v}");
            assert!(!dir.path().join("recovery.conf").exists(), "{v}");
            assert!(
                auto.contains("restore_command = '/usr/bin/walfetch --prefix s3://b/it''s wal-fetch \"%f\" \"%p\"'"),
                "{v}: {auto}"
            );
            assert!(auto.contains("archive_mode = 'off'"), "{v}");
            assert!(auto.contains("wal_retrieve_retry_interval = '1s'"), "{v}");
            assert_eq!(auto.matches("restore_command").count(), 1, "{v}: old restore_command kept: {auto}");
            assert!(auto.contains("work_mem = '64MB'"), "{v}: unrelated settings must stay");

            write_recovery_config(dir.path(), RecoveryMode::Recovery, CMD, None).unwrap();
            assert!(dir.path().join("recovery.signal").exists(), "{v}");
            assert!(!dir.path().join("standby.signal").exists(), "{v}");
            assert_eq!(read(dir.path(), "postgresql.auto.conf").matches(MARKER).count(), 1, "{v}");
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/walfetch"), "/usr/bin/walfetch");
        assert_eq!(shell_quote("s3://b/p"), "s3://b/p");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn recovery_conf_before_12() {
        for v in ["9.6", "10", "11"] {
            let dir = fixture(v);
            write_recovery_config(dir.path(), RecoveryMode::Standby, CMD, None).unwrap();
            let conf = read(dir.path(), "recovery.conf");
            assert!(conf.contains("standby_mode = 'on'"), "{v}");
            assert!(conf.contains("restore_command = '/usr/bin/walfetch"), "{v}");
            assert!(conf.contains("recovery_target_timeline = 'latest'"), "{v}");
            assert!(!dir.path().join("standby.signal").exists(), "{v}");
            let auto = read(dir.path(), "postgresql.auto.conf");
            assert!(!auto.contains("restore_command"), "{v}: restore_command is not a GUC before 12");
            assert!(auto.contains("archive_mode = 'off'"), "{v}");

            write_recovery_config(dir.path(), RecoveryMode::Recovery, CMD, None).unwrap();
            assert!(!read(dir.path(), "recovery.conf").contains("standby_mode"), "{v}");
        }
    }

    #[test]
    fn a_leftover_recovery_conf_is_moved_aside_from_12() {
        let dir = fixture("12");
        fs::write(dir.path().join("recovery.conf"), "standby_mode = on\n").unwrap();
        let written = write_recovery_config(dir.path(), RecoveryMode::Standby, CMD, None).unwrap();
        assert!(!dir.path().join("recovery.conf").exists());
        assert!(dir.path().join("recovery.conf.walfetch-disabled").exists());
        assert!(written.iter().any(|w| w.contains("renamed")));
    }
}
