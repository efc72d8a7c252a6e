//! A bandwidth limit on everything read from storage (`WALG_NETWORK_RATE_LIMIT`, bytes
//! per second, as wal-g reads it), for restores and prefetching beside live traffic.
//!
//! One limit per process, shared by every reader of the storage (a restore's parallel
//! parts, the fetcher's segments): each read reserves its bytes' time on one schedule
//! and waits until then, so the process as a whole moves at most the limit, averaged
//! over a burst of [`BURST`] seconds, whatever the number of connections.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{ObjectMeta, ObjectReader, Page, PendingRange, RangeAnswer, Storage};
use crate::error::Result;

/// Seconds of unused allowance that may be spent at once after a pause.
const BURST: f64 = 0.25;

/// The shared schedule.
#[derive(Debug)]
pub struct Limiter {
    bytes_per_second: f64,
    /// When the bytes reserved so far have been "paid for" (`None`: nothing yet).
    paid_until: Mutex<Option<Instant>>,
}

impl Limiter {
    /// A limit of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Limiter {
        Limiter {
            bytes_per_second: bytes_per_second.max(1) as f64,
            paid_until: Mutex::new(None),
        }
    }

    /// Reserves the time of `n` bytes read at `now`; returns when the reader may go on.
    fn reserve(&self, n: usize, now: Instant) -> Instant {
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_second);
        let mut paid = self.paid_until.lock().unwrap_or_else(|p| p.into_inner());
        let floor = now.checked_sub(Duration::from_secs_f64(BURST)).unwrap_or(now);
        let until = paid.map_or(floor, |p| p.max(floor)) + cost;
        *paid = Some(until);
        until
    }

    /// Accounts for `n` bytes just read, waiting as long as the limit requires.
    pub fn take(&self, n: usize) {
        let wake = self.reserve(n, Instant::now());
        let now = Instant::now();
        if wake > now {
            thread::sleep(wake - now);
        }
    }
}

/// A reader that pays for what it reads.
struct Limited {
    inner: ObjectReader,
    limiter: Arc<Limiter>,
}

impl Read for Limited {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Small reads keep the schedule smooth across many readers.
        let len = buf.len().min(64 * 1024);
        let n = self.inner.read(&mut buf[..len])?;
        self.limiter.take(n);
        Ok(n)
    }
}

/// Storage whose readers share one [`Limiter`].
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S: Storage> RateLimited<S> {
    /// Wraps `inner` with a limit of `bytes_per_second`.
    pub fn new(inner: S, bytes_per_second: u64) -> Self {
        RateLimited {
            inner,
            limiter: Arc::new(Limiter::new(bytes_per_second)),
        }
    }

    fn limited(&self, inner: ObjectReader) -> ObjectReader {
        Box::new(Limited {
            inner,
            limiter: Arc::clone(&self.limiter),
        })
    }
}

impl<S: Storage> Storage for RateLimited<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        Ok(self.limited(self.inner.open(key)?))
    }

    fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
        let pending = self.inner.request_range(key, start, end, etag)?;
        let limiter = Arc::clone(&self.limiter);
        Some(Box::new(move || {
            let answer = pending()?;
            Ok(RangeAnswer {
                reader: Box::new(Limited {
                    inner: answer.reader,
                    limiter,
                }),
                ..answer
            })
        }))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.inner.stat(key)
    }

    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<super::Chunk> {
        self.inner.list_chunk(prefix, recursive, token)
    }

    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page> {
        self.inner.list_page(prefix, start_after, max_keys)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn holds_objects(&self) -> Result<bool> {
        self.inner.holds_objects()
    }

    fn put(&self, key: &str, source: &std::fs::File) -> Result<()> {
        self.inner.put(key, source)
    }

    fn credentials_expiry(&self) -> Result<Option<std::time::SystemTime>> {
        self.inner.credentials_expiry()
    }

    fn list_all(&self, prefix: &str, recursive: bool) -> Result<Vec<ObjectMeta>> {
        self.inner.list_all(prefix, recursive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_scheduled_at_the_rate_with_a_short_burst() {
        let l = Limiter::new(1000);
        let t0 = Instant::now() + Duration::from_secs(10);
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        // A quarter second of allowance at first, then one second per 1000 bytes,
        // whoever reads them.
        assert_eq!(l.reserve(250, t0), t0);
        assert_eq!(l.reserve(500, t0), at(0.5));
        assert_eq!(l.reserve(500, at(0.1)), at(1.0));
        // After a long pause: the burst again, not the whole pause's allowance.
        assert_eq!(l.reserve(1000, at(60.0)), at(60.75));
    }

    #[test]
    fn a_limited_reader_returns_every_byte() {
        let l = Arc::new(Limiter::new(u64::MAX));
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut r = Limited {
            inner: Box::new(io::Cursor::new(data.clone())),
            limiter: l,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
