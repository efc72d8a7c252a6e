//! The prefetch fetcher (`walfetch follow PGDATA`): it keeps the next segments a standby
//! will ask for downloaded, decoded and checked in the spool ([`crate::standby::spool`]), so
//! `wal-fetch` mostly renames a ready file.
//!
//! It keeps a window of segments after the one PostgreSQL asked for last (on the
//! timeline PostgreSQL will ask for them on, following the archive's history files),
//! reports a gap (a missing segment while later ones exist) by name at once, and polls
//! the archive head with backoff while the standby waits there.
//!
//! A fetcher runs for days beside a standby, so it must never work with stale settings:
//! - started on demand by `wal-fetch`, it serves the PostgreSQL server that was running
//!   when it started and exits as soon as that server stops (a restarted server, with
//!   new settings in its environment, starts a fresh fetcher on its first call);
//! - it records a digest of its settings ([`super::fetcher::fingerprint`]: storage flags, the walfetch
//!   binary, the `AWS_*`/`WALG_*`/`WALE_*`/`WALFETCH_*` environment); a `wal-fetch` whose
//!   digest differs stops it and clears its spool ([`super::fetcher::retire_if_stale`]);
//! - when storage rejects its credentials it reloads them (a credentials file renewed in
//!   place, a `credential_process`, a web identity token), at most every
//!   [`CREDENTIALS_RELOAD_EVERY`];
//! - a failure that keeps repeating is logged once a minute with a count, and its log
//!   file is rotated past [`super::fetcher::LOG_LIMIT`], so the log stays bounded however long it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::archive::{self, Archive};
use crate::config::StorageSettings;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::process_alive;
use crate::pg::controldata;
use crate::pg::datadir::{pg_major, system_identifier};
use crate::standby::fetch::{download, with_mapped, Expect, Fetched};
use crate::standby::fetcher::{fingerprint, LogFile, REPEAT_LOG_EVERY};
use crate::standby::spool::{Failing, FetcherInfo, FollowStatus, Spool};
use crate::storage;
use crate::wal::name::Segment;
use crate::wal::records::{check_continuation, OpenRecord};
use crate::wal::timeline::{chain, parse_history, Span};

/// Storage is reopened (credentials reloaded) at most this often while it rejects them.
pub const CREDENTIALS_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Logs a failure that may repeat: the first time at once, then at most once per
/// [`REPEAT_LOG_EVERY`] with the number of times it happened since.
#[derive(Default)]
struct Repeats {
    /// Per kind of failure: when it was last logged, and how often it happened since.
    seen: BTreeMap<String, (Instant, u64)>,
}

impl Repeats {
    /// Whether to log a failure of `key` now; returns the occurrences not logged.
    fn should_log(&mut self, key: &str) -> Option<u64> {
        match self.seen.get_mut(key) {
            Some((at, n)) if at.elapsed() < REPEAT_LOG_EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let skipped = *n;
                (*at, *n) = (Instant::now(), 0);
                Some(skipped)
            }
            None => {
                self.seen.insert(key.to_string(), (Instant::now(), 0));
                Some(0)
            }
        }
    }

    /// Forgets a failure that stopped.
    fn clear(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

/// The segment numbered `segno` as PostgreSQL will ask for it: on the newest timeline of
/// `chain` that began at or before it (and is not older than the standby's), as
/// PostgreSQL's own search across timelines goes.
fn owner(chain: &[Span], want: Segment, segno: u64, size: u64) -> Segment {
    let timeline = chain
        .iter()
        .rev()
        .filter(|s| s.timeline >= want.timeline)
        .find(|s| {
            Segment::containing(s.timeline, s.begin, size)
                .number(size)
                .is_some_and(|b| b <= segno)
        })
        .map_or(want.timeline, |s| s.timeline);
    Segment::from_number(timeline, segno, size)
}

/// The chain of the newest timeline after `from` that has a history file in the
/// archive, if there is one (unreadable histories end the search: PostgreSQL would stop
/// at them too).
fn newest_chain(archive: &dyn Archive, from: u32) -> Option<Vec<Span>> {
    let mut newest = None;
    let mut tli = from;
    while let Some(next) = tli.checked_add(1) {
        let name = format!("{next:08X}.history");
        let Ok(mut wal) = archive.open_wal(&name) else { break };
        let key = wal.url.clone();
        let mut text = String::new();
        if wal.reader.read_to_string(&mut text).is_err() {
            break;
        }
        match parse_history(&text, &key) {
            Ok(records) => newest = Some(chain(next, &records)),
            Err(e) => {
                tracing::warn!(object = %key, cause = %e, "unreadable history file; not reading ahead past it");
                break;
            }
        }
        tli = next;
    }
    newest
}

/// What the fetcher keeps of a segment it downloaded, to check the next one's start.
struct Tail {
    /// The object read.
    url: String,
    /// Its last record, if that runs on into the next segment.
    open: Option<OpenRecord>,
}

/// What the fetcher keeps from one pass over its window to the next.
struct Window {
    /// Per segment this fetcher downloaded: its object and its last record if that runs
    /// on into the next segment.
    tails: BTreeMap<Segment, Tail>,
    /// The segments whose first record part was checked.
    heads_checked: BTreeSet<Segment>,
    /// The newest timeline's chain, once the archive names one after the standby's own.
    chain: Vec<Span>,
    /// Look for newer timelines on the next pass (at start, and when the window runs
    /// into missing segments).
    look_for_timelines: bool,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            tails: BTreeMap::new(),
            heads_checked: BTreeSet::new(),
            chain: Vec::new(),
            look_for_timelines: true,
        }
    }
}

