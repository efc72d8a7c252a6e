//! One file per user-facing command: its options as a clap struct, its work as `run`.

pub mod backup_fetch;
pub mod backup_list;
pub mod backup_push;
pub mod check;
pub mod docs;
pub mod follow;
pub mod status;
pub mod wal_fetch;
pub mod wal_push;
pub mod wal_show;
pub mod wal_verify;
