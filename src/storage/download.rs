//! Many objects read in a known order, each fetched as parts transferred in parallel into
//! bounded memory.
//!
//! One S3 connection carries what one connection gets (tens of MB/s on the internet,
//! whatever the machine); throughput comes only from many connections receiving at once.
//! A restore reads its partitions in a known order, each from start to end, so this module
//! splits every object into parts of [`Limits::part_size`] bytes and keeps
//! [`Limits::transfers`] parts being received at once, each on its own connection, into
//! buffers the readers then consume in order. A backup of one 1 GiB partition and one of
//! two hundred small ones get the same parallelism: parts of the objects being read come
//! first, and with nothing left to start there, the next objects in the order are fetched
//! ahead of their readers.
//!
//! Memory: at most [`Limits::parts_held`] parts are held at once (started and not yet
//! read to their end), each at most `part_size` bytes, whatever the objects' sizes. A part
//! is started (its request sent) once it has a place; its body is received once one of
//! the `transfers` slots is free, so the request's round trip overlaps other transfers.
//!
//! Why it cannot deadlock: places are given to the parts of opened objects first (the one
//! holding the fewest first), each object's parts in order; parts of objects not yet
//! opened are started only when no opened object has a part left to start, strictly in
//! the order the objects will be opened. So every held part is in a run that starts at
//! its reader's next part, and every reader can make progress.
//!
//! Each part checks its answer: the length asked for, the object's size as listed, and the
//! object's version (ETag, pinned after the first answer), so a part cut short or an object
//! that changed while being read is an error, never a gap or a splice. Retries and resumes
//! of a broken body are the storage's own ([`super::retry`], the S3 reader).

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{ObjectMeta, ObjectReader, RangeAnswer, Storage};
use crate::constants::DOWNLOAD_MEMORY;
use crate::error::{Error, ErrorKind, Result};

/// Bytes read from a part's body per call at most, between checks for a closed download.
const READ_CHUNK: usize = 256 * 1024;

/// How a download shares the link and memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Parts received at once, each on its own connection.
    pub transfers: usize,
    /// Bytes per part.
    pub part_size: u64,
    /// Parts held at most: started (request sent, body being received or received) and
    /// not yet read to their end. Memory is at most `parts_held` x `part_size`.
    pub parts_held: usize,
}

impl Limits {
    /// Limits for `transfers` connections and parts of `part_size`: parts held up to
    /// [`DOWNLOAD_MEMORY`] bytes, and at least half as many again as are received, for
    /// requests sent ahead (their round trips overlap the transfers) and parts waiting
    /// for their reader.
    pub fn new(transfers: usize, part_size: u64) -> Limits {
        let transfers = transfers.max(1);
        let part_size = part_size.max(1);
        let budget = usize::try_from(DOWNLOAD_MEMORY / part_size).unwrap_or(usize::MAX);
        Limits {
            transfers,
            part_size,
            // At most three times the connections: tiny parts would otherwise mean
            // hundreds of requests (and threads) waiting at once.
            parts_held: budget.min(transfers * 3).max(transfers + transfers.div_ceil(2)),
        }
    }
}

/// Objects read in a known order, their parts fetched in parallel (see the module doc).
/// From storage that is not remote (a directory), objects are simply opened: reading a
/// local file needs no parts.
pub struct Download {
    shared: Arc<Shared>,
    direct: bool,
}

/// What the download's part threads and readers share.
struct Shared {
    storage: Arc<dyn Storage>,
    limits: Limits,
    state: Mutex<State>,
    changed: Condvar,
    /// Set when the download is dropped: part threads stop at their next read.
    closed: AtomicBool,
}

/// The state of every object and part, under [`Shared::state`].
struct State {
    objects: Vec<Object>,
    /// Parts held (see [`Limits::parts_held`]).
    held: usize,
    /// Parts whose body is being received.
    receiving: usize,
    /// Parts answered and waiting for a transfer slot, by start ticket.
    waiting: BTreeSet<u64>,
    /// Next start ticket: parts get their transfer slots in the order they started.
    tickets: u64,
    /// Buffers of parts read to their end, for the next parts.
    spare: Vec<Vec<u8>>,
}

