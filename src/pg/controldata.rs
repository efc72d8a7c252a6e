//! What `pg_control` says, read through `pg_controldata` (which ships with every server
//! and knows every version's layout): the system identifier, the replay position and
//! the WAL segment size of a data directory, without a running server.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::datadir::PgMajor;
use crate::error::{Error, ErrorKind, Result};
use crate::wal::name::Lsn;

/// The fields walfetch uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// Database system identifier.
    pub system_identifier: u64,
    /// Database cluster state ("in archive recovery", "shut down in recovery", ...).
    pub state: String,
    /// Latest checkpoint's REDO location.
    pub redo: Lsn,
    /// Latest checkpoint's timeline.
    pub timeline: u32,
    /// Minimum recovery ending location (0/0 when not in recovery).
    pub min_recovery: Lsn,
    /// Its timeline.
    pub min_recovery_timeline: u32,
    /// Bytes per WAL segment.
    pub segment_size: u64,
}

/// The `pg_controldata` binary for `version`: the versioned Debian path, else `PATH`.
pub fn tool(version: PgMajor) -> Option<PathBuf> {
    let versioned = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/pg_controldata"));
    if versioned.exists() {
        return Some(versioned);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("pg_controldata")).find(|p| p.exists()))
}

/// Runs `pg_controldata` on `datadir` and returns its raw output.
pub fn run(datadir: &Path, version: PgMajor) -> Result<String> {
    let tool = tool(version).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "pg_controldata for PostgreSQL {version} is not installed; it is needed to read {}/global/pg_control",
                datadir.display()
            ),
        )
    })?;
    let out = Command::new(&tool)
        .arg(datadir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::local_io(tool.display(), &e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::LocalIo,
            format!(
                "{} {}: {}",
                tool.display(),
                datadir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value printed after `label`.
pub fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(label)).map(str::trim)
}

/// Parses `pg_controldata` output.
pub fn parse(text: &str) -> Option<ControlData> {
    Some(ControlData {
        system_identifier: field(text, "Database system identifier:")?.parse().ok()?,
        state: field(text, "Database cluster state:")?.to_string(),
        redo: Lsn::parse(field(text, "Latest checkpoint's REDO location:")?)?,
        timeline: field(text, "Latest checkpoint's TimeLineID:")?.parse().ok()?,
        min_recovery: Lsn::parse(field(text, "Minimum recovery ending location:")?)?,
        min_recovery_timeline: field(text, "Min recovery ending loc's timeline:")?.parse().ok()?,
        segment_size: field(text, "Bytes per WAL segment:")?.parse().ok()?,
    })
}

/// Reads and parses the control data of `datadir`.
pub fn read(datadir: &Path, version: PgMajor) -> Result<ControlData> {
    let text = run(datadir, version)?;
    parse(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{}: pg_controldata output not understood", datadir.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg_controldata_output() {
        let text = "pg_control version number:            1300\nDatabase system identifier:           7712042867296447195\nDatabase cluster state:               in archive recovery\nLatest checkpoint's REDO location:    0/2000028\nLatest checkpoint's TimeLineID:       1\nMinimum recovery ending location:     0/3000100\nMin recovery ending loc's timeline:   2\nBytes per WAL segment:                16777216\nmax_connections setting:              100\n";
        let c = parse(text).unwrap();
        assert_eq!(c.system_identifier, 7712042867296447195);
        assert_eq!(c.redo, Lsn(0x200_0028));
        assert_eq!((c.min_recovery, c.min_recovery_timeline), (Lsn(0x300_0100), 2));
        assert_eq!(c.segment_size, 16 << 20);
        assert_eq!(field(text, "max_connections setting:"), Some("100"));
        assert!(parse("garbage").is_none());
    }
}
