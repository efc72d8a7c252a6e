//! The retry policy shared by storage backends: jittered exponential backoff for
//! transient failures only, with every retry logged with its object and cause.
//!
//! Two budgets, so that a dead endpoint fails fast and a flaky network is survived:
//! - a request that never reached a server (connection refused, a host that does not
//!   resolve, no answer to the connection within [`CONNECT_TIMEOUT`]) is retried only
//!   while [`CONNECT_RETRY_WINDOW`] has not passed since the operation began;
//! - any other transient failure (5xx, throttling, a reset or stalled body) is retried up
//!   to [`MAX_RETRIES`] times (`WALFETCH_MAX_RETRIES`).
//!
//! Every delay, jitter included, is at most [`RETRY_MAX_DELAY`].
//!
//! [`CONNECT_TIMEOUT`]: crate::constants::CONNECT_TIMEOUT

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::constants::{CONNECT_RETRY_WINDOW, MAX_RETRIES, RETRY_MAX_DELAY, RETRY_MIN_DELAY};
use crate::error::{Error, ErrorKind};

/// Whether a failure may go away if the request is repeated.
pub fn is_transient(err: &Error) -> bool {
    err.kind() == ErrorKind::Unreachable
}

/// The retries left to one operation.
pub struct Schedule {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    started: Instant,
    /// Delays handed out so far (the time spent waiting, when the caller slept them).
    waited: Duration,
    attempt: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new()
    }
}

impl Schedule {
    /// A fresh schedule, starting now.
    pub fn new() -> Schedule {
        let delays = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_max_times(max_retries())
            .with_jitter()
            .build();
        Schedule {
            delays: Box::new(delays),
            started: Instant::now(),
            waited: Duration::ZERO,
            attempt: 1,
        }
    }

    /// Attempts made so far (1 before the first retry).
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// The wait before retrying after `err`, or `None` when `err` is not transient or
    /// the retries are spent. Counts the attempt.
    pub fn next_delay(&mut self, err: &Error) -> Option<Duration> {
        if !is_transient(err) {
            return None;
        }
        // backon's jitter adds up to the delay itself: keep the sum under the cap.
        let delay = self.delays.next()?.min(RETRY_MAX_DELAY);
        if err.is_connect_failure() && self.started.elapsed().max(self.waited) + delay > CONNECT_RETRY_WINDOW {
            return None;
        }
        self.waited += delay;
        self.attempt += 1;
        Some(delay)
    }

    /// `err` marked with the attempts spent on it.
    pub fn exhausted(&self, err: Error) -> Error {
        if is_transient(&err) {
            err.context(format!("gave up after {} attempts", self.attempt))
        } else {
            err
        }
    }
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
    let mut schedule = Schedule::new();
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(err) => match schedule.next_delay(&err) {
                Some(delay) => {
                    tracing::warn!(object, attempt = schedule.attempt() - 1, cause = %err, delay_ms = delay.as_millis() as u64, "transient storage error, retrying");
                    std::thread::sleep(delay);
                }
                None => return Err(schedule.exhausted(err)),
            },
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

    #[test]
    fn delays_never_exceed_the_cap_and_connect_failures_stop_early() {
        let mut s = Schedule::new();
        let transient = Error::new(ErrorKind::Unreachable, "503");
        let mut total = Duration::ZERO;
        while let Some(d) = s.next_delay(&transient) {
            assert!(d <= RETRY_MAX_DELAY, "{d:?}");
            total += d;
        }
        assert!(s.attempt() > 1);
        assert!(total <= RETRY_MAX_DELAY * max_retries() as u32);

        let mut s = Schedule::new();
        let refused = Error::connect_failure("connection refused");
        let mut waited = Duration::ZERO;
        while let Some(d) = s.next_delay(&refused) {
            waited += d;
        }
        assert!(waited <= CONNECT_RETRY_WINDOW, "{waited:?}");
        assert!(s.exhausted(refused).message().starts_with("gave up after"));
    }
}