/// A byte range of an object to read: the whole object, or a slice of it (pgBackRest's
/// bundles hold many files, each a range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The object's key.
    pub key: String,
    /// Where the range starts in the object.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The whole object's size, when known (listed): every answer is checked against it.
    pub object_size: Option<u64>,
}

impl Piece {
    /// The whole of a listed object.
    pub fn whole(meta: &ObjectMeta) -> Piece {
        Piece {
            key: meta.key.clone(),
            offset: 0,
            len: meta.size,
            object_size: Some(meta.size),
        }
    }

    /// Whether this is the whole object.
    fn is_whole(&self) -> bool {
        self.offset == 0 && self.object_size == Some(self.len)
    }
}

/// One object (or range of one) of the download.
struct Object {
    meta: Piece,
    parts: Vec<Part>,
    /// Parts started so far (in order).
    started: usize,
    /// Parts held: started, not yet read to their end by the reader.
    held: usize,
    /// A reader has opened the object.
    opened: bool,
    /// The reader is done with it (read to the end, or dropped).
    finished: bool,
    /// The version the first answer named; later parts are pinned to it.
    etag: Option<String>,
}

/// Where one part is.
enum Part {
    /// Not started.
    Idle,
    /// Requested, or being received.
    Started,
    /// Received whole.
    Ready(Vec<u8>),
    /// Could not be fetched.
    Failed(Error),
    /// Handed to the reader.
    Taken,
}

impl Download {
    /// Starts fetching `objects` (in the order they will be opened) from `storage`.
    pub fn start(storage: Arc<dyn Storage>, objects: Vec<ObjectMeta>, limits: Limits) -> Download {
        Download::start_pieces(storage, objects.iter().map(Piece::whole).collect(), limits)
    }

