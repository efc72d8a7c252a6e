//! WAL on its way from the archive to a standby: fetching and checking one file
//! ([`fetch`]), the hand-over of `wal-fetch %f %p` ([`handover`]), the prefetch fetcher
//! ([`prefetch`]) and its process ([`fetcher`]), and the spool and state files of one
//! data directory ([`spool`]). The WAL facts these rely on are in [`crate::wal`].

use std::path::{Path, PathBuf};

use crate::config::absolute;
use crate::pg::conf::{recovery_state, RecoveryState};
use crate::pg::controldata;
use crate::pg::datadir::{looks_like_datadir, pg_major, PgMajor};

pub mod fetch;
pub mod fetcher;
pub mod handover;
pub mod prefetch;
pub mod spool;

use spool::Spool;

/// The data directory a `wal-fetch` call serves, found from `%p`.
#[derive(Debug, Clone)]
pub struct Standby {
    /// The data directory.
    pub datadir: PathBuf,
    /// Its `PG_VERSION`.
    pub version: Option<PgMajor>,
    /// Its spool and state files.
    pub spool: Spool,
}

impl Standby {
    /// The data directory of `%p`: PostgreSQL runs restore_command in the data directory
    /// with `%p` = `pg_wal/RECOVERYXLOG`. `None` when `%p` is not in the `pg_wal` (or
    /// `pg_xlog`) directory of a data directory: then there is no spool, no fetcher and
    /// no state to keep, and nothing is created around `%p`. The path is taken as given,
    /// never resolved: `pg_wal` is often a symlink to a WAL disk.
    pub fn of_destination(destination: &Path, prefetch_dir: Option<&Path>) -> Option<Standby> {
        let wal_dir = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = wal_dir.file_name().and_then(|n| n.to_str())?;
        if !matches!(name, "pg_wal" | "pg_xlog") {
            return None;
        }
        let datadir = absolute(wal_dir.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")));
        let datadir = datadir.components().collect::<PathBuf>();
        if !looks_like_datadir(&datadir) {
            return None;
        }
        Some(Standby {
            spool: Spool::for_wal_dir(&datadir.join(name), prefetch_dir),
            version: pg_major(&datadir).ok(),
            datadir,
        })
    }

    /// How the server in this data directory recovers.
    pub fn recovery_state(&self) -> RecoveryState {
        recovery_state(&self.datadir, self.version)
    }

    /// The cluster's WAL segment size, from `global/pg_control`.
    pub fn segment_size(&self) -> Option<u64> {
        controldata::read(&self.datadir, self.version?).ok().map(|c| c.segment_size)
    }
}
