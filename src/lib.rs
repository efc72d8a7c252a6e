//! walfetch: restore a PostgreSQL standby from a wal-g / WAL-E archive and keep it fed.
//!
//! Data flows one way: [`storage`] → [`codec`] → [`layout`] → [`commands`] → the
//! filesystem ([`restore`], [`fsutil`]). See `docs/DESIGN.md` for the decisions.

pub mod codec;
pub mod config;
pub mod constants;
pub mod error;
pub mod fsutil;
pub mod storage;
pub mod layout;
pub mod wal;
pub mod pg;
pub mod restore;
pub mod cli;
pub mod commands;
pub mod logging;