    /// Starts fetching `pieces` (whole objects or ranges of them, in the order they will
    /// be opened) from `storage`.
    pub fn start_pieces(storage: Arc<dyn Storage>, pieces: Vec<Piece>, limits: Limits) -> Download {
        let part_size = limits.part_size;
        let objects = pieces
            .into_iter()
            .map(|meta| Object {
                parts: (0..meta.len.div_ceil(part_size).max(1)).map(|_| Part::Idle).collect(),
                meta,
                started: 0,
                held: 0,
                opened: false,
                finished: false,
                etag: None,
            })
            .collect();
        let shared = Arc::new(Shared {
            storage,
            limits,
            state: Mutex::new(State {
                objects,
                held: 0,
                receiving: 0,
                waiting: BTreeSet::new(),
                tickets: 0,
                spare: Vec::new(),
            }),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let direct = !shared.storage.is_remote();
        if !direct {
            shared.schedule(&mut shared.lock());
        }
        Download { shared, direct }
    }

    /// Opens object `index` (of the list given to [`Download::start`]) for reading, once.
    pub fn open(&self, index: usize) -> Result<ObjectReader> {
        let mut state = self.shared.lock();
        let object = state
            .objects
            .get_mut(index)
            .filter(|o| !o.opened)
            .ok_or_else(|| Error::new(ErrorKind::LocalIo, format!("download: object {index} opened twice or unknown")))?;
        object.opened = true;
        if self.direct {
            let piece = object.meta.clone();
            drop(state);
            if piece.is_whole() {
                return self.shared.storage.open(&piece.key);
            }
            return self.shared.storage.open_range(&piece.key, piece.offset, piece.offset + piece.len);
        }
        let name = format!("{}/{}", self.shared.storage.describe(), object.meta.key);
        self.shared.schedule(&mut state);
        Ok(Box::new(PartsReader {
            shared: Arc::clone(&self.shared),
            index,
            name,
            next: 0,
            current: Vec::new(),
            pos: 0,
            holding: false,
            ended: false,
        }))
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every part that may start now (see the module doc for the order).
    fn schedule(self: &Arc<Self>, state: &mut State) {
        while state.held < self.limits.parts_held && !self.closed.load(Ordering::Relaxed) {
            let Some(index) = next_object(&state.objects) else {
                return;
            };
            let object = &mut state.objects[index];
            let part = object.started;
            object.started += 1;
            object.held += 1;
            object.parts[part] = Part::Started;
            let (offset, len) = (object.meta.offset, object.meta.len);
            let start = offset + part as u64 * self.limits.part_size;
            let end = (start + self.limits.part_size).min(offset + len);
            let job = Job {
                index,
                part,
                key: object.meta.key.clone(),
                size: object.meta.object_size,
                start,
                end,
                whole: object.parts.len() == 1 && object.meta.is_whole(),
                etag: object.etag.clone(),
                ticket: state.tickets,
            };
            state.tickets += 1;
            state.held += 1;
            let shared = Arc::clone(self);
            std::thread::spawn(move || shared.fetch(job));
        }
    }

    /// Runs on a part's own thread: requests the part, waits for a transfer slot,
    /// receives it and hands it over (or the failure).
    fn fetch(self: Arc<Self>, job: Job) {
        let url = format!("{}/{}", self.storage.describe(), job.key);
        let result = self.request(&job, &url).map_err(|e| listed_yet_gone(e, &url)).and_then(|reader| {
            self.take_slot(job.ticket)?;
            let received = self.receive(reader, &job, &url);
            let mut state = self.lock();
            state.receiving -= 1;
            drop(state);
            self.changed.notify_all();
            received
        });
        let mut state = self.lock();
        state.waiting.remove(&job.ticket);
        let object = &mut state.objects[job.index];
        if object.finished || self.closed.load(Ordering::Relaxed) {
            object.held -= 1;
            state.held -= 1;
            if let Ok(buffer) = result {
                state.spare.push(buffer);
            }
        } else {
            object.parts[job.part] = match result {
                Ok(buffer) => Part::Ready(buffer),
                Err(e) => Part::Failed(e),
            };
        }
        self.schedule(&mut state);
        drop(state);
        self.changed.notify_all();
    }

    /// Sends the part's request and checks the answer against the listing and the
    /// object's pinned version.
    fn request(&self, job: &Job, url: &str) -> Result<ObjectReader> {
        if job.whole {
            return self.storage.open(&job.key);
        }
        let Some(pending) = self.storage.request_range(&job.key, job.start, job.end, job.etag.as_deref()) else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{url}: this storage cannot read byte ranges"),
            ));
        };
        let RangeAnswer { reader, total, etag } = pending()?;
        match total {
            None => Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{url}: the server answered a request for bytes {}-{} with the whole object (no Range support)",
                    job.start, job.end
                ),
            )),
            Some(total) if job.size.is_some_and(|listed| listed != total) => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{url}: the object has {total} bytes but was listed with {}; it changed since it was listed",
                    job.size.unwrap_or(0)
                ),
            )),
            Some(total) if total < job.end => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{url}: the object has {total} bytes, fewer than the {} its description says are there",
                    job.end
                ),
            )),
            Some(_) => {
                let mut state = self.lock();
                let pinned = &mut state.objects[job.index].etag;
                match (pinned.as_deref(), etag) {
                    (Some(a), Some(b)) if a != b => Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{url}: the object changed while it was being read (ETag {a}, then {b})"),
                    )),
                    (None, Some(b)) => {
                        *pinned = Some(b);
                        Ok(reader)
                    }
                    _ => Ok(reader),
                }
            }
        }
    }

    /// Waits until the part with `ticket` may receive: a transfer slot is free and no
    /// part started before it is waiting for one.
    fn take_slot(&self, ticket: u64) -> Result<()> {
        let mut state = self.lock();
        state.waiting.insert(ticket);
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::LocalIo, "download closed"));
            }
            if state.receiving < self.limits.transfers && state.waiting.first() == Some(&ticket) {
                state.waiting.remove(&ticket);
                state.receiving += 1;
                return Ok(());
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Reads the part's body into a buffer, checking its length.
    fn receive(&self, mut reader: ObjectReader, job: &Job, url: &str) -> Result<Vec<u8>> {
        let want = (job.end - job.start) as usize;
        let mut buffer = self.lock().spare.pop().unwrap_or_default();
        // Received straight into the part's buffer (no copy, no buffer per transfer),
        // its memory touched only as the bytes arrive.
        buffer.clear();
        buffer.reserve_exact(want);
        while buffer.len() < want {
            if self.closed.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::LocalIo, "download closed"));
            }
            let chunk = (want - buffer.len()).min(READ_CHUNK) as u64;
            match (&mut reader).take(chunk).read_to_end(&mut buffer) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{url}: bytes {}-{} ended after {} bytes; the object is shorter than listed (changed while being read?)",
                            job.start,
                            job.end,
                            buffer.len()
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, format!("{url}: {e}")))),
            }
        }
        // Anything after the bytes asked for is an answer to another question.
        let mut probe = [0u8; 1];
        loop {
            match reader.read(&mut probe) {
                Ok(0) => return Ok(buffer),
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{url}: bytes {}-{} returned more than asked for", job.start, job.end),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io_ref(&e).unwrap_or_else(|| Error::new(ErrorKind::Unreachable, format!("{url}: {e}")))),
            }
        }
    }
}

