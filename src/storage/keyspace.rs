//! Listing a large prefix as disjoint key ranges at the same time.
//!
//! One S3 listing is a chain of requests, each waiting for the previous one's last key,
//! so 200,000 WAL names are 200 round trips in a row. Here the key space after a known
//! key is cut into pieces `[lo, hi)` at boundaries that are fixed-width uppercase hex
//! strings (the leading digits of WAL file names: the timeline, then the log number), and
//! several pieces are listed at once. The pieces are contiguous, so together they hold
//! every key exactly once, whether it is a WAL name or not. The bulk of a piece is asked
//! for with `lo` itself as the prefix, so the server only looks at that piece (simple S3
//! servers spend time in proportion to the keys under the prefix of a request). When a
//! piece finds nothing, one probe asks for the first key at the frontier: the listing
//! jumps across a gap to the next timeline, or ends.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::{ObjectMeta, Storage};
use crate::error::{Error, ErrorKind, Result};

/// The most keys one request may return (the S3 maximum).
const PAGE: usize = 1000;

/// How the key space is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Width of the hex boundaries (after the listing prefix).
    pub digits: usize,
    /// Keys a piece is expected to hold when the archive is dense, to size the last page
    /// of a piece so that it does not run far into the next one.
    pub keys_per_piece: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Shape {
    /// The cut for WAL names of `segment_size` bytes: eight timeline digits and as many
    /// log-number digits as make pieces of at least 1,024 segments.
    pub fn for_wal(segment_size: u64, concurrency: usize) -> Shape {
        let per_log = (1u64 << 32) / segment_size.clamp(1, 1 << 32);
        let mut log_digits = 8;
        while log_digits > 0 && per_log << (4 * (8 - log_digits)) < 1024 {
            log_digits -= 1;
        }
        Shape {
            digits: 8 + log_digits,
            keys_per_piece: (per_log << (4 * (8 - log_digits))) as usize,
            concurrency: concurrency.max(1),
        }
    }
}

