//! WAL naming and content: segment names and their arithmetic for any segment size,
//! the kinds of file PostgreSQL asks restore_command for, and segment header checks.

pub mod name;
pub mod records;
pub mod segment;
pub mod timeline;
