//! Facts about a PostgreSQL data directory read from its files (never from a running
//! server), and the recovery configuration each PostgreSQL version expects.

pub mod collation;
pub mod conf;
pub mod controldata;
pub mod datadir;
pub mod db;
pub mod minimal_config;
pub mod postmaster;
pub mod recovery;
pub mod server;
