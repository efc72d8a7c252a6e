//! The PostgreSQL server binaries that will run a restored directory: `--pg-bin DIR`
//! (`WALFETCH_PG_BIN`), else `postgres` on `PATH` when it is of the backup's major, else
//! the backup's major where distributions install it beside others
//! (`/usr/lib/postgresql/<major>/bin` on Debian and Ubuntu, `/usr/pgsql-<major>/bin` on
//! RHEL and its kin), which are rarely on `PATH`. A backup can only be started by a server
//! of its own major version, so a restore is refused before its first byte when none of
//! these is of it; the refusal lists where walfetch looked.

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

/// Where distributions install the server binaries of `major` beside other majors.
pub fn distribution_dirs(major: u64) -> Vec<PathBuf> {
    vec![
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        PathBuf::from(format!("/usr/pgsql-{major}/bin")),
    ]
}

/// The server binaries to run a backup taken by PostgreSQL `major`: those in `dir` when
/// given (checked by [`check`]), else `postgres` on `PATH` if it is of `major`, else the
/// first of [`distribution_dirs`] that has them. With none of `major` anywhere, an error
/// naming every place looked at (`Ok(None)` when there is no server at all: nothing to
/// compare with).
pub fn find_for(dir: Option<&Path>, backup: &str, major: u64) -> Result<Option<Server>> {
    if dir.is_some() {
        return find(dir);
    }
    let on_path = find(None)?;
    if on_path.as_ref().is_some_and(|s| s.major == major) {
        return Ok(on_path);
    }
    let mut looked = vec![match &on_path {
        Some(s) => format!("PATH ({}: PostgreSQL {})", s.postgres.display(), s.major),
        None => "PATH (no postgres)".to_string(),
    }];
    for d in distribution_dirs(major) {
        if d.join("postgres").is_file() {
            if let Some(found) = find(Some(&d))?.filter(|s| s.major == major) {
                tracing::info!(postgres = %found.postgres.display(), "the server binaries of the backup's major, found where the distribution installs them");
                return Ok(Some(found));
            }
        }
        looked.push(d.display().to_string());
    }
    let elsewhere = installed_majors();
    if on_path.is_none() && elsewhere.is_empty() {
        return Ok(None);
    }
    if !elsewhere.is_empty() {
        looked.push(format!(
            "installed there: PostgreSQL {}",
            elsewhere.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{backup} was taken by PostgreSQL {major}, and no server binaries of that major were found (looked in {}): a data directory only starts under its own major version; install PostgreSQL {major} and point --pg-bin (WALFETCH_PG_BIN) at its bin directory",
            looked.join(", ")
        ),
    ))
}

/// The majors whose server binaries are installed where distributions put them.
fn installed_majors() -> Vec<u64> {
    let mut majors: Vec<u64> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        majors.extend(entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        majors.extend(entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("pgsql-")?.parse::<u64>().ok()));
    }
    majors.retain(|m| distribution_dirs(*m).iter().any(|d| d.join("postgres").is_file()));
    majors.sort_unstable();
    majors.dedup();
    majors
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
