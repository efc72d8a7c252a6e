//! The PostgreSQL server binaries that will run a restored directory: `--pg-bin DIR`
//! (`WALFETCH_PG_BIN`), else `postgres` on `PATH`. A backup can only be started by a
//! server of its own major version, so a restore is refused before its first byte when
//! the binaries found are of another.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, ErrorKind, Result};

/// Server binaries found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The `postgres` binary.
    pub postgres: PathBuf,
    /// Its major version (13, 14, …).
    pub major: u64,
    /// Its version line (`postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`).
    pub version: String,
}

/// The server binaries in `dir` (an error when it has none), else `postgres` on `PATH`
/// (`None` when there is none: nothing to compare with).
pub fn find(dir: Option<&Path>) -> Result<Option<Server>> {
    let postgres = match dir {
        Some(d) => {
            let p = d.join("postgres");
            if !p.is_file() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("--pg-bin {}: no postgres binary there", d.display()),
                ));
            }
            p
        }
        None => match std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("postgres")).find(|p| p.is_file()))
        {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let out = Command::new(&postgres).arg("--version").output().map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{}: cannot run it to learn its version: {e}", postgres.display()),
        )
    })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_major(&version).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("{}: cannot tell its version from {version:?}", postgres.display()),
        )
    })?;
    Ok(Some(Server { postgres, major, version }))
}

/// The major version in `postgres --version` output.
fn parse_major(line: &str) -> Option<u64> {
    let rest = line.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The major version of a `server_version_num` (`150008` is 15; before 10, `90624`
/// gives 9, which no supported server matches either).
pub fn major_of(version_num: u64) -> u64 {
    version_num / 10_000
}

/// Refuses `backup` (taken by `backup_version`, a `server_version_num`) when `server`
/// is of another major.
pub fn check(server: &Server, backup: &str, backup_version: u64) -> Result<()> {
    let wanted = major_of(backup_version);
    if server.major == wanted {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{backup} was taken by PostgreSQL {wanted}, but the server binaries found ({}: {}) are PostgreSQL {}: a data directory only starts under its own major version; install PostgreSQL {wanted} and point --pg-bin (WALFETCH_PG_BIN) at its bin directory",
            server.postgres.display(),
            server.version,
            server.major
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_compared_by_major() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_major("something else"), None);
        let server = Server {
            postgres: "/usr/bin/postgres".into(),
            major: 16,
            version: "postgres (PostgreSQL) 16.4".into(),
        };
        assert!(check(&server, "base_1", 160004).is_ok());
        let e = check(&server, "base_1", 150008).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string().contains("taken by PostgreSQL 15") && e.to_string().contains("are PostgreSQL 16"),
            "{e}"
        );
    }
}
