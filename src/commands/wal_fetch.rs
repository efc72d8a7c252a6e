//! `walfetch wal-fetch %f %p`: PostgreSQL's restore_command.
//!
//! Exit codes are what make this safe. PostgreSQL treats exit codes 1–125 as "not
//! available" (a standby retries; archive recovery ends and promotes), and 126 or more
//! as fatal. So:
//! - 0: the file was restored;
//! - 1: the archive definitely does not have it (a 404 under every codec);
//! - any other failure in standby mode: its kind's code (3–11), below 126, so the
//!   standby logs it and retries;
//! - any other failure in archive recovery (no `standby.signal`): 128 + its kind's
//!   code, so PostgreSQL stops instead of promoting early at the wrong point.
//!
//! The file is decoded into a hidden temporary in `%p`'s directory and renamed into
//! place only after it has been checked: a WAL segment must be exactly one segment long,
//! with a first page that matches its name and this cluster, every page in sequence, and
//! every record that lies within it matching its CRC-32C ([`crate::wal::records`]).
//! PostgreSQL fsyncs restored files itself, so no fsync is spent here.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::codec::{Codec, ALL};
use crate::config::StorageSettings;
use crate::constants::COPY_BUFFER_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, temp_path_for, RemoveOnDrop};
use crate::layout::{wal_key, WAL};
use crate::pg::datadir::system_identifier;
use crate::spool::Spool;
use crate::storage::{ObjectReader, Storage};
use crate::wal::name::{Segment, WalFile};
use crate::wal::records::{check_segment, OpenRecord};
use crate::wal::segment::SegmentCheck;

/// How a failure is reported to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Decide from the data directory: `standby.signal` or `standby_mode = on` means standby.
    Auto,
    /// Failures exit below 126: PostgreSQL retries.
    Standby,
    /// Failures exit at 128 or above: PostgreSQL stops recovery.
    Recovery,
}

/// Options of `wal-fetch`.
#[derive(Debug, Args)]
pub struct WalFetch {
    /// WAL file name PostgreSQL asks for (%f).
    pub wal_name: String,
    /// Where to put it (%p), relative to the data directory.
    pub destination: PathBuf,
    /// How failures are reported [env: WALFETCH_RECOVERY_MODE]
    #[arg(long, value_enum, default_value = "auto", env = "WALFETCH_RECOVERY_MODE")]
    pub mode: Mode,
}

impl WalFetch {
    /// The data directory: `%p` is `pg_wal/RECOVERYXLOG` relative to it.
    fn datadir(&self) -> PathBuf {
        let parent = self.destination.parent().unwrap_or(Path::new(""));
        let dir = match parent.file_name().and_then(|n| n.to_str()) {
            Some("pg_wal") | Some("pg_xlog") => parent.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => PathBuf::new(),
        };
        // `%p` is relative to the data directory, which is PostgreSQL's working directory.
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        dir.canonicalize().unwrap_or(dir)
    }

    /// Whether failures should let PostgreSQL retry (standby) or stop it (recovery).
    pub fn effective_mode(&self) -> Mode {
        if self.mode != Mode::Auto {
            return self.mode;
        }
        let dir = self.datadir();
        if dir.join("standby.signal").exists() {
            return Mode::Standby;
        }
        let conf = fs::read_to_string(dir.join("recovery.conf")).unwrap_or_default();
        let standby = conf.lines().any(|l| {
            let l = l
                .split('#')
                .next()
                .unwrap_or("")
                .replace(['\'', ' ', '\t'], "")
                .to_ascii_lowercase();
            matches!(
                l.as_str(),
                "standby_mode=on" | "standby_mode=true" | "standby_mode=yes" | "standby_mode=1"
            )
        });
        if standby {
            Mode::Standby
        } else {
            Mode::Recovery
        }
    }

    /// The exit code for an error, by mode (see the module doc).
    pub fn exit_code(&self, err: &Error) -> i32 {
        match (err.kind(), self.effective_mode()) {
            (ErrorKind::NotFound, _) => 1,
            (kind, Mode::Recovery) => 128 + kind.exit_code(),
            (kind, _) => kind.exit_code(),
        }
    }

