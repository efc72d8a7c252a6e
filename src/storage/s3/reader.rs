//! An S3 object's body as a [`Read`]: batched off the I/O runtime, and resumed with a
//! ranged GET pinned to the first ETag when the connection breaks, the body stalls, or
//! it ends before its Content-Length.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use tokio::runtime::Handle;

use super::classify::{causes, classify, Op};
use super::Remote;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::retry::{is_transient, Schedule};
use crate::storage::{PendingRange, RangeAnswer};

/// Body bytes gathered per wait: the reading thread wakes once per batch instead of
/// once per network chunk (hyper hands over a few KiB at a time; waking per chunk cost
/// a tenth of an S3 restore's CPU in context switches).
const BATCH: usize = 128 * 1024;

/// Streams one object, or the bytes `[base, end)` of it; resumes with a ranged GET
/// (pinned to the first ETag) when the connection breaks, the body stalls, or it ends
/// before its Content-Length.
pub(crate) struct S3Reader {
    ctx: ReaderContext,
    key: String,
    url: String,
    /// First byte of the object this reader reads.
    base: u64,
    /// End (exclusive) of the bytes this reader reads; `None`: the end of the object.
    end: Option<u64>,
    body: Option<ByteStream>,
    /// Received and not yet read, in order.
    chunks: VecDeque<Bytes>,
    /// A failure met after the bytes in `chunks`: handled once they are read.
    deferred: Option<Error>,
    /// The body has ended and was complete.
    ended: bool,
    /// Bytes read so far, from `base`.
    offset: u64,
    /// Bytes this reader returns in all (the first response's Content-Length).
    size: Option<u64>,
    /// The whole object's size, from the first response's Content-Range (ranged reads).
    total: Option<u64>,
    etag: Option<String>,
}

/// What every reader of a storage shares.
#[derive(Clone)]
pub(crate) struct ReaderContext {
    pub(crate) handle: Handle,
    pub(crate) timeout: Duration,
    /// Resumes of a body cut short, at most.
    pub(crate) max_retries: usize,
    pub(crate) client: Client,
    pub(crate) remote: Arc<Remote>,
}

/// How waiting for a batch of body bytes ended.
enum BatchEnd {
    Full,
    End,
    Stalled,
    Broke(String),
}

impl S3Reader {
    /// A reader of `key` (full key; `url` names it in messages), not yet started.
    pub(crate) fn new(ctx: ReaderContext, key: String, url: String) -> S3Reader {
        S3Reader {
            ctx,
            key,
            url,
            base: 0,
            end: None,
            body: None,
            chunks: VecDeque::new(),
            deferred: None,
            ended: false,
            offset: 0,
            size: None,
            total: None,
            etag: None,
        }
    }

    /// Restricts the reader to the bytes `[base, end)`, of the version `etag` if given.
    pub(crate) fn range(mut self, base: u64, end: u64, etag: Option<String>) -> S3Reader {
        self.base = base;
        self.end = Some(end);
        self.etag = etag;
        self
    }

