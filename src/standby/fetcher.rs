//! The fetcher's process: started on demand by `wal-fetch` in its own session, replaced
//! when its settings are stale (a digest of them, [`fingerprint`]), and its log file kept
//! bounded ([`LogFile`]). What it does is [`super::prefetch`].

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::spool::Spool;
use super::Standby;
use crate::config::{setting_vars, StorageSettings};
use crate::error::{Error, Result};

/// A repeated failure is logged at most this often (with how often it happened since).
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The fetcher's log file is rotated (to `.1`, replacing the one before) past this size.
pub const LOG_LIMIT: u64 = 4 << 20;

/// Settings ([`crate::config::SETTING_PREFIXES`]) that do not change what a fetcher
/// fetches or how; the values of the others go into [`fingerprint`] as a digest only.
const NOT_FETCHING: [&str; 5] = [
    "WALFETCH_LOG_LEVEL",
    "WALG_LOG_LEVEL",
    "WALFETCH_RECOVERY_MODE",
    "WALFETCH_FOLLOW_IDLE",
    "WALFETCH_PREFETCH",
];

/// A digest of everything a fetcher's behaviour depends on: the storage settings, the
/// walfetch binary (path and modification time) and the settings in the environment.
/// Two processes with the same digest would fetch the same objects the same way.
pub fn fingerprint(settings: &StorageSettings) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{settings:?}\n"));
    if let Ok(exe) = std::env::current_exe() {
        let modified = fs::metadata(&exe).and_then(|m| m.modified()).ok();
        hasher.update(format!("{} {modified:?}\n", exe.display()));
    }
    for (k, v) in setting_vars().into_iter().filter(|(k, _)| !NOT_FETCHING.contains(&k.as_str())) {
        hasher.update(format!("{k}={v}\n"));
    }
    hasher.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Stops the fetcher when it was started with other settings than `settings` (and this
/// process's environment), and drops what it prefetched; the next direct fetch starts a
/// fresh one. A service (`--foreground`) is managed by its service manager and never
/// stopped here: what it prefetched still passes every check of the hand-over.
pub fn retire_if_stale(standby: &Standby, settings: &StorageSettings) {
    let spool = &standby.spool;
    let Some(info) = spool.fetcher() else { return };
    if info.foreground || info.fingerprint == fingerprint(settings) {
        return;
    }
    if let Some(alive) = spool.fetcher_alive() {
        tracing::info!(pid = alive.pid, "the running fetcher has other settings; replacing it");
        // SAFETY: kill sends a signal to a process verified to be this spool's fetcher.
        unsafe {
            libc::kill(alive.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while spool.fetcher_alive().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    spool.clear_ready();
}

/// Starts a fetcher for `standby` unless one runs.
pub fn ensure_running(standby: &Standby, settings: &StorageSettings) {
    if !standby.spool.fetcher_running() {
        spawn(&standby.datadir, &standby.spool, settings);
    }
}

/// Starts `walfetch follow` for `datadir` in its own session, detached from PostgreSQL,
/// with the same storage settings; it logs to the spool's log file.
fn spawn(datadir: &Path, spool: &Spool, settings: &StorageSettings) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    if spool.create().is_err() {
        return;
    }
    let mut cmd = std::process::Command::new(exe);
    cmd.args(settings.to_flags())
        .arg("follow")
        .arg(datadir)
        .arg("--log-file")
        .arg(spool.log_path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => tracing::debug!(pid = child.id(), "started the prefetch fetcher"),
        Err(e) => {
            tracing::warn!(cause = %e, "could not start the prefetch fetcher; fetching segments one by one")
        }
    }
}

/// Sends standard error to `path` (appending), rotating it when it has grown past
/// [`LOG_LIMIT`].
pub struct LogFile {
    path: PathBuf,
    checked: Instant,
}

impl LogFile {
    /// Opens `path` as this process's standard error.
    pub fn open(path: PathBuf) -> Result<LogFile> {
        let log = LogFile {
            path,
            checked: Instant::now(),
        };
        log.reopen()?;
        Ok(log)
    }

    fn reopen(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::local_io(self.path.display(), &e))?;
        // SAFETY: dup2 onto standard error of a descriptor we own; the old one is closed by dup2.
        if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
            return Err(Error::local_io(self.path.display(), &std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Rotates the log if it has grown past the limit (looked at once a minute).
    pub fn maybe_rotate(&mut self) {
        if self.checked.elapsed() < REPEAT_LOG_EVERY {
            return;
        }
        self.checked = Instant::now();
        if fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) <= LOG_LIMIT {
            return;
        }
        let old = self.path.with_extension("log.1");
        if fs::rename(&self.path, &old).is_ok() {
            let _ = self.reopen();
            tracing::info!(previous = %old.display(), "log rotated");
        }
    }
}
