//! walfetch: restore a PostgreSQL standby from a wal-g, WAL-E or pgBackRest archive, keep
//! it fed, and cut over.
//!
//! Five layers, data flowing down (`tests/layers.rs` checks it): leaves ([`error`],
//! [`constants`], [`wal`]…); settings, storage, encryption and codecs ([`config`],
//! [`storage`], [`crypto`], [`codec`], [`objects`]); the archive formats and PostgreSQL
//! ([`layout`], [`pgbackrest`], [`archive`], [`pg`]); the work ([`standby`], [`restore`],
//! [`push`], [`inspect`], [`cutover`]); the command line ([`context`], [`commands`],
//! [`cli`]). See `docs/DESIGN.md` for the module map and the decisions.

pub mod archive;
pub mod barman;
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