/// The smallest boundary (`prefix` followed by `digits` uppercase hex digits) that sorts
/// after `key`, or `None` when no boundary does.
pub fn boundary_after(prefix: &str, key: &str, digits: usize) -> Option<String> {
    let name = key.strip_prefix(prefix)?.as_bytes();
    let hex_len = name
        .iter()
        .take(digits)
        .take_while(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
        .count();
    let head = std::str::from_utf8(&name[..hex_len]).ok()?;
    let pad = |s: String| format!("{prefix}{s:0<digits$}");
    if hex_len == digits || name.get(hex_len).is_some_and(|c| *c > b'F') {
        // Every boundary that starts with `head` sorts at or before `key`: the next one
        // starts with `head + 1` (none when `head` is all F).
        let next = increment_hex(head)?;
        return Some(pad(next));
    }
    match name.get(hex_len) {
        // `key` is a proper prefix of `head` padded with zeros, or sorts before it.
        None | Some(b'\0'..=b'/') => Some(pad(head.to_string())),
        // Between '9' and 'A'.
        Some(_) => Some(pad(format!("{head}A"))),
    }
}

/// `hex` plus one, as a string of the same width; `None` on overflow (or when empty).
fn increment_hex(hex: &str) -> Option<String> {
    let mut digits = hex.as_bytes().to_vec();
    for d in digits.iter_mut().rev() {
        match *d {
            b'F' => *d = b'0',
            b'9' => {
                *d = b'A';
                return String::from_utf8(digits).ok();
            }
            _ => {
                *d += 1;
                return String::from_utf8(digits).ok();
            }
        }
    }
    None
}

/// Work for one listing thread.
enum Task {
    /// List every key in `[lo, hi)` (`hi` absent: to the end of the prefix); when
    /// `lo_seen`, `lo` itself was listed already and is skipped.
    Piece { lo: String, lo_seen: bool, hi: Option<String> },
    /// Find the first key at or after `from`.
    Probe { from: String },
}

/// What a listing thread reports.
enum Report {
    /// Objects of a piece, in key order within the piece.
    Objects(Vec<ObjectMeta>),
    /// A piece is done: how many keys it held, and the first key past its end if the
    /// server returned one.
    PieceDone { found: usize, next: Option<String> },
    /// A probe is done: the first key at or after the frontier, if any.
    ProbeDone(Option<String>),
    /// A request failed after its retries.
    Failed(Error),
}

/// Lists every key below `prefix` that sorts after `after`, passing objects to `each` as
/// they arrive (in key order within a piece, pieces in any order).
pub fn list_after(
    storage: &dyn Storage,
    prefix: &str,
    after: &str,
    shape: Shape,
    each: &mut dyn FnMut(Vec<ObjectMeta>) -> Result<()>,
) -> Result<()> {
    let (task_tx, task_rx) = mpsc::channel::<Task>();
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (report_tx, report_rx) = mpsc::channel::<Report>();
    std::thread::scope(|scope| {
        for _ in 0..shape.concurrency {
            let (tasks, reports) = (Arc::clone(&task_rx), report_tx.clone());
            scope.spawn(move || loop {
                let task = match tasks.lock().map(|rx| rx.recv()) {
                    Ok(Ok(task)) => task,
                    _ => return,
                };
                let report = match task {
                    Task::Piece { lo, lo_seen, hi } => {
                        let piece = Piece {
                            prefix,
                            lo: &lo,
                            lo_seen,
                            hi: hi.as_deref(),
                        };
                        piece.list(storage, shape.keys_per_piece, &reports)
                    }
                    Task::Probe { from } => probe(storage, prefix, &from),
                };
                if reports.send(report.unwrap_or_else(Report::Failed)).is_err() {
                    return;
                }
            });
        }
        drop(report_tx);
        let result = dispatch(prefix, after, shape, &task_tx, &report_rx, each);
        drop(task_tx);
        result
    })
}

/// The dispatcher: hands out contiguous pieces in key order, at most `shape.concurrency`
/// at a time, consumes the objects, and decides when to probe and when the listing is
/// complete. Every piece starts where the previous one ended, so no key can be skipped;
/// what a piece or a probe learns about the next existing key only makes the next piece
/// reach further.
fn dispatch(
    prefix: &str,
    after: &str,
    shape: Shape,
    tasks: &mpsc::Sender<Task>,
    reports: &mpsc::Receiver<Report>,
    each: &mut dyn FnMut(Vec<ObjectMeta>) -> Result<()>,
) -> Result<()> {
    let send = |task: Task| {
        tasks
            .send(task)
            .map_err(|_| Error::new(ErrorKind::LocalIo, "listing threads stopped unexpectedly"))
    };
    // Where the next piece starts (and whether that key was listed already); `None` once
    // every key is covered by a piece.
    let mut frontier = Some((after.to_string(), true));
    // The smallest key known to exist at or past the frontier.
    let mut known_next: Option<String> = None;
    let mut in_flight = 0usize;
    let mut probing = false;
    loop {
        while !probing && in_flight < shape.concurrency {
            let Some((lo, lo_seen)) = frontier.take() else { break };
            let target = known_next.take().filter(|k| *k > lo).unwrap_or_else(|| lo.clone());
            let hi = boundary_after(prefix, &target, shape.digits);
            frontier = hi.clone().map(|hi| (hi, false));
            send(Task::Piece { lo, lo_seen, hi })?;
            in_flight += 1;
        }
        if in_flight == 0 {
            return Ok(());
        }
        let report = reports
            .recv()
            .map_err(|_| Error::new(ErrorKind::LocalIo, "listing threads stopped unexpectedly"))?;
        match report {
            Report::Objects(objects) => each(objects)?,
            Report::Failed(e) => return Err(e),
            Report::PieceDone { found, next } => {
                in_flight -= 1;
                let Some((edge, _)) = &frontier else { continue };
                match next {
                    Some(key) if key >= *edge && known_next.as_ref().is_none_or(|k| key < *k) => known_next = Some(key),
                    None if found == 0 && known_next.is_none() && !probing => {
                        send(Task::Probe { from: edge.clone() })?;
                        in_flight += 1;
                        probing = true;
                    }
                    _ => {}
                }
            }
            Report::ProbeDone(next) => {
                in_flight -= 1;
                probing = false;
                match next {
                    Some(key) => known_next = Some(key),
                    None => frontier = None,
                }
            }
        }
    }
}

/// One piece `[lo, hi)` of the key space below `prefix`.
struct Piece<'a> {
    prefix: &'a str,
    lo: &'a str,
    lo_seen: bool,
    hi: Option<&'a str>,
}

