//! One large object read as consecutive byte ranges requested at once, handed out in
//! order.
//!
//! One HTTP stream runs at what one connection gets (on this machine's S3 server about
//! 190 MB/s, CPU-bound in the server), and each new request waits a round trip. A large
//! partition is therefore read in parts of [`RANGE_PART_SIZE`] bytes, and the next
//! [`RANGE_REQUESTS_AHEAD`] parts are always requested: their round trips overlap the
//! reading of the current part, and the server streams their bodies into the kernel's
//! socket buffers while they wait. walfetch itself reads one part at a time, so its
//! memory does not grow with the number of parts in flight (measured: 8 parts in
//! flight cost about 4 MiB of HTTP buffers) nor with the object's size.
//!
//! Each part is read by its own reader (with the backend's retries and ranged resumes)
//! and its length is checked against the range asked for, so a part cut short or an
//! object that shrank is an error, never a gap in the data.
//!
//! [`Ranged`] is the storage decorator: any storage below it that can send ranged
//! requests ahead ([`Storage::request_range`]) and is remote gets its large objects read
//! this way; the first answer's size must equal the listed size, and every later part is
//! pinned to the first answer's ETag, so a changed object is an error, never a splice.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Chunk, ObjectReader, Page, PendingRange, Storage};
use crate::constants::{RANGED_MIN_PARTS, RANGED_READERS, RANGE_REQUESTS_AHEAD};
use crate::error::{Error, ErrorKind, Result};

/// A part whose request is under way; calling it waits for the answer and gives the
/// part's reader.
pub type PendingPart = Box<dyn FnOnce() -> Result<ObjectReader> + Send>;

/// Sends the request for the bytes `[start, end)` of the object at once.
pub type RangeRequester = Box<dyn Fn(u64, u64) -> PendingPart + Send + Sync>;

/// The part being read.
struct Current {
    reader: ObjectReader,
    start: u64,
    end: u64,
    got: u64,
}

/// Reads an object as ranges requested ahead; see the module documentation.
pub struct RangedReader {
    size: u64,
    part_size: u64,
    object: String,
    requester: RangeRequester,
    current: Option<Current>,
    /// Requested parts after the current one, in order: (start, end, answer).
    pending: VecDeque<(u64, u64, PendingPart)>,
    /// Where the next part to request starts.
    next: u64,
    /// Released when the reader is dropped (a backend's limit on ranged readers).
    _slot: Box<dyn Send>,
}

impl RangedReader {
    /// Starts reading an object of `size` bytes in parts of `part_size`: part 0 from
    /// `first` (already answered, for `[0, part_size)`), the others through `requester`,
    /// [`RANGE_REQUESTS_AHEAD`] at a time. `object` names it in errors; `slot` is
    /// dropped with the reader.
    pub fn start(first: ObjectReader, size: u64, part_size: u64, object: String, requester: RangeRequester, slot: Box<dyn Send>) -> Self {
        let part_size = part_size.max(1);
        let mut reader = RangedReader {
            size,
            part_size,
            object,
            requester,
            current: Some(Current {
                reader: first,
                start: 0,
                end: part_size.min(size),
                got: 0,
            }),
            pending: VecDeque::new(),
            next: part_size.min(size),
            _slot: slot,
        };
        reader.request_ahead();
        reader
    }

    /// Keeps [`RANGE_REQUESTS_AHEAD`] parts requested.
    fn request_ahead(&mut self) {
        while self.pending.len() < RANGE_REQUESTS_AHEAD && self.next < self.size {
            let (start, end) = (self.next, (self.next + self.part_size).min(self.size));
            self.pending.push_back((start, end, (self.requester)(start, end)));
            self.next = end;
        }
    }