/// What happened to one segment of the window.
#[derive(Debug, Clone)]
enum Outcome {
    Ready,
    Absent,
    Failed(Error),
}

/// A fetcher's settings, resolved.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The standby's data directory (absolute).
    pub datadir: PathBuf,
    /// Its spool.
    pub spool: Spool,
    /// Where the archive is.
    pub settings: StorageSettings,
    /// Segments kept ready ahead of the standby.
    pub ahead: usize,
    /// Run until stopped (a service), instead of exiting when idle or when the server stops.
    pub foreground: bool,
    /// Exit after PostgreSQL has asked for nothing for this long (on demand).
    pub idle_timeout: Duration,
    /// Longest wait between two looks at the archive head.
    pub max_poll: Duration,
    /// The segment size, when pinned (`WALG_PG_WAL_SIZE`).
    pub segment_size: Option<u64>,
    /// Where to log (on demand: the spool's log file, rotated); `None`: standard error.
    pub log_file: Option<PathBuf>,
}

/// The state of a running fetcher.
struct Running {
    spool: Spool,
    archive: Arc<dyn Archive>,
    /// When storage was last reopened for fresh credentials.
    reloaded: Instant,
    repeats: Repeats,
    status: FollowStatus,
    log: Option<LogFile>,
    /// The postmaster this fetcher serves (on demand), and when it was last looked at.
    postmaster: Option<u32>,
    looked: Instant,
}

impl Fetcher {
    /// Follows until idle, until the server it serves stops, or (with `foreground`) forever.
    pub fn run(&self) -> Result<()> {
        let datadir = &self.datadir;
        let spool = self.spool.clone();
        let Some(_lock) = spool.try_lock()? else {
            tracing::info!(spool = %spool.dir().display(), "a fetcher already runs for this data directory");
            return Ok(());
        };
        let log = self.log_file.clone().map(LogFile::open).transpose()?;
        let postmaster = if self.foreground { None } else { postmaster_pid(datadir) };
        spool.write_fetcher(&FetcherInfo {
            pid: std::process::id(),
            fingerprint: fingerprint(&self.settings),
            postmaster,
            foreground: self.foreground,
            started: chrono::Utc::now().to_rfc3339(),
        })?;
        let mut run = Running {
            archive: archive::open(storage::open(&self.settings.connection()?)?, &self.settings)?,
            spool,
            reloaded: Instant::now(),
            repeats: Repeats::default(),
            status: FollowStatus {
                pid: std::process::id(),
                ..Default::default()
            },
            log,
            postmaster,
            looked: Instant::now(),
        };
        tracing::info!(datadir = %datadir.display(), ahead = self.ahead, postmaster, "fetcher started");
        self.follow(&mut run)
    }