/// A listed object that is not there when fetched changed under the restore: that is
/// never an absence.
fn listed_yet_gone(err: Error, url: &str) -> Error {
    if err.kind() != ErrorKind::NotFound {
        return err;
    }
    Error::new(
        ErrorKind::Corrupt,
        format!("{url}: listed, but gone when fetched; the backup changed while it was being restored"),
    )
}

/// The object whose next part starts now: among opened objects with parts left to
/// start, the one holding the fewest (the earliest of those); else the first object not
/// yet opened with parts left to start, but only when every earlier one has started all
/// of its parts.
fn next_object(objects: &[Object]) -> Option<usize> {
    let startable = |o: &Object| !o.finished && o.started < o.parts.len();
    let opened = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.opened && startable(o))
        .min_by_key(|(i, o)| (o.held, *i))
        .map(|(i, _)| i);
    opened.or_else(|| objects.iter().position(|o| !o.opened && o.started < o.parts.len()))
}

/// One part to fetch.
struct Job {
    index: usize,
    part: usize,
    key: String,
    /// The object's size as listed, when known.
    size: Option<u64>,
    start: u64,
    end: u64,
    /// The object is one part: fetched with a plain GET.
    whole: bool,
    /// The object's version, when already known.
    etag: Option<String>,
    ticket: u64,
}

/// Reads one object's parts in order as they arrive.
struct PartsReader {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    /// The next part to take.
    next: usize,
    /// The part being read, and how far.
    current: Vec<u8>,
    pos: usize,
    /// `current` holds a place (see [`Limits::parts_held`]).
    holding: bool,
    ended: bool,
}

