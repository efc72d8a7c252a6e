//! The retry policy shared by storage backends: jittered exponential backoff for
//! transient failures only, with every retry logged with its object and cause.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::constants::{MAX_RETRIES, RETRY_MAX_DELAY, RETRY_MIN_DELAY};
use crate::error::{Error, ErrorKind};

/// Whether a failure may go away if the request is repeated.
pub fn is_transient(err: &Error) -> bool {
    err.kind() == ErrorKind::Unreachable
}

/// A fresh backoff schedule (an iterator of delays; `None` when retries are spent).
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_max_times(max_retries())
        .with_jitter()
        .build()
}

/// `WALFETCH_MAX_RETRIES` overrides the default retry count (tests use small values).
fn max_retries() -> usize {
    std::env::var("WALFETCH_MAX_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_RETRIES)
}

/// Runs `op`, retrying transient failures with backoff. `object` names what is being
/// accessed, for the log line of each retry.
pub fn with_retries<T>(object: &str, mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut delays = backoff();
    let mut attempt = 1;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(err) if is_transient(&err) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(object, attempt, cause = %err, delay_ms = delay.as_millis() as u64, "transient storage error, retrying");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                None => {
                    return Err(err.context(format!("gave up after {attempt} attempts")));
                }
            },
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transient_then_succeeds() {
        let mut calls = 0;
        let out = with_retries("k", || {
            calls += 1;
            if calls < 3 {
                Err(Error::new(ErrorKind::Unreachable, "reset"))
            } else {
                Ok(7)
            }
        });
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls, 3);
    }

    #[test]
    fn never_retries_not_found_or_credentials() {
        for kind in [ErrorKind::NotFound, ErrorKind::Credentials, ErrorKind::Corrupt] {
            let mut calls = 0;
            let out: Result<(), Error> = with_retries("k", || {
                calls += 1;
                Err(Error::new(kind, "no"))
            });
            assert_eq!(out.unwrap_err().kind(), kind);
            assert_eq!(calls, 1);
        }
    }
}
