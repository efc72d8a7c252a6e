//! Error kinds and the exit codes they map to.
//!
//! Every failure a user can meet carries one [`ErrorKind`] and a one-line message that
//! names the object or path that failed and the cause. The kind decides the exit code,
//! so scripts and PostgreSQL can tell "absent" from "broken" from "unreachable".

use std::fmt;
use std::io;

/// Declares each exit code as a constant and all of them, by name, in [`exit::TABLE`].
macro_rules! exit_codes {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        $( $(#[$doc])* pub const $name: u8 = $code; )*
        /// Every code above with its name, in one table (the distinctness test reads it).
        pub const TABLE: &[(&str, u8)] = &[$((stringify!($name), $code)),*];
    };
}

/// Every exit code walfetch ends with, in one table (README, "Exit codes"). Errors end
/// with their kind's code ([`ErrorKind::exit_code`]); reports (wal-verify, status,
/// check, check-indexes) end with their verdict's.
pub mod exit {
    exit_codes! {
        /// Success, or a report with nothing to say.
        OK = 0;
        /// wal-fetch: the file is proven absent from the archive (PostgreSQL's "not there").
        ABSENT = 1;
        /// A command line that does not parse (clap's own code).
        USAGE = 2;
        /// [`super::ErrorKind::Config`].
        CONFIG = 3;
        /// [`super::ErrorKind::NotFound`].
        NOT_FOUND = 4;
        /// [`super::ErrorKind::Unreachable`].
        UNREACHABLE = 5;
        /// [`super::ErrorKind::Credentials`].
        CREDENTIALS = 6;
        /// [`super::ErrorKind::Corrupt`].
        CORRUPT = 7;
        /// [`super::ErrorKind::Unsafe`].
        UNSAFE = 8;
        /// [`super::ErrorKind::LocalIo`].
        LOCAL_IO = 9;
        /// [`super::ErrorKind::Refused`].
        REFUSED = 10;
        /// [`super::ErrorKind::Database`].
        DATABASE = 11;
        /// wal-verify: segments are missing between the oldest backup and the newest segment.
        GAPS = 12;
        /// wal-verify: the newest segment is older than the allowed age.
        STALE = 13;
        /// A backup cannot be restored for lack of WAL (wal-verify's verdict, and
        /// [`super::ErrorKind::Unrestorable`]).
        UNRESTORABLE = 14;
        /// status: something blocks replay (also promote's refusal).
        BLOCKED = 15;
        /// status: the standby's configuration cannot work.
        MISCONFIGURED = 16;
        /// status: the archive cannot be reached.
        STATUS_UNREACHABLE = 17;
        /// status: the archive refuses the credentials.
        STATUS_CREDENTIALS = 18;
        /// status, check, wal-verify: the credentials in use expire within the margin.
        CREDENTIALS_EXPIRING = 19;
        /// [`super::ErrorKind::NotRunning`].
        NOT_RUNNING = 20;
        /// [`super::ErrorKind::WrongServer`].
        WRONG_SERVER = 21;
        /// check-indexes: indexes to rebuild.
        REBUILD = 22;
        /// check-indexes: indexes that could not be checked.
        UNCHECKED = 23;
    }

    /// wal-fetch during a recovery that is not a standby's: an error ends with this plus
    /// its code, above 125, which PostgreSQL takes as fatal rather than as the end of
    /// the archive.
    pub const FATAL_OFFSET: u8 = 128;
}

/// What class of failure happened; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A setting is missing or malformed.
    Config,
    /// The object, backup or file does not exist (definitely, not "could not tell").
    NotFound,
    /// Storage could not be reached or kept failing after retries (network, 5xx, timeouts).
    Unreachable,
    /// Storage rejected the credentials (bad key, expired token, access denied).
    Credentials,
    /// An object decoded to something invalid: bad compression, checksum, size, tar, JSON.
    Corrupt,
    /// An archive tried to write outside the target or through a symlink.
    Unsafe,
    /// A local filesystem operation failed (disk full, permissions).
    LocalIo,
    /// The operation was refused to protect data (non-empty target, conflicting object).
    Refused,
    /// PostgreSQL could not be reached or answered with an error (writer side).
    Database,
    /// The archive lacks the WAL a backup needs to become consistent: a restore of it
    /// could never be started.
    Unrestorable,
    /// No PostgreSQL server is running for the data directory a command was given.
    NotRunning,
    /// The server reached is not the one running the data directory a command was given
    /// (another data directory, or another system identifier).
    WrongServer,
}