    /// Fetches the file: from the prefetch spool when the fetcher has it ready (no
    /// storage access at all), else directly, making sure a fetcher runs for what follows.
    pub fn run(&self, open: &dyn Fn() -> Result<(StorageSettings, Arc<dyn Storage>)>) -> Result<()> {
        let started = Instant::now();
        let name = self.wal_name.as_str();
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::new(ErrorKind::Config, format!("'{name}' is not a WAL file name")));
        }
        let kind = WalFile::parse(name);
        let dest_dir = match self.destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let segment = match kind {
            Some(WalFile::Segment(seg)) if prefetch_enabled() => Some(seg),
            _ => None,
        };
        let spool = Spool::for_wal_dir(&dest_dir);
        if let Some(seg) = &segment {
            if let Some(why) = spool.refused(seg) {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{name} was refused by the fetcher: {why}; once the archive holds a good copy, delete {} to retry",
                        spool.refused_path(seg).display()
                    ),
                ));
            }
            spool.set_requested(seg);
            if self.take_from_spool(&spool, seg)? {
                // The fetcher's window moves past what was served, so it is not fetched again.
                let size = fs::metadata(&self.destination).map(|m| m.len()).unwrap_or(0);
                if let Some(next) = seg.next(size) {
                    spool.set_requested(&next);
                }
                tracing::info!(
                    file = name,
                    us = started.elapsed().as_micros() as u64,
                    "restored from the prefetch spool"
                );
                return Ok(());
            }
        }
        fsutil::remove_stale_temporaries(&dest_dir);
        let (settings, storage) = open()?;
        if let Some(seg) = &segment {
            // This call fetches `seg` itself: the fetcher starts with the segment after it.
            if let Some(next) = seg.next(self.segment_size_hint()) {
                spool.set_requested(&next);
            }
            if !spool.fetcher_running() {
                spawn_follower(&self.datadir(), &settings);
            }
        }
        let sysid = system_identifier(&self.datadir()).ok().flatten();
        let tmp = temp_path_for(&self.destination);
        let fetched = fetch_into(storage.as_ref(), name, &self.destination, &tmp, sysid);
        if let (Err(_), Some(seg)) = (&fetched, &segment) {
            // Not served: the fetcher watches this segment again (and reports it if it is a gap).
            spool.set_requested(seg);
        }
        let fetched = fetched?;
        tracing::info!(file = name, object = %fetched.url, bytes = fetched.bytes, ms = started.elapsed().as_millis() as u64, "restored");
        Ok(())
    }

    /// The cluster's WAL segment size, from `WALG_PG_WAL_SIZE` or `global/pg_control`.
    fn segment_size_hint(&self) -> u64 {
        expected_segment_size()
            .or_else(|| {
                let datadir = self.datadir();
                let major = crate::pg::datadir::pg_major(&datadir).ok()?;
                crate::pg::controldata::read(&datadir, major).ok().map(|c| c.segment_size)
            })
            .unwrap_or(crate::constants::DEFAULT_WAL_SEGMENT_SIZE)
    }

    /// Takes `seg` from the spool, waiting while a live fetcher is downloading it.
    fn take_from_spool(&self, spool: &Spool, seg: &Segment) -> Result<bool> {
        if spool.take(seg, &self.destination)? {
            return Ok(true);
        }
        let deadline = Instant::now() + SPOOL_WAIT;
        while spool.in_flight(seg) && spool.fetcher_running() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            if spool.take(seg, &self.destination)? {
                return Ok(true);
            }
        }
        spool.take(seg, &self.destination)
    }
}

/// How long a shim waits for a segment the fetcher is downloading before fetching it itself.
const SPOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Prefetch is on unless `WALFETCH_PREFETCH=off` or `WALG_DOWNLOAD_CONCURRENCY=1` (as in wal-g).
pub fn prefetch_enabled() -> bool {
    let off = std::env::var("WALFETCH_PREFETCH").is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false" | "no"));
    let one = std::env::var("WALG_DOWNLOAD_CONCURRENCY").is_ok_and(|v| v.trim() == "1");
    !off && !one
}