    /// The GET for what is left to read, as a future that owns what it needs (so it
    /// can also run as a task while this reader waits elsewhere).
    fn request(&self) -> impl std::future::Future<Output = Result<GetObjectOutput>> + Send + 'static {
        let get = self.ctx.client.get_object().bucket(&self.ctx.remote.bucket).key(&self.key);
        let mut req = object_options!(get, self.ctx.remote);
        let from = self.base + self.offset;
        if from > 0 || self.end.is_some() {
            let to = self.end.map(|e| (e - 1).to_string()).unwrap_or_default();
            req = req.range(format!("bytes={from}-{to}")).set_if_match(self.etag.clone());
        }
        let (timeout, remote, url) = (self.ctx.timeout, Arc::clone(&self.ctx.remote), self.url.clone());
        async move {
            match tokio::time::timeout(timeout, req.send()).await {
                Err(_) => Err(Error::new(ErrorKind::Unreachable, format!("{url}: request timed out"))),
                // Past the first byte, the object was there: gone now, it changed under the reader.
                Ok(Err(e)) => match classify(&remote, Op::Get, &url, &e) {
                    err if err.kind() == ErrorKind::NotFound && from > 0 => Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{url}: the object disappeared while it was being read (at byte {from})"),
                    )),
                    err => Err(err),
                },
                Ok(Ok(out)) => Ok(out),
            }
        }
    }

    /// Takes the answer to [`Self::request`]: its body, and on the first answer the
    /// length, the object's size and its ETag. A server that ignored the range sent the
    /// whole object: this reader then reads (and resumes) the whole object.
    fn accept(&mut self, out: GetObjectOutput) {
        if self.offset == 0 {
            self.size = out.content_length().map(|l| l.max(0) as u64);
            self.total = out.content_range().and_then(|r| r.rsplit('/').next()).and_then(|t| t.parse().ok());
            if self.total.is_none() && self.base == 0 {
                self.end = None;
            }
            if self.etag.is_none() {
                self.etag = out.e_tag().map(str::to_string);
            }
        }
        self.body = Some(out.body);
    }

    pub(crate) fn start_body(&mut self) -> Result<()> {
        let out = self.ctx.handle.block_on(self.request())?;
        self.accept(out);
        Ok(())
    }

    /// Sends the request at once on the runtime and returns what waits for its answer
    /// (one attempt: [`super::retry::Retrying`] retries).
    pub(crate) fn requested(mut self) -> PendingRange {
        let answer = self.ctx.handle.spawn(self.request());
        Box::new(move || {
            let out = match self.ctx.handle.block_on(answer) {
                Ok(result) => result?,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("{}: request task failed: {e}", self.url),
                    ))
                }
            };
            self.accept(out);
            Ok(RangeAnswer {
                total: self.total,
                etag: self.etag.clone(),
                reader: Box::new(self),
            })
        })
    }

    /// Waits for the next batch of body bytes (called with nothing left unread). Bytes
    /// received before a failure are queued first and the failure deferred, so a resume
    /// starts where the reader stopped. `Ok(false)`: the body ended complete.
    fn next_batch(&mut self) -> Result<bool> {
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        let timeout = self.ctx.timeout;
        let (chunks, end) = self.ctx.handle.block_on(async move {
            let mut chunks = Vec::new();
            let mut got = 0;
            let end = loop {
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) => break BatchEnd::Stalled,
                    Ok(Some(Ok(bytes))) => {
                        got += bytes.len();
                        chunks.push(bytes);
                        if got >= BATCH {
                            break BatchEnd::Full;
                        }
                    }
                    Ok(Some(Err(e))) => break BatchEnd::Broke(causes(&e)),
                    Ok(None) => break BatchEnd::End,
                }
            };
            (chunks, end)
        });
        let at = self.offset + chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        // Messages give offsets in the object, also for a reader of one range of it.
        let byte = self.base + at;
        let failure = match end {
            BatchEnd::Full => None,
            BatchEnd::Stalled => Some(format!("{}: no data for {}s at byte {byte}", self.url, self.ctx.timeout.as_secs())),
            BatchEnd::Broke(cause) => Some(format!("{}: connection broke at byte {byte} ({cause})", self.url)),
            BatchEnd::End => match self.size {
                Some(size) if at < size => Some(format!("{}: body ended at byte {byte} of {}", self.url, self.base + size)),
                _ => {
                    self.body = None;
                    self.ended = true;
                    None
                }
            },
        };
        let received = !chunks.is_empty();
        self.chunks.extend(chunks);
        if let Some(message) = failure {
            let err = Error::new(ErrorKind::Unreachable, message);
            if !received {
                return Err(err);
            }
            self.deferred = Some(err);
        }
        Ok(received)
    }

    /// Refills `chunks`; `Ok(false)` at the end of the object.
    fn fill(&mut self) -> Result<bool> {
        let mut schedule = Schedule::new(self.ctx.max_retries);
        loop {
            let result = if let Some(err) = self.deferred.take() {
                Err(err)
            } else if self.ended {
                return Ok(false);
            } else if self.body.is_none() {
                match self.start_body() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                }
            } else {
                self.next_batch()
            };
            match result {
                Ok(received) => return Ok(received),
                Err(err) if is_transient(&err) => {
                    self.body = None;
                    let Some(delay) = schedule.next_delay(&err) else {
                        return Err(schedule.exhausted(err));
                    };
                    tracing::warn!(object = %self.url, attempt = schedule.attempt() - 1, offset = self.base + self.offset, cause = %err, delay_ms = delay.as_millis() as u64, "resuming download with a ranged GET");
                    std::thread::sleep(delay);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunks.is_empty() {
            if self.body.is_none() && self.deferred.is_none() && self.size.is_some_and(|s| self.offset >= s) {
                return Ok(0);
            }
            if !self.fill().map_err(Error::into_io)? {
                return Ok(0);
            }
        }
        let front = self.chunks.front_mut().expect("a chunk is queued");
        let n = buf.len().min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.advance(n);
        if front.is_empty() {
            self.chunks.pop_front();
        }
        self.offset += n as u64;
        if let Some(size) = self.size {
            if self.offset > size {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: more bytes than its Content-Length {size}", self.url),
                )
                .into_io());
            }
        }
        Ok(n)
    }
}