impl Piece<'_> {
    /// Lists the piece, sending its objects as they arrive. The keys that start with `lo`
    /// (the whole of a dense piece) are asked for with `lo` itself as the prefix, which
    /// simple servers answer fastest. The rest (keys after those and before `hi`, which
    /// only a piece spanning a jump or a digit carry can hold) is asked for with the
    /// bounds' common prefix, and shows the first key past the piece.
    fn list(&self, storage: &dyn Storage, expected: usize, reports: &mpsc::Sender<Report>) -> Result<Report> {
        let mut found = 0usize;
        let mut start = self.lo_seen.then(|| self.lo.to_string());
        if !self.lo_seen {
            loop {
                let want = (expected.saturating_sub(found).max(expected / 4) + 64).min(PAGE);
                let page = storage.list_page(self.lo, start.as_deref(), want)?;
                let (sent, next) = self.forward(page.objects, &mut start, reports)?;
                found += sent;
                if next.is_some() || !page.truncated {
                    break;
                }
            }
        }
        if !self.has_tail() {
            return Ok(Report::PieceDone { found, next: None });
        }
        let wide = match self.hi {
            Some(hi) => &self.lo[..common_prefix(self.lo, hi).max(self.prefix.len())],
            None => self.prefix,
        };
        let mut first = !self.lo_seen;
        loop {
            let want = if first {
                1
            } else {
                (expected.saturating_sub(found).max(expected / 4) + 64).min(PAGE)
            };
            first = false;
            let after = start.clone().unwrap_or_else(|| self.lo.to_string());
            let page = storage.list_page(wide, Some(&after), want)?;
            let (sent, next) = self.forward(page.objects, &mut start, reports)?;
            found += sent;
            if next.is_some() || !page.truncated {
                return Ok(Report::PieceDone { found, next });
            }
        }
    }

    /// Sends the objects below `hi`; returns how many, and the first key at or past `hi`.
    fn forward(
        &self,
        mut objects: Vec<ObjectMeta>,
        start: &mut Option<String>,
        reports: &mpsc::Sender<Report>,
    ) -> Result<(usize, Option<String>)> {
        if let Some(last) = objects.last() {
            *start = Some(last.key.clone());
        }
        let split = self.hi.map_or(objects.len(), |hi| objects.partition_point(|o| o.key.as_str() < hi));
        let next = objects.get(split).map(|o| o.key.clone());
        objects.truncate(split);
        let sent = objects.len();
        if sent > 0 && reports.send(Report::Objects(objects)).is_err() {
            return Err(Error::new(ErrorKind::LocalIo, "listing stopped"));
        }
        Ok((sent, next))
    }

    /// Whether keys that do not start with `lo` can lie in the piece: always, unless `hi`
    /// is `lo` with its last character incremented (consecutive boundaries, no carry and
    /// no jump from '9' to 'A').
    fn has_tail(&self) -> bool {
        let Some(hi) = self.hi else { return true };
        let (lo, hi) = (self.lo.as_bytes(), hi.as_bytes());
        self.lo_seen
            || lo.len() != hi.len()
            || lo.is_empty()
            || lo[..lo.len() - 1] != hi[..hi.len() - 1]
            || lo[lo.len() - 1] + 1 != hi[hi.len() - 1]
    }
}

/// The first key below `prefix` at or after `from`.
fn probe(storage: &dyn Storage, prefix: &str, from: &str) -> Result<Report> {
    let at = storage.list_page(from, None, 1)?;
    if let Some(obj) = at.objects.into_iter().next() {
        return Ok(Report::ProbeDone(Some(obj.key)));
    }
    let page = storage.list_page(prefix, Some(from), 1)?;
    Ok(Report::ProbeDone(page.objects.into_iter().next().map(|o| o.key)))
}

