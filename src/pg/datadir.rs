//! Reading a data directory: `PG_VERSION`, the system identifier in
//! `global/pg_control`, and whether a server is running in it.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// A PostgreSQL major version as written in `PG_VERSION` (`9.6`, `12`, `18`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgMajor {
    /// `9` for 9.6, `12` for 12.
    pub major: u32,
    /// `6` for 9.6, `0` from 10 on.
    pub minor: u32,
}

impl PgMajor {
    /// Parses the contents of `PG_VERSION`.
    pub fn parse(text: &str) -> Option<PgMajor> {
        let text = text.trim();
        let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
        Some(PgMajor {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// PostgreSQL 12 replaced `recovery.conf` with signal files and GUCs.
    pub fn uses_signal_files(self) -> bool {
        self.major >= 12
    }
}

impl fmt::Display for PgMajor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.major < 10 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}", self.major)
        }
    }
}

/// Reads `PG_VERSION` in `datadir`.
pub fn pg_major(datadir: &Path) -> Result<PgMajor> {
    let path = datadir.join("PG_VERSION");
    let text = fs::read_to_string(&path).map_err(|e| Error::local_io(path.display(), &e))?;
    PgMajor::parse(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{}: not a PostgreSQL version: {:?}", path.display(), text.trim()),
        )
    })
}

/// The system identifier: the first 8 bytes of `global/pg_control` in every version.
pub fn system_identifier(datadir: &Path) -> Result<Option<u64>> {
    let path = datadir.join("global/pg_control");
    let mut buf = [0u8; 8];
    match fs::File::open(&path).and_then(|mut f| f.read_exact(&mut buf)) {
        Ok(()) => Ok(Some(u64::from_le_bytes(buf))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::local_io(path.display(), &e)),
    }
}

/// The WAL directory of `datadir`: `pg_xlog` before PostgreSQL 10, `pg_wal` since (by
/// `PG_VERSION`, else by which of the two exists).
pub fn wal_dir(datadir: &Path) -> std::path::PathBuf {
    let old = match pg_major(datadir) {
        Ok(v) => v.major < 10,
        Err(_) => datadir.join("pg_xlog").is_dir() && !datadir.join("pg_wal").exists(),
    };
    datadir.join(if old { "pg_xlog" } else { "pg_wal" })
}

/// Whether `dir` looks like a PostgreSQL data directory (what a restore_command runs in).
pub fn looks_like_datadir(dir: &Path) -> bool {
    [
        "PG_VERSION",
        "global/pg_control",
        "standby.signal",
        "recovery.signal",
        "recovery.conf",
    ]
    .iter()
    .any(|f| dir.join(f).exists())
}

/// Whether `postmaster.pid` names a live process (a server is using the directory).
pub fn server_running(datadir: &Path) -> bool {
    fs::read_to_string(datadir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .is_some_and(crate::fsutil::process_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg_version_files() {
        assert_eq!(PgMajor::parse("9.6\n"), Some(PgMajor { major: 9, minor: 6 }));
        assert_eq!(PgMajor::parse("18\n"), Some(PgMajor { major: 18, minor: 0 }));
        assert_eq!(PgMajor::parse("x"), None);
        assert!(!PgMajor::parse("11").unwrap().uses_signal_files());
        assert!(PgMajor::parse("12").unwrap().uses_signal_files());
        assert_eq!(PgMajor::parse("9.6").unwrap().to_string(), "9.6");
    }
}