impl PartsReader {
    /// Gives back the part just read to its end, and waits for the next one; `false`
    /// at the end of the object.
    fn advance(&mut self) -> Result<bool> {
        let mut state = self.shared.lock();
        if self.holding {
            self.holding = false;
            state.objects[self.index].held -= 1;
            state.held -= 1;
            let done = std::mem::take(&mut self.current);
            state.spare.push(done);
            self.pos = 0;
            self.shared.schedule(&mut state);
        }
        if self.next == state.objects[self.index].parts.len() {
            state.objects[self.index].finished = true;
            self.ended = true;
            return Ok(false);
        }
        loop {
            if self.shared.closed.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::LocalIo, format!("{}: the download was closed", self.name)));
            }
            let part = &mut state.objects[self.index].parts[self.next];
            match std::mem::replace(part, Part::Taken) {
                Part::Ready(buffer) => {
                    self.current = buffer;
                    self.holding = true;
                    self.next += 1;
                    return Ok(true);
                }
                Part::Failed(e) => {
                    // The failed part gives its place back; the reader stays at it, so
                    // reading again fails the same way.
                    *part = Part::Failed(e.clone());
                    return Err(e);
                }
                other => *part = other,
            }
            state = self.shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended || !self.advance().map_err(Error::into_io)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for PartsReader {
    /// Gives back every place this reader's object holds; parts still being fetched give
    /// theirs back when they end.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let State { objects, held, spare, .. } = &mut *state;
        let object = &mut objects[self.index];
        if self.holding {
            object.held -= 1;
            *held -= 1;
            spare.push(std::mem::take(&mut self.current));
        }
        object.finished = true;
        for part in &mut object.parts[self.next..] {
            match std::mem::replace(part, Part::Taken) {
                Part::Ready(buffer) => {
                    spare.push(buffer);
                    object.held -= 1;
                    *held -= 1;
                }
                Part::Failed(_) => {
                    object.held -= 1;
                    *held -= 1;
                }
                other => *part = other,
            }
        }
        self.shared.schedule(&mut state);
        drop(state);
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Chunk, Page, PendingRange};
    use std::collections::HashMap;
    use std::fs::File;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Remote storage in memory that counts what is in flight. A body reads in chunks of
    /// 1 KiB, `delay` per chunk.
    #[derive(Default)]
    struct Fake {
        objects: Mutex<HashMap<String, (Vec<u8>, String)>>,
        /// Byte ranges whose answer is cut short / never found.
        short: Mutex<Vec<(String, u64)>>,
        delay: Duration,
        /// Readers alive (requests answered, bodies not dropped), and the most at once.
        alive: Arc<AtomicUsize>,
        most_alive: Arc<AtomicUsize>,
        /// Bodies being read at once, and the most.
        reading: Arc<AtomicUsize>,
        most_reading: Arc<AtomicUsize>,
    }

    impl Fake {
        fn with(objects: &[(&str, Vec<u8>)]) -> Fake {
            let fake = Fake::default();
            for (key, data) in objects {
                fake.set(key, data.clone(), "v1");
            }
            fake
        }

        fn set(&self, key: &str, data: Vec<u8>, etag: &str) {
            self.objects.lock().unwrap().insert(key.to_string(), (data, etag.to_string()));
        }

        fn body(&self, bytes: Vec<u8>) -> ObjectReader {
            let n = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_alive.fetch_max(n, Ordering::SeqCst);
            Box::new(Body {
                data: io::Cursor::new(bytes),
                delay: self.delay,
                alive: Arc::clone(&self.alive),
                reading: Arc::clone(&self.reading),
                most_reading: Arc::clone(&self.most_reading),
                started: false,
            })
        }
    }

    struct Body {
        data: io::Cursor<Vec<u8>>,
        delay: Duration,
        alive: Arc<AtomicUsize>,
        reading: Arc<AtomicUsize>,
        most_reading: Arc<AtomicUsize>,
        started: bool,
    }

    impl Read for Body {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.started {
                self.started = true;
                let n = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_reading.fetch_max(n, Ordering::SeqCst);
            }
            std::thread::sleep(self.delay);
            let n = buf.len().min(1024);
            self.data.read(&mut buf[..n])
        }
    }

    impl Drop for Body {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            if self.started {
                self.reading.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    impl Storage for Fake {
        fn describe(&self) -> String {
            "fake://".into()
        }
        fn open(&self, key: &str) -> Result<ObjectReader> {
            let data = self.objects.lock().unwrap().get(key).map(|(d, _)| d.clone());
            match data {
                Some(d) => Ok(self.body(d)),
                None => Err(Error::new(ErrorKind::NotFound, format!("{key}: no such key"))),
            }
        }
        fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
            let found = self.objects.lock().unwrap().get(key).cloned();
            let short = self.short.lock().unwrap().iter().any(|(k, s)| k == key && *s == start);
            let etag = etag.map(str::to_string);
            let body = found.map(|(data, version)| {
                let mut end = (end as usize).min(data.len());
                if short {
                    end -= 1;
                }
                (self.body(data[start as usize..end].to_vec()), data.len() as u64, version)
            });
            let key = key.to_string();
            Some(Box::new(move || match body {
                None => Err(Error::new(ErrorKind::NotFound, format!("{key}: no such key"))),
                Some((_, _, version)) if etag.as_ref().is_some_and(|e| *e != version) => {
                    Err(Error::new(ErrorKind::Corrupt, format!("{key}: precondition failed")))
                }
                Some((reader, total, version)) => Ok(RangeAnswer {
                    reader,
                    total: Some(total),
                    etag: Some(version),
                }),
            }))
        }
        fn stat(&self, _key: &str) -> Result<Option<u64>> {
            Ok(None)
        }
        fn list_chunk(&self, _prefix: &str, _recursive: bool, _token: Option<&str>) -> Result<Chunk> {
            Ok(Chunk::default())
        }
        fn list_page(&self, _prefix: &str, _start_after: Option<&str>, _max_keys: usize) -> Result<Page> {
            Ok(Page::default())
        }
        fn is_remote(&self) -> bool {
            true
        }
        fn holds_objects(&self) -> Result<bool> {
            Ok(true)
        }
        fn put(&self, _key: &str, _source: &File) -> Result<()> {
            Ok(())
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn metas(fake: &Fake, keys: &[&str]) -> Vec<ObjectMeta> {
        let objects = fake.objects.lock().unwrap();
        keys.iter()
            .map(|k| ObjectMeta {
                key: k.to_string(),
                size: objects[*k].0.len() as u64,
                modified: None,
            })
            .collect()
    }

    /// Reads every object with `readers` threads taking them in order, as a restore
    /// does; fails (instead of hanging) after a minute.
    fn read_all(fake: Arc<Fake>, keys: &[&str], limits: Limits, readers: usize) -> Vec<Result<Vec<u8>>> {
        let list = metas(&fake, keys);
        let count = list.len();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let download = Download::start(fake, list, limits);
            let next = Mutex::new(0usize);
            let results = Mutex::new((0..count).map(|_| None).collect::<Vec<_>>());
            std::thread::scope(|s| {
                for _ in 0..readers {
                    s.spawn(|| loop {
                        let index = {
                            let mut n = next.lock().unwrap();
                            *n += 1;
                            *n - 1
                        };
                        if index >= count {
                            return;
                        }
                        let mut out = Vec::new();
                        let result = download
                            .open(index)
                            .and_then(|mut r| r.read_to_end(&mut out).map_err(|e| Error::from_io_ref(&e).unwrap()))
                            .map(|_| out);
                        results.lock().unwrap()[index] = Some(result);
                    });
                }
            });
            let _ = done.send(results.into_inner().unwrap().into_iter().map(Option::unwrap).collect());
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the download finished (no deadlock)")
    }

    #[test]
    fn objects_of_every_size_arrive_whole_and_in_order() {
        let sizes = [0usize, 1, 4095, 4096, 4097, 40_000, 3 * 4096 + 5];
        let keys: Vec<String> = (0..sizes.len()).map(|i| format!("part_{i}")).collect();
        let objects: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .zip(sizes)
            .enumerate()
            .map(|(i, (k, n))| (k.as_str(), data(n, i as u8)))
            .collect();
        let fake = Arc::new(Fake::with(&objects));
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        for readers in [1, 2, 3] {
            for transfers in [1, 2, 5] {
                let results = read_all(Arc::clone(&fake), &key_refs, Limits::new(transfers, 4096), readers);
                for ((_, want), got) in objects.iter().zip(results) {
                    assert_eq!(&got.unwrap(), want, "{readers} readers, {transfers} transfers");
                }
            }
        }
        assert_eq!(fake.alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn one_large_object_is_received_over_every_connection_within_the_memory_bound() {
        let big = data(64 * 4096, 7);
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(2),
            ..Fake::with(&[("big", big.clone())])
        });
        let limits = Limits::new(4, 4096);
        let got = read_all(Arc::clone(&fake), &["big"], limits, 1).pop().unwrap().unwrap();
        assert_eq!(got, big);
        assert_eq!(
            fake.most_reading.load(Ordering::SeqCst),
            4,
            "every transfer slot was used, and no more"
        );
        assert!(
            fake.most_alive.load(Ordering::SeqCst) <= limits.parts_held,
            "at most parts_held parts in memory or in flight"
        );
    }

    #[test]
    fn small_objects_are_fetched_ahead_of_their_reader() {
        let objects: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("p{i:02}"), data(3000, i))).collect();
        let refs: Vec<(&str, Vec<u8>)> = objects.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(2),
            ..Fake::with(&refs)
        });
        let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
        let limits = Limits::new(4, 4096);
        let results = read_all(Arc::clone(&fake), &keys, limits, 1);
        assert!(results.into_iter().zip(&objects).all(|(got, (_, want))| got.unwrap() == *want));
        assert_eq!(
            fake.most_reading.load(Ordering::SeqCst),
            4,
            "one reader, yet four objects received at once"
        );
        assert!(fake.most_alive.load(Ordering::SeqCst) <= limits.parts_held);
    }

    #[test]
    fn a_tight_budget_never_deadlocks() {
        let objects: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| (format!("p{i:02}"), data(1000 + 3000 * (i as usize % 4), i)))
            .collect();
        let refs: Vec<(&str, Vec<u8>)> = objects.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
        let fake = Arc::new(Fake::with(&refs));
        let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
        for parts_held in 1..4 {
            for readers in 1..5 {
                let limits = Limits {
                    transfers: 2,
                    part_size: 1024,
                    parts_held,
                };
                let results = read_all(Arc::clone(&fake), &keys, limits, readers);
                assert!(results.into_iter().zip(&objects).all(|(got, (_, want))| got.unwrap() == *want));
            }
        }
    }

    #[test]
    fn limits_hold_the_memory_budget_and_more_parts_than_transfers() {
        let l = Limits::new(10, 1 << 20);
        assert_eq!((l.transfers, l.parts_held), (10, (DOWNLOAD_MEMORY >> 20) as usize));
        assert!(l.parts_held as u64 * l.part_size <= DOWNLOAD_MEMORY);
        // Parts too large for the budget: still half as many again as transfers.
        assert_eq!(Limits::new(10, 64 << 20).parts_held, 15);
        assert_eq!(Limits::new(0, 0).transfers, 1);
    }

    #[test]
    fn a_changed_object_or_a_short_part_is_an_error_never_a_splice() {
        let fake = Arc::new(Fake::with(&[("a", data(10_000, 1)), ("b", data(10_000, 2))]));
        fake.short.lock().unwrap().push(("a".into(), 4096));
        let results = read_all(Arc::clone(&fake), &["a", "b"], Limits::new(2, 4096), 1);
        let err = results[0].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.message().contains("fake:///a: bytes 4096-8192 ended after 4095 bytes"), "{err}");
        assert_eq!(
            results[1].as_ref().unwrap(),
            &data(10_000, 2),
            "a failed object does not stop the others"
        );

        // The object is replaced between the first answer and a later part.
        let fake = Arc::new(Fake::with(&[("c", data(40_000, 3))]));
        let list = metas(&fake, &["c"]);
        let limits = Limits {
            transfers: 1,
            part_size: 4096,
            parts_held: 2,
        };
        let download = Download::start(Arc::clone(&fake) as Arc<dyn Storage>, list, limits);
        let mut reader = download.open(0).unwrap();
        let mut first = vec![0u8; 4096];
        reader.read_exact(&mut first).unwrap();
        fake.set("c", data(40_000, 4), "v2");
        let mut rest = Vec::new();
        let err = Error::from_io_ref(&reader.read_to_end(&mut rest).unwrap_err()).unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }

    #[test]
    fn a_listed_object_that_is_gone_is_corrupt_not_absent() {
        let fake = Arc::new(Fake::with(&[("small", data(10, 1)), ("large", data(10_000, 2))]));
        let list = metas(&fake, &["small", "large"]);
        fake.objects.lock().unwrap().clear();
        let download = Download::start(fake, list, Limits::new(2, 4096));
        for index in 0..2 {
            let mut out = Vec::new();
            let err = download
                .open(index)
                .and_then(|mut r| r.read_to_end(&mut out).map_err(|e| Error::from_io_ref(&e).unwrap()));
            let err = err.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(err.message().contains("listed, but gone when fetched"), "{err}");
        }
    }

    #[test]
    fn a_reader_dropped_early_gives_its_places_back() {
        let objects: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("p{i}"), data(20_000, i))).collect();
        let refs: Vec<(&str, Vec<u8>)> = objects.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
        let fake = Arc::new(Fake::with(&refs));
        let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
        let download = Download::start(Arc::clone(&fake) as Arc<dyn Storage>, metas(&fake, &keys), Limits::new(2, 4096));
        let mut first = download.open(0).unwrap();
        let mut some = [0u8; 100];
        first.read_exact(&mut some).unwrap();
        drop(first);
        for (index, (_, want)) in objects.iter().enumerate().skip(1) {
            let mut got = Vec::new();
            download.open(index).unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(&got, want);
        }
        assert!(download.open(1).is_err(), "an object opens once");
    }
}
