//! The retry policy, and [`Retrying`]: the storage decorator that applies it to every
//! request of the storage below (a body cut short in the middle is resumed inside the
//! S3 reader instead, with the same [`Schedule`], where its ETag and offset are).
//! Jittered exponential backoff for transient failures only, with every retry logged
//! with its object and cause.
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

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::{Chunk, ObjectReader, Page, PendingRange, Storage};
use crate::constants::{CONNECT_RETRY_WINDOW, RETRY_MAX_DELAY, RETRY_MIN_DELAY};
use crate::error::{Error, ErrorKind, Result};

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

impl Schedule {
    /// A fresh schedule of at most `max_retries` retries, starting now.
    pub fn new(max_retries: usize) -> Schedule {
        let delays = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_max_times(max_retries)
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

/// Runs `op`, retrying transient failures with backoff, at most `max_retries` times.
/// `object` names what is being accessed, for the log line of each retry.
pub fn with_retries<T>(max_retries: usize, object: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut schedule = Schedule::new(max_retries);
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

/// A storage whose every request is retried on transient failures.
pub struct Retrying<S> {
    inner: Arc<S>,
    max_retries: usize,
}

impl<S: Storage> Retrying<S> {
    /// Wraps `inner`, retrying each failed request at most `max_retries` times.
    pub fn new(inner: S, max_retries: usize) -> Self {
        Retrying {
            inner: Arc::new(inner),
            max_retries,
        }
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.inner.describe())
    }
}

impl<S: Storage + 'static> Storage for Retrying<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        with_retries(self.max_retries, &self.url(key), || self.inner.open(key))
    }

    /// The request is sent at once; waiting for it retries a transient failure with new
    /// requests (so the round trip of the first still overlaps whatever runs meanwhile).
    fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
        let mut first = Some(self.inner.request_range(key, start, end, etag)?);
        let (inner, max, url) = (Arc::clone(&self.inner), self.max_retries, self.url(key));
        let (key, etag) = (key.to_string(), etag.map(str::to_string));
        Some(Box::new(move || {
            with_retries(max, &url, || {
                let pending = first.take().or_else(|| inner.request_range(&key, start, end, etag.as_deref()));
                pending.ok_or_else(|| Error::new(ErrorKind::Config, format!("{url}: ranged reads are not supported")))?()
            })
        }))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        with_retries(self.max_retries, &self.url(key), || self.inner.stat(key))
    }

    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<Chunk> {
        with_retries(self.max_retries, &format!("listing {}", self.url(prefix)), || {
            self.inner.list_chunk(prefix, recursive, token)
        })
    }

    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page> {
        with_retries(self.max_retries, &format!("listing {}", self.url(prefix)), || {
            self.inner.list_page(prefix, start_after, max_keys)
        })
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn holds_objects(&self) -> Result<bool> {
        with_retries(self.max_retries, &format!("listing {}", self.inner.describe()), || {
            self.inner.holds_objects()
        })
    }

    fn put(&self, key: &str, source: &File) -> Result<()> {
        with_retries(self.max_retries, &self.url(key), || self.inner.put(key, source))
    }

    fn credentials_expiry(&self) -> Result<Option<SystemTime>> {
        self.inner.credentials_expiry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transient_then_succeeds() {
        let mut calls = 0;
        let out = with_retries(8, "k", || {
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
            let out: Result<(), Error> = with_retries(8, "k", || {
                calls += 1;
                Err(Error::new(kind, "no"))
            });
            assert_eq!(out.unwrap_err().kind(), kind);
            assert_eq!(calls, 1);
        }
    }

    #[test]
    fn delays_never_exceed_the_cap_and_connect_failures_stop_early() {
        let mut s = Schedule::new(8);
        let transient = Error::new(ErrorKind::Unreachable, "503");
        let mut total = Duration::ZERO;
        while let Some(d) = s.next_delay(&transient) {
            assert!(d <= RETRY_MAX_DELAY, "{d:?}");
            total += d;
        }
        assert!(s.attempt() > 1);
        assert!(total <= RETRY_MAX_DELAY * 8);

        let mut s = Schedule::new(8);
        let refused = Error::connect_failure("connection refused");
        let mut waited = Duration::ZERO;
        while let Some(d) = s.next_delay(&refused) {
            waited += d;
        }
        assert!(waited <= CONNECT_RETRY_WINDOW, "{waited:?}");
        assert!(s.exhausted(refused).message().starts_with("gave up after"));
    }
}