    /// Moves on to the next requested part; `false` at the end of the object.
    fn advance(&mut self) -> Result<bool> {
        let Some((start, end, answer)) = self.pending.pop_front() else {
            return Ok(false);
        };
        self.request_ahead();
        self.current = Some(Current {
            reader: answer()?,
            start,
            end,
            got: 0,
        });
        Ok(true)
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(part) = self.current.as_mut() else {
                if !self.advance().map_err(Error::into_io)? {
                    return Ok(0);
                }
                continue;
            };
            let n = part.reader.read(buf)?;
            part.got += n as u64;
            let (start, end, got) = (part.start, part.end, part.got);
            if got > end - start {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: bytes {start}-{end} returned more than asked for", self.object),
                )
                .into_io());
            }
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if got < end - start {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: bytes {start}-{end} ended after {got} bytes; the object is shorter than listed (changed while being read?)",
                        self.object
                    ),
                )
                .into_io());
            }
            self.current = None;
        }
    }
}

/// One of the [`RANGED_READERS`] places for an object fetched in ranges; given back on drop.
struct RangedSlot(Arc<AtomicUsize>);

impl RangedSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<RangedSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < RANGED_READERS).then_some(n + 1))
            .ok()
            .map(|_| RangedSlot(Arc::clone(count)))
    }
}

impl Drop for RangedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A storage whose large objects are read as ranges requested ahead (see the module doc).
pub struct Ranged<S> {
    inner: Arc<S>,
    part_size: u64,
    /// Objects being read in ranges now (at most [`RANGED_READERS`]).
    readers: Arc<AtomicUsize>,
}

