//! The integration tests, as one binary with a module per area (ripgrep's layout): the
//! harness in `common/` is compiled once, and every test drives the real walfetch binary
//! against real PostgreSQL servers, a real S3-compatible server and the peer tools.

mod common;

mod absence;
mod bad_input;
mod barman;
mod cli;
mod credentials;
mod cutover;
mod delta;
mod encryption;
mod faults;
mod fetcher;
mod fixtures;
mod fuzz_corpus;
mod layers;
mod migration;
mod morning;
mod openpgp;
mod package;
mod pgbackrest;
mod prefetch;
mod records;
mod restore;
mod resume;
mod s3options;
mod spine;
mod status;
mod targets;
mod verify;
mod versions;
mod wale;