impl ErrorKind {
    /// The process exit code for this kind (see README, "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => exit::CONFIG,
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::Unreachable => exit::UNREACHABLE,
            ErrorKind::Credentials => exit::CREDENTIALS,
            ErrorKind::Corrupt => exit::CORRUPT,
            ErrorKind::Unsafe => exit::UNSAFE,
            ErrorKind::LocalIo => exit::LOCAL_IO,
            ErrorKind::Refused => exit::REFUSED,
            ErrorKind::Database => exit::DATABASE,
            ErrorKind::Unrestorable => exit::UNRESTORABLE,
            ErrorKind::NotRunning => exit::NOT_RUNNING,
            ErrorKind::WrongServer => exit::WRONG_SERVER,
        }
    }

    /// A short word for logs and JSON.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::LocalIo => "local-io",
            ErrorKind::Refused => "refused",
            ErrorKind::Database => "database",
            ErrorKind::Unrestorable => "unrestorable",
            ErrorKind::NotRunning => "not-running",
            ErrorKind::WrongServer => "wrong-server",
        }
    }
}

/// A failure with its kind and a message naming what failed and why.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The request never reached a server (refused, unresolvable, no answer to the
    /// connection): retried only briefly, so a wrong or dead endpoint fails fast.
    connect: bool,
}

/// Result alias used throughout walfetch.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`. The message is kept to one line (causes from other
    /// libraries sometimes span several), so every error prints as one line.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: one_line(message.into()),
            connect: false,
        }
    }

    /// Storage could not be connected to at all (see [`Error::is_connect_failure`]).
    pub fn connect_failure(message: impl Into<String>) -> Self {
        Error {
            connect: true,
            ..Error::new(ErrorKind::Unreachable, message)
        }
    }

    /// True when no connection to the server could be made: the retry policy gives such
    /// failures a short budget of their own (README, "Exit codes").
    pub fn is_connect_failure(&self) -> bool {
        self.connect
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without any prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what was being done, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: one_line(format!("{what}: {}", self.message)),
            connect: self.connect,
        }
    }

    /// Classifies a local I/O error on `path`.
    pub fn local_io(path: impl fmt::Display, err: &io::Error) -> Self {
        if let Some(inner) = Error::from_io_ref(err) {
            return inner;
        }
        Error::new(ErrorKind::LocalIo, format!("{path}: {err}"))
    }

    /// Recovers a walfetch error carried inside an `io::Error` (from a `Read` adapter),
    /// also when other layers (tar, decoders) wrapped it on the way up.
    pub fn from_io_ref(err: &io::Error) -> Option<Error> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<Error>() {
                return Some(found.clone());
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                current = io.get_ref().map(|e| e as _);
                continue;
            }
            current = e.source();
        }
        None
    }

    /// Wraps this error in an `io::Error` so it can cross a `Read` boundary intact.
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// `text` with its line breaks folded into "; ".
fn one_line(text: String) -> String {
    if !text.contains(['\n', '\r']) {
        return text;
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The first error of many workers: the root cause, not a later worker's "stopped
/// because another failed". Each worker that fails sets `stop`, so the others end.
#[derive(Debug, Default)]
pub struct FirstError {
    slot: std::sync::Mutex<Option<Error>>,
    /// Set at the first failure: workers stop taking work.
    pub stop: std::sync::atomic::AtomicBool,
}

impl FirstError {
    /// Keeps `e` unless an error came first, and tells the other workers to stop.
    pub fn keep(&self, e: Error) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a worker failed.
    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `Ok` when no worker failed, else the first error.
    pub fn into_result(self) -> Result<()> {
        match self.slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let kinds = [
            ErrorKind::Config,
            ErrorKind::NotFound,
            ErrorKind::Unreachable,
            ErrorKind::Credentials,
            ErrorKind::Corrupt,
            ErrorKind::Unsafe,
            ErrorKind::LocalIo,
            ErrorKind::Refused,
            ErrorKind::Database,
            ErrorKind::Unrestorable,
            ErrorKind::NotRunning,
            ErrorKind::WrongServer,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(codes.iter().all(|c| *c > 2 && *c < 126));
        // One table: every code walfetch ends with is in it once, every kind's among them.
        let mut all: Vec<u8> = exit::TABLE.iter().map(|(_, c)| *c).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), exit::TABLE.len(), "two names share a code: {:?}", exit::TABLE);
        assert!(codes.iter().all(|c| all.contains(c)));
        // Below 126 (the shell's own), and still a byte with the fatal offset added.
        let highest = all.last().copied().unwrap_or(0);
        assert!(highest < 126 && u16::from(highest) + u16::from(exit::FATAL_OFFSET) < 256);
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::new(ErrorKind::Config, "first\n  second\r\n\nthird");
        assert_eq!(e.message(), "first; second; third");
        assert_eq!(e.context("ctx").message(), "ctx: first; second; third");
    }

    #[test]
    fn error_survives_io_round_trip() {
        let err = Error::new(ErrorKind::Credentials, "bucket b: rejected");
        let io_err = err.into_io();
        let back = Error::local_io("x", &io_err);
        assert_eq!(back.kind(), ErrorKind::Credentials);
        assert_eq!(back.message(), "bucket b: rejected");
    }
}
