//! What `pg_control` says: the system identifier, the replay position, the WAL segment
//! size and the settings a standby must match, read from `global/pg_control` itself
//! (its layout per `pg_control_version` is small and stable: 1300 for PostgreSQL 13
//! to 16, 1700 for 17, 1800 for 18), its CRC-32C checked, so `status`, `follow` and
//! segment-size detection work where `pg_controldata` is not on `PATH` (RHEL's
//! `/usr/pgsql-NN/bin`, Homebrew, a custom build). An unknown layout (a newer major)
//! falls back to `pg_controldata` when it is installed.

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
    /// The primary's settings a standby must at least match, as PostgreSQL names them
    /// (`max_connections`, ...), when known.
    pub settings: Vec<(&'static str, u64)>,
}

/// Bytes of `pg_control` that hold the structure (`PG_CONTROL_MAX_SAFE_SIZE`).
const READ_BYTES: usize = 512;

/// The cluster states, by their number in `pg_control` (as `pg_controldata` prints them).
const STATES: [&str; 7] = [
    "starting up",
    "shut down",
    "shut down in recovery",
    "shutting down",
    "in crash recovery",
    "in archive recovery",
    "in production",
];

/// The settings a standby must match, and their offsets (the same in 13 to 18).
const SETTINGS: [(&str, usize); 5] = [
    ("max_connections", 180),
    ("max_worker_processes", 184),
    ("max_wal_senders", 188),
    ("max_prepared_transactions", 192),
    ("max_locks_per_transaction", 196),
];

/// Decodes a `pg_control` file's bytes; `what` names it in errors. `None` for a layout
/// this version does not know (another `pg_control_version`).
pub fn decode(bytes: &[u8], what: &str) -> Result<Option<ControlData>> {
    let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("{what}: {why}"));
    if bytes.len() < 296 {
        return Err(bad(format!("{} bytes, too short for pg_control", bytes.len())));
    }
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let crc_at = match u32_at(8) {
        1300 | 1700 => 288,
        1800 => 292,
        v if v.swap_bytes() == 1300 || v.swap_bytes() == 1700 || v.swap_bytes() == 1800 => {
            return Err(bad("written on a big-endian machine: it cannot be used here".into()));
        }
        _ => return Ok(None),
    };
    let crc = crc32c::crc32c(&bytes[..crc_at]);
    if crc != u32_at(crc_at) {
        return Err(bad(format!(
            "CRC mismatch (stored {:08x}, computed {crc:08x}): the file is damaged",
            u32_at(crc_at)
        )));
    }
    let state = STATES
        .get(u32_at(16) as usize)
        .map_or_else(|| format!("unknown state {}", u32_at(16)), |s| s.to_string());
    Ok(Some(ControlData {
        system_identifier: u64_at(0),
        state,
        redo: Lsn(u64_at(40)),
        timeline: u32_at(48),
        min_recovery: Lsn(u64_at(136)),
        min_recovery_timeline: u32_at(144),
        segment_size: u64::from(u32_at(228)),
        settings: SETTINGS.iter().map(|(name, at)| (*name, u64::from(u32_at(*at)))).collect(),
    }))
}

/// Reads the `pg_control` file at `path` (its first 512 bytes).
pub fn read_file(path: &Path) -> Result<Option<ControlData>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::local_io(path.display(), &e))?;
    let mut bytes = vec![0u8; READ_BYTES];
    let n = crate::fsutil::read_up_to(&mut f, &mut bytes).map_err(|e| Error::local_io(path.display(), &e))?;
    bytes.truncate(n);
    decode(&bytes, &path.display().to_string())
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
                "{}/global/pg_control has a layout this walfetch does not know, and pg_controldata for PostgreSQL {version} is not installed to read it",
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
    let settings = [
        ("max_connections", "max_connections setting:"),
        ("max_worker_processes", "max_worker_processes setting:"),
        ("max_wal_senders", "max_wal_senders setting:"),
        ("max_prepared_transactions", "max_prepared_xacts setting:"),
        ("max_locks_per_transaction", "max_locks_per_xact setting:"),
    ];
    Some(ControlData {
        system_identifier: field(text, "Database system identifier:")?.parse().ok()?,
        state: field(text, "Database cluster state:")?.to_string(),
        redo: Lsn::parse(field(text, "Latest checkpoint's REDO location:")?)?,
        timeline: field(text, "Latest checkpoint's TimeLineID:")?.parse().ok()?,
        min_recovery: Lsn::parse(field(text, "Minimum recovery ending location:")?)?,
        min_recovery_timeline: field(text, "Min recovery ending loc's timeline:")?.parse().ok()?,
        segment_size: field(text, "Bytes per WAL segment:")?.parse().ok()?,
        settings: settings
            .iter()
            .filter_map(|(name, label)| Some((*name, field(text, label)?.parse().ok()?)))
            .collect(),
    })
}

/// Reads the control data of `datadir` (of PostgreSQL `version`): from the file, else
/// (a layout this version does not know) through `pg_controldata`.
pub fn read(datadir: &Path, version: PgMajor) -> Result<ControlData> {
    if let Some(control) = read_file(&datadir.join("global/pg_control"))? {
        return Ok(control);
    }
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

    /// A pg_control image of layout `version` (1300, 1700, 1800).
    fn image(version: u32, state: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&7712042867296447195u64.to_le_bytes());
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[16..20].copy_from_slice(&state.to_le_bytes());
        b[40..48].copy_from_slice(&0x200_0028u64.to_le_bytes());
        b[48..52].copy_from_slice(&3u32.to_le_bytes());
        b[136..144].copy_from_slice(&0x300_0100u64.to_le_bytes());
        b[144..148].copy_from_slice(&2u32.to_le_bytes());
        b[180..184].copy_from_slice(&100u32.to_le_bytes());
        b[228..232].copy_from_slice(&(16u32 << 20).to_le_bytes());
        let at = if version == 1800 { 292 } else { 288 };
        let crc = crc32c::crc32c(&b[..at]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn pg_control_is_read_for_every_layout_and_checked() {
        for version in [1300, 1700, 1800] {
            let c = decode(&image(version, 5), "pg_control").unwrap().unwrap();
            assert_eq!(c.system_identifier, 7712042867296447195);
            assert_eq!(c.state, "in archive recovery");
            assert_eq!((c.redo, c.timeline), (Lsn(0x200_0028), 3));
            assert_eq!((c.min_recovery, c.min_recovery_timeline), (Lsn(0x300_0100), 2));
            assert_eq!(c.segment_size, 16 << 20);
            assert_eq!(c.settings[0], ("max_connections", 100));
        }
        let mut damaged = image(1300, 1);
        damaged[50] ^= 1;
        let e = decode(&damaged, "pg_control").unwrap_err();
        assert!(e.to_string().contains("CRC mismatch"), "{e}");
        assert!(decode(&image(1900, 1), "pg_control").unwrap().is_none(), "an unknown layout");
        assert!(decode(&[0u8; 100], "pg_control").is_err());
        let mut big = image(1300, 1);
        big[8..12].copy_from_slice(&1300u32.to_be_bytes());
        assert!(decode(&big, "pg_control").unwrap_err().to_string().contains("big-endian"));
    }

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
