//! Writing a base backup into a target directory: safe tar extraction and tablespaces.

pub mod extract;
pub mod tablespace;
