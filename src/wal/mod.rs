//! WAL facts: segment names and their arithmetic for any segment size, the kinds of file
//! PostgreSQL asks restore_command for, a segment's pages and records, and timeline
//! histories. Its way to a standby is [`crate::standby`].

pub mod name;
pub mod records;
pub mod segment;
pub mod timeline;