    fn follow(&self, run: &mut Running) -> Result<()> {
        let started = SystemTime::now();
        let mut delay = Duration::from_millis(200);
        let mut window = Window::default();
        loop {
            if let Some(log) = run.log.as_mut() {
                log.maybe_rotate();
            }
            if !self.server_alive(run) {
                tracing::info!(
                    postmaster = run.postmaster,
                    "the PostgreSQL server this fetcher served has stopped; fetcher exits"
                );
                return Ok(());
            }
            let (want, asked_at) = match run.spool.requested() {
                Some(r) => r,
                None => (self.start_segment()?, started),
            };
            if !self.foreground
                && asked_at.elapsed().unwrap_or_default() > self.idle_timeout
                && started.elapsed().unwrap_or_default() > self.idle_timeout
            {
                tracing::info!("PostgreSQL has asked for nothing recently; fetcher exits");
                return Ok(());
            }
            run.spool.remove_older_than(&want);
            let (segments, outcomes) = self.fetch_window(run, &mut window, want);
            self.report(run, &segments, &outcomes, want);

            // Poll with backoff while waiting at the head (or behind a gap or a failure);
            // go on at once otherwise.
            let absent = outcomes.iter().any(|o| matches!(o, Outcome::Absent));
            let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
            window.look_for_timelines = absent;
            if absent || failed {
                std::thread::sleep(delay);
                delay = (delay * 2).min(self.max_poll.max(Duration::from_secs(1)));
            } else {
                delay = Duration::from_millis(200);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// One pass over the window after `want`: follows a newer timeline when asked to,
    /// downloads what is not ready, and checks the records that cross between segments
    /// it downloaded. Returns the window's segments and what happened to each.
    fn fetch_window(&self, run: &mut Running, w: &mut Window, want: Segment) -> (Vec<Segment>, Vec<Outcome>) {
        let size = self.segment_size();
        if w.look_for_timelines {
            let from = w.chain.last().map_or(want.timeline, |s| s.timeline.max(want.timeline));
            if let Some(newer) = newest_chain(run.archive.as_ref(), from) {
                tracing::info!(
                    timeline = newer.last().map(|s| s.timeline),
                    "the archive has a newer timeline; reading ahead along it"
                );
                w.chain = newer;
            }
        }
        let segments: Vec<Segment> = (0..self.ahead as u64)
            .filter_map(|i| want.number(size).map(|n| owner(&w.chain, want, n + i, size)))
            .collect();
        let expect = Expect {
            system_identifier: system_identifier(&self.datadir).ok().flatten(),
            segment_size: self.segment_size,
        };
        let mut outcomes = Vec::with_capacity(segments.len());
        for (seg, (outcome, fetched)) in segments.iter().zip(fill(run.archive.as_ref(), &run.spool, &segments, expect)) {
            if let Some(f) = fetched {
                w.tails.insert(*seg, Tail { url: f.url, open: f.open });
            }
            outcomes.push(outcome);
        }
        check_heads(&run.spool, &segments, size, &w.tails, &mut w.heads_checked);
        if let Some(prev) = want.number(size).and_then(|n| n.checked_sub(1)) {
            let prev = Segment::from_number(want.timeline, prev, size);
            w.tails.retain(|s, _| *s >= prev);
            w.heads_checked.retain(|s| *s >= want);
        }
        (segments, outcomes)
    }

    /// Updates the status file, logs gaps and failures (repeats once a minute), and
    /// reloads credentials that storage rejected.
    fn report(&self, run: &mut Running, window: &[Segment], outcomes: &[Outcome], want: Segment) {
        // A gap: the first missing segment of the window while a later one exists.
        let first_absent = outcomes.iter().position(|o| matches!(o, Outcome::Absent));
        let later_present = first_absent.is_some_and(|i| outcomes[i + 1..].iter().any(|o| matches!(o, Outcome::Ready)));
        let gap = first_absent.filter(|_| later_present).map(|i| window[i].to_string());
        let status = &mut run.status;
        if gap != status.gap {
            match &gap {
                Some(g) => {
                    tracing::error!(segment = %g, archive = %run.archive.describe(), "gap in the archive: {g} is missing while later segments exist; the standby cannot pass it")
                }
                None if status.gap.is_some() => tracing::info!("the gap is filled"),
                None => {}
            }
            status.gap_since = gap.as_ref().map(|_| chrono::Utc::now().to_rfc3339());
            status.gap = gap;
        }
        let failure = window.iter().zip(outcomes).find_map(|(seg, o)| match o {
            Outcome::Failed(e) => Some((seg, e)),
            _ => None,
        });
        match failure {
            Some((seg, e)) => {
                let key = e.kind().label();
                if let Some(skipped) = run.repeats.should_log(key) {
                    if skipped > 0 {
                        tracing::error!(segment = %seg, cause = %e, repeated = skipped, "prefetch keeps failing ({skipped} more times in the last minute); wal-fetch fetches directly and reports the error");
                    } else {
                        tracing::error!(segment = %seg, cause = %e, "prefetch failed; wal-fetch will fetch it directly and report the error");
                    }
                }
                let failing = status.failing.get_or_insert_with(|| Failing {
                    since: chrono::Utc::now().to_rfc3339(),
                    ..Default::default()
                });
                if failing.kind != key {
                    failing.since = chrono::Utc::now().to_rfc3339();
                    failing.count = 0;
                }
                failing.kind = key.to_string();
                failing.error = e.message().to_string();
                failing.count += 1;
                if e.kind() == ErrorKind::Credentials {
                    self.reload(run);
                }
            }
            None => {
                if let Some(f) = run.status.failing.take() {
                    run.repeats.clear(&f.kind);
                    tracing::info!(kind = %f.kind, failures = f.count, since = %f.since, "prefetch works again");
                }
            }
        }
        let status = &mut run.status;
        status.wanted = Some(want.to_string());
        status.ready = outcomes.iter().filter(|o| matches!(o, Outcome::Ready)).count() as u64;
        status.at_archive_head = first_absent.is_some() && !later_present;
        status.updated = chrono::Utc::now().to_rfc3339();
        let _ = run.spool.write_status(status);
    }

    /// Reopens storage so that renewed credentials are read again.
    fn reload(&self, run: &mut Running) {
        if run.reloaded.elapsed() < CREDENTIALS_RELOAD_EVERY {
            return;
        }
        run.reloaded = Instant::now();
        match self
            .settings
            .connection()
            .and_then(|c| storage::open(&c))
            .and_then(|s| archive::open(s, &self.settings))
        {
            Ok(a) => {
                run.archive = a;
                if run.repeats.should_log("reload").is_some() {
                    tracing::warn!("storage rejected the credentials; reloaded them (a renewed credentials file or token is picked up)");
                }
            }
            Err(e) => {
                if run.repeats.should_log("reload-failed").is_some() {
                    tracing::error!(cause = %e, "could not reload the credentials");
                }
            }
        }
    }

    /// Whether the server this fetcher serves still runs (always true for a service, or
    /// when no server ran at start). Looked at once a second.
    fn server_alive(&self, run: &mut Running) -> bool {
        let Some(pid) = run.postmaster else { return true };
        if run.looked.elapsed() < Duration::from_secs(1) {
            return true;
        }
        run.looked = Instant::now();
        process_alive(pid) && postmaster_pid(&self.datadir) == Some(pid)
    }

    fn start_segment(&self) -> Result<Segment> {
        let control = controldata::read(&self.datadir, pg_major(&self.datadir)?)?;
        let (lsn, tli) = if control.min_recovery > control.redo {
            (control.min_recovery, control.min_recovery_timeline)
        } else {
            (control.redo, control.timeline)
        };
        Ok(Segment::containing(tli, lsn, control.segment_size))
    }

    fn segment_size(&self) -> u64 {
        self.segment_size
            .or_else(|| {
                pg_major(&self.datadir)
                    .ok()
                    .and_then(|v| controldata::read(&self.datadir, v).ok())
                    .map(|c| c.segment_size)
            })
            .unwrap_or(crate::constants::DEFAULT_WAL_SEGMENT_SIZE)
    }
}

/// The pid in `datadir/postmaster.pid`, when that process runs.
fn postmaster_pid(datadir: &Path) -> Option<u32> {
    let text = fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    process_alive(pid).then_some(pid)
}

/// Downloads the window's segments that are not ready yet, in parallel; returns each
/// one's outcome, and what this call downloaded.
fn fill(archive: &dyn Archive, spool: &Spool, window: &[Segment], expect: Expect) -> Vec<(Outcome, Option<Fetched>)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = window
            .iter()
            .map(|seg| {
                let stop = &stop;
                s.spawn(move || {
                    let ready = spool.ready_path(seg);
                    if ready.exists() {
                        return (Outcome::Ready, None);
                    }
                    if let Some(why) = spool.refused(seg) {
                        return (Outcome::Failed(Error::new(ErrorKind::Corrupt, why)), None);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return (
                            Outcome::Failed(Error::new(ErrorKind::Unreachable, "stopped after another failure")),
                            None,
                        );
                    }
                    let tmp = spool.running_dir().join(format!("{seg}.{}", std::process::id()));
                    let started = Instant::now();
                    let fetched = download(archive, &seg.to_string(), &tmp, expect).and_then(|f| {
                        spool.put_ready(seg, &tmp, f.open)?;
                        Ok(f)
                    });
                    let _ = std::fs::remove_file(&tmp);
                    match fetched {
                        Ok(f) => {
                            tracing::debug!(object = %f.url, bytes = f.bytes, ms = started.elapsed().as_millis() as u64, "prefetched");
                            (Outcome::Ready, Some(f))
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => (Outcome::Absent, None),
                        Err(e) => {
                            if e.kind() != ErrorKind::Unreachable {
                                stop.store(true, Ordering::Relaxed);
                            }
                            (Outcome::Failed(e), None)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Outcome::Failed(Error::new(ErrorKind::LocalIo, "a download thread panicked")), None))
            })
            .collect()
    })
}

/// For each ready segment of `window` whose predecessor this fetcher downloaded and left
/// with an open record: checks the record's CRC over both parts. A mismatch refuses the
/// segment (it leaves the spool, and wal-fetch stops recovery with the reason). This is
/// the early warning; `wal-fetch` checks every hand-over itself ([`crate::standby::handover`]).
fn check_heads(spool: &Spool, window: &[Segment], size: u64, tails: &BTreeMap<Segment, Tail>, checked: &mut BTreeSet<Segment>) {
    for seg in window {
        if checked.contains(seg) || !spool.ready_path(seg).exists() {
            continue;
        }
        let Some(prev) = seg.number(size).and_then(|n| n.checked_sub(1)) else {
            continue;
        };
        let (Some(prev_tail), Some(own)) = (tails.get(&Segment::from_number(seg.timeline, prev, size)), tails.get(seg)) else {
            continue;
        };
        if let Some(open) = &prev_tail.open {
            let path = spool.ready_path(seg);
            match with_mapped(&path, |data| check_continuation(data, *seg, &own.url, open)) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::error!(segment = %seg, object = %own.url, cause = %e, "segment refused: a record that began in the previous segment does not check out");
                    if let Err(e2) = spool.refuse(seg, e.message()) {
                        tracing::error!(segment = %seg, cause = %e2, "could not record the refusal");
                    }
                    continue;
                }
                // Taken by wal-fetch meanwhile (which checks it itself), or unreadable now.
                Err(e) => {
                    tracing::debug!(segment = %seg, cause = %e, "continuation not checked here");
                    continue;
                }
            }
        }
        checked.insert(*seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_logged_once_a_minute() {
        let mut r = Repeats::default();
        assert_eq!(r.should_log("credentials"), Some(0));
        for _ in 0..70 {
            assert_eq!(r.should_log("credentials"), None);
        }
        assert_eq!(r.should_log("unreachable"), Some(0), "another kind is logged at once");
        r.seen.get_mut("credentials").unwrap().0 -= REPEAT_LOG_EVERY;
        assert_eq!(r.should_log("credentials"), Some(70));
        r.clear("credentials");
        assert_eq!(r.should_log("credentials"), Some(0));
    }

    #[test]
    fn the_fingerprint_follows_the_settings() {
        let a = StorageSettings::at(crate::storage::settings::Location::S3 {
            bucket: "b".into(),
            prefix: "p".into(),
        });
        let mut b = a.clone();
        b.region = Some("eu-west-1".into());
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
