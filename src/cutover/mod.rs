//! The cut-over and the morning after: promoting the standby of a data directory only
//! when it has replayed what the source wrote ([`promote`]), and proving that its
//! indexes still agree with this machine's collations ([`indexes`], on the facts of
//! [`crate::pg::collation`]).
//!
//! Every connection here goes to the server running the data directory the user named,
//! found through its `postmaster.pid` and proven by its data directory and system
//! identifier ([`crate::pg::db::Db::for_datadir`]): walfetch touches no other server.

pub mod indexes;
pub mod promote;