/// Length in bytes of the longest common prefix of `a` and `b`, at a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_follow_key_order() {
        let b = |k: &str| boundary_after("w/", k, 4);
        assert_eq!(b("w/0001"), Some("w/0002".into()));
        assert_eq!(b("w/0001.history"), Some("w/0002".into()));
        assert_eq!(b("w/0009ZZ"), Some("w/000A".into()));
        assert_eq!(b("w/00"), Some("w/0000".into()));
        assert_eq!(b("w/00.history"), Some("w/0000".into()));
        assert_eq!(b("w/00:x"), Some("w/00A0".into()));
        assert_eq!(b("w/00zz"), Some("w/0100".into()));
        assert_eq!(b("w/0FFF"), Some("w/1000".into()));
        assert_eq!(b("w/FFFF"), None);
        assert_eq!(b("w/FFz"), None);
        assert_eq!(b("w/README"), None);
        assert_eq!(b("w/.hidden"), Some("w/0000".into()));
        assert_eq!(b("w/a"), None, "lowercase sorts after every uppercase boundary");
        for key in ["w/0001", "w/00", "w/00:x", "w/00zz", "w/0009ZZ", "w/.hidden", "w/0001.history"] {
            assert!(b(key).unwrap().as_str() > key, "{key}");
        }
    }

    #[test]
    fn wal_shapes() {
        let s = |size: u64| {
            let shape = Shape::for_wal(size, 4);
            (shape.digits, shape.keys_per_piece)
        };
        assert_eq!(s(1 << 20), (16, 4096));
        assert_eq!(s(16 << 20), (15, 4096));
        assert_eq!(s(64 << 20), (15, 1024));
        assert_eq!(s(1 << 30), (14, 1024));
    }

    #[test]
    fn common_prefixes() {
        assert_eq!(common_prefix("w/0001", "w/0002"), 5);
        assert_eq!(common_prefix("w/00", "w/0002"), 4);
        assert_eq!(common_prefix("w/é1", "w/é2"), 4);
    }

    /// Every key of a directory comes back exactly once, whatever its name, with pieces
    /// small enough that the listing jumps gaps, timelines and garbage.
    #[test]
    fn lists_every_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal_005");
        std::fs::create_dir(&wal).unwrap();
        let mut names = vec![
            "0000".to_string(),
            "00000001.history".into(),
            "000000010000000A.lz4".into(),
            "0000000100000009:odd".into(),
            "000000010000000Fzz".into(),
            "00000002.history.lz4".into(),
            "0000000F".into(),
            "README".into(),
            "a-lowercase".into(),
            "FFFFFFFFFFFFFFFFFF".into(),
            "0000000100000020".into(),
            "0000000100000019z".into(),
            "000000010000001FG".into(),
            "000000010000000:x".into(),
            "00000001000000G".into(),
        ];
        for seg in 0..300u64 {
            names.push(format!("00000001{:08X}{:08X}.lz4", seg / 8, seg % 8));
        }
        for seg in (0..200u64).filter(|s| !(50..120).contains(s)) {
            names.push(format!("00000002{:08X}{:08X}.zst", 1000 + seg / 8, seg % 8));
        }
        for n in &names {
            std::fs::write(wal.join(n), b"x").unwrap();
        }
        let storage = super::super::fs::FsStorage::new(dir.path().to_path_buf());
        for concurrency in [1, 3, 8] {
            let shape = Shape {
                digits: 16,
                keys_per_piece: 8,
                concurrency,
            };
            let mut seen = Vec::new();
            list_after(&storage, "wal_005/", "wal_005/", shape, &mut |page| {
                seen.extend(page.into_iter().map(|o| o.key));
                Ok(())
            })
            .unwrap();
            seen.sort();
            let mut want: Vec<String> = names.iter().map(|n| format!("wal_005/{n}")).collect();
            want.sort();
            assert_eq!(seen, want, "concurrency {concurrency}");
        }
    }
}
