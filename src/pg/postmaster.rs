//! The server that runs a data directory, as it announced itself in
//! `PGDATA/postmaster.pid`: its process, the port, the socket directory and the listen
//! address it was started with. A command given a data directory connects where this
//! file says (libpq's `PGHOST`/`PGPORT` may override), so a second cluster on its own port
//! and socket directory needs no settings, as with `pg_ctl -D`.
//!
//! `postmaster.pid` holds one value per line (PostgreSQL 10 and later): the postmaster's
//! PID, the data directory, its start time (epoch seconds), the port, the first
//! `unix_socket_directories` entry (empty when none), the first `listen_addresses` entry
//! (empty when it listens on no TCP address), the shared memory key, and its status
//! (`starting`, `stopping`, `ready`, `standby`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::process_alive;

/// A running server, from its `postmaster.pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postmaster {
    /// The postmaster's process id.
    pub pid: u32,
    /// The data directory it wrote.
    pub data_dir: PathBuf,
    /// The port it listens on (TCP, and the number in its socket's name).
    pub port: u16,
    /// Its first socket directory, when it has one.
    pub socket_dir: Option<PathBuf>,
    /// Its first listen address, when it listens on TCP.
    pub listen_addr: Option<String>,
    /// What it said of itself last (`starting`, `ready`, `standby`, `stopping`).
    pub status: String,
}

impl Postmaster {
    /// Parses the text of a `postmaster.pid`; `None` when it is not one of PostgreSQL
    /// 10 or later (too few lines, no PID or port).
    pub fn parse(text: &str) -> Option<Postmaster> {
        let lines: Vec<&str> = text.lines().collect();
        let line = |i: usize| lines.get(i).map(|l| l.trim()).filter(|l| !l.is_empty());
        Some(Postmaster {
            pid: line(0)?.parse().ok()?,
            data_dir: PathBuf::from(line(1)?),
            port: line(3)?.parse().ok()?,
            socket_dir: line(4).map(PathBuf::from),
            listen_addr: line(5).map(str::to_string),
            status: line(7).unwrap_or("").to_string(),
        })
    }

    /// The host a client reaches it through: the socket directory, else its listen
    /// address (a wildcard means this machine's loopback).
    pub fn host(&self) -> Option<String> {
        if let Some(dir) = &self.socket_dir {
            return Some(dir.display().to_string());
        }
        self.listen_addr.as_deref().map(|a| match a {
            "*" | "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            other => other.to_string(),
        })
    }

    /// Whether it has not yet finished starting (a standby before consistency accepts
    /// no connection).
    pub fn starting(&self) -> bool {
        self.status == "starting"
    }
}

/// The server running `datadir`: an error of kind [`ErrorKind::NotRunning`] when none
/// is (no `postmaster.pid`, or its process is gone).
pub fn running(datadir: &Path) -> Result<Postmaster> {
    let path = datadir.join("postmaster.pid");
    let not_running = |why: &str| {
        Error::new(
            ErrorKind::NotRunning,
            format!(
                "no PostgreSQL server is running for {} ({why}); start it with pg_ctl -D {} start",
                datadir.display(),
                datadir.display()
            ),
        )
    };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !datadir.join("PG_VERSION").exists() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{}: not a PostgreSQL data directory (no PG_VERSION)", datadir.display()),
                ));
            }
            return Err(not_running("no postmaster.pid"));
        }
        Err(e) => return Err(Error::local_io(path.display(), &e)),
    };
    let pm = Postmaster::parse(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{}: not a postmaster.pid of PostgreSQL 10 or later (no port or socket lines)",
                path.display()
            ),
        )
    })?;
    if !process_alive(pm.pid) {
        return Err(not_running(&format!("postmaster.pid names process {}, which is gone", pm.pid)));
    }
    Ok(pm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_server_wrote() {
        let text = "4242\n/srv/standby\n1733600000\n5433\n/tmp/standby-socket\n127.0.0.1\n  5433001    163842\nstandby \n";
        let pm = Postmaster::parse(text).unwrap();
        assert_eq!(pm.pid, 4242);
        assert_eq!(pm.data_dir, PathBuf::from("/srv/standby"));
        assert_eq!(pm.port, 5433);
        assert_eq!(pm.host().as_deref(), Some("/tmp/standby-socket"));
        assert_eq!(pm.status, "standby");
        assert!(!pm.starting());
    }

    #[test]
    fn without_a_socket_the_listen_address_is_the_host() {
        let pm = Postmaster::parse("1\n/d\n0\n5432\n\n*\n0 0\nstarting\n").unwrap();
        assert_eq!(pm.socket_dir, None);
        assert_eq!(pm.host().as_deref(), Some("127.0.0.1"));
        assert!(pm.starting());
        let pm = Postmaster::parse("1\n/d\n0\n5432\n\n\n0 0\nready\n").unwrap();
        assert_eq!(pm.host(), None);
        assert_eq!(Postmaster::parse("1\n/d\n"), None, "a 9.x file has no port line");
    }

    #[test]
    fn a_directory_without_a_server_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        let e = running(dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotRunning);
        assert!(e.to_string().contains("no postmaster.pid"), "{e}");
        // A stale file from a crash names a process that is gone.
        fs::write(dir.path().join("postmaster.pid"), "999999999\n/d\n0\n5432\n/tmp\n\n0 0\nready\n").unwrap();
        let e = running(dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotRunning);
        assert!(e.to_string().contains("which is gone"), "{e}");
    }
}
