//! The writer side, in the same layout walfetch reads: WAL files (`wal-push`) and base
//! backups of a running cluster (`backup-push`).

pub mod backup;
pub mod delta;
pub mod wal;
