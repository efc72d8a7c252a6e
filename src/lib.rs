//! walfetch: restore a PostgreSQL standby from a wal-g / WAL-E archive and keep it fed.
//!
//! Data flows one way: [`storage`] → [`crypto`] → [`codec`] → [`layout`] → [`commands`] → the
//! filesystem ([`restore`], [`fsutil`]). See `docs/DESIGN.md` for the decisions.

pub mod archive;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod constants;
pub mod context;
pub mod crypto;
pub mod cutover;
pub mod error;
pub mod fsutil;
pub mod fuzzing;
pub mod inspect;
pub mod layout;
pub mod logging;
pub mod objects;
pub mod output;
pub mod pg;
pub mod pgbackrest;
pub mod progress;
pub mod push;
pub mod restore;
pub mod standby;
pub mod storage;
pub mod wal;