/// Starts `walfetch follow` for `datadir` in its own session, detached from PostgreSQL,
/// with the same storage settings; its log goes to the spool directory.
fn spawn_follower(datadir: &Path, settings: &StorageSettings) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let spool = Spool::for_wal_dir(&datadir.join("pg_wal"));
    if spool.create().is_err() {
        return;
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool.dir().join(".walfetch-follow.log"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(settings.to_flags())
        .arg("follow")
        .arg(datadir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    match log {
        Ok(f) => cmd.stderr(f),
        Err(_) => cmd.stderr(std::process::Stdio::null()),
    };
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

/// What [`fetch_into`] stored.
pub struct Fetched {
    /// The object read.
    pub url: String,
    /// Bytes written.
    pub bytes: u64,
    /// For a segment, its last record if that runs on into the next segment.
    pub open: Option<OpenRecord>,
}

/// Fetches WAL file `name` from storage into `dest` through the temporary `tmp`,
/// validating segments (size, first page, every page header and record CRC) before the
/// rename.
pub fn fetch_into(storage: &dyn Storage, name: &str, dest: &Path, tmp: &Path, sysid: Option<u64>) -> Result<Fetched> {
    let kind = WalFile::parse(name);
    let (key, codec, raw) = find(storage, name)?;
    let url = format!("{}/{key}", storage.describe());
    let mut decoded = codec.decoder(raw, &url);
    let mut check = kind
        .and_then(|k| k.segment())
        .map(|seg| SegmentCheck::new(&url, seg, expected_segment_size(), sysid));
    let guard = RemoveOnDrop(Some(tmp.to_path_buf()));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::local_io(tmp.display(), &e))?;
    let mut buf = vec![0u8; COPY_BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        // Fill the buffer before writing, so writes are large even when chunks are small.
        let mut filled = 0;
        while filled < buf.len() {
            match decoded.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decoded.classify(&e)),
            }
        }
        if filled == 0 {
            break;
        }
        if let Some(c) = check.as_mut() {
            c.feed(&buf[..filled]);
        }
        out.write_all(&buf[..filled]).map_err(|e| Error::local_io(tmp.display(), &e))?;
        total += filled as u64;
    }
    drop(out);
    let mut open = None;
    if let (Some(c), Some(seg)) = (&check, kind.and_then(|k| k.segment())) {
        c.finish()?;
        // Record CRCs over the written file (mapped, so memory stays flat for 1 GB segments).
        let file = fs::File::open(tmp).map_err(|e| Error::local_io(tmp.display(), &e))?;
        // SAFETY: the temporary is private to this call (unique name, not yet renamed into place).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::local_io(tmp.display(), &e))?;
        open = check_segment(&map, seg, &url)?.open;
    }
    fs::rename(tmp, dest).map_err(|e| Error::local_io(dest.display(), &e))?;
    guard.disarm();
    Ok(Fetched { url, bytes: total, open })
}

/// `WALG_PG_WAL_SIZE` (MiB), when set, pins the expected segment size.
fn expected_segment_size() -> Option<u64> {
    std::env::var("WALG_PG_WAL_SIZE")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|mb| mb << 20)
}

/// Finds `name` under any codec extension: the common `.lz4` first with one request,
/// then one listing for whatever else exists. `NotFound` only if no key matches.
pub fn find(storage: &dyn Storage, name: &str) -> Result<(String, Codec, ObjectReader)> {
    let first = wal_key(name, Codec::Lz4);
    match storage.open(&first) {
        Ok(r) => return Ok((first, Codec::Lz4, r)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let prefix = format!("{WAL}{name}");
    let listed = storage.list_all(&prefix, false)?;
    for codec in ALL {
        let key = wal_key(name, codec);
        if codec != Codec::Lz4 && listed.iter().any(|o| o.key == key) {
            // Gone between listing and reading is a real absence only if it stays gone.
            return Ok((key.clone(), codec, storage.open(&key)?));
        }
    }
    let unreadable: Vec<&str> = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| {
            k.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|ext| !ext.contains('.') && !matches!(ext, "partial" | "backup" | "history"))
        })
        .collect();
    if !unreadable.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{name}: the archive holds only {} ({}), in a compression walfetch cannot read",
                unreadable.join(", "),
                storage.describe()
            ),
        ));
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!("{name}: not in {}/{WAL}", storage.describe()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(mode: Mode, dest: &str) -> WalFetch {
        WalFetch {
            wal_name: "000000010000000000000001".into(),
            destination: dest.into(),
            mode,
        }
    }

    #[test]
    fn exit_codes_by_mode() {
        let nf = Error::new(ErrorKind::NotFound, "x");
        let net = Error::new(ErrorKind::Unreachable, "x");
        assert_eq!(fetch(Mode::Standby, "p").exit_code(&nf), 1);
        assert_eq!(fetch(Mode::Recovery, "p").exit_code(&nf), 1);
        assert_eq!(fetch(Mode::Standby, "p").exit_code(&net), 5);
        assert!(fetch(Mode::Recovery, "p").exit_code(&net) >= 126);
    }

    #[test]
    fn mode_follows_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pg_wal")).unwrap();
        let dest = dir.path().join("pg_wal/RECOVERYXLOG");
        let f = fetch(Mode::Auto, dest.to_str().unwrap());
        assert_eq!(f.effective_mode(), Mode::Recovery);
        fs::write(dir.path().join("recovery.conf"), "standby_mode = 'on'\n").unwrap();
        assert_eq!(f.effective_mode(), Mode::Standby);
        fs::write(dir.path().join("recovery.conf"), "# standby_mode = 'on'\n").unwrap();
        assert_eq!(f.effective_mode(), Mode::Recovery);
        fs::write(dir.path().join("standby.signal"), "").unwrap();
        assert_eq!(f.effective_mode(), Mode::Standby);
    }
}