impl<S: Storage> Ranged<S> {
    /// Wraps `inner`, reading in parts of `part_size` bytes.
    pub fn new(inner: S, part_size: u64) -> Self {
        Ranged {
            inner: Arc::new(inner),
            part_size: part_size.max(1),
            readers: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S: Storage + 'static> Storage for Ranged<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        self.inner.open(key)
    }

    /// In ranges when the object has at least [`RANGED_MIN_PARTS`] parts, the storage is
    /// remote and can request ranges, and fewer than [`RANGED_READERS`] objects are read
    /// that way now; else as one stream.
    fn open_large(&self, key: &str, size: u64) -> Result<ObjectReader> {
        let part = self.part_size;
        if !self.inner.is_remote() || size < part.saturating_mul(RANGED_MIN_PARTS) {
            return self.inner.open_large(key, size);
        }
        let Some(slot) = RangedSlot::take(&self.readers) else {
            return self.inner.open_large(key, size);
        };
        let Some(first) = self.inner.request_range(key, 0, part, None) else {
            return self.inner.open_large(key, size);
        };
        let url = format!("{}/{key}", self.inner.describe());
        let first = first()?;
        match first.total {
            // No Content-Range: a server that ignores ranges sent the whole object.
            None => return Ok(first.reader),
            Some(total) if total != size => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{url}: the object has {total} bytes but was listed with {size}; it changed since it was listed"),
                ));
            }
            Some(_) => {}
        }
        tracing::debug!(object = %url, size, part, "fetching in ranges");
        let (inner, key, etag) = (Arc::clone(&self.inner), key.to_string(), first.etag);
        let requester: RangeRequester = Box::new(move |start, end| match inner.request_range(&key, start, end, etag.as_deref()) {
            Some(pending) => Box::new(move || pending().map(|answer| answer.reader)) as PendingPart,
            None => Box::new(|| Err(Error::new(ErrorKind::Config, "ranged reads stopped being supported"))),
        });
        Ok(Box::new(RangedReader::start(
            first.reader,
            size,
            part,
            url,
            requester,
            Box::new(slot),
        )))
    }

    fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
        self.inner.request_range(key, start, end, etag)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.inner.stat(key)
    }

    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<Chunk> {
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

    fn put(&self, key: &str, source: &File) -> Result<()> {
        self.inner.put(key, source)
    }

    fn credentials_expiry(&self) -> Result<Option<SystemTime>> {
        self.inner.credentials_expiry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn data(len: usize) -> Arc<Vec<u8>> {
        Arc::new((0..len).map(|i| (i * 7 + i / 251) as u8).collect())
    }

    /// Answers every range from `data`, recording the ranges requested.
    fn requester(data: Arc<Vec<u8>>, asked: Arc<Mutex<Vec<(u64, u64)>>>) -> RangeRequester {
        Box::new(move |start, end| {
            asked.lock().unwrap().push((start, end));
            let bytes = data[start as usize..end as usize].to_vec();
            Box::new(move || Ok(Box::new(io::Cursor::new(bytes)) as ObjectReader))
        })
    }

    fn first(data: &[u8], part: usize) -> ObjectReader {
        Box::new(io::Cursor::new(data[..part.min(data.len())].to_vec()))
    }

    #[test]
    fn parts_come_out_in_order_and_whole() {
        for (len, part) in [(1_000_000, 65_536), (65_536 * 3, 65_536), (10, 3), (300_001, 100_000)] {
            let d = data(len);
            let asked = Arc::new(Mutex::new(Vec::new()));
            let mut r = RangedReader::start(
                first(&d, part),
                len as u64,
                part as u64,
                "o".into(),
                requester(Arc::clone(&d), Arc::clone(&asked)),
                Box::new(()),
            );
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert!(out == *d, "len {len} part {part}");
            let asked = asked.lock().unwrap();
            assert_eq!(asked.len(), len.div_ceil(part) - 1, "every part after the first requested once");
            assert!(asked.windows(2).all(|w| w[0].1 == w[1].0), "contiguous, in order");
        }
    }

    #[test]
    fn requests_run_ahead_by_the_window_only() {
        let part = 1000usize;
        let d = data(part * 40);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut r = RangedReader::start(
            first(&d, part),
            d.len() as u64,
            part as u64,
            "o".into(),
            requester(Arc::clone(&d), Arc::clone(&asked)),
            Box::new(()),
        );
        assert_eq!(asked.lock().unwrap().len(), RANGE_REQUESTS_AHEAD);
        let mut head = vec![0u8; part * 3];
        r.read_exact(&mut head).unwrap();
        assert_eq!(head, d[..part * 3]);
        assert_eq!(
            asked.lock().unwrap().len(),
            RANGE_REQUESTS_AHEAD + 2,
            "one more request per part begun"
        );
    }

    #[test]
    fn a_short_part_is_an_error_not_a_gap() {
        let d = data(500_000);
        let src = Arc::clone(&d);
        let short: RangeRequester = Box::new(move |start, end| {
            let end = if start == 200_000 { end - 1 } else { end };
            let bytes = src[start as usize..end as usize].to_vec();
            Box::new(move || Ok(Box::new(io::Cursor::new(bytes)) as ObjectReader))
        });
        let mut r = RangedReader::start(first(&d, 100_000), 500_000, 100_000, "s3://b/k".into(), short, Box::new(()));
        let mut out = Vec::new();
        let err = Error::from_io_ref(&r.read_to_end(&mut out).unwrap_err()).unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(
            err.message().contains("s3://b/k: bytes 200000-300000 ended after 99999 bytes"),
            "{err}"
        );
        assert_eq!(out.len(), 299_999, "bytes before the failure are handed out, nothing after");
    }

    #[test]
    fn a_failed_request_surfaces_with_its_kind_and_the_slot_is_released() {
        let d = data(400_000);
        let failing: RangeRequester = Box::new(|start, _| {
            Box::new(move || {
                if start >= 300_000 {
                    Err(Error::new(ErrorKind::Credentials, "s3://b/k: credentials rejected"))
                } else {
                    Ok(Box::new(io::Cursor::new(vec![0u8; 100_000])) as ObjectReader)
                }
            })
        });
        struct Slot(Arc<AtomicUsize>);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let released = Arc::new(AtomicUsize::new(0));
        let mut r = RangedReader::start(
            first(&d, 100_000),
            400_000,
            100_000,
            "s3://b/k".into(),
            failing,
            Box::new(Slot(Arc::clone(&released))),
        );
        let err = Error::from_io_ref(&r.read_to_end(&mut Vec::new()).unwrap_err()).unwrap();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        drop(r);
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
}
