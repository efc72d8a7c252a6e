//! PostgreSQL: a data directory read from its files ([`datadir`], [`controldata`],
//! [`conf`], [`postmaster`]), the recovery configuration each version expects
//! ([`recovery`], [`minimal_config`]), a server reached through libpq and proven to be
//! the one of a data directory ([`db`]), its collation versions ([`collation`]), and the
//! server binaries that will run a restore ([`server`]).

pub mod collation;
pub mod conf;
pub mod controldata;
pub mod datadir;
pub mod db;
pub mod minimal_config;
pub mod postmaster;
pub mod recovery;
pub mod server;
