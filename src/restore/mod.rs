//! Writing a restore to disk: the plan's execution ([`fetch`]), safe tar extraction
//! ([`extract`]), tablespace placement ([`tablespace`]) and the checks of the result
//! ([`checks`]).

pub mod checks;
pub mod delta;
pub mod extract;
pub mod fetch;
pub mod journal;
pub mod select;
pub mod tablespace;
