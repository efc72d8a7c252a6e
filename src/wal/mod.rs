//! WAL naming and content, and its way from the archive to PostgreSQL: segment names
//! and their arithmetic for any segment size, the kinds of file PostgreSQL asks
//! restore_command for, segment and record checks, and the fetch pipeline (direct
//! fetches, the hand-over gate, the prefetch fetcher and its spool).

pub mod fetch;
pub mod handover;
pub mod name;
pub mod prefetch;
pub mod records;
pub mod segment;
pub mod spool;
pub mod timeline;
