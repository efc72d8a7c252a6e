//! Error kinds and the exit codes they map to.
//!
//! Every failure a user can meet carries one [`ErrorKind`] and a one-line message that
//! names the object or path that failed and the cause. The kind decides the exit code,
//! so scripts and PostgreSQL can tell "absent" from "broken" from "unreachable".

use std::fmt;
use std::io;

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
            ErrorKind::Config => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Unreachable => 5,
            ErrorKind::Credentials => 6,
            ErrorKind::Corrupt => 7,
            ErrorKind::Unsafe => 8,
            ErrorKind::LocalIo => 9,
            ErrorKind::Refused => 10,
            ErrorKind::Database => 11,
            ErrorKind::Unrestorable => 14,
            ErrorKind::NotRunning => 20,
            ErrorKind::WrongServer => 21,
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
