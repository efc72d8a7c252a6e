//! Reports for people and monitors about an archive and the standbys it feeds: `status`,
//! `wal-verify`, `wal-show`, `check`, and the backup table of `backup-list`.

pub mod backups;
pub mod check;
pub mod credentials;
pub mod prometheus;
pub mod show;
pub mod status;
pub mod verify;
